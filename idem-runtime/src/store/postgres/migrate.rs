//! The schema created, or upgraded from an older version, when a store connects; and the
//! version check of a store that only looks (`connect_existing`).
//!
//! An upgrade can meet agents of the older idem still writing. Their statements lock the
//! tables in other orders than `schema.sql` does (and in no one order among themselves), so
//! the two can wait for each other, and PostgreSQL then cancels one of them: the upgrade
//! makes sure it is the one by waiting for the locks an agent could be in a cycle with only
//! briefly ([`SHORT_WAITS`]), and runs again after a pause. It can also meet an autovacuum,
//! which PostgreSQL cancels only for a session that has waited `deadlock_timeout` for it:
//! the upgrade first waits a little longer than that ([`VACUUM_WAIT`]) for a lock that
//! vacuums, `ANALYZE`, `CREATE INDEX CONCURRENTLY` and schema changes take, and that no
//! agent's statement takes or waits for.
//!
//! A run's waits, in order: another store's upgrade (the advisory lock), a vacuum (the
//! tables in `SHARE UPDATE EXCLUSIVE` mode), then the file's six table locks. The statement
//! timeout is lifted for the first two, whose lock timeouts bound them and which a short
//! statement timeout would end too soon, and is back for the file.

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

/// The sessions that hold the tables and that PostgreSQL does not cancel for an upgrade:
/// named in the error of an upgrade that gave way too often, and in the docs.
const NEVER_CANCELLED: &str = "a long transaction, a dump, an operator's VACUUM, ANALYZE or \
     CREATE INDEX CONCURRENTLY, an autovacuum to prevent wraparound";

/// The query that starts a run, once the statement timeout to put back has been read: it
/// lifts the statement timeout, and bounds the wait for another store's upgrade by a lock
/// timeout longer than that upgrade's own waits (three of [`VACUUM_WAIT`]'s, and two seconds
/// for its file). (Lock timeouts are capped at PostgreSQL's largest, about 24 days.)
const START_OF_RUN: &str = "SELECT set_config('statement_timeout', '0', true), \
     set_config('lock_timeout', \
       least(3 * (setting::bigint + 500) + 2000, 2147483647)::text, true) \
     FROM pg_settings WHERE name = 'deadlock_timeout'";

/// The query that bounds the wait for the tables in `SHARE UPDATE EXCLUSIVE` mode, which
/// conflicts with vacuums (autovacuum's included), `ANALYZE`, `CREATE INDEX CONCURRENTLY`
/// and schema changes, and with no lock an agent's statement takes: waiting for it queues no
/// agent and closes no cycle with one. Up to `deadlock_timeout` and half a second per
/// table, so that PostgreSQL cancels an autovacuum in the way (it does so for a session
/// that has waited `deadlock_timeout` for one); the autovacuum cannot come back before the
/// upgrade commits (it skips a locked table). [`NEVER_CANCELLED`] sessions make the run give
/// way, as any lock held too long. (Only on tables that exist: a new schema has none, and a
/// table dropped by hand is made again by the file.)
const VACUUM_WAIT: &str = "SELECT set_config('lock_timeout', \
     least(setting::bigint + 500, 2147483647)::text, true) \
     FROM pg_settings WHERE name = 'deadlock_timeout'";

/// The query that puts the statement timeout `$1` back and bounds each of the file's lock
/// waits by a tenth of the session's `deadlock_timeout`, at most 50 ms. PostgreSQL looks for
/// a lock cycle only in a session that has waited `deadlock_timeout`, and cancels that
/// session. When the upgrade and an agent's statement wait for each other, whichever waited
/// first is looked from first. If it is the agent, the upgrade began its wait later by at
/// most its own work and its other waits for the file's locks (six, each no longer than
/// this; the longer waits come before any lock an agent can wait for), so its wait ends, and
/// the upgrade is cancelled, well before the agent's deadlock check: no agent's call fails
/// for it, as long as the `deadlock_timeout` the agents' sessions run with is at least half
/// a second (PostgreSQL's default is 1 s). An exception this does not cover: an operator's
/// schema change (`CREATE INDEX`, `ALTER TABLE`) started while the upgrade waits for a
/// vacuum queues behind it, and agents' writes queue behind that for as long.
const SHORT_WAITS: &str = "SELECT set_config('statement_timeout', $1, true), \
     set_config('lock_timeout', least(50, greatest(1, setting::bigint / 10))::text, true) \
     FROM pg_settings WHERE name = 'deadlock_timeout'";

