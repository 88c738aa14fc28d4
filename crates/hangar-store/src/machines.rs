//! Machines, their config versions and their event log.
//!
//! Rows are inserted here at creation; after that they change only as the agent
//! observes ([`Db::apply_changes`], `observed.rs`), a state change and the event that
//! records it in one transaction, so the log and the state never disagree.

use crate::sql::{args, Conn, Row, Value};
use hangar_types::{MachineConfig, MachineEvent, MachineState};

use crate::feed::{self, FeedKind};
use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MachineRecord {
    pub id: String,
    pub app_name: String,
    pub name: String,
    pub region: String,
    pub state: MachineState,
    pub instance_id: String,
    pub private_ip: String,
    pub config: MachineConfig,
    pub cordoned: bool,
    pub created_at: String,
    pub updated_at: String,
    /// What the runtime driver needs to find the machine's process again (opaque JSON).
    pub runtime: Option<String>,
}

/// An event and the machine it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub machine_id: String,
    pub event: MachineEvent,
}

/// A machine as a listing shows it: config and recent events as stored JSON text, so a
/// listing of many machines does not decode and re-encode them.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineListing {
    pub id: String,
    pub name: String,
    pub state: MachineState,
    pub region: String,
    pub instance_id: String,
    pub private_ip: String,
    pub image: String,
    pub cordoned: bool,
    pub created_at: String,
    pub updated_at: String,
    /// `MachineConfig` as JSON.
    pub config_json: String,
    /// The newest events, newest first, as a JSON array.
    pub events_json: String,
}

/// How many events each machine keeps in `recent_events`.
pub const RECENT_EVENTS: usize = 5;
/// How many events a machine keeps in its log; older ones are pruned.
pub const KEPT_EVENTS: i64 = 100;

/// Which machines of an app to list.
#[derive(Debug, Clone, Default)]
pub struct MachineFilter {
    pub include_deleted: bool,
    pub region: Option<String>,
    pub states: Vec<MachineState>,
    /// `metadata.KEY=VALUE` pairs, all of which must match.
    pub metadata: Vec<(String, String)>,
}

const MACHINE_COLUMNS: &str = "id, app_name, name, region, state, instance_id, private_ip, \
    config, cordoned, created_at, updated_at, runtime";

fn machine_from_row(r: &Row) -> Result<MachineRecord> {
    let state: String = r.get(4)?;
    let config: String = r.get(7)?;
    Ok(MachineRecord {
        id: r.get(0)?,
        app_name: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        state: state.parse().unwrap_or(MachineState::Failed),
        instance_id: r.get(5)?,
        private_ip: r.get(6)?,
        config: serde_json::from_str(&config)?,
        cordoned: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        runtime: r.get(11)?,
    })
}

fn event_from_row(r: &Row) -> Result<EventRecord> {
    let request: Option<String> = r.get(6)?;
    let kind: String = r.get(2)?;
    Ok(EventRecord {
        machine_id: r.get(0)?,
        event: MachineEvent {
            id: r.get(1)?,
            kind: kind.parse().map_err(|_| crate::StoreError::Column {
                index: 2,
                expected: "a machine event type",
            })?,
            status: r.get(3)?,
            source: r.get(4)?,
            timestamp: r.get(5)?,
            request: request.and_then(|s| serde_json::from_str(&s).ok()),
        },
    })
}

