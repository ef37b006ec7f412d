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
    let mut masters = 0;
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
        masters += 1;
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
    assert_eq!(masters, 3, "every master was looked at");
}

// ---- Failover ----------------------------------------------------------------------------

/// Runs a failover test's body, failing the test if it has not ended after 3 minutes: a call
/// or a server that never answers must fail the suite, not hang it (a CI run hung once in
/// `a_killed_master_fails_calls_only_until_its_replica_takes_over`).
async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(std::time::Duration::from_secs(180), test)
        .await
        .expect("the test ended within 3 minutes");
}

/// A call of `action` with argument `n` whose body counts its runs in `ledger` and returns a
/// number no other run returns, so that a replay is told from a second run.
async fn counted_call(
    store: &RedisStore,
    action: &idem_runtime::Action,
    n: u64,
    ledger: &Ledger,
) -> Result<u64, idem_runtime::Error> {
    let call = action.call(&(n,))?;
    let outcome = call
        .run::<u64, idem_runtime::Error, _>(store, async { Ok(ledger.run(n)) })
        .await?;
    Ok(outcome.into_inner())
}

/// How many times each body ran, and a unique number per run.
#[derive(Default)]
struct Ledger {
    runs: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    next: std::sync::atomic::AtomicU64,
}

impl Ledger {
    fn run(&self, n: u64) -> u64 {
        *self.runs.lock().unwrap().entry(n).or_default() += 1;
        self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// The arguments whose body ran more than once.
    fn twice(&self) -> Vec<(u64, u32)> {
        let runs = self.runs.lock().unwrap();
        let mut twice: Vec<(u64, u32)> = runs
            .iter()
            .filter(|(_, runs)| **runs > 1)
            .map(|(n, runs)| (*n, *runs))
            .collect();
        twice.sort_unstable();
        twice
    }

    fn ran(&self, n: u64) -> u32 {
        self.runs.lock().unwrap().get(&n).copied().unwrap_or(0)
    }
}

/// The slot of a key name, as the cluster computes it (`CLUSTER KEYSLOT`).
async fn slot_of(node: &RedisServer, name: &str) -> u16 {
    on_node(node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(name)).await
}

/// The first `count` arguments whose keys (under `action`) live on the master `port` now.
async fn arguments_on(
    cluster: &RedisCluster,
    action: &idem_runtime::Action,
    port: u16,
    count: usize,
) -> Vec<u64> {
    let mut found = Vec::new();
    let mut n = 0;
    while found.len() < count {
        let key = action.key(&(n,)).expect("a key").to_string();
        let slot = slot_of(&cluster.nodes()[0], &format!("{{{}}}", &key[..3])).await;
        if cluster.master_of_slot(slot).map(RedisServer::port) == Some(port) {
            found.push(n);
        }
        n += 1;
    }
    found
}

/// A manual failover (`CLUSTER FAILOVER` sent to a replica) fails no call: calls made across
/// it, through one store handle, all answer, each body once, and the handle goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_manual_failover_fails_no_call() {
    bounded(async {
        let Some(cluster) = RedisCluster::own(Flavor::Redis) else {
            return;
        };
        let store = connect(&cluster.url(), "manual:").await;
        let action = idem_runtime::Action::new("manual_failover");
        let ledger = Ledger::default();
        let master = cluster.master_of_slot(0).expect("a master of slot 0");
        let replica = cluster.replica_of(master).expect("its replica");
        let (master_port, replica_port) = (master.port(), replica.port());
        let on_master = arguments_on(&cluster, &action, master_port, 200).await;

        let calls = async {
            let (mut answered, mut failed) = (Vec::new(), Vec::new());
            // Calls of keys on the master that fails over, and of keys anywhere.
            for n in 0..400u64 {
                let argument = if n % 2 == 0 {
                    on_master[usize::try_from(n / 2).expect("small")]
                } else {
                    1_000_000 + n
                };
                match counted_call(&store, &action, argument, &ledger).await {
                    Ok(result) => answered.push((argument, result)),
                    Err(error) => failed.push((argument, error.to_string())),
                }
            }
            (answered, failed)
        };
        let failover = async {
            // Once the calls are under way.
            while ledger.next.load(std::sync::atomic::Ordering::SeqCst) < 100 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            tokio::task::spawn_blocking(move || {
                let cluster = cluster;
                let replica = cluster
                    .nodes()
                    .iter()
                    .find(|node| node.port() == replica_port)
                    .expect("the replica");
                let started = std::time::Instant::now();
                cluster.fail_over_to(replica).expect("a manual failover");
                let took = started.elapsed();
                (cluster, took)
            })
            .await
            .expect("the failover")
        };
        let ((answered, failed), (cluster, took)) = tokio::join!(calls, failover);
        eprintln!(
            "failover figures: CLUSTER FAILOVER, the replica a master after {} ms, {} calls \
             failed, {} bodies run twice",
            took.as_millis(),
            failed.len(),
            ledger.twice().len()
        );
        assert!(
            failed.is_empty(),
            "calls failed across a manual failover: {failed:?}"
        );
        assert_eq!(ledger.twice(), [], "bodies ran twice");
        assert_eq!(
            cluster.master_of_slot(0).map(RedisServer::port),
            Some(replica_port),
            "the replica serves the slot now"
        );
        // The same handle: every call again replays what the first one recorded, on the
        // promoted master too, and no body ran twice.
        for (argument, result) in answered {
            let again = counted_call(&store, &action, argument, &ledger).await;
            assert_eq!(again.expect("a replay"), result, "argument {argument}");
            assert_eq!(ledger.ran(argument), 1, "argument {argument}");
        }
    })
    .await;
}

