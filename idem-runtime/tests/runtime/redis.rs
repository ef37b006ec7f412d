//! RedisStore on a real `redis-server` (started by the tests): the whole conformance suite.

use idem_runtime::conformance::servers::RedisServer;
use idem_runtime::conformance_tests;
use idem_runtime::store::{FirstStep, RedisStore};

/// A store on the shared server, under a prefix of its own: an empty store for each test.
async fn fresh() -> Option<RedisStore> {
    let server = RedisServer::shared()?;
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to redis");
    Some(store.with_prefix(format!("t{}:", unique())))
}

pub(crate) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
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

/// A store whose claims always write first (`SET … NX GET`, `FirstStep::Write`): the
/// suites here run mostly on claims that read first (a new handle does, until eight claims
/// in a row find no record), so the other way round runs the whole suite here.
async fn writing_first(prefix: String) -> RedisStore {
    RedisStore::builder(RedisServer::shared().expect("the server").url())
        .prefix(prefix)
        .first_step(FirstStep::Write)
        .connect()
        .await
        .expect("connect to redis")
}

conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    redis_writing_first,
    available = async {
        RedisServer::shared()?;
        Some(writing_first(format!("t{}:", unique())).await)
    },
    reopen = |store: &RedisStore| writing_first(store.prefix().to_owned())
);

/// A primary with one linked replica, shared by the tests of this process that ask for it.
fn replicated() -> Option<&'static (RedisServer, RedisServer)> {
    static PAIR: std::sync::OnceLock<Option<(RedisServer, RedisServer)>> =
        std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let primary = RedisServer::own()?;
        let replica = RedisServer::replica_of(&primary)?;
        Some((primary, replica))
    })
    .as_ref()
}

/// A store on the replicated primary that waits for its replica, under a prefix of its own.
async fn waiting_for_the_replica() -> Option<RedisStore> {
    let (primary, _) = replicated()?;
    let store = RedisStore::builder(primary.url())
        .prefix(format!("w{}:", unique()))
        .wait_for_replicas(1, std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the primary");
    Some(store)
}

// The whole suite again with every acknowledged write waiting for a replica: the writes
// that pipeline a `WAIT` behind their script answer as they do without it.
conformance_tests!(
    #[cfg_attr(
        idem_no_redis,
        ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    redis_with_a_replica,
    available = waiting_for_the_replica(),
    reopen = |store: &RedisStore| {
        let prefix = store.prefix().to_owned();
        async move {
            let (primary, _) = replicated().expect("the servers");
            RedisStore::builder(primary.url())
                .prefix(prefix)
                .wait_for_replicas(1, std::time::Duration::from_secs(5))
                .connect()
                .await
                .expect("connect again")
        }
    }
);

/// `store::open` with a `redis://` URL and a prefix reaches the same records as a store made
/// by hand with that prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
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
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_unused_prefix_is_not_an_existing_store() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let prefix = format!("look{}:", unique());
    let url = format!("{}?prefix={prefix}", server.url());
    let refused = idem_runtime::store::open_existing(&url)
        .await
        .expect_err("no agent used the prefix");
    assert!(
        refused
            .to_string()
            .contains("no idem store under the prefix"),
        "{refused}"
    );
    let client = ::redis::Client::open(server.url()).expect("a client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    let written: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    assert_eq!(written, Vec::<String>::new(), "the look wrote nothing");
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

/// A server of this test's own whose memory is limited and whose policy is `policy`.
fn limited(policy: &str) -> Option<RedisServer> {
    RedisServer::own_with(&["--maxmemory", "10mb", "--maxmemory-policy", policy])
}

/// A server that may evict keys (`allkeys-*` evicts claims, results and the token counter;
/// `volatile-*` the results, which have a TTL) is refused by `connect`, with a message that
/// names the policy, says what eviction breaks and names the option that accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn connect_refuses_a_server_that_may_evict_keys() {
    for policy in ["allkeys-lru", "volatile-ttl"] {
        let Some(server) = limited(policy) else {
            return;
        };
        let refused = RedisStore::connect(&server.url())
            .await
            .expect_err("an evicting server is refused");
        let message = refused.to_string();
        assert!(
            matches!(refused, idem_runtime::Error::Store { .. }),
            "{refused:?}"
        );
        for said in [policy, "accept_eviction", "again"] {
            assert!(message.contains(said), "{said:?} not in: {message}");
        }
    }
}

/// `noeviction` on a server with a memory limit is what idem needs: it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn connect_accepts_noeviction() {
    let Some(server) = limited("noeviction") else {
        return;
    };
    RedisStore::connect(&server.url())
        .await
        .expect("noeviction is safe");
}

