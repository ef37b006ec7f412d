//! Connecting: the builder, the pool, and the schema created, migrated or checked.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::store::tls::{ClientIdentity, TlsSettings};
use crate::store::FirstStep;
use crate::Error;

use super::migrate::{migrate, newer_schema, version, Retries};
use super::{described, failed, PostgresStore, Waits, SCHEMA_VERSION};

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
///
/// # TLS
///
/// With the `tls` feature, the store's connections use TLS (rustls) when the URL asks for it
/// with libpq's parameters, or when the builder is given a CA
/// ([`tls_root_certificate`](Self::tls_root_certificate)) or a client certificate
/// ([`tls_client_certificate`](Self::tls_client_certificate)):
///
/// | parameter | what the store does |
/// |---|---|
/// | none, `sslmode=disable`, `sslmode=prefer` | no TLS (as without the feature), unless a CA or client certificate is given |
/// | `sslmode=require`, `verify-ca`, `verify-full` | TLS or no connection; the server's certificate is checked for its CA **and** its host name in all three (stricter than libpq's `require`, which checks nothing) |
/// | `sslrootcert=/path/ca.pem` | trusts that CA (PEM) instead of the platform's roots; `sslrootcert=system` the platform's roots |
/// | `sslcert=/path/client.pem&sslkey=/path/client.key` | presents that client certificate (PEM) |
///
/// Without a CA given, the platform's trusted roots are used (libpq reads
/// `~/.postgresql/root.crt` instead). A URL that asks for TLS in a build without the `tls`
/// feature is an error that says to enable it; a server certificate that is not trusted is
/// an error that says so.
///
/// ```no_run
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = idem_runtime::store::PostgresStore::connect(
///     "postgres://idem@db.internal/agents?sslmode=verify-full&sslrootcert=/etc/idem/db-ca.pem",
/// )
/// .await?;
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
    tls: TlsSettings,
    first_step: FirstStep,
}

/// How a user gives a PostgreSQL store the CA that signed its server's certificate.
#[cfg(feature = "tls")]
pub(super) const GIVE_CA: &str = "give the CA that signed it with \
     `PostgresStoreBuilder::tls_root_certificate` or `sslrootcert=/path/ca.pem` in the URL";

/// How the store's own connections are made: their configuration, and plain or TLS.
#[derive(Clone)]
pub(super) struct Direct {
    config: tokio_postgres::Config,
    connector: Connector,
}

#[derive(Clone)]
enum Connector {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Direct {
    /// A new connection, driven by a task of its own: aborting the task closes it.
    pub(super) async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        match &self.connector {
            Connector::Plain => {
                let (client, connection) = self.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(async move { drop(connection.await) })))
            }
            #[cfg(feature = "tls")]
            Connector::Tls(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(async move { drop(connection.await) })))
            }
        }
    }
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
    /// it after that (`statement_timeout`, set on the store's own connections; a schema
    /// upgrade's waits for other sessions' locks are bounded by lock timeouts instead, see
    /// [`PostgresStore`]'s "Schema"), and the
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

    /// Which step a claim starts with: reading the key's record (a replay then costs one
    /// `SELECT`) or writing the claim (a new key then costs one `INSERT`). By default
    /// ([`FirstStep::Adaptive`]) each store handle follows its recent claims; give
    /// [`FirstStep::Read`] or [`FirstStep::Write`] for work known to be mostly duplicates or
    /// mostly new calls. The guarantees are the same either way.
    ///
    /// ```no_run
    /// use idem_runtime::store::{FirstStep, PostgresStore};
    ///
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .first_step(FirstStep::Write)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn first_step(mut self, step: FirstStep) -> Self {
        self.first_step = step;
        self
    }

    /// Connects with TLS and trusts the CA certificate `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks) for the server's certificate, instead of the platform's
    /// trusted roots; as `sslrootcert=` in the URL does (see [TLS](Self#tls)). The server's
    /// certificate must be signed by it and be for the URL's host name, else
    /// [`connect`](Self::connect) fails saying so. Needs the `tls` feature (an error names
    /// it otherwise), and a URL: a pool given to [`PostgresStore::with_pool`] has its own
    /// connector.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let ca = std::fs::read("/etc/idem/db-ca.pem").expect("the CA's certificate");
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .tls_root_certificate(ca)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificates = Some(pem.into());
        self
    }

    /// Connects with TLS and presents the client certificate `certificate_pem` (with its
    /// chain, if any) and its private key `key_pem` (PEM: PKCS#8, PKCS#1 or SEC1), for a
    /// server whose `pg_hba.conf` asks for one (`clientcert=verify-full`, or the `cert`
    /// method); as `sslcert=` and `sslkey=` in the URL do. Needs the `tls` feature.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::PostgresStore::builder("postgres://idem@db.internal/agents")
    ///     .tls_root_certificate(std::fs::read("/etc/idem/db-ca.pem").expect("CA"))
    ///     .tls_client_certificate(
    ///         std::fs::read("/etc/idem/idem.pem").expect("certificate"),
    ///         std::fs::read("/etc/idem/idem.key").expect("key"),
    ///     )
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some(ClientIdentity::new(certificate_pem, key_pem));
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
        let (waits, first_step) = (self.waits(), self.first_step);
        let (pool, schema, direct) = self.pool()?;
        migrate(&pool, &schema, Retries::CONNECT).await?;
        Ok(PostgresStore::on(pool, schema, direct, waits, first_step))
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
        let (waits, first_step) = (self.waits(), self.first_step);
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
            Some(SCHEMA_VERSION) => Ok(PostgresStore::on(pool, schema, direct, waits, first_step)),
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
    fn pool(self) -> Result<(Pool, String, Option<Direct>), Error> {
        let schema = self.schema;
        if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
            return Err(Error::store(
                "postgres",
                None,
                format!("{schema:?} is not a schema name (1 to 63 bytes, no NUL)"),
            ));
        }
        let (pool, direct) = match self.source {
            Source::Pool(_) if self.tls.is_set() => {
                return Err(Error::store(
                    "postgres",
                    None,
                    "a TLS certificate was given for a pool made elsewhere: its connections \
                     are made by its own connector; give that connector the certificate",
                ))
            }
            Source::Pool(pool) => (pool, None),
            Source::Url(url) => {
                let direct = connections(&url, self.statement_timeout, &self.tls)?;
                (open_pool(direct.clone(), self.pool_size)?, Some(direct))
            }
        };
        Ok((pool, schema, direct))
    }
}

