//! WireGuard peers of each org: a name, the region of the gateway it uses, its public
//! key (the private key never leaves the peer's owner) and its address. Choosing the
//! address and configuring gateways are the server's and the agent's jobs; the unique
//! indexes keep two peers from sharing a name in an org, a key or an address.

use crate::sql::{args, Row};
use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardPeerRecord {
    pub org_slug: String,
    pub name: String,
    pub region: String,
    pub public_key: String,
    /// The peer's address (`fdaa:0:<org>:ffff::<slot>:2`), in a /120 of its own.
    pub address: String,
    pub created_at: String,
}

const COLUMNS: &str = "org_slug, name, region, public_key, address, created_at";

fn from_row(r: &Row) -> Result<WireguardPeerRecord> {
    Ok(WireguardPeerRecord {
        org_slug: r.get(0)?,
        name: r.get(1)?,
        region: r.get(2)?,
        public_key: r.get(3)?,
        address: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl Db<'_> {
    /// The peers of `org`, or of every org with `None`, oldest first.
    pub fn wireguard_peers(&mut self, org: Option<&str>) -> Result<Vec<WireguardPeerRecord>> {
        let rows = match org {
            Some(org) => self.conn.query(
                &format!("SELECT {COLUMNS} FROM wireguard_peers WHERE org_slug = ?1 ORDER BY created_at, name"),
                args![org],
            )?,
            None => self.conn.query(
                &format!("SELECT {COLUMNS} FROM wireguard_peers ORDER BY org_slug, created_at, name"),
                &[],
            )?,
        };
        rows.iter().map(from_row).collect()
    }

    /// Adds a peer; a name, key or address already taken is a unique violation
    /// ([`crate::StoreError::is_unique_violation`]).
    pub fn insert_wireguard_peer(&mut self, peer: &WireguardPeerRecord) -> Result<()> {
        self.conn.execute(
            &format!("INSERT INTO wireguard_peers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            args![
                &peer.org_slug,
                &peer.name,
                &peer.region,
                &peer.public_key,
                &peer.address,
                &peer.created_at
            ],
        )?;
        Ok(())
    }

    /// Removes the org's peer `name`; whether there was one.
    pub fn delete_wireguard_peer(&mut self, org: &str, name: &str) -> Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM wireguard_peers WHERE org_slug = ?1 AND name = ?2",
            args![org, name],
        )?;
        Ok(n == 1)
    }
}