/// A master killed with `SIGKILL`: calls of its keys fail only until its replica takes over
/// (3–5 s at `cluster-node-timeout 2000`), then the same store handle works again, and no
/// body runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_killed_master_fails_calls_only_until_its_replica_takes_over() {
    bounded(async {
        use std::time::{Duration, Instant};

        let Some(cluster) = RedisCluster::own(Flavor::Redis) else {
            return;
        };
        let store = connect(&cluster.url(), "killed:").await;
        let action = idem_runtime::Action::new("killed_master");
        let ledger = Ledger::default();
        let master = cluster.master_of_slot(0).expect("a master of slot 0");
        let port = master.port();
        // Keys on the master that is killed: one call each.
        let mut arguments = arguments_on(&cluster, &action, port, 120).await.into_iter();
        let mut next = || arguments.next().expect("enough keys on the master");
        counted_call(&store, &action, next(), &ledger)
            .await
            .expect("a call before the kill");

        master.crash().expect("SIGKILL the master");
        let killed = Instant::now();
        let (mut answered, mut failed) = (Vec::new(), 0u32);
        let back = loop {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no call succeeded 30 s after the kill ({failed} failed)"
            );
            let argument = next();
            // Bounded: a call that never returns would hang the suite instead of failing it (seen
            // once in CI, with the cluster's other nodes no longer knowing each other).
            let call = counted_call(&store, &action, argument, &ledger);
            let answer = tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .unwrap_or_else(|_| panic!("a call did not return within 60 s after the kill"));
            match answer {
                Ok(result) => {
                    answered.push((argument, result));
                    break killed.elapsed();
                }
                Err(_) => failed += 1,
            }
        };
        // From now on, every call works, through the same handle.
        for _ in 0..50 {
            let argument = next();
            let result = counted_call(&store, &action, argument, &ledger)
                .await
                .expect("a call after the failover");
            answered.push((argument, result));
        }
        // Called again, each replays its first answer: its body ran once.
        for (argument, result) in answered {
            let again = counted_call(&store, &action, argument, &ledger).await;
            assert_eq!(again.expect("a replay"), result, "argument {argument}");
        }
        assert_eq!(ledger.twice(), [], "bodies ran twice");
        assert_ne!(
            cluster.master_of_slot(0).map(RedisServer::port),
            Some(port),
            "the replica took over"
        );
        eprintln!(
            "failover figures: SIGKILL of a master, calls on its slots back after {} ms, {failed} \
             calls failed meanwhile, 0 bodies run twice",
            back.as_millis()
        );
    })
    .await;
}

