//! Every error the API answers, in one place: [`ApiError`] with Fly's body
//! (`{"error": ..., "status": ...}`), and how each domain's error becomes one — the
//! store's, the machine actor's, fleet operations', the deployer's, the vault's and the
//! edge's. Nothing outside the API layer builds an HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_types::ErrorBody;
use tracing::error;

use crate::deploy::DeployError;
use crate::edge::EdgeError;
use crate::fleet::FleetError;
use crate::secrets::VaultError;
use hangar_agent::api::OpError;

/// An error answered with Fly's body, `{"error": "...", "status": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn invalid(m: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("invalid_argument: {m}"))
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, m)
    }
    pub fn unprocessable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, m)
    }
    pub fn internal(m: impl std::fmt::Display) -> Self {
        error!(error = %m, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.code.map(str::to_string),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<hangar_store::StoreError> for ApiError {
    fn from(e: hangar_store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "store unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane's database is unavailable; machines keep running and serving, retry in a moment",
            )
            .with_code("unavailable");
        }
        match e {
            hangar_store::StoreError::Invalid(m) => return ApiError::bad_request(m),
            hangar_store::StoreError::Conflict(m) => return ApiError::conflict(m),
            _ => {}
        }
        ApiError::internal(e)
    }
}

/// The machine actor's refusals, as the Machines API answers them.
impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Precondition(_) => ApiError::precondition(e.to_string()),
            OpError::Invalid(m) => ApiError::bad_request(m),
            OpError::Timeout(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, e.to_string()),
            OpError::NotFound => ApiError::not_found("machine not found"),
            OpError::Unavailable(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{m}; retry in a moment"),
            )
            .with_code("unavailable"),
            OpError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// Fleet operations, as the Machines API answers them (Fly's 400 `invalid_argument`
/// for a config that cannot run, 409 for a taken name).
impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Invalid(m) => ApiError::invalid(m),
            FleetError::NameTaken { .. } => ApiError::conflict(format!("already_exists: {e}")),
            FleetError::Store(e) => e.into(),
            FleetError::Internal(m) => ApiError::internal(m),
            FleetError::Agent(e) => e.into(),
            FleetError::VolumeTaken(m) => ApiError::conflict(m),
            FleetError::Placement(e) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_code("insufficient_capacity")
            }
        }
    }
}

/// The deployer's refusals: a plan that cannot be deployed is a 422 (as Fly's deploy
/// API validates), a deploy already under way a 409.
impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Invalid(m) => ApiError::unprocessable(m),
            DeployError::Busy(m) => ApiError::conflict(m),
            DeployError::Store(e) => e.into(),
            DeployError::Vault(e) => e.into(),
            DeployError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// The vault's: a bad name or value is the caller's (400).
impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::internal(other),
        }
    }
}

/// The edge's: validation failures are 422 as on Fly, an empty pool a 503.
impl From<EdgeError> for ApiError {
    fn from(e: EdgeError) -> Self {
        match e {
            EdgeError::Invalid(m) => ApiError::unprocessable(m),
            EdgeError::Exhausted(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            EdgeError::Conflict(m) => ApiError::conflict(m),
            EdgeError::Cert(hangar_certs::CertError::Invalid(m)) => ApiError::unprocessable(m),
            other => ApiError::internal(other),
        }
    }
}