/// A managed Redis that refuses `CONFIG` cannot be checked: connect goes on (and warns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn connect_goes_on_when_config_is_refused() {
    let Some(server) = RedisServer::own_with(&[
        "--maxmemory",
        "10mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]) else {
        return;
    };
    let store = RedisStore::connect(&server.url())
        .await
        .expect("a server without CONFIG connects");
    assert!(!store.is_in_use().await.expect("the store answers"));
}

/// The same evicting server connects when the risk is accepted: by the builder, or by
/// `store::open` with `?accept_eviction=true` (and without it, `store::open` refuses too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn accepting_eviction_connects_to_an_evicting_server() {
    let Some(server) = limited("allkeys-lru") else {
        return;
    };
    RedisStore::builder(server.url())
        .accept_eviction(true)
        .connect()
        .await
        .expect("eviction accepted");
    let refused = idem_runtime::store::open(&server.url())
        .await
        .expect_err("store::open refuses it by default");
    assert!(refused.to_string().contains("allkeys-lru"), "{refused}");
    let opened = idem_runtime::store::open(&format!("{}?accept_eviction=true", server.url()))
        .await
        .expect("store::open accepts it when told");
    assert_eq!(opened.name(), "redis");
    let bad = idem_runtime::store::open(&format!("{}?accept_eviction=yes", server.url()))
        .await
        .expect_err("true or false");
    assert!(bad.to_string().contains("accept_eviction"), "{bad}");
}

/// With no memory limit (`maxmemory 0`) the server evicts nothing whatever its policy: it
/// connects (with a warning that a limit set later would start evicting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_evicting_policy_without_a_memory_limit_connects() {
    let Some(server) =
        RedisServer::own_with(&["--maxmemory", "0", "--maxmemory-policy", "allkeys-lru"])
    else {
        return;
    };
    RedisStore::connect(&server.url())
        .await
        .expect("nothing is evicted without a limit");
}

static SEND: idem_runtime::Action = idem_runtime::Action::new("send");

/// Runs one call of `SEND` with argument `n` on `store`, counting the runs of its body.
async fn send(
    store: &RedisStore,
    n: u32,
    runs: &std::sync::atomic::AtomicU32,
) -> Result<u32, idem_runtime::Error> {
    SEND.call(&(n,))?
        .run::<_, idem_runtime::Error, _>(store, async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(n)
        })
        .await
        .map(idem_runtime::Outcome::into_inner)
}

/// Asked to wait for a replica that is not there, a call fails with a store error saying so
/// before its body runs (the claim is not acknowledged), and gives its claim back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn without_the_replicas_asked_for_a_call_fails_before_its_body_runs() {
    use idem_runtime::store::Store;
    let Some(server) = RedisServer::own() else {
        return;
    };
    let store = RedisStore::builder(server.url())
        .wait_for_replicas(1, std::time::Duration::from_millis(50))
        .connect()
        .await
        .expect("connect");
    let runs = std::sync::atomic::AtomicU32::new(0);
    let refused = send(&store, 1, &runs).await.expect_err("no replica");
    assert!(
        matches!(refused, idem_runtime::Error::Store { .. }),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("0 of the 1 replicas")
            && refused.to_string().contains("the body does not run"),
        "{refused}"
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
    let key = SEND.key(&(1,)).expect("a key");
    assert!(
        store.get(&key).await.expect("get").is_none(),
        "the claim was given back"
    );
}

