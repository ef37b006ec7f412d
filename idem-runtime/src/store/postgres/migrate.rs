//! The schema created, or upgraded from an older version, when a store connects; and the
//! version check of a store that only looks (`connect_existing`).
//!
//! An upgrade can meet agents of the older idem still writing. Their statements lock the
//! tables in other orders than `schema.sql` does (and in no one order among themselves), so
//! the two can wait for each other, and PostgreSQL then cancels one of them: the upgrade
//! makes sure it is the one, by waiting for the locks that agents could be in a cycle with
//! only briefly ([`UPGRADE_LOCK_TIMEOUT`]), and runs again after a pause. It can also meet
//! an autovacuum, which PostgreSQL cancels only for a session that has waited for it
//! `deadlock_timeout`: the upgrade first waits that long for a lock that vacuums, `ANALYZE`,
//! `CREATE INDEX CONCURRENTLY` and schema changes take ([`VACUUMS_FIRST`]), and no agent's
//! statement waits for or holds.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::error::SqlState;

use crate::Error;

use super::open::quote_ident;
use super::{described, failed, SCHEMA_VERSION};

/// The schema, as a file that teams who run their own migrations can apply themselves.
pub(super) const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The tables `schema.sql` changes when it upgrades, whose locks it waits for.
const TABLES: [&str; 3] = ["idem_records", "idem_sagas", "idem_saga_steps"];

/// How long an upgrade's statement waits for a table lock before it gives way: a tenth of
/// the session's `deadlock_timeout`, at most 50 ms. PostgreSQL looks for a lock cycle only
/// in a session that has waited `deadlock_timeout`, and cancels that session. When the
/// upgrade and an agent's statement wait for each other, whichever waited first is looked
/// from first. If it is the agent, the upgrade began its wait later by at most its own work
/// and its other lock waits (the file takes six table locks, each wait shorter than this
/// timeout; the longer wait of [`VACUUMS_FIRST`] comes before any lock an agent can wait
/// for), so its wait ends, and the upgrade is cancelled, well before the agent's deadlock
/// check: no agent's call fails for it, as long as the agents' `deadlock_timeout` (which a
/// role or database can set apart from the upgrading session's) is at least half a second,
/// six of these waits and the work between them (PostgreSQL's default is 1 s). An exception
/// this does not cover: an operator's schema change (`CREATE INDEX`, `ALTER TABLE`) started
/// while the upgrade waits for a vacuum queues behind it, and agents' writes queue behind
/// that for as long.
const UPGRADE_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', \
     least(50, greatest(1, setting::bigint / 10))::text, true) FROM pg_settings \
     WHERE name = 'deadlock_timeout'";

/// Before its changes, an upgrade takes the tables in `SHARE UPDATE EXCLUSIVE` mode, which
/// conflicts with vacuums (autovacuum's included), `ANALYZE`, `CREATE INDEX CONCURRENTLY`
/// and schema changes, and with no lock an agent's statement takes: waiting for it queues no
/// agent behind it and closes no cycle with one. It waits up to `deadlock_timeout` and half
/// a second per table, so that PostgreSQL cancels an autovacuum in the way (it does so for a
/// session that has waited `deadlock_timeout` for one), and the autovacuum cannot come back
/// before the upgrade commits (it skips a locked table). An autovacuum to prevent
/// wraparound, or an operator's `VACUUM`, is never cancelled: the run gives way, as to any
/// lock held too long. The statement timeout is lifted for this wait (the lock timeout
/// bounds it), as a shorter one would end it before the autovacuum is cancelled; this
/// query gives back the one to restore. (On tables that already exist: a new schema has
/// none.)
const VACUUMS_FIRST: &str = "SELECT current_setting('statement_timeout'), \
     set_config('lock_timeout', (setting::bigint + 500)::text, true) FROM pg_settings \
     WHERE name = 'deadlock_timeout'";