/// A fleet of agents (store handles of their own, waiting for a replica) calls the same keys
/// while a master is killed: every key's body runs exactly once, and every agent gets that
/// run's result, retrying the calls that failed during the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_fleet_across_a_failover_runs_each_body_once() {
    bounded(async {
        use std::time::{Duration, Instant};

        let Some(cluster) = RedisCluster::own(Flavor::Redis) else {
            return;
        };
        const AGENTS: u64 = 4;
        const KEYS: u64 = 60;
        let mut agents = Vec::new();
        for _ in 0..AGENTS {
            agents.push(
                RedisStore::builder(cluster.url())
                    .prefix("fleet:")
                    .wait_for_replicas(1, Duration::from_secs(1))
                    .connect()
                    .await
                    .expect("an agent's store"),
            );
        }
        let action = idem_runtime::Action::new("fleet");
        let ledger = Ledger::default();
        let started = Instant::now();
        let failed = std::sync::atomic::AtomicU32::new(0);
        let agent = |store: &RedisStore, offset: u64| {
            let (action, ledger, failed) = (&action, &ledger, &failed);
            let store = store.clone();
            async move {
                let mut results = Vec::new();
                for i in 0..KEYS {
                    let n = (i + offset * 7) % KEYS;
                    let result = loop {
                        assert!(started.elapsed() < Duration::from_secs(60), "agent stuck");
                        match counted_call(&store, action, n, ledger).await {
                            Ok(result) => break result,
                            Err(_) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    };
                    results.push((n, result));
                    // Spread the calls over the failover.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                results
            }
        };
        // A master killed, its replica promoted, and the killed node started again: it comes
        // back as the new master's replica, which the agents' `WAIT` needs.
        let cluster = std::sync::Arc::new(cluster);
        let kill = {
            let cluster = cluster.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tokio::task::spawn_blocking(move || {
                    let master = cluster.master_of_slot(0).expect("a master");
                    let port = master.port();
                    master.crash().expect("SIGKILL a master");
                    let promoted = Instant::now();
                    while cluster
                        .master_of_slot(0)
                        .is_none_or(|now| now.port() == port)
                    {
                        assert!(promoted.elapsed() < Duration::from_secs(30), "no promotion");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    master.restart().expect("the killed node starts again");
                    cluster
                        .wait_until_healthy()
                        .expect("it rejoins as a replica");
                })
                .await
                .expect("the failover");
            }
        };
        let (_, a, b, c, d) = tokio::join!(
            kill,
            agent(&agents[0], 0),
            agent(&agents[1], 1),
            agent(&agents[2], 2),
            agent(&agents[3], 3)
        );
        assert_eq!(ledger.twice(), [], "bodies ran twice across the failover");
        let mut seen = std::collections::HashMap::new();
        for (n, result) in [a, b, c, d].into_iter().flatten() {
            assert_eq!(
                *seen.entry(n).or_insert(result),
                result,
                "key {n}: every agent gets the one run's result"
            );
        }
        assert_eq!(seen.len() as u64, KEYS);
        eprintln!(
            "failover figures: a fleet of {AGENTS} agents over {KEYS} keys across a SIGKILL \
             failover: {} calls failed and were retried, 0 bodies run twice",
            failed.load(std::sync::atomic::Ordering::SeqCst)
        );
    })
    .await;
}

/// With `wait_for_replicas`, on a cluster: a claim on a master whose replica lags (paused)
/// is not acknowledged by it, so the call fails before its body runs, naming what was not
/// acknowledged; once the replica is back, the same call runs its body once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_claim_a_lagging_replica_did_not_acknowledge_never_runs_its_body() {
    bounded(async {
        use std::time::Duration;

        let Some(cluster) = RedisCluster::own(Flavor::Redis) else {
            return;
        };
        // Room for a replica that keeps up on a loaded machine (200 ms was tight); the refused
        // call waits this long.
        let store = RedisStore::builder(cluster.url())
            .prefix("lagging:")
            .wait_for_replicas(1, Duration::from_secs(2))
            .connect()
            .await
            .expect("connect");
        let action = idem_runtime::Action::new("lagging");
        let ledger = Ledger::default();
        let master = cluster.master_of_slot(0).expect("a master of slot 0");
        let replica = cluster.replica_of(master).expect("its replica");
        let on_master = arguments_on(&cluster, &action, master.port(), 2).await;
        counted_call(&store, &action, on_master[0], &ledger)
            .await
            .expect("a call while the replica keeps up");

        replica.pause().expect("SIGSTOP the replica");
        let refused = counted_call(&store, &action, on_master[1], &ledger).await;
        replica.resume().expect("SIGCONT the replica");
        let error = refused.expect_err("the replica did not acknowledge the claim");
        assert!(
            error
                .to_string()
                .contains("replicas asked for acknowledged it"),
            "{error}"
        );
        assert_eq!(ledger.ran(on_master[1]), 0, "the body did not run");

        // The claim was given back: the call runs once the replica answers again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match counted_call(&store, &action, on_master[1], &ledger).await {
                Ok(_) => break,
                Err(error) => assert!(std::time::Instant::now() < deadline, "{error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ledger.ran(on_master[1]), 1);
    })
    .await;
}

/// `wait_for_replicas_on_disk` on Valkey (`WAITAOF`), with a primary and a replica that keep
/// append-only files: a call runs while the replica writes; with the replica paused its claim
/// is not acknowledged and the body does not run. Redis 7.0 has no `WAITAOF`: `connect`
/// refuses the option there, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_valkey,
    ignore = "valkey-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn waiting_for_replicas_on_disk_uses_waitaof_where_the_server_has_it() {
    bounded(async {
        use std::time::Duration;

        let aof = ["--appendonly", "yes", "--appendfsync", "always"];
        let Some(primary) = RedisServer::own_of(Flavor::Valkey, &aof) else {
            return;
        };
        let replica = RedisServer::replica_of_with(&primary, &aof).expect("a replica");
        // After its first copy the replica rewrites its append-only file; it acknowledges
        // `WAITAOF` once that is done.
        let client = redis::Client::open(primary.url()).expect("a url");
        let mut raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the primary");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, on_disk): ((), (i64, i64)) = redis::pipe()
                .cmd("SET")
                .arg("probe")
                .arg(1)
                .cmd("WAITAOF")
                .arg(0)
                .arg(1)
                .arg(200)
                .query_async(&mut raw)
                .await
                .expect("WAITAOF");
            if on_disk.1 == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica's AOF never acknowledged"
            );
        }
        let store = RedisStore::builder(primary.url())
            // A replica reports how far its append-only file is written about once a second
            // (a `WAITAOF` may wait up to about that long): the timeout leaves room.
            .wait_for_replicas_on_disk(1, Duration::from_secs(5))
            .connect()
            .await
            .expect("connect with WAITAOF");
        let action = idem_runtime::Action::new("on_disk");
        let ledger = Ledger::default();
        counted_call(&store, &action, 1, &ledger)
            .await
            .expect("the replica has it on disk");

        replica.pause().expect("SIGSTOP the replica");
        let refused = counted_call(&store, &action, 2, &ledger).await;
        replica.resume().expect("SIGCONT the replica");
        let error = refused.expect_err("not on the replica's disk");
        assert!(error.to_string().contains("(WAITAOF)"), "{error}");
        assert_eq!(ledger.ran(2), 0, "the body did not run");

        if let Some(redis) = RedisServer::shared() {
            let refused = RedisStore::builder(redis.url())
                .wait_for_replicas_on_disk(1, Duration::from_millis(300))
                .connect()
                .await
                .expect_err("Redis 7.0 has no WAITAOF");
            assert!(refused.to_string().contains("WAITAOF"), "{refused}");
        }
    })
    .await;
}

