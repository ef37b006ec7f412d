//! `PostgresStore`: records in PostgreSQL, for fleets of agents on many machines.
//!
//! Every operation on a record or a saga log is one SQL statement (a claim is one `INSERT …
//! ON CONFLICT … DO UPDATE … WHERE`), timed by the server's clock (`clock_timestamp()`), run
//! on a pooled connection (deadpool-postgres). The schema is in `postgres.sql`, next to this
//! file; the store creates or migrates it when it connects.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use crate::key::{Fingerprint, Key};
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Found, Ownership, Record, RecordCount, RecordKind,
    RecordQuery, SagaLog, SagaQuery, SagaStatus, SagaWrite, StaleSaga, Status, StepRecord,
    StepState, Store, StoredOutcome, Waiters,
};
use crate::{Error, OnStale};

/// The schema, as a file that teams who run their own migrations can apply themselves.
const SCHEMA_SQL: &str = include_str!("postgres.sql");

/// The version `postgres.sql` sets up; a schema with a smaller one is upgraded by running
/// the file again (2 added `idem_sagas.note`, 3 `idem_records.ttl_ms`), a schema with a
/// larger one is refused.
const SCHEMA_VERSION: i64 = 3;

/// Connections in the pool unless told otherwise: enough for a busy process, few enough that
/// a fleet of processes stays well under the server's `max_connections` (100 by default).
const DEFAULT_POOL_SIZE: usize = 16;

/// How long a caller waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
///   in place is left alone (the store then needs no CREATE privilege). The SQL is shipped
///   as `postgres.sql` for teams that migrate themselves.
/// - **Operators' queries** (the `idem` command) are one statement each too. A key prefix is
///   a range of the primary key; listings otherwise scan, as no index serves them alone (one
///   on `created_at` would cost every claim a write, for a query an operator runs by hand).
/// - **Connections**: a pool (deadpool-postgres) of 16 by default, without TLS; for TLS or
///   other pool settings build the pool yourself and use [`PostgresStore::with_pool`].
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
    schema: String,
    sql: Statements,
    waiters: Waiters,
    recorded: AtomicU64,
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

/// How to connect a [`PostgresStore`]: the schema its tables live in, the size of its pool.
///
/// ```no_run
/// use idem_runtime::store::PostgresStore;
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = PostgresStore::builder("postgres://idem@db.internal/agents")
///     .schema("idem")
///     .pool_size(32)
///     .connect()
///     .await?;
/// assert_eq!(store.schema(), "idem");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct PostgresStoreBuilder {
    source: Source,
    schema: String,
    pool_size: usize,
}

#[derive(Debug)]
enum Source {
    Url(String),
    Pool(Pool),
}

