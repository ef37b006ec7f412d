//! TLS to Redis, Redis Cluster and PostgreSQL (feature `tls`), on servers the tests start
//! themselves with a CA and a server certificate for 127.0.0.1 made here (`rcgen`): the whole
//! conformance suite over TLS on each, the URL forms of `store::open`, and the refusals: a server whose
//! certificate the client does not trust, a plain connection to a server that takes TLS only,
//! a server that wants a client certificate and gets none (Redis and PostgreSQL).
//!
//! The servers take TLS only (Redis with no plaintext port, PostgreSQL with `hostssl` lines
//! alone in `pg_hba.conf`): a store that works with them works over TLS.

use std::path::PathBuf;
use std::sync::OnceLock;

use idem_runtime::conformance::servers::{PostgresServer, RedisCluster, RedisServer, ServerTls};
use idem_runtime::conformance_tests;
use idem_runtime::store::{self, PostgresStore, RedisStore};

/// A CA and what it signed, PEM.
struct Made {
    ca_certificate: String,
    /// The CA's signing half, to sign more certificates.
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Made {
    /// A new CA named `name`.
    fn ca(name: &str) -> Made {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let certificate = params.self_signed(&key).expect("a CA certificate");
        Made {
            ca_certificate: certificate.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (host names or IP addresses) signed by this CA, and its key.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("params");
        let certificate = params.signed_by(&key, &self.issuer).expect("a certificate");
        (certificate.pem(), key.serialize_pem())
    }
}

/// The test CA, the servers' identity (for 127.0.0.1 and localhost), a client certificate
/// signed by the same CA, and the CA's certificate in a file (for URLs).
struct Certificates {
    server: ServerTls,
    client_certificate: String,
    client_key: String,
    folder: PathBuf,
}

impl Certificates {
    fn ca_file(&self) -> String {
        self.folder.join("ca.pem").display().to_string()
    }
}

fn certificates() -> &'static Certificates {
    static MADE: OnceLock<Certificates> = OnceLock::new();
    MADE.get_or_init(|| {
        let ca = Made::ca("idem test CA");
        let (certificate, key) = ca.sign(&["127.0.0.1", "localhost"]);
        let (client_certificate, client_key) = ca.sign(&["idem-client"]);
        let folder = std::env::temp_dir().join(format!("idem-tls-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("a folder");
        std::fs::write(folder.join("ca.pem"), &ca.ca_certificate).expect("write the CA");
        std::fs::write(folder.join("client.pem"), &client_certificate).expect("write");
        std::fs::write(folder.join("client.key"), &client_key).expect("write");
        Certificates {
            server: ServerTls {
                ca_certificate: ca.ca_certificate,
                certificate,
                key,
            },
            client_certificate,
            client_key,
            folder,
        }
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---- Redis ----

/// The Redis server of this process that takes TLS only, with no client certificate asked.
fn redis_server() -> Option<&'static RedisServer> {
    static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| RedisServer::own_tls(&certificates().server, false))
        .as_ref()
}

async fn redis_store(url: &str, prefix: String) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .tls_root_certificate(certificates().server.ca_certificate.clone())
        .connect()
        .await
        .expect("connect to redis over TLS")
}

/// Another handle on `store`'s keys: a new connection (or cluster client) to `url`.
fn again(url: String, store: &RedisStore) -> impl std::future::Future<Output = RedisStore> {
    let prefix = store.prefix().to_owned();
    async move { redis_store(&url, prefix).await }
}

async fn fresh_redis() -> Option<RedisStore> {
    let server = redis_server()?;
    Some(redis_store(&server.url(), format!("tls{}:", unique())).await)
}

conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    redis_over_tls,
    available = fresh_redis(),
    reopen = |store: &RedisStore| again(redis_server().expect("the server").url(), store)
);

#[tokio::test]
#[cfg_attr(idem_no_redis, ignore = "redis-server is not installed")]
async fn redis_refuses_a_server_certificate_it_does_not_trust() {
    let Some(server) = redis_server() else { return };
    // The platform's roots do not hold the test CA.
    let by_the_platform = RedisStore::connect(&server.url()).await.unwrap_err();
    // Nor does another CA.
    let other = Made::ca("another CA");
    let by_another_ca = RedisStore::builder(server.url())
        .tls_root_certificate(other.ca_certificate)
        .connect()
        .await
        .unwrap_err();
    for refused in [by_the_platform, by_another_ca] {
        let said = refused.to_string();
        assert!(
            said.contains("TLS certificate is not trusted")
                && said.contains("tls_root_certificate"),
            "{said}"
        );
    }
}

#[tokio::test]
#[cfg_attr(idem_no_redis, ignore = "redis-server is not installed")]
async fn redis_over_a_plain_url_is_refused_by_a_tls_only_server() {
    let Some(server) = redis_server() else { return };
    let plain = format!("redis://127.0.0.1:{}/", server.port());
    // The server drops a connection that does not open with a TLS handshake.
    assert!(RedisStore::connect(&plain).await.is_err());
    // A certificate given for a plain URL is refused before connecting: it would go unused.
    let refused = RedisStore::builder(plain)
        .tls_root_certificate(certificates().server.ca_certificate.clone())
        .connect()
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("rediss://"), "{refused}");
}

#[tokio::test]
#[cfg_attr(idem_no_redis, ignore = "redis-server is not installed")]
async fn redis_urls_of_store_open_name_the_tls_files() {
    let Some(server) = redis_server() else { return };
    let certificates = certificates();
    let url = format!(
        "{}?tls_ca_cert={}&prefix=open{}:",
        server.url(),
        certificates.ca_file(),
        unique()
    );
    let store = store::open(&url).await.expect("open over TLS");
    idem_runtime::conformance::claim_complete_replay(&*store).await;

    let missing = format!("{}?tls_ca_cert=/no/such/ca.pem", server.url());
    let refused = store::open(&missing).await.unwrap_err().to_string();
    assert!(
        refused.contains("/no/such/ca.pem") && refused.contains("tls_ca_cert"),
        "{refused}"
    );
    let half = format!("{}?tls_cert=/client.pem", server.url());
    let refused = store::open(&half).await.unwrap_err().to_string();
    assert!(refused.contains("tls_key"), "{refused}");
}

// Multi-threaded: the race's callers run in parallel.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(idem_no_redis, ignore = "redis-server is not installed")]
async fn redis_presents_a_client_certificate_to_a_server_that_asks() {
    let certificates = certificates();
    let Some(server) = RedisServer::own_tls(&certificates.server, true) else {
        return;
    };
    let without = RedisStore::builder(server.url())
        .tls_root_certificate(certificates.server.ca_certificate.clone())
        .connect()
        .await
        .unwrap_err();
    assert!(
        without.to_string().contains("client certificate"),
        "{without}"
    );

    let with = RedisStore::builder(server.url())
        .tls_root_certificate(certificates.server.ca_certificate.clone())
        .tls_client_certificate(
            certificates.client_certificate.clone(),
            certificates.client_key.clone(),
        )
        .connect()
        .await
        .expect("connect with a client certificate");
    idem_runtime::conformance::claim_complete_replay(&with).await;

    let folder = &certificates.folder;
    let url = format!(
        "{}?tls_ca_cert={}&tls_cert={}&tls_key={}",
        server.url(),
        certificates.ca_file(),
        folder.join("client.pem").display(),
        folder.join("client.key").display()
    );
    let opened = store::open(&url)
        .await
        .expect("open with a client certificate");
    idem_runtime::conformance::race_of_64_claims_has_one_winner(&*opened).await;
}

// ---- Redis Cluster ----

/// The Redis Cluster of this process whose clients connect over TLS (its nodes' bus and
/// replication too).
fn redis_cluster() -> Option<&'static RedisCluster> {
    static CLUSTER: OnceLock<Option<RedisCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| RedisCluster::own_tls(&certificates().server))
        .as_ref()
}

