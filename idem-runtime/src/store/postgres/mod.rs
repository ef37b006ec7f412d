//! `PostgresStore`: records in PostgreSQL, for fleets of agents on many machines.
//!
//! Every operation on a record or a saga log is one SQL statement, timed by the server's clock
//! (`clock_timestamp()`), run on a pooled connection (deadpool-postgres). A claim is a plain
//! `SELECT` (a replay ends there) and an `INSERT … ON CONFLICT DO NOTHING` (a new key ends
//! there), the one its handle's recent claims say to try first (`store/first_look.rs`), and
//! `INSERT … ON CONFLICT … DO UPDATE … WHERE` only for a record to replace. The schema is
//! `schema.sql`, next to this file; the store creates or migrates it when it connects.
//!
//! ```text
//! mod.rs         PostgresStore, its Store impl, and running a statement on a pooled connection
//! open.rs        connecting: the builder, the pool
//! migrate.rs     the schema created or upgraded (schema.sql), or its version checked
//! statements.rs  every statement, written once per store for its schema, by concern
//! decode.rs      rows as records, saga logs and claims, every field checked
//! readback.rs    a write whose answer was lost: the record read back, and what it says
//! ```

mod decode;
mod migrate;
mod open;
mod readback;
mod statements;
#[cfg(all(test, feature = "conformance"))]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::key::{Fingerprint, Key};
use crate::store::first_look::{FirstLook, FirstStep};
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Ownership, Record, RecordCount, RecordKind,
    RecordQuery, SagaLog, SagaQuery, SagaStatus, SagaWrite, StaleSaga, Store, StoredOutcome,
    Waiters,
};
use crate::store::{Found, Inspect, SagaStore};
use crate::{Error, OnStale};
use readback::{answer_lost, Unanswered};

pub use open::PostgresStoreBuilder;

use decode::{
    claim_answer, column, corrupt, count, inserted, listed_key, peek_answer, record, saga_log,
    Attempt, Peek,
};
use open::{quote_ident, Direct};
use statements::Statements;

/// The version `schema.sql` sets up; a schema with a smaller one is upgraded by running
/// the file again (2 added `idem_sagas.note`, 3 `idem_records.ttl_ms`, 4
/// `idem_saga_steps.updated_at`), a schema with a larger one is refused.
const SCHEMA_VERSION: i64 = 4;

/// After how many recorded results expired ones are purged (in the background).
const PURGE_EVERY: u64 = 1024;

/// How many expired records one purge statement deletes; a purge runs statements until one
/// deletes fewer, so that no transaction grows with the backlog.
const PURGE_BATCH: u64 = 1000;

/// The longest lease or TTL the store writes: 100 years (an `interval` has limits).
const MAX_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// How many times a claim is run again when it lost a race it could not see: the record
/// changed between the statement's snapshot and its write. Each rerun sees the winner.
const CLAIM_ATTEMPTS: usize = 16;

