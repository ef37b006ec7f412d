//! Store servers that fail in the middle of a run: calls made during the fault fail with
//! `idem::Error::Store` (never a second execution, never a panic), and calls made after it
//! succeed, replaying what was recorded before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem::store::{PostgresStore, RedisStore, Store};
use idem::{idempotent, Error};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

static SHIPPED: AtomicUsize = AtomicUsize::new(0);

#[idempotent(skip = [store], store = store, name = "faults_ship_order")]
async fn ship_order(store: &dyn Store, order: u32) -> Result<String, Error> {
    SHIPPED.fetch_add(1, Ordering::SeqCst);
    Ok(format!("shipment {order}"))
}

/// Calls `ship_order` for each order, one after the other.
async fn ship_each(store: &dyn Store, orders: std::ops::Range<u32>) -> Vec<Result<String, Error>> {
    let mut results = Vec::new();
    for order in orders {
        results.push(ship_order(store, order).await);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_redis_restart_fails_the_calls_it_meets_and_duplicates_nothing() {
    let Some(server) = RedisServer::own() else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");

    for result in ship_each(&store, 0..50).await {
        result.expect("the server is up");
    }
    assert_eq!(SHIPPED.load(Ordering::SeqCst), 50);

    server.stop().expect("stop redis");
    // Two orders recorded before, one new: none of them may run.
    for result in ship_each(&store, 48..51).await {
        match result {
            Err(Error::Store { store: "redis", .. }) => {}
            other => panic!("a call while the server is down fails with a store error: {other:?}"),
        }
    }
    assert_eq!(
        SHIPPED.load(Ordering::SeqCst),
        50,
        "nothing ran while the store was down"
    );

    server.restart().expect("start redis again");
    // The client reconnects on its own; its first command may still meet the old connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ship_order(&store, 0).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client reconnects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (order, result) in (0..60).zip(ship_each(&store, 0..60).await) {
        assert_eq!(
            result.expect("the server is back"),
            format!("shipment {order}")
        );
    }
    assert_eq!(
        SHIPPED.load(Ordering::SeqCst),
        60,
        "the 50 recorded before the restart were replayed, the 10 new ones ran once each"
    );
}

static SHIPPED_PG: AtomicUsize = AtomicUsize::new(0);

#[idempotent(skip = [store], store = store)]
async fn ship_parcel(store: &dyn Store, parcel: u32) -> Result<String, Error> {
    SHIPPED_PG.fetch_add(1, Ordering::SeqCst);
    Ok(format!("parcel {parcel}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn terminated_postgres_backends_fail_the_calls_they_serve_and_duplicate_nothing() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    // A database of its own: terminating its backends disturbs no other test.
    server
        .sql("CREATE DATABASE fault_test")
        .expect("create the database");
    let url = format!("postgres://postgres@127.0.0.1:{}/fault_test", server.port());
    // A call that finds no connection tries again for as long as the statement timeout
    // (a failover in progress looks the same): 5 s rather than the default 30 s, so that
    // the ten calls made during the fault take a minute, not five.
    let store = PostgresStore::builder(url)
        .pool_size(4)
        .statement_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    let ship_each = |parcels: std::ops::Range<u32>| {
        let store = &store;
        async move {
            let mut results = Vec::new();
            for parcel in parcels {
                results.push(ship_parcel(store, parcel).await);
            }
            results
        }
    };

    for result in ship_each(0..50).await {
        result.expect("the server is up");
    }
    // The fault: the database refuses new connections and its backends are terminated.
    server
        .sql("ALTER DATABASE fault_test WITH ALLOW_CONNECTIONS false")
        .expect("close the database");
    let terminated = server
        .sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'fault_test'",
        )
        .expect("terminate the store's backends");
    assert_ne!(terminated.trim(), "0", "the store had connections to cut");

    // Half recorded before, half new: none may run, each fails with a store error.
    for result in ship_each(45..55).await {
        match result {
            Err(Error::Store {
                store: "postgres", ..
            }) => {}
            other => {
                panic!("a call while the database is gone fails with a store error: {other:?}")
            }
        }
    }
    assert_eq!(
        SHIPPED_PG.load(Ordering::SeqCst),
        50,
        "nothing ran during the fault"
    );

    server
        .sql("ALTER DATABASE fault_test WITH ALLOW_CONNECTIONS true")
        .expect("open the database again");
    for (parcel, result) in (0..75).zip(ship_each(0..75).await) {
        assert_eq!(
            result.expect("the pool has new connections"),
            format!("parcel {parcel}")
        );
    }
    assert_eq!(
        SHIPPED_PG.load(Ordering::SeqCst),
        75,
        "each of the 75 parcels shipped once, whatever the fault"
    );
}
