//! Regression tests of sagas, each named after the bug it pins (found in review, each shown
//! failing before its fix).

use idem::store::SagaStore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use idem::store::{
    Claim, ClaimRequest, MemoryStore, Ownership, SagaStatus, SagaWrite, StaleSaga, StepRecord,
    StepState, Store,
};
use idem::{recover, saga_step, Action, Fingerprint, Key, OnStale, Saga};
use tokio::sync::Notify;

use crate::faulty_store::FaultyStore;
use crate::saga_world::{
    archive_order, charge, crash, create_contract, effects, hang_after, has_contract, keys_seen,
    quick, recover_when_stale, send_email, set_faults, Faults,
};
use crate::support::ToolError;

fn key_of(saga: &str) -> Key {
    Action::new("saga").key(&(saga,)).unwrap()
}

fn listed(saga: &str) -> Vec<StaleSaga> {
    let key = key_of(saga);
    vec![StaleSaga::new(key, saga.into(), Fingerprint::from(key))]
}

async fn status(store: &dyn Store, saga: &str) -> SagaStatus {
    store
        .read_saga(&key_of(saga))
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test]
async fn recover_left_alone_a_saga_that_needs_attention_since_it_was_listed() {
    let (store, who) = (FaultyStore::new(), "rg-attention");
    let failed = Saga::new("rg-attention")
        .store(&store)
        .forward_retry(quick(2))
        .run(|s| async move {
            s.step(create_contract(who, 1)).await?;
            s.step(charge(who, 1)).await?;
            s.step(send_email(who)).await?;
            s.step(archive_order(who)).await?;
            Err::<(), _>(ToolError::Transient(
                "a business error past the pivot".into(),
            ))
        })
        .await;
    assert!(matches!(failed, Err(ToolError::Idem(_))), "{failed:?}");
    assert_eq!(
        status(&store, "rg-attention").await,
        SagaStatus::NeedsAttention
    );
    // A list made while it was still running (its owner slow, not dead).
    *store.stale_answer.lock().unwrap() = Some(listed("rg-attention"));
    let report = recover(&store).await.unwrap();
    assert_eq!(report.taken_elsewhere, ["rg-attention"], "{report}");
    assert!(
        !effects(who).iter().any(|e| e.starts_with("unarchive")),
        "nothing past the pivot is undone: {:?}",
        effects(who)
    );
    assert_eq!(
        status(&store, "rg-attention").await,
        SagaStatus::NeedsAttention
    );
}

#[tokio::test]
async fn a_second_recovery_left_alone_a_saga_the_first_handed_back() {
    let (store, who) = (FaultyStore::new(), "rg-handed-back");
    let hung = hang_after(who, "archive_order");
    crash(
        Saga::new("rg-handed-back")
            .store(&store)
            .lease(Duration::from_millis(100))
            .run(|s| async move {
                s.step(create_contract(who, 1)).await?;
                s.step(charge(who, 1)).await?;
                s.step(send_email(who)).await?;
                s.step(archive_order(who)).await?;
                Ok::<_, ToolError>(())
            }),
        &hung,
    )
    .await;
    let first = recover_when_stale(&store).await;
    assert_eq!(first.interrupted, ["rg-handed-back"], "{first}");
    // Another recovering process, with a list it made before the first one acted.
    *store.stale_answer.lock().unwrap() = Some(listed("rg-handed-back"));
    let second = recover(&store).await.unwrap();
    assert_eq!(second.taken_elsewhere, ["rg-handed-back"], "{second}");
    assert!(
        !effects(who).iter().any(|e| e.starts_with("unarchive")),
        "{:?}",
        effects(who)
    );
    assert_eq!(
        status(&store, "rg-handed-back").await,
        SagaStatus::Interrupted
    );
}

