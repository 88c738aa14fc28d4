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
    let volumes: Vec<VolumeRecord> = match store.call(|db| db.live_volumes()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "encrypted volumes cannot be unlocked: the store is unreachable");
            return Vec::new();
        }
    };
    volumes
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
        .collect()
}

/// Gives a (remote) agent that just registered the keys of the encrypted volumes its
/// host holds.
pub async fn unlock_host(state: &AppState, host: &str) {
    for op in unlocks(&state.store, &state.vault, Some(host)).await {
        if let Err(e) = state.agent.api().volume(&op).await {
            tracing::error!(error = %e, "volume cannot be unlocked");
        }
    }
}
