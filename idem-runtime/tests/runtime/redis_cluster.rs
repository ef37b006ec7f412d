//! RedisStore on Redis Cluster and on Valkey (one server and a cluster), started by the tests:
//! the whole conformance suite on each, and what only a cluster shows.

use idem_runtime::conformance::servers::{Flavor, RedisCluster, RedisServer};
use idem_runtime::conformance_tests;
use idem_runtime::store::{RedisStore, Store};

use super::redis::unique;

/// A store on the shared cluster of `flavor`, under a prefix of its own.
async fn on_cluster(flavor: Flavor) -> Option<RedisStore> {
    let cluster = RedisCluster::shared(flavor)?;
    Some(connect(&cluster.url(), &format!("c{}:", unique())).await)
}

/// A store on the shared Valkey server, under a prefix of its own.
async fn on_valkey() -> Option<RedisStore> {
    let server = RedisServer::shared_valkey()?;
    Some(connect(&server.url(), &format!("v{}:", unique())).await)
}

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Another handle on the same keys: a new connection (or cluster client) to `url`.
fn again(url: String, store: &RedisStore) -> impl std::future::Future<Output = RedisStore> {
    let prefix = store.prefix().to_owned();
    async move { connect(&url, &prefix).await }
}

conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    redis_cluster,
    available = on_cluster(Flavor::Redis),
    reopen = |store: &RedisStore| {
        let cluster = RedisCluster::shared(Flavor::Redis).expect("the cluster");
        again(cluster.url(), store)
    }
);

conformance_tests!(
    #[cfg_attr(
        idem_no_valkey,
        ignore = "valkey-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    valkey,
    available = on_valkey(),
    reopen = |store: &RedisStore| {
        let server = RedisServer::shared_valkey().expect("the server");
        again(server.url(), store)
    }
);

conformance_tests!(
    #[cfg_attr(
        idem_no_valkey,
        ignore = "valkey-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    valkey_cluster,
    available = on_cluster(Flavor::Valkey),
    reopen = |store: &RedisStore| {
        let cluster = RedisCluster::shared(Flavor::Valkey).expect("the cluster");
        again(cluster.url(), store)
    }
);

/// The keys of one store spread over every master of the cluster: 300 claims leave records
/// on each of the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_stores_keys_spread_over_every_master() {
    let Some(store) = on_cluster(Flavor::Redis).await else {
        return;
    };
    let cluster = RedisCluster::shared(Flavor::Redis).expect("the cluster");
    let action = idem_runtime::Action::new("spread");
    for n in 0..300u32 {
        let key = action.key(&(n,)).expect("a key");
        let fingerprint = idem_runtime::Fingerprint::from(key);
        let request = idem_runtime::store::ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "spread",
            lease: std::time::Duration::from_secs(60),
            ttl: std::time::Duration::from_secs(60),
            on_stale: idem_runtime::store::OnStale::TakeOver,
        };
        store.claim(&request).await.expect("claim");
    }
    for node in cluster.nodes() {
        let client = redis::Client::open(node.url()).expect("a url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node");
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut connection)
            .await
            .expect("ROLE");
        if role.first() != Some(&redis::Value::BulkString(b"master".to_vec())) {
            continue;
        }
        let pattern = format!("{}*:r", store.prefix());
        let (_, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(100_000)
            .query_async(&mut connection)
            .await
            .expect("SCAN");
        assert!(
            found.len() > 50,
            "master :{} holds {} of the 300 records",
            node.port(),
            found.len()
        );
    }
}
