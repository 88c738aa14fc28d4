//! Encrypted volumes' keys as the control plane keeps them: made at random for a new
//! volume, sealed under the master key (bound to the volume's or snapshot's id) in the
//! store, carried over to a restored or forked volume, and given back to a host's agent
//! when it starts (the kernel forgets a key at unmount; the host never stores one).

use hangar_agent::volumes::{fscrypt, VolumeKey, VolumeOp};
use hangar_store::{Store, VolumeRecord};

use super::VolumeFailure;
use crate::secrets::Vault;
use crate::AppState;

fn place(owner: &str) -> String {
    format!("volume-key:{owner}")
}

/// A new random key.
pub fn fresh() -> Vec<u8> {
    (0..fscrypt::KEY_LEN)
        .map(|_| rand::random::<u8>())
        .collect()
}

/// `key` sealed for `owner` (a volume or snapshot id).
pub fn seal(state: &AppState, owner: &str, key: &[u8]) -> Result<Vec<u8>, VolumeFailure> {
    state
        .vault
        .seal_bytes(&place(owner), key)
        .map_err(|e| VolumeFailure::Agent(format!("cannot seal the volume's key: {e}")))
}

/// What [`seal`] sealed for `owner`.
pub fn open(state: &AppState, owner: &str, sealed: &[u8]) -> Result<Vec<u8>, VolumeFailure> {
    open_with(&state.vault, owner, sealed)
}

fn open_with(vault: &Vault, owner: &str, sealed: &[u8]) -> Result<Vec<u8>, VolumeFailure> {
    vault.open_bytes(&place(owner), sealed).map_err(|_| {
        VolumeFailure::Agent(format!(
            "the key of {owner} cannot be opened with this master key: start the server with the master key it was made under"
        ))
    })
}

/// The keys of every live encrypted volume (on `host`, or all), opened, as the ops that
/// give them to an agent. One that cannot be opened is logged and left out.
pub async fn unlocks(store: &Store, vault: &Vault, host: Option<&str>) -> Vec<VolumeOp> {
    match try_unlocks(store, vault, host).await {
        Ok(ops) => ops,
        Err(e) => {
            tracing::error!(error = %e, "encrypted volumes cannot be unlocked: the store is unreachable");
            Vec::new()
        }
    }
}

/// [`unlocks`], or why the store could not say which volumes there are.
async fn try_unlocks(
    store: &Store,
    vault: &Vault,
    host: Option<&str>,
) -> Result<Vec<VolumeOp>, hangar_store::StoreError> {
    let volumes: Vec<VolumeRecord> = store.call(|db| db.live_volumes()).await?;
    Ok(volumes
        .iter()
        .filter(|v| host.is_none_or(|h| v.host == h))
        .filter_map(|v| {
            let sealed = v.sealed_key.as_ref()?;
            match open_with(vault, &v.id, sealed) {
                Ok(k) => Some(VolumeOp::Unlock {
                    id: v.id.clone(),
                    key: VolumeKey::from_bytes(&k),
                }),
                Err(e) => {
                    tracing::error!(volume = %v.id, error = %e, "volume cannot be unlocked");
                    None
                }
            }
        })
        .collect())
}

/// Gives a (remote) agent that just registered the keys of the encrypted volumes its
/// host holds. While the store or the agent cannot be reached it tries again, with
/// backoff, for about ten minutes (a machine start on a locked volume says why it
/// fails meanwhile).
pub async fn unlock_host(state: &AppState, host: &str) {
    use backon::Retryable;
    let patiently = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(500))
            .with_max_delay(std::time::Duration::from_secs(60))
            .with_max_times(14)
    };
    let ops = match (|| try_unlocks(&state.store, &state.vault, Some(host)))
        .retry(patiently())
        .notify(|e, after| tracing::warn!(error = %e, ?after, "the store is unreachable; volume keys are given to the host once it answers"))
        .await
    {
        Ok(ops) => ops,
        Err(e) => {
            tracing::error!(host, error = %e, "encrypted volumes of the host were not unlocked: the store stayed unreachable");
            return;
        }
    };
    for op in ops {
        let given = (|| state.agent.api().volume(&op))
            .retry(patiently())
            .when(|e| matches!(e, hangar_agent::volumes::VolumeError::Failed(_)))
            .await;
        if let Err(e) = given {
            tracing::error!(error = %e, "volume cannot be unlocked");
        }
    }
}