/// The records of the claim protocol and the saga logs, in a PostgreSQL database: many
/// processes on many machines share them safely.
///
/// - **Claims** are one statement each: `INSERT … ON CONFLICT (key) DO UPDATE … WHERE` the
///   record is an expired result, or a claim of the same payload whose lease ran out. The same
///   statement takes the dead owner's place or parks the key as NEEDS_REVIEW (`on_stale =
///   review`), and otherwise reports the record as the statement's snapshot saw it (a replay
///   of a recorded result, or a look at a key in progress, writes nothing). When the record
///   changed between that snapshot and the write, the statement runs again.
/// - **Fencing tokens** come from a sequence: they never repeat, not even after a release or
///   a purge deleted the record, and a takeover draws its token once it holds the row lock,
///   so it is larger than the token it replaces.
/// - **Time** is the server's: leases and TTLs are `clock_timestamp()` plus a duration, so
///   the clocks of the machines that call do not matter. (`clock_timestamp()`, not `now()`:
///   `now()` is the start of the transaction, and a statement that waited for a row lock
///   would hand out a lease that had partly run already.)
/// - **Fenced writes** (`complete`, `release`, `heartbeat`, saga log writes) apply only while
///   the token still owns the key; a saga log write holds the saga's record (`FOR SHARE`) in
///   the same statement, so no takeover can slip between the check and the write.
/// - **Recovery** scans with `FOR UPDATE SKIP LOCKED`, so several recovering processes do not
///   pick the saga that another one is claiming at that moment.
/// - **Schema**: the tables live in a schema of the database (`public` unless
///   [`schema`](PostgresStoreBuilder::schema) says otherwise). Connecting creates them, or
///   migrates them from an older version, in one transaction under
///   `pg_advisory_xact_lock`, so processes that start together do not race; a schema that is
///   in place is left alone (the store then needs no CREATE privilege; an upgrade needs the
///   tables' owner). An upgrade gives way to the statements of agents of the older idem that
///   are still writing: it waits for a lock they could be in a cycle with at most a tenth of
///   `deadlock_timeout` (50 ms at most), so that PostgreSQL cancels the upgrade, not their
///   call, as long as their sessions' `deadlock_timeout` is at least half a second (the
///   default is 1 s), and no operator changes the tables' schema meanwhile; it waits first,
///   up to `deadlock_timeout` and half a second per table, for a lock that vacuums, `ANALYZE`
///   and schema changes take and agents never do, so that an autovacuum in the way is
///   cancelled. A run that gave way runs again after a pause; `connect` fails after 30 runs
///   (26 s of pauses and the runs' waits: about 70 s behind an operator's `VACUUM` of one
///   table), naming the sessions in the way: PostgreSQL cancels none of a long transaction,
///   a dump, an operator's `VACUUM`, `ANALYZE` or `CREATE INDEX CONCURRENTLY`, an autovacuum
///   to prevent wraparound. See "Upgrading idem while agents of the older version run" in
///   `docs/postgres.md`. The SQL is shipped as
///   `src/store/postgres/schema.sql` in the crate for teams that migrate themselves.
/// - **Operators' queries** (the `idem` command) are one statement each too. A key prefix is
///   a range of the primary key; listings otherwise scan, as no index serves them alone (one
///   on `created_at` would cost every claim a write, for a query an operator runs by hand).
/// - **Connections**: a pool (deadpool-postgres) of 16 by default. TLS (feature `tls`, with
///   rustls) when the URL says `sslmode=require` or `verify-full`, or a CA is given
///   ([`tls_root_certificate`](PostgresStoreBuilder::tls_root_certificate)); see
///   [TLS](PostgresStoreBuilder#tls). For other pool settings build the pool yourself and
///   use [`PostgresStore::with_pool`].
/// - **Failover**: give every server in one URL with `target_session_attrs=read-write`
///   (`postgresql://idem@db1,db2/agents?target_session_attrs=read-write`): each new
///   connection goes to the server that takes writes, so after a standby is promoted the
///   store reconnects by itself. A write whose answer never came back (the connection cut
///   by the failover, the store's wait run out) is settled by reading its record back before
///   the store answers (see [`statement_timeout`](PostgresStoreBuilder::statement_timeout)).
///   What a failover can lose depends on the replication: see `docs/postgres.md`.
///
/// Expired results and dead claims (see [`Store::purge_expired`]) are purged in the
/// background every 1024 recorded results, and by
/// [`purge_expired`](Store::purge_expired). A caller waiting for a key held by another caller
/// of the same process is woken the moment that call finishes; one waiting on another
/// process looks again every 25 ms.
///
/// ```no_run
/// use idem_runtime::{set_default_store, store::PostgresStore};
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = PostgresStore::connect("postgres://idem@db.internal/agents").await?;
/// set_default_store(store);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// How to open a connection of the store's own (for reading a record back), when the
    /// store made the pool from a URL.
    direct: Option<Direct>,
    /// As many as the pool's connections: the connections of its own a store opens at once to
    /// read records back, so that a fleet's writes failing over together do not open one
    /// each (and reach the server's `max_connections`).
    read_backs: tokio::sync::Semaphore,
    /// How long a statement's answer is waited for (see `statement_timeout`).
    answer_within: Duration,
    /// How long a write whose answer was lost is settled for: the statement timeout.
    read_back_within: Duration,
    schema: String,
    sql: Statements,
    waiters: Waiters,
    recorded: AtomicU64,
    /// Whether claims start with the `SELECT` or the `INSERT`.
    first_look: FirstLook,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store on `pool` whose schema `schema` is in place.
    fn on(
        pool: Pool,
        schema: String,
        direct: Option<Direct>,
        waits: Waits,
        first_step: FirstStep,
    ) -> Self {
        let read_backs = tokio::sync::Semaphore::new(pool.status().max_size.max(1));
        PostgresStore {
            inner: Arc::new(Inner {
                sql: Statements::new(&quote_ident(&schema)),
                read_backs,
                pool,
                direct,
                answer_within: waits.answer_within,
                read_back_within: waits.read_back_within,
                schema,
                waiters: Waiters::default(),
                recorded: AtomicU64::new(0),
                first_look: FirstLook::new(first_step),
            }),
        }
    }

    /// The schema the store's tables live in.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::connect("postgres://idem@db.internal/agents").await?;
    /// assert_eq!(store.schema(), "public");
    /// # Ok(())
    /// # }
    /// ```
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// A connection from the pool.
    async fn client(&self, key: Option<&Key>) -> Result<deadpool_postgres::Object, Error> {
        self.inner.pool.get().await.map_err(|e| failed(key, &e))
    }

    /// Runs `statement` (prepared once per connection) and returns its rows: for a statement
    /// that writes nothing, or whose lost answer nothing settles (see [`Self::write`]).
    async fn query(
        &self,
        key: Option<&Key>,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.attempt(key, statement, params)
            .await
            .map_err(Unanswered::into_error)
    }

    /// Runs `statement` (prepared once per connection) and returns its rows, or why there
    /// are none: it failed, or its answer was lost.
    async fn attempt(
        &self,
        key: Option<&Key>,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Unanswered> {
        let client = self.client(key).await.map_err(Unanswered::Unsent)?;
        let work = async {
            let prepared = client.prepare_cached(statement).await?;
            client.query(&prepared, params).await
        };
        let answer = tokio::time::timeout(self.inner.answer_within, work).await;
        self.answered(client, key, answer)
    }

    /// Runs `statement` (prepared once per connection) and returns how many rows it changed.
    async fn execute(
        &self,
        key: Option<&Key>,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        let client = self.client(key).await?;
        let work = async {
            let prepared = client.prepare_cached(statement).await?;
            client.execute(&prepared, params).await
        };
        let answer = tokio::time::timeout(self.inner.answer_within, work).await;
        self.answered(client, key, answer)
            .map_err(Unanswered::into_error)
    }

    /// The answer of a statement run (prepared included: preparing waits for the table's
    /// locks too) under the store's wait. One whose answer did not come in time, or whose
    /// connection broke, fails the call as [`Unanswered::Lost`]: it may have been written
    /// (see [`Self::write`]). Its connection is closed, not given back to the pool (its next
    /// user would wait behind the statement).
    fn answered<T>(
        &self,
        client: deadpool_postgres::Object,
        key: Option<&Key>,
        answer: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Unanswered> {
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) if answer_lost(&error) => {
                drop(deadpool_postgres::Object::take(client));
                Err(Unanswered::Lost(failed(key, &error)))
            }
            Ok(Err(error)) => Err(Unanswered::Failed(failed(key, &error))),
            Err(_) => {
                drop(deadpool_postgres::Object::take(client));
                Err(Unanswered::Lost(Error::store(
                    "postgres",
                    key,
                    format!(
                        "no answer within {} s; the connection was closed",
                        self.inner.answer_within.as_secs_f64()
                    ),
                )))
            }
        }
    }

    /// Runs `statement`, which answers one row of one boolean.
    async fn ask(
        &self,
        key: &Key,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, Error> {
        boolean(key, &self.query(Some(key), statement, params).await?)
    }

    /// Deletes up to `limit` expired results, with the logs of the sagas they ended, in one
    /// statement; returns how many.
    async fn purge(&self, limit: u64) -> Result<u64, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(None, &self.inner.sql.purge, &[&limit]).await?;
        count(&rows)
    }

    /// Whether `token` still holds a live lease on `key`.
    async fn held(&self, key: &Key, token: FencingToken) -> Result<bool, Error> {
        self.ask(
            key,
            &self.inner.sql.held,
            &[&key.to_string(), &to_sql(token)],
        )
        .await
    }
}

