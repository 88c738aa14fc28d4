//! The change feed: every write that changes what is routable or what a host must run
//! (an app created or deleted, an address assigned or released, a certificate added,
//! issued or removed, a machine created or changed) also appends an entry to `feed`
//! in the same transaction, with the next revision from the one-row `feed_head`.
//! Taking the revision updates that row, which holds its lock until commit, so
//! revision order is commit order and a consumer that has read up to revision N has
//! seen every commit up to N.
//!
//! Consumers ([`Follower`]) keep their own cursor and read what came after it; a wake-up
//! (PostgreSQL `LISTEN/NOTIFY` from any process, or this process's own commits) only
//! makes them read sooner: notifications lost while disconnected cost nothing but the
//! once-a-second poll. A consumer that fell behind what the feed keeps reloads a
//! snapshot. The feed says what changed, not how: consumers read the rows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::sql::{args, Conn, Dialect};
use crate::{Db, Result, Store};

/// How many entries the feed keeps; a consumer further behind reloads.
pub const KEPT_REVISIONS: i64 = 10_000;

/// The PostgreSQL channel commits to the feed notify.
const CHANNEL: &str = "hangar_feed";

/// How often a consumer reads the feed when nothing woke it.
const POLL: Duration = Duration::from_secs(1);

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    App,
    Ip,
    Certificate,
    Machine,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::App => "app",
            FeedKind::Ip => "ip",
            FeedKind::Certificate => "certificate",
            FeedKind::Machine => "machine",
        }
    }

    fn parse(s: &str) -> Option<FeedKind> {
        [
            FeedKind::App,
            FeedKind::Ip,
            FeedKind::Certificate,
            FeedKind::Machine,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One committed change: what it is about (`subject` is the app name, the address,
/// the hostname or the machine id) and when it was committed (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub revision: i64,
    pub kind: FeedKind,
    pub app_name: String,
    pub subject: String,
    pub at_ms: i64,
}

/// What a consumer reads next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRead {
    /// Entries after the cursor, oldest first (possibly none).
    Entries(Vec<FeedEntry>),
    /// The cursor is older than what the feed keeps: reload everything, then go on
    /// from `head`.
    Reload { head: i64 },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends an entry in the caller's transaction (no round trip of its own on
/// PostgreSQL: the statements go with the next read or the commit).
pub(crate) fn record(tx: &mut Conn, kind: FeedKind, app: &str, subject: &str) -> Result<()> {
    tx.defer(
        "UPDATE feed_head SET revision = revision + 1 WHERE id = 1",
        &[],
    )?;
    tx.defer(
        "INSERT INTO feed (revision, kind, app_name, subject, at_ms)
         SELECT revision, ?1, ?2, ?3, ?4 FROM feed_head WHERE id = 1",
        args![kind.as_str(), app, subject, now_ms()],
    )?;
    tx.defer(
        "DELETE FROM feed WHERE revision <= (SELECT revision FROM feed_head WHERE id = 1) - ?1",
        args![KEPT_REVISIONS],
    )?;
    if tx.dialect() == Dialect::Postgres {
        tx.defer(&format!("SELECT pg_notify('{CHANNEL}', '')"), &[])?;
    }
    Ok(())
}

impl Db<'_> {
    /// The newest revision committed.
    pub fn feed_head(&mut self) -> Result<i64> {
        self.conn
            .query_one("SELECT revision FROM feed_head WHERE id = 1", &[])?
            .get(0)
    }

    /// Up to `limit` entries after revision `after`, or [`FeedRead::Reload`] when some
    /// after it are no longer kept.
    ///
    /// One statement (one round trip on PostgreSQL): the head and the oldest kept
    /// revision come on every row, and on a single row of NULL entry columns when
    /// nothing came after `after`.
    pub fn feed_after(&mut self, after: i64, limit: usize) -> Result<FeedRead> {
        let rows = self.conn.query(
            "SELECT h.revision, (SELECT COALESCE(MIN(revision), 0) FROM feed),
                    f.revision, f.kind, f.app_name, f.subject, f.at_ms
             FROM feed_head h LEFT JOIN (
                 SELECT revision, kind, app_name, subject, at_ms FROM feed
                 WHERE revision > ?1 ORDER BY revision LIMIT ?2
             ) f ON 1 = 1
             WHERE h.id = 1 ORDER BY f.revision",
            args![after, limit as i64],
        )?;
        let Some(first) = rows.first() else {
            return Err(crate::StoreError::NoRow);
        };
        let (head, oldest): (i64, i64) = (first.get(0)?, first.get(1)?);
        if after < head && after + 1 < oldest {
            return Ok(FeedRead::Reload { head });
        }
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(revision) = r.get::<Option<i64>>(2)? else {
                continue;
            };
            let kind: String = r.get(3)?;
            let Some(kind) = FeedKind::parse(&kind) else {
                continue;
            };
            entries.push(FeedEntry {
                revision,
                kind,
                app_name: r.get(4)?,
                subject: r.get(5)?,
                at_ms: r.get(6)?,
            });
        }
        Ok(FeedRead::Entries(entries))
    }
}

