//! Metering what ran, as it runs, for `hangar billing`: machines' started and suspended
//! seconds by size, dedicated IPv4 addresses held, and bytes out through the proxy,
//! kept per month, org and app in the store. Each meter running now is a row too,
//! with the moment up to which it is already counted, so a restart resumes it (a
//! machine that kept running while the server was down is billed for that time).
//!
//! Actors report every machine as it changes ([`Meter::machine`]); one task applies the
//! readings in order, moves every running meter on each interval, and takes the
//! proxy's byte counts. Prices come from the table the server was given; this module
//! neither prices per region nor meters root filesystems or volumes (there are none
//! yet: their rows stay empty).

pub mod month;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_proxy::Egress;
use hangar_store::{
    MachineRecord, OpenUsage, Store, StoreError, UsageKey, UsageRecord, UsageWrite,
};
use hangar_types::billing::{billed_size, BillingReport, PriceTable, UsageItem, UsageLine};
use hangar_types::MachineState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock;

/// What a machine is metered as now: its size and `running` or `suspended`, or nothing.
#[derive(Debug, Clone)]
struct Reading {
    machine_id: String,
    app: String,
    meter: Option<(String, u32, &'static str)>,
    at_ms: i64,
}

enum Msg {
    Machine(Reading),
    /// Count now: something metered changed outside the machines (an address).
    Count,
    /// Every machine has been reported once since start: meters nobody reported end.
    Settle,
}

#[derive(Default)]
struct State {
    open: HashMap<String, OpenUsage>,
    /// Machines reported since start.
    reported: HashSet<String>,
    /// App → org, for apps metered since start.
    orgs: HashMap<String, String>,
}

pub struct Meter {
    store: Store,
    prices: Arc<PriceTable>,
    egress: Arc<Egress>,
    state: tokio::sync::Mutex<State>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Msg>>>,
}

const IPV4: &str = "ipv4:";

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// `[from, to)` of `key` as monthly seconds to add.
fn elapsed(key: &UsageKey, from: i64, to: i64) -> Vec<UsageRecord> {
    month::split(from, to)
        .into_iter()
        .map(|(month, ms)| UsageRecord {
            month,
            key: key.clone(),
            quantity: seconds(ms),
        })
        .collect()
}

/// The agent tells the meter how each machine looks.
impl hangar_agent::Observer for Meter {
    fn machine(&self, machine: &MachineRecord) {
        Meter::machine(self, machine);
    }
}

impl Meter {
    /// The meter, with the meters that were running when the store was last written.
    pub async fn load(
        store: Store,
        prices: PriceTable,
        egress: Arc<Egress>,
    ) -> Result<Arc<Meter>, StoreError> {
        let open = store.call(|db| db.open_usage()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = State::default();
        for o in open {
            state
                .orgs
                .insert(o.key.app_name.clone(), o.key.org_slug.clone());
            state.open.insert(o.subject.clone(), o);
        }
        Ok(Arc::new(Meter {
            store,
            prices: Arc::new(prices),
            egress,
            state: tokio::sync::Mutex::new(state),
            tx,
            rx: Mutex::new(Some(rx)),
        }))
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Reports a machine as it is now; applied in order by the meter's task.
    pub fn machine(&self, m: &MachineRecord) {
        let state = match m.state {
            MachineState::Started => Some("running"),
            MachineState::Suspended => Some("suspended"),
            _ => None,
        };
        let meter = state.map(|s| {
            let (preset, memory) = billed_size(m.config.guest.as_ref());
            (preset, memory, s)
        });
        let _ = self.tx.send(Msg::Machine(Reading {
            machine_id: m.id.clone(),
            app: m.app_name.clone(),
            meter,
            at_ms: clock::now_ms(),
        }));
    }

    /// Counts now rather than at the next interval: an app's addresses changed.
    pub fn count_now(&self) {
        let _ = self.tx.send(Msg::Count);
    }

    /// Bytes an agent's proxy sent for `app` (counted there, metered here).
    pub fn add_egress(&self, app: &str, bytes: u64) {
        self.egress.give_back(app, bytes);
    }

    /// Says every machine has been reported since start.
    pub fn settle(&self) {
        let _ = self.tx.send(Msg::Settle);
    }

    /// Applies readings and moves the meters on every `interval` until `shutdown`,
    /// then counts up to the moment it stops.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let r = tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(Msg::Machine(r)) => self.apply(r).await,
                    Some(Msg::Settle) => self.settle_now().await,
                    Some(Msg::Count) => self.tick().await,
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "billing: could not record usage; will try again");
            }
        }
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Machine(r) = msg {
                let _ = self.apply(r).await;
            }
        }
        if let Err(e) = self.tick().await {
            tracing::warn!(error = %e, "billing: could not record usage at shutdown");
        }
    }

    async fn org_of(&self, state: &mut State, app: &str) -> Result<Option<String>, StoreError> {
        if let Some(org) = state.orgs.get(app) {
            return Ok(Some(org.clone()));
        }
        let a = app.to_string();
        let org = self
            .store
            .call(move |db| db.app(&a))
            .await?
            .map(|r| r.org_slug);
        if let Some(o) = &org {
            state.orgs.insert(app.to_string(), o.clone());
        }
        Ok(org)
    }

    async fn write(&self, w: UsageWrite) -> Result<(), StoreError> {
        if w.add.is_empty() && w.open.is_empty() && w.close.is_empty() {
            return Ok(());
        }
        self.store.call(move |db| db.write_usage(&w)).await
    }

    async fn apply(&self, r: Reading) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.reported.insert(r.machine_id.clone());
        let want = match &r.meter {
            Some((size, memory, s)) => match self.org_of(&mut state, &r.app).await? {
                Some(org) => Some(UsageKey {
                    org_slug: org,
                    app_name: r.app.clone(),
                    item: UsageItem::Machine.as_str().into(),
                    size: size.clone(),
                    memory_mb: i64::from(*memory),
                    state: (*s).into(),
                }),
                None => None,
            },
            None => None,
        };
        let current = state.open.get(&r.machine_id).cloned();
        if current.as_ref().map(|c| &c.key) == want.as_ref() {
            return Ok(());
        }
        let opened = want.map(|key| OpenUsage {
            subject: r.machine_id.clone(),
            key,
            since_ms: r.at_ms,
        });
        // The old meter's time is counted; a new one replaces its row, else the row goes.
        let w = UsageWrite {
            add: current.as_ref().map_or_else(Vec::new, |c| {
                elapsed(&c.key, c.since_ms, r.at_ms.max(c.since_ms))
            }),
            open: opened.iter().cloned().collect(),
            close: if opened.is_none() && current.is_some() {
                vec![r.machine_id.clone()]
            } else {
                Vec::new()
            },
        };
        self.write(w).await?;
        match opened {
            Some(o) => state.open.insert(r.machine_id, o),
            None => state.open.remove(&r.machine_id),
        };
        Ok(())
    }

    /// Ends the machine meters of machines nobody reported since start (destroyed while
    /// the server was down): the time since their last count is not known, so none is
    /// added.
    async fn settle_now(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let gone: Vec<String> = state
            .open
            .iter()
            .filter(|(s, o)| {
                o.key.item == UsageItem::Machine.as_str() && !state.reported.contains(*s)
            })
            .map(|(s, _)| s.clone())
            .collect();
        self.write(UsageWrite {
            close: gone.clone(),
            ..Default::default()
        })
        .await?;
        for s in gone {
            state.open.remove(&s);
        }
        Ok(())
    }

    /// Counts every running meter up to now, follows the dedicated IPv4 addresses held,
    /// and takes the bytes sent out.
    async fn tick(&self) -> Result<(), StoreError> {
        let now = clock::now_ms();
        let ips = self.store.call(|db| db.all_ips()).await?;
        let mut state = self.state.lock().await;
        let mut w = UsageWrite::default();
        let held: HashMap<String, String> = ips
            .into_iter()
            .filter(|r| r.kind == "v4")
            .map(|r| (format!("{IPV4}{}", r.ip), r.app_name))
            .collect();
        for (subject, app) in &held {
            if !state.open.contains_key(subject) {
                if let Some(org) = self.org_of(&mut state, app).await? {
                    let o = OpenUsage {
                        subject: subject.clone(),
                        key: UsageKey {
                            org_slug: org,
                            app_name: app.clone(),
                            item: UsageItem::Ipv4.as_str().into(),
                            size: String::new(),
                            memory_mb: 0,
                            state: String::new(),
                        },
                        since_ms: now,
                    };
                    w.open.push(o);
                }
            }
        }
        let mut moved = Vec::new();
        for (subject, o) in &state.open {
            w.add
                .extend(elapsed(&o.key, o.since_ms, now.max(o.since_ms)));
            if o.key.item == UsageItem::Ipv4.as_str() && !held.contains_key(subject) {
                w.close.push(subject.clone());
            } else {
                let mut o = o.clone();
                o.since_ms = now.max(o.since_ms);
                moved.push(o);
            }
        }
        w.open.extend(moved.iter().cloned());
        let egress = self.egress.take();
        for (app, bytes) in &egress {
            if let Some(org) = self.org_of(&mut state, app).await? {
                w.add.push(UsageRecord {
                    month: month::of(now),
                    key: UsageKey {
                        org_slug: org,
                        app_name: app.clone(),
                        item: UsageItem::Egress.as_str().into(),
                        size: String::new(),
                        memory_mb: 0,
                        state: String::new(),
                    },
                    quantity: *bytes as f64,
                });
            }
        }
        let closed = w.close.clone();
        let opened = w.open.clone();
        if let Err(e) = self.write(w).await {
            for (app, bytes) in egress {
                self.egress.give_back(&app, bytes);
            }
            return Err(e);
        }
        for s in closed {
            state.open.remove(&s);
        }
        for o in opened {
            state.open.insert(o.subject.clone(), o);
        }
        Ok(())
    }

    /// What the org used in `month` (`YYYY-MM`), optionally of one app, priced; meters
    /// running now are counted up to this moment.
    pub async fn report(
        &self,
        org: &str,
        month_name: &str,
        app: Option<&str>,
    ) -> Result<BillingReport, ReportError> {
        let (year, m) = month::parse(month_name).map_err(ReportError::Invalid)?;
        let from = month::start_ms(year, m);
        let now = clock::now_ms();
        let (o, mo) = (org.to_string(), month_name.to_string());
        let rows = self.store.call(move |db| db.usage(&o, &mo)).await?;
        let mut totals = Totals::default();
        for r in &rows {
            totals.add(&r.key, r.quantity);
        }
        self.add_uncounted(&mut totals, org, month_name, from, now)
            .await;
        let lines = self.priced(totals, app);
        let total = lines.iter().map(|l| l.cost).sum();
        Ok(BillingReport {
            org: org.to_string(),
            month: month_name.to_string(),
            currency: self.prices.currency.clone(),
            through: clock::rfc3339_now(),
            lines,
            total,
        })
    }

    /// Adds what the store does not have yet: the org's meters running now, from
    /// `from` (the month's start) up to `now`, and, in the current month, the bytes
    /// its apps sent since the last count.
    async fn add_uncounted(
        &self,
        totals: &mut Totals,
        org: &str,
        month_name: &str,
        from: i64,
        now: i64,
    ) {
        let state = self.state.lock().await;
        for o in state.open.values().filter(|o| o.key.org_slug == org) {
            for r in elapsed(&o.key, o.since_ms.max(from), now) {
                if r.month == month_name {
                    totals.add(&r.key, r.quantity);
                }
            }
        }
        // Bytes sent since the last count belong to this month.
        if month::of(now) == month_name {
            for (a, bytes) in self.egress.peek() {
                if state.orgs.get(&a).is_some_and(|o| o == org) {
                    let key = UsageKey {
                        org_slug: org.to_string(),
                        app_name: a,
                        item: UsageItem::Egress.as_str().into(),
                        size: String::new(),
                        memory_mb: 0,
                        state: String::new(),
                    };
                    totals.add(&key, bytes as f64);
                }
            }
        }
    }

    /// The report's lines, of one app when `app` is given, each priced from the table.
    fn priced(&self, totals: Totals, app: Option<&str>) -> Vec<UsageLine> {
        let mut lines = Vec::new();
        for ((a, item, size, memory, st), quantity) in totals.0 {
            if app.is_some_and(|want| want != a) {
                continue;
            }
            let Some(kind) = UsageItem::parse(&item) else {
                continue;
            };
            let memory = u32::try_from(memory).unwrap_or(0);
            let unit_price = self
                .prices
                .unit_price(kind, &size, memory, &st)
                .unwrap_or(0.0);
            let machine = kind == UsageItem::Machine;
            lines.push(UsageLine {
                app: a,
                item,
                size: machine.then_some(size),
                memory_mb: machine.then_some(memory),
                state: machine.then_some(st),
                quantity,
                unit: kind.unit().into(),
                unit_price,
                cost: quantity * unit_price,
            });
        }
        lines
    }
}

/// Quantities of a report summed by app, item, size, memory and state, in that order
/// (the order of its lines).
#[derive(Default)]
struct Totals(BTreeMap<(String, String, String, i64, String), f64>);

impl Totals {
    fn add(&mut self, k: &UsageKey, q: f64) {
        *self
            .0
            .entry((
                k.app_name.clone(),
                k.item.clone(),
                k.size.clone(),
                k.memory_mb,
                k.state.clone(),
            ))
            .or_default() += q;
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
