//! Versioned schema migrations, the same for SQLite and PostgreSQL (written with
//! SQLite's type names, which [`Dialect::schema`] maps). The pending ones run once, in
//! order, in one transaction; the applied version is kept in `schema_migrations`. Never
//! change what a shipped migration means: add a new one.

use crate::sql::{args, Conn, Dialect};
use crate::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: orgs, tokens, apps, machines, versions, events, leases, idempotency keys.
    r#"
    CREATE TABLE orgs (
        slug TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        numeric_id INTEGER NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        org_slug TEXT NOT NULL REFERENCES orgs(slug),
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE apps (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        org_slug TEXT NOT NULL REFERENCES orgs(slug),
        network TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        state TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        private_ip TEXT NOT NULL,
        config TEXT NOT NULL,
        cordoned INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        runtime TEXT,
        -- The newest events as a JSON array, newest first, kept in the same transaction
        -- as each event so listings need no join.
        recent_events TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX machines_by_app ON machines(app_name, created_at, id);
    CREATE UNIQUE INDEX machines_live_name ON machines(app_name, name) WHERE state <> 'destroyed';
    CREATE TABLE machine_versions (
        machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
        version TEXT NOT NULL,
        config TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (machine_id, version)
    );
    CREATE TABLE machine_events (
        id TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        source TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        request TEXT
    );
    CREATE INDEX machine_events_by_machine ON machine_events(machine_id, id);
    CREATE TABLE leases (
        machine_id TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
        nonce TEXT NOT NULL,
        owner TEXT NOT NULL,
        description TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE idempotency_keys (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_sha256 TEXT NOT NULL,
        status INTEGER NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    );
    "#,
    // 2: the edge: app IP assignments and certificates.
    r#"
    CREATE TABLE ip_assignments (
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        ip TEXT NOT NULL,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        shared INTEGER NOT NULL,
        network TEXT,
        service_name TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (app_name, ip)
    );
    CREATE UNIQUE INDEX ip_assignments_dedicated ON ip_assignments(ip) WHERE shared = 0;
    CREATE TABLE certificates (
        hostname TEXT PRIMARY KEY,
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        authority TEXT NOT NULL,
        status TEXT NOT NULL,
        chain_pem TEXT,
        key_pem TEXT,
        issuer TEXT,
        expires_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX certificates_app ON certificates(app_name);
    "#,
    // 3: app secrets (sealed values) and releases.
    r#"
    CREATE TABLE secrets (
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        digest TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (app_name, name)
    );
    CREATE TABLE secrets_versions (
        app_name TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
        version INTEGER NOT NULL
    );
    CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        image TEXT NOT NULL,
        definition TEXT NOT NULL,
        secrets_version INTEGER NOT NULL,
        secrets BLOB NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL,
        description TEXT NOT NULL,
        "user" TEXT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (app_name, version)
    );
    "#,
    // 4: metered usage: totals per month, and what is being metered right now.
    r#"
    CREATE TABLE usage (
        month TEXT NOT NULL,
        org_slug TEXT NOT NULL,
        app_name TEXT NOT NULL,
        item TEXT NOT NULL,
        size TEXT NOT NULL,
        memory_mb INTEGER NOT NULL,
        state TEXT NOT NULL,
        quantity REAL NOT NULL,
        PRIMARY KEY (month, org_slug, app_name, item, size, memory_mb, state)
    );
    CREATE TABLE usage_open (
        subject TEXT PRIMARY KEY,
        org_slug TEXT NOT NULL,
        app_name TEXT NOT NULL,
        item TEXT NOT NULL,
        size TEXT NOT NULL,
        memory_mb INTEGER NOT NULL,
        state TEXT NOT NULL,
        since_ms INTEGER NOT NULL
    );
    "#,
    // 5: the change feed, revisioned in commit order by its one-row head.
    r#"
    CREATE TABLE feed_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL
    );
    INSERT INTO feed_head (id, revision) VALUES (1, 0);
    CREATE TABLE feed (
        revision INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        app_name TEXT NOT NULL,
        subject TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    "#,
    // 6: the memory each machine is given, so placement can sum what a host holds
    // (filled in from each machine's config as the migration runs).
    r#"
    ALTER TABLE machines ADD COLUMN memory_mb INTEGER;
    "#,
    // 7: volumes: what each is, where, and which machine holds it. A destroyed volume
    // stays (soft-deleted) for a day with its deleted_at_ms set.
    r#"
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        zone TEXT NOT NULL,
        host TEXT NOT NULL,
        size_gb INTEGER NOT NULL,
        state TEXT NOT NULL,
        encrypted INTEGER NOT NULL,
        fstype TEXT NOT NULL,
        attached_machine_id TEXT,
        snapshot_retention INTEGER NOT NULL,
        auto_backup_enabled INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        deleted_at_ms INTEGER
    );
    CREATE INDEX volumes_by_app ON volumes(app_name, created_at, id);
    CREATE UNIQUE INDEX volumes_one_holder ON volumes(attached_machine_id) WHERE attached_machine_id IS NOT NULL;
    "#,
    // 8: volume snapshots. They outlive their volume (within their retention), so they
    // name it rather than reference its row.
    r#"
    CREATE TABLE volume_snapshots (
        id TEXT PRIMARY KEY,
        app_name TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        volume_id TEXT NOT NULL,
        host TEXT NOT NULL,
        status TEXT NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        volume_size INTEGER NOT NULL,
        digest TEXT NOT NULL,
        retention_days INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX volume_snapshots_by_volume ON volume_snapshots(volume_id, created_at_ms);
    "#,
    // 9: encrypted volumes' keys, sealed under the master key; a snapshot keeps the key
    // its blocks are encrypted with, for restores after its volume is gone.
    r#"
    ALTER TABLE volumes ADD COLUMN sealed_key BLOB;
    ALTER TABLE volume_snapshots ADD COLUMN sealed_key BLOB;
    "#,
    // 10: WireGuard peers of each org.
    r#"
    CREATE TABLE wireguard_peers (
        org_slug TEXT NOT NULL REFERENCES orgs(slug) ON DELETE CASCADE,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        public_key TEXT NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (org_slug, name)
    );
    "#,
    // 11: what a token may do beyond its org: the first start's admin token may also
    // create and remove orgs.
    r#"
    ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'org';
    UPDATE tokens SET kind = 'admin' WHERE name = 'admin' AND org_slug = 'personal';
    "#,
];

/// Any number, the same in every process: the key of the lock two servers starting on
/// one PostgreSQL database take so that one migrates while the other waits.
const MIGRATION_LOCK: i64 = 0x6861_6e67_6172;

pub(crate) fn apply(conn: &mut Conn) -> Result<()> {
    let dialect = conn.dialect();
    let mut tx = conn.begin()?;
    if dialect == Dialect::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(?1)", args![MIGRATION_LOCK])?;
    }
    // Changes nothing where the table exists, as in a database of a newer schema.
    tx.batch(&dialect.schema(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    ))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch(&dialect.schema(sql))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            args![i as i64 + 1],
        )?;
        if i + 1 == 6 {
            fill_memory(&mut tx)?;
        }
    }
    tx.commit()
}

/// Sets each machine's `memory_mb` from its config (migration 6).
fn fill_memory(tx: &mut Conn) -> Result<()> {
    let rows = tx.query(
        "SELECT id, config FROM machines WHERE memory_mb IS NULL",
        &[],
    )?;
    for r in rows.iter() {
        let id: String = r.get(0)?;
        let config: String = r.get(1)?;
        let config: hangar_types::MachineConfig = serde_json::from_str(&config)?;
        tx.execute(
            "UPDATE machines SET memory_mb = ?2 WHERE id = ?1",
            args![&id, i64::from(config.memory_mb())],
        )?;
    }
    Ok(())
}
