//! Sagas as a user runs them: steps once, compensation in reverse, retries, saga idempotency,
//! runs after a crash, `recover`, the pivot, and what a step costs in store round trips.

use idem::store::Inspect;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idem::store::{MemoryStore, SagaStatus, StepState, Store};
use idem::{recover, Error, OnConflict, Saga};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

use crate::faulty_store::FaultyStore;
use crate::saga_world::{
    archive_order, charge, crash, create_contract, effects, hang_after, has_contract, keys_seen,
    quick, recover_when_stale, recover_when_stale_with, send_email, set_faults, Faults,
};
use crate::support::ToolError;

/// The error of the saga's own code: a step's error, or idem's.
#[derive(Debug)]
enum OrderError {
    Tool(ToolError),
    Idem(Error),
}

impl From<ToolError> for OrderError {
    fn from(error: ToolError) -> Self {
        OrderError::Tool(error)
    }
}

impl From<Error> for OrderError {
    fn from(error: Error) -> Self {
        OrderError::Idem(error)
    }
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Tool(error) => error.fmt(f),
            OrderError::Idem(error) => error.fmt(f),
        }
    }
}

/// contract → charge → email (the pivot), for `customer`.
fn order<'s>(store: &'s dyn Store, saga: &str) -> Saga<'s> {
    Saga::new(saga)
        .store(store)
        .compensation_retry(quick(3))
        .forward_retry(quick(3))
}

async fn run_order(store: &dyn Store, saga: &str, customer: &str) -> Result<String, OrderError> {
    run_order_of(store, saga, customer, 1999).await
}

async fn run_order_of(
    store: &dyn Store,
    saga: &str,
    customer: &str,
    amount: u64,
) -> Result<String, OrderError> {
    order(store, saga)
        .run(|s| async move {
            let contract = s.step(create_contract(customer, amount)).await?;
            s.step(charge(customer, amount)).await?;
            s.step(send_email(customer)).await?;
            Ok(contract.id)
        })
        .await
}

async fn log_of(store: &dyn Store, saga: &str) -> idem::store::SagaLog {
    let key = idem::Action::new("saga").key(&(saga,)).unwrap();
    store
        .read_saga(&key)
        .await
        .unwrap()
        .expect("the saga's log")
}

fn states(log: &idem::store::SagaLog) -> Vec<(String, StepState)> {
    log.steps
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect()
}

#[tokio::test]
async fn a_step_awaited_on_its_own_is_a_plain_call() {
    let who = "plain-call";
    let first = charge(who, 500).await.unwrap();
    let second = charge(who, 500).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        effects(who),
        ["charge 500 to plain-call", "charge 500 to plain-call"],
        "a plain call is the function itself: no key, no log, no deduplication"
    );
    assert!(keys_seen(who).is_empty());
}

#[tokio::test]
async fn a_saga_runs_each_step_once_and_replays_its_outcome() {
    let (store, who) = (MemoryStore::new(), "happy");
    let id = run_order(&store, "order-happy", who).await.unwrap();
    assert_eq!(id, "contract for happy (1999)");
    let expected = [
        "contract for happy (1999)",
        "charge 1999 to happy",
        "email to happy",
    ];
    assert_eq!(effects(who), expected);

    let log = log_of(&store, "order-happy").await;
    assert_eq!(log.status, SagaStatus::Completed);
    assert!(log.steps.iter().all(|s| s.state == StepState::Done));
    // Each body saw its own key, the one in the log: that is what goes downstream.
    let logged: Vec<_> = log.steps.iter().map(|s| s.key).collect();
    let seen: Vec<_> = keys_seen(who).into_iter().map(|(_, key)| key).collect();
    assert_eq!(seen, logged);
    assert_eq!(logged.len(), 3);
    assert!(logged[0] != logged[1] && logged[1] != logged[2]);

    // The same saga again: its recorded outcome, and no step runs.
    let again = run_order(&store, "order-happy", who).await.unwrap();
    assert_eq!(again, id);
    assert_eq!(effects(who), expected);
    assert_eq!(keys_seen(who).len(), 3, "no step body ran again");
}