/// How often a run that gave way is tried again, and after what pause.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retries {
    /// Runs in all.
    pub(super) runs: u32,
    /// The pause before run `n + 1` is `n` times this.
    pub(super) pause: Duration,
}

impl Retries {
    /// 30 runs, 60 ms × the runs so far between them: 26 s of pauses in all, plus the runs'
    /// own waits (up to `deadlock_timeout` and half a second for each table a vacuum holds).
    pub(super) const CONNECT: Retries = Retries {
        runs: 30,
        pause: Duration::from_millis(60),
    };
}

/// How many sessions holding the tables an error names; the rest are counted.
const HOLDERS_NAMED: usize = 10;

/// Creates the schema, or migrates it to this version, unless it is in place: in one
/// transaction that first takes an advisory lock named after the schema, so that processes
/// connecting at once take turns (`CREATE … IF NOT EXISTS` alone still races in PostgreSQL).
/// A run that gave way to other sessions' locks is run again after a pause ([`Retries`]).
pub(super) async fn migrate(pool: &Pool, schema: &str, retries: Retries) -> Result<(), Error> {
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
    let mut run = 1;
    let found = loop {
        let gave_way = match migrate_once(&mut client, schema).await {
            Ok(found) => break found,
            Err(failed) if gave_way(&failed.error) => failed,
            Err(failed) => return Err(cannot(&failed.error)),
        };
        let held_by = described_holders(lock_holders(&client, schema).await);
        let error = described(&gave_way.error);
        if run >= retries.runs {
            return Err(Error::store(
                "postgres",
                None,
                format!(
                    "cannot set up the schema {schema:?} (version {SCHEMA_VERSION}): its tables \
                     stayed locked for {run} runs; the last gave way waiting for {}: {error}; \
                     {held_by}. PostgreSQL cancels none of {NEVER_CANCELLED}: connect again \
                     once they end (docs/postgres.md, \"Upgrading idem while agents of the \
                     older version run\")",
                    gave_way.waiting_for
                ),
            ));
        }
        tracing::info!(
            target: "idem",
            schema,
            run,
            runs = retries.runs,
            waiting_for = gave_way.waiting_for,
            error,
            held_by,
            "the PostgreSQL schema's upgrade gave way to other sessions' locks; running it again"
        );
        tokio::time::sleep(retries.pause * run).await;
        run += 1;
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

/// A run that failed, and what it was waiting for when it did.
struct RunFailed {
    waiting_for: &'static str,
    error: tokio_postgres::Error,
}

/// One run of [`migrate`]'s transaction: the version found under the advisory lock, and the
/// schema created or upgraded when it was older (or missing).
async fn migrate_once(
    client: &mut deadpool_postgres::Client,
    schema: &str,
) -> Result<Option<i64>, RunFailed> {
    let at = |waiting_for| move |error| RunFailed { waiting_for, error };
    let waiting_for = "another store's upgrade";
    let transaction = client.transaction().await.map_err(at(waiting_for))?;
    let statement_timeout: String = transaction
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(at(waiting_for))?;
    transaction
        .query_one(START_OF_RUN, &[])
        .await
        .map_err(at(waiting_for))?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('idem'), hashtext($1::text))",
            &[&schema],
        )
        .await
        .map_err(at(waiting_for))?;
    let found = version(&transaction, schema)
        .await
        .map_err(at(waiting_for))?;
    if found.is_some_and(|found| found >= SCHEMA_VERSION) {
        return Ok(found);
    }
    let quoted = quote_ident(schema);
    if found.is_some() {
        let waiting_for = "a vacuum, ANALYZE or schema change of its tables";
        // The tables in place: one dropped by hand is made again by the file.
        let existing: Vec<String> = transaction
            .query_one(
                "SELECT coalesce(array_agg(t), '{}') FROM unnest($1::text[]) t \
                 WHERE to_regclass(t) IS NOT NULL",
                &[&qualified_tables(schema)],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(at(waiting_for))?;
        if !existing.is_empty() {
            transaction
                .query_one(VACUUM_WAIT, &[])
                .await
                .map_err(at(waiting_for))?;
            transaction
                .batch_execute(&format!(
                    "LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
                    existing.join(", ")
                ))
                .await
                .map_err(at(waiting_for))?;
        }
    }
    let waiting_for = "a lock on its tables";
    transaction
        .query_one(SHORT_WAITS, &[&statement_timeout])
        .await
        .map_err(at(waiting_for))?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted}; SET LOCAL search_path TO {quoted};\n{SCHEMA_SQL}"
        ))
        .await
        .map_err(at(waiting_for))?;
    transaction.commit().await.map_err(at(waiting_for))?;
    Ok(found)
}

