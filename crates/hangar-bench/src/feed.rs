//! Change-feed delivery: the time from a commit to a consumer's table reflecting it, on
//! SQLite and on PostgreSQL. Each write assigns an app address (an entry in the feed);
//! the consumer does what the edge does for it (reads the address rows and rebuilds
//! its map) and stamps the moment the map holds the new address. The commit is
//! stamped inside the writing call, right after its transaction committed.
//!
//! Three consumers: on the writer's own store (one control plane: woken by its own
//! commit), and on PostgreSQL also on a store of its own (another process: woken only
//! by `LISTEN/NOTIFY`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use hangar_store::{AppRecord, Database, FeedKind, FeedRead, IpRecord, OrgRecord, Store};

use crate::common::Stats;

const WRITES: usize = 200;
/// Time between writes, so each is measured alone.
const GAP: Duration = Duration::from_millis(5);

type Stamps = Arc<Mutex<HashMap<String, Instant>>>;

fn open(database: &Database) -> Result<Store> {
    Ok(Store::connect(database)?)
}

/// Follows `store`'s feed from now, rebuilding the address map on every address entry
/// and stamping when each address appears in it.
async fn consume(store: Store, seen: Stamps) -> Result<()> {
    let head = store.call(|db| db.feed_head()).await?;
    let mut follower = store.follow(head);
    loop {
        let FeedRead::Entries(entries) = follower.next().await? else {
            continue;
        };
        if !entries.iter().any(|e| e.kind == FeedKind::Ip) {
            continue;
        }
        let rows = store.call(|db| db.all_ips()).await?;
        let now = Instant::now();
        let mut seen = seen.lock().expect("stamps");
        for r in rows {
            seen.entry(r.ip).or_insert(now);
        }
    }
}

/// Writes `WRITES` addresses through `writer` and measures delivery to a consumer on
/// `reader`.
async fn measure(writer: Store, reader: Store) -> Result<Stats> {
    writer
        .call(|db| {
            db.ensure_org(
                &OrgRecord {
                    slug: "personal".into(),
                    name: "Personal".into(),
                    numeric_id: 1,
                },
                "t",
            )?;
            if db.app("feedbench")?.is_none() {
                db.insert_app(&AppRecord {
                    id: "feedbench".into(),
                    name: "feedbench".into(),
                    org_slug: "personal".into(),
                    network: "default".into(),
                    created_at_ms: 0,
                    machine_count: 0,
                    org_numeric_id: 1,
                })?;
            }
            Ok(())
        })
        .await?;
    let seen: Stamps = Arc::default();
    let consumer = tokio::spawn(consume(reader, seen.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut committed = Vec::new();
    let base = rand_base();
    for i in 0..WRITES {
        let ip = format!("10.{}.{}.{}", base, i / 250, i % 250 + 1);
        let record = IpRecord {
            app_name: "feedbench".into(),
            ip: ip.clone(),
            kind: "v4".into(),
            region: "global".into(),
            shared: false,
            network: None,
            service_name: None,
            created_at: "t".into(),
        };
        let at = writer
            .call(move |db| {
                db.assign_shared_ip(&record)?;
                Ok(Instant::now())
            })
            .await?;
        committed.push((ip, at));
        tokio::time::sleep(GAP).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lat = Vec::new();
    for (ip, at) in &committed {
        let seen_at = loop {
            if let Some(t) = seen.lock().expect("stamps").get(ip).copied() {
                break Some(t);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let Some(seen_at) = seen_at else {
            anyhow::bail!("{ip} never reached the consumer");
        };
        lat.push(seen_at.saturating_duration_since(*at));
    }
    consumer.abort();
    Ok(Stats::new(lat))
}

/// A second octet no earlier run of this benchmark on the same database used.
fn rand_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 200 + 20)
        .unwrap_or(42)
}

/// Delivery on SQLite (one store), PostgreSQL with the consumer on the writer's store,
/// and PostgreSQL with the consumer on its own connection.
pub async fn delivery(postgres_url: &str) -> Result<(Stats, Stats, Stats)> {
    let dir = tempfile::tempdir()?;
    let sqlite = open(&Database::Sqlite(dir.path().join("feed.db")))?;
    let on_sqlite = measure(sqlite.clone(), sqlite).await?;
    let pg = Database::Postgres(postgres_url.to_string());
    let (writer, other) =
        tokio::task::spawn_blocking(move || Ok::<_, anyhow::Error>((open(&pg)?, open(&pg)?)))
            .await??;
    let shared = measure(writer.clone(), writer.clone()).await?;
    let notified = measure(writer.clone(), other.clone()).await?;
    tokio::task::spawn_blocking(move || drop((writer, other))).await?;
    Ok((on_sqlite, shared, notified))
}