async fn fresh_redis_cluster() -> Option<RedisStore> {
    let cluster = redis_cluster()?;
    Some(redis_store(&cluster.url(), format!("tlsc{}:", unique())).await)
}

conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    redis_cluster_over_tls,
    available = fresh_redis_cluster(),
    reopen = |store: &RedisStore| again(redis_cluster().expect("the cluster").url(), store)
);

// Multi-threaded: the race's callers run in parallel.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(idem_no_redis, ignore = "redis-server or redis-cli is not installed")]
async fn a_redis_cluster_over_tls_opens_from_a_url_and_refuses_an_untrusted_certificate() {
    let Some(cluster) = redis_cluster() else {
        return;
    };
    let url = format!(
        "{}?tls_ca_cert={}&prefix=openc{}:",
        cluster.url(),
        certificates().ca_file(),
        unique()
    );
    let store = store::open(&url).await.expect("open the cluster over TLS");
    idem_runtime::conformance::race_of_64_claims_has_one_winner(&*store).await;

    let untrusted = RedisStore::builder(cluster.url())
        .tls_root_certificate(Made::ca("another CA").ca_certificate)
        .connect()
        .await
        .unwrap_err();
    // In the words the single server's refusal has, though the cluster client keeps only
    // the text of its nodes' errors.
    let said = untrusted.to_string();
    assert!(
        said.contains("TLS certificate is not trusted") && said.contains("tls_root_certificate"),
        "{said}"
    );
}

// ---- PostgreSQL ----

/// The PostgreSQL server of this process that takes TLS only.
fn postgres_server() -> Option<&'static PostgresServer> {
    static SERVER: OnceLock<Option<PostgresServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| PostgresServer::own_tls(&certificates().server, false))
        .as_ref()
}

async fn postgres_store(schema: String) -> PostgresStore {
    let server = postgres_server().expect("the server");
    PostgresStore::builder(format!("{}?sslmode=verify-full", server.url()))
        .schema(schema)
        .tls_root_certificate(certificates().server.ca_certificate.clone())
        .connect()
        .await
        .expect("connect to PostgreSQL over TLS")
}

