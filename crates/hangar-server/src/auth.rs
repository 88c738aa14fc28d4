//! Authentication of `/v1` requests: `Authorization: Bearer T` or `FlyV1 T`, a raw
//! token, or a comma-separated list of tokens, any of which may match. Tokens are
//! compared by SHA-256 digest; the clear token is never stored or logged. A token found
//! is remembered for a few seconds ([`TokenCache`]), so a request does not wait on the
//! database to know who sent it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hangar_store::TokenRecord;
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::AppState;

/// The identity behind a request, put in the request's extensions by [`require_token`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    /// The lease owner name shown to other callers.
    pub fn owner(&self) -> String {
        format!("{}@{}", self.token.name, self.token.org_slug)
    }
}

/// Tokens found recently, by digest. Only known tokens are kept, so a stream of wrong
/// ones cannot fill it; it forgets everything when full.
#[derive(Default)]
pub struct TokenCache {
    found: Mutex<HashMap<String, (TokenRecord, Instant)>>,
}

/// The most tokens one `Authorization` header may carry (a permission token and its
/// discharges, a few of each); each costs a lookup.
const MOST_TOKENS: usize = 8;

/// How long a token found stays known without asking the store again.
const REMEMBERED: Duration = Duration::from_secs(10);
const REMEMBERED_MAX: usize = 4096;

impl TokenCache {
    fn get(&self, digest: &str) -> Option<TokenRecord> {
        let found = self.found.lock().ok()?;
        found
            .get(digest)
            .filter(|(_, at)| at.elapsed() < REMEMBERED)
            .map(|(t, _)| t.clone())
    }

    /// Forgets every token of `org` (removed with its org): they stop working now,
    /// not when they would have been looked up again.
    pub fn forget_org(&self, org: &str) {
        if let Ok(mut found) = self.found.lock() {
            found.retain(|_, (t, _)| t.org_slug != org);
        }
    }

    fn put(&self, digest: String, token: TokenRecord) {
        if let Ok(mut found) = self.found.lock() {
            if found.len() >= REMEMBERED_MAX {
                found.clear();
            }
            found.insert(digest, (token, Instant::now()));
        }
    }
}

/// Hex SHA-256 of a token.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tokens an `Authorization` header value carries.
pub fn tokens_in_header(value: &str) -> Vec<String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("bearer") || v.eq_ignore_ascii_case("flyv1") {
        return Vec::new();
    }
    let rest = match v.split_once(char::is_whitespace) {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("flyv1") =>
        {
            rest
        }
        _ => v,
    };
    rest.split(',')
        .map(|t| {
            let t = t.trim();
            // Members of a list may carry their own scheme.
            t.split_once(char::is_whitespace)
                .filter(|(s, _)| {
                    s.eq_ignore_ascii_case("bearer") || s.eq_ignore_ascii_case("flyv1")
                })
                .map(|(_, t)| t.trim())
                .unwrap_or(t)
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Middleware: 401 unless the request carries a known token.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "Authenticate: missing Authorization header; send \"Authorization: Bearer <token>\"",
        ));
    };
    let tokens = tokens_in_header(&header);
    if tokens.len() > MOST_TOKENS {
        return Err(ApiError::bad_request(format!(
            "the Authorization header carries {} tokens; send at most {MOST_TOKENS}",
            tokens.len()
        )));
    }
    let digests: Vec<String> = tokens.iter().map(|t| digest(t)).collect();
    let known = digests.iter().find_map(|d| state.tokens.get(d));
    let found = match known {
        Some(t) => Some(t),
        None => {
            let found = state
                .store
                .call(move |db| {
                    for d in digests {
                        if let Some(t) = db.token_by_digest(&d)? {
                            return Ok(Some((d, t)));
                        }
                    }
                    Ok(None)
                })
                .await?;
            found.map(|(d, t)| {
                state.tokens.put(d, t.clone());
                t
            })
        }
    };
    match found {
        Some(token) => {
            req.extensions_mut().insert(Caller { token });
            Ok(next.run(req).await)
        }
        None => Err(ApiError::unauthorized(
            "Authenticate: token validation error",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        assert_eq!(tokens_in_header("Bearer abc"), vec!["abc"]);
        assert_eq!(tokens_in_header("FlyV1 abc,def"), vec!["abc", "def"]);
        assert_eq!(tokens_in_header("flyv1 abc, FlyV1 def"), vec!["abc", "def"]);
        assert_eq!(tokens_in_header("abc"), vec!["abc"]);
        assert!(tokens_in_header("Bearer ").is_empty());
    }
}
