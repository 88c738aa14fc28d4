//! A recording driver for tests of what drives machines — the supervisor's state
//! machine, reconciliation after a crash, the deployer's strategies — without processes:
//! it runs nothing, records every call, and lets a test end a machine's process with any
//! exit status, make it ignore stop signals, or fail its next start. Behind the `fake`
//! feature; never in a release binary.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hangar_types::{MachineConfig, ProcessStat, Signal};
use tokio::sync::oneshot;

use crate::{Adopted, Driver, DriverError, ExecOutput, ExitStatus, LaunchSpec, Running};

/// One call the driver was given, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(String),
    Adopt(String),
    Signal(String, i32),
    KillAll(String),
    Suspend(String),
    Resume(String),
    Exec(String, Vec<String>),
    Destroy(String),
}

#[derive(Default)]
struct Run {
    machine_id: String,
    exit: Option<oneshot::Sender<ExitStatus>>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Runs alive, by handle.
    running: HashMap<String, Run>,
    /// How runs that ended ended, by handle (what `adopt` reports).
    ended: HashMap<String, ExitStatus>,
    fail_next_start: HashMap<String, String>,
    deaf: std::collections::HashSet<String>,
    starts: u64,
}

/// The recording driver. Machines are named by id in every test-facing method.
#[derive(Default)]
pub struct FakeDriver {
    state: Mutex<State>,
}

impl FakeDriver {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many times `machine_id` was started.
    pub fn starts_of(&self, machine_id: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Start(m) if m == machine_id))
            .count()
    }

    /// Whether the machine has a run alive.
    pub fn is_running(&self, machine_id: &str) -> bool {
        self.lock()
            .running
            .values()
            .any(|r| r.machine_id == machine_id)
    }

    /// Ends the machine's run as a process would end; false when none is alive.
    pub fn exit(&self, machine_id: &str, exit_code: i32) -> bool {
        let mut s = self.lock();
        let Some(handle) = s
            .running
            .iter()
            .find(|(_, r)| r.machine_id == machine_id)
            .map(|(h, _)| h.clone())
        else {
            return false;
        };
        end(&mut s, &handle, exit_code, None);
        true
    }

    /// The machine's next start fails with `message`.
    pub fn fail_next_start(&self, machine_id: &str, message: &str) {
        self.lock()
            .fail_next_start
            .insert(machine_id.to_string(), message.to_string());
    }

    /// The machine's process ignores every signal but SIGKILL from now on.
    pub fn ignore_signals(&self, machine_id: &str) {
        self.lock().deaf.insert(machine_id.to_string());
    }

    /// Forgets who waits on each run, as when the server dies with its machines still
    /// running: the next supervisor must adopt them.
    pub fn forget_waiters(&self) {
        for run in self.lock().running.values_mut() {
            run.exit = None;
        }
    }
}

/// Ends a run: its waiter hears the status, and `adopt` reports it from now on.
fn end(s: &mut State, handle: &str, exit_code: i32, signal: Option<i32>) {
    if let Some(mut run) = s.running.remove(handle) {
        let status = ExitStatus {
            exit_code,
            signal,
            exited_at: 0,
            ..Default::default()
        };
        if let Some(tx) = run.exit.take() {
            let _ = tx.send(status.clone());
        }
        s.ended.insert(handle.to_string(), status);
    }
}

fn machine_of(s: &State, handle: &str) -> Result<String, DriverError> {
    s.running
        .get(handle)
        .map(|r| r.machine_id.clone())
        .ok_or(DriverError::NotRunning)
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn log_file(&self, _machine_id: &str) -> std::path::PathBuf {
        std::path::PathBuf::from("/dev/null")
    }

    fn check_config(&self, _config: &MachineConfig) -> Result<(), String> {
        Ok(())
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let mut s = self.lock();
        s.calls.push(Call::Start(spec.machine_id.clone()));
        if let Some(message) = s.fail_next_start.remove(&spec.machine_id) {
            return Err(DriverError::InvalidConfig(message));
        }
        s.starts += 1;
        let handle = format!("fake-{}-{}", spec.machine_id, s.starts);
        let (tx, rx) = oneshot::channel();
        s.running.insert(
            handle.clone(),
            Run {
                machine_id: spec.machine_id.clone(),
                exit: Some(tx),
            },
        );
        Ok(Running { handle, exited: rx })
    }

    async fn adopt(&self, handle: &str) -> Result<Adopted, DriverError> {
        let mut s = self.lock();
        s.calls.push(Call::Adopt(handle.to_string()));
        if let Some(run) = s.running.get_mut(handle) {
            let (tx, rx) = oneshot::channel();
            run.exit = Some(tx);
            return Ok(Adopted::Running(rx));
        }
        match s.ended.get(handle) {
            Some(status) => Ok(Adopted::Exited(status.clone())),
            None => Err(DriverError::BadHandle(format!("no run {handle}"))),
        }
    }

    async fn signal(&self, handle: &str, signal: Signal) -> Result<(), DriverError> {
        let mut s = self.lock();
        let machine = machine_of(&s, handle)?;
        s.calls.push(Call::Signal(machine.clone(), signal.number()));
        if signal == Signal::SIGKILL || !s.deaf.contains(&machine) {
            end(&mut s, handle, 0, Some(signal.number()));
        }
        Ok(())
    }

    async fn kill_all(&self, handle: &str) -> Result<(), DriverError> {
        let mut s = self.lock();
        if let Ok(machine) = machine_of(&s, handle) {
            s.calls.push(Call::KillAll(machine));
            end(&mut s, handle, 0, Some(Signal::SIGKILL.number()));
        }
        Ok(())
    }

    async fn suspend(&self, handle: &str) -> Result<(), DriverError> {
        let mut s = self.lock();
        let machine = machine_of(&s, handle)?;
        s.calls.push(Call::Suspend(machine));
        Ok(())
    }

    async fn resume(&self, handle: &str) -> Result<(), DriverError> {
        let mut s = self.lock();
        let machine = machine_of(&s, handle)?;
        s.calls.push(Call::Resume(machine));
        Ok(())
    }

    async fn exec(
        &self,
        handle: &str,
        _spec: &LaunchSpec,
        argv: &[String],
        _stdin: Option<&str>,
        _timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        let mut s = self.lock();
        let machine = machine_of(&s, handle)?;
        s.calls.push(Call::Exec(machine, argv.to_vec()));
        Ok(ExecOutput {
            exit_code: 0,
            stdout: argv.join(" "),
            stderr: String::new(),
        })
    }

    async fn ps(&self, _handle: &str) -> Result<Vec<ProcessStat>, DriverError> {
        Ok(Vec::new())
    }

    async fn destroy(&self, machine_id: &str) -> Result<(), DriverError> {
        self.lock()
            .calls
            .push(Call::Destroy(machine_id.to_string()));
        Ok(())
    }
}