/// How many times an upgrade that gave way is run; each run waits a little longer before it
/// starts ([`UPGRADE_PAUSE`] times the runs so far: 26 s of pauses in all), and a run waits
/// up to `deadlock_timeout` and half a second for each table a vacuum holds.
const UPGRADE_ATTEMPTS: u32 = 30;

const UPGRADE_PAUSE: Duration = Duration::from_millis(60);

/// Creates the schema, or migrates it to this version, unless it is in place: in one
/// transaction that first takes an advisory lock named after the schema, so that processes
/// connecting at once take turns (`CREATE … IF NOT EXISTS` alone still races in PostgreSQL).
/// A run that gave way to other sessions' locks is run again after a pause, up to
/// [`UPGRADE_ATTEMPTS`] times.
pub(super) async fn migrate(pool: &Pool, schema: &str) -> Result<(), Error> {
    let cannot = |e: &tokio_postgres::Error| {
        Error::store(
            "postgres",
            None,
            format!("cannot set up the schema {schema:?}: {}", described(e)),
        )
    };
    let mut client = pool.get().await.map_err(|e| failed(None, &e))?;
    if version(&client, schema).await.map_err(|e| cannot(&e))? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    let mut attempt = 1;
    let found = loop {
        let error = match migrate_once(&mut client, schema).await {
            Ok(found) => break found,
            Err(e) if gave_way(&e) => e,
            Err(e) => return Err(cannot(&e)),
        };
        let held_by = described_holders(lock_holders(&client, schema).await);
        if attempt == UPGRADE_ATTEMPTS {
            return Err(Error::store(
                "postgres",
                None,
                format!(
                    "cannot set up the schema {schema:?}: other sessions held its tables \
                     through {UPGRADE_ATTEMPTS} tries (agents of an older idem writing, a long \
                     transaction, a dump, an autovacuum to prevent wraparound, an operator's \
                     VACUUM, ANALYZE or CREATE INDEX CONCURRENTLY); {held_by}; the last try: {}",
                    described(&error)
                ),
            ));
        }
        tracing::info!(
            target: "idem",
            schema,
            attempt,
            held_by,
            "the PostgreSQL schema's upgrade gave way to other sessions' locks; trying again"
        );
        tokio::time::sleep(UPGRADE_PAUSE * attempt).await;
        attempt += 1;
    };
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(newer_schema(schema, found)),
        Some(SCHEMA_VERSION) => Ok(()),
        older => {
            tracing::info!(
                target: "idem",
                schema,
                from = older.unwrap_or(0),
                to = SCHEMA_VERSION,
                "created or migrated the PostgreSQL schema"
            );
            Ok(())
        }
    }
}

/// One run of [`migrate`]'s transaction: the version found under the advisory lock, and the
/// schema created or upgraded when it was older (or missing).
async fn migrate_once(
    client: &mut deadpool_postgres::Client,
    schema: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('idem'), hashtext($1::text))",
            &[&schema],
        )
        .await?;
    let found = version(&transaction, schema).await?;
    if found.is_none_or(|found| found < SCHEMA_VERSION) {
        let quoted = quote_ident(schema);
        if found.is_some() {
            let tables: Vec<String> = TABLES
                .iter()
                .map(|table| format!("{quoted}.{table}"))
                .collect();
            let statement_timeout: String = transaction
                .query_one(VACUUMS_FIRST, &[])
                .await?
                .try_get(0)?;
            transaction
                .batch_execute("SET LOCAL statement_timeout = 0")
                .await?;
            transaction
                .batch_execute(&format!(
                    "LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
                    tables.join(", ")
                ))
                .await?;
            transaction
                .execute(
                    "SELECT set_config('statement_timeout', $1, true)",
                    &[&statement_timeout],
                )
                .await?;
        }
        transaction.execute(UPGRADE_LOCK_TIMEOUT, &[]).await?;
        transaction
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted}; SET LOCAL search_path TO {quoted};\n{SCHEMA_SQL}"
            ))
            .await?;
        transaction.commit().await?;
    }
    Ok(found)
}

