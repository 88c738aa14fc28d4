//! What a request asks for, as caveats see it: an [`Action`] (read, write, create,
//! delete, control) on an org and, below it, an app, a machine, a volume, a feature or
//! a command; and the [`Verdict`] one caveat gives it.

/// A set of actions, as the bits Fly's caveats use: r=1 w=2 c=4 d=8 C=16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Action(pub u64);

impl Action {
    pub const NONE: Action = Action(0);
    pub const READ: Action = Action(1);
    pub const WRITE: Action = Action(2);
    pub const CREATE: Action = Action(4);
    pub const DELETE: Action = Action(8);
    pub const CONTROL: Action = Action(16);
    /// Every action (`*`), as Fly writes it.
    pub const ALL: Action = Action(0xffff);

    const LETTERS: [(char, u64); 5] = [('r', 1), ('w', 2), ('c', 4), ('d', 8), ('C', 16)];

    /// Whether every action of `self` is in `allowed`.
    pub fn within(self, allowed: Action) -> bool {
        self.0 & allowed.0 == self.0
    }

    /// `"rwcdC"` letters, or `"*"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Action> {
        if s == "*" {
            return Some(Action::ALL);
        }
        let mut bits = 0;
        for c in s.chars() {
            bits |= Self::LETTERS.iter().find(|(l, _)| *l == c)?.1;
        }
        Some(Action(bits))
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (letter, bit) in Self::LETTERS {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// One request, as the caveats judge it. The org is always named; the rest only when
/// the request is about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub action: Action,
    /// The org's numeric id.
    pub org_id: u64,
    /// The app's numeric id.
    pub app_id: Option<u64>,
    pub machine: Option<String>,
    pub volume: Option<String>,
    /// An org-level feature (`wg`, `builder`, `membership`, …).
    pub feature: Option<String>,
    pub machine_feature: Option<String>,
    pub app_feature: Option<String>,
    pub cluster: Option<String>,
    pub mutation: Option<String>,
    /// The command run in a machine (exec), word by word.
    pub command: Option<Vec<String>>,
    /// Now, in Unix seconds (for validity windows).
    pub now: i64,
}

/// What one caveat says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The caveat is about something the request does not name (an app caveat on an
    /// org-wide request): a denial on its own, ignored inside `IfPresent`.
    Unspecified(&'static str),
    Denied(String),
}
