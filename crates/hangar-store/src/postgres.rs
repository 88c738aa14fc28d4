//! PostgreSQL under the store, through the async `tokio-postgres` driver.
//!
//! The store's calls are synchronous closures on tokio's blocking pool (as SQLite's
//! are), so a connection owns a small runtime of its own that drives the socket; a call
//! waits on it. It prepares each statement once, binds [`Value`]s to the types the
//! server inferred, reconnects when the server went away, and says which server it
//! could not reach without ever printing the URL's password. The SQL itself is the
//! domain modules' business.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::sql::{numbered_placeholders, Value};
use crate::{Result, StoreError};

/// How long connecting may take before the store says the server is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for PostgreSQL to come back before it fails as unavailable.
const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// While PostgreSQL is down, how often a call tries to reach it again.
const DOWN_RETRY: Duration = Duration::from_secs(1);

/// At most this many prepared statements are kept per connection.
const KEPT_STATEMENTS: usize = 512;

pub(crate) struct PgConn {
    config: Config,
    target: String,
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    statements: HashMap<String, Statement>,
    /// Statements queued to go with the next one whose answer is read.
    pending: Vec<Pending>,
    /// A transaction is open on this session: losing the session loses it.
    in_transaction: bool,
    /// Since when PostgreSQL could not be reached, once the reconnect wait ran out.
    down_since: Option<std::time::Instant>,
}

/// A statement on its way to the server.
enum Pending {
    /// Run for effect; its row count is the answer.
    Statement(String, Vec<Value>),
    /// Run for its rows.
    Query(String, Vec<Value>),
    /// Simple-protocol text without arguments (`BEGIN`, `COMMIT`, migrations).
    Batch(String),
}

enum Answer {
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
}

