//! The SQL layer under the store: one connection to SQLite or PostgreSQL, statements
//! written once with `?N` placeholders, and values and rows in one small type, so the
//! domain queries do not know which engine runs them.
//!
//! It owns placeholder translation, transactions (`BEGIN`/`COMMIT`, rolled back when
//! dropped), statement caching and reconnecting to PostgreSQL. It knows no tables; the
//! few expressions the engines spell differently (JSON paths) are on [`Dialect`].

use std::collections::HashMap;

use crate::{Result, StoreError};

/// Which engine runs the statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text at `outer.<placeholder>` of the JSON object in `column`, where the inner
    /// key is bound as a parameter (`?`).
    pub(crate) fn json_text_at_param(self, column: &str, outer: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!("json_extract({column}, '$.{outer}.' || json_quote(?))")
            }
            Dialect::Postgres => format!("({column}::jsonb -> '{outer}' ->> ?)"),
        }
    }

    /// The schema text of a migration for this engine: the migrations are written for
    /// SQLite's type names, and PostgreSQL gets its own for the same meaning.
    pub(crate) fn schema(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => sql.to_string(),
            Dialect::Postgres => replace_words(
                sql,
                &[
                    ("INTEGER", "BIGINT"),
                    ("BLOB", "BYTEA"),
                    ("REAL", "DOUBLE PRECISION"),
                ],
            ),
        }
    }
}

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// What kind of value this is, for messages (never the value: it may be a secret).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a number",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&i64> for Value {
    fn from(v: &i64) -> Self {
        Value::Int(*v)
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(v.into())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}
impl From<&bool> for Value {
    fn from(v: &bool) -> Self {
        Value::Int((*v).into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&f64> for Value {
    fn from(v: &f64) -> Self {
        Value::Real(*v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Value::Blob(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_deref().map_or(Value::Null, Into::into)
    }
}

/// The arguments of a statement: `args![a, b]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::sql::Value::from($v)),*][..]
    };
}
pub(crate) use args;

/// A value of a row read back into a Rust type.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            Value::Blob(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for u16 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).and_then(|i| u16::try_from(i).ok())
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result, read in full.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// Column `i` as a `T`; a missing column or a value of another kind is an error.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self.0.get(i).ok_or(StoreError::Column {
            index: i,
            expected: std::any::type_name::<T>(),
        })?;
        T::from_value(v).ok_or(StoreError::Column {
            index: i,
            expected: std::any::type_name::<T>(),
        })
    }
}

/// A connection to one of the engines.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<crate::postgres::PgConn>),
}

impl Conn {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement that returns no rows; returns how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        storable(args)?;
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(args.iter()))? as u64)
            }
            Conn::Postgres(c) => c.execute(sql, args),
        }
    }

    /// Runs a query and reads every row.
    pub(crate) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        storable(args)?;
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let width = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(from_sqlite(r.get_ref(i)?));
                    }
                    out.push(Row(values));
                }
                Ok(out)
            }
            Conn::Postgres(c) => Ok(c.query(sql, args)?.into_iter().map(Row).collect()),
        }
    }

    /// The first row of a query, if any.
    pub(crate) fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row of a query that always returns one.
    pub(crate) fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row> {
        self.query_opt(sql, args)?.ok_or(StoreError::NoRow)
    }

    /// Runs a statement whose result nobody reads. On PostgreSQL it waits to go with the
    /// next statement whose answer is read, or the commit, in one round trip; so an
    /// error it meets is reported there.
    pub(crate) fn defer(&mut self, sql: &str, args: &[Value]) -> Result<()> {
        storable(args)?;
        match self {
            Conn::Sqlite(_) => self.execute(sql, args).map(|_| ()),
            Conn::Postgres(c) => {
                c.defer(sql, args);
                Ok(())
            }
        }
    }

    /// Runs statements separated by `;` with no arguments.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.batch(sql),
        }
    }

    /// Begins a transaction; it commits with [`Tx::commit`] and rolls back when dropped.
    /// On PostgreSQL `BEGIN` goes with the transaction's first statement.
    pub(crate) fn begin(&mut self) -> Result<Tx<'_>> {
        match self {
            Conn::Sqlite(c) => c.execute_batch("BEGIN")?,
            Conn::Postgres(c) => c.defer_batch("BEGIN"),
        }
        Ok(Tx {
            conn: self,
            open: true,
        })
    }
}

/// Refuses text with a NUL byte on either engine, so input PostgreSQL cannot hold is a
/// clear error everywhere rather than a database failure on one engine.
fn storable(args: &[Value]) -> Result<()> {
    if args
        .iter()
        .any(|a| matches!(a, Value::Text(s) if s.contains('\0')))
    {
        return Err(StoreError::Invalid(
            "text may not contain a NUL byte (\\u0000); remove it and try again".into(),
        ));
    }
    Ok(())
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A transaction on a connection; statements run on it through `Deref`.
pub(crate) struct Tx<'a> {
    conn: &'a mut Conn,
    open: bool,
}

impl Tx<'_> {
    pub(crate) fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.batch("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

/// Rewrites `?N` as `$N` and each bare `?` as one more than the largest number so far
/// (SQLite's rule), outside quoted text.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut largest: u32 = 0;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// Replaces whole upper-case words (type names in a schema).
fn replace_words(sql: &str, words: &[(&str, &str)]) -> String {
    let map: HashMap<&str, &str> = words.iter().copied().collect();
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(map.get(word.as_str()).copied().unwrap_or(word));
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_placeholders("a = ?1 AND b = ? AND c = '?' AND d = ?12 AND e = ?"),
            "a = $1 AND b = $2 AND c = '?' AND d = $12 AND e = $13"
        );
    }

    #[test]
    fn schemas_take_postgres_type_names() {
        assert_eq!(
            Dialect::Postgres.schema("n INTEGER, b BLOB, q REAL, t TEXT, created_at_ms INTEGER"),
            "n BIGINT, b BYTEA, q DOUBLE PRECISION, t TEXT, created_at_ms BIGINT"
        );
    }
}
