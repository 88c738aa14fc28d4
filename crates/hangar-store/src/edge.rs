//! Rows of the edge: the IP addresses assigned to apps and the certificates of their
//! hostnames. Choosing a free address and issuing certificates are the server's job;
//! the unique index on dedicated addresses keeps two apps from holding one.

use crate::sql::{args, Conn, Row};

use crate::feed::{self, FeedKind};
use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRecord {
    pub app_name: String,
    pub ip: String,
    /// `v4`, `shared_v4`, `v6` or `private_v6`.
    pub kind: String,
    pub region: String,
    pub shared: bool,
    pub network: Option<String>,
    pub service_name: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub hostname: String,
    pub app_name: String,
    /// `acme` or `dev_ca`.
    pub authority: String,
    /// `pending_validation`, `active` or `failed`.
    pub status: String,
    pub chain_pem: Option<String>,
    pub key_pem: Option<String>,
    pub issuer: Option<String>,
    pub expires_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const IP_COLUMNS: &str = "app_name, ip, kind, region, shared, network, service_name, created_at";

fn ip_from_row(r: &Row) -> Result<IpRecord> {
    Ok(IpRecord {
        app_name: r.get(0)?,
        ip: r.get(1)?,
        kind: r.get(2)?,
        region: r.get(3)?,
        shared: r.get(4)?,
        network: r.get(5)?,
        service_name: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const CERT_COLUMNS: &str = "hostname, app_name, authority, status, chain_pem, key_pem, issuer, \
    expires_at, last_error, created_at, updated_at";

fn cert_from_row(r: &Row) -> Result<CertRecord> {
    Ok(CertRecord {
        hostname: r.get(0)?,
        app_name: r.get(1)?,
        authority: r.get(2)?,
        status: r.get(3)?,
        chain_pem: r.get(4)?,
        key_pem: r.get(5)?,
        issuer: r.get(6)?,
        expires_at: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl Db<'_> {
    /// Every address assigned, to every app.
    pub fn all_ips(&mut self) -> Result<Vec<IpRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {IP_COLUMNS} FROM ip_assignments ORDER BY app_name, created_at, ip"
                ),
                &[],
            )?
            .iter()
            .map(ip_from_row)
            .collect()
    }

    pub fn ips_of_app(&mut self, app: &str) -> Result<Vec<IpRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {IP_COLUMNS} FROM ip_assignments WHERE app_name = ?1 ORDER BY created_at, ip"
                ),
                args![app],
            )?
            .iter()
            .map(ip_from_row)
            .collect()
    }

    /// Assigns the first address `candidates` yields that no app holds, in one
    /// transaction; `None` when every candidate is taken.
    pub fn assign_ip(
        &mut self,
        template: &IpRecord,
        candidates: &mut dyn Iterator<Item = String>,
    ) -> Result<Option<IpRecord>> {
        let mut tx = self.conn.begin()?;
        let mut chosen = None;
        for ip in candidates {
            if tx
                .query_opt("SELECT 1 FROM ip_assignments WHERE ip = ?1", args![&ip])?
                .is_none()
            {
                chosen = Some(ip);
                break;
            }
        }
        let Some(ip) = chosen else {
            return Ok(None);
        };
        let record = IpRecord {
            ip,
            ..template.clone()
        };
        insert_ip(&mut tx, &record)?;
        feed::record(&mut tx, FeedKind::Ip, &record.app_name, &record.ip)?;
        tx.commit()?;
        self.fed = true;
        Ok(Some(record))
    }

    /// Records an address shared with other apps (the edge listener's).
    pub fn assign_shared_ip(&mut self, record: &IpRecord) -> Result<()> {
        let mut tx = self.conn.begin()?;
        insert_ip(&mut tx, record)?;
        feed::record(&mut tx, FeedKind::Ip, &record.app_name, &record.ip)?;
        tx.commit()?;
        self.fed = true;
        Ok(())
    }

    pub fn release_ip(&mut self, app: &str, ip: &str) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let n = tx.execute(
            "DELETE FROM ip_assignments WHERE app_name = ?1 AND ip = ?2",
            args![app, ip],
        )?;
        if n == 1 {
            feed::record(&mut tx, FeedKind::Ip, app, ip)?;
        }
        tx.commit()?;
        self.fed |= n == 1;
        Ok(n == 1)
    }

    pub fn certificate(&mut self, hostname: &str) -> Result<Option<CertRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE hostname = ?1"),
                args![hostname],
            )?
            .map(|r| cert_from_row(&r))
            .transpose()
    }

    pub fn certificates_of_app(&mut self, app: &str) -> Result<Vec<CertRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {CERT_COLUMNS} FROM certificates WHERE app_name = ?1 ORDER BY hostname"
                ),
                args![app],
            )?
            .iter()
            .map(cert_from_row)
            .collect()
    }

    pub fn all_certificates(&mut self) -> Result<Vec<CertRecord>> {
        self.conn
            .query(
                &format!("SELECT {CERT_COLUMNS} FROM certificates ORDER BY hostname"),
                &[],
            )?
            .iter()
            .map(cert_from_row)
            .collect()
    }

    /// Adds the hostname if no app holds it yet; `false` when it is already there.
    pub fn insert_certificate(&mut self, c: &CertRecord) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let n = tx.execute(
            &format!(
                "INSERT INTO certificates ({CERT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING"
            ),
            args![
                &c.hostname,
                &c.app_name,
                &c.authority,
                &c.status,
                &c.chain_pem,
                &c.key_pem,
                &c.issuer,
                &c.expires_at,
                &c.last_error,
                &c.created_at,
                &c.updated_at
            ],
        )?;
        if n == 1 {
            feed::record(&mut tx, FeedKind::Certificate, &c.app_name, &c.hostname)?;
        }
        tx.commit()?;
        self.fed |= n == 1;
        Ok(n == 1)
    }

    /// Writes the outcome of an issuance attempt.
    pub fn update_certificate(&mut self, c: &CertRecord) -> Result<()> {
        let mut tx = self.conn.begin()?;
        tx.defer(
            "UPDATE certificates SET status = ?2, chain_pem = ?3, key_pem = ?4, issuer = ?5, \
             expires_at = ?6, last_error = ?7, updated_at = ?8 WHERE hostname = ?1",
            args![
                &c.hostname,
                &c.status,
                &c.chain_pem,
                &c.key_pem,
                &c.issuer,
                &c.expires_at,
                &c.last_error,
                &c.updated_at
            ],
        )?;
        feed::record(&mut tx, FeedKind::Certificate, &c.app_name, &c.hostname)?;
        tx.commit()?;
        self.fed = true;
        Ok(())
    }

    /// Writes every field of an existing hostname's row (an imported certificate).
    pub fn replace_certificate(&mut self, c: &CertRecord) -> Result<()> {
        let mut tx = self.conn.begin()?;
        tx.defer(
            "UPDATE certificates SET authority = ?2, status = ?3, chain_pem = ?4, key_pem = ?5, \
             issuer = ?6, expires_at = ?7, last_error = NULL, updated_at = ?8 WHERE hostname = ?1",
            args![
                &c.hostname,
                &c.authority,
                &c.status,
                &c.chain_pem,
                &c.key_pem,
                &c.issuer,
                &c.expires_at,
                &c.updated_at
            ],
        )?;
        feed::record(&mut tx, FeedKind::Certificate, &c.app_name, &c.hostname)?;
        tx.commit()?;
        self.fed = true;
        Ok(())
    }

    pub fn delete_certificate(&mut self, app: &str, hostname: &str) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let n = tx.execute(
            "DELETE FROM certificates WHERE app_name = ?1 AND hostname = ?2",
            args![app, hostname],
        )?;
        if n == 1 {
            feed::record(&mut tx, FeedKind::Certificate, app, hostname)?;
        }
        tx.commit()?;
        self.fed |= n == 1;
        Ok(n == 1)
    }
}

fn insert_ip(conn: &mut Conn, r: &IpRecord) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO ip_assignments ({IP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING"),
        args![
            &r.app_name,
            &r.ip,
            &r.kind,
            &r.region,
            &r.shared,
            &r.network,
            &r.service_name,
            &r.created_at
        ],
    )?;
    Ok(())
}