/// `host:port/dbname` of a connection string, for messages: never the password.
pub(crate) fn target_of(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

impl PgConn {
    /// Connects to the server the URL names.
    pub(crate) fn connect(url: &str) -> Result<PgConn> {
        let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            StoreError::BadUrl(format!(
                "{e}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hangar");
        }
        let target = target_of(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hangar-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let client = open(&runtime, &config, &target)?;
        Ok(PgConn {
            config,
            target,
            runtime: Some(runtime),
            client,
            statements: HashMap::new(),
            pending: Vec::new(),
            in_transaction: false,
            down_since: None,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("runtime lives as long as the connection")
    }

    /// Reconnects when the server closed the connection (a restart, a failover),
    /// trying for up to [`RECONNECT_WAIT`], so a PostgreSQL restart between two calls is
    /// not seen by either. Once that wait ran out, PostgreSQL counts as down: calls fail
    /// at once, with one new attempt at most every [`DOWN_RETRY`], so callers queued
    /// behind this connection do not each wait again. A statement cut off mid-flight is
    /// not retried: whether it committed is unknown, and applying it twice would be
    /// worse than an error.
    fn ensure_open(&mut self) -> Result<()> {
        if !self.client.is_closed() {
            return Ok(());
        }
        self.statements.clear();
        let now = std::time::Instant::now();
        if let Some(down) = self.down_since {
            if now.duration_since(down) < DOWN_RETRY {
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL at {} is down",
                    self.target
                )));
            }
            return match open(self.runtime(), &self.config, &self.target) {
                Ok(client) => self.reconnected(client),
                Err(e) => {
                    self.down_since = Some(std::time::Instant::now());
                    Err(e)
                }
            };
        }
        let deadline = now + RECONNECT_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            match open(self.runtime(), &self.config, &self.target) {
                Ok(client) => return self.reconnected(client),
                Err(e) if std::time::Instant::now() + pause > deadline => {
                    tracing::warn!(database = %self.target, "PostgreSQL is down; calls fail until it is back");
                    self.down_since = Some(std::time::Instant::now());
                    return Err(e);
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn reconnected(&mut self, client: Client) -> Result<()> {
        self.client = client;
        self.down_since = None;
        tracing::info!(database = %self.target, "reconnected to PostgreSQL");
        Ok(())
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let text = numbered_placeholders(sql);
        let statement = self
            .runtime()
            .block_on(self.client.prepare(&text))
            .map_err(|e| self.error(e))?;
        if self.statements.len() >= KEPT_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Queues a statement whose result nobody reads; it goes to the server with the
    /// next one that is read (or the commit), in one round trip.
    pub(crate) fn defer(&mut self, sql: &str, args: &[Value]) {
        self.pending
            .push(Pending::Statement(sql.to_string(), args.to_vec()));
    }

    /// Queues `BEGIN`, to go with the transaction's first statement.
    pub(crate) fn defer_batch(&mut self, sql: &str) {
        self.pending.push(Pending::Batch(sql.to_string()));
    }

    pub(crate) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        match self.send(Some(Pending::Statement(sql.to_string(), args.to_vec())))? {
            Answer::Count(n) => Ok(n),
            Answer::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    pub(crate) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>> {
        match self.send(Some(Pending::Query(sql.to_string(), args.to_vec())))? {
            Answer::Rows(rows) => rows.iter().map(values_of).collect(),
            Answer::Count(_) => Ok(Vec::new()),
        }
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        self.send(Some(Pending::Batch(sql.to_string()))).map(|_| ())
    }

    /// Sends what is queued and then `last` in one pipeline (the server runs them in
    /// order); the first error wins, else `last`'s answer.
    fn send(&mut self, last: Option<Pending>) -> Result<Answer> {
        let mut steps = std::mem::take(&mut self.pending);
        steps.extend(last);
        if self.in_transaction && self.client.is_closed() {
            // What the transaction sent died with the session; nothing of it committed,
            // and what is left must not run outside it.
            self.in_transaction = false;
            return Err(StoreError::Unavailable(format!(
                "PostgreSQL at {}: connection lost in a transaction; nothing of it was committed",
                self.target
            )));
        }
        for step in &steps {
            if let Pending::Batch(sql) = step {
                match sql.as_str() {
                    "BEGIN" => self.in_transaction = true,
                    "COMMIT" | "ROLLBACK" => self.in_transaction = false,
                    _ => {}
                }
            }
        }
        self.ensure_open()?;
        let mut prepared = Vec::with_capacity(steps.len());
        for step in &steps {
            prepared.push(match step {
                Pending::Statement(sql, _) | Pending::Query(sql, _) => Some(self.statement(sql)?),
                Pending::Batch(_) => None,
            });
        }
        let client = &self.client;
        let futures = steps
            .iter()
            .zip(&prepared)
            .map(|(step, statement)| async move {
                match (step, statement) {
                    (Pending::Batch(sql), _) => {
                        client.batch_execute(sql).await.map(|()| Answer::Count(0))
                    }
                    (Pending::Statement(_, args), Some(st)) => {
                        let params: Vec<&(dyn ToSql + Sync)> =
                            args.iter().map(|a| a as _).collect();
                        client.execute(st, &params).await.map(Answer::Count)
                    }
                    (Pending::Query(_, args), Some(st)) => {
                        let params: Vec<&(dyn ToSql + Sync)> =
                            args.iter().map(|a| a as _).collect();
                        client.query(st, &params).await.map(Answer::Rows)
                    }
                    (_, None) => Ok(Answer::Count(0)),
                }
            });
        let answers = self
            .runtime()
            .block_on(futures_util::future::join_all(futures));
        let mut last = Answer::Count(0);
        for answer in answers {
            last = answer.map_err(|e| self.error(e))?;
        }
        Ok(last)
    }

    /// One round trip on this session, without reconnecting: whether it still lives.
    fn ping(&mut self) -> Result<()> {
        if self.client.is_closed() {
            return Err(StoreError::Unavailable(format!(
                "PostgreSQL at {}: connection closed",
                self.target
            )));
        }
        self.runtime()
            .block_on(self.client.simple_query("SELECT 1"))
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// A database error stays one; a lost connection says which server went away.
    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_some() {
            StoreError::Postgres(e)
        } else {
            StoreError::Unavailable(format!("PostgreSQL at {}: {e}", self.target))
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // The last handle may go inside async code, where a runtime may not block.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn open(runtime: &tokio::runtime::Runtime, config: &Config, target: &str) -> Result<Client> {
    let (client, connection) = runtime.block_on(config.connect(NoTls)).map_err(|e| {
        StoreError::Unavailable(format!("cannot reach PostgreSQL at {target}: {e}"))
    })?;
    runtime.spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

fn values_of(row: &tokio_postgres::Row) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => return Err(StoreError::ColumnType(ty.name().to_string())),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Int(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT4) => (*v as f32).to_sql(ty, out),
            (Value::Text(s), _) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("cannot bind {} to a parameter of type {ty}", v.kind()).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// The key of the session lock the active control plane of a database holds.
const LEADER_LOCK: i64 = 0x0068_616e_6761_7201;

/// What a check of the control-plane lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lead {
    /// This process holds the lock: it is the active control plane.
    Held,
    /// PostgreSQL cannot be reached; whether this process still leads is unknown, and
    /// nothing can be written anyway.
    Unreachable(String),
    /// Another process holds the lock now: this one must stop serving.
    Lost,
}

/// The lock that makes one of several control planes on one PostgreSQL database the
/// active one; the others wait as hot standbys and take over when its session ends
/// (its process died or lost PostgreSQL). Held on a connection of its own.
pub struct Leadership {
    url: String,
    conn: Option<PgConn>,
}

impl Leadership {
    /// Waits until this process holds the lock, calling `standing_by` once if another
    /// holds it first. A database that cannot be reached at the first try is an error
    /// (a wrong URL should fail at start); once reached, losing it is waited out.
    pub fn acquire(url: &str, standing_by: impl FnOnce(&str)) -> Result<Leadership> {
        let mut me = Leadership {
            url: url.to_string(),
            conn: None,
        };
        if me.try_lock()? {
            return Ok(me);
        }
        standing_by("another control plane holds this database; standing by to take over");
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if let Ok(true) = me.try_lock() {
                return Ok(me);
            }
        }
    }

    fn try_lock(&mut self) -> Result<bool> {
        let conn = match &mut self.conn {
            Some(c) if !c.client.is_closed() => c,
            slot => slot.insert(PgConn::connect(&self.url)?),
        };
        let row = conn.query(
            "SELECT pg_try_advisory_lock(?1)",
            &[Value::Int(LEADER_LOCK)],
        )?;
        Ok(matches!(
            row.first().and_then(|r| r.first()),
            Some(Value::Int(1))
        ))
    }

    /// Whether this process still leads. After PostgreSQL comes back, the lock is taken
    /// again on a new session when no standby took it first.
    pub fn check(&mut self) -> Lead {
        // The lock lives as long as this session: a new session must take it again.
        if self.conn.as_mut().is_some_and(|c| c.ping().is_ok()) {
            return Lead::Held;
        }
        self.conn = None;
        match self.try_lock() {
            Ok(true) => Lead::Held,
            Ok(false) => Lead::Lost,
            Err(e) => {
                self.conn = None;
                Lead::Unreachable(e.to_string())
            }
        }
    }
}
