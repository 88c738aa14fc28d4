//! App secrets: changing, listing and opening them, sealed under the master key
//! ([`key`]). Values go in through the API and out only to machines, as environment
//! at start and as `[[files]] secret_name` files; never into a machine config, an
//! event, a log line, an error or a response.
//!
//! A release keeps a sealed snapshot of every secret, so a machine of that release
//! starts with that release's values and a rollback restores them.

pub mod key;

use std::collections::BTreeMap;
use std::sync::Arc;

use hangar_runtime::Secrets;
use hangar_store::{MachineRecord, SecretRecord, Store, StoreError};

pub use key::{KeyError, MasterKey};

/// Largest value a secret may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a secret's name: an environment variable name, not one the platform sets.
pub fn check_name(name: &str) -> Result<(), VaultError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(VaultError::Invalid(format!(
            "invalid secret name {name:?}: use letters, digits and underscores, not starting with a digit (e.g. DATABASE_URL)"
        )));
    }
    if name.to_ascii_uppercase().starts_with("FLY_") {
        return Err(VaultError::Invalid(format!(
            "invalid secret name {name:?}: names starting with FLY_ are set by the platform; choose another name"
        )));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Vault {
    store: Store,
    key: Arc<MasterKey>,
}

fn place(app: &str, name: &str) -> String {
    format!("secret:{app}/{name}")
}

fn snapshot_place(app: &str) -> String {
    format!("release-secrets:{app}")
}

fn now() -> String {
    crate::clock::rfc3339_now()
}

impl Vault {
    pub fn new(store: Store, key: MasterKey) -> Self {
        Self {
            store,
            key: Arc::new(key),
        }
    }

    /// The app's secrets (sealed) and its secrets version.
    pub async fn list(&self, app: &str) -> Result<(Vec<SecretRecord>, i64), VaultError> {
        let app = app.to_string();
        Ok(self
            .store
            .call(move |db| Ok((db.secrets(&app)?, db.secrets_version(&app)?)))
            .await?)
    }

    /// Sets (`Some`) and unsets (`None`) secrets in one step; returns the new version.
    pub async fn change(
        &self,
        app: &str,
        values: BTreeMap<String, Option<String>>,
    ) -> Result<i64, VaultError> {
        self.write(app, values, false).await
    }

    /// Makes the app's secrets exactly `set` (a rollback to a release's values).
    pub async fn restore(&self, app: &str, set: &Secrets) -> Result<i64, VaultError> {
        let values = set
            .0
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        self.write(app, values, true).await
    }

    async fn write(
        &self,
        app: &str,
        values: BTreeMap<String, Option<String>>,
        replace_all: bool,
    ) -> Result<i64, VaultError> {
        let mut changes = Vec::new();
        for (name, value) in values {
            check_name(&name)?;
            let sealed = match value {
                None => None,
                Some(v) => {
                    if v.len() > MAX_VALUE_BYTES {
                        return Err(VaultError::Invalid(format!(
                            "secret {name} is {} bytes; the largest a secret may be is {MAX_VALUE_BYTES} bytes",
                            v.len()
                        )));
                    }
                    let p = place(app, &name);
                    Some((
                        self.key.seal(&p, v.as_bytes())?,
                        self.key.digest(&p, v.as_bytes()),
                    ))
                }
            };
            changes.push((name, sealed));
        }
        let app = app.to_string();
        let now = now();
        Ok(self
            .store
            .call(move |db| db.change_secrets(&app, &changes, replace_all, &now))
            .await?)
    }

    /// Every secret of the app, opened.
    pub async fn current(&self, app: &str) -> Result<Secrets, VaultError> {
        let name = app.to_string();
        let records = self.store.call(move |db| db.secrets(&name)).await?;
        let mut out = BTreeMap::new();
        for r in records {
            let v = self.key.open(&place(app, &r.name), &r.sealed)?;
            out.insert(r.name, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(Secrets(out))
    }

    /// The app's secrets sealed as one value for a release, with their version.
    pub async fn snapshot(&self, app: &str) -> Result<(i64, Vec<u8>), VaultError> {
        let (_, version) = self.list(app).await?;
        let set = self.current(app).await?;
        Ok((version, self.seal_snapshot(app, &set)?))
    }

    /// Seals bytes that are not an app's secret (a volume's key), bound to `place`.
    pub fn seal_bytes(&self, place: &str, bytes: &[u8]) -> Result<Vec<u8>, VaultError> {
        Ok(self.key.seal(place, bytes)?)
    }

    /// Opens what [`Vault::seal_bytes`] sealed for the same `place`.
    pub fn open_bytes(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        Ok(self.key.open(place, sealed)?)
    }

    /// Seals a set of secrets as one value for a release.
    pub fn seal_snapshot(&self, app: &str, set: &Secrets) -> Result<Vec<u8>, VaultError> {
        let json = serde_json::to_vec(&set.0)
            .map_err(|e| VaultError::Invalid(format!("encode the secrets: {e}")))?;
        Ok(self.key.seal(&snapshot_place(app), &json)?)
    }

    /// Opens a release's snapshot.
    pub fn open_snapshot(&self, app: &str, sealed: &[u8]) -> Result<Secrets, VaultError> {
        if sealed.is_empty() {
            return Ok(Secrets::default());
        }
        let json = self.key.open(&snapshot_place(app), sealed)?;
        let map = serde_json::from_slice(&json).map_err(|_| VaultError::Key(KeyError::Open))?;
        Ok(Secrets(map))
    }

    /// The secrets a machine starts with: those of the release it belongs to
    /// (`fly_release_id` in its metadata), else the app's current ones.
    pub async fn for_machine(&self, m: &MachineRecord) -> Result<Secrets, VaultError> {
        let release_id = m
            .config
            .metadata
            .as_ref()
            .and_then(|md| md.get("fly_release_id"))
            .cloned();
        if let Some(id) = release_id {
            let lookup = id.clone();
            let release = self.store.call(move |db| db.release(&lookup)).await?;
            if let Some(r) = release.filter(|r| r.app_name == m.app_name) {
                return self.open_snapshot(&m.app_name, &r.secrets);
            }
        }
        self.current(&m.app_name).await
    }
}

/// The agent gets a machine's secrets from the vault.
#[async_trait::async_trait]
impl hangar_agent::SecretSource for Vault {
    async fn for_machine(
        &self,
        machine: &MachineRecord,
    ) -> Result<Secrets, hangar_agent::SecretsError> {
        Vault::for_machine(self, machine)
            .await
            .map_err(|e| match e {
                VaultError::Store(s) if s.is_unavailable() => {
                    hangar_agent::SecretsError::Unavailable(s.to_string())
                }
                e => hangar_agent::SecretsError::Failed(e.to_string()),
            })
    }
}