/// Asked to wait for a replica that is not there, recording a result is a store error
/// (the result is on the primary only: a failover could lose it), though the primary has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn without_the_replicas_asked_for_complete_is_a_store_error() {
    use idem_runtime::store::{Claim, ClaimRequest, Status, Store, StoredOutcome};
    let Some(server) = RedisServer::own() else {
        return;
    };
    let plain = RedisStore::connect(&server.url()).await.expect("connect");
    let waiting = RedisStore::builder(server.url())
        .wait_for_replicas(1, std::time::Duration::from_millis(50))
        .connect()
        .await
        .expect("connect");
    let key = SEND.key(&(2,)).expect("a key");
    let fingerprint = idem_runtime::Fingerprint::from(key);
    let request = ClaimRequest {
        key: &key,
        fingerprint: &fingerprint,
        action: "send",
        lease: std::time::Duration::from_secs(60),
        ttl: std::time::Duration::from_secs(3600),
        on_stale: idem_runtime::OnStale::TakeOver,
    };
    let Claim::Acquired { token, .. } = plain.claim(&request).await.expect("claim") else {
        panic!("a fresh key is acquired");
    };
    let ok = StoredOutcome::Ok(b"2".to_vec());
    let refused = waiting
        .complete(&key, token, ok, std::time::Duration::from_secs(60))
        .await
        .expect_err("no replica acknowledged the result");
    assert!(
        refused.to_string().contains("the result is on the primary")
            && refused.to_string().contains("a failover now could lose it"),
        "{refused}"
    );
    let record = plain.get(&key).await.expect("get").expect("a record");
    assert_eq!(record.status, Status::Completed);
}