impl PostgresStoreBuilder {
    /// The schema of the database the store's tables live in (created if needed; `public`
    /// unless set). Stores on different schemas of one database are independent.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .schema("billing_agents")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// How many connections the pool opens at most (16 unless set). Has no effect on a pool
    /// given to [`PostgresStore::with_pool`], which keeps its own size.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .pool_size(4)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Opens the pool, creates or migrates the schema if needed, and returns the store.
    ///
    /// Fails with [`Error::Store`] if the URL is not a PostgreSQL connection string, the
    /// server cannot be reached, the schema cannot be created, or it was made by a newer
    /// idem.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<PostgresStore, Error> {
        let (pool, schema) = self.pool()?;
        migrate(&pool, &schema).await?;
        Ok(PostgresStore::on(pool, schema))
    }

    /// Opens the pool and returns the store, for an operator's look: changes nothing by
    /// connecting. The schema must exist with this idem's version (an older one is migrated
    /// by the first agent of this version that connects with
    /// [`connect`](PostgresStoreBuilder::connect)); nothing is created or migrated, so a
    /// mistyped schema name is an error rather than a new, empty store.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://ops@db.internal/agents")
    ///     .schema("idem")
    ///     .connect_existing()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_existing(self) -> Result<PostgresStore, Error> {
        let (pool, schema) = self.pool()?;
        let client = pool.get().await.map_err(|e| failed(None, &e))?;
        let found = version(&client, &schema).await.map_err(|e| {
            Error::store(
                "postgres",
                None,
                format!("cannot read the schema {schema:?}: {}", described(&e)),
            )
        })?;
        drop(client);
        match found {
            Some(SCHEMA_VERSION) => Ok(PostgresStore::on(pool, schema)),
            None => Err(Error::store(
                "postgres",
                None,
                format!("there is no idem schema {schema:?} in this database"),
            )),
            Some(newer) if newer > SCHEMA_VERSION => Err(newer_schema(&schema, newer)),
            Some(older) => Err(Error::store(
                "postgres",
                None,
                format!(
                    "the schema {schema:?} has version {older}, made by an older idem; the first \
                     agent of this version that connects migrates it (this idem knows {SCHEMA_VERSION})"
                ),
            )),
        }
    }

    /// The pool, and the schema name checked.
    fn pool(self) -> Result<(Pool, String), Error> {
        let schema = self.schema;
        if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
            return Err(Error::store(
                "postgres",
                None,
                format!("{schema:?} is not a schema name (1 to 63 bytes, no NUL)"),
            ));
        }
        let pool = match self.source {
            Source::Pool(pool) => pool,
            Source::Url(url) => open_pool(&url, self.pool_size)?,
        };
        Ok((pool, schema))
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// the `key=value` form), with the store's tables in the schema `public`, creating them
    /// if needed.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::connect("postgres://idem@db.internal/agents").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// A builder for a store on the database at `url`, to choose the schema or the pool size.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .schema("idem")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            source: Source::Url(url.into()),
            schema: "public".to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// A builder for a store on connections of a pool you built (deadpool-postgres 0.14):
    /// for TLS, or your own pool settings.
    ///
    /// ```no_run
    /// # async fn start(pool: deadpool_postgres::Pool) -> Result<(), idem_runtime::Error> {
    /// // `pool` made with deadpool_postgres::Config::create_pool, with a TLS connector.
    /// let store = idem_runtime::store::PostgresStore::with_pool(pool)
    ///     .schema("idem")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_pool(pool: Pool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            source: Source::Pool(pool),
            schema: "public".to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// A store on `pool` whose schema `schema` is in place.
    fn on(pool: Pool, schema: String) -> Self {
        PostgresStore {
            inner: Arc::new(Inner {
                sql: Statements::new(&quote_ident(&schema)),
                pool,
                schema,
                waiters: Waiters::default(),
                recorded: AtomicU64::new(0),
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

    /// A connection, and `statement` prepared on it (once per connection).
    async fn prepared(
        &self,
        key: Option<&Key>,
        statement: &str,
    ) -> Result<(deadpool_postgres::Object, tokio_postgres::Statement), Error> {
        let client = self.client(key).await?;
        let prepared = client
            .prepare_cached(statement)
            .await
            .map_err(|e| failed(key, &e))?;
        Ok((client, prepared))
    }

    /// Runs `statement` and returns its rows.
    async fn query(
        &self,
        key: Option<&Key>,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let (client, prepared) = self.prepared(key, statement).await?;
        client
            .query(&prepared, params)
            .await
            .map_err(|e| failed(key, &e))
    }

    /// Runs `statement` and returns how many rows it changed.
    async fn execute(
        &self,
        key: Option<&Key>,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        let (client, prepared) = self.prepared(key, statement).await?;
        client
            .execute(&prepared, params)
            .await
            .map_err(|e| failed(key, &e))
    }

    /// Runs `statement`, which answers one row of one boolean.
    async fn ask(
        &self,
        key: &Key,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, Error> {
        let rows = self.query(Some(key), statement, params).await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::store("postgres", Some(key), "the statement answered no row"))?;
        row.try_get(0).map_err(|e| failed(Some(key), &e))
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

/// The pool for `url`, with the store's defaults.
fn open_pool(url: &str, size: usize) -> Result<Pool, Error> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::store(
            "postgres",
            None,
            format!("not a PostgreSQL connection string: {e}"),
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("idem");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| failed(None, &e))
}

/// Creates the schema, or migrates it to this version, unless it is in place: in one
/// transaction that first takes an advisory lock named after the schema, so that processes
/// connecting at once take turns (`CREATE … IF NOT EXISTS` alone still races in PostgreSQL).
async fn migrate(pool: &Pool, schema: &str) -> Result<(), Error> {
    let cannot = |e: tokio_postgres::Error| {
        Error::store(
            "postgres",
            None,
            format!("cannot set up the schema {schema:?}: {}", described(&e)),
        )
    };
    let mut client = pool.get().await.map_err(|e| failed(None, &e))?;
    if version(&client, schema).await.map_err(cannot)? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    let transaction = client.transaction().await.map_err(cannot)?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('idem'), hashtext($1::text))",
            &[&schema],
        )
        .await
        .map_err(cannot)?;
    match version(&transaction, schema).await.map_err(cannot)? {
        Some(found) if found > SCHEMA_VERSION => return Err(newer_schema(schema, found)),
        Some(SCHEMA_VERSION) => {}
        older => {
            let quoted = quote_ident(schema);
            transaction
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {quoted}; SET LOCAL search_path TO {quoted};\n{SCHEMA_SQL}"
                ))
                .await
                .map_err(cannot)?;
            tracing::info!(
                target: "idem",
                schema,
                from = older.unwrap_or(0),
                to = SCHEMA_VERSION,
                "created or migrated the PostgreSQL schema"
            );
        }
    }
    transaction.commit().await.map_err(cannot)
}