/// How long the store waits for a statement's answer, and for the record of a write whose
/// answer was lost.
#[derive(Debug, Clone, Copy)]
struct Waits {
    answer_within: Duration,
    read_back_within: Duration,
}

/// The one boolean of a statement's one row.
fn boolean(key: &Key, rows: &[Row]) -> Result<bool, Error> {
    let row = rows
        .first()
        .ok_or_else(|| Error::store("postgres", Some(key), "the statement answered no row"))?;
    row.try_get(0).map_err(|e| failed(Some(key), &e))
}

/// A store error naming `key`, with what the driver said.
fn failed(key: Option<&Key>, error: &(dyn std::error::Error + 'static)) -> Error {
    Error::store("postgres", key, described(error))
}

/// An error and its causes, as one line. The driver's errors say little on their own
/// (`db error`): what the server said is their source. A certificate refused in a TLS
/// handshake is said first, in words that tell what to do.
fn described(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    #[cfg(feature = "tls")]
    if let Some(said) = crate::store::tls::explained(error, open::GIVE_CA) {
        text = format!("{said}: {text}");
    }
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = error.source();
    }
    text
}

/// A token as PostgreSQL's `bigint`. Tokens come from a `bigint` sequence, so every token
/// the store handed out fits; a larger one matches no record.
fn to_sql(token: FencingToken) -> i64 {
    i64::try_from(token).unwrap_or(-1)
}