/// With the replica asked for linked, a call runs, and once it returns the replica has its
/// result (`WAIT` answered for it); the second call replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn with_a_replica_a_result_is_on_the_replica_when_the_call_returns() {
    use idem_runtime::store::{Status, Store};
    let Some(primary) = RedisServer::own() else {
        return;
    };
    let Some(replica) = RedisServer::replica_of(&primary) else {
        return;
    };
    let store = RedisStore::builder(primary.url())
        .wait_for_replicas(1, std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    let runs = std::sync::atomic::AtomicU32::new(0);
    assert_eq!(send(&store, 3, &runs).await.expect("acknowledged"), 3);
    let on_replica = RedisStore::connect(&replica.url())
        .await
        .expect("connect to the replica");
    let key = SEND.key(&(3,)).expect("a key");
    let record = on_replica
        .get(&key)
        .await
        .expect("get")
        .expect("replicated");
    assert_eq!(record.status, Status::Completed);
    assert_eq!(send(&store, 3, &runs).await.expect("replayed"), 3);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A running saga's claim of `action`'s key for `(1,)`, on `store`: claimed with `lease`
/// (taken over when stale) and its log's status written. Its key and token.
pub(crate) async fn a_running_saga(
    store: &RedisStore,
    action: &'static str,
    lease: std::time::Duration,
) -> (idem_runtime::Key, idem_runtime::store::FencingToken) {
    use idem_runtime::store::{
        Claim, ClaimRequest, OnStale, Ownership, SagaStatus, SagaStore, SagaWrite, Store,
    };
    use idem_runtime::{Action, Fingerprint};

    let key = Action::new(action).key(&(1,)).expect("key");
    let Claim::Acquired { token, .. } = store
        .claim(&ClaimRequest {
            key: &key,
            fingerprint: &Fingerprint::from(key),
            action,
            lease,
            ttl: std::time::Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        })
        .await
        .unwrap()
    else {
        panic!("a free key is acquired");
    };
    let running = SagaWrite::Status {
        status: SagaStatus::Running,
        error: None,
    };
    assert_eq!(
        store
            .write_saga(&key, "saga-1", token, running)
            .await
            .unwrap(),
        Ownership::Held
    );
    (key, token)
}

/// The intent of step `index` of a test's saga (`step-<index>`, no arguments), before its
/// side effect.
pub(crate) fn a_started_step(index: u32) -> idem_runtime::store::StepRecord {
    idem_runtime::store::StepRecord {
        index,
        name: format!("step-{index}"),
        key: idem_runtime::Action::new("a_step")
            .key(&(index,))
            .expect("a key"),
        irreversible: false,
        args: b"[]".to_vec(),
        state: idem_runtime::store::StepState::Started,
        output: None,
        error: None,
    }
}

/// A connection of its own to the shared server, for what a test reads or writes by hand,
/// and the name of `key`'s `suffix` key in the store's layout:
/// `<prefix>{<bucket>}:<key><suffix>`.
async fn by_hand(
    store: &RedisStore,
    key: &idem_runtime::Key,
    suffix: &str,
) -> (::redis::aio::MultiplexedConnection, String) {
    let server = RedisServer::shared().expect("the server");
    let client = ::redis::Client::open(server.url()).expect("a client");
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    let hex = key.to_string();
    (
        connection,
        format!("{}{{{}}}:{hex}{suffix}", store.prefix(), &hex[..3]),
    )
}

/// A saga's claim whose owner lost its lease is parked for review (its lease end cleared);
/// when that owner records its outcome after all, the saga's log takes the record's TTL with
/// it, instead of outliving it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_parked_sagas_claim_completed_takes_its_saga_log_with_it() {
    use std::time::{Duration, Instant};

    use idem_runtime::store::{
        Claim, ClaimRequest, OnStale, Ownership, SagaStore, SagaWrite, Store, StoredOutcome,
    };
    use idem_runtime::Fingerprint;

    let Some(store) = fresh().await else {
        return;
    };
    let (key, token) = a_running_saga(&store, "parked_saga", Duration::from_millis(200)).await;
    // Once the lease has run out, the next caller parks the key for review.
    let fingerprint = Fingerprint::from(key);
    let review = ClaimRequest {
        key: &key,
        fingerprint: &fingerprint,
        action: "parked_saga",
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::Review,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.claim(&review).await.unwrap() {
            Claim::NeedsReview { .. } => break,
            Claim::InProgress { .. } => {}
            other => panic!("the key is held, then parked: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Parking closed the owner's list of step writes: its next step's write is refused.
    let step = a_started_step(0);
    let written = store
        .write_saga(&key, "saga-1", token, SagaWrite::Step(&step))
        .await
        .unwrap();
    assert_eq!(
        written,
        Ownership::Lost,
        "a parked saga's owner writes no step"
    );
    let recorded = store
        .complete(
            &key,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(recorded, Ownership::Held);

    // The log's head and its closed log (the owner's list, closed by the parking).
    for suffix in [":s", ":log"] {
        let (mut connection, name) = by_hand(&store, &key, suffix).await;
        let exists: i64 = ::redis::cmd("EXISTS")
            .arg(&name)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(exists, 1, "{name} is there");
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&name)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "{name} expires with the record, PTTL {ttl}");
    }
}

/// A saga step's write by its owner is one `RPUSHX` to the owner's own list; a takeover moves
/// that list onto the saga's closed log in the same script, so the old owner's next write
/// finds no list and is refused (`Lost`), the log reads the same before and after, and the
/// result closes the new owner's list the same way, after the first owner's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_owners_step_writes_are_its_own_list_until_taken_over() {
    use std::time::{Duration, Instant};

    use idem_runtime::store::{
        Claim, ClaimRequest, OnStale, Ownership, SagaStore, SagaWrite, StepRecord, StepState,
        Store, StoredOutcome,
    };
    use idem_runtime::{Action, Fingerprint};

    let Some(store) = fresh().await else {
        return;
    };
    let (key, old) = a_running_saga(&store, "owner_list", Duration::from_millis(200)).await;
    let (raw, pattern) = by_hand(&store, &key, ":log*").await;
    let (_, steps) = by_hand(&store, &key, ":steps").await;
    let (_, closed) = by_hand(&store, &key, ":log").await;
    let lists = || {
        let pattern = pattern.clone();
        let mut raw = raw.clone();
        async move {
            let mut found: Vec<String> = ::redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut raw)
                .await
                .expect("KEYS");
            found.sort();
            found
        }
    };
    let mut step = StepRecord {
        index: 0,
        name: "charge".into(),
        key: Action::new("charge").key(&(1,)).expect("a key"),
        irreversible: false,
        args: b"[1999]".to_vec(),
        state: StepState::Started,
        output: None,
        error: None,
    };
    let write = |token, step: StepRecord| {
        let store = store.clone();
        async move {
            store
                .write_saga(&key, "saga-1", token, SagaWrite::Step(&step))
                .await
                .expect("write")
        }
    };
    assert_eq!(write(old, step.clone()).await, Ownership::Held);
    let owned = lists().await;
    assert_eq!(owned.len(), 1, "the owner's list: {owned:?}");
    assert!(owned[0].contains(&format!(":log:{old}:")), "{owned:?}");
    let in_hash: i64 = ::redis::cmd("EXISTS")
        .arg(&steps)
        .query_async(&mut raw.clone())
        .await
        .expect("EXISTS");
    assert_eq!(in_hash, 0, "the step went to the list, not the hash");
    let before = store.read_saga(&key).await.expect("read").expect("a log");
    assert_eq!(before.steps, vec![step.clone()]);

    // The lease runs out; the next caller takes the saga over.
    let fingerprint = Fingerprint::from(key);
    let request = ClaimRequest {
        key: &key,
        fingerprint: &fingerprint,
        action: "owner_list",
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        match store.claim(&request).await.expect("claim") {
            Claim::Acquired { token, resumed } => {
                assert!(resumed, "a takeover");
                break token;
            }
            Claim::InProgress { .. } => {}
            other => panic!("the key is held, then taken over: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        lists().await,
        std::slice::from_ref(&closed),
        "the takeover closed the list"
    );
    let after = store.read_saga(&key).await.expect("read").expect("a log");
    assert_eq!(after.steps, before.steps);
    assert!(after.updated_at >= before.updated_at);

    // The old owner's next write finds no list: refused, and nothing of it lands.
    step.state = StepState::Done;
    step.output = Some(b"{\"charge\":\"ch_1\"}".to_vec());
    assert_eq!(write(old, step.clone()).await, Ownership::Lost);
    assert_eq!(
        lists().await,
        std::slice::from_ref(&closed),
        "nothing of the old owner's"
    );
    let unchanged = store.read_saga(&key).await.expect("read").expect("a log");
    assert_eq!(unchanged.steps, before.steps);

    // The new owner's writes go to its own list, and its result closes it.
    assert_eq!(write(new, step.clone()).await, Ownership::Held);
    let owned = lists().await;
    assert!(
        owned.len() == 2 && owned[0] == closed && owned[1].contains(&format!(":log:{new}:")),
        "{owned:?}"
    );
    let held = store
        .complete(
            &key,
            new,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert_eq!(held, Ownership::Held);
    assert_eq!(
        lists().await,
        std::slice::from_ref(&closed),
        "the result closed the list"
    );
    let entries: i64 = ::redis::cmd("LLEN")
        .arg(&closed)
        .query_async(&mut raw.clone())
        .await
        .expect("LLEN");
    // The first owner's mark and intent (5 fields), the second's write (6 fields).
    assert_eq!(
        entries,
        1 + (1 + 2 * 5) + (1 + 2 * 6),
        "both owners' writes, in order"
    );
    let done = store.read_saga(&key).await.expect("read").expect("a log");
    assert_eq!(done.steps, vec![step]);
}

/// An owner writing steps as fast as it can while a second caller takes its saga over: the
/// close and the change of owner are one atomic step, so every write the old owner was told
/// `Held` is in the log afterwards, and none it was told `Lost` (nor any after) is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_takeover_during_step_writes_keeps_exactly_the_held_ones() {
    use std::time::Duration;

    use idem_runtime::store::{
        Claim, ClaimRequest, OnStale, Ownership, SagaStore, SagaWrite, Store,
    };
    use idem_runtime::Fingerprint;

    let Some(store) = fresh().await else {
        return;
    };
    let (key, old) = a_running_saga(&store, "raced_list", Duration::from_millis(150)).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            for index in 0u32.. {
                let step = a_started_step(index);
                let written = store
                    .write_saga(&key, "saga-1", old, SagaWrite::Step(&step))
                    .await
                    .expect("write");
                if written == Ownership::Lost {
                    return held;
                }
                held.push(index);
            }
            unreachable!("the writer loses its claim")
        })
    };
    let fingerprint = Fingerprint::from(key);
    let request = ClaimRequest {
        key: &key,
        fingerprint: &fingerprint,
        action: "raced_list",
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.claim(&request).await.expect("claim") {
            Claim::Acquired { .. } => break,
            Claim::InProgress { .. } => {}
            other => panic!("the key is held, then taken over: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ran out"
        );
        tokio::task::yield_now().await;
    }
    let held = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops")
        .expect("the writer");
    assert!(!held.is_empty(), "the owner wrote before it was taken over");
    let log = store.read_saga(&key).await.expect("read").expect("a log");
    let logged: Vec<u32> = log.steps.iter().map(|step| step.index).collect();
    assert_eq!(logged, held, "exactly the writes told Held");
}

