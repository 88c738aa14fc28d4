//! The supervisor's state machine over the recording driver: launches, stops, the kill
//! after a stop timeout, restart policies, a failed start, reconciliation after the
//! supervisor died with its machines running, and machines that go on while the control
//! plane is away. No processes, no sockets: the control plane is a store the mirror
//! writes into.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_runtime::fake::{Call, FakeDriver};
use hangar_runtime::Secrets;
use hangar_store::{AppRecord, MachineRecord, OrgRecord, Store};
use hangar_types::EventKind;
use hangar_types::{MachineEvent, MachineState, Signal};

use super::{MachineCmd, Supervisor};
use crate::ledger::Ledger;
use crate::mirror::{ControlPlane, ObserveError};
use crate::{Observer, SecretSource};

/// The control plane's copy of machines, which can be made unreachable.
struct Control {
    store: Store,
    away: AtomicBool,
}

#[async_trait::async_trait]
impl ControlPlane for Control {
    async fn observe(
        &self,
        changes: &[hangar_types::observed::MachineChange],
    ) -> Result<(), ObserveError> {
        if self.away.load(Ordering::Relaxed) {
            return Err(ObserveError::Unavailable("stopped by the test".into()));
        }
        let changes = changes.to_vec();
        self.store
            .call(move |db| db.apply_changes(&changes))
            .await
            .map(|_| ())
            .map_err(|e| ObserveError::Refused(e.to_string()))
    }
}

struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    async fn for_machine(&self, _machine: &MachineRecord) -> Result<Secrets, crate::SecretsError> {
        Ok(Secrets::default())
    }
}

/// Every state the observer was told, in order.
#[derive(Default)]
struct Seen(Mutex<Vec<MachineState>>);

impl Observer for Seen {
    fn machine(&self, machine: &MachineRecord) {
        self.0.lock().unwrap().push(machine.state);
    }
}

struct Host {
    _dir: tempfile::TempDir,
    store: Store,
    control: Arc<Control>,
    ledger: Ledger,
    driver: Arc<FakeDriver>,
    seen: Arc<Seen>,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .call_blocking(|db| {
                db.ensure_org(
                    &OrgRecord {
                        slug: "personal".into(),
                        name: "Personal".into(),
                        numeric_id: 1,
                    },
                    "t",
                )?;
                db.insert_app(&AppRecord {
                    id: "a1".into(),
                    name: "web".into(),
                    org_slug: "personal".into(),
                    network: "default".into(),
                    created_at_ms: 0,
                    machine_count: 0,
                    org_numeric_id: 1,
                })
            })
            .unwrap();
        let (ledger, fresh) = Ledger::open(&dir.path().join("agent.db")).unwrap();
        assert!(fresh);
        Host {
            _dir: dir,
            control: Arc::new(Control {
                store: store.clone(),
                away: AtomicBool::new(false),
            }),
            store,
            ledger,
            driver: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// A supervisor over the host's store, as after a start of the agent.
    fn supervisor(&self) -> Supervisor {
        Supervisor::new(
            self.ledger.clone(),
            self.control.clone(),
            self.driver.clone(),
            "ord".into(),
            Arc::new(NoSecrets),
            self.seen.clone(),
            crate::volumes::Volumes::loopback(
                std::env::temp_dir().join("hangar-no-volumes"),
                &crate::volumes::VolumeSettings {
                    encryption: crate::volumes::fscrypt::Encryption::Never,
                    ..Default::default()
                },
            )
            .expect("volumes kept in a directory"),
        )
    }

    /// Stores a machine with `restart` as its policy and has `sup` launch it.
    async fn launch(&self, sup: &Supervisor, id: &str, restart: serde_json::Value) {
        let m = MachineRecord {
            id: id.into(),
            app_name: "web".into(),
            name: format!("name-{id}"),
            region: "ord".into(),
            state: MachineState::Created,
            instance_id: "v1".into(),
            private_ip: "fdaa::2".into(),
            config: serde_json::from_value(serde_json::json!({
                "image": "img", "init": {"exec": ["/bin/sleep", "inf"]}, "restart": restart
            }))
            .unwrap(),
            cordoned: false,
            created_at: "t".into(),
            updated_at: "t".into(),
            runtime: None,
        };
        let launch = MachineEvent {
            id: crate::ids::ulid(),
            kind: EventKind::Launch,
            status: "created".into(),
            source: "user".into(),
            timestamp: 0,
            request: None,
        };
        let stored = m.clone();
        self.store
            .call(move |db| db.insert_machine(&stored, &launch))
            .await
            .unwrap();
        sup.create(m, false).await.unwrap();
    }

    /// The machine's events in the control plane's copy, oldest first, as `kind/status`.
    async fn events(&self, id: &str) -> Vec<String> {
        let id = id.to_string();
        let mut events = self
            .store
            .call(move |db| db.events(&id, 100))
            .await
            .unwrap();
        events.reverse();
        events
            .into_iter()
            .map(|e| format!("{}/{}", e.kind, e.status))
            .collect()
    }
}

async fn settles(sup: &Supervisor, id: &str, state: MachineState) {
    let mut rx = sup.watch(id).expect("actor");
    let reached = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.state == state))
        .await
        .is_ok();
    assert!(reached, "{id} never reached {state:?}: {:?}", *rx.borrow());
}