/// A duration as the milliseconds the store adds to its clock.
fn duration_ms(duration: Duration) -> i64 {
    millis(duration).min(MAX_MS)
}

fn to_wall(ms: i64) -> SystemTime {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .unwrap_or(UNIX_EPOCH)
}

/// A limit as PostgreSQL's `bigint`.
fn to_bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn ownership(changed: bool) -> Ownership {
    if changed {
        Ownership::Held
    } else {
        Ownership::Lost
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn Store>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let key = request.key;
        let hex = key.to_string();
        let fingerprint = &request.fingerprint.as_bytes()[..];
        let lease = duration_ms(request.lease);
        let ttl = duration_ms(request.ttl);
        let review = request.on_stale == OnStale::Review;
        // A new key costs one INSERT when the claim writes first, a replay one SELECT when
        // it reads first: the handle starts the way its recent claims went (`FirstLook`). A
        // claim that started the wrong way takes the other step next.
        let mut read_first = !self.inner.first_look.write_first();
        for _ in 0..CLAIM_ATTEMPTS {
            let look = if read_first {
                let peeked = self.query(Some(key), &self.inner.sql.peek, &[&hex]).await?;
                peek_answer(peeked.first(), request)?
            } else {
                Peek::Insert
            };
            read_first = true;
            match look {
                Peek::Report(claim) => {
                    self.inner.first_look.found_record();
                    return Ok(claim);
                }
                Peek::Insert => {
                    let rows = self
                        .write(
                            key,
                            "the claim",
                            &self.inner.sql.insert,
                            &[&hex, &request.action, &fingerprint, &lease, &ttl],
                            Ok,
                            |found| readback::claimed(found, request.fingerprint),
                        )
                        .await?;
                    match inserted(&rows, key)? {
                        Some(token) => {
                            self.inner.first_look.found_none();
                            return Ok(Claim::Acquired {
                                token,
                                resumed: false,
                            });
                        }
                        None => continue, // a record is there: read it
                    }
                }
                Peek::Replace => self.inner.first_look.found_record(),
            }
            let rows = self
                .write(
                    key,
                    "the claim",
                    &self.inner.sql.claim,
                    &[&hex, &request.action, &fingerprint, &lease, &review, &ttl],
                    Ok,
                    |found| readback::claimed(found, request.fingerprint),
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| Error::store("postgres", Some(key), "the claim answered no row"))?;
            if let Attempt::Done(claim) = claim_answer(row, request)? {
                return Ok(claim);
            }
        }
        Err(Error::store(
            "postgres",
            Some(key),
            format!("the record kept changing under {CLAIM_ATTEMPTS} claims in a row"),
        ))
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let (kind, bytes) = match &outcome {
            StoredOutcome::Ok(bytes) => ("ok", bytes),
            StoredOutcome::Err(bytes) => ("err", bytes),
        };
        let held = self
            .write(
                key,
                "recording the result",
                &self.inner.sql.complete,
                &[
                    &key.to_string(),
                    &to_sql(token),
                    &kind,
                    &&bytes[..],
                    &duration_ms(ttl),
                ],
                |rows| boolean(key, &rows).map(ownership),
                |found| readback::completed(found, token),
            )
            .await?;
        self.inner.waiters.wake(key);
        if self.inner.recorded.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(error) = store.purge_expired().await {
                    tracing::warn!(target: "idem", %error, "purging expired results failed");
                }
            });
        }
        Ok(held)
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let released = self
            .write(
                key,
                "the release",
                &self.inner.sql.release,
                &[&key.to_string(), &to_sql(token)],
                |rows| Ok(ownership(rows.len() == 1)),
                |found| readback::released(found, token),
            )
            .await?;
        self.inner.waiters.wake(key);
        Ok(released)
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        self.write(
            key,
            "the heartbeat",
            &self.inner.sql.heartbeat,
            &[&key.to_string(), &to_sql(token), &duration_ms(lease)],
            |rows| Ok(ownership(rows.len() == 1)),
            |found| readback::renewed(found, token),
        )
        .await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        let still_held = self.held(key, token);
        self.inner.waiters.poll(key, at_most, still_held).await;
        Ok(())
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let rows = self
            .query(Some(key), &self.inner.sql.get, &[&key.to_string()])
            .await?;
        rows.first().map(|row| record(key, row)).transpose()
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        let mut purged = 0u64;
        loop {
            let count = self.purge(PURGE_BATCH).await?;
            purged += count;
            if count < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

#[async_trait]
impl SagaStore for PostgresStore {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let hex = saga.to_string();
        let fence = token;
        let token = to_sql(token);
        let written = |rows: Vec<Row>| Ok(ownership(!rows.is_empty()));
        let judge = |found: Option<(&Found, i64)>| readback::renewed(found, fence);
        match write {
            SagaWrite::Status { status, error } => {
                self.write(
                    saga,
                    "the saga log write",
                    &self.inner.sql.saga_status,
                    &[&hex, &token, &id, &status.as_str(), &error],
                    written,
                    judge,
                )
                .await
            }
            SagaWrite::Step(step) => {
                self.write(
                    saga,
                    "the saga log write",
                    &self.inner.sql.saga_step,
                    &[
                        &hex,
                        &token,
                        &id,
                        &i64::from(step.index),
                        &step.name,
                        &step.key.to_string(),
                        &step.irreversible,
                        &step.args,
                        &step.state.as_str(),
                        &step.output,
                        &step.error,
                    ],
                    written,
                    judge,
                )
                .await
            }
        }
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let rows = self
            .query(Some(saga), &self.inner.sql.read_saga, &[&saga.to_string()])
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        saga_log(saga, &rows).map(Some)
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(None, &self.inner.sql.stale_sagas, &[&limit])
            .await?;
        let what = "a saga log";
        let mut stale = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = column(row, 0, what, None)?;
            let id: String = column(row, 1, what, None)?;
            let fingerprint: Vec<u8> = column(row, 2, what, None)?;
            let parsed: Key = key
                .parse()
                .map_err(|_| corrupt(what, None, format!("the saga key {key:?}")))?;
            let fingerprint: [u8; 32] = fingerprint
                .try_into()
                .map_err(|_| corrupt(what, Some(&parsed), "the fingerprint is not 32 bytes"))?;
            stale.push(StaleSaga::new(
                parsed,
                id,
                Fingerprint::from_bytes(fingerprint),
            ));
        }
        Ok(stale)
    }
}

