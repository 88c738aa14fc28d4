//! The leases a deploy holds on the machines it changes, as flyctl holds them: an API
//! client cannot update, stop or destroy one of them mid-deploy without the nonce, and a
//! machine someone else has leased stops the deploy before anything changed. Leases
//! lapse on their own if the server stops mid-deploy.

use hangar_store::LeaseRecord;

use super::run::{Ctx, Failure};
use crate::{clock, ids};

/// How long a deploy's leases last unless released (a deploy that outlives it goes on
/// unprotected).
const TTL_SECS: i64 = 3600;

/// Leases every machine in `machine_ids`, all or none.
pub(super) async fn take(ctx: &Ctx<'_>, machine_ids: Vec<String>) -> Result<(), Failure> {
    let owner = format!("{} (deploy v{})", ctx.release.user, ctx.release.version);
    let ids = machine_ids.clone();
    let held = ctx
        .state
        .store
        .call(move |db| {
            let now = clock::now_secs();
            let mut held = Vec::new();
            for id in &ids {
                if let Some(l) = db.active_lease(id, now)? {
                    held.push(l);
                }
            }
            if held.is_empty() {
                for id in &ids {
                    db.put_lease(&LeaseRecord {
                        machine_id: id.clone(),
                        nonce: ids::lease_nonce(),
                        owner: owner.clone(),
                        description: "deploy".into(),
                        expires_at: now + TTL_SECS,
                    })?;
                }
            }
            Ok(held)
        })
        .await
        .map_err(|e| Failure::new(format!("lease the machines: {e}")))?;
    if let Some(l) = held.first() {
        return Err(Failure::new(format!(
            "machine {} is leased by {} until {}; wait for it to be released (or release it) and deploy again",
            l.machine_id,
            l.owner,
            clock::rfc3339_from_secs(l.expires_at)
        )));
    }
    if let Ok(mut leased) = ctx.undo.leased.lock() {
        leased.extend(machine_ids);
    }
    Ok(())
}

/// Releases what [`take`] leased.
pub(super) async fn release(ctx: &Ctx<'_>) {
    let ids = ctx
        .undo
        .leased
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    if ids.is_empty() {
        return;
    }
    let r = ctx
        .state
        .store
        .call(move |db| {
            for id in &ids {
                db.delete_lease(id)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "release the deploy's leases");
    }
}
