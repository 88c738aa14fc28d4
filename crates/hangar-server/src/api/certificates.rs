//! `/v1/apps/{app}/certificates`: an app's hostnames and their certificates
//! (machines-api.md §11), and `/v1/certificates/dev_ca`, the development CA's root.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hangar_types::edge::{
    AddCertificateRequest, Certificate, CertificateDetail, CertificateList, CertificateSummary,
    DnsRequirements, ImportCertificateRequest, IssuedCertificate, Validation, ValidationError,
};

use super::apps::load_app;
use super::{ApiError, JsonBody};
use crate::auth::Caller;
use crate::edge::CertView;
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/certificates", get(list))
        .route("/apps/{app}/certificates/acme", post(add))
        .route("/apps/{app}/certificates/custom", post(import))
        .route(
            "/apps/{app}/certificates/{hostname}",
            get(show).delete(remove),
        )
        .route("/apps/{app}/certificates/{hostname}/check", post(check))
        .route("/certificates/dev_ca", get(dev_ca))
}

fn authority_name(authority: &str) -> &'static str {
    match authority {
        a if a == crate::edge::ACME_AUTHORITY => "acme",
        a if a == crate::edge::CUSTOM_AUTHORITY => "custom",
        _ => "hangar_dev_ca",
    }
}

fn is_custom(r: &hangar_store::CertRecord) -> bool {
    r.authority == crate::edge::CUSTOM_AUTHORITY
}

fn summary(v: &CertView) -> CertificateSummary {
    let r = &v.record;
    let active = r.status == "active";
    CertificateSummary {
        hostname: r.hostname.clone(),
        status: r.status.clone(),
        dns_provider: None,
        acme_dns_configured: false,
        acme_alpn_configured: true,
        acme_http_configured: true,
        ownership_txt_configured: false,
        configured: active,
        acme_requested: r.authority == crate::edge::ACME_AUTHORITY,
        has_custom_certificate: active && is_custom(r),
        has_fly_certificate: active && !is_custom(r),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
    }
}

async fn detail(state: &AppState, app: &str, v: CertView) -> Result<CertificateDetail, ApiError> {
    let a = app.to_string();
    let ips = state.store.call(move |db| db.ips_of_app(&a)).await?;
    let r = v.record;
    let active = r.status == "active";
    let certificates = match (&r.expires_at, active) {
        (Some(expires), true) => vec![Certificate {
            source: if is_custom(&r) { "custom" } else { "fly" }.into(),
            status: "active".into(),
            created_at: r.updated_at.clone(),
            expires_at: Some(expires.clone()),
            issuer: r.issuer.clone(),
            issued: vec![IssuedCertificate {
                kind: "ecdsa".into(),
                expires_at: expires.clone(),
                certificate_authority: authority_name(&r.authority).into(),
            }],
        }],
        _ => Vec::new(),
    };
    let validation_errors = r
        .last_error
        .iter()
        .map(|m| ValidationError {
            code: "validation_failed".into(),
            message: m.clone(),
            remediation: format!(
                "point {} at this app's addresses (A/AAAA below) so the CA can reach the proxy on ports 80 and 443, then run `hangar certs check {}`",
                r.hostname, r.hostname
            ),
            timestamp: r.updated_at.clone(),
        })
        .collect();
    let status = if active {
        "active"
    } else {
        "pending_validation"
    };
    Ok(CertificateDetail {
        hostname: r.hostname.clone(),
        configured: active,
        acme_requested: r.authority == crate::edge::ACME_AUTHORITY,
        status: status.into(),
        dns_provider: None,
        rate_limited_until: None,
        certificates,
        validation: Validation {
            dns_configured: false,
            alpn_configured: active || v.issuing,
            http_configured: active || v.issuing,
            ownership_txt_configured: false,
        },
        dns_requirements: DnsRequirements {
            a: ips
                .iter()
                .filter(|i| i.kind.ends_with("v4"))
                .map(|i| i.ip.clone())
                .collect(),
            aaaa: ips
                .iter()
                .filter(|i| i.kind == "v6")
                .map(|i| i.ip.clone())
                .collect(),
            cname: state.edge.app_hostname(app),
        },
        validation_errors,
    })
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> Result<Json<CertificateList>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let all = state.edge.certificates(&app.name).await?;
    let certificates: Vec<CertificateSummary> = all.iter().map(summary).collect();
    Ok(Json(CertificateList {
        total_count: certificates.len(),
        certificates,
        next_cursor: None,
    }))
}

async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<AddCertificateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if body.hostname.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "hostname is required: give {\"hostname\": \"www.example.com\"}",
        ));
    }
    let view = state.edge.add_hostname(&app.name, &body.hostname).await?;
    Ok((
        StatusCode::CREATED,
        Json(detail(&state, &app.name, view).await?),
    ))
}

async fn import(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<ImportCertificateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if body.hostname.trim().is_empty() || body.fullchain.is_empty() || body.private_key.is_empty() {
        return Err(ApiError::unprocessable(
            "hostname, fullchain and private_key are required (PEM for the last two)",
        ));
    }
    let view = state
        .edge
        .import(
            &app.name,
            &body.hostname,
            &body.fullchain,
            &body.private_key,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(detail(&state, &app.name, view).await?),
    ))
}

fn not_found(app: &str, hostname: &str) -> ApiError {
    ApiError::not_found(format!(
        "app {app} has no certificate for {hostname}; add one with `hangar certs add {hostname} -a {app}`"
    ))
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<Json<CertificateDetail>, ApiError> {
    one(&state, &caller, &app, &hostname, false).await
}

async fn check(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<Json<CertificateDetail>, ApiError> {
    one(&state, &caller, &app, &hostname, true).await
}

/// One hostname's certificate, validated again first when `check` is set.
async fn one(
    state: &AppState,
    caller: &Caller,
    app: &str,
    hostname: &str,
    check: bool,
) -> Result<Json<CertificateDetail>, ApiError> {
    let app = load_app(state, caller, app).await?;
    let view = if check {
        state.edge.check(&app.name, hostname).await?
    } else {
        state.edge.certificate(&app.name, hostname).await?
    };
    let view = view.ok_or_else(|| not_found(&app.name, hostname))?;
    Ok(Json(detail(state, &app.name, view).await?))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    if state.edge.remove_hostname(&app.name, &hostname).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&app.name, &hostname))
    }
}

async fn dev_ca(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.edge.dev_ca_pem().to_string(),
    )
}
