//! Opening a store from a URL: what configuration files and command lines name.

use std::sync::Arc;

use crate::store::{MemoryStore, Opening, Store};
use crate::Error;

/// Opens the store named by `url`:
///
/// | URL | store | feature |
/// |---|---|---|
/// | `memory:` | a new [`MemoryStore`] | always |
/// | `sqlite://path/to/idem.db`, `sqlite:///abs/idem.db` | `SqliteStore` | `sqlite` |
/// | `redis://host:port/db` | `RedisStore` | `redis` |
/// | `redis+cluster://host:port,host:port` (a Redis Cluster) | `RedisStore` | `redis` |
/// | `postgres://user@host:port/db`, `postgresql://…` | `PostgresStore` | `postgres` |
///
/// `redis://…?prefix=billing:` sets the Redis store's key prefix (`idem:` by default),
/// `redis://…?accept_eviction=true` accepts a Redis server whose `maxmemory-policy` may evict
/// idem's keys (refused otherwise; see `RedisStoreBuilder::accept_eviction`), and
/// `postgres://…?schema=billing` the PostgreSQL store's schema (`public` by default); the
/// other parameters go to the client as they are.
///
/// TLS (feature `tls`): `rediss://` and `rediss+cluster://` connect to Redis with TLS;
/// `rediss://…?tls_ca_cert=/path/ca.pem` trusts that CA (PEM) instead of the platform's
/// roots, and `&tls_cert=/path/client.pem&tls_key=/path/client.key` presents a client
/// certificate (the names of redis-cli's `--cacert`, `--cert` and `--key`, as Redis calls
/// them in its configuration, `tls-ca-cert-file`, …). PostgreSQL takes libpq's `sslmode=require`
/// or `verify-full`, `sslrootcert=/path/ca.pem`, `sslcert=` and `sslkey=` (see
/// `PostgresStoreBuilder`'s TLS section). A TLS URL in a build without the feature is an
/// error that says to enable it.
///
/// A scheme this build does not know, or knows but was built without, is an error that says
/// which feature to enable.
///
/// ```
/// use idem_runtime::store::open;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = open("memory:").await?;
/// assert_eq!(store.name(), "memory");
/// let unknown = open("mysql://localhost/idem").await.unwrap_err();
/// assert!(unknown.to_string().contains("mysql"));
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    open_as(url, Opening::ForAgents).await
}

/// Opens the store named by `url` as it is, for an operator's look (the `idem` command):
/// nothing is created, migrated or purged by opening it. The SQLite file
/// (`SqliteStore::open_existing`) or the
/// PostgreSQL schema must exist with this idem's schema version, and a Redis store must have
/// been used by an agent (`RedisStore::is_in_use`).
/// `memory:` is refused: a new memory store holds nothing to look at.
///
/// ```
/// use idem_runtime::store::open_existing;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let refused = open_existing("sqlite:///no/such/idem.db").await.unwrap_err();
/// assert!(refused.to_string().contains("no SQLite database"), "{refused}");
/// assert!(open_existing("memory:").await.is_err());
/// # });
/// ```
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, Error> {
    open_as(url, Opening::Existing).await
}

async fn open_as(url: &str, opening: Opening) -> Result<Arc<dyn Store>, Error> {
    let (scheme, rest) = url.split_once(':').unwrap_or((url, ""));
    let refused = |why: String| {
        Err(Error::store(
            "url",
            None,
            format!("cannot open {url:?}: {why}"),
        ))
    };
    match scheme {
        "memory" => match opening {
            Opening::ForAgents => Ok(Arc::new(MemoryStore::new())),
            Opening::Existing => refused(
                "a memory store lives inside the process that made it: a new one is empty".into(),
            ),
        },
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return refused("give a file: sqlite://path/to/idem.db".into());
            }
            sqlite(path, opening).await
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            let options = match redis_options(url) {
                Ok(options) => options,
                Err(why) => return refused(why),
            };
            redis(options, opening).await
        }
        "postgres" | "postgresql" => {
            let (url, schema) = take_param(url, "schema");
            postgres(&url, schema, opening).await
        }
        other => refused(format!(
            "unknown scheme {other:?}; expected memory:, sqlite://, redis:// or postgres://"
        )),
    }
}

#[cfg_attr(
    all(feature = "sqlite", feature = "redis", feature = "postgres"),
    allow(dead_code)
)]
fn without(feature: &str, url: &str) -> Error {
    Error::store(
        "url",
        None,
        format!("cannot open {url:?}: idem was built without its `{feature}` feature"),
    )
}

