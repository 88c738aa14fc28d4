//! Machines, their config versions and their event log.
//!
//! A state change and the event that records it are written in one transaction
//! ([`Db::record_transition`]), so the log and the state never disagree.

use std::collections::HashMap;

use hangar_types::{MachineConfig, MachineEvent, MachineState};
use rusqlite::{params, OptionalExtension, Row};

use crate::{Db, Result};

#[derive(Debug, Clone, PartialEq)]
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

fn machine_from_row(r: &Row<'_>) -> rusqlite::Result<MachineRecord> {
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
        config: serde_json::from_str(&config).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
        })?,
        cordoned: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        runtime: r.get(11)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let request: Option<String> = r.get(6)?;
    Ok(EventRecord {
        machine_id: r.get(0)?,
        event: MachineEvent {
            id: r.get(1)?,
            kind: r.get(2)?,
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
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO machines ({MACHINE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
            params![
                m.id, m.app_name, m.name, m.region, m.state.as_str(), m.instance_id,
                m.private_ip, config, m.cordoned, m.created_at, m.updated_at, m.runtime
            ],
        )?;
        tx.execute(
            "INSERT INTO machine_versions (machine_id, version, config, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![m.id, m.instance_id, config, m.created_at],
        )?;
        insert_event(&tx, &m.id, launch)?;
        tx.commit()?;
        Ok(())
    }

    pub fn machine(&mut self, app_name: &str, id: &str) -> Result<Option<MachineRecord>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {MACHINE_COLUMNS} FROM machines WHERE app_name = ?1 AND id = ?2"
            ))?
            .query_row([app_name, id], machine_from_row)
            .optional()?)
    }

    pub fn machine_by_id(&mut self, id: &str) -> Result<Option<MachineRecord>> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?1"
            ))?
            .query_row([id], machine_from_row)
            .optional()?)
    }

    pub fn machines(
        &mut self,
        app_name: &str,
        filter: &MachineFilter,
    ) -> Result<Vec<MachineRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE app_name = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([app_name], machine_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let m = row?;
            if !filter.include_deleted && m.state == MachineState::Destroyed {
                continue;
            }
            if filter.region.as_deref().is_some_and(|r| r != m.region) {
                continue;
            }
            if !filter.states.is_empty() && !filter.states.contains(&m.state) {
                continue;
            }
            let meta = m.config.metadata.as_ref();
            if !filter
                .metadata
                .iter()
                .all(|(k, v)| meta.and_then(|md| md.get(k)) == Some(v))
            {
                continue;
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Every machine that is not destroyed, for the supervisor to take charge of at boot.
    pub fn live_machines(&mut self) -> Result<Vec<MachineRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE state <> 'destroyed' ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([], machine_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets the machine's state, and its runtime handle when `runtime` is `Some`, and
    /// appends the event recording the change, atomically.
    pub fn record_transition(
        &mut self,
        id: &str,
        state: MachineState,
        runtime: Option<Option<&str>>,
        event: &MachineEvent,
        updated_at: &str,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        match runtime {
            Some(rt) => tx.execute(
                "UPDATE machines SET state = ?2, runtime = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), rt, updated_at],
            )?,
            None => tx.execute(
                "UPDATE machines SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), updated_at],
            )?,
        };
        insert_event(&tx, id, event)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the machine's config with a new version and records the `update` event.
    pub fn record_new_version(
        &mut self,
        id: &str,
        version: &str,
        config: &MachineConfig,
        state: MachineState,
        event: &MachineEvent,
        updated_at: &str,
    ) -> Result<()> {
        let config = serde_json::to_string(config)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE machines SET instance_id = ?2, config = ?3, state = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, version, config, state.as_str(), updated_at],
        )?;
        tx.execute(
            "INSERT INTO machine_versions (machine_id, version, config, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, version, config, updated_at],
        )?;
        insert_event(&tx, id, event)?;
        tx.commit()?;
        Ok(())
    }

    /// Rewrites the current config in place without a new version (metadata edits).
    pub fn replace_config_in_place(
        &mut self,
        id: &str,
        config: &MachineConfig,
        updated_at: &str,
    ) -> Result<()> {
        let config = serde_json::to_string(config)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE machines SET config = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, config, updated_at],
        )?;
        tx.execute(
            "UPDATE machine_versions SET config = ?2
             WHERE machine_id = ?1 AND version = (SELECT instance_id FROM machines WHERE id = ?1)",
            params![id, config],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_cordoned(&mut self, id: &str, cordoned: bool, updated_at: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE machines SET cordoned = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, cordoned, updated_at],
        )?;
        Ok(())
    }

    /// The machine's events, newest first.
    pub fn events(&mut self, machine_id: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT machine_id, id, type, status, source, timestamp, request FROM machine_events
             WHERE machine_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![machine_id, limit as i64], event_from_row)?;
        rows.map(|r| Ok(r?.event)).collect()
    }

    /// The newest `per_machine` events of every machine of an app, newest first.
    pub fn recent_events_of_app(
        &mut self,
        app_name: &str,
        per_machine: usize,
    ) -> Result<HashMap<String, Vec<MachineEvent>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT machine_id, id, type, status, source, timestamp, request FROM (
                 SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.machine_id ORDER BY e.id DESC) AS rn
                 FROM machine_events e JOIN machines m ON m.id = e.machine_id
                 WHERE m.app_name = ?1)
             WHERE rn <= ?2 ORDER BY machine_id, id DESC",
        )?;
        let rows = stmt.query_map(params![app_name, per_machine as i64], event_from_row)?;
        let mut out: HashMap<String, Vec<MachineEvent>> = HashMap::new();
        for row in rows {
            let r = row?;
            out.entry(r.machine_id).or_default().push(r.event);
        }
        Ok(out)
    }

    /// Every config version of a machine, newest first.
    pub fn versions(&mut self, machine_id: &str) -> Result<Vec<(String, MachineConfig)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, config FROM machine_versions WHERE machine_id = ?1 ORDER BY version DESC",
        )?;
        let rows = stmt.query_map([machine_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (v, c) = row?;
            out.push((v, serde_json::from_str(&c)?));
        }
        Ok(out)
    }
}

fn insert_event(tx: &rusqlite::Transaction<'_>, machine_id: &str, e: &MachineEvent) -> Result<()> {
    let request = e.request.as_ref().map(serde_json::to_string).transpose()?;
    tx.prepare_cached(
        "INSERT INTO machine_events (id, machine_id, type, status, source, timestamp, request)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.id,
        machine_id,
        e.kind,
        e.status,
        e.source,
        e.timestamp,
        request
    ])?;
    Ok(())
}
