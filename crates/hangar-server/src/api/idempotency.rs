//! `Idempotency-Key` on POSTs that create something: the first response to a key is
//! kept for 24 hours; the same key with the same body gets that response again, the same
//! key with another body is a 422. Keys are scoped to the token and the path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hangar_store::IdempotentResponse;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::auth::Caller;
use crate::{clock, AppState};

const HEADER: &str = "idempotency-key";
const KEY_LIFETIME_SECS: i64 = 24 * 3600;
const MAX_BODY: usize = 4 << 20;

/// One lock per key in use, so two concurrent requests with a key do not both run.
#[derive(Default)]
pub struct KeyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    fn release(&self, key: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(key);
        }
    }
}

/// The middleware, to put on the routes of create endpoints with
/// `route_layer(middleware::from_fn_with_state(state, idempotency::guard))`.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match run(state, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    let key = match req.headers().get(HEADER) {
        Some(v) if req.method() == Method::POST => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid Idempotency-Key header: use 1 to 255 visible characters",
                )
            })?
            .to_string(),
        _ => return Ok(next.run(req).await),
    };
    let token = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.token.id.clone())
        .unwrap_or_default();
    let scope = format!("{token} {}", req.uri().path());
    let lock_key = format!("{scope} {key}");
    let lock = state.idempotency.get(&lock_key);
    let result = {
        let _held = lock.lock().await;
        replay_or_run(&state, &scope, &key, req, next).await
    };
    drop(lock);
    state.idempotency.release(&lock_key);
    result
}

async fn replay_or_run(
    state: &AppState,
    scope: &str,
    key: &str,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let min_created = clock::now_secs() - KEY_LIFETIME_SECS;
    let (s, k) = (scope.to_string(), key.to_string());
    let kept = state
        .store
        .call(move |db| db.idempotent_response(&s, &k, min_created))
        .await?;
    if let Some(kept) = kept {
        if kept.request_sha256 != digest {
            return Err(ApiError::unprocessable(
                "Idempotency-Key was already used with a different request body; use a new key for a different request",
            ));
        }
        let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
        let mut res = (status, kept.body).into_response();
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(res);
    }
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if res.status().is_server_error() {
        return Ok(res);
    }
    let (parts, body) = res.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::internal(format!("read response: {e}")))?;
    let kept = IdempotentResponse {
        request_sha256: digest,
        status: parts.status.as_u16(),
        body: body.to_vec(),
    };
    let (s, k) = (scope.to_string(), key.to_string());
    let now = clock::now_secs();
    state
        .store
        .call(move |db| db.put_idempotent_response(&s, &k, &kept, now, min_created))
        .await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}
