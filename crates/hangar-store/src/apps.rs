//! Orgs, API tokens (stored as SHA-256 digests, never in clear) and apps.

use crate::sql::{args, Row};

use crate::feed::{self, FeedKind};
use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub slug: String,
    pub name: String,
    pub numeric_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub org_slug: String,
    pub name: String,
    /// `org` (its org's apps and everything in them) or `admin` (that, and creating
    /// and removing orgs).
    pub kind: String,
}

/// The most orgs one control plane holds: an org's number is a byte of its machines'
/// addresses and bridge names.
pub const MOST_ORGS: i64 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub org_slug: String,
    pub network: String,
    pub created_at_ms: i64,
    /// Machines of the app that are not destroyed.
    pub machine_count: i64,
    /// The numeric id of the app's org (its machines' 6PN prefix), read with the app;
    /// an insert ignores it.
    pub org_numeric_id: i64,
}

const APP_COLUMNS: &str = "a.id, a.name, a.org_slug, a.network, a.created_at_ms, \
    (SELECT COUNT(*) FROM machines m WHERE m.app_name = a.name AND m.state <> 'destroyed'), \
    (SELECT o.numeric_id FROM orgs o WHERE o.slug = a.org_slug)";

fn app_from_row(r: &Row) -> Result<AppRecord> {
    Ok(AppRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        org_slug: r.get(2)?,
        network: r.get(3)?,
        created_at_ms: r.get(4)?,
        machine_count: r.get(5)?,
        org_numeric_id: r.get(6)?,
    })
}

fn org_from_row(r: &Row) -> Result<OrgRecord> {
    Ok(OrgRecord {
        slug: r.get(0)?,
        name: r.get(1)?,
        numeric_id: r.get(2)?,
    })
}

impl Db<'_> {
    pub fn org(&mut self, slug: &str) -> Result<Option<OrgRecord>> {
        self.conn
            .query_opt(
                "SELECT slug, name, numeric_id FROM orgs WHERE slug = ?1",
                args![slug],
            )?
            .map(|r| org_from_row(&r))
            .transpose()
    }

    /// Every org, oldest first.
    pub fn orgs(&mut self) -> Result<Vec<OrgRecord>> {
        self.conn
            .query(
                "SELECT slug, name, numeric_id FROM orgs ORDER BY numeric_id",
                &[],
            )?
            .iter()
            .map(org_from_row)
            .collect()
    }

    /// Creates the org if it does not exist yet; returns whether it was created.
    pub fn ensure_org(&mut self, org: &OrgRecord, created_at: &str) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT INTO orgs (slug, name, numeric_id, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            args![&org.slug, &org.name, org.numeric_id, created_at],
        )?;
        Ok(n == 1)
    }

    pub fn token_count(&mut self) -> Result<i64> {
        self.conn
            .query_one("SELECT COUNT(*) FROM tokens", &[])?
            .get(0)
    }

    pub fn insert_token(
        &mut self,
        token: &TokenRecord,
        sha256: &str,
        created_at: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO tokens (id, org_slug, name, sha256, created_at, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![&token.id, &token.org_slug, &token.name, sha256, created_at, &token.kind],
        )?;
        Ok(())
    }

    pub fn token_by_digest(&mut self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.conn
            .query_opt(
                "SELECT id, org_slug, name, kind FROM tokens WHERE sha256 = ?1",
                args![sha256],
            )?
            .map(|r| {
                Ok(TokenRecord {
                    id: r.get(0)?,
                    org_slug: r.get(1)?,
                    name: r.get(2)?,
                    kind: r.get(3)?,
                })
            })
            .transpose()
    }

    /// Adds an org under the next free number, with its first token, in one
    /// transaction; `None` when the slug is taken.
    pub fn create_org(
        &mut self,
        slug: &str,
        name: &str,
        token: &TokenRecord,
        sha256: &str,
        created_at: &str,
    ) -> Result<Option<OrgRecord>> {
        let mut tx = self.conn.begin()?;
        if tx
            .query_opt("SELECT 1 FROM orgs WHERE slug = ?1", args![slug])?
            .is_some()
        {
            return Ok(None);
        }
        let next: i64 = tx
            .query_one("SELECT COALESCE(MAX(numeric_id), 0) + 1 FROM orgs", &[])?
            .get(0)?;
        if next > MOST_ORGS {
            return Err(crate::StoreError::Conflict(format!(
                "this control plane holds {MOST_ORGS} orgs, the most it can: remove one first"
            )));
        }
        tx.execute(
            "INSERT INTO orgs (slug, name, numeric_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            args![slug, name, next, created_at],
        )?;
        tx.execute(
            "INSERT INTO tokens (id, org_slug, name, sha256, created_at, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![&token.id, slug, &token.name, sha256, created_at, &token.kind],
        )?;
        tx.commit()?;
        Ok(Some(OrgRecord {
            slug: slug.to_string(),
            name: name.to_string(),
            numeric_id: next,
        }))
    }

    /// Removes an org that holds no apps, with its tokens and peers; whether it was
    /// there. An org with apps is a conflict.
    pub fn delete_org(&mut self, slug: &str) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let apps: i64 = tx
            .query_one("SELECT COUNT(*) FROM apps WHERE org_slug = ?1", args![slug])?
            .get(0)?;
        if apps > 0 {
            return Err(crate::StoreError::Conflict(format!(
                "org {slug} still has {apps} app(s): destroy them first (hangar apps destroy)"
            )));
        }
        tx.execute("DELETE FROM tokens WHERE org_slug = ?1", args![slug])?;
        tx.execute(
            "DELETE FROM wireguard_peers WHERE org_slug = ?1",
            args![slug],
        )?;
        let n = tx.execute("DELETE FROM orgs WHERE slug = ?1", args![slug])?;
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn insert_app(&mut self, app: &AppRecord) -> Result<()> {
        let mut tx = self.conn.begin()?;
        tx.execute(
            "INSERT INTO apps (id, name, org_slug, network, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![&app.id, &app.name, &app.org_slug, &app.network, app.created_at_ms],
        )?;
        feed::record(&mut tx, FeedKind::App, &app.name, &app.name)?;
        tx.commit()?;
        self.fed = true;
        Ok(())
    }

    pub fn app(&mut self, name: &str) -> Result<Option<AppRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.name = ?1"),
                args![name],
            )?
            .map(|r| app_from_row(&r))
            .transpose()
    }

    pub fn apps_in_org(&mut self, org_slug: &str) -> Result<Vec<AppRecord>> {
        self.conn
            .query(
                &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.org_slug = ?1 ORDER BY a.name"),
                args![org_slug],
            )?
            .iter()
            .map(app_from_row)
            .collect()
    }

    /// Deletes the app and, by cascade, every row of its machines.
    pub fn delete_app(&mut self, name: &str) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let n = tx.execute("DELETE FROM apps WHERE name = ?1", args![name])?;
        if n == 1 {
            feed::record(&mut tx, FeedKind::App, name, name)?;
        }
        tx.commit()?;
        self.fed |= n == 1;
        Ok(n == 1)
    }
}
