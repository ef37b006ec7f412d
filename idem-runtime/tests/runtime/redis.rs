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

/// `store::open` with a `redis://` URL and a prefix reaches the same records as a store made
/// by hand with that prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_opens_the_store_with_its_prefix() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let prefix = format!("url{}:", unique());
    let opened = idem_runtime::store::open(&format!("{}?prefix={prefix}", server.url()))
        .await
        .expect("open the URL");
    assert_eq!(opened.name(), "redis");
    let by_hand = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_prefix(prefix);
    idem_runtime::conformance::races_across_two_handles(&*opened, &by_hand).await;
}

/// An operator's look (`store::open_existing`) at a prefix no agent used is an error (a
/// mistyped prefix or database number), not an empty store; after a claim it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_prefix_is_not_an_existing_store() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let url = format!("{}?prefix=look{}:", server.url(), unique());
    let refused = idem_runtime::store::open_existing(&url)
        .await
        .expect_err("no agent used the prefix");
    assert!(
        refused
            .to_string()
            .contains("no idem store under the prefix"),
        "{refused}"
    );
    let agent = idem_runtime::store::open(&url)
        .await
        .expect("an agent's store");
    let look = idem_runtime::Action::new("look");
    look.call(&(1,))
        .expect("a call")
        .run::<_, idem_runtime::Error, _>(&*agent, async { Ok(1) })
        .await
        .expect("a call on the agent's store");
    let key = look.key(&(1,)).expect("a key");
    let looked = idem_runtime::store::open_existing(&url)
        .await
        .expect("used now");
    assert!(looked.get(&key).await.expect("get").is_some());
}
