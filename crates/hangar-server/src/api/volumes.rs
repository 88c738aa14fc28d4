//! The Volumes API (`/apps/{app}/volumes…`): list, create, show, update, destroy and
//! extend, with Fly's shapes and errors. Checking the request and shaping the answer
//! is here; what a volume operation does is `crate::volumes`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use hangar_agent::volumes::VolumeSource;
use hangar_agent::volumes::VolumeStat;
use hangar_store::{SnapshotRecord, VolumeRecord};
use hangar_types::volume::{
    check_snapshot_retention, check_volume_name, check_volume_size, CreateVolumeRequest,
    ExtendVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume, VolumeSnapshot,
    API_DEFAULT_VOLUME_GB, DEFAULT_SNAPSHOT_RETENTION,
};

use super::apps::load_app;
use super::machines::resolve_region;
use super::{idempotency, ApiError, JsonBody, Params};
use crate::auth::Caller;
use crate::volumes::{self, snapshots, NewVolume, VolumeFailure};
use crate::AppState;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/apps/{app}/volumes",
            get(list)
                .post(create)
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    idempotency::guard,
                )),
        )
        .route(
            "/apps/{app}/volumes/{id}",
            get(show).put(update).post(update).delete(destroy),
        )
        .route("/apps/{app}/volumes/{id}/extend", put(extend))
        .route(
            "/apps/{app}/volumes/{id}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
}

impl From<VolumeFailure> for ApiError {
    fn from(e: VolumeFailure) -> Self {
        match e {
            VolumeFailure::Invalid(m) => ApiError::invalid(m),
            VolumeFailure::NotFound => ApiError::not_found("volume not found"),
            VolumeFailure::Attached { .. } => ApiError::conflict(e.to_string()),
            VolumeFailure::Capacity(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
                .with_code("volume_placement_capacity"),
            VolumeFailure::Store(e) => e.into(),
            VolumeFailure::Agent(m) => ApiError::internal(m),
        }
    }
}

/// A volume as the API shows it; the block counts when its host measured it.
pub(super) fn view(v: &VolumeRecord, stat: Option<VolumeStat>) -> Volume {
    Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        state: v.state.clone(),
        size_gb: v.size_gb.max(0) as u32,
        region: v.region.clone(),
        zone: v.zone.clone(),
        encrypted: v.encrypted,
        attached_machine_id: v.attached_machine_id.clone(),
        attached_alloc_id: v.attached_machine_id.clone(),
        created_at: v.created_at.clone(),
        block_size: stat.map(|s| s.block_size),
        blocks: stat.map(|s| s.blocks),
        blocks_free: stat.map(|s| s.blocks_free),
        blocks_avail: stat.map(|s| s.blocks_avail),
        bytes_total: stat.map(|s| s.bytes_total()),
        bytes_used: stat.map(|s| s.bytes_used()),
        fstype: v.fstype.clone(),
        snapshot_retention: v.snapshot_retention.max(0) as u32,
        auto_backup_enabled: v.auto_backup_enabled,
        host_status: if stat.is_some() || v.deleted_at_ms.is_some() {
            "ok".into()
        } else {
            "unknown".into()
        },
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    q: Params,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let summary = q.flag("summary")?;
    let all = q.flag("include_deleted")? || q.flag("all")?;
    let mut out = Vec::new();
    for v in volumes::list(&state, &app.name, all).await? {
        let stat = if summary {
            None
        } else {
            volumes::stat(&state, &v).await
        };
        out.push(view(&v, stat));
    }
    Ok(Json(out))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<CreateVolumeRequest>,
) -> Result<Json<Volume>, ApiError> {
    let app = load_app(&state, &caller, &app).await?;
    let name = body.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::invalid(
            "name is required: give the volume a name such as \"data\"",
        ));
    }
    check_volume_name(name).map_err(ApiError::invalid)?;
    let size_gb = check_volume_size(body.size_gb.unwrap_or(i64::from(API_DEFAULT_VOLUME_GB)))
        .map_err(ApiError::invalid)?;
    let snapshot_retention = check_snapshot_retention(
        body.snapshot_retention
            .unwrap_or(i64::from(DEFAULT_SNAPSHOT_RETENTION)),
    )
    .map_err(ApiError::invalid)?;
    let fstype = match body.fstype.as_deref().unwrap_or("") {
        "" | "ext4" => "ext4".to_string(),
        "raw" => "raw".to_string(),
        other => {
            return Err(ApiError::invalid(format!(
                "fstype {other:?} is not supported: use ext4 (the default) or raw"
            )))
        }
    };
    let snapshot = body.snapshot_id.filter(|s| !s.is_empty());
    let fork = body.source_volume_id.filter(|s| !s.is_empty());
    let source = match (snapshot, fork) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give snapshot_id (to restore) or source_volume_id (to fork), not both",
            ))
        }
        (Some(s), None) => Some(VolumeSource::Snapshot {
            id: s,
            volume_id: String::new(),
        }),
        (None, Some(v)) => Some(VolumeSource::Volume(v)),
        (None, None) => None,
    };
    let region = match (&source, body.region.as_deref()) {
        // A fork stays where its source is unless told otherwise.
        (Some(VolumeSource::Volume(v)), None) => volumes::load(&state, &app.name, v)
            .await
            .map(|v| v.region)
            .unwrap_or_else(|_| state.region.to_string()),
        (_, region) => resolve_region(region, &state.region)?,
    };
    let new = NewVolume {
        name: name.to_string(),
        region,
        size_gb,
        fstype,
        snapshot_retention,
        auto_backup_enabled: body.auto_backup_enabled.unwrap_or(true),
        encrypted: body.encrypted.unwrap_or(true),
        source,
    };
    let (v, stat) = volumes::create(&state, &app, new).await?;
    Ok(Json(view(&v, Some(stat))))
}