/// Why a schema of a newer idem is refused: this version would not know what that one writes.
fn newer_schema(schema: &str, found: i64) -> Error {
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
async fn version(
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

/// A store error naming `key`, with what the driver said.
fn failed(key: Option<&Key>, error: &dyn std::error::Error) -> Error {
    Error::store("postgres", key, described(error))
}

/// An error and its causes, as one line. The driver's errors say little on their own
/// (`db error`): what the server said is their source.
fn described(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
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

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a quoted SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A `timestamptz` expression as milliseconds since the Unix epoch (`NULL` stays `NULL`,
/// `infinity` is `i64::MAX` and `-infinity` `i64::MIN`).
fn epoch_ms(expression: &str) -> String {
    format!(
        "CASE WHEN {expression} IS NULL THEN NULL \
              WHEN isfinite({expression}) THEN floor(extract(epoch FROM {expression}) * 1000)::bigint \
              WHEN {expression} > 'epoch' THEN 9223372036854775807 \
              ELSE -9223372036854775808 END"
    )
}

/// The statements, written once for the store's schema.
struct Statements {
    claim: String,
    get: String,
    held: String,
    complete: String,
    release: String,
    heartbeat: String,
    purge: String,
    saga_status: String,
    saga_step: String,
    read_saga: String,
    stale_sagas: String,
    list_records: String,
    record_counts: String,
    count_expired: String,
    list_sagas: String,
    resolve_saga: String,
}

impl Statements {
    fn new(s: &str) -> Self {
        let sequence = quote_literal(&format!("{s}.idem_fencing_token"));
        let now_ms = epoch_ms("clock_timestamp()");
        // A result whose TTL ran out: what a purge deletes (and counts) and a claim replaces.
        let expired =
            |r: &str| format!("{r}.status = 'completed' AND {r}.expires_at <= clock_timestamp()");
        // What a purge deletes (and counts), the rule of `Found::is_purgeable`: an expired
        // result, or a claim whose lease ended and the action's TTL after it (NULL in claims
        // made before version 3: kept), unless it has a saga log.
        let purgeable = |r: &str| {
            format!(
                "({expired}) \
                 OR ({r}.status = 'in_progress' AND {r}.expires_at <= clock_timestamp() \
                     AND {r}.expires_at + {r}.ttl_ms * interval '1 millisecond' <= clock_timestamp() \
                     AND NOT EXISTS (SELECT 1 FROM {s}.idem_sagas AS g WHERE g.key = {r}.key))",
                expired = expired(r),
            )
        };
        // A record whose owner may be replaced by the claim of payload `fingerprint`: an
        // expired result, or a claim of the same payload whose lease ran out.
        let claimable = |r: &str, fingerprint: &str| {
            format!(
                "({expired}) \
                 OR ({r}.status = 'in_progress' AND {r}.expires_at <= clock_timestamp() \
                     AND {r}.fingerprint = {fingerprint})",
                expired = expired(r),
            )
        };
        // The record's `RecordKind` by name; NULL for a completed record with an unknown
        // outcome, which reading it reports as corrupt.
        let kind = |r: &str| {
            format!(
                "CASE WHEN {r}.status <> 'completed' THEN {r}.status \
                      WHEN {r}.outcome = 'ok' THEN 'completed' \
                      WHEN {r}.outcome = 'err' THEN 'failed' END"
            )
        };
        // A record's columns as `record` reads them.
        let record_columns = |r: &str| {
            format!(
                "{r}.action, {r}.status, {r}.token, {r}.fingerprint, {r}.outcome, {r}.result, \
                 {created}, {expires}",
                created = epoch_ms(&format!("{r}.created_at")),
                expires = epoch_ms(&format!("{r}.expires_at")),
            )
        };
        // A saga log's columns, one row per step, as `saga_log` reads them.
        let saga_columns = format!(
            "g.id, g.status, g.error, {updated}, g.note,
             t.idx, t.name, t.key, t.irreversible, t.args, t.state, t.output, t.error",
            updated = epoch_ms("g.updated_at"),
        );
        // What the claim does to a record it may replace: take the place of a dead owner
        // under a new token, or (on_stale = review, $5) park the key for an operator, or
        // start afresh over an expired result. The token of a takeover is drawn here, after
        // the row is locked, so it is larger than any the record had.
        let claim = format!(
            "WITH cur AS (
                 SELECT status, token, fingerprint, outcome, result,
                        {expires_ms} AS expires_ms,
                        coalesce({cur_claimable}, false) AS claimable
                 FROM {s}.idem_records AS rec WHERE key = $1::text
             ),
             claimed AS (
                 INSERT INTO {s}.idem_records AS r
                     (key, action, status, token, fingerprint, created_at, expires_at, takeovers, ttl_ms)
                 SELECT $1::text, $2::text, 'in_progress', nextval({sequence}), $3::bytea,
                        clock_timestamp(), clock_timestamp() + $4::bigint * interval '1 millisecond', 0,
                        $6::bigint
                 WHERE NOT EXISTS (SELECT 1 FROM cur WHERE NOT cur.claimable)
                 ON CONFLICT (key) DO UPDATE SET
                     status      = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                        THEN 'needs_review' ELSE 'in_progress' END,
                     token       = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                        THEN r.token ELSE nextval({sequence}) END,
                     action      = CASE WHEN r.status = 'completed' THEN excluded.action ELSE r.action END,
                     fingerprint = excluded.fingerprint,
                     outcome     = NULL,
                     result      = NULL,
                     created_at  = CASE WHEN r.status = 'completed' THEN excluded.created_at ELSE r.created_at END,
                     expires_at  = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                        THEN NULL ELSE excluded.expires_at END,
                     takeovers   = CASE WHEN r.status = 'completed' THEN 0
                                        WHEN $5::boolean THEN r.takeovers
                                        ELSE r.takeovers + 1 END,
                     ttl_ms      = excluded.ttl_ms
                 WHERE {r_claimable}
                 RETURNING r.status, r.token, r.takeovers
             )
             SELECT c.status, c.token, c.takeovers,
                    f.status, f.token, f.fingerprint, f.outcome, f.result, f.expires_ms, f.claimable,
                    {now_ms}
             FROM (VALUES (1)) AS one (x)
             LEFT JOIN claimed c ON true
             LEFT JOIN cur f ON true",
            expires_ms = epoch_ms("expires_at"),
            cur_claimable = claimable("rec", "$3::bytea"),
            r_claimable = claimable("r", "excluded.fingerprint"),
        );
        Statements {
            claim,
            get: format!(
                "SELECT {columns} FROM {s}.idem_records AS r WHERE r.key = $1::text",
                columns = record_columns("r"),
            ),
            held: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.idem_records
                                WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
                                  AND expires_at > clock_timestamp())"
            ),
            // A second `complete` by the owner whose first answer was lost finds its own
            // result: held, and the first result stays.
            complete: format!(
                "WITH done AS (
                     UPDATE {s}.idem_records
                     SET status = 'completed', outcome = $3::text, result = $4::bytea,
                         expires_at = clock_timestamp() + $5::bigint * interval '1 millisecond'
                     WHERE key = $1::text AND token = $2::bigint
                       AND status IN ('in_progress', 'needs_review')
                     RETURNING 1
                 )
                 SELECT EXISTS (SELECT 1 FROM done)
                     OR EXISTS (SELECT 1 FROM {s}.idem_records
                                WHERE key = $1::text AND token = $2::bigint AND status = 'completed')"
            ),
            release: format!(
                "DELETE FROM {s}.idem_records
                 WHERE key = $1::text AND token = $2::bigint AND status IN ('in_progress', 'needs_review')"
            ),
            heartbeat: format!(
                "UPDATE {s}.idem_records
                 SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
                 WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'"
            ),
            // Rows that a claim is replacing at this moment are skipped (and left to it).
            purge: format!(
                "WITH gone AS (
                     DELETE FROM {s}.idem_records
                     WHERE key IN (SELECT r.key FROM {s}.idem_records AS r
                                   WHERE {purgeable}
                                   LIMIT $1::bigint
                                   FOR UPDATE SKIP LOCKED)
                     RETURNING key
                 ),
                 steps AS (DELETE FROM {s}.idem_saga_steps WHERE saga IN (SELECT key FROM gone)),
                 sagas AS (DELETE FROM {s}.idem_sagas WHERE key IN (SELECT key FROM gone))
                 SELECT count(*) FROM gone",
                purgeable = purgeable("r"),
            ),
            count_expired: format!(
                "SELECT count(*) FROM {s}.idem_records AS r WHERE {purgeable}",
                purgeable = purgeable("r"),
            ),
            // The saga's record is locked (FOR SHARE) by the statement that writes the log:
            // a takeover waits for the write, and a write after a takeover finds no record.
            saga_status: format!(
                "WITH held AS (
                     SELECT key FROM {s}.idem_records
                     WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
                     FOR SHARE
                 )
                 INSERT INTO {s}.idem_sagas AS g (key, id, status, error, updated_at)
                 SELECT key, $3::text, $4::text, $5::text, clock_timestamp() FROM held
                 ON CONFLICT (key) DO UPDATE SET
                     status = excluded.status, error = excluded.error, updated_at = excluded.updated_at
                 RETURNING 1"
            ),
            saga_step: format!(
                "WITH held AS (
                     SELECT key FROM {s}.idem_records
                     WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
                     FOR SHARE
                 ),
                 head AS (
                     INSERT INTO {s}.idem_sagas AS g (key, id, status, error, updated_at)
                     SELECT key, $3::text, 'running', NULL, clock_timestamp() FROM held
                     ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at
                     RETURNING g.key
                 )
                 INSERT INTO {s}.idem_saga_steps AS t
                     (saga, idx, name, key, irreversible, args, state, output, error)
                 SELECT key, $4::bigint, $5::text, $6::text, $7::boolean, $8::bytea, $9::text,
                        $10::bytea, $11::text
                 FROM head
                 ON CONFLICT (saga, idx) DO UPDATE SET
                     name = excluded.name, key = excluded.key, irreversible = excluded.irreversible,
                     args = excluded.args, state = excluded.state, output = excluded.output,
                     error = excluded.error
                 RETURNING 1"
            ),
            read_saga: format!(
                "SELECT {saga_columns}
                 FROM {s}.idem_sagas g LEFT JOIN {s}.idem_saga_steps t ON t.saga = g.key
                 WHERE g.key = $1::text
                 ORDER BY t.idx"
            ),
            // Sagas that another process is claiming right now are skipped: their rows are
            // locked by that claim.
            stale_sagas: format!(
                "SELECT g.key, g.id, r.fingerprint
                 FROM {s}.idem_sagas g JOIN {s}.idem_records r ON r.key = g.key
                 WHERE g.status IN ('running', 'compensating')
                   AND r.status = 'in_progress' AND r.expires_at <= clock_timestamp()
                 ORDER BY r.expires_at
                 LIMIT $1::bigint
                 FOR UPDATE OF r SKIP LOCKED"
            ),
            // $1 kind, $2 the status of that kind, $3 action, $4 key prefix (hex digits only:
            // the range of keys that start with it), $5 limit; NULL filters match all.
            // Ties (by the microsecond) go by key, in byte order as `Key` sorts.
            list_records: format!(
                "SELECT {columns}, r.key
                 FROM {s}.idem_records AS r
                 WHERE ($1::text IS NULL OR (r.status = $2::text AND ({kind}) = $1::text))
                   AND ($3::text IS NULL OR r.action = $3::text)
                   AND ($4::text IS NULL OR (r.key >= $4::text AND r.key < ($4::text || 'g')))
                 ORDER BY r.created_at DESC, r.key COLLATE \"C\"
                 LIMIT $5::bigint",
                columns = record_columns("r"),
                kind = kind("r"),
            ),
            // One key of each group, to name in an error if the group's kind is corrupt.
            record_counts: format!(
                "SELECT r.action, {kind}, count(*), min(r.key)
                 FROM {s}.idem_records AS r
                 GROUP BY 1, 2",
                kind = kind("r"),
            ),
            // $1 status, $2 id (NULL: any), $3 limit: on the sagas, then their steps joined.
            list_sagas: format!(
                "SELECT {saga_columns}, g.key
                 FROM (SELECT key, id, status, error, updated_at, note
                       FROM {s}.idem_sagas
                       WHERE ($1::text IS NULL OR status = $1::text)
                         AND ($2::text IS NULL OR id = $2::text)
                       ORDER BY updated_at DESC, id COLLATE \"C\", key COLLATE \"C\"
                       LIMIT $3::bigint) AS g
                 LEFT JOIN {s}.idem_saga_steps t ON t.saga = g.key
                 ORDER BY g.updated_at DESC, g.id COLLATE \"C\", g.key COLLATE \"C\", t.idx"
            ),
            resolve_saga: format!(
                "UPDATE {s}.idem_sagas
                 SET status = 'resolved', note = $2::text, updated_at = clock_timestamp()
                 WHERE key = $1::text AND status = 'needs_attention'"
            ),
        }
    }
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

