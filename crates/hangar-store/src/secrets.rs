//! Rows of app secrets: each value sealed by the server (the store never sees a
//! plaintext), its digest, and the app's secrets version, which every change bumps.
//! Sealing, opening and digests are the server's job.

use crate::sql::{args, Row};

use crate::{Db, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub app_name: String,
    pub name: String,
    /// The value as the server sealed it.
    pub sealed: Vec<u8>,
    pub digest: String,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("app_name", &self.app_name)
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

fn from_row(r: &Row) -> Result<SecretRecord> {
    Ok(SecretRecord {
        app_name: r.get(0)?,
        name: r.get(1)?,
        sealed: r.get(2)?,
        digest: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// One change: a sealed value to set, or `None` to unset.
pub type SecretChange = (String, Option<(Vec<u8>, String)>);

impl Db<'_> {
    /// The app's secrets, by name.
    pub fn secrets(&mut self, app: &str) -> Result<Vec<SecretRecord>> {
        self.conn
            .query(
                "SELECT app_name, name, sealed, digest, created_at, updated_at FROM secrets \
                 WHERE app_name = ?1 ORDER BY name",
                args![app],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The app's secrets version; 0 before the first change.
    pub fn secrets_version(&mut self, app: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_opt(
                "SELECT version FROM secrets_versions WHERE app_name = ?1",
                args![app],
            )?
            .map(|r| r.get(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Applies every change in one transaction and returns the new version. With
    /// `replace_all`, secrets not named in `changes` are removed (a rollback restoring
    /// a release's set).
    pub fn change_secrets(
        &mut self,
        app: &str,
        changes: &[SecretChange],
        replace_all: bool,
        now: &str,
    ) -> Result<i64> {
        let mut tx = self.conn.begin()?;
        if replace_all {
            tx.defer("DELETE FROM secrets WHERE app_name = ?1", args![app])?;
        }
        for (name, change) in changes {
            match change {
                Some((sealed, digest)) => {
                    tx.defer(
                        "INSERT INTO secrets (app_name, name, sealed, digest, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                         ON CONFLICT (app_name, name) DO UPDATE SET sealed = excluded.sealed, \
                         digest = excluded.digest, updated_at = excluded.updated_at",
                        args![app, name, sealed, digest, now],
                    )?;
                }
                None => {
                    tx.defer(
                        "DELETE FROM secrets WHERE app_name = ?1 AND name = ?2",
                        args![app, name],
                    )?;
                }
            }
        }
        tx.defer(
            "INSERT INTO secrets_versions (app_name, version) VALUES (?1, 1) \
             ON CONFLICT (app_name) DO UPDATE SET version = secrets_versions.version + 1",
            args![app],
        )?;
        let version = tx
            .query_one(
                "SELECT version FROM secrets_versions WHERE app_name = ?1",
                args![app],
            )?
            .get(0)?;
        tx.commit()?;
        Ok(version)
    }
}