#[tokio::test]
async fn a_failed_step_compensates_the_completed_ones_in_reverse() {
    let (store, who) = (MemoryStore::new(), "declined");
    set_faults(
        who,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let failed = run_order(&store, "order-declined", who).await;
    assert!(
        matches!(failed, Err(OrderError::Tool(ToolError::Declined(_)))),
        "the caller gets the step's own error: {failed:?}"
    );
    assert_eq!(
        effects(who),
        [
            "contract for declined (1999)",
            "delete contract for declined (1999)"
        ]
    );
    assert!(!has_contract(who));
    let log = log_of(&store, "order-declined").await;
    assert_eq!(log.status, SagaStatus::Compensated);
    assert_eq!(log.error.as_deref(), Some("declined: card declined"));
    assert_eq!(
        states(&log),
        [
            ("create_contract".to_owned(), StepState::Compensated),
            ("charge".to_owned(), StepState::Failed),
        ]
    );

    // The saga is over: a second run is told so, and runs nothing.
    let again = run_order(&store, "order-declined", who).await;
    match again {
        Err(OrderError::Idem(Error::SagaRolledBack { saga, error })) => {
            assert_eq!(saga, "order-declined");
            assert_eq!(error, "declined: card declined");
        }
        other => panic!("expected SagaRolledBack, got {other:?}"),
    }
    assert_eq!(effects(who).len(), 2);
}

#[tokio::test]
async fn compensations_run_last_first_and_a_failing_one_is_retried() {
    let (store, who) = (MemoryStore::new(), "refund-retried");
    // The email never comes: the saga fails after the charge, with two flaky refunds first.
    set_faults(
        who,
        Faults {
            failing_refunds: 2,
            ..Faults::default()
        },
    );
    let failed = order(&store, "order-refund-retried")
        .run(|s| async move {
            s.step(create_contract(who, 700)).await?;
            s.step(charge(who, 700)).await?;
            Err::<(), _>(OrderError::Tool(ToolError::Transient("mailer gone".into())))
        })
        .await;
    assert!(matches!(
        failed,
        Err(OrderError::Tool(ToolError::Transient(_)))
    ));
    assert_eq!(
        effects(who),
        [
            "contract for refund-retried (700)",
            "charge 700 to refund-retried",
            "refund 700 of charge 700 to refund-retried",
            "delete contract for refund-retried (700)",
        ],
        "undone last first, the refund on its third try"
    );
    // All three tries of the refund ran under one key: the compensation's own, not the
    // charge's.
    let refunds: Vec<_> = keys_seen(who)
        .into_iter()
        .filter(|(step, _)| *step == "refund")
        .map(|(_, key)| key)
        .collect();
    let charges: Vec<_> = keys_seen(who)
        .into_iter()
        .filter(|(step, _)| *step == "charge")
        .map(|(_, key)| key)
        .collect();
    assert_eq!(refunds.len(), 3);
    assert!(refunds.iter().all(|k| *k == refunds[0]) && refunds[0] != charges[0]);
    assert_eq!(
        log_of(&store, "order-refund-retried").await.status,
        SagaStatus::Compensated
    );
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_leaves_the_saga_needing_attention() {
    let (store, who) = (MemoryStore::new(), "refund-broken");
    set_faults(
        who,
        Faults {
            decline_charge: false,
            failing_refunds: usize::MAX,
            ..Faults::default()
        },
    );
    let failed = order(&store, "order-refund-broken")
        .run(|s| async move {
            s.step(create_contract(who, 300)).await?;
            s.step(charge(who, 300)).await?;
            Err::<(), _>(OrderError::Tool(ToolError::Transient("mailer gone".into())))
        })
        .await;
    let Err(OrderError::Idem(Error::SagaNeedsAttention {
        saga,
        error,
        pending,
    })) = failed
    else {
        panic!("expected SagaNeedsAttention, got {failed:?}");
    };
    assert_eq!(saga, "order-refund-broken");
    assert!(
        error.contains("the compensation of step `charge` failed"),
        "{error}"
    );
    assert!(error.contains("the payment provider is down"), "{error}");
    assert!(
        error.contains("mailer gone"),
        "the saga's own error is kept: {error}"
    );
    assert_eq!(
        pending,
        ["undo `charge` (step 1)", "undo `create_contract` (step 0)"]
    );
    // Stopped at the refund: the contract is not deleted before the charge is refunded.
    assert!(has_contract(who));

    let log = log_of(&store, "order-refund-broken").await;
    assert_eq!(log.status, SagaStatus::NeedsAttention);
    assert_eq!(
        states(&log),
        [
            ("create_contract".to_owned(), StepState::Done),
            ("charge".to_owned(), StepState::CompensationFailed),
        ]
    );
    assert!(log.steps[1]
        .error
        .as_deref()
        .unwrap()
        .contains("provider is down"));

    // Every later run is told, and nothing runs.
    let before = effects(who).len();
    let again = run_order(&store, "order-refund-broken", who).await;
    assert!(
        matches!(
            again,
            Err(OrderError::Idem(Error::SagaNeedsAttention { .. }))
        ),
        "{again:?}"
    );
    assert_eq!(effects(who).len(), before);
}

/// Runs saga `saga` for `who` to a failure whose refund keeps failing: it is left needing
/// attention, with a contract and a charge nobody undid.
async fn leave_a_refund_failing(store: &dyn Store, saga: &str, who: &str) {
    set_faults(
        who,
        Faults {
            failing_refunds: usize::MAX,
            ..Faults::default()
        },
    );
    let failed = order(store, saga)
        .run(|s| async move {
            s.step(create_contract(who, 310)).await?;
            s.step(charge(who, 310)).await?;
            Err::<(), _>(OrderError::Tool(ToolError::Transient("mailer gone".into())))
        })
        .await;
    assert!(
        matches!(
            failed,
            Err(OrderError::Idem(Error::SagaNeedsAttention { .. }))
        ),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_saga_an_operator_resolved_is_over_and_says_so() {
    let (store, who) = (MemoryStore::new(), "refund-resolved");
    leave_a_refund_failing(&store, "order-refund-resolved", who).await;
    let log = log_of(&store, "order-refund-resolved").await;
    let note = "refunded by hand, contract deleted; ticket OPS-12";
    assert!(store.resolve_saga(&log.key, note).await.unwrap());

    // Later runs are told it was settled, with the note, and run nothing; recovery leaves it.
    let before = effects(who).len();
    let again = run_order(&store, "order-refund-resolved", who).await;
    let Err(OrderError::Idem(Error::SagaResolved { saga, note: told })) = again else {
        panic!("expected SagaResolved, got {again:?}");
    };
    assert_eq!(
        (saga.as_str(), told.as_str()),
        ("order-refund-resolved", note)
    );
    assert_eq!(effects(who).len(), before);
    let report = recover(&store).await.unwrap();
    assert!(report.is_empty(), "{report}");
    let log = log_of(&store, "order-refund-resolved").await;
    assert_eq!(log.status, SagaStatus::Resolved);
    assert_eq!(log.note.as_deref(), Some(note));
}

#[tokio::test]
async fn a_second_run_while_the_first_runs_waits_or_is_refused() {
    let (store, who) = (MemoryStore::new(), "concurrent");
    let (entered, release) = (&tokio::sync::Notify::new(), &tokio::sync::Notify::new());
    let first = order(&store, "order-concurrent").run(|s| async move {
        let contract = s.step(create_contract(who, 100)).await?;
        entered.notify_one();
        release.notified().await;
        Ok::<_, OrderError>(contract.id)
    });
    let refused = async {
        entered.notified().await;
        let refused = order(&store, "order-concurrent")
            .on_conflict(OnConflict::Fail)
            .run(|_| async { Ok::<_, OrderError>(String::from("ran twice")) })
            .await;
        let waiting = order(&store, "order-concurrent")
            .run(|_| async { Ok::<_, OrderError>(String::from("ran twice")) });
        release.notify_one();
        (refused, waiting.await)
    };
    let (first, (refused, waited)) = tokio::join!(first, refused);
    assert!(
        matches!(refused, Err(OrderError::Idem(Error::InProgress { .. }))),
        "{refused:?}"
    );
    assert_eq!(first.unwrap(), "contract for concurrent (100)");
    assert_eq!(
        waited.unwrap(),
        "contract for concurrent (100)",
        "the waiter gets the outcome"
    );
    assert_eq!(effects(who).len(), 1);
}

/// A step that never finishes, to stand for a process that dies inside it: the saga's future
/// is dropped once the step has made its side effect.
async fn crash_inside_charge(store: &dyn Store, saga: &str, who: &str, lease: Duration) {
    let inside = &tokio::sync::Notify::new();
    let crashed = Saga::new(saga)
        .store(store)
        .lease(lease)
        .run(|s| async move {
            s.step(create_contract(who, 900)).await?;
            s.step(charge(who, 900)).await?;
            inside.notify_one();
            std::future::pending::<()>().await;
            Ok::<_, OrderError>(())
        });
    crash(crashed, inside).await;
}

#[tokio::test]
async fn a_run_after_a_crash_replays_the_finished_steps_and_goes_on() {
    let (store, who) = (MemoryStore::new(), "crash-resumed");
    crash_inside_charge(
        &store,
        "order-crash-resumed",
        who,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(effects(who).len(), 2);

    // The next run waits for the dead owner's lease, takes over, replays contract and
    // charge from the log, and runs the email.
    let id = run_order_of(&store, "order-crash-resumed", who, 900)
        .await
        .unwrap();
    assert_eq!(id, "contract for crash-resumed (900)");
    assert_eq!(
        effects(who),
        [
            "contract for crash-resumed (900)",
            "charge 900 to crash-resumed",
            "email to crash-resumed",
        ],
        "no second contract, no second charge"
    );
    assert_eq!(
        keys_seen(who).len(),
        3,
        "contract and charge were replayed from the log, not run"
    );
}

#[tokio::test]
async fn a_step_in_doubt_runs_again_under_its_own_key() {
    let (store, who) = (MemoryStore::new(), "in-doubt");
    // The charge is made, then its process "dies" before its output is logged.
    let inside = hang_after(who, "charge");
    let crashed = order(&store, "order-in-doubt")
        .lease(Duration::from_millis(200))
        .run(|s| async move {
            s.step(create_contract(who, 400)).await?;
            s.step(charge(who, 400)).await?;
            Ok::<_, OrderError>(())
        });
    crash(crashed, &inside).await;
    let log = log_of(&store, "order-in-doubt").await;
    assert_eq!(states(&log)[1], ("charge".to_owned(), StepState::Started));

    let id = run_order_of(&store, "order-in-doubt", who, 400)
        .await
        .unwrap();
    assert_eq!(id, "contract for in-doubt (400)");
    assert_eq!(
        effects(who),
        [
            "contract for in-doubt (400)",
            "charge 400 to in-doubt",
            "email to in-doubt"
        ],
        "the charge ran again under its key, and the provider answered with the first charge"
    );
    let charges: Vec<_> = keys_seen(who)
        .into_iter()
        .filter(|(s, _)| *s == "charge")
        .collect();
    assert_eq!(charges.len(), 2);
    assert_eq!(
        charges[0].1, charges[1].1,
        "both runs of the charge used one key"
    );
    let log = log_of(&store, "order-in-doubt").await;
    assert_eq!(log.status, SagaStatus::Completed);
}

#[tokio::test]
async fn recover_compensates_a_saga_whose_owner_died() {
    let (store, who) = (MemoryStore::new(), "recovered");
    let inside = hang_after(who, "charge");
    // A lease long enough that no stall of a loaded machine lets it run out before the
    // first `recover` below, which must find it live.
    let crashed = order(&store, "order-recovered")
        .lease(Duration::from_secs(2))
        .run(|s| async move {
            s.step(create_contract(who, 800)).await?;
            s.step(charge(who, 800)).await?;
            Ok::<_, OrderError>(())
        });
    crash(crashed, &inside).await;
    assert!(
        recover(&store).await.unwrap().is_empty(),
        "the owner's lease is still live"
    );

    let report = recover_when_stale(&store).await;
    assert_eq!(report.compensated, ["order-recovered"], "{report}");
    assert_eq!(
        effects(who),
        [
            "contract for recovered (800)",
            "charge 800 to recovered",
            "refund 800 of charge 800 to recovered",
            "delete contract for recovered (800)",
        ],
        "the charge in doubt was learned under its key (no second charge), then undone"
    );
    let log = log_of(&store, "order-recovered").await;
    assert_eq!(log.status, SagaStatus::Compensated);
    // Nothing is left for a second recovery, and the saga's id is over.
    assert!(recover(&store).await.unwrap().is_empty());
    let again = run_order(&store, "order-recovered", who).await;
    assert!(
        matches!(again, Err(OrderError::Idem(Error::SagaRolledBack { .. }))),
        "{again:?}"
    );
}

#[tokio::test]
async fn recover_keeps_the_outcome_for_the_ttl_it_is_given() {
    let (store, who) = (MemoryStore::new(), "recovered-ttl");
    crash_inside_charge(
        &store,
        "order-recovered-ttl",
        who,
        Duration::from_millis(100),
    )
    .await;
    let report =
        recover_when_stale_with(idem::Recover::new(&store).ttl(Duration::from_secs(60))).await;
    assert_eq!(report.compensated, ["order-recovered-ttl"], "{report}");
    let key = idem::Action::new("saga")
        .key(&("order-recovered-ttl",))
        .unwrap();
    let record = store
        .get(&key)
        .await
        .unwrap()
        .expect("the recorded rollback");
    let kept = record
        .expires_at
        .expect("a recorded outcome expires")
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        kept <= Duration::from_secs(120),
        "kept for the recovery's ttl, not the default day: {kept:?}"
    );
}

#[tokio::test]
async fn recover_hands_a_saga_past_its_pivot_back_to_its_code() {
    let (store, who) = (MemoryStore::new(), "past-pivot");
    // The email went out, then the owner died before the archive step.
    let inside = hang_after(who, "send_email");
    let crashed = order(&store, "order-past-pivot")
        .lease(Duration::from_millis(200))
        .run(|s| async move {
            s.step(create_contract(who, 600)).await?;
            s.step(charge(who, 600)).await?;
            s.step(send_email(who)).await?;
            s.step(archive_order(who)).await?;
            Ok::<_, OrderError>(())
        });
    crash(crashed, &inside).await;
    let report = recover_when_stale(&store).await;
    assert_eq!(report.interrupted, ["order-past-pivot"], "{report}");
    assert!(
        has_contract(who),
        "nothing before an irreversible step is undone"
    );
    assert_eq!(
        log_of(&store, "order-past-pivot").await.status,
        SagaStatus::Interrupted
    );

    // Its code runs it again: the log carries it forward.
    order(&store, "order-past-pivot")
        .run(|s| async move {
            s.step(create_contract(who, 600)).await?;
            s.step(charge(who, 600)).await?;
            s.step(send_email(who)).await?;
            s.step(archive_order(who)).await?;
            Ok::<_, OrderError>(())
        })
        .await
        .unwrap();
    assert_eq!(
        effects(who),
        [
            "contract for past-pivot (600)",
            "charge 600 to past-pivot",
            "email to past-pivot",
            "archive order of past-pivot",
        ]
    );
    assert_eq!(
        log_of(&store, "order-past-pivot").await.status,
        SagaStatus::Completed
    );
}

async fn run_with_archive(store: &dyn Store, saga: &str, who: &str) -> Result<(), OrderError> {
    order(store, saga)
        .run(|s| async move {
            s.step(create_contract(who, 200)).await?;
            s.step(charge(who, 200)).await?;
            s.step(send_email(who)).await?;
            s.step(archive_order(who)).await?;
            Ok(())
        })
        .await
}

#[tokio::test]
async fn a_step_after_the_pivot_is_retried_forward() {
    let (store, who) = (MemoryStore::new(), "forward");
    set_faults(
        who,
        Faults {
            failing_archives: 2,
            ..Faults::default()
        },
    );
    run_with_archive(&store, "order-forward", who)
        .await
        .unwrap();
    assert_eq!(
        effects(who),
        [
            "contract for forward (200)",
            "charge 200 to forward",
            "email to forward",
            "archive order of forward",
        ],
        "the archive succeeded on its third try; nothing was undone"
    );
    assert_eq!(
        log_of(&store, "order-forward").await.status,
        SagaStatus::Completed
    );
}

#[tokio::test]
async fn a_step_after_the_pivot_that_keeps_failing_needs_attention_and_nothing_is_undone() {
    let (store, who) = (MemoryStore::new(), "forward-stuck");
    set_faults(
        who,
        Faults {
            failing_archives: usize::MAX,
            ..Faults::default()
        },
    );
    let failed = run_with_archive(&store, "order-forward-stuck", who).await;
    let Err(OrderError::Idem(Error::SagaNeedsAttention { error, pending, .. })) = failed else {
        panic!("expected SagaNeedsAttention, got {failed:?}");
    };
    assert!(error.contains("irreversible step `send_email`"), "{error}");
    assert_eq!(pending, ["carry `archive_order` (step 3) forward"]);
    assert_eq!(
        effects(who),
        [
            "contract for forward-stuck (200)",
            "charge 200 to forward-stuck",
            "email to forward-stuck"
        ],
        "no refund, no deleted contract: the customer was told"
    );
    let log = log_of(&store, "order-forward-stuck").await;
    assert_eq!(log.status, SagaStatus::NeedsAttention);
}

#[tokio::test]
async fn each_step_costs_two_store_writes() {
    let who = "round-trips";
    let writes = |steps: usize| async move {
        let store = FaultyStore::new();
        order(&store, &format!("order-trips-{steps}"))
            .run(|s| async move {
                for _ in 0..steps {
                    s.step(send_email(who)).await?;
                }
                Ok::<_, OrderError>(())
            })
            .await
            .unwrap();
        (
            store.saga_writes.load(Ordering::SeqCst),
            store.round_trips(),
        )
    };
    let (one, one_total) = writes(1).await;
    let (four, four_total) = writes(4).await;
    assert_eq!(four - one, 3 * 2, "an intent and an output per step");
    assert_eq!(four_total - one_total, 3 * 2, "and no other round trip");
    // Per saga: claim, read the log, status running, status completed, record the outcome.
    assert_eq!(one_total, 5 + 2);
}

#[tokio::test]
async fn a_store_failure_during_rollback_leaves_the_saga_to_recover() {
    let who = "store-down";
    let store = FaultyStore::new();
    set_faults(
        who,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let failing = AtomicUsize::new(0);
    let failed = order(&store, "order-store-down")
        .lease(Duration::from_millis(200))
        .run(|s| async {
            let s = s;
            s.step(create_contract(who, 100)).await?;
            let charged = s.step(charge(who, 100)).await;
            // The store goes down as the rollback starts.
            store
                .failing_saga_writes
                .store(usize::MAX, Ordering::SeqCst);
            failing.store(1, Ordering::SeqCst);
            charged?;
            Ok::<_, OrderError>(())
        })
        .await;
    assert_eq!(failing.load(Ordering::SeqCst), 1);
    assert!(
        matches!(failed, Err(OrderError::Idem(Error::Store { .. }))),
        "the caller is told the store failed, not that the saga was undone: {failed:?}"
    );
    assert!(has_contract(who), "nothing could be undone yet");

    store.failing_saga_writes.store(0, Ordering::SeqCst);
    let report = recover_when_stale(&store).await;
    assert_eq!(report.compensated, ["order-store-down"], "{report}");
    assert!(!has_contract(who));
}

#[tokio::test]
async fn a_saga_whose_code_changed_is_refused() {
    let (store, who) = (MemoryStore::new(), "changed");
    let inside = hang_after(who, "charge");
    let crashed = order(&store, "order-changed")
        .lease(Duration::from_millis(200))
        .run(|s| async move {
            s.step(create_contract(who, 100)).await?;
            s.step(charge(who, 100)).await?;
            Ok::<_, OrderError>(())
        });
    crash(crashed, &inside).await;
    // The rerun asks for another amount at step 0: not the saga that was logged.
    let changed = order(&store, "order-changed")
        .run(|s| async move {
            s.step(create_contract(who, 999)).await?;
            Ok::<_, OrderError>(())
        })
        .await;
    let Err(OrderError::Tool(ToolError::Idem(problem))) = changed else {
        panic!("expected the step to refuse, got {changed:?}");
    };
    assert!(
        problem.contains("step 0 is logged as `create_contract`"),
        "{problem}"
    );
    // The saga cannot go on as logged: it is undone, the charge in doubt learned first
    // (under its key: no second charge). Nothing ran for the changed arguments.
    assert_eq!(
        effects(who),
        [
            "contract for changed (100)",
            "charge 100 to changed",
            "refund 100 of charge 100 to changed",
            "delete contract for changed (100)",
        ]
    );
    assert_eq!(
        log_of(&store, "order-changed").await.status,
        SagaStatus::Compensated
    );
}

#[tokio::test]
async fn steps_must_be_awaited_one_at_a_time() {
    // On SQLite a log write is pending for a while (it runs on a blocking thread): the
    // second step starts while the first is still logging its intent.
    let (store, who) = (sqlite("joined.db").await, "joined");
    let joined = order(&store, "order-joined")
        .run(|s| async move {
            let (a, b) = tokio::join!(s.step(create_contract(who, 5)), s.step(charge(who, 5)));
            a?;
            b?;
            Ok::<_, OrderError>(())
        })
        .await;
    let Err(OrderError::Tool(ToolError::Idem(problem))) = joined else {
        panic!("expected a refusal, got {joined:?}");
    };
    assert!(
        problem.contains("await each step before the next"),
        "{problem}"
    );
    assert!(!has_contract(who), "the step that did run was undone");
}

async fn sqlite(file: &str) -> idem::store::SqliteStore {
    let folder = std::env::temp_dir().join(format!("idem-sagas-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(file);
    let _ = std::fs::remove_file(&path);
    idem::store::SqliteStore::open(&path).await.unwrap()
}

#[tokio::test]
async fn sagas_keep_their_log_in_sqlite() {
    let store = sqlite("sagas.db").await;
    let path = store.path().to_path_buf();
    let who = "sqlite-saga";
    set_faults(
        who,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let failed = run_order(&store, "order-sqlite", who).await;
    assert!(matches!(
        failed,
        Err(OrderError::Tool(ToolError::Declined(_)))
    ));
    assert_eq!(
        effects(who),
        [
            "contract for sqlite-saga (1999)",
            "delete contract for sqlite-saga (1999)"
        ]
    );
    drop(store);

    // Another handle on the file reads the same log and the same outcome.
    let reopened = idem::store::SqliteStore::open(&path).await.unwrap();
    let log = log_of(&reopened, "order-sqlite").await;
    assert_eq!(log.status, SagaStatus::Compensated);
    assert_eq!(
        states(&log),
        [
            ("create_contract".to_owned(), StepState::Compensated),
            ("charge".to_owned(), StepState::Failed),
        ]
    );
    let again = run_order(&reopened, "order-sqlite", who).await;
    assert!(
        matches!(again, Err(OrderError::Idem(Error::SagaRolledBack { .. }))),
        "{again:?}"
    );
}

/// Regression: recovery listed a saga as stale, then another process completed it before
/// recovery could claim it; recovery read the completed value as its own and failed.
#[tokio::test]
async fn recover_leaves_alone_a_saga_finished_after_it_was_listed() {
    let (store, who) = (FaultyStore::new(), "finished-meanwhile");
    run_order(&store, "order-finished-meanwhile", who)
        .await
        .unwrap();
    let key = idem::Action::new("saga")
        .key(&("order-finished-meanwhile",))
        .unwrap();
    let listed = idem::store::StaleSaga::new(
        key,
        "order-finished-meanwhile".into(),
        idem::Fingerprint::from(key),
    );
    *store.stale_answer.lock().unwrap() = Some(vec![listed]);
    let report = recover(&store).await.unwrap();
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(report.taken_elsewhere, ["order-finished-meanwhile"]);
    assert_eq!(effects(who).len(), 3, "nothing was undone");
}

/// What a saga does on a store, told once for every store: it completes and replays; a
/// declined charge undoes the contract; a crash inside the charge is recovered by `recover`
/// (the charge learned under its key, then refunded); a refund that keeps failing leaves it
/// needing attention until an operator resolves it. `tag` keeps the customers and saga ids of
/// one store apart from another's.
async fn the_saga_story(store: &dyn Store, tag: &str) {
    let (done, declined, crashed, stuck) = (
        format!("{tag}-done"),
        format!("{tag}-declined"),
        format!("{tag}-crashed"),
        format!("{tag}-stuck"),
    );
    let (done, declined, crashed, stuck) = (
        done.as_str(),
        declined.as_str(),
        crashed.as_str(),
        stuck.as_str(),
    );

    let id = run_order(store, done, done).await.unwrap();
    assert_eq!(run_order(store, done, done).await.unwrap(), id, "replayed");
    assert_eq!(effects(done).len(), 3, "{:?}", effects(done));
    assert_eq!(log_of(store, done).await.status, SagaStatus::Completed);

    set_faults(
        declined,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let failed = run_order(store, declined, declined).await;
    assert!(
        matches!(failed, Err(OrderError::Tool(ToolError::Declined(_)))),
        "{failed:?}"
    );
    assert!(!has_contract(declined), "the contract was deleted again");
    assert_eq!(
        log_of(store, declined).await.status,
        SagaStatus::Compensated
    );

    let inside = hang_after(crashed, "charge");
    let run = order(store, crashed)
        .lease(Duration::from_millis(300))
        .run(|s| async move {
            s.step(create_contract(crashed, 800)).await?;
            s.step(charge(crashed, 800)).await?;
            Ok::<_, OrderError>(())
        });
    crash(run, &inside).await;
    let report = recover_when_stale(store).await;
    assert_eq!(report.compensated, [crashed], "{report}");
    assert_eq!(
        effects(crashed).len(),
        4,
        "contract, charge (once), refund, delete: {:?}",
        effects(crashed)
    );

    leave_a_refund_failing(store, stuck, stuck).await;
    let log = log_of(store, stuck).await;
    assert!(store
        .resolve_saga(&log.key, "refunded by hand")
        .await
        .unwrap());
    let again = run_order(store, stuck, stuck).await;
    assert!(
        matches!(again, Err(OrderError::Idem(Error::SagaResolved { .. }))),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_story_on_sqlite() {
    let store = sqlite("saga-story.db").await;
    the_saga_story(&store, "story-sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_saga_story_on_redis() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    // A database of its own on the shared server, so `recover` finds only these sagas.
    let store = idem::store::open(&format!("{}5", server.url()))
        .await
        .expect("a Redis store");
    the_saga_story(store.as_ref(), "story-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_saga_story_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = idem::store::open(&format!("{}?schema=saga_story", server.url()))
        .await
        .expect("a PostgreSQL store");
    the_saga_story(store.as_ref(), "story-postgres").await;
}