/// Reads a column, naming the key when the row is not of the expected shape.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
    key: Option<&Key>,
) -> Result<T, Error> {
    row.try_get(index).map_err(|e| Error::codec(what, key, e))
}

/// A codec error for a row that is not what idem writes ("corrupt record: …").
fn corrupt(what: &'static str, key: Option<&Key>, problem: impl fmt::Display) -> Error {
    let noun = what.strip_prefix("a ").unwrap_or(what);
    Error::codec(what, key, format!("corrupt {noun}: {problem}"))
}

/// A record's fields as read from the table, checked: a corrupt or foreign row is an error
/// naming the key, never a panic.
fn found(
    key: &Key,
    status: &str,
    token: i64,
    fingerprint: &[u8],
    outcome: Option<&str>,
    result: Option<Vec<u8>>,
    expires_at_ms: Option<i64>,
) -> Result<(Found, Option<StoredOutcome>), Error> {
    let bad = |problem: &str| corrupt("a record", Some(key), problem);
    let status = Status::parse(status).ok_or_else(|| bad("unknown status"))?;
    let fingerprint: [u8; 32] = fingerprint
        .try_into()
        .map_err(|_| bad("the fingerprint is not 32 bytes"))?;
    let outcome = match (outcome, result) {
        (None, _) => None,
        (Some("ok"), Some(bytes)) => Some(StoredOutcome::Ok(bytes)),
        (Some("err"), Some(bytes)) => Some(StoredOutcome::Err(bytes)),
        _ => return Err(bad("unknown outcome")),
    };
    if status == Status::Completed && outcome.is_none() {
        return Err(bad("completed without a result"));
    }
    let token = FencingToken::try_from(token).map_err(|_| bad("negative token"))?;
    Ok((
        Found {
            status,
            token,
            fingerprint: Fingerprint::from_bytes(fingerprint),
            expires_at_ms,
            // Not read: the purge's rule runs in SQL (`purgeable`).
            claim_ttl_ms: None,
        },
        outcome,
    ))
}