/// A released saga claim's owner writes no more steps: the release closed its list of step
/// writes, so its next `RPUSHX` finds none and the script says the claim is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_released_sagas_owner_writes_no_step() {
    use std::time::Duration;

    use idem_runtime::store::{Ownership, SagaStore, SagaWrite, Store};

    let Some(store) = fresh().await else {
        return;
    };
    let (key, token) = a_running_saga(&store, "released_saga", Duration::from_secs(60)).await;
    let write = |index| {
        let store = store.clone();
        async move {
            let step = a_started_step(index);
            store
                .write_saga(&key, "saga-1", token, SagaWrite::Step(&step))
                .await
                .expect("a step write")
        }
    };
    assert_eq!(write(0).await, Ownership::Held);
    assert_eq!(
        store.release(&key, token).await.expect("release"),
        Ownership::Held
    );
    assert_eq!(write(1).await, Ownership::Lost, "released: no more steps");
    let log = store.read_saga(&key).await.expect("read").expect("a log");
    let logged: Vec<u32> = log.steps.iter().map(|step| step.index).collect();
    assert_eq!(
        logged,
        [0],
        "the step written before the release, not the one after"
    );
}

/// A saga's log write reads its record's lead (status, token, claim id) without decoding
/// the record; a record that is not one of idem's is still an error there, never taken for
/// a claim that another owner holds (`Ownership::Lost` would stop the saga quietly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_saga_write_over_a_corrupt_record_is_an_error() {
    use std::time::Duration;

    use idem_runtime::store::{SagaStatus, SagaStore, SagaWrite};

    let Some(store) = fresh().await else {
        return;
    };
    let (key, token) = a_running_saga(&store, "corrupt_saga", Duration::from_secs(60)).await;
    let (mut connection, record) = by_hand(&store, &key, ":r").await;
    // The record's lead: `p|<token>|<claim id>|`.
    let held: String = ::redis::cmd("GET")
        .arg(&record)
        .query_async(&mut connection)
        .await
        .expect("GET");
    let lead: String = held.split_inclusive('|').take(3).collect();
    assert!(lead.starts_with(&format!("p|{token}|")), "{held}");
    // Not a record at all, and one that leads as the owner's record does but whose rest is
    // not a record's: the second passes the lead's check, and must still be an error.
    for corrupt in ["not a record".to_owned(), format!("{lead}junk")] {
        ::redis::cmd("SET")
            .arg(&record)
            .arg(&corrupt)
            .query_async::<()>(&mut connection)
            .await
            .expect("SET");
        let running = SagaWrite::Status {
            status: SagaStatus::Running,
            error: None,
        };
        let written = store.write_saga(&key, "saga-1", token, running).await;
        assert!(
            written
                .as_ref()
                .is_err_and(|e| e.to_string().contains("corrupt")),
            "{corrupt}: {written:?}"
        );
    }
}

