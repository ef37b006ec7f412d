//! RedisStore on a real `redis-server` (started by the tests): the whole conformance suite.

use idem_runtime::conformance::servers::RedisServer;
use idem_runtime::conformance_tests;
use idem_runtime::store::RedisStore;

/// A store on the shared server, under a prefix of its own: an empty store for each test.
async fn fresh() -> Option<RedisStore> {
    let server = RedisServer::shared()?;
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to redis");
    Some(store.with_prefix(format!("t{}:", unique())))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

conformance_tests!(
    redis,
    available = fresh(),
    reopen = |store: &RedisStore| {
        // Another client with its own connection, on the same keys.
        let (url, prefix) = (
            RedisServer::shared().expect("the server").url(),
            store.prefix().to_owned(),
        );
        async move {
            RedisStore::connect(&url)
                .await
                .expect("connect again")
                .with_prefix(prefix)
        }
    }
);