/// A record from a row of the `get` or `list_records` statement (its first eight columns).
fn record(key: &Key, row: &Row) -> Result<Record, Error> {
    let (what, some_key) = ("a record", Some(key));
    let action: String = column(row, 0, what, some_key)?;
    let status: String = column(row, 1, what, some_key)?;
    let token: i64 = column(row, 2, what, some_key)?;
    let fingerprint: Vec<u8> = column(row, 3, what, some_key)?;
    let outcome: Option<String> = column(row, 4, what, some_key)?;
    let result: Option<Vec<u8>> = column(row, 5, what, some_key)?;
    let created_at_ms: i64 = column(row, 6, what, some_key)?;
    let expires_at_ms: Option<i64> = column(row, 7, what, some_key)?;
    let (found, outcome) = found(
        key,
        &status,
        token,
        &fingerprint,
        outcome.as_deref(),
        result,
        expires_at_ms,
    )?;
    Ok(Record {
        key: *key,
        action,
        status: found.status,
        token: found.token,
        fingerprint: found.fingerprint,
        outcome,
        created_at: to_wall(created_at_ms),
        expires_at: found.expires_at_ms.map(to_wall),
    })
}

/// The key in column `index` of a row of a listing, which names every later error.
fn listed_key(row: &Row, index: usize, what: &'static str) -> Result<Key, Error> {
    let hex: String = column(row, index, what, None)?;
    hex.parse()
        .map_err(|_| corrupt(what, None, format!("the key {hex:?}")))
}