/// A store written by an older idem (Redis layout 1: a record named `<prefix>{<key>}:r`, one
/// index of running sagas, no claim id) is refused by `connect`, with what to do, never
/// misread as empty; `migrate_layout` moves it, after which its result replays and its
/// running saga is found by recovery. A layout from a newer idem is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_older_layout_is_refused_until_migrated() {
    use std::time::Duration;

    use idem_runtime::store::{Claim, ClaimRequest, OnStale, SagaStore, Store, StoredOutcome};
    use idem_runtime::{Action, Fingerprint};

    let Some(server) = RedisServer::shared() else {
        return;
    };
    let prefix = format!("old{}:", unique());
    let client = ::redis::Client::open(server.url()).expect("a client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    let old = Action::new("old");
    let (done, running) = (
        old.key(&(1,)).expect("a key"),
        old.key(&(2,)).expect("a key"),
    );
    let fingerprint = |key| {
        Fingerprint::from(key)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let v1 = |status: &str, token: u32, lease_end: u64, outcome: &str, key, result: &str| {
        format!(
            "{status}|{token}|{lease_end}|86400000|1764979200000|{}|{outcome}|3|old{result}",
            fingerprint(key)
        )
    };
    let mut pipe = ::redis::pipe();
    pipe.cmd("SET")
        .arg(format!("{prefix}tokens"))
        .arg(7)
        .ignore();
    pipe.cmd("SET")
        .arg(format!("{prefix}{{{done}}}:r"))
        .arg(v1("c", 6, 0, "ok", done, "{\"n\":1}"))
        .arg("PX")
        .arg(600_000)
        .ignore();
    // A saga's claim whose owner died long ago: its lease end is in the record.
    pipe.cmd("SET")
        .arg(format!("{prefix}{{{running}}}:r"))
        .arg(v1("p", 7, 1_000, "-", running, ""))
        .ignore();
    pipe.cmd("HSET")
        .arg(format!("{prefix}{{{running}}}:s"))
        .arg(&[("id", "saga-1"), ("status", "running"), ("updated", "1")])
        .ignore();
    pipe.cmd("HSET")
        .arg(format!("{prefix}{{{running}}}:steps"))
        .arg(&[
            ("0:name", "charge".to_owned()),
            ("0:key", done.to_string()),
            ("0:irreversible", "0".to_owned()),
            ("0:args", "[]".to_owned()),
            ("0:state", "started".to_owned()),
        ])
        .ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}sagas"))
        .arg(0)
        .arg(running.to_string())
        .ignore();
    pipe.query_async::<()>(&mut raw)
        .await
        .expect("write layout 1");

    let builder = RedisStore::builder(server.url()).prefix(&prefix);
    let refused = builder.clone().connect().await.expect_err("layout 1");
    assert!(
        refused.to_string().contains("older idem") && refused.to_string().contains("migrate"),
        "{refused}"
    );

    // A handle given the prefix after `connect` (which checked another) refuses at its first
    // claim, rather than mark the old store as new and miss its records.
    let late = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_prefix(&prefix);
    let fingerprint = Fingerprint::from(done);
    let request = ClaimRequest {
        key: &done,
        fingerprint: &fingerprint,
        action: "old",
        lease: Duration::from_secs(10),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let refused = late.claim(&request).await.expect_err("layout 1");
    assert!(refused.to_string().contains("older idem"), "{refused}");

    let moved = builder.clone().migrate_layout().await.expect("migrate");
    assert_eq!(
        (
            moved.from_layout,
            moved.records,
            moved.saga_logs,
            moved.running_sagas
        ),
        (1, 2, 1, 1)
    );
    let again = builder.clone().migrate_layout().await.expect("again");
    assert_eq!((again.from_layout, again.records), (3, 0));
    let leftover: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!(
            "{prefix}{{????????????????????????????????????????????????????????????????}}*"
        ))
        .query_async(&mut raw)
        .await
        .expect("KEYS");
    assert!(leftover.is_empty(), "layout-1 names left: {leftover:?}");

    // The moved keys kept their expiry: the result its TTL, the saga's claim none.
    let hex = |key: idem_runtime::Key| {
        let hex = key.to_string();
        format!("{prefix}{{{}}}:{hex}:r", &hex[..3])
    };
    let (result_ttl, saga_ttl): (i64, i64) = ::redis::pipe()
        .cmd("PTTL")
        .arg(hex(done))
        .cmd("PTTL")
        .arg(hex(running))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!((1..=600_000).contains(&result_ttl), "{result_ttl}");
    assert_eq!(saga_ttl, -1, "a saga's claim never expires");

    let store = builder.connect().await.expect("layout 3 now");
    let claim = store.claim(&request).await.expect("claim");
    assert!(
        matches!(
            &claim,
            Claim::Completed { outcome: StoredOutcome::Ok(bytes), .. } if bytes == b"{\"n\":1}"
        ),
        "the old result replays: {claim:?}"
    );
    let stale = store.stale_sagas(10).await.expect("stale sagas");
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!((stale[0].key, stale[0].id.as_str()), (running, "saga-1"));
    let log = store
        .read_saga(&running)
        .await
        .expect("read")
        .expect("a log");
    assert_eq!(log.steps.len(), 1);

    ::redis::cmd("SET")
        .arg(format!("{prefix}layout"))
        .arg("4")
        .query_async::<()>(&mut raw)
        .await
        .expect("SET");
    let newer = RedisStore::builder(server.url())
        .prefix(&prefix)
        .connect()
        .await
        .expect_err("a newer layout");
    assert!(newer.to_string().contains("newer idem"), "{newer}");
}