/// What the docs say of the buckets' spread: the 4,096 bucket tags (`{000}` … `{fff}`), hashed
/// to slots by the cluster itself (`CLUSTER KEYSLOT`), fall on 3 to 30 masters of equal slot
/// ranges within 5 % of an even share each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_buckets_spread_evenly_over_the_masters() {
    let Some(cluster) = RedisCluster::shared(Flavor::Redis) else {
        return;
    };
    let client = redis::Client::open(cluster.nodes()[0].url()).expect("a url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a node");
    let mut pipe = redis::pipe();
    for bucket in 0..4096u32 {
        pipe.cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{bucket:03x}}}"));
    }
    let slots: Vec<u32> = pipe
        .query_async(&mut connection)
        .await
        .expect("CLUSTER KEYSLOT");
    for masters in [3u32, 10, 30] {
        let mut buckets = vec![0u32; masters as usize];
        for slot in &slots {
            buckets[(slot * masters / 16_384) as usize] += 1;
        }
        let even = 4096.0 / f64::from(masters);
        let worst = buckets
            .iter()
            .map(|&n| (f64::from(n) - even).abs() / even)
            .fold(0.0, f64::max);
        assert!(
            worst < 0.05,
            "{masters} masters: {buckets:?}, {:.1} % off an even share",
            worst * 100.0
        );
    }
}

/// The cluster's id of `node` (`CLUSTER MYID`).
async fn id_of(node: &RedisServer) -> String {
    on_node(node, redis::cmd("CLUSTER").arg("MYID")).await
}