/// A step no code in this program knows.
async fn ghost_saga(store: &MemoryStore, id: &str, state: StepState) {
    let saga = key_of(id);
    let fingerprint = Fingerprint::from(saga);
    let request = ClaimRequest {
        key: &saga,
        fingerprint: &fingerprint,
        action: "saga",
        lease: Duration::from_millis(50),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let Claim::Acquired { token, .. } = store.claim(&request).await.unwrap() else {
        panic!("a fresh saga is acquired");
    };
    let step = StepRecord {
        index: 0,
        name: "a_step_of_another_program".into(),
        key: Action::new("saga_step").key(&(id, 0)).unwrap(),
        irreversible: false,
        args: b"[]".to_vec(),
        state,
        output: (state == StepState::Done).then(|| b"null".to_vec()),
        error: None,
    };
    let written = store
        .write_saga(&saga, id, token, SagaWrite::Step(&step))
        .await;
    assert_eq!(written.unwrap(), Ownership::Held);
}

#[tokio::test]
async fn recover_leaves_a_saga_whose_steps_it_does_not_link_for_a_program_that_does() {
    let store = MemoryStore::new();
    ghost_saga(&store, "rg-ghost-done", StepState::Done).await;
    ghost_saga(&store, "rg-ghost-doubt", StepState::Started).await;
    let report = recover_when_stale(&store).await;
    assert!(report.needs_attention.is_empty(), "{report}");
    let mut failed: Vec<&str> = report.failed.iter().map(|(id, _)| id.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, ["rg-ghost-done", "rg-ghost-doubt"], "{report}");
    for (_, error) in &report.failed {
        assert!(
            error.to_string().contains("a_step_of_another_program"),
            "{error}"
        );
    }
    for id in ["rg-ghost-done", "rg-ghost-doubt"] {
        assert_eq!(status(&store, id).await, SagaStatus::Running, "untouched");
    }
}

#[saga_step(compensate = untag)]
async fn tag(who: &str, tags: HashMap<String, u32>) -> Result<usize, ToolError> {
    let _ = who;
    Ok(tags.len())
}

async fn untag(_: usize) -> Result<(), ToolError> {
    Ok(())
}

fn tags() -> HashMap<String, u32> {
    (0..16).map(|i| (format!("t{i}"), i)).collect()
}

#[tokio::test]
async fn a_hashmap_argument_is_the_same_argument_on_a_rerun() {
    let (store, who) = (MemoryStore::new(), "rg-hashmap");
    let order = |store| {
        Saga::new("rg-hashmap")
            .store(store)
            .lease(Duration::from_millis(100))
            .run(|s| async move {
                s.step(tag(who, tags())).await?;
                s.step(charge(who, 5)).await?;
                Ok::<_, ToolError>(())
            })
    };
    let hung = hang_after(who, "charge");
    crash(order(&store), &hung).await;
    // Another `HashMap`, whose entries come out in another order.
    order(&store).await.unwrap();
    assert_eq!(effects(who), ["charge 5 to rg-hashmap"]);
}

async fn handles_a_decline(s: idem::Steps<'_>) -> Result<(), ToolError> {
    let who = "rg-handled";
    match s.step(charge(who, 7)).await {
        Err(ToolError::Declined(_)) => {} // no charge: go on without it
        other => {
            other?;
        }
    }
    s.step(create_contract(who, 7)).await?;
    s.step(send_email(who)).await?;
    Ok(())
}

#[tokio::test]
async fn a_step_whose_failure_the_saga_handled_runs_again_on_a_rerun() {
    let (store, who) = (MemoryStore::new(), "rg-handled");
    set_faults(
        who,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let hung = hang_after(who, "send_email");
    crash(
        Saga::new("rg-handled")
            .store(&store)
            .lease(Duration::from_millis(100))
            .run(handles_a_decline),
        &hung,
    )
    .await;
    Saga::new("rg-handled")
        .store(&store)
        .run(handles_a_decline)
        .await
        .unwrap();
    assert_eq!(
        effects(who),
        ["contract for rg-handled (7)", "email to rg-handled"],
        "the decline was met again, handled again; the rest replayed"
    );
    assert_eq!(status(&store, "rg-handled").await, SagaStatus::Completed);
}

static FILINGS_FAILING: AtomicUsize = AtomicUsize::new(0);
static FILING_HANGS: AtomicBool = AtomicBool::new(false);
static FILING_HUNG: Notify = Notify::const_new();

#[saga_step(irreversible)]
async fn announce(who: &str) -> Result<(), ToolError> {
    let _ = who;
    Ok(())
}

#[saga_step(compensate = unfile)]
async fn file_it(who: &str) -> Result<(), ToolError> {
    let _ = who;
    if FILING_HANGS.swap(false, Ordering::SeqCst) {
        FILING_HUNG.notify_one();
        std::future::pending::<()>().await;
    }
    let failing =
        FILINGS_FAILING.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        return Err(ToolError::Transient("the filing office is busy".into()));
    }
    Ok(())
}

async fn unfile(_: ()) -> Result<(), ToolError> {
    Ok(())
}

async fn announce_then_file(s: idem::Steps<'_>) -> Result<(), ToolError> {
    s.step(announce("rg-forward")).await?;
    s.step(file_it("rg-forward")).await?;
    Ok(())
}

#[tokio::test]
async fn a_step_past_the_pivot_that_recovery_found_failed_is_carried_forward() {
    let store = MemoryStore::new();
    FILING_HANGS.store(true, Ordering::SeqCst);
    crash(
        Saga::new("rg-forward")
            .store(&store)
            .lease(Duration::from_millis(100))
            .run(announce_then_file),
        &FILING_HUNG,
    )
    .await;
    // Recovery runs the filing in doubt again; it fails once: logged failed, handed back.
    FILINGS_FAILING.store(1, Ordering::SeqCst);
    let report = recover_when_stale(&store).await;
    assert_eq!(report.interrupted, ["rg-forward"], "{report}");
    Saga::new("rg-forward")
        .store(&store)
        .run(announce_then_file)
        .await
        .unwrap();
    assert_eq!(status(&store, "rg-forward").await, SagaStatus::Completed);
}

#[tokio::test]
async fn a_store_failure_while_logging_a_step_leaves_the_saga_to_go_on_not_undone() {
    let (store, who) = (FaultyStore::new(), "rg-blip");
    let order = |store| {
        Saga::new("rg-blip")
            .store(store)
            .lease(Duration::from_millis(100))
            .run(|s| async move {
                s.step(create_contract(who, 3)).await?;
                s.step(charge(who, 3)).await?;
                Ok::<_, ToolError>(())
            })
    };
    let first = Saga::new("rg-blip")
        .store(&store)
        .lease(Duration::from_millis(100))
        .run(|s| async {
            let s = s;
            s.step(create_contract(who, 3)).await?;
            // The charge's intent cannot be logged.
            store.failing_saga_writes.store(1, Ordering::SeqCst);
            s.step(charge(who, 3)).await?;
            Ok::<_, ToolError>(())
        })
        .await;
    assert!(
        matches!(&first, Err(ToolError::Idem(message)) if message.contains("connection reset")),
        "the caller is told the store failed: {first:?}"
    );
    assert!(has_contract(who), "nothing was undone");
    // The next run goes on from the log, as the error promised.
    order(&store).await.unwrap();
    assert_eq!(
        effects(who),
        ["contract for rg-blip (3)", "charge 3 to rg-blip"]
    );
}

#[tokio::test]
async fn a_later_run_of_a_saga_that_needs_attention_says_what_is_left() {
    let (store, who) = (MemoryStore::new(), "rg-pending");
    set_faults(
        who,
        Faults {
            failing_refunds: usize::MAX,
            ..Faults::default()
        },
    );
    let order = || {
        Saga::new("rg-pending")
            .store(&store)
            .compensation_retry(quick(2))
            .run(|s| async move {
                s.step(create_contract(who, 3)).await?;
                s.step(charge(who, 3)).await?;
                Err::<(), _>(ToolError::Transient("the mailer is gone".into()))
            })
    };
    let pending = |result: Result<(), ToolError>| match result {
        Err(ToolError::Idem(message)) => message,
        other => panic!("expected SagaNeedsAttention, got {other:?}"),
    };
    let first = pending(order().await);
    let again = pending(order().await);
    assert!(
        first.contains(
            "left to do by hand: undo `charge` (step 1), undo `create_contract` (step 0)"
        ),
        "{first}"
    );
    assert!(
        again.contains(
            "left to do by hand: undo `charge` (step 1), undo `create_contract` (step 0)"
        ),
        "{again}"
    );
}

#[tokio::test]
async fn an_owner_taken_over_mid_rollback_runs_no_compensation_again() {
    let (store, who) = (FaultyStore::new(), "rg-slow-owner");
    store.stall_next_undo.store(true, Ordering::SeqCst);
    let owner = Saga::new("rg-slow-owner")
        .store(&store)
        .lease(Duration::from_millis(100))
        .run(|s| async move {
            s.step(create_contract(who, 4)).await?;
            s.step(charge(who, 4)).await?;
            Err::<(), _>(ToolError::Transient("the mailer is gone".into()))
        });
    let recovering = async {
        // The refund is logged, its answer hangs; the lease runs out; recovery takes over.
        store.applied.notified().await;
        let report = recover_when_stale(&store).await;
        store.gate.notify_one();
        report
    };
    let (owner, report) = tokio::join!(owner, recovering);
    assert_eq!(report.compensated, ["rg-slow-owner"], "{report}");
    assert!(matches!(owner, Err(ToolError::Idem(_))), "{owner:?}");
    let deletes = keys_seen(who)
        .into_iter()
        .filter(|(step, _)| *step == "delete_contract")
        .count();
    assert_eq!(
        deletes,
        1,
        "the contract is deleted once: {:?}",
        effects(who)
    );
}

#[tokio::test]
async fn a_step_dropped_by_a_timeout_is_not_called_again_under_a_new_key() {
    let (store, who) = (MemoryStore::new(), "rg-timeout");
    let _hang = hang_after(who, "charge");
    let done = Saga::new("rg-timeout")
        .store(&store)
        .run(|s| async move {
            let first = tokio::time::timeout(Duration::from_millis(50), s.step(charge(who, 1)));
            let charged = match first.await {
                Ok(charged) => charged?,
                // The agent's reflex: call the tool again.
                Err(_elapsed) => s.step(charge(who, 1)).await?,
            };
            Ok::<_, ToolError>(charged.id)
        })
        .await;
    match done {
        Err(ToolError::Idem(message)) => assert!(
            message.contains("ended before its outcome was logged"),
            "{message}"
        ),
        other => panic!("the second call is refused, got {other:?}"),
    }
    assert_eq!(
        effects(who),
        [
            "charge 1 to rg-timeout",
            "refund 1 of charge 1 to rg-timeout"
        ],
        "one charge, learned under its key and refunded"
    );
    assert_eq!(status(&store, "rg-timeout").await, SagaStatus::Compensated);
}

/// A tool server runs each call in a task of its own (`tokio::spawn`), so the futures of
/// `Saga::run` and `recover` must be `Send`. They were not: the rollback kept a `Cell` across
/// an `.await`, which only the first example that spawned a saga found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_and_a_recovery_run_in_spawned_tasks() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let who = "rg-spawned";
    set_faults(
        who,
        Faults {
            decline_charge: true,
            ..Faults::default()
        },
    );
    let saga_store = std::sync::Arc::clone(&store);
    let rolled_back = tokio::spawn(async move {
        Saga::new("rg-spawned")
            .store(saga_store.as_ref())
            .run(|s| async move {
                s.step(create_contract(who, 3)).await?;
                s.step(charge(who, 3)).await?;
                Ok::<(), ToolError>(())
            })
            .await
    })
    .await
    .expect("the saga's task");
    assert!(
        matches!(rolled_back, Err(ToolError::Declined(_))),
        "{rolled_back:?}"
    );
    assert!(!has_contract(who), "the rollback ran in the spawned task");
    let recovery_store = std::sync::Arc::clone(&store);
    let report = tokio::spawn(async move { recover(recovery_store.as_ref()).await })
        .await
        .expect("the recovery's task")
        .expect("a recovery");
    assert!(report.is_empty(), "nothing was left to recover: {report}");
}