#[cfg(feature = "sqlite")]
async fn sqlite(path: &str, opening: Opening) -> Result<Arc<dyn Store>, Error> {
    use crate::store::SqliteStore;
    Ok(Arc::new(match opening {
        Opening::ForAgents => SqliteStore::open(path).await?,
        Opening::Existing => SqliteStore::open_existing(path).await?,
    }))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite(path: &str, _: Opening) -> Result<Arc<dyn Store>, Error> {
    Err(without("sqlite", path))
}

/// A Redis URL without idem's own parameters, and those.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct RedisOptions {
    url: String,
    prefix: Option<String>,
    /// Whether a server that may evict keys is accepted.
    accept_eviction: bool,
    /// The files named by `tls_ca_cert`, `tls_cert` and `tls_key`.
    tls_ca_cert: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

fn redis_options(url: &str) -> Result<RedisOptions, String> {
    let (url, prefix) = take_param(url, "prefix");
    let (url, accept) = take_param(&url, "accept_eviction");
    let (url, tls_ca_cert) = take_param(&url, "tls_ca_cert");
    let (url, tls_cert) = take_param(&url, "tls_cert");
    let (url, tls_key) = take_param(&url, "tls_key");
    let accept_eviction = match accept.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("accept_eviction is true or false, not {other:?}")),
    };
    if tls_cert.is_some() != tls_key.is_some() {
        return Err("a client certificate needs both tls_cert= and tls_key=".to_owned());
    }
    Ok(RedisOptions {
        url,
        prefix,
        accept_eviction,
        tls_ca_cert,
        tls_cert,
        tls_key,
    })
}

#[cfg(feature = "redis")]
impl RedisOptions {
    /// The store's builder, with the prefix, the eviction choice and the TLS files read.
    fn builder(self) -> Result<crate::store::RedisStoreBuilder, Error> {
        use crate::store::tls::read_pem_file;
        let mut builder =
            crate::store::RedisStore::builder(self.url).accept_eviction(self.accept_eviction);
        if let Some(prefix) = self.prefix {
            builder = builder.prefix(prefix);
        }
        if let Some(path) = self.tls_ca_cert {
            builder = builder.tls_root_certificate(read_pem_file("redis", "tls_ca_cert", &path)?);
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            builder = builder.tls_client_certificate(
                read_pem_file("redis", "tls_cert", &cert)?,
                read_pem_file("redis", "tls_key", &key)?,
            );
        }
        Ok(builder)
    }
}

/// Moves the keys of the Redis store at `url` (`redis://…` or `redis+cluster://…`, with its
/// `?prefix=`) from an older layout of idem's into the one this idem reads, as
/// [`RedisStoreBuilder::migrate_layout`](crate::store::RedisStoreBuilder::migrate_layout)
/// does: `Some` with what was moved. The other stores have no layout to move (SQLite and
/// PostgreSQL migrate their schema themselves when an agent opens them): `None`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let nothing = idem_runtime::store::migrate_layout("sqlite:///var/lib/idem.db").await?;
/// assert!(nothing.is_none());
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
#[cfg(feature = "redis")]
pub async fn migrate_layout(url: &str) -> Result<Option<crate::store::Migrated>, Error> {
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    if !matches!(
        scheme,
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
    ) {
        return Ok(None);
    }
    let options = redis_options(url)
        .map_err(|why| Error::store("url", None, format!("cannot open {url:?}: {why}")))?;
    options.builder()?.migrate_layout().await.map(Some)
}

/// `url` without its query parameter `name`, and that parameter's value (as written).
pub(super) fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, found)) if key == name => {
                value = Some(found.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, value)
}

#[cfg(feature = "redis")]
async fn redis(options: RedisOptions, opening: Opening) -> Result<Arc<dyn Store>, Error> {
    // An operator's look claims nothing: it opens a server that may evict keys (with the
    // store's warning), rather than hide the records an operator came to see.
    let accept_eviction = options.accept_eviction || opening == Opening::Existing;
    let store = options
        .builder()?
        .accept_eviction(accept_eviction)
        .connect()
        .await?;
    if opening == Opening::Existing && !store.is_in_use().await? {
        return Err(Error::store(
            "redis",
            None,
            format!(
                "no idem store under the prefix {:?} in this database: no agent has claimed a \
                 key there (is the prefix or the database number right?)",
                store.prefix()
            ),
        ));
    }
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
async fn redis(options: RedisOptions, _: Opening) -> Result<Arc<dyn Store>, Error> {
    Err(without("redis", &options.url))
}

#[cfg(feature = "postgres")]
async fn postgres(
    url: &str,
    schema: Option<String>,
    opening: Opening,
) -> Result<Arc<dyn Store>, Error> {
    let builder = crate::store::PostgresStore::builder(url);
    let builder = match schema {
        Some(schema) => builder.schema(schema),
        None => builder,
    };
    Ok(Arc::new(match opening {
        Opening::ForAgents => builder.connect().await?,
        Opening::Existing => builder.connect_existing().await?,
    }))
}

#[cfg(not(feature = "postgres"))]
async fn postgres(url: &str, _: Option<String>, _: Opening) -> Result<Arc<dyn Store>, Error> {
    Err(without("postgres", url))
}

#[cfg(test)]
mod tests {
    use super::take_param;

    #[test]
    fn a_parameter_is_taken_out_of_the_url() {
        let cases = [
            ("redis://h:1/0?prefix=a:", ("redis://h:1/0", Some("a:"))),
            ("redis://h:1/0", ("redis://h:1/0", None)),
            (
                "postgres://h/db?sslmode=disable&schema=s",
                ("postgres://h/db?sslmode=disable", Some("s")),
            ),
            (
                "postgres://h/db?schema=s&sslmode=disable",
                ("postgres://h/db?sslmode=disable", Some("s")),
            ),
        ];
        for (url, (rest, value)) in cases {
            assert_eq!(
                take_param(
                    url,
                    if url.starts_with("redis") {
                        "prefix"
                    } else {
                        "schema"
                    }
                ),
                (rest.to_owned(), value.map(str::to_owned)),
                "{url}"
            );
        }
    }
}
