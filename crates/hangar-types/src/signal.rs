//! Signals as the Machines API spells them: a name (`"SIGTERM"`, also `"TERM"`) or a
//! number (`9`, which fly-go's `Kill()` sends). Numbers follow Linux's numbering.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A POSIX signal the API lets a caller send to a machine's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

const NAMES: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGWINCH", 28),
];

/// What was wrong with a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal {0:?}: use a name such as SIGTERM, SIGINT, SIGKILL, SIGUSR1 or its number")]
pub struct SignalError(pub String);

impl Signal {
    pub const SIGINT: Signal = Signal(2);
    pub const SIGKILL: Signal = Signal(9);
    pub const SIGTERM: Signal = Signal(15);

    pub fn from_number(n: i64) -> Result<Self, SignalError> {
        NAMES
            .iter()
            .find(|(_, num)| i64::from(*num) == n)
            .map(|(_, num)| Signal(*num))
            .ok_or_else(|| SignalError(n.to_string()))
    }

    pub fn number(self) -> i32 {
        self.0
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
            .unwrap_or("SIGTERM")
    }
}

impl FromStr for Signal {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i64>() {
            return Self::from_number(n);
        }
        let upper = t.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        NAMES
            .iter()
            .find(|(name, _)| *name == full)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(|| SignalError(s.to_string()))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a signal name such as \"SIGTERM\" or a signal number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Signal, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Signal, E> {
                Signal::from_number(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Signal, E> {
                Signal::from_number(i64::try_from(v).unwrap_or(-1)).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!("SIGTERM".parse::<Signal>().unwrap(), Signal::SIGTERM);
        assert_eq!("term".parse::<Signal>().unwrap(), Signal::SIGTERM);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::SIGKILL);
        let s: Signal = serde_json::from_str("9").unwrap();
        assert_eq!(s.name(), "SIGKILL");
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!(serde_json::from_str::<Signal>("99").is_err());
    }
}
