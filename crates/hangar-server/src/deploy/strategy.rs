//! How machines move to a new release (flytoml-and-deploys.md §7.2, §7.4): creating the
//! machines of a new group, and updating existing ones `rolling` (one first, then
//! `max_unavailable` at a time, each started and passing its checks before the next),
//! `immediate` (all at once, no waiting), `canary` (a throwaway machine per group must
//! come up healthy first) and `bluegreen` (a healthy green machine for every blue one
//! before traffic moves; any failure removes the greens and leaves blue serving).

use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hangar_store::MachineRecord;
use hangar_types::{MachineConfig, MachineState};

use super::run::{destroy, Ctx, Failure};
use crate::fleet::{self, NewMachine};

/// One existing machine and the config it moves to.
pub(super) struct Entry {
    pub machine: MachineRecord,
    pub group: String,
    pub config: MachineConfig,
}

/// How long a machine without checks must stay up to count as not crashing.
const SMOKE: Duration = Duration::from_secs(1);
/// Most machines updated at once by `immediate` and bluegreen.
const MAX_CONCURRENT: usize = 8;
/// Most stopped machines updated at once.
const COLD_POOL: usize = 30;

fn was_started(m: &MachineRecord) -> bool {
    matches!(m.state, MachineState::Started | MachineState::Starting)
}

/// Waits for the machine to start and pass its checks (or, without checks, to stay up).
pub(super) async fn wait_healthy(
    ctx: &Ctx<'_>,
    id: &str,
    group: &str,
    config: &MachineConfig,
) -> Result<(), Failure> {
    let timeout = ctx.plan.wait_timeout;
    fleet::wait_state(ctx.state, id, &[MachineState::Started], timeout)
        .await
        .map_err(|e| Failure::on(id, e))?;
    if fleet::configured_checks(config) == 0 {
        tokio::time::sleep(SMOKE).await;
        let now = ctx
            .state
            .agent
            .state(id)
            .await
            .unwrap_or(MachineState::Destroyed);
        if now != MachineState::Started {
            return Err(Failure::on(
                id,
                format!("smoke checks for {id} failed: the app appears to be crashing (it is {now} a moment after starting)"),
            ));
        }
    } else {
        ctx.reporter
            .machine(id, group, "started; waiting for health checks");
        fleet::wait_checks(ctx.state, id, config, timeout)
            .await
            .map_err(|e| Failure::on(id, e))?;
    }
    Ok(())
}

/// Updates one machine in place; with `wait`, until it is started and healthy.
async fn update_one(ctx: &Ctx<'_>, e: &Entry, wait: bool) -> Result<(), Failure> {
    let id = e.machine.id.clone();
    // Its state now, not when the deploy listed it: autostop may have stopped it since.
    let now = ctx.state.agent.state(&id).await.unwrap_or(e.machine.state);
    let started = matches!(now, MachineState::Started | MachineState::Starting);
    let skip_launch = !matches!(
        now,
        MachineState::Started | MachineState::Starting | MachineState::Failed
    );
    ctx.reporter.machine(
        &id,
        &e.group,
        format!("updating to v{}", ctx.release.version),
    );
    let config = e.config.clone();
    ctx.state
        .agent
        .update(&id, config, skip_launch)
        .await
        .map_err(|err| Failure::on(&id, format!("update machine {id}: {err}")))?;
    if let Ok(mut u) = ctx.undo.updated.lock() {
        u.push((
            id.clone(),
            e.group.clone(),
            e.machine.config.clone(),
            started,
        ));
    }
    if skip_launch {
        ctx.reporter
            .machine(&id, &e.group, "updated; left stopped (autostart wakes it)");
        return Ok(());
    }
    if wait {
        wait_healthy(ctx, &id, &e.group, &e.config).await?;
        super::machine_checks::run(
            ctx,
            &id,
            &e.group,
            &e.config,
            &e.machine.private_ip,
            &e.machine.region,
        )
        .await?;
        ctx.reporter.machine(&id, &e.group, "updated and healthy");
    } else {
        ctx.reporter.machine(&id, &e.group, "updated");
    }
    Ok(())
}

/// Updates `list` with the first alone, then `size` at a time; the first failure stops
/// the rest.
async fn pool(ctx: &Ctx<'_>, list: Vec<&Entry>, size: usize, total: u32) -> Result<(), Failure> {
    let Some((first, rest)) = list.split_first() else {
        return Ok(());
    };
    let group = first.group.clone();
    let done = std::sync::atomic::AtomicU32::new(0);
    let tick = |_| {
        let d = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        ctx.reporter.progress(
            &group,
            d,
            total,
            format!("{d}/{total} machines of '{group}' updated"),
        );
    };
    update_one(ctx, first, true).await.map(tick)?;
    stream::iter(rest.iter().map(Ok))
        .try_for_each_concurrent(size.max(1), |e| async {
            update_one(ctx, e, true).await.map(tick)
        })
        .await
}

