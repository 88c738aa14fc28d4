//! `GET /v1/orgs/{org}/billing?month=YYYY-MM[&app=APP]`: what the org used in a month,
//! priced (this month by default); `GET /v1/billing/prices`: the price table in use.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_types::billing::{BillingReport, PriceTable};

use super::{ApiError, Params};
use crate::auth::Caller;
use crate::billing::{month, ReportError};
use crate::{clock, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs/{org}/billing", get(report))
        .route("/billing/prices", get(prices))
}

async fn report(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(org): Path<String>,
    q: Params,
) -> Result<Json<BillingReport>, ApiError> {
    if org != c.token.org_slug {
        return Err(ApiError::not_found(format!(
            "organization {org:?} not found"
        )));
    }
    let month = q
        .get("month")
        .filter(|m| !m.is_empty())
        .map_or_else(|| month::of(clock::now_ms()), str::to_string);
    let app = q.get("app").filter(|a| !a.is_empty());
    s.meter
        .report(&org, &month, app)
        .await
        .map(Json)
        .map_err(|e| match e {
            ReportError::Invalid(m) => ApiError::invalid(m),
            ReportError::Store(e) => e.into(),
        })
}

async fn prices(State(s): State<AppState>) -> Json<PriceTable> {
    Json(s.meter.prices().clone())
}