async fn load(
    state: &AppState,
    caller: &Caller,
    app: &str,
    id: &str,
) -> Result<VolumeRecord, ApiError> {
    let app = load_app(state, caller, app).await?;
    Ok(volumes::load(state, &app.name, id).await?)
}

async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Volume>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let stat = volumes::stat(&state, &v).await;
    Ok(Json(view(&v, stat)))
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateVolumeRequest>,
) -> Result<Json<Volume>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let days = body
        .snapshot_retention
        .map(check_snapshot_retention)
        .transpose()
        .map_err(ApiError::invalid)?;
    let v = volumes::update(&state, v, days, body.auto_backup_enabled).await?;
    let stat = volumes::stat(&state, &v).await;
    Ok(Json(view(&v, stat)))
}

async fn destroy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Volume>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let v = volumes::destroy(&state, v).await?;
    Ok(Json(view(&v, None)))
}

async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ExtendVolumeRequest>,
) -> Result<Json<ExtendVolumeResponse>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let size = body.size_gb.ok_or_else(|| {
        ApiError::invalid("size_gb is required: give the volume's new size in GB")
    })?;
    let size = check_volume_size(size).map_err(ApiError::invalid)?;
    let (v, stat, needs_restart) = volumes::extend(&state, v, size).await?;
    Ok(Json(ExtendVolumeResponse {
        volume: view(&v, Some(stat)),
        needs_restart,
    }))
}

fn snapshot_view(s: &SnapshotRecord) -> VolumeSnapshot {
    VolumeSnapshot {
        id: s.id.clone(),
        size: s.size.max(0) as u64,
        volume_size: s.volume_size.max(0) as u64,
        digest: s.digest.clone(),
        created_at: s.created_at.clone(),
        status: s.status.clone(),
        retention_days: s.retention_days.max(0) as u32,
        kind: s.kind.clone(),
    }
}

async fn list_snapshots(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<VolumeSnapshot>>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let list = snapshots::list(&state, &v.id).await?;
    Ok(Json(list.iter().map(snapshot_view).collect()))
}

async fn create_snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<VolumeSnapshot>, ApiError> {
    let v = load(&state, &caller, &app, &id).await?;
    let s = snapshots::take(&state, &v, snapshots::ON_DEMAND).await?;
    Ok(Json(snapshot_view(&s)))
}
