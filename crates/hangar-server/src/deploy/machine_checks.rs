//! Machine checks (`[[machine_checks]]`, `[[services.machine_checks]]`,
//! `[[http_service.machine_checks]]`; flytoml-and-deploys.md §3.8, §7.5): after a
//! rolling or canary deploy starts a machine on the new release, a throwaway test
//! machine runs each applicable check's command with `FLY_TEST_MACHINE_IP` naming the
//! machine under test; a non-zero exit fails the deploy (and so rolls it back) with the
//! test's output.

use std::collections::BTreeMap;

use hangar_appconfig::MachineCheck as CheckDef;
use hangar_types::machine_config::{MachineRestart, StopConfig};
use hangar_types::{MachineConfig, MachineState};

use super::run::{destroy, Ctx, Failure};
use crate::fleet::{self, NewMachine};

/// The group test machines run in.
const TEST_GROUP: &str = "fly_app_test_machine_command";

/// The checks that apply to `group`: every top-level one, and those of services whose
/// `processes` name the group or are empty.
fn applicable<'a>(ctx: &'a Ctx<'_>, group: &str) -> Vec<&'a CheckDef> {
    let c = &ctx.plan.config;
    let serves = |p: &[String]| p.is_empty() || p.iter().any(|g| g == group);
    let mut out: Vec<&CheckDef> = c.machine_checks.iter().collect();
    if let Some(h) = c.http_service.as_ref().filter(|h| serves(&h.processes)) {
        out.extend(&h.machine_checks);
    }
    for s in c.services.iter().filter(|s| serves(&s.processes)) {
        out.extend(&s.machine_checks);
    }
    out
}

/// The test machine's config (§6.5): the check's command on its image (or the tested
/// machine's), the app's env and the tested machine's, the test variables; no
/// services, no restarts.
fn test_config(
    ctx: &Ctx<'_>,
    check: &CheckDef,
    tested: &MachineConfig,
    tested_ip: &str,
) -> MachineConfig {
    let mut env: BTreeMap<String, String> = ctx.plan.config.env.clone();
    env.extend(tested.env.clone().unwrap_or_default());
    env.insert("FLY_TEST_COMMAND".into(), "1".into());
    env.insert("FLY_TEST_MACHINE_IP".into(), tested_ip.into());
    env.insert("FLY_PROCESS_GROUP".into(), TEST_GROUP.into());
    let mut mc = MachineConfig {
        image: check.image.clone().unwrap_or_else(|| tested.image.clone()),
        env: Some(env),
        ..Default::default()
    };
    mc.init.cmd = Some(check.command.clone());
    mc.init.entrypoint = ctx
        .plan
        .config
        .experimental
        .as_ref()
        .and_then(|e| e.entrypoint.clone())
        .or_else(|| check.entrypoint.clone())
        .or_else(|| {
            // Without an image of its own the test runs in the tested machine's image,
            // through its entrypoint.
            check
                .image
                .is_none()
                .then(|| tested.init.entrypoint.clone())
                .flatten()
        });
    mc.metadata = Some(BTreeMap::from([(
        "fly_process_group".to_string(),
        TEST_GROUP.to_string(),
    )]));
    mc.restart = Some(MachineRestart {
        policy: Some("no".into()),
        max_retries: None,
    });
    let signal = check.kill_signal.as_deref().and_then(|s| s.parse().ok());
    if signal.is_some() || check.kill_timeout.is_some() {
        mc.stop_config = Some(StopConfig {
            signal,
            timeout: check.kill_timeout,
        });
    }
    mc
}

/// Runs every check that applies to `group` against the machine `id`.
pub(super) async fn run(
    ctx: &Ctx<'_>,
    id: &str,
    group: &str,
    tested: &MachineConfig,
    tested_ip: &str,
    region: &str,
) -> Result<(), Failure> {
    for check in applicable(ctx, group) {
        if check.command.is_empty() {
            return Err(Failure::new(
                "missing command for test machine: give [[machine_checks]] a command",
            ));
        }
        let config = test_config(ctx, check, tested, tested_ip);
        let (record, _, _) = fleet::create(
            ctx.state,
            &ctx.plan.app,
            NewMachine {
                config,
                region: region.to_string(),
                name: None,
                skip_launch: false,
                cordoned: true,
                lease: None,
            },
        )
        .await
        .map_err(|e| Failure::new(format!("create a test machine: {e}")))?;
        let test = record.id;
        ctx.reporter.machine(
            id,
            group,
            format!(
                "machine check `{}` running in {test}",
                check.command.join(" ")
            ),
        );
        let ended = fleet::wait_state(
            ctx.state,
            &test,
            &[MachineState::Stopped, MachineState::Failed],
            ctx.plan.wait_timeout,
        )
        .await;
        let code = match ended {
            Ok(MachineState::Stopped) => super::release_command::last_exit_code(ctx, &test).await,
            _ => None,
        };
        let lines = fleet::last_log_lines(ctx.state, &test, 20).await;
        destroy(ctx, &test).await;
        if code != Some(0) {
            for l in lines {
                ctx.reporter.log(&test, l);
            }
            let why = match (ended, code) {
                (Err(e), _) => e,
                (_, Some(c)) => format!("exited with status {c}"),
                _ => "did not run its command".into(),
            };
            return Err(Failure::new(format!(
                "machine check `{}` for machine {id} failed: {why}",
                check.command.join(" ")
            )));
        }
        ctx.reporter.machine(id, group, "machine check passed");
    }
    Ok(())
}
