//! Connecting: the builder, the pool, and the schema created, migrated or checked.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::Error;

use super::{described, failed, PostgresStore, Waits, SCHEMA_VERSION};

/// The schema, as a file that teams who run their own migrations can apply themselves.
pub(super) const SCHEMA_SQL: &str = include_str!("schema.sql");

/// Connections in the pool unless told otherwise: enough for a busy process, few enough that
/// a fleet of processes stays well under the server's `max_connections` (100 by default).
const DEFAULT_POOL_SIZE: usize = 16;

/// How long a caller waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement may run unless told otherwise: far longer than any of the store's
/// statements takes (milliseconds), short enough that a stuck server fails a call instead
/// of holding it forever.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much longer than the statement timeout the store waits for an answer: the server's
/// own cancellation comes first, and this covers what it does not (a commit waiting for a
/// synchronous standby, a connection whose packets stopped arriving).
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// How to connect a [`PostgresStore`]: the schema its tables live in, the size of its pool,
/// the statement timeout.
///
/// For a primary with standbys, give every server in the URL and ask for the one that takes
/// writes, `target_session_attrs=read-write`: each new connection tries the hosts in turn and
/// skips those that are down or read-only, so that after a standby is promoted the store
/// reconnects to it by itself (see `docs/postgres.md` for the replication settings that make
/// a failover lose nothing).
///
/// ```no_run
/// use idem_runtime::store::PostgresStore;
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = PostgresStore::builder(
///     "postgresql://idem@db1.internal:5432,db2.internal:5432/agents?target_session_attrs=read-write",
/// )
/// .statement_timeout(std::time::Duration::from_secs(5))
/// .connect()
/// .await?;
/// # Ok(())
/// # }
/// ```
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
    statement_timeout: Duration,
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

    /// How long one of the store's statements may run (30 s unless set): the server cancels
    /// it after that (`statement_timeout`, set on the store's own connections), and the
    /// store gives up waiting for its answer 5 s later in any case, closing the connection
    /// (a commit waiting for a synchronous standby that is gone is not covered by the
    /// server's timeout).
    ///
    /// A statement the server refused wrote nothing: the call fails with [`Error::Store`].
    /// A write whose answer never came back (the store's wait ran out, or the connection was
    /// cut after the statement was sent: a failover, a backend terminated while its commit
    /// waited for a standby) may have committed. Before it answers, the store reads the
    /// record back on a new connection, trying again for up to this timeout (long enough to
    /// wait out a failover), and answers as the record says: a result recorded under the
    /// call's token is recorded, a release made is made, a write not made is run again (it
    /// is fenced by the token, so that is safe), a key the token no longer holds is
    /// [`Ownership::Lost`](crate::store::Ownership::Lost). A claim whose answer was lost
    /// cannot be told from a duplicate's claim of the same payload (only the answer had its
    /// token): if the record holds such a live claim, the call fails with [`Error::Store`]
    /// without running its body, and a claim of its own runs out with its lease. If the
    /// record cannot be read before this timeout runs out, the write fails with
    /// [`Error::Store`] naming the key and saying that it may have been made.
    ///
    /// On a pool given to [`PostgresStore::with_pool`] only the store's own wait applies: set
    /// `statement_timeout` in that pool's configuration. Records are read back on
    /// connections of that pool.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .statement_timeout(std::time::Duration::from_secs(5))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
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
        let waits = self.waits();
        let (pool, schema, direct) = self.pool()?;
        migrate(&pool, &schema).await?;
        Ok(PostgresStore::on(pool, schema, direct, waits))
    }

    /// How long the store waits for a statement's answer, and for the record of a write
    /// whose answer was lost.
    fn waits(&self) -> Waits {
        Waits {
            answer_within: self.statement_timeout.saturating_add(ANSWER_MARGIN),
            read_back_within: self.statement_timeout,
        }
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
        let waits = self.waits();
        let (pool, schema, direct) = self.pool()?;
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
            Some(SCHEMA_VERSION) => Ok(PostgresStore::on(pool, schema, direct, waits)),
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

    /// The pool, the schema name checked, and the configuration of the pool's connections
    /// when the store makes the pool itself.
    fn pool(self) -> Result<(Pool, String, Option<tokio_postgres::Config>), Error> {
        let schema = self.schema;
        if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
            return Err(Error::store(
                "postgres",
                None,
                format!("{schema:?} is not a schema name (1 to 63 bytes, no NUL)"),
            ));
        }
        let (pool, direct) = match self.source {
            Source::Pool(pool) => (pool, None),
            Source::Url(url) => {
                let config = pool_config(&url, self.statement_timeout)?;
                (open_pool(config.clone(), self.pool_size)?, Some(config))
            }
        };
        Ok((pool, schema, direct))
    }
}

/// The connections' configuration for `url`, with the store's defaults, and
/// `statement_timeout` unless the URL's `options` set one.
fn pool_config(url: &str, statement_timeout: Duration) -> Result<tokio_postgres::Config, Error> {
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
    let options = config.get_options().unwrap_or_default().to_owned();
    if !options.contains("statement_timeout") {
        let ms = statement_timeout.as_millis().max(1);
        config.options(format!("{options} -c statement_timeout={ms}").trim());
    }
    Ok(config)
}

/// A pool of `size` connections made with `config`.
fn open_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, Error> {
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

/// `name` as a quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// the `key=value` form), with the store's tables in the schema `public`, creating them
    /// if needed. A URL may name several servers, `postgresql://idem@db1,db2/agents?
    /// target_session_attrs=read-write`, to follow a failover (see
    /// [`PostgresStoreBuilder`]).
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
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
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
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}