/// The log of the saga `saga` from its rows of the `read_saga` or `list_sagas` statement
/// (not empty): the log's head in every row, and a step in each, unless the log has none yet
/// (one row, without a step).
///
/// ```text
/// id       | status          | error | updated | note | idx  | name   | … | error
/// order-42 | needs_attention | "…"   | 1718…   | NULL | 0    | charge | … | NULL
/// order-42 | needs_attention | "…"   | 1718…   | NULL | 1    | ship   | … | "…"
/// ```
fn saga_log(saga: &Key, rows: &[Row]) -> Result<SagaLog, Error> {
    let (what, key) = ("a saga log", Some(saga));
    let head = rows
        .first()
        .ok_or_else(|| Error::store("postgres", key, "the saga log has no row"))?;
    let id: String = column(head, 0, what, key)?;
    let status: String = column(head, 1, what, key)?;
    let error: Option<String> = column(head, 2, what, key)?;
    let updated_at_ms: i64 = column(head, 3, what, key)?;
    let note: Option<String> = column(head, 4, what, key)?;
    let status = SagaStatus::parse(&status)
        .ok_or_else(|| corrupt(what, key, format!("unknown status {status:?}")))?;
    let mut steps = Vec::new();
    for row in rows {
        let Some(index) = column::<Option<i64>>(row, 5, what, key)? else {
            continue; // A log with no steps yet.
        };
        let step_key: String = column(row, 7, what, key)?;
        let state: String = column(row, 10, what, key)?;
        steps.push(StepRecord {
            index: u32::try_from(index)
                .map_err(|_| corrupt(what, key, format!("step index {index}")))?,
            name: column(row, 6, what, key)?,
            key: step_key
                .parse()
                .map_err(|_| corrupt(what, key, format!("the key of step {index}")))?,
            irreversible: column(row, 8, what, key)?,
            args: column(row, 9, what, key)?,
            state: StepState::parse(&state).ok_or_else(|| {
                corrupt(
                    what,
                    key,
                    format!("unknown state {state:?} of step {index}"),
                )
            })?,
            output: column(row, 11, what, key)?,
            error: column(row, 12, what, key)?,
        });
    }
    Ok(SagaLog::new(*saga, id, status, error, steps, to_wall(updated_at_ms)).with_note(note))
}