/// Whether the upgrade gave way to another session's lock (its lock timeout, or PostgreSQL
/// chose it as a deadlock's victim); its transaction was rolled back.
fn gave_way(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::LOCK_NOT_AVAILABLE | &SqlState::T_R_DEADLOCK_DETECTED)
    )
}

/// A session holding locks on the schema's tables, as `pg_stat_activity` shows it: a role
/// that may not see other roles' sessions in full (without `pg_read_all_stats`) sees no
/// backend type or state, and an autovacuum has no user; whether it is vacuuming
/// (`pg_stat_progress_vacuum`) every role sees.
#[derive(Debug)]
struct Holder {
    pid: i32,
    vacuuming: bool,
    user: Option<String>,
    backend_type: Option<String>,
    application: Option<String>,
    state: Option<String>,
    modes: Vec<String>,
}

/// The other sessions that hold locks on the schema's tables now (in this database: a table
/// of another database can have the same oid).
async fn lock_holders(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<Holder>, tokio_postgres::Error> {
    let tables: Vec<String> = TABLES
        .iter()
        .map(|table| format!("{}.{table}", quote_ident(schema)))
        .collect();
    let rows = client
        .query(
            "SELECT a.pid, \
                    EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v WHERE v.pid = a.pid), \
                    a.usename::text, a.backend_type, a.application_name, a.state, \
                    array_agg(DISTINCT l.mode ORDER BY l.mode) \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND l.pid <> pg_backend_pid() \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.relation = ANY (SELECT to_regclass(t) FROM unnest($1::text[]) t) \
             GROUP BY a.pid, a.usename, a.backend_type, a.application_name, a.state \
             ORDER BY a.pid",
            &[&tables],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Holder {
                pid: row.try_get(0)?,
                vacuuming: row.try_get(1)?,
                user: row.try_get(2)?,
                backend_type: row.try_get(3)?,
                application: row.try_get(4)?,
                state: row.try_get(5)?,
                modes: row.try_get(6)?,
            })
        })
        .collect()
}

/// "held by pid 412 (vacuuming, autovacuum worker, active; ShareUpdateExclusiveLock), pid 977
/// (user app, client backend, application \"psql\", idle in transaction; AccessShareLock)",
/// or why no session is named.
fn described_holders(holders: Result<Vec<Holder>, tokio_postgres::Error>) -> String {
    let holders = match holders {
        Ok(holders) if holders.is_empty() => {
            return "no session holds them now (those in the way have ended)".to_owned()
        }
        Ok(holders) => holders,
        Err(e) => {
            return format!(
                "the sessions in the way could not be read: {}",
                described(&e)
            )
        }
    };
    let described: Vec<String> = holders
        .iter()
        .map(|holder| {
            let mut what: Vec<String> = holder
                .vacuuming
                .then(|| "vacuuming".to_owned())
                .into_iter()
                .chain(holder.user.iter().map(|user| format!("user {user}")))
                .collect();
            what.extend(holder.backend_type.iter().cloned());
            what.extend(
                holder
                    .application
                    .as_deref()
                    .filter(|name| !name.is_empty())
                    .map(|name| format!("application {name:?}")),
            );
            what.extend(holder.state.iter().cloned());
            format!(
                "pid {} ({})",
                holder.pid,
                [what.join(", "), holder.modes.join(", ")]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .collect();
    format!("held by {}", described.join(", "))
}

/// Why a schema of a newer idem is refused: this version would not know what that one writes.
pub(super) fn newer_schema(schema: &str, found: i64) -> Error {
    Error::store(
        "postgres",
        None,
        format!(
            "the schema {schema:?} has version {found}, made by a newer idem; \
             this one knows {SCHEMA_VERSION}"
        ),
    )
}

/// The version recorded in the schema, `None` when it has no idem tables yet.
pub(super) async fn version(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let meta = format!("{}.idem_meta", quote_ident(schema));
    let exists: bool = client
        .query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&meta])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!("SELECT value::bigint FROM {meta} WHERE name = 'schema_version'"),
            &[],
        )
        .await?;
    row.map(|row| row.try_get(0)).transpose()
}