/// A store of layout 2 (this layout's keys, a saga's steps written into `:steps` by a script)
/// is refused until migrated: an agent of layout 2 taking a saga over would neither read nor
/// close its owner's list of step writes. The migration only marks it, and its running saga's
/// steps read as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_layout_two_store_is_refused_until_marked() {
    use idem_runtime::store::SagaStore;
    use idem_runtime::Action;

    let Some(server) = RedisServer::shared() else {
        return;
    };
    let prefix = format!("two{}:", unique());
    let client = ::redis::Client::open(server.url()).expect("a client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    let saga = Action::new("two").key(&(1,)).expect("a key");
    let hex = saga.to_string();
    let name = |suffix: &str| format!("{prefix}{{{}}}:{hex}{suffix}", &hex[..3]);
    let step = [
        ("0:name", "charge"),
        ("0:key", &hex),
        ("0:irreversible", "0"),
        ("0:args", "[1]"),
        ("0:state", "done"),
        ("0:output", "{}"),
    ];
    ::redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}layout"))
        .arg("2")
        .ignore()
        .cmd("INCRBY")
        .arg(format!("{prefix}tokens"))
        .arg(5)
        .ignore()
        .cmd("HSET")
        .arg(name(":s"))
        .arg(&[("id", "saga-2"), ("status", "running"), ("updated", "1")])
        .ignore()
        .cmd("HSET")
        .arg(name(":steps"))
        .arg(&step)
        .ignore()
        .query_async::<()>(&mut raw)
        .await
        .expect("write layout 2");

    let builder = RedisStore::builder(server.url()).prefix(&prefix);
    let refused = builder.clone().connect().await.expect_err("layout 2");
    assert!(
        refused.to_string().contains("layout 2") && refused.to_string().contains("migrate"),
        "{refused}"
    );
    let marked = builder.clone().migrate_layout().await.expect("migrate");
    assert_eq!(
        (marked.from_layout, marked.records, marked.saga_logs),
        (2, 0, 0)
    );
    let layout: String = ::redis::cmd("GET")
        .arg(format!("{prefix}layout"))
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert_eq!(layout, "3");
    let store = builder.connect().await.expect("layout 3 now");
    let log = store.read_saga(&saga).await.expect("read").expect("a log");
    assert_eq!(
        (log.steps.len(), log.steps[0].output.as_deref()),
        (1, Some(&b"{}"[..]))
    );
}