#[async_trait]
impl Inspect for PostgresStore {
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        if !query.key_prefix_can_match() {
            return Ok(Vec::new());
        }
        let prefix = query.key_prefix.as_deref();
        let kind = query.kind.map(RecordKind::as_str);
        let status = query.kind.map(|kind| kind.status().as_str());
        let rows = self
            .query(
                None,
                &self.inner.sql.list_records,
                &[
                    &kind,
                    &status,
                    &query.action,
                    &prefix,
                    &to_bigint(query.limit),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| record(&listed_key(row, 8, "a record")?, row))
            .collect()
    }

    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        let rows = self.query(None, &self.inner.sql.record_counts, &[]).await?;
        let what = "a record";
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let named: Option<String> = column(row, 1, what, None)?;
            let Some(kind) = named.as_deref().and_then(RecordKind::parse) else {
                // Name one record of the group: `get` says what is wrong with it.
                let problem = match named {
                    None => "completed with an unknown outcome".to_owned(),
                    Some(status) => format!("unknown status {status:?}"),
                };
                return Err(corrupt(what, Some(&listed_key(row, 3, what)?), problem));
            };
            let count: i64 = column(row, 2, what, None)?;
            counts.push(RecordCount::new(
                column(row, 0, what, None)?,
                kind,
                u64::try_from(count).unwrap_or(0),
            ));
        }
        // By action in Rust's order (the database's collation may differ), then by kind.
        counts.sort();
        Ok(counts)
    }

    async fn count_expired(&self) -> Result<u64, Error> {
        let rows = self.query(None, &self.inner.sql.count_expired, &[]).await?;
        count(&rows)
    }

    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        self.purge(u64::try_from(limit).unwrap_or(u64::MAX)).await
    }

    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let status = query.status.map(SagaStatus::as_str);
        let rows = self
            .query(
                None,
                &self.inner.sql.list_sagas,
                &[&status, &query.id, &to_bigint(query.limit)],
            )
            .await?;
        // The rows of one saga are together (the statement orders by saga, then step).
        fn saga_of(row: &Row) -> Option<&str> {
            row.try_get(14).ok()
        }
        rows.chunk_by(|a, b| saga_of(a) == saga_of(b))
            .map(|rows| saga_log(&listed_key(&rows[0], 14, "a saga log")?, rows))
            .collect()
    }

    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let deleted = self
            .execute(
                Some(key),
                &self.inner.sql.forget_result,
                &[&key.to_string(), &to_sql(token)],
            )
            .await?;
        Ok(ownership(deleted == 1))
    }

    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let resolved = self
            .execute(
                Some(saga),
                &self.inner.sql.resolve_saga,
                &[&saga.to_string(), &note],
            )
            .await?;
        Ok(resolved == 1)
    }
}