async fn stop(sup: &Supervisor, id: &str, timeout: Duration) {
    sup.send(id, |reply| MachineCmd::Stop {
        signal: None,
        timeout: Some(timeout),
        reply,
    })
    .await
    .unwrap();
}

/// A supervisor that has taken charge of the host (and started sending changes).
async fn started(host: &Host) -> Supervisor {
    let sup = host.supervisor();
    sup.take_charge().await.unwrap();
    sup
}

#[tokio::test]
async fn a_launch_and_a_stop_are_written_then_done_in_order() {
    let host = Host::new();
    let sup = started(&host).await;
    host.launch(&sup, "m1", serde_json::json!({"policy": "no"}))
        .await;
    settles(&sup, "m1", MachineState::Started).await;
    assert!(host.driver.is_running("m1"));
    stop(&sup, "m1", Duration::from_secs(5)).await;
    settles(&sup, "m1", MachineState::Stopped).await;
    assert!(!host.driver.is_running("m1"));
    assert_eq!(
        host.driver.calls(),
        vec![
            Call::Start("m1".into()),
            // A stop thaws first: a frozen process cannot take the signal.
            Call::Resume("m1".into()),
            Call::Signal("m1".into(), Signal::SIGINT.number())
        ]
    );
    assert_eq!(
        host.events("m1").await,
        [
            "launch/created",
            "start/starting",
            "start/started",
            "stop/stopping",
            "exit/stopped"
        ]
    );
    let seen = host.seen.0.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&MachineState::Created));
    assert_eq!(seen.last(), Some(&MachineState::Stopped));
}