/// Wakes followers in this process when a commit of it reached the feed, and (on
/// PostgreSQL) when any process's did.
#[derive(Default)]
pub(crate) struct FeedWake {
    pub(crate) notify: Notify,
    listening: std::sync::atomic::AtomicBool,
    /// On PostgreSQL, the followers' own connection (opened at their first read), so
    /// reading the feed after every commit never queues behind the API's calls.
    reader: std::sync::Mutex<Option<Conn>>,
}

impl Store {
    /// A consumer of the feed starting after `cursor` (take it with
    /// [`Db::feed_head`] before loading the snapshot it follows from).
    pub fn follow(&self, cursor: i64) -> Follower {
        self.listen_for_feed();
        Follower {
            store: self.clone(),
            cursor,
        }
    }

    /// On PostgreSQL, once per store: a connection of its own that `LISTEN`s and wakes
    /// followers on each notification, and also whenever it had to reconnect (what it
    /// missed meanwhile is in the feed).
    fn listen_for_feed(&self) {
        let Some(url) = self.postgres_url.clone() else {
            return;
        };
        if self
            .feed_wake
            .listening
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wake = self.feed_wake.clone();
        runtime.spawn(async move {
            loop {
                if let Err(e) = listen_once(&url, &wake).await {
                    tracing::debug!(error = %e, "feed listener disconnected");
                }
                wake.notify.notify_waiters();
                tokio::time::sleep(POLL).await;
            }
        });
    }
}

impl Store {
    /// Entries after `after`: on PostgreSQL on the followers' connection, on SQLite
    /// through the store's one connection (in-process, it costs no round trip).
    async fn read_feed(&self, after: i64) -> Result<FeedRead> {
        let Some(url) = self.postgres_url.clone() else {
            return self.call(move |db| db.feed_after(after, 512)).await;
        };
        let wake = self.feed_wake.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = wake
                .reader
                .lock()
                .map_err(|_| crate::StoreError::Poisoned)?;
            if reader.is_none() {
                *reader = Some(Conn::Postgres(Box::new(crate::postgres::PgConn::connect(
                    &url,
                )?)));
            }
            let Some(conn) = reader.as_mut() else {
                return Err(crate::StoreError::NoRow);
            };
            Db { conn, fed: false }.feed_after(after, 512)
        })
        .await
        .map_err(|e| crate::StoreError::Task(e.to_string()))?
    }
}

/// Listens until the connection ends.
async fn listen_once(url: &str, wake: &Arc<FeedWake>) -> std::result::Result<(), String> {
    use futures_util::StreamExt;
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r.map_err(|e| e.to_string())?;
                listening = true;
                // Anything committed before the LISTEN took is read now.
                wake.notify.notify_waiters();
            }
            m = messages.next() => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    wake.notify.notify_waiters()
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            },
        }
    }
}

/// A consumer's place in the feed.
pub struct Follower {
    store: Store,
    cursor: i64,
}

impl Follower {
    /// The last revision this consumer has read.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Waits for a wake-up (at most a second), then reads what came after the cursor
    /// and moves past it. An error leaves the cursor where it was.
    pub async fn next(&mut self) -> Result<FeedRead> {
        let wake = self.store.feed_wake.clone();
        let notified = wake.notify.notified();
        // Entries already waiting are read without a wake-up.
        let read = self.read().await?;
        if !matches!(&read, FeedRead::Entries(e) if e.is_empty()) {
            return Ok(read);
        }
        let _ = tokio::time::timeout(POLL, notified).await;
        self.read().await
    }

    async fn read(&mut self) -> Result<FeedRead> {
        let after = self.cursor;
        let read = self.store.read_feed(after).await?;
        match &read {
            FeedRead::Entries(e) => {
                if let Some(last) = e.last() {
                    self.cursor = last.revision;
                }
            }
            FeedRead::Reload { head } => self.cursor = *head,
        }
        Ok(read)
    }
}
