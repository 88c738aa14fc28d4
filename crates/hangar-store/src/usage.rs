//! Rows of metered usage: per month, org, app and what was used (a machine of a size in
//! a state, a volume's gigabytes, a dedicated address, bytes out), the quantity so far;
//! and the meters running now (`usage_open`), each with the moment up to which its
//! quantity is already counted, so a restart resumes them. What to meter, and what it
//! costs, is the server's business.

use crate::sql::{args, Row};

use crate::{Db, Result};

/// What a meter measures: the same key for an open meter and its monthly total.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub org_slug: String,
    pub app_name: String,
    /// `machine`, `volume`, `ipv4` or `egress`.
    pub item: String,
    /// A machine's preset (`shared-cpu-1x`), else empty.
    pub size: String,
    pub memory_mb: i64,
    /// A machine's `running` or `suspended`, else empty.
    pub state: String,
}

/// A meter running now: `subject` (a machine id, an address) measured since `since_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenUsage {
    pub subject: String,
    pub key: UsageKey,
    pub since_ms: i64,
}

/// A monthly total.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub month: String,
    pub key: UsageKey,
    pub quantity: f64,
}

fn key_of(r: &Row, at: usize) -> Result<UsageKey> {
    Ok(UsageKey {
        org_slug: r.get(at)?,
        app_name: r.get(at + 1)?,
        item: r.get(at + 2)?,
        size: r.get(at + 3)?,
        memory_mb: r.get(at + 4)?,
        state: r.get(at + 5)?,
    })
}

/// What one write does to the meters, all in one transaction.
#[derive(Debug, Clone, Default)]
pub struct UsageWrite {
    /// Quantities to add to monthly totals.
    pub add: Vec<UsageRecord>,
    /// Meters to start or move on.
    pub open: Vec<OpenUsage>,
    /// Meters that stopped.
    pub close: Vec<String>,
}

impl Db<'_> {
    /// Adds quantities and starts, moves or ends meters, together.
    pub fn write_usage(&mut self, w: &UsageWrite) -> Result<()> {
        let mut tx = self.conn.begin()?;
        for a in &w.add {
            let k = &a.key;
            tx.defer(
                "INSERT INTO usage (month, org_slug, app_name, item, size, memory_mb, state, quantity) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (month, org_slug, app_name, item, size, memory_mb, state) \
                 DO UPDATE SET quantity = usage.quantity + excluded.quantity",
                args![&a.month, &k.org_slug, &k.app_name, &k.item, &k.size, k.memory_mb, &k.state, a.quantity],
            )?;
        }
        for o in &w.open {
            let k = &o.key;
            tx.defer(
                "INSERT INTO usage_open (subject, org_slug, app_name, item, size, memory_mb, state, since_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (subject) DO UPDATE SET org_slug = excluded.org_slug, \
                 app_name = excluded.app_name, item = excluded.item, size = excluded.size, \
                 memory_mb = excluded.memory_mb, state = excluded.state, since_ms = excluded.since_ms",
                args![&o.subject, &k.org_slug, &k.app_name, &k.item, &k.size, k.memory_mb, &k.state, o.since_ms],
            )?;
        }
        for s in &w.close {
            tx.defer("DELETE FROM usage_open WHERE subject = ?1", args![s])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every meter running when the store was last written.
    pub fn open_usage(&mut self) -> Result<Vec<OpenUsage>> {
        self.conn
            .query(
                "SELECT subject, org_slug, app_name, item, size, memory_mb, state, since_ms FROM usage_open",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(OpenUsage {
                    subject: r.get(0)?,
                    key: key_of(r, 1)?,
                    since_ms: r.get(7)?,
                })
            })
            .collect()
    }

    /// The org's totals for `month` (`YYYY-MM`).
    pub fn usage(&mut self, org: &str, month: &str) -> Result<Vec<UsageRecord>> {
        self.conn
            .query(
                "SELECT month, org_slug, app_name, item, size, memory_mb, state, quantity FROM usage \
                 WHERE org_slug = ?1 AND month = ?2 ORDER BY app_name, item, size, memory_mb, state",
                args![org, month],
            )?
            .iter()
            .map(|r| {
                Ok(UsageRecord {
                    month: r.get(0)?,
                    key: key_of(r, 1)?,
                    quantity: r.get(7)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    use super::*;

    fn key(app: &str) -> UsageKey {
        UsageKey {
            org_slug: "personal".into(),
            app_name: app.into(),
            item: "machine".into(),
            size: "shared-cpu-1x".into(),
            memory_mb: 256,
            state: "running".into(),
        }
    }

    #[test]
    fn totals_add_up_and_meters_move_on() {
        for (_dir, store) in crate::test_stores() {
            totals_on(&store);
        }
    }

    fn totals_on(store: &Store) {
        store
            .call_blocking(|db| {
                for q in [1.5, 2.5] {
                    db.write_usage(&UsageWrite {
                        add: vec![UsageRecord {
                            month: "2026-12".into(),
                            key: key("a"),
                            quantity: q,
                        }],
                        open: vec![OpenUsage {
                            subject: "m1".into(),
                            key: key("a"),
                            since_ms: (q * 1000.0) as i64,
                        }],
                        close: Vec::new(),
                    })?;
                }
                let rows = db.usage("personal", "2026-12")?;
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].quantity, 4.0);
                assert!(db.usage("personal", "2026-11")?.is_empty());
                assert_eq!(db.open_usage()?[0].since_ms, 2500);
                db.write_usage(&UsageWrite {
                    close: vec!["m1".into()],
                    ..Default::default()
                })?;
                assert!(db.open_usage()?.is_empty());
                Ok(())
            })
            .expect("store");
    }
}
