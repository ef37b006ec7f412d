//! `PostgresStore` across a failover: a primary and a streaming standby that each test starts
//! for itself, the primary killed while calls run, the standby promoted, and the store (the
//! same handle, on a multi-host URL with `target_session_attrs=read-write`) reconnecting by
//! itself. Also a write whose answer never came back: the store reads the record back before
//! it answers.
//!
//! The figures the tests print (failover time, calls failed, calls run twice) are the ones in
//! `docs/postgres.md`; `--nocapture` shows them:
//!
//! ```text
//! cargo test -p idem-runtime --all-features --test runtime -- postgres_failover --nocapture
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_runtime::conformance::servers::PostgresServer;
use idem_runtime::store::{Claim, Ownership, PostgresStore, Status, Store, StoredOutcome};
use idem_runtime::{observe, Action, Disposition, Error, Fingerprint, OnConflict, Outcome};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::postgres::request;

/// How long a statement may run: long enough to ride out a failover (a fraction of a second
/// here), short enough that a test that breaks ends soon.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest any condition of these tests is waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A primary and its standby, each shared with blocking tasks (the servers' controls wait
/// with `std::thread::sleep`, so they run on `spawn_blocking`, beside the calls).
struct Pair {
    primary: Arc<PostgresServer>,
    standby: Arc<PostgresServer>,
}

impl Pair {
    /// A primary and one streaming standby, replicating synchronously or not; `None` when
    /// PostgreSQL is not installed here (skipped).
    async fn start(synchronous: bool) -> Option<Pair> {
        let pair = tokio::task::spawn_blocking(move || {
            let primary = PostgresServer::primary()?;
            let standby = primary.start_standby("standby1").expect("a standby");
            if synchronous {
                primary
                    .replicate_synchronously(&[&standby])
                    .expect("synchronous replication");
            }
            Some(Pair {
                primary: Arc::new(primary),
                standby: Arc::new(standby),
            })
        })
        .await
        .expect("the servers start");
        pair
    }

    fn url(&self) -> String {
        PostgresServer::failover_url(&[&self.primary, &self.standby])
    }

    /// A store on both servers, as a fleet would configure it.
    async fn store(&self) -> PostgresStore {
        PostgresStore::builder(self.url())
            .statement_timeout(STATEMENT_TIMEOUT)
            .connect()
            .await
            .expect("connect through the multi-host URL")
    }

    /// Kills the primary, and returns when its processes are gone.
    async fn kill_primary(&self) {
        on(&self.primary, PostgresServer::kill).await;
    }

    /// Promotes the standby, on a blocking task; it ends when the standby takes writes.
    fn promote_standby(&self) -> tokio::task::JoinHandle<()> {
        let standby = Arc::clone(&self.standby);
        tokio::task::spawn_blocking(move || standby.promote().expect("promote the standby"))
    }

    /// Kills the primary and promotes the standby; returns when the standby takes writes.
    async fn fail_over(&self) {
        self.kill_primary().await;
        self.promote_standby().await.expect("the promotion");
    }
}

/// Runs `control` on `server` on a blocking task.
async fn on<T: Send + 'static>(
    server: &Arc<PostgresServer>,
    control: impl FnOnce(&PostgresServer) -> Result<T, String> + Send + 'static,
) -> T {
    let server = Arc::clone(server);
    tokio::task::spawn_blocking(move || control(&server))
        .await
        .expect("the control task")
        .expect("the server control")
}