/// A limit as PostgreSQL's `bigint`.
fn to_bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The answer of a statement that counts: one row of one `bigint`.
fn count(rows: &[Row]) -> Result<u64, Error> {
    let row = rows
        .first()
        .ok_or_else(|| Error::store("postgres", None, "the count answered no row"))?;
    let count: i64 = row.try_get(0).map_err(|e| failed(None, &e))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// What one run of the claim statement says.
enum Attempt {
    Done(Claim),
    /// The record changed between the statement's snapshot and its write: run it again.
    Raced,
}

fn claim_answer(row: &Row, request: &ClaimRequest<'_>) -> Result<Attempt, Error> {
    let key = Some(request.key);
    let what = "a record";
    if let Some(status) = column::<Option<String>>(row, 0, what, key)? {
        let token: i64 = column(row, 1, what, key)?;
        let takeovers: i32 = column(row, 2, what, key)?;
        let token =
            FencingToken::try_from(token).map_err(|_| corrupt(what, key, "negative token"))?;
        return Ok(Attempt::Done(match status.as_str() {
            "in_progress" => Claim::Acquired {
                token,
                resumed: takeovers > 0,
            },
            "needs_review" => Claim::NeedsReview {
                fingerprint: *request.fingerprint,
            },
            other => return Err(corrupt(what, key, format!("claimed as {other:?}"))),
        }));
    }
    let Some(status) = column::<Option<String>>(row, 3, what, key)? else {
        // No record in the snapshot, and the insert met one made since.
        return Ok(Attempt::Raced);
    };
    if column::<Option<bool>>(row, 9, what, key)? == Some(true) {
        // The snapshot's record could be replaced, but the record the write met could not.
        return Ok(Attempt::Raced);
    }
    let token: Option<i64> = column(row, 4, what, key)?;
    let fingerprint: Option<Vec<u8>> = column(row, 5, what, key)?;
    let outcome: Option<String> = column(row, 6, what, key)?;
    let result: Option<Vec<u8>> = column(row, 7, what, key)?;
    let expires_at_ms: Option<i64> = column(row, 8, what, key)?;
    let now_ms: i64 = column(row, 10, what, key)?;
    let (found, outcome) = found(
        request.key,
        &status,
        token.ok_or_else(|| corrupt(what, key, "no token"))?,
        &fingerprint.ok_or_else(|| corrupt(what, key, "no fingerprint"))?,
        outcome.as_deref(),
        result,
        expires_at_ms,
    )?;
    Ok(Attempt::Done(found.report(outcome, now_ms)))
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
        for _ in 0..CLAIM_ATTEMPTS {
            let rows = self
                .query(
                    Some(key),
                    &self.inner.sql.claim,
                    &[&hex, &request.action, &fingerprint, &lease, &review, &ttl],
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
            .ask(
                key,
                &self.inner.sql.complete,
                &[
                    &key.to_string(),
                    &to_sql(token),
                    &kind,
                    &&bytes[..],
                    &duration_ms(ttl),
                ],
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
        Ok(ownership(held))
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let deleted = self
            .execute(
                Some(key),
                &self.inner.sql.release,
                &[&key.to_string(), &to_sql(token)],
            )
            .await?;
        self.inner.waiters.wake(key);
        Ok(ownership(deleted == 1))
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        let renewed = self
            .execute(
                Some(key),
                &self.inner.sql.heartbeat,
                &[&key.to_string(), &to_sql(token), &duration_ms(lease)],
            )
            .await?;
        Ok(ownership(renewed == 1))
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

    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let hex = saga.to_string();
        let token = to_sql(token);
        let written = match write {
            SagaWrite::Status { status, error } => {
                self.query(
                    Some(saga),
                    &self.inner.sql.saga_status,
                    &[&hex, &token, &id, &status.as_str(), &error],
                )
                .await?
            }
            SagaWrite::Step(step) => {
                self.query(
                    Some(saga),
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
                )
                .await?
            }
        };
        Ok(ownership(!written.is_empty()))
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
            row.try_get(13).ok()
        }
        rows.chunk_by(|a, b| saga_of(a) == saga_of(b))
            .map(|rows| saga_log(&listed_key(&rows[0], 13, "a saga log")?, rows))
            .collect()
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

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use super::*;
    use crate::conformance::servers::PostgresServer;

    async fn admin(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("a plain connection");
        tokio::spawn(connection);
        client
    }

    async fn version_of(admin: &tokio_postgres::Client, schema: &str) -> i64 {
        admin
            .query_one(
                &format!("SELECT value FROM {schema}.idem_meta WHERE name = 'schema_version'"),
                &[],
            )
            .await
            .expect("the version row")
            .get(0)
    }

    /// A schema of version 1 (before `idem_sagas.note`) is upgraded in place by the next
    /// store that connects: a saga that needed attention then is kept, and can be resolved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_schema_is_upgraded_in_place() {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let schema = "upgraded_from_1";
        let admin = admin(&server.url()).await;
        let saga = Key::from_bytes([7; 32]);
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema};
                 {SCHEMA_SQL}
                 ALTER TABLE idem_sagas DROP COLUMN note;
                 UPDATE idem_meta SET value = 1;
                 INSERT INTO idem_sagas (key, id, status, error, updated_at)
                 VALUES ('{saga}', 'order-1', 'needs_attention', 'refund failed', now());"
            ))
            .await
            .expect("a schema of version 1");

        let store = PostgresStore::builder(server.url())
            .schema(schema)
            .connect()
            .await
            .expect("connect and upgrade");
        assert_eq!(version_of(&admin, schema).await, SCHEMA_VERSION);
        assert!(store
            .resolve_saga(&saga, "refunded by hand")
            .await
            .expect("resolve"));
        let log = store
            .read_saga(&saga)
            .await
            .expect("read")
            .expect("the log");
        assert_eq!(log.status, SagaStatus::Resolved);
        assert_eq!(log.note.as_deref(), Some("refunded by hand"));
        assert_eq!(log.error.as_deref(), Some("refund failed"));
    }

    /// `postgres.sql` can be run again, as teams that migrate themselves may: on a schema in
    /// place it changes nothing, and it never lowers the version of one a newer idem made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_schema_file_runs_again_and_never_lowers_the_version() {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let schema = "run_again";
        drop(
            PostgresStore::builder(server.url())
                .schema(schema)
                .connect()
                .await
                .expect("connect"),
        );
        let admin = admin(&server.url()).await;
        let run_again = format!("SET search_path TO {schema};\n{SCHEMA_SQL}");
        admin.batch_execute(&run_again).await.expect("run again");
        assert_eq!(version_of(&admin, schema).await, SCHEMA_VERSION);
        admin
            .batch_execute(&format!(
                "UPDATE {schema}.idem_meta SET value = 99 WHERE name = 'schema_version'"
            ))
            .await
            .expect("a newer version");
        admin.batch_execute(&run_again).await.expect("run again");
        assert_eq!(version_of(&admin, schema).await, 99);
    }
}