/// The schema's tables, each qualified with the quoted schema name.
fn qualified_tables(schema: &str) -> Vec<String> {
    let quoted = quote_ident(schema);
    TABLES
        .iter()
        .map(|table| format!("{quoted}.{table}"))
        .collect()
}

/// Whether a run gave way to another session's lock (its lock timeout, or PostgreSQL chose
/// it as a deadlock's victim); its transaction was rolled back.
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
    let tables = qualified_tables(schema);
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
/// the first [`HOLDERS_NAMED`] of them, or why no session is named.
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
    let mut described: Vec<String> = holders
        .iter()
        .take(HOLDERS_NAMED)
        .map(Holder::described)
        .collect();
    if holders.len() > HOLDERS_NAMED {
        described.push(format!("{} more", holders.len() - HOLDERS_NAMED));
    }
    format!("held by {}", described.join(", "))
}

impl Holder {
    /// "pid 977 (user app, client backend, application \"psql\", idle in transaction;
    /// AccessShareLock)": what the role may see of it.
    fn described(&self) -> String {
        let mut what: Vec<String> = self
            .vacuuming
            .then(|| "vacuuming".to_owned())
            .into_iter()
            .chain(self.user.iter().map(|user| format!("user {user}")))
            .chain(self.backend_type.iter().cloned())
            .chain(
                self.application
                    .iter()
                    .filter(|name| !name.is_empty())
                    .map(|name| format!("application {name:?}")),
            )
            .chain(self.state.iter().cloned())
            .collect();
        what.retain(|part| !part.is_empty());
        let parts: Vec<String> = [what.join(", "), self.modes.join(", ")]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect();
        if parts.is_empty() {
            format!("pid {}", self.pid)
        } else {
            format!("pid {} ({})", self.pid, parts.join("; "))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::Holder;

    fn holder(pid: i32, modes: &[&str]) -> Holder {
        Holder {
            pid,
            vacuuming: false,
            user: None,
            backend_type: None,
            application: Some(String::new()),
            state: None,
            modes: modes.iter().map(|mode| (*mode).to_owned()).collect(),
        }
    }

    /// A holder is described by what the role may see of it, and nothing it may not: no
    /// empty parentheses, no empty application name.
    #[test]
    fn a_holder_is_described_by_what_can_be_seen() {
        assert_eq!(holder(7, &[]).described(), "pid 7");
        assert_eq!(
            holder(7, &["ShareUpdateExclusiveLock"]).described(),
            "pid 7 (ShareUpdateExclusiveLock)"
        );
        let seen = Holder {
            vacuuming: true,
            user: Some("app".into()),
            backend_type: Some("client backend".into()),
            application: Some("psql".into()),
            state: Some("idle in transaction".into()),
            ..holder(977, &["AccessShareLock", "RowExclusiveLock"])
        };
        assert_eq!(
            seen.described(),
            "pid 977 (vacuuming, user app, client backend, application \"psql\", \
             idle in transaction; AccessShareLock, RowExclusiveLock)"
        );
    }

    /// An error names the first ten holders and counts the rest: a busy fleet's agents do
    /// not make it endless.
    #[test]
    fn many_holders_are_counted_past_the_tenth() {
        let holders = (1..=13)
            .map(|pid| holder(pid, &["RowExclusiveLock"]))
            .collect();
        let described = super::described_holders(Ok(holders));
        assert!(described.starts_with("held by pid 1 (RowExclusiveLock), pid 2"));
        assert!(
            described.ends_with("pid 10 (RowExclusiveLock), 3 more"),
            "{described}"
        );
        assert_eq!(
            super::described_holders(Ok(Vec::new())),
            "no session holds them now (those in the way have ended)"
        );
    }
}