async fn fresh_postgres() -> Option<PostgresStore> {
    postgres_server()?;
    Some(postgres_store(format!("tls_{}", unique())).await)
}

conformance_tests!(
    #[cfg_attr(
        idem_no_postgres,
        ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    postgres_over_tls,
    available = fresh_postgres(),
    reopen = |store: &PostgresStore| {
        let schema = store.schema().to_owned();
        async move { postgres_store(schema).await }
    }
);

#[tokio::test]
#[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed")]
async fn postgres_sslmode_require_encrypts_every_connection() {
    let Some(server) = postgres_server() else {
        return;
    };
    let application = format!("idem_tls_{}", unique());
    let url = format!(
        "{}?sslmode=require&sslrootcert={}&application_name={application}&schema={application}",
        server.url(),
        certificates().ca_file()
    );
    let store = store::open(&url).await.expect("open over TLS");
    idem_runtime::conformance::claim_complete_replay(&*store).await;
    // The store's pooled connections, as the server sees them.
    let seen = server
        .sql(&format!(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '{application}'"
        ))
        .expect("pg_stat_ssl");
    let (count, all_tls) = seen.trim().split_once('|').expect("two columns");
    assert!(count.parse::<u32>().expect("a count") > 0, "{seen}");
    assert_eq!(all_tls, "t", "{seen}");
}

// Multi-threaded: the race's callers run in parallel.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed")]
async fn postgres_presents_a_client_certificate_to_a_server_that_asks() {
    let certificates = certificates();
    let Some(server) = PostgresServer::own_tls(&certificates.server, true) else {
        return;
    };
    let url = format!("{}?sslmode=verify-full", server.url());
    let without = PostgresStore::builder(&url)
        .tls_root_certificate(certificates.server.ca_certificate.clone())
        .connect()
        .await
        .unwrap_err();
    // The server's own words.
    assert!(
        without
            .to_string()
            .contains("requires a valid client certificate"),
        "{without}"
    );

    let with = PostgresStore::builder(&url)
        .schema(format!("client_cert_{}", unique()))
        .tls_root_certificate(certificates.server.ca_certificate.clone())
        .tls_client_certificate(
            certificates.client_certificate.clone(),
            certificates.client_key.clone(),
        )
        .connect()
        .await
        .expect("connect with a client certificate");
    idem_runtime::conformance::claim_complete_replay(&with).await;

    let folder = &certificates.folder;
    let url = format!(
        "{url}&sslrootcert={}&sslcert={}&sslkey={}&schema=client_cert_{}",
        certificates.ca_file(),
        folder.join("client.pem").display(),
        folder.join("client.key").display(),
        unique()
    );
    let opened = store::open(&url)
        .await
        .expect("open with a client certificate");
    idem_runtime::conformance::race_of_64_claims_has_one_winner(&*opened).await;
}

#[tokio::test]
#[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed")]
async fn postgres_refuses_a_server_certificate_it_does_not_trust() {
    let Some(server) = postgres_server() else {
        return;
    };
    let by_the_platform = PostgresStore::connect(format!("{}?sslmode=verify-full", server.url()))
        .await
        .unwrap_err();
    let by_another_ca = PostgresStore::builder(format!("{}?sslmode=require", server.url()))
        .tls_root_certificate(Made::ca("another CA").ca_certificate)
        .connect()
        .await
        .unwrap_err();
    for refused in [by_the_platform, by_another_ca] {
        let said = refused.to_string();
        assert!(
            said.contains("TLS certificate is not trusted") && said.contains("sslrootcert"),
            "{said}"
        );
    }
}

#[tokio::test]
#[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed")]
async fn postgres_without_sslmode_stays_plain_and_a_tls_only_server_refuses_it() {
    let Some(server) = postgres_server() else {
        return;
    };
    let refused = PostgresStore::connect(server.url()).await.unwrap_err();
    // The server's own words: its pg_hba.conf has no line for a connection without TLS.
    assert!(refused.to_string().contains("no encryption"), "{refused}");
}

#[tokio::test]
#[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed")]
async fn postgres_urls_with_tls_parameters_that_cannot_work_are_refused() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = server.url();
    let cases = [
        (format!("{url}?sslmode=allow"), "sslmode"),
        (
            format!("{url}?sslmode=verify-full&sslrootcert=/no/such/ca.pem"),
            "/no/such/ca.pem",
        ),
        (
            format!("{url}?sslmode=require&sslcert=/client.pem"),
            "sslkey",
        ),
        (
            format!("{url}?sslmode=disable&sslrootcert=/ca.pem"),
            "sslmode=disable",
        ),
    ];
    for (url, named) in cases {
        let said = store::open(&url).await.unwrap_err().to_string();
        assert!(said.contains(named), "{url}: {said}");
    }
    // A CA in the URL and another given to the builder: neither is silently dropped.
    let twice = PostgresStore::builder(format!("{url}?sslmode=verify-full&sslrootcert=/ca.pem"))
        .tls_root_certificate(b"-----BEGIN CERTIFICATE-----".to_vec())
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(twice.contains("give one of them"), "{twice}");
}