impl Db<'_> {
    /// Inserts a new machine with its first version and its `launch` event.
    pub fn insert_machine(&mut self, m: &MachineRecord, launch: &MachineEvent) -> Result<()> {
        let config = serde_json::to_string(&m.config)?;
        let mut tx = self.conn.begin()?;
        tx.defer(
            &format!("INSERT INTO machines ({MACHINE_COLUMNS}, memory_mb) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            args![
                &m.id, &m.app_name, &m.name, &m.region, m.state.as_str(), &m.instance_id,
                &m.private_ip, &config, m.cordoned, &m.created_at, &m.updated_at, &m.runtime,
                i64::from(m.config.memory_mb())
            ],
        )?;
        tx.defer(
            "INSERT INTO machine_versions (machine_id, version, config, created_at) VALUES (?1, ?2, ?3, ?4)",
            args![&m.id, &m.instance_id, &config, &m.created_at],
        )?;
        insert_event(&mut tx, &m.id, "[]", launch)?;
        crate::volumes::attach_mounts(&mut tx, m)?;
        feed::record(&mut tx, FeedKind::Machine, &m.app_name, &m.id)?;
        tx.commit()?;
        self.fed = true;
        Ok(())
    }

    pub fn machine(&mut self, app_name: &str, id: &str) -> Result<Option<MachineRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE app_name = ?1 AND id = ?2"),
                args![app_name, id],
            )?
            .map(|r| machine_from_row(&r))
            .transpose()
    }

    pub fn machine_by_id(&mut self, id: &str) -> Result<Option<MachineRecord>> {
        self.conn
            .query_opt(
                &format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?1"),
                args![id],
            )?
            .map(|r| machine_from_row(&r))
            .transpose()
    }

    /// An app's machines for a listing, filtered in SQL.
    pub fn machine_listings(
        &mut self,
        app_name: &str,
        filter: &MachineFilter,
    ) -> Result<Vec<MachineListing>> {
        let dialect = self.dialect();
        // The image is read from the config here rather than by the database: a JSON
        // operator per row costs PostgreSQL more than it costs SQLite.
        let mut sql = String::from(
            "SELECT id, name, state, region, instance_id, private_ip,
                    cordoned, created_at, updated_at, config, recent_events
             FROM machines WHERE app_name = ?",
        );
        let mut args: Vec<Value> = vec![app_name.into()];
        if !filter.include_deleted {
            sql.push_str(" AND state <> 'destroyed'");
        }
        if let Some(region) = &filter.region {
            sql.push_str(" AND region = ?");
            args.push(region.into());
        }
        if !filter.states.is_empty() {
            let marks = vec!["?"; filter.states.len()].join(", ");
            sql.push_str(&format!(" AND state IN ({marks})"));
            args.extend(filter.states.iter().map(|s| s.as_str().into()));
        }
        for (k, v) in &filter.metadata {
            sql.push_str(&format!(
                " AND {} = ?",
                dialect.json_text_at_param("config", "metadata")
            ));
            args.push(k.into());
            args.push(v.into());
        }
        // Ordered here, not by the database: PostgreSQL would sort the rows (SQLite
        // walks the index), and byte order of these columns is their meaning.
        let rows = self.conn.query(&sql, &args)?;
        let mut listings = rows
            .iter()
            .map(|r| {
                let state: String = r.get(2)?;
                let config_json: String = r.get(9)?;
                Ok(MachineListing {
                    image: image_of(&config_json),
                    id: r.get(0)?,
                    name: r.get(1)?,
                    state: state.parse().unwrap_or(MachineState::Failed),
                    region: r.get(3)?,
                    instance_id: r.get(4)?,
                    private_ip: r.get(5)?,
                    cordoned: r.get(6)?,
                    created_at: r.get(7)?,
                    updated_at: r.get(8)?,
                    config_json,
                    events_json: r.get(10)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        listings.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(listings)
    }

    /// Every machine that is not destroyed, for the supervisor to take charge of at boot.
    pub fn live_machines(&mut self) -> Result<Vec<MachineRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {MACHINE_COLUMNS} FROM machines WHERE state <> 'destroyed' ORDER BY created_at, id"
                ),
                &[],
            )?
            .iter()
            .map(machine_from_row)
            .collect()
    }

    /// The memory, in MB, that machines hold or are about to hold: every machine that is
    /// not stopped, suspended, failed or gone. Placement counts it against a host.
    pub fn reserved_memory_mb(&mut self) -> Result<u64> {
        let row = self.conn.query_one(
            "SELECT CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) FROM machines
             WHERE state NOT IN ('stopped', 'suspended', 'failed', 'replaced', 'destroying', 'destroyed')",
            &[],
        )?;
        let mb: i64 = row.get(0)?;
        Ok(mb.max(0) as u64)
    }

    /// One app's machines that are not destroyed, oldest first.
    pub fn live_machines_of_app(&mut self, app: &str) -> Result<Vec<MachineRecord>> {
        self.conn
            .query(
                &format!(
                    "SELECT {MACHINE_COLUMNS} FROM machines WHERE app_name = ?1 AND state <> 'destroyed' ORDER BY id"
                ),
                args![app],
            )?
            .iter()
            .map(machine_from_row)
            .collect()
    }

    /// Records an event the control plane itself saw on a machine (a volume it grew),
    /// as the machine's own events are kept; false when the machine is gone.
    pub fn record_event(&mut self, machine_id: &str, e: &MachineEvent) -> Result<bool> {
        let mut tx = self.conn.begin()?;
        let row = tx.query_one(
            "SELECT (SELECT app_name FROM machines WHERE id = ?1),
                    (SELECT recent_events FROM machines WHERE id = ?1)",
            args![machine_id],
        )?;
        let (app, recent): (Option<String>, Option<String>) = (row.get(0)?, row.get(1)?);
        let Some(app) = app else {
            return Ok(false);
        };
        insert_event(&mut tx, machine_id, recent.as_deref().unwrap_or("[]"), e)?;
        feed::record(&mut tx, FeedKind::Machine, &app, machine_id)?;
        tx.commit()?;
        self.fed = true;
        Ok(true)
    }

    /// The machine's events, newest first.
    pub fn events(&mut self, machine_id: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        self.conn
            .query(
                "SELECT machine_id, id, type, status, source, timestamp, request FROM machine_events
                 WHERE machine_id = ?1 ORDER BY id DESC LIMIT ?2",
                args![machine_id, limit as i64],
            )?
            .iter()
            .map(|r| Ok(event_from_row(r)?.event))
            .collect()
    }

    /// Every config version of a machine, newest first.
    pub fn versions(&mut self, machine_id: &str) -> Result<Vec<(String, MachineConfig)>> {
        self.conn
            .query(
                "SELECT version, config FROM machine_versions WHERE machine_id = ?1 ORDER BY version DESC",
                args![machine_id],
            )?
            .iter()
            .map(|r| {
                let config: String = r.get(1)?;
                Ok((r.get(0)?, serde_json::from_str(&config)?))
            })
            .collect()
    }
}

