//! `GET /v1/apps/{app}/machines/{id}/console`: the API's side of `hangar ssh console`.
//! With `Connection: upgrade` and `Upgrade: hangar-tunnel` it opens a session in the
//! started machine through its host's agent and becomes the session's stream of
//! frames (`hangar_types::console`), passed through untouched. Each session is
//! recorded as an `ssh` event on the machine, saying who opened it and what it runs.
//!
//! Query: `command` (split as a shell would, without running one; empty means the
//! machine's login shell), `tty` (a terminal, as `--pty`), `rows`, `cols`, `user`.

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hangar_agent::tunnel;
use hangar_runtime::console::ConsoleSpec;
use hangar_types::{EventKind, MachineEvent};
use serde_json::json;

use super::machines::load_machine;
use super::{ApiError, Params};
use crate::auth::Caller;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/apps/{app}/machines/{id}/console", get(console))
}

fn size(q: &Params, key: &str) -> Result<u16, ApiError> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v.parse::<u16>().map_err(|_| {
            ApiError::invalid(format!(
                "{key} must be a number of character cells, got {v:?}"
            ))
        }),
    }
}

/// The session the query asks for.
fn session_of(q: &Params) -> Result<ConsoleSpec, ApiError> {
    let command = q.get("command").unwrap_or("").trim();
    let argv = if command.is_empty() {
        Vec::new()
    } else {
        shlex::split(command).ok_or_else(|| {
            ApiError::invalid(format!(
                "command {command:?} has an unclosed quote or a trailing backslash"
            ))
        })?
    };
    Ok(ConsoleSpec {
        argv,
        tty: q.flag("tty")?,
        rows: size(q, "rows")?,
        cols: size(q, "cols")?,
        user: q
            .get("user")
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from),
    })
}

async fn console(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    q: Params,
    mut request: Request,
) -> Result<Response, ApiError> {
    let m = load_machine(&s, &c, &app, &id).await?;
    let session = session_of(&q)?;
    if !tunnel::wants_tunnel(request.headers()) {
        return Err(ApiError::invalid(format!(
            "a console session asks for `Connection: upgrade` and `Upgrade: {}` (use `hangar ssh console`)",
            tunnel::TUNNEL_PROTOCOL
        )));
    }
    let stream = s.agent.api().console(&m.id, &session).await?;
    let event = MachineEvent {
        id: crate::ids::ulid(),
        kind: EventKind::Ssh,
        status: "connected".into(),
        source: "user".into(),
        timestamp: hangar_agent::clock::now_ms(),
        request: Some(json!({
            "by": c.owner(),
            "command": session.argv,
            "tty": session.tty,
            "user": session.user.as_deref().unwrap_or("root"),
        })),
    };
    let machine = m.id.clone();
    if let Err(e) = s
        .store
        .call(move |db| db.record_event(&machine, &event))
        .await
    {
        tracing::warn!(machine = %m.id, error = %e, "console session not recorded");
    }
    tracing::info!(app = %app, machine = %m.id, by = %c.owner(), tty = session.tty, "console session opened");
    Ok(tunnel::splice(&mut request, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_says_the_command_and_its_terminal() {
        let q = Params::parse("command=df%20-h%20%27%2Fdata%20dir%27&tty=true&rows=40&cols=120");
        let s = session_of(&q).unwrap();
        assert_eq!(s.argv, ["df", "-h", "/data dir"]);
        assert!(s.tty);
        assert_eq!((s.rows, s.cols), (40, 120));
        let q = Params::parse("command=echo%20%27unclosed");
        assert!(session_of(&q)
            .unwrap_err()
            .message
            .contains("unclosed quote"));
        assert!(session_of(&Params::parse("rows=big")).is_err());
        assert!(session_of(&Params::parse("")).unwrap().argv.is_empty());
    }
}