/// `command` sent to `node` alone.
async fn on_node<T: redis::FromRedisValue>(node: &RedisServer, command: &redis::Cmd) -> T {
    let client = redis::Client::open(node.url()).expect("a url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a node");
    command
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("a command on {}: {e}", node.port()))
}

/// A slot moving from its master to another, by hand, as `redis-cli --cluster reshard`
/// moves it: the target imports it, the source migrates it, keys move by `MIGRATE`, then both
/// give the slot to the target.
struct MovingSlot<'a> {
    slot: u16,
    source: &'a RedisServer,
    target: &'a RedisServer,
    target_id: String,
}

impl<'a> MovingSlot<'a> {
    /// Starts moving `slot` of `cluster` to another master; no key moves yet.
    async fn start(cluster: &'a RedisCluster, slot: u16) -> MovingSlot<'a> {
        let source = cluster.master_of_slot(slot).expect("the slot's master");
        let target = (0..16384u16)
            .step_by(997)
            .filter_map(|other| cluster.master_of_slot(other))
            .find(|master| master.port() != source.port())
            .expect("another master");
        let (source_id, target_id) = (id_of(source).await, id_of(target).await);
        let mut importing = redis::cmd("CLUSTER");
        importing
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&source_id);
        let () = on_node(target, &importing).await;
        let mut migrating = redis::cmd("CLUSTER");
        migrating
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&target_id);
        let () = on_node(source, &migrating).await;
        MovingSlot {
            slot,
            source,
            target,
            target_id,
        }
    }

    /// Moves the keys `names` of the slot from the source to the target.
    async fn migrate(&self, names: Vec<String>) {
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(self.target.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(names);
        let _: String = on_node(self.source, &migrate).await;
    }

    /// The keys of the slot still on the source.
    async fn left(&self) -> Vec<String> {
        on_node(
            self.source,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(self.slot)
                .arg(1000),
        )
        .await
    }

    /// How many keys of the slot the target holds.
    async fn keys_on_target(&self) -> u64 {
        let mut count = redis::cmd("CLUSTER");
        count.arg("COUNTKEYSINSLOT").arg(self.slot);
        on_node(self.target, &count).await
    }

    /// Moves the keys left and gives the slot to the target.
    async fn finish(&self) {
        let left = self.left().await;
        if !left.is_empty() {
            self.migrate(left).await;
        }
        for node in [self.source, self.target] {
            let mut owned = redis::cmd("CLUSTER");
            owned
                .arg("SETSLOT")
                .arg(self.slot)
                .arg("NODE")
                .arg(&self.target_id);
            let () = on_node(node, &owned).await;
        }
    }
}

/// Calls whose keys' slot is moving to another master run once and are replayed, on a handle
/// that reads first and on one that writes first: a call's claim is one command, and its
/// result one command or a one-key script, each of which follows the cluster's redirection to
/// wherever its key is (a fresh key is made on the target; a result made before the move is
/// read on the source, then on the target once moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn calls_while_their_slot_moves_run_once() {
    calls_while_their_slot_moves_run_once_on(Flavor::Redis).await;
}

/// The same on Valkey, whose results are recorded by `SET … IFEQ`, not a script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_valkey,
    ignore = "valkey-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn calls_while_their_slot_moves_run_once_on_valkey() {
    calls_while_their_slot_moves_run_once_on(Flavor::Valkey).await;
}