pub(crate) fn set_state(
    tx: &mut Conn,
    id: &str,
    state: MachineState,
    runtime: Option<Option<&str>>,
    updated_at: &str,
) -> Result<()> {
    match runtime {
        Some(rt) => tx.defer(
            "UPDATE machines SET state = ?2, runtime = ?3, updated_at = ?4 WHERE id = ?1",
            args![id, state.as_str(), rt, updated_at],
        ),
        None => tx.defer(
            "UPDATE machines SET state = ?2, updated_at = ?3 WHERE id = ?1",
            args![id, state.as_str(), updated_at],
        ),
    }
}

/// Makes `version` the machine's current config; a version already stored stays as it
/// is.
pub(crate) fn set_version(
    tx: &mut Conn,
    id: &str,
    version: &str,
    config: &MachineConfig,
    state: MachineState,
    updated_at: &str,
) -> Result<()> {
    let memory_mb = i64::from(config.memory_mb());
    let config = serde_json::to_string(config)?;
    tx.defer(
        "UPDATE machines SET instance_id = ?2, config = ?3, state = ?4, updated_at = ?5, memory_mb = ?6 WHERE id = ?1",
        args![id, version, &config, state.as_str(), updated_at, memory_mb],
    )?;
    tx.defer(
        "INSERT INTO machine_versions (machine_id, version, config, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (machine_id, version) DO NOTHING",
        args![id, version, &config, updated_at],
    )
}

