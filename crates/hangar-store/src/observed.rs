//! The control plane's copy of machines, kept from what agents observe
//! ([`MachineChange`]): applied in the order an agent recorded them, each change that
//! carries an event at most once, so an agent may send again what it is not sure
//! arrived. Changes to machines this store does not know (their app was deleted) are
//! dropped.

use hangar_types::observed::MachineChange;
use hangar_types::MachineState;

use crate::feed::{self, FeedKind};
use crate::machines::{insert_event, set_config_in_place, set_cordoned, set_state, set_version};
use crate::sql::{args, Conn};
use crate::{Db, Result};

impl Db<'_> {
    /// Applies an agent's changes in one transaction; returns how many were new.
    pub fn apply_changes(&mut self, changes: &[MachineChange]) -> Result<usize> {
        let mut tx = self.conn.begin()?;
        let mut applied = 0;
        for change in changes {
            if let Some(app) = apply(&mut tx, change)? {
                feed::record(&mut tx, FeedKind::Machine, &app, change.machine_id())?;
                applied += 1;
            }
        }
        tx.commit()?;
        self.fed |= applied > 0;
        Ok(applied)
    }
}

/// Applies one change unless its machine is unknown or its event is already stored;
/// the machine's app when it was applied.
fn apply(tx: &mut Conn, change: &MachineChange) -> Result<Option<String>> {
    let id = change.machine_id();
    let event_id = change.event().map(|e| e.id.as_str()).unwrap_or("");
    let row = tx.query_one(
        "SELECT (SELECT app_name FROM machines WHERE id = ?1),
                (SELECT COUNT(*) FROM machine_events WHERE id = ?2),
                (SELECT recent_events FROM machines WHERE id = ?1)",
        args![id, event_id],
    )?;
    let (app, seen): (Option<String>, i64) = (row.get(0)?, row.get(1)?);
    let recent: Option<String> = row.get(2)?;
    let recent = recent.as_deref().unwrap_or("[]");
    let Some(app) = app.filter(|_| seen == 0) else {
        return Ok(None);
    };
    match change {
        MachineChange::Transition {
            state,
            runtime,
            event,
            at,
            ..
        } => {
            let runtime = runtime.as_ref().map(|r| r.as_deref());
            set_state(tx, id, *state, runtime, at)?;
            insert_event(tx, id, recent, event)?;
            if *state == MachineState::Destroyed {
                // A destroyed machine's lease goes with it, and its volume is free.
                tx.defer("DELETE FROM leases WHERE machine_id = ?1", args![id])?;
                crate::volumes::detach(tx, id)?;
            }
        }
        MachineChange::NewVersion {
            version,
            config,
            state,
            event,
            at,
            ..
        } => {
            set_version(tx, id, version, config, *state, at)?;
            insert_event(tx, id, recent, event)?;
        }
        MachineChange::ConfigInPlace { config, at, .. } => {
            set_config_in_place(tx, id, config, at)?;
        }
        MachineChange::Cordoned { cordoned, at, .. } => {
            set_cordoned(tx, id, *cordoned, at)?;
        }
    }
    Ok(Some(app))
}
