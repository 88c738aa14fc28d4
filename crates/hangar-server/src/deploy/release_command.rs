//! `[deploy] release_command`: a throwaway machine on the new image, with no services,
//! checks or volumes, that must exit 0 before any app machine changes (§7.3). Its
//! output goes into the deploy's progress; a non-zero exit aborts the deploy.

use std::time::Duration;

use hangar_types::MachineState;

use super::run::{destroy, Ctx, Failure};
use crate::fleet::{self, NewMachine};

/// Lines of the release command's output shown with the deploy.
const SHOWN_LINES: usize = 100;

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), Failure> {
    let Some(mut config) = ctx
        .plan
        .config
        .release_command_config(&ctx.plan.image)
        .map_err(|e| Failure::new(e.to_string()))?
    else {
        return Ok(());
    };
    // Kept until its exit and output are read, then destroyed here.
    config.auto_destroy = Some(false);
    let config = ctx.stamp(config);
    let command = config.init.cmd.clone().unwrap_or_default().join(" ");
    ctx.reporter
        .step(format!("running release_command: {command}"));
    let (record, _, _) = fleet::create(
        ctx.state,
        &ctx.plan.app,
        NewMachine {
            config,
            region: ctx.region(),
            name: None,
            skip_launch: false,
            cordoned: true,
            lease: None,
        },
    )
    .await
    .map_err(|e| Failure::new(format!("create the release_command machine: {e}")))?;
    let id = record.id;
    let timeout = if ctx.plan.release_command_timeout.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        ctx.plan.release_command_timeout
    };
    let ended = fleet::wait_state(
        ctx.state,
        &id,
        &[MachineState::Stopped, MachineState::Failed],
        timeout,
    )
    .await;
    for line in fleet::last_log_lines(ctx.state, &id, SHOWN_LINES).await {
        ctx.reporter.log(&id, line);
    }
    let exit_code = match &ended {
        Ok(MachineState::Failed) => None,
        Ok(_) => last_exit_code(ctx, &id).await,
        Err(_) => None,
    };
    destroy(ctx, &id).await;
    match (ended, exit_code) {
        (Err(e), _) => Err(Failure::new(format!(
            "release command failed - aborting deployment. {e}; raise [deploy] release_command_timeout if it needs longer"
        ))),
        (Ok(_), Some(0)) => {
            ctx.reporter.step("release_command completed successfully");
            Ok(())
        }
        (Ok(_), Some(code)) => Err(Failure::new(format!(
            "release command failed - aborting deployment. machine {id} exited with non-zero status of {code}"
        ))),
        (Ok(_), None) => Err(Failure::new(format!(
            "release command failed - aborting deployment. machine {id} failed to run its command; check the image has {command:?}"
        ))),
    }
}

/// The exit code of the machine's latest `exit` event.
pub(super) async fn last_exit_code(ctx: &Ctx<'_>, id: &str) -> Option<i64> {
    let mid = id.to_string();
    let events = ctx
        .state
        .store
        .call(move |db| db.events(&mid, 20))
        .await
        .ok()?;
    events
        .iter()
        .find(|e| e.kind == hangar_types::EventKind::Exit)
        .and_then(|e| e.request.as_ref())
        .and_then(|r| r.get("exit_event"))
        .and_then(|x| x.get("exit_code"))
        .and_then(|c| c.as_i64())
}