/// How the store's connections to `url` are made: plain, or TLS when the URL's `sslmode`
/// or `sslrootcert`, or the builder's `tls`, ask for it (see [TLS](PostgresStoreBuilder#tls)).
fn connections(url: &str, statement_timeout: Duration, tls: &TlsSettings) -> Result<Direct, Error> {
    let refused = |why: String| Error::store("postgres", None, why);
    // tokio-postgres knows `sslmode` only as disable, prefer and require, and neither
    // `sslrootcert` nor `sslcert`: the store takes them out and acts on them itself.
    let (url, mode) = take_param(url, "sslmode");
    let (url, root) = take_param(&url, "sslrootcert");
    let (url, cert) = take_param(&url, "sslcert");
    let (url, key) = take_param(&url, "sslkey");
    let certificates_given = tls.is_set() || root.is_some() || cert.is_some() || key.is_some();
    let mut config = pool_config(&url, statement_timeout)?;
    let tls_wanted =
        match mode.as_deref() {
            Some("disable") if certificates_given => return Err(refused(
                "sslmode=disable, and a TLS certificate was given: use sslmode=verify-full (or \
                 give no certificate)"
                    .to_owned(),
            )),
            Some("disable") => {
                config.ssl_mode(SslMode::Disable);
                false
            }
            Some("require" | "verify-ca" | "verify-full") => true,
            None | Some("prefer") => certificates_given,
            Some(other) => {
                return Err(refused(format!(
                "sslmode={other:?}: expected disable, prefer, require, verify-ca or verify-full"
            )))
            }
        };
    if !tls_wanted {
        return Ok(Direct {
            config,
            connector: Connector::Plain,
        });
    }
    #[cfg(not(feature = "tls"))]
    {
        let what = match mode {
            Some(mode) => format!("sslmode={mode}"),
            None => "a TLS certificate given".to_owned(),
        };
        Err(crate::store::tls::without_feature("postgres", &what))
    }
    #[cfg(feature = "tls")]
    {
        use crate::store::tls::{client_config, read_pem_file};
        let mut settings = tls.clone();
        match root.as_deref() {
            // libpq 16's word for the platform's roots.
            None | Some("system") => {}
            Some(path) if settings.root_certificates.is_none() => {
                settings.root_certificates = Some(read_pem_file("postgres", "sslrootcert", path)?);
            }
            // Two CAs, one of which would be ignored without a word: which one is meant?
            Some(_) => {
                return Err(refused(
                    "sslrootcert= in the URL and a CA given to the builder \
                     (tls_root_certificate): give one of them"
                        .to_owned(),
                ))
            }
        }
        match (cert.as_deref(), key.as_deref()) {
            (None, None) => {}
            (Some(cert), Some(key)) if settings.client.is_none() => {
                settings.client = Some(ClientIdentity::new(
                    read_pem_file("postgres", "sslcert", cert)?,
                    read_pem_file("postgres", "sslkey", key)?,
                ));
            }
            (Some(_), Some(_)) => {
                return Err(refused(
                    "sslcert=/sslkey= in the URL and a client certificate given to the builder \
                     (tls_client_certificate): give one of them"
                        .to_owned(),
                ))
            }
            _ => {
                return Err(refused(
                    "a client certificate needs both sslcert= and sslkey=".to_owned(),
                ))
            }
        }
        let client = client_config(&settings, "postgres", GIVE_CA)?;
        // TLS or no connection: never a plaintext fallback once TLS was asked for.
        config.ssl_mode(SslMode::Require);
        Ok(Direct {
            config,
            connector: Connector::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(client)),
        })
    }
}