async fn calls_while_their_slot_moves_run_once_on(flavor: Flavor) {
    use idem_runtime::store::FirstStep;

    bounded(async {
        let Some(cluster) = RedisCluster::own(flavor) else {
            return;
        };
        let action = idem_runtime::Action::new("moving_call");
        let mut handles = Vec::new();
        for step in [FirstStep::Read, FirstStep::Write] {
            let store = RedisStore::builder(cluster.url())
                .prefix(format!("moving-{step:?}:"))
                .first_step(step)
                .connect()
                .await
                .expect("connect");
            handles.push((step, store, Ledger::default()));
        }
        // The prefix is outside a key's hash tag: the handles' keys of one argument are in
        // one slot. Each handle makes a result before the move.
        let key = action.key(&(1u64,)).expect("a key").to_string();
        let slot = slot_of(&cluster.nodes()[0], &format!("{{{}}}", &key[..3])).await;
        // An argument whose key is in the same bucket (and so the same slot), for calls
        // made while the slot moves.
        let fresh_n = (2u64..)
            .find(|n| action.key(&(*n,)).expect("a key").to_string()[..3] == key[..3])
            .expect("an argument in the bucket");
        let mut before = Vec::new();
        for (_, store, ledger) in &handles {
            before.push(
                counted_call(store, &action, 1, ledger)
                    .await
                    .expect("a call"),
            );
        }

        let moving = MovingSlot::start(&cluster, slot).await;
        for ((step, store, ledger), made) in handles.iter().zip(&before) {
            let replay = counted_call(store, &action, 1, ledger).await;
            assert_eq!(
                replay.expect("a replay"),
                *made,
                "{step:?}: from the source"
            );
        }
        // The results move: each is on the target now, the slot still the source's.
        let results: Vec<String> = handles
            .iter()
            .map(|(step, ..)| format!("moving-{step:?}:{{{}}}:{key}:r", &key[..3]))
            .collect();
        let left = moving.left().await;
        assert!(
            results.iter().all(|r| left.contains(r)),
            "{results:?} in {left:?}"
        );
        moving.migrate(results).await;
        for ((step, store, ledger), made) in handles.iter().zip(&before) {
            let replay = counted_call(store, &action, 1, ledger).await;
            assert_eq!(
                replay.expect("a replay"),
                *made,
                "{step:?}: while the slot moves"
            );
            // A fresh key while the slot moves: made on the target, run once, replayed.
            let fresh = counted_call(store, &action, fresh_n, ledger).await;
            let fresh = fresh.unwrap_or_else(|e| panic!("{step:?}: a fresh call: {e}"));
            let again = counted_call(store, &action, fresh_n, ledger).await;
            assert_eq!(again.expect("its replay"), fresh, "{step:?}: replayed");
        }

        let on_target = moving.keys_on_target().await;
        assert_eq!(on_target, 4, "the 2 moved results and the 2 fresh ones");
        moving.finish().await;
        for ((step, store, ledger), made) in handles.iter().zip(&before) {
            let replay = counted_call(store, &action, 1, ledger).await;
            assert_eq!(replay.expect("a replay"), *made, "{step:?}: after the move");
            assert_eq!(ledger.twice(), [], "{step:?}: no body ran twice");
            assert_eq!(
                (ledger.ran(1), ledger.ran(fresh_n)),
                (1, 1),
                "{step:?}: each ran"
            );
        }
    })
    .await;
}

/// A saga's slot moving to another master while its owner is dead, its record and log head
/// moved and its owner's list of step writes not yet: a takeover, a read or the owner's result
/// in that window does not go ahead without the list (every script names the list among its
/// `KEYS`, so the cluster answers `TRYAGAIN` rather than run it with the list missing), and
/// the owner's writes still land; once the slot has moved, the takeover closes the list, the
/// old owner's next write is refused, and the log holds every write the old owner was told
/// `Held`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_takeover_while_its_slot_moves_waits_for_the_owners_list() {
    a_takeover_while_its_slot_moves_on(Flavor::Redis).await;
}

/// The same on Valkey, whose clusters move slots by the same commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_valkey,
    ignore = "valkey-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_takeover_while_its_slot_moves_waits_for_the_owners_list_on_valkey() {
    a_takeover_while_its_slot_moves_on(Flavor::Valkey).await;
}