/// How many started machines of a group are updated at once.
fn warm_pool(max_unavailable: f64, warm: usize) -> usize {
    if max_unavailable >= 1.0 {
        max_unavailable as usize
    } else {
        ((warm as f64) * max_unavailable).ceil() as usize
    }
    .max(1)
}

pub(super) async fn rolling(ctx: &Ctx<'_>, entries: Vec<Entry>) -> Result<(), Failure> {
    let mut groups: Vec<String> = entries.iter().map(|e| e.group.clone()).collect();
    groups.dedup();
    let per_group = groups.iter().map(|g| {
        let mine: Vec<&Entry> = entries.iter().filter(|e| &e.group == g).collect();
        let total = mine.len() as u32;
        let (warm, cold): (Vec<&Entry>, Vec<&Entry>) =
            mine.into_iter().partition(|e| was_started(&e.machine));
        let warm_size = warm_pool(ctx.plan.max_unavailable, warm.len());
        let cold_size = cold.len().min(COLD_POOL);
        async move {
            let (a, b) = tokio::join!(
                pool(ctx, warm, warm_size, total),
                pool(ctx, cold, cold_size, total)
            );
            a.and(b)
        }
    });
    futures_util::future::try_join_all(per_group)
        .await
        .map(|_| ())
}

pub(super) async fn immediate(ctx: &Ctx<'_>, entries: Vec<Entry>) -> Result<(), Failure> {
    stream::iter(entries.iter().map(Ok))
        .try_for_each_concurrent(MAX_CONCURRENT, |e| update_one(ctx, e, false))
        .await
}

/// Creates a machine for `group` on the new release and records it for undo.
async fn launch(
    ctx: &Ctx<'_>,
    group: &str,
    mut config: MachineConfig,
    region: String,
    skip_launch: bool,
    cordoned: bool,
) -> Result<MachineRecord, Failure> {
    let made = crate::volumes::for_new_machine(ctx.state, &ctx.plan.app, &region, &mut config)
        .await
        .map_err(|e| Failure::new(format!("give a machine of group '{group}' its volume: {e}")))?;
    if let Some(v) = made {
        ctx.reporter.step(format!(
            "created volume {} ({}, {} GB in {})",
            v.id, v.name, v.size_gb, v.region
        ));
    }
    let (record, _, _) = fleet::create(
        ctx.state,
        &ctx.plan.app,
        NewMachine {
            config,
            region,
            name: None,
            skip_launch,
            cordoned,
            lease: None,
        },
    )
    .await
    .map_err(|e| Failure::new(format!("create a machine for group '{group}': {e}")))?;
    Ok(record)
}

/// A group with no machines gets one, and with `--ha` a second for services (or a
/// stopped standby when it has none); a group with mounts gets one.
pub(super) async fn create_group(ctx: &Ctx<'_>, group: &str) -> Result<(), Failure> {
    let config = ctx.stamp(super::group_config(ctx.plan, group, None).map_err(Failure::new)?);
    let has_mounts = config.mounts.is_some();
    let has_services = config.services.as_ref().is_some_and(|s| !s.is_empty());
    let wait = ctx.plan.strategy != super::Strategy::Immediate;
    let region = ctx.region();
    let first = launch(ctx, group, config.clone(), region.clone(), false, false)
        .await?
        .id;
    if let Ok(mut c) = ctx.undo.created.lock() {
        c.push(first.clone());
    }
    ctx.reporter
        .machine(&first, group, format!("created in {region}"));
    if wait {
        wait_healthy(ctx, &first, group, &config).await?;
    }
    if ctx.plan.ha && !has_mounts {
        let (second_config, skip) = if has_services {
            (config.clone(), false)
        } else {
            let mut standby = config.clone();
            standby.standbys = Some(vec![first.clone()]);
            standby
                .env
                .get_or_insert_with(Default::default)
                .insert("FLY_STANDBY_FOR".into(), first.clone());
            (standby, true)
        };
        let second = launch(
            ctx,
            group,
            second_config.clone(),
            region.clone(),
            skip,
            false,
        )
        .await?
        .id;
        if let Ok(mut c) = ctx.undo.created.lock() {
            c.push(second.clone());
        }
        let what = if skip {
            "created as a stopped standby"
        } else {
            "created for high availability"
        };
        ctx.reporter.machine(&second, group, what);
        if wait && !skip {
            wait_healthy(ctx, &second, group, &second_config).await?;
        }
    }
    Ok(())
}