/// What the docs' table says of one Redis server without its append-only file: a restart
/// forgets every record, so each call retried after it runs its body again. (With
/// `appendfsync always`, `tests/it/server_faults.rs` shows a restart duplicating nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn without_its_append_only_file_a_restarted_redis_runs_every_retried_body_again() {
    let Some(server) = RedisServer::own_with(&[]) else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let runs = std::sync::atomic::AtomicU32::new(0);
    for n in 0..20 {
        send(&store, n, &runs).await.expect("a call");
        send(&store, n, &runs).await.expect("a replay");
    }
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 20);

    server.stop().expect("stop redis");
    server
        .restart()
        .expect("start it again, with nothing on disk");
    // Past the age of the handle's block of tokens (one second), so that its next claim
    // reserves a new block and makes the token counter again on the empty server.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut retried = 0;
    while retried < 20 {
        match send(&store, retried, &runs).await {
            Ok(_) => retried += 1,
            Err(error) => assert!(std::time::Instant::now() < deadline, "{error}"),
        }
    }
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        40,
        "every retried body ran a second time"
    );
    // An agent started after the restart finds the counter the running one made again, and
    // must not take the emptied server for an older idem's layout (the torture harness met
    // this: every restarted agent refused to start).
    let restarted = RedisStore::connect(&server.url())
        .await
        .expect("an agent started after the restart connects");
    send(&restarted, 0, &runs).await.expect("and replays");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 40);
}

/// Agents starting together on a prefix nobody used: each marks the layout before its first
/// token reservation, while the others check it, and none of them takes the prefix for an
/// older idem's (a race the fleet test met: the mark read before another agent made it, the
/// token counter read after that agent drew from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn agents_starting_together_on_a_new_prefix_all_claim() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    for round in 0..20 {
        let prefix = format!("together{}:", unique());
        let mut handles = Vec::new();
        for _ in 0..8 {
            handles.push(
                RedisStore::connect(&server.url())
                    .await
                    .expect("connect")
                    .with_prefix(&prefix),
            );
        }
        let runs = std::sync::atomic::AtomicU32::new(0);
        // Each agent a round trip or so behind the one before: one checks the prefix while
        // another marks it and draws its first tokens.
        let calls = handles.iter().enumerate().map(|(n, store)| {
            let runs = &runs;
            async move {
                let behind = std::time::Duration::from_micros(150 * n as u64);
                tokio::time::sleep(behind).await;
                send(store, u32::try_from(n).expect("small"), runs).await
            }
        });
        for (n, answer) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            answer.unwrap_or_else(|e| panic!("round {round}, agent {n}: {e}"));
        }
    }
}
