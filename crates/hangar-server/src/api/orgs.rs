//! `/v1/orgs`: the orgs of this control plane. The admin token (the first start's)
//! creates and removes them and sees them all; an org's own token sees its org. A new
//! org comes with its first token, shown once in the answer and kept as a digest.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use hangar_store::{OrgRecord, TokenRecord};
use hangar_types::org::{CreateOrgRequest, CreatedOrg, Org, Orgs};

use super::{ApiError, JsonBody};
use crate::auth::{self, Caller};
use crate::bootstrap::PERSONAL_ORG;
use crate::{clock, ids, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs", get(list).post(create))
        .route("/orgs/{org}", get(show).delete(destroy))
}

fn view(o: OrgRecord) -> Org {
    Org {
        slug: o.slug,
        name: o.name,
        numeric_id: o.numeric_id,
    }
}

fn admin(c: &Caller) -> Result<(), ApiError> {
    if c.token.kind == "admin" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the admin token (the one the server printed on its first start) manages orgs",
        ))
    }
}

/// A slug: lowercase letters, digits and dashes, starting with a letter.
fn slug_of(req: &CreateOrgRequest) -> Result<String, ApiError> {
    let slug = match &req.slug {
        Some(s) => s.trim().to_string(),
        None => req
            .name
            .trim()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-"),
    };
    let ok = (1..=63).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(slug)
    } else {
        Err(ApiError::invalid(format!(
            "invalid org slug {slug:?}: use lowercase letters, digits and dashes, starting with a letter (such as acme-corp)"
        )))
    }
}

async fn create(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    JsonBody(req): JsonBody<CreateOrgRequest>,
) -> Result<(StatusCode, Json<CreatedOrg>), ApiError> {
    admin(&c)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid(
            "name is required: give {\"name\": \"Acme Corp\"}",
        ));
    }
    let slug = slug_of(&req)?;
    let name = req.name.trim().to_string();
    let token = ids::api_token();
    let record = TokenRecord {
        id: ids::ulid(),
        org_slug: slug.clone(),
        name: "org".into(),
        kind: "org".into(),
    };
    let digest = auth::digest(&token);
    let (sl, nm) = (slug.clone(), name.clone());
    let created = s
        .store
        .call(move |db| db.create_org(&sl, &nm, &record, &digest, &clock::rfc3339_now()))
        .await?;
    let Some(org) = created else {
        return Err(ApiError::conflict(format!(
            "an org {slug} exists already: choose another name or --slug"
        )));
    };
    tracing::info!(org = %org.slug, number = org.numeric_id, by = %c.owner(), "org created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedOrg {
            org: view(org),
            token,
        }),
    ))
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Orgs>, ApiError> {
    let all = s.store.call(|db| db.orgs()).await?;
    let admin = c.token.kind == "admin";
    Ok(Json(Orgs {
        orgs: all
            .into_iter()
            .filter(|o| admin || o.slug == c.token.org_slug)
            .map(view)
            .collect(),
    }))
}

async fn load(s: &AppState, c: &Caller, slug: &str) -> Result<OrgRecord, ApiError> {
    let sl = slug.to_string();
    let found = s.store.call(move |db| db.org(&sl)).await?;
    match found {
        Some(o) if c.token.kind == "admin" || o.slug == c.token.org_slug => Ok(o),
        _ => Err(ApiError::not_found(format!("org {slug} not found"))),
    }
}

async fn show(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(slug): Path<String>,
) -> Result<Json<Org>, ApiError> {
    load(&s, &c, &slug).await.map(view).map(Json)
}

async fn destroy(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&c)?;
    load(&s, &c, &slug).await?;
    if slug == PERSONAL_ORG {
        return Err(ApiError::invalid(
            "the personal org holds the admin token and cannot be removed",
        ));
    }
    let sl = slug.clone();
    s.store.call(move |db| db.delete_org(&sl)).await?;
    s.tokens.forget_org(&slug);
    tracing::info!(org = %slug, by = %c.owner(), "org removed");
    Ok(StatusCode::NO_CONTENT)
}