/// The pid of the store's backend whose commit waits for the synchronous standby, once
/// there is one.
async fn waiting_for_the_standby(primary: &Arc<PostgresServer>) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let pid = on(primary, |server| {
            server.sql(
                "SELECT pid FROM pg_stat_activity
                 WHERE application_name = 'idem' AND wait_event = 'SyncRep'",
            )
        })
        .await;
        if !pid.trim().is_empty() {
            return pid.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no commit waits for the standby");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cuts the connection of the backend `pid` (`pg_terminate_backend`): one waiting for the
/// standby has committed locally, and PostgreSQL says so only in a WARNING before it closes
/// the connection.
async fn cut(primary: &Arc<PostgresServer>, pid: String) {
    let said = on(primary, move |server| {
        server.sql(&format!("SELECT pg_terminate_backend({pid})"))
    })
    .await;
    assert_eq!(said.trim(), "t", "the backend was terminated");
}

/// A commit whose answer never came back (the connection cut once the COMMIT had been made,
/// while it waited for the synchronous standby) is read back before the store answers:
/// `complete` and `release` answer as if their commit had answered, since the record shows
/// that it did. A claim whose answer was lost is not taken for this caller's (its token was
/// never seen): the store says so, naming the key, and the claim runs out with its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_write_whose_answer_was_lost_is_read_back() {
    let Some(pair) = Pair::start(true).await else {
        return;
    };
    let store = pair.store().await;
    let sent = StoredOutcome::Ok(b"\"sent\"".to_vec());
    let ttl = Duration::from_secs(3600);

    // complete: committed, then cut.
    let key = Action::new("read_back").key(&("complete",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    let Claim::Acquired { token, .. } = store.claim(&request(&key, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    on(&pair.primary, PostgresServer::pause_replication).await;
    let completing = tokio::spawn({
        let (store, sent) = (store.clone(), sent.clone());
        async move { store.complete(&key, token, sent, ttl).await }
    });
    let pid = waiting_for_the_standby(&pair.primary).await;
    cut(&pair.primary, pid).await;
    let completed = completing.await.expect("the task");
    on(&pair.primary, PostgresServer::resume_replication).await;
    assert_eq!(
        completed.expect("the record shows the result: no error"),
        Ownership::Held
    );
    let record = store.get(&key).await.expect("get").expect("the record");
    assert_eq!(record.status, Status::Completed);
    assert_eq!(record.outcome, Some(sent.clone()));

    // release: committed, then cut.
    let key = Action::new("read_back").key(&("release",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    let Claim::Acquired { token, .. } = store.claim(&request(&key, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    on(&pair.primary, PostgresServer::pause_replication).await;
    let releasing = tokio::spawn({
        let store = store.clone();
        async move { store.release(&key, token).await }
    });
    let pid = waiting_for_the_standby(&pair.primary).await;
    cut(&pair.primary, pid).await;
    let released = releasing.await.expect("the task");
    on(&pair.primary, PostgresServer::resume_replication).await;
    assert_eq!(
        released.expect("the record shows the release: no error"),
        Ownership::Held
    );
    assert_eq!(store.get(&key).await.expect("get"), None, "released");

    // A claim: committed, then cut. Whose it is, the record cannot say.
    let key = Action::new("read_back").key(&("claim",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    on(&pair.primary, PostgresServer::pause_replication).await;
    let claiming = tokio::spawn({
        let store = store.clone();
        async move { store.claim(&request(&key, &fingerprint)).await }
    });
    let pid = waiting_for_the_standby(&pair.primary).await;
    cut(&pair.primary, pid).await;
    let claimed = claiming.await.expect("the task");
    on(&pair.primary, PostgresServer::resume_replication).await;
    let error = claimed.expect_err("a claim whose answer was lost is not this caller's");
    assert!(matches!(error, Error::Store { .. }), "{error:?}");
    assert_eq!(error.key(), Some(&key));
    assert!(error.to_string().contains("answer was lost"), "{error}");
    let record = store
        .get(&key)
        .await
        .expect("get")
        .expect("the claim landed");
    assert_eq!(record.status, Status::InProgress);
}

/// A body that runs, its output, and how often it ran: one per key.
#[derive(Default)]
struct Ledger {
    runs: Mutex<HashMap<String, u32>>,
}

impl Ledger {
    /// Counts a run of the body for `key` and returns its output, which says which run it is.
    fn run(&self, key: &str) -> String {
        let mut runs = self.runs.lock().unwrap();
        let n = runs.entry(key.to_owned()).or_default();
        *n += 1;
        format!("{key}/run-{n}")
    }

    fn runs(&self, key: &str) -> u32 {
        self.runs.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// What a call's task ends with: its answer, and how `observe` saw it answered.
type Answered = (Result<Outcome<String>, Error>, Option<Disposition>);

/// A call of `action` with `order` whose body counts its run in `ledger`, then waits until
/// the sender returned says it may end: returned once the body runs, with the call's task.
async fn call_held_open(
    store: &PostgresStore,
    action: &'static Action,
    order: &'static str,
    ledger: &Arc<Ledger>,
) -> (JoinHandle<Answered>, oneshot::Sender<()>) {
    let (running, body_runs) = oneshot::channel();
    let (finish, body_may_end) = oneshot::channel::<()>();
    let call = tokio::spawn({
        let (store, ledger) = (store.clone(), Arc::clone(ledger));
        observe(async move {
            action
                .call(&(order,))?
                .run::<String, Error, _>(&store, async move {
                    let output = ledger.run(order);
                    let _ = running.send(());
                    let _ = body_may_end.await;
                    Ok(output)
                })
                .await
        })
    });
    body_runs.await.expect("the body runs");
    (call, finish)
}

/// A call of `action` with `order` whose body counts its run in `ledger`.
async fn call_once(
    store: &PostgresStore,
    action: &Action,
    order: &str,
    ledger: &Arc<Ledger>,
) -> Result<Outcome<String>, Error> {
    action
        .call(&(order,))?
        .run::<String, Error, _>(store, async { Ok(ledger.run(order)) })
        .await
}

static PROBE: Action = Action::new("failover_probe");

/// Calls through `store` (each a fresh key, with an instant body) every 10 ms until one
/// succeeds: the first write after a failover. Returns how many failed before it.
async fn first_successful_write(store: &PostgresStore, started: Instant) -> u32 {
    let mut failed = 0;
    loop {
        let n = started.elapsed().as_nanos() as u64;
        let probe = PROBE
            .call(&("probe", n))
            .expect("key")
            .run::<u64, Error, _>(store, async move { Ok(n) })
            .await;
        match probe {
            Ok(outcome) => {
                assert_eq!(outcome, Outcome::Executed(n));
                return failed;
            }
            Err(_) => failed += 1,
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no write succeeded after the failover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Synchronous replication: a call's body runs while the primary is killed, and ends before
/// the standby is promoted; the body's result is recorded on the promoted standby through
/// the same store handle (it reconnects by itself, and waits for a server that takes writes),
/// and a retry of the call replays it without running the body again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn synchronous_replication_records_a_result_across_a_failover() {
    static SEND: Action = Action::new("failover_sync_send").lease(Duration::from_secs(3));
    let Some(pair) = Pair::start(true).await else {
        return;
    };
    let store = pair.store().await;
    let ledger = Arc::new(Ledger::default());
    let (call, finish) = call_held_open(&store, &SEND, "order-1", &ledger).await;

    // The body ends while no server takes writes: the old primary is gone, the standby is
    // not promoted yet.
    let killed = Instant::now();
    pair.kill_primary().await;
    let _ = finish.send(());
    let promoting = pair.promote_standby();
    let failed = first_successful_write(&store, killed).await;
    let failover = killed.elapsed();
    promoting.await.expect("the promotion");
    let (outcome, how) = call.await.expect("the call's task");
    assert_eq!(
        outcome.expect("the call succeeds"),
        Outcome::Executed("order-1/run-1".to_owned())
    );
    assert_eq!(
        how,
        Some(Disposition::Executed),
        "the result is recorded on the promoted standby (not `ExecutedUnrecorded`)"
    );

    let again = call_once(&store, &SEND, "order-1", &ledger)
        .await
        .expect("the retry");
    assert_eq!(again, Outcome::Replayed("order-1/run-1".to_owned()));
    assert_eq!(ledger.runs("order-1"), 1, "the body ran once");
    println!(
        "synchronous replication, one call: failover (kill to first successful write) {} ms, \
         {failed} probe calls failed meanwhile, the running call recorded, its retry replayed",
        failover.as_millis()
    );
}

/// A call held open in its body across an asynchronous failover whose standby had stopped
/// receiving: its claim is not on the promoted server.
struct HeldAcrossFailover {
    /// The servers (kept: dropping them would stop them).
    pair: Pair,
    store: PostgresStore,
    ledger: Arc<Ledger>,
    /// The held call.
    call: JoinHandle<Answered>,
    /// Lets its body end.
    finish: oneshot::Sender<()>,
}

/// Starts a primary and an asynchronous standby, stops replication once the schema is on the
/// standby, holds a call of `order` open in its body, and fails over. `None` (skipped) where
/// PostgreSQL is not installed.
async fn held_across_a_lagging_failover(
    action: &'static Action,
    order: &'static str,
) -> Option<HeldAcrossFailover> {
    let pair = Pair::start(false).await?;
    let store = pair.store().await;
    // The schema is on the standby; from now on it receives nothing.
    on(&pair.primary, PostgresServer::wait_replayed).await;
    on(&pair.primary, PostgresServer::pause_replication).await;
    let ledger = Arc::new(Ledger::default());
    let (call, finish) = call_held_open(&store, action, order, &ledger).await;
    pair.fail_over().await;
    Some(HeldAcrossFailover {
        pair,
        store,
        ledger,
        call,
        finish,
    })
}

/// Asynchronous replication with a standby that lags: the claim of a running call was never
/// sent to the standby, so the promotion loses it. When the body ends, the call does not
/// answer with its value as if all were well: it fails with `LostOwnership`, naming the key
/// (its result is not recorded). The key is then free on the new primary, so the next call
/// runs the body again: what asynchronous replication costs, and `docs/postgres.md` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn asynchronous_replication_loses_a_claim_and_the_call_says_so() {
    static SEND: Action = Action::new("failover_async_send");
    let Some(HeldAcrossFailover {
        pair: _pair,
        store,
        ledger,
        call,
        finish,
    }) = held_across_a_lagging_failover(&SEND, "order-2").await
    else {
        return;
    };
    let key = SEND.call(&("order-2",)).expect("key").key();
    let claim = store.get(&key).await.expect("get");
    assert_eq!(claim, None, "the promoted standby never had the claim");

    let _ = finish.send(());
    let (outcome, _) = call.await.expect("the call's task");
    let error = outcome.expect_err("a call whose claim was lost is never answered Ok");
    assert!(
        matches!(error, Error::LostOwnership { key: lost, .. } if lost == key),
        "{error:?}"
    );
    assert!(error.to_string().contains(&key.to_string()), "{error}");

    // The rules for a key with no record: the next call runs the body, and records it.
    let again = call_once(&store, &SEND, "order-2", &ledger)
        .await
        .expect("the next call");
    assert_eq!(again, Outcome::Executed("order-2/run-2".to_owned()));
    assert_eq!(
        ledger.runs("order-2"),
        2,
        "the body ran twice: the claim was lost"
    );
    let third = call_once(&store, &SEND, "order-2", &ledger)
        .await
        .expect("the third call");
    assert_eq!(third, Outcome::Replayed("order-2/run-2".to_owned()));
    println!(
        "asynchronous replication, lagging standby: the running call's claim lost at \
         promotion, the call failed with LostOwnership, the next call ran the body again"
    );
}

/// The same loss, the other way round: after the promotion a second call of the key claims
/// it and records its result before the first call's body ends. The promoted standby's token
/// sequence had not seen the lost claim, so without more it hands the same token out again,
/// and the first call's late `complete` would match the second's record and answer `Ok`.
/// Tokens carry the server's timeline: the first call fails with `LostOwnership`, and the
/// recorded result is the second call's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_token_of_the_old_timeline_owns_nothing_after_an_asynchronous_failover() {
    static SEND: Action = Action::new("failover_async_reclaimed");
    let Some(HeldAcrossFailover {
        pair: _pair,
        store,
        ledger,
        call: first,
        finish,
    }) = held_across_a_lagging_failover(&SEND, "order-3").await
    else {
        return;
    };

    let second = call_once(&store, &SEND, "order-3", &ledger)
        .await
        .expect("the second call, on the promoted standby");
    assert_eq!(second, Outcome::Executed("order-3/run-2".to_owned()));

    let _ = finish.send(());
    let (late, _) = first.await.expect("the first call's task");
    assert!(
        matches!(late, Err(Error::LostOwnership { .. })),
        "the first call's token owns nothing on the new timeline: {late:?}"
    );
    let third = call_once(&store, &SEND, "order-3", &ledger)
        .await
        .expect("the third call");
    assert_eq!(third, Outcome::Replayed("order-3/run-2".to_owned()));
}

/// What one attempt of a fleet's call ended with.
#[derive(Debug, Default)]
struct Tally {
    executed: AtomicUsize,
    replayed: AtomicUsize,
    failed: AtomicUsize,
    /// What the failed attempts said.
    errors: Mutex<Vec<String>>,
}

/// A fleet across a failover, synchronous replication: workers call a set of keys, each key
/// several times (duplicates, some at the same moment), bodies taking 40 ms, while the primary
/// is killed and the standby promoted. A call that fails is tried again, as an agent would.
/// Every attempt either runs the body, replays, or fails with an error; every key's body runs
/// exactly once; every value returned is that one run's.
///
/// That holds for a failover shorter than the calls' lease: a body that ended while no server
/// took writes has its result recorded once the standby is promoted, unless a duplicate found
/// its claim's lease run out first and took the key over (and ran the body again, as it
/// should: docs/postgres.md). So the lease is far longer than a failover takes here (a fraction
/// of a second, a few seconds on a loaded machine), and about as long as the store keeps
/// trying to record a result (four statement timeouts); the test checks that the failover was
/// shorter, so that a machine too stuck for that says so rather than failing on a body run
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_fleet_runs_each_body_once_across_a_failover() {
    const LEASE: Duration = Duration::from_secs(20);
    static ORDER: Action = Action::new("failover_fleet")
        .lease(LEASE)
        .on_conflict(OnConflict::Wait(Duration::from_secs(10)));
    // How long one call may take to succeed: a claim made on the primary whose answer the
    // kill cut off is not the caller's (the store cannot tell whose it is), and its key is
    // taken over only once its lease has run out.
    const CALL_PATIENCE: Duration = LEASE.saturating_add(PATIENCE);
    const KEYS: usize = 16;
    const CALLS_PER_KEY: usize = 4;
    const WORKERS: usize = 8;
    let Some(pair) = Pair::start(true).await else {
        return;
    };
    let store = pair.store().await;
    let ledger = Arc::new(Ledger::default());
    let tally = Arc::new(Tally::default());
    // Each key's calls, spread over the queue so that duplicates run at the same time too.
    let queue: Vec<usize> = (0..CALLS_PER_KEY)
        .flat_map(|_| 0..KEYS)
        .collect::<Vec<_>>()
        .chunks(KEYS / 2)
        .flat_map(|chunk| chunk.iter().rev().copied().collect::<Vec<_>>())
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let queue = Arc::new(queue);

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (store, ledger, tally) = (store.clone(), Arc::clone(&ledger), Arc::clone(&tally));
            let (queue, next, done) = (Arc::clone(&queue), Arc::clone(&next), Arc::clone(&done));
            tokio::spawn(async move {
                while let Some(&k) = queue.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let name = format!("order-{k}");
                    let started = Instant::now();
                    loop {
                        let ledger = Arc::clone(&ledger);
                        let body_name = name.clone();
                        let attempt = ORDER
                            .call(&(name.as_str(),))
                            .expect("key")
                            .run::<String, Error, _>(&store, async move {
                                let output = ledger.run(&body_name);
                                tokio::time::sleep(Duration::from_millis(40)).await;
                                Ok(output)
                            })
                            .await;
                        match attempt {
                            Ok(outcome) => {
                                assert_eq!(
                                    outcome.value(),
                                    &format!("{name}/run-1"),
                                    "the value of the key's one run"
                                );
                                let counter = if outcome.is_replayed() {
                                    &tally.replayed
                                } else {
                                    &tally.executed
                                };
                                counter.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Err(error) => {
                                tally.failed.fetch_add(1, Ordering::SeqCst);
                                tally.errors.lock().unwrap().push(error.to_string());
                                assert!(
                                    started.elapsed() < CALL_PATIENCE,
                                    "{name} never succeeded"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Kill the primary once a quarter of the calls are done, with the rest in flight.
    let deadline = Instant::now() + PATIENCE;
    while done.load(Ordering::SeqCst) < (KEYS * CALLS_PER_KEY / 4) as u32 {
        assert!(Instant::now() < deadline, "the fleet does not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    pair.kill_primary().await;
    let promoting = pair.promote_standby();
    let probes_failed = first_successful_write(&store, killed).await;
    let failover = killed.elapsed();
    promoting.await.expect("the promotion");
    assert!(
        failover < LEASE,
        "the failover took {failover:?}, longer than the calls' lease ({LEASE:?}): a body \
         whose result was not recorded by then may rightly run again, which this test does \
         not allow (is the machine stuck?)"
    );
    for worker in workers {
        worker.await.expect("a worker");
    }

    let mut twice = 0;
    for k in 0..KEYS {
        let runs = ledger.runs(&format!("order-{k}"));
        assert_eq!(runs, 1, "order-{k}: its body ran {runs} times");
        twice += runs.saturating_sub(1);
    }
    let (executed, replayed, failed) = (
        tally.executed.load(Ordering::SeqCst),
        tally.replayed.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
    );
    assert_eq!(executed, KEYS, "one call of each key ran its body");
    assert_eq!(
        executed + replayed,
        KEYS * CALLS_PER_KEY,
        "every call succeeded in the end"
    );
    println!(
        "synchronous replication, fleet of {WORKERS} workers, {} calls over {KEYS} keys: \
         failover (kill to first successful write) {} ms; attempts failed {failed} (tried \
         again), probe calls failed {probes_failed}; calls run twice {twice}",
        KEYS * CALLS_PER_KEY,
        failover.as_millis()
    );
    for error in tally.errors.lock().unwrap().iter() {
        println!("  an attempt failed: {error}");
    }
}