/// `conninfo` (a `postgres://` URL, or `key=value` words) without its parameter `name`, and
/// that parameter's value (percent-decoded in a URL, unquoted in words).
fn take_param(conninfo: &str, name: &str) -> (String, Option<String>) {
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let (url, value) = super::super::open::take_param(conninfo, name);
        return (url, value.as_deref().map(percent_decoded));
    }
    // `key = value` words; a value may be quoted ('…', with \' and \\ inside).
    let mut kept = String::new();
    let mut value = None;
    let mut chars = conninfo.char_indices().peekable();
    while let Some(&(start, _)) = chars.peek() {
        if conninfo[start..].starts_with(char::is_whitespace) {
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut found = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '=') {
            chars.next();
            while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_some_and(|&(_, c)| c == '\'') {
                chars.next();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => found.extend(chars.next().map(|(_, c)| c)),
                        c => found.push(c),
                    }
                }
            } else {
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    found.push(c);
                    chars.next();
                }
            }
        }
        let end = chars.peek().map_or(conninfo.len(), |&(end, _)| end);
        if key == name {
            value = Some(found);
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&conninfo[start..end]);
        }
    }
    (kept, value)
}

/// `text` with its `%XX` escapes decoded (a malformed escape is kept as it is).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
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

/// A pool of `size` connections made as `direct` says.
fn open_pool(direct: Direct, size: usize) -> Result<Pool, Error> {
    let settings = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match direct.connector {
        Connector::Plain => Manager::from_config(direct.config, NoTls, settings),
        #[cfg(feature = "tls")]
        Connector::Tls(tls) => Manager::from_config(direct.config, tls, settings),
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| failed(None, &e))
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
            first_step: FirstStep::default(),
            tls: TlsSettings::default(),
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
            first_step: FirstStep::default(),
            tls: TlsSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_words() {
        assert_eq!(
            take_param("postgres://u@h/db?sslmode=require&schema=s", "sslmode"),
            (
                "postgres://u@h/db?schema=s".to_owned(),
                Some("require".to_owned())
            )
        );
        assert_eq!(
            take_param(
                "postgresql://u@h/db?sslrootcert=%2Fetc%2Fca%20x.pem",
                "sslrootcert"
            ),
            (
                "postgresql://u@h/db".to_owned(),
                Some("/etc/ca x.pem".to_owned())
            )
        );
        assert_eq!(
            take_param("host=h sslmode = verify-full user=u", "sslmode"),
            ("host=h user=u".to_owned(), Some("verify-full".to_owned()))
        );
        assert_eq!(
            take_param("host=h sslrootcert='/a b/c\\'d.pem' user=u", "sslrootcert"),
            ("host=h user=u".to_owned(), Some("/a b/c'd.pem".to_owned()))
        );
        assert_eq!(
            take_param("host=h user=u", "sslmode"),
            ("host=h user=u".to_owned(), None)
        );
    }

    #[test]
    fn a_url_without_sslmode_stays_plain() {
        let direct = connections(
            "postgres://u@h/db",
            DEFAULT_STATEMENT_TIMEOUT,
            &TlsSettings::default(),
        )
        .expect("plain");
        assert!(matches!(direct.connector, Connector::Plain));
        assert_eq!(direct.config.get_ssl_mode(), SslMode::Prefer);
        let disabled = connections(
            "host=h user=u sslmode=disable",
            DEFAULT_STATEMENT_TIMEOUT,
            &TlsSettings::default(),
        )
        .expect("plain");
        assert_eq!(disabled.config.get_ssl_mode(), SslMode::Disable);
    }
}