/// One throwaway machine per group on the new release, cordoned, must come up healthy;
/// then it is destroyed and the rolling update follows.
pub(super) async fn canary(ctx: &Ctx<'_>, groups: Vec<String>) -> Result<(), Failure> {
    for g in groups {
        let mut config = ctx.stamp(super::group_config(ctx.plan, &g, None).map_err(Failure::new)?);
        config.metadata.get_or_insert_with(Default::default).insert(
            hangar_appconfig::machine::metadata::CANARY.into(),
            "true".into(),
        );
        let canary = launch(ctx, &g, config.clone(), ctx.region(), false, true).await?;
        let id = canary.id.clone();
        ctx.reporter.machine(&id, &g, "canary created");
        let healthy = match wait_healthy(ctx, &id, &g, &config).await {
            Ok(()) => {
                super::machine_checks::run(
                    ctx,
                    &id,
                    &g,
                    &config,
                    &canary.private_ip,
                    &canary.region,
                )
                .await
            }
            Err(f) => Err(f),
        };
        if let Err(f) = healthy {
            let lines = fleet::last_log_lines(ctx.state, &id, 20).await;
            destroy(ctx, &id).await;
            for l in lines {
                ctx.reporter.log(&id, l);
            }
            return Err(Failure::new(format!(
                "canary for group '{g}' failed: {}",
                f.message
            )));
        }
        destroy(ctx, &id).await;
        ctx.reporter.machine(&id, &g, "canary healthy; destroyed");
    }
    Ok(())
}

/// A green machine for every blue one; when all are healthy they take the traffic and
/// the blue ones are cordoned, drained and destroyed. A failure before that destroys
/// the greens and leaves the blues untouched.
pub(super) async fn bluegreen(ctx: &Ctx<'_>, entries: Vec<Entry>) -> Result<(), Failure> {
    let mut greens: Vec<(String, &Entry, bool)> = Vec::new();
    let result: Result<(), Failure> =
        async {
            for e in &entries {
                let start = was_started(&e.machine);
                let id = launch(
                    ctx,
                    &e.group,
                    e.config.clone(),
                    e.machine.region.clone(),
                    !start,
                    true,
                )
                .await?
                .id;
                ctx.reporter.machine(
                    &id,
                    &e.group,
                    format!("green machine created for {}", e.machine.id),
                );
                greens.push((id, e, start));
            }
            stream::iter(greens.iter().filter(|(_, _, s)| *s).map(Ok))
                .try_for_each_concurrent(MAX_CONCURRENT, |(id, e, _)| async move {
                    wait_healthy(ctx, id, &e.group, &e.config).await?;
                    ctx.reporter.machine(id, &e.group, "green machine healthy");
                    Ok(())
                })
                .await?;
            for (id, e, _) in &greens {
                ctx.state.agent.cordon(id, false).await.map_err(|err| {
                    Failure::on(id, format!("uncordon green machine {id}: {err}"))
                })?;
                ctx.reporter
                    .machine(id, &e.group, "green machine ready for traffic");
            }
            Ok(())
        }
        .await;
    if let Err(f) = result {
        ctx.reporter.step(format!(
            "bluegreen: removing {} green machine(s); the blue machines keep serving",
            greens.len()
        ));
        let lines = match &f.machine {
            Some(id) => fleet::last_log_lines(ctx.state, id, 20).await,
            None => Vec::new(),
        };
        for (id, _, _) in &greens {
            destroy(ctx, id).await;
        }
        if let Some(id) = &f.machine {
            for l in lines {
                ctx.reporter.log(id, l);
            }
        }
        return Err(Failure::new(f.message));
    }
    for e in &entries {
        let _ = ctx.state.agent.cordon(&e.machine.id, true).await;
    }
    ctx.reporter
        .step("traffic moved to green; draining and destroying blue machines");
    stream::iter(entries.iter())
        .for_each_concurrent(MAX_CONCURRENT, |e| async move {
            destroy(ctx, &e.machine.id).await;
            ctx.reporter
                .machine(&e.machine.id, &e.group, "blue machine destroyed");
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::warm_pool;

    #[test]
    fn warm_pool_is_a_count_or_a_fraction() {
        assert_eq!(warm_pool(0.33, 3), 1);
        assert_eq!(warm_pool(0.5, 5), 3);
        assert_eq!(warm_pool(2.0, 10), 2);
        assert_eq!(warm_pool(0.01, 0), 1);
    }
}
