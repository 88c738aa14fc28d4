//! Leases on machines and idempotency keys of create requests.

use crate::sql::args;

use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub machine_id: String,
    pub nonce: String,
    pub owner: String,
    pub description: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A response kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    pub request_sha256: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Db<'_> {
    /// The lease on a machine if one is held and not expired at `now` (Unix seconds).
    pub fn active_lease(&mut self, machine_id: &str, now: i64) -> Result<Option<LeaseRecord>> {
        self.conn
            .query_opt(
                "SELECT machine_id, nonce, owner, description, expires_at FROM leases
                 WHERE machine_id = ?1 AND expires_at > ?2",
                args![machine_id, now],
            )?
            .map(|r| {
                Ok(LeaseRecord {
                    machine_id: r.get(0)?,
                    nonce: r.get(1)?,
                    owner: r.get(2)?,
                    description: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            })
            .transpose()
    }

    pub fn put_lease(&mut self, lease: &LeaseRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO leases (machine_id, nonce, owner, description, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (machine_id) DO UPDATE SET nonce = excluded.nonce, owner = excluded.owner,
                 description = excluded.description, expires_at = excluded.expires_at",
            args![
                &lease.machine_id,
                &lease.nonce,
                &lease.owner,
                &lease.description,
                lease.expires_at
            ],
        )?;
        Ok(())
    }

    pub fn delete_lease(&mut self, machine_id: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM leases WHERE machine_id = ?1",
            args![machine_id],
        )? == 1)
    }

    /// The response kept for `key` in `scope`, if it is younger than `min_created_at`.
    pub fn idempotent_response(
        &mut self,
        scope: &str,
        key: &str,
        min_created_at: i64,
    ) -> Result<Option<IdempotentResponse>> {
        self.conn
            .query_opt(
                "SELECT request_sha256, status, body FROM idempotency_keys
                 WHERE scope = ?1 AND key = ?2 AND created_at >= ?3",
                args![scope, key, min_created_at],
            )?
            .map(|r| {
                Ok(IdempotentResponse {
                    request_sha256: r.get(0)?,
                    status: r.get(1)?,
                    body: r.get(2)?,
                })
            })
            .transpose()
    }

    /// Keeps a response for `key`, replacing an expired one, and drops keys older than
    /// `min_created_at`.
    pub fn put_idempotent_response(
        &mut self,
        scope: &str,
        key: &str,
        response: &IdempotentResponse,
        created_at: i64,
        min_created_at: i64,
    ) -> Result<()> {
        let mut tx = self.conn.begin()?;
        tx.defer(
            "DELETE FROM idempotency_keys WHERE created_at < ?1",
            args![min_created_at],
        )?;
        tx.defer(
            "INSERT INTO idempotency_keys (scope, key, request_sha256, status, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
                 status = excluded.status, body = excluded.body, created_at = excluded.created_at",
            args![
                scope,
                key,
                &response.request_sha256,
                response.status,
                &response.body,
                created_at
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}