async fn a_takeover_while_its_slot_moves_on(flavor: Flavor) {
    use std::time::Duration;

    use idem_runtime::store::{
        Claim, ClaimRequest, FirstStep, OnStale, Ownership, SagaStore, SagaWrite, StoredOutcome,
    };
    use idem_runtime::Fingerprint;

    bounded(async {
        let Some(cluster) = RedisCluster::own(flavor) else {
            return;
        };
        let store = connect(&cluster.url(), "moving:").await;
        let (key, old) =
            super::redis::a_running_saga(&store, "moving_saga", Duration::from_millis(300)).await;
        let write = |token, index| {
            let store = store.clone();
            async move {
                let step = super::redis::a_started_step(index);
                store
                    .write_saga(&key, "saga-1", token, SagaWrite::Step(&step))
                    .await
                    .expect("a step write")
            }
        };
        assert_eq!(write(old, 0).await, Ownership::Held);

        // The owner is dead: its lease ran out, on the server's clock.
        while store.stale_sagas(10).await.expect("stale sagas").is_empty() {
            tokio::task::yield_now().await;
        }

        // The slot starts moving: the record and the log's head go first.
        let hex = key.to_string();
        let bucket = &hex[..3];
        let name = |suffix: &str| format!("moving:{{{bucket}}}:{hex}{suffix}");
        let slot = slot_of(&cluster.nodes()[0], &format!("{{{bucket}}}")).await;
        let source = cluster.master_of_slot(slot).expect("the slot's master");
        // Every key the scripts name, but the owner's list, is made to exist and moves first:
        // a layout-2 steps hash (with a field of step 0's), a closed log, the list a claim or
        // a read names before it knows the owner (token 0, claim id 0). So a script that did
        // not name the owner's list would find all its keys on the target and run there; one
        // that names it is refused until it moves.
        let mut made = redis::pipe();
        made.cmd("HSET")
            .arg(name(":steps"))
            .arg("0:name")
            .arg("step-0")
            .ignore()
            .cmd("RPUSH")
            .arg(name(":log"))
            .arg("+")
            .ignore()
            .cmd("RPUSH")
            .arg(name(":log:0:0"))
            .arg("+")
            .ignore();
        let client = redis::Client::open(source.url()).expect("a url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the source");
        made.query_async::<()>(&mut connection)
            .await
            .expect("the other keys");
        let moving = MovingSlot::start(&cluster, slot).await;
        let moved_first = [":r", ":s", ":steps", ":log", ":log:0:0"];
        moving.migrate(moved_first.map(name).to_vec()).await;

        // A takeover now would have to close a list it cannot reach: it does not happen (its
        // first send runs on the target and answers with the owner; the second, naming the
        // owner's list, is refused).
        let fingerprint = Fingerprint::from(key);
        let request = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "moving_saga",
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::TakeOver,
        };
        // A call's claim, reading first or writing first: one command either way (`GET`,
        // `SET … NX GET`), which follows the cluster's redirections, so that the claim
        // reaches its script.
        for step in [FirstStep::Read, FirstStep::Write] {
            let caller = RedisStore::builder(cluster.url())
                .prefix("moving:")
                .first_step(step)
                .connect()
                .await
                .expect("a second handle");
            let early = caller.claim_without_expiry(&request).await;
            assert!(
                matches!(&early, Err(e) if e.to_string().contains("TryAgain")),
                "{step:?}: no takeover while the owner's list is elsewhere, the script \
                 refused (TRYAGAIN): {early:?}"
            );
        }
        // Nor does a read that would miss the owner's writes, nor the owner's own result
        // (which would have to close its list): each is refused, or sees all.
        let read = store.read_saga(&key).await;
        assert!(
            read.as_ref().map_or(true, |log| log
                .as_ref()
                .is_some_and(|log| log.steps.len() == 1)),
            "a read in the window sees the owner's write or fails: {read:?}"
        );
        let result = store
            .complete(
                &key,
                old,
                StoredOutcome::Ok(b"1".to_vec()),
                Duration::from_secs(60),
            )
            .await;
        assert!(
            result.is_err(),
            "no result while the owner's list is elsewhere: {result:?}"
        );
        // The dead owner's list is still where it was, and still its own.
        assert_eq!(write(old, 1).await, Ownership::Held);

        // The rest moves (the owner's list, the bucket's index of running sagas); the slot is
        // the target's.
        let rest = moving.left().await;
        assert!(
            rest.iter().any(|found| found.starts_with(&name(":log:"))),
            "the owner's list is on the source: {rest:?}"
        );
        moving.finish().await;

        let new = loop {
            match store.claim(&request).await {
                Ok(Claim::Acquired { token, resumed }) => {
                    assert!(resumed, "a takeover");
                    break token;
                }
                // The cluster client learns the slot's new master on a redirection.
                Err(_) | Ok(Claim::InProgress { .. }) => tokio::task::yield_now().await,
                Ok(other) => panic!("the dead owner's saga is taken over: {other:?}"),
            }
        };
        assert!(new > old);
        assert_eq!(
            write(old, 2).await,
            Ownership::Lost,
            "the old owner is refused"
        );
        let log = store.read_saga(&key).await.expect("read").expect("a log");
        let logged: Vec<u32> = log.steps.iter().map(|step| step.index).collect();
        assert_eq!(logged, [0, 1], "every write the old owner was told Held");
    })
    .await;
}
