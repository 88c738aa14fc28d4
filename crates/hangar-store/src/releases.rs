//! Rows of releases: each deploy's version, image, config definition, sealed secrets
//! snapshot, strategy and outcome. Versions count up per app from 1, chosen inside the
//! insert's transaction. Running deploys is the server's job.

use hangar_types::deploy::{DeployStrategy, ReleaseStatus};

use crate::sql::{args, Row};

use crate::{Db, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub id: String,
    pub app_name: String,
    pub version: i64,
    pub image: String,
    /// The app config (fly.toml as JSON) the release deployed.
    pub definition: String,
    pub secrets_version: i64,
    /// Every secret of the app at release time, sealed by the server as one value.
    pub secrets: Vec<u8>,
    pub strategy: DeployStrategy,
    pub status: ReleaseStatus,
    pub description: String,
    pub user: String,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for ReleaseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseRecord")
            .field("id", &self.id)
            .field("app_name", &self.app_name)
            .field("version", &self.version)
            .field("image", &self.image)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, app_name, version, image, definition, secrets_version, secrets, \
    strategy, status, description, \"user\", error, created_at, updated_at";

/// A stored status; one this binary does not know is a newer schema's, refused.
fn status(s: &str) -> Result<ReleaseStatus> {
    ReleaseStatus::parse(s).ok_or_else(|| {
        crate::StoreError::Corrupt(format!("a release has the unknown status '{s}'"))
    })
}

fn from_row(r: &Row) -> Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        id: r.get(0)?,
        app_name: r.get(1)?,
        version: r.get(2)?,
        image: r.get(3)?,
        definition: r.get(4)?,
        secrets_version: r.get(5)?,
        secrets: r.get(6)?,
        strategy: DeployStrategy::parse(&r.get::<String>(7)?)
            .map_err(crate::StoreError::Corrupt)?,
        status: status(&r.get::<String>(8)?)?,
        description: r.get(9)?,
        user: r.get(10)?,
        error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

impl Db<'_> {
    /// Inserts a release with the next version of its app (its `version` is ignored)
    /// and returns it as stored.
    pub fn create_release(&mut self, mut r: ReleaseRecord) -> Result<ReleaseRecord> {
        let mut tx = self.conn.begin()?;
        r.version = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app_name = ?1",
                args![&r.app_name],
            )?
            .get(0)?;
        tx.defer(
            &format!("INSERT INTO releases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
            args![
                &r.id, &r.app_name, r.version, &r.image, &r.definition, r.secrets_version,
                &r.secrets, r.strategy.as_str(), r.status.as_str(), &r.description, &r.user, &r.error,
                &r.created_at, &r.updated_at
            ],
        )?;
        tx.commit()?;
        Ok(r)
    }

    pub fn set_release_status(
        &mut self,
        id: &str,
        status: ReleaseStatus,
        error: Option<&str>,
        now: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE releases SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            args![id, status.as_str(), error, now],
        )?;
        Ok(())
    }

    /// The app's releases, newest first.
    pub fn releases(&mut self, app: &str, limit: i64) -> Result<Vec<ReleaseRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM releases WHERE app_name = ?1 ORDER BY version DESC LIMIT ?2"
                ),
                args![app, limit],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    pub fn release(&mut self, id: &str) -> Result<Option<ReleaseRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM releases WHERE id = ?1"),
                args![id],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    pub fn release_by_version(&mut self, app: &str, version: i64) -> Result<Option<ReleaseRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM releases WHERE app_name = ?1 AND version = ?2"),
                args![app, version],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// The newest release that completed: what the app runs.
    pub fn current_release(&mut self, app: &str) -> Result<Option<ReleaseRecord>> {
        self.conn
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM releases WHERE app_name = ?1 AND status = 'complete' \
                     ORDER BY version DESC LIMIT 1"
                ),
                args![app],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// Releases left `running` or `pending` by a server that stopped mid-deploy.
    pub fn unfinished_releases(&mut self) -> Result<Vec<ReleaseRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM releases WHERE status IN ('pending', 'running') ORDER BY created_at"
                ),
                &[],
            )?
            .iter()
            .map(from_row)
            .collect()
    }
}