pub(crate) fn set_config_in_place(
    tx: &mut Conn,
    id: &str,
    config: &MachineConfig,
    updated_at: &str,
) -> Result<()> {
    let memory_mb = i64::from(config.memory_mb());
    let config = serde_json::to_string(config)?;
    tx.defer(
        "UPDATE machines SET config = ?2, updated_at = ?3, memory_mb = ?4 WHERE id = ?1",
        args![id, &config, updated_at, memory_mb],
    )?;
    tx.defer(
        "UPDATE machine_versions SET config = ?2
         WHERE machine_id = ?1 AND version = (SELECT instance_id FROM machines WHERE id = ?1)",
        args![id, &config],
    )
}

pub(crate) fn set_cordoned(
    tx: &mut Conn,
    id: &str,
    cordoned: bool,
    updated_at: &str,
) -> Result<()> {
    tx.defer(
        "UPDATE machines SET cordoned = ?2, updated_at = ?3 WHERE id = ?1",
        args![id, cordoned, updated_at],
    )
}

/// The `image` of a stored config, without decoding the rest of it.
fn image_of(config_json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Image {
        #[serde(default)]
        image: String,
    }
    serde_json::from_str::<Image>(config_json)
        .map(|i| i.image)
        .unwrap_or_default()
}

/// Appends an event to the log, keeps `recent_events` current (from `recent`, the
/// machine's list as the caller read it in this transaction, so no read of its own is
/// needed), and prunes the log to the newest [`KEPT_EVENTS`]. Every statement waits to
/// go with the caller's next read or the commit.
pub(crate) fn insert_event(
    tx: &mut Conn,
    machine_id: &str,
    recent: &str,
    e: &MachineEvent,
) -> Result<()> {
    let request = e.request.as_ref().map(serde_json::to_string).transpose()?;
    tx.defer(
        "INSERT INTO machine_events (id, machine_id, type, status, source, timestamp, request)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            &e.id,
            machine_id,
            e.kind.as_str(),
            &e.status,
            &e.source,
            e.timestamp,
            request
        ],
    )?;
    tx.defer(
        "DELETE FROM machine_events WHERE machine_id = ?1 AND id < (
             SELECT id FROM machine_events WHERE machine_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        args![machine_id, KEPT_EVENTS - 1],
    )?;
    let mut list: Vec<serde_json::Value> = serde_json::from_str(recent).unwrap_or_default();
    list.insert(0, serde_json::to_value(e)?);
    list.truncate(RECENT_EVENTS);
    tx.defer(
        "UPDATE machines SET recent_events = ?2 WHERE id = ?1",
        args![machine_id, serde_json::to_string(&list)?],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppRecord, OrgRecord, Store};

    fn event(id: &str, kind: &str) -> MachineEvent {
        MachineEvent {
            id: id.into(),
            kind: kind.parse().expect("event kind"),
            status: "started".into(),
            source: "flyd".into(),
            timestamp: 1,
            request: None,
        }
    }

    /// Each test store with an org and an app in it.
    fn setups() -> Vec<(Option<tempfile::TempDir>, Store)> {
        let stores = crate::test_stores();
        for (_, store) in &stores {
            seed(store);
        }
        stores
    }

    fn seed(store: &Store) {
        store
            .call_blocking(|db| {
                db.ensure_org(
                    &OrgRecord {
                        slug: "o".into(),
                        name: "O".into(),
                        numeric_id: 1,
                    },
                    "t",
                )?;
                db.insert_app(&AppRecord {
                    id: "a".into(),
                    name: "app".into(),
                    org_slug: "o".into(),
                    network: "default".into(),
                    created_at_ms: 0,
                    machine_count: 0,
                    org_numeric_id: 1,
                })
            })
            .unwrap();
    }

    fn machine(id: &str, meta: &str) -> MachineRecord {
        let config =
            serde_json::from_value(serde_json::json!({"image": "img", "metadata": {"role": meta}}))
                .unwrap();
        MachineRecord {
            id: id.into(),
            app_name: "app".into(),
            name: format!("name-{id}"),
            region: "ord".into(),
            state: MachineState::Created,
            instance_id: "v1".into(),
            private_ip: "fdaa::1".into(),
            config,
            cordoned: false,
            created_at: "t".into(),
            updated_at: "t".into(),
            runtime: None,
        }
    }

    fn transition(
        db: &mut Db<'_>,
        id: &str,
        state: MachineState,
        event: MachineEvent,
    ) -> Result<()> {
        let change = hangar_types::observed::MachineChange::Transition {
            machine_id: id.into(),
            state,
            runtime: Some(Some("h".into())),
            event,
            at: "t2".into(),
        };
        assert_eq!(db.apply_changes(&[change])?, 1);
        Ok(())
    }

    #[test]
    fn transitions_keep_recent_events_and_prune_the_log() {
        for (_dir, store) in setups() {
            transitions_on(&store);
        }
    }

    fn transitions_on(store: &Store) {
        store
            .call_blocking(|db| {
                db.insert_machine(&machine("m1", "web"), &event("00000", "launch"))?;
                for i in 1..=(KEPT_EVENTS + 20) {
                    transition(
                        db,
                        "m1",
                        MachineState::Started,
                        event(&format!("{i:05}"), "start"),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let (events, listing) = store
            .call_blocking(|db| {
                Ok((
                    db.events("m1", 1000)?,
                    db.machine_listings("app", &MachineFilter::default())?,
                ))
            })
            .unwrap();
        assert_eq!(events.len() as i64, KEPT_EVENTS);
        assert_eq!(
            events[0].id,
            format!("{:05}", KEPT_EVENTS + 20),
            "newest first"
        );
        let recent: Vec<serde_json::Value> = serde_json::from_str(&listing[0].events_json).unwrap();
        assert_eq!(recent.len(), RECENT_EVENTS);
        assert_eq!(recent[0]["id"], events[0].id.as_str());
        assert_eq!(listing[0].state, MachineState::Started);
        assert_eq!(listing[0].image, "img");
    }

    #[test]
    fn listings_filter_in_sql() {
        for (_dir, store) in setups() {
            listings_on(&store);
        }
    }

    fn listings_on(store: &Store) {
        store
            .call_blocking(|db| {
                db.insert_machine(&machine("m1", "web"), &event("1", "launch"))?;
                db.insert_machine(&machine("m2", "db"), &event("2", "launch"))?;
                transition(db, "m2", MachineState::Destroyed, event("3", "destroy"))
            })
            .unwrap();
        let count = |f: MachineFilter| {
            store
                .call_blocking(move |db| db.machine_listings("app", &f))
                .unwrap()
                .len()
        };
        assert_eq!(count(MachineFilter::default()), 1);
        assert_eq!(
            count(MachineFilter {
                include_deleted: true,
                ..Default::default()
            }),
            2
        );
        let meta = |k: &str, v: &str| MachineFilter {
            include_deleted: true,
            metadata: vec![(k.into(), v.into())],
            ..Default::default()
        };
        assert_eq!(count(meta("role", "db")), 1);
        assert_eq!(count(meta("role", "cache")), 0);
        assert_eq!(
            count(MachineFilter {
                states: vec![MachineState::Created],
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(MachineFilter {
                region: Some("ams".into()),
                ..Default::default()
            }),
            0
        );
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        seed(&store);
        drop(store);
        let again = Store::open(&dir.path().join("db")).unwrap();
        assert!(again.call_blocking(|db| db.app("app")).unwrap().is_some());
    }
}