#[tokio::test]
async fn a_process_deaf_to_the_stop_signal_is_killed_after_the_timeout() {
    let host = Host::new();
    let sup = started(&host).await;
    host.launch(&sup, "m1", serde_json::json!({"policy": "no"}))
        .await;
    settles(&sup, "m1", MachineState::Started).await;
    host.driver.ignore_signals("m1");
    stop(&sup, "m1", Duration::from_millis(200)).await;
    settles(&sup, "m1", MachineState::Stopped).await;
    let calls = host.driver.calls();
    assert!(
        calls.contains(&Call::KillAll("m1".into()))
            || calls.contains(&Call::Signal("m1".into(), 9)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn on_failure_restarts_until_max_retries_then_rests_stopped() {
    let host = Host::new();
    let sup = started(&host).await;
    host.launch(
        &sup,
        "m1",
        serde_json::json!({"policy": "on-failure", "max_retries": 1}),
    )
    .await;
    settles(&sup, "m1", MachineState::Started).await;
    assert!(host.driver.exit("m1", 3));
    tokio::time::timeout(Duration::from_secs(5), async {
        while host.driver.starts_of("m1") < 2 || !host.driver.is_running("m1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("restarted once");
    settles(&sup, "m1", MachineState::Started).await;
    assert!(host.driver.exit("m1", 3));
    settles(&sup, "m1", MachineState::Stopped).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host.driver.starts_of("m1"), 2, "no third start");
    // A clean exit under on-failure is not restarted either.
    let events = host.events("m1").await;
    assert_eq!(events.iter().filter(|e| *e == "exit/stopped").count(), 2);
}

#[tokio::test]
async fn a_start_the_driver_refuses_leaves_the_machine_failed() {
    let host = Host::new();
    let sup = started(&host).await;
    host.driver
        .fail_next_start("m1", "image has no such command");
    host.launch(&sup, "m1", serde_json::json!({"policy": "no"}))
        .await;
    settles(&sup, "m1", MachineState::Failed).await;
    assert_eq!(
        host.events("m1").await.last().map(String::as_str),
        Some("start/failed")
    );
    // A failed machine starts again on request.
    sup.send("m1", |reply| MachineCmd::Start { reply })
        .await
        .unwrap();
    settles(&sup, "m1", MachineState::Started).await;
}

#[tokio::test]
async fn after_a_crash_running_machines_are_adopted_and_exits_meanwhile_recorded() {
    let host = Host::new();
    let first = started(&host).await;
    host.launch(&first, "up", serde_json::json!({"policy": "no"}))
        .await;
    host.launch(&first, "gone", serde_json::json!({"policy": "no"}))
        .await;
    settles(&first, "up", MachineState::Started).await;
    settles(&first, "gone", MachineState::Started).await;
    first.shutdown().await;
    host.driver.forget_waiters();
    assert!(
        host.driver.exit("gone", 7),
        "exits while no supervisor runs"
    );

    let second = host.supervisor();
    second.take_charge().await.unwrap();
    settles(&second, "gone", MachineState::Stopped).await;
    settles(&second, "up", MachineState::Started).await;
    assert_eq!(host.driver.starts_of("up"), 1, "adopted, not started again");
    assert_eq!(host.driver.starts_of("gone"), 1);
    assert_eq!(
        host.events("gone").await.last().map(String::as_str),
        Some("exit/stopped")
    );
    assert_eq!(
        host.events("up").await.last().map(String::as_str),
        Some("start/started"),
        "adopting records nothing"
    );
    // The adopted machine is driven as before.
    stop(&second, "up", Duration::from_secs(5)).await;
    settles(&second, "up", MachineState::Stopped).await;
}

#[tokio::test]
async fn machines_go_on_while_the_control_plane_is_away_and_it_gets_every_change_once() {
    let host = Host::new();
    let sup = started(&host).await;
    host.launch(&sup, "m1", serde_json::json!({"policy": "always"}))
        .await;
    settles(&sup, "m1", MachineState::Started).await;
    host.control.away.store(true, Ordering::Relaxed);

    // The restart policy applies with nobody to tell.
    assert!(host.driver.exit("m1", 1));
    tokio::time::timeout(Duration::from_secs(5), async {
        while host.driver.starts_of("m1") < 2 || !host.driver.is_running("m1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("restarted while the control plane is away");
    settles(&sup, "m1", MachineState::Started).await;
    stop(&sup, "m1", Duration::from_secs(5)).await;
    settles(&sup, "m1", MachineState::Stopped).await;
    assert_eq!(
        host.events("m1").await.last().map(String::as_str),
        Some("start/started"),
        "the copy waits"
    );
    assert!(host.ledger.backlog().await.unwrap() >= 5);

    // An agent restarted meanwhile still sends what waited.
    sup.shutdown().await;
    host.driver.forget_waiters();
    let sup = started(&host).await;
    settles(&sup, "m1", MachineState::Stopped).await;
    host.control.away.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), async {
        while host.ledger.backlog().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the backlog drains once the control plane is back");
    assert_eq!(
        host.events("m1").await,
        [
            "launch/created",
            "start/starting",
            "start/started",
            "exit/stopped",
            "start/starting",
            "start/started",
            "stop/stopping",
            "exit/stopped"
        ]
    );
    let copy = host
        .store
        .call(|db| db.machine_by_id("m1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy.state, MachineState::Stopped);
}
