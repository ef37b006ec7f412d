//! Calls and saga steps whose effect may have happened (issue 12): each test is named after
//! the case it pins, and each failed before its fix.
//!
//! The world here is a payment provider that keeps every charge by its idempotency key (the
//! caller's `idem::current_key()`), as Stripe does, and that can answer a reused key with a
//! 409 instead of the first answer, as many providers do. Each test has its own customer, so
//! the tests share the world without meeting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::store::{MemoryStore, SagaStatus, StepState, Store};
use idem::{current_call, current_key, idempotent, observe, saga_step, Disposition, Key, Saga};
use tokio::sync::Notify;

use crate::saga_world::{crash, quick, recover_when_stale};
use crate::support::ToolError;

/// The provider's books, by customer.
#[derive(Default)]
struct Provider {
    /// Every effect made, in order: `charge 500 to rd-409`, `refund …`, `ticket …`.
    effects: Vec<String>,
    /// What each idempotency key was first answered.
    answered: HashMap<Key, String>,
    /// Customers for whom a reused key is answered 409 instead of the first answer.
    conflicts: Vec<String>,
    /// Customers whose next effect is declined (before any effect).
    declines: Vec<String>,
    /// How many times each body ran, by `customer/effect`.
    bodies: HashMap<String, usize>,
    /// Where a body hangs after its effect (the process "dies" there): `customer/effect`.
    hangs: HashMap<String, Arc<Notify>>,
}

fn provider<R>(f: impl FnOnce(&mut Provider) -> R) -> R {
    static PROVIDER: Mutex<Option<Provider>> = Mutex::new(None);
    let mut guard = PROVIDER.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Provider::default))
}

fn effects(customer: &str) -> Vec<String> {
    provider(|p| {
        p.effects
            .iter()
            .filter(|e| e.ends_with(&format!(" {customer}")))
            .cloned()
            .collect()
    })
}

fn bodies(customer: &str, effect: &str) -> usize {
    provider(|p| {
        p.bodies
            .get(&format!("{customer}/{effect}"))
            .copied()
            .unwrap_or(0)
    })
}

fn hang_after(customer: &str, effect: &str) -> Arc<Notify> {
    let hang = Arc::new(Notify::new());
    provider(|p| {
        p.hangs
            .insert(format!("{customer}/{effect}"), Arc::clone(&hang))
    });
    hang
}

/// The provider's answer to `effect` for `customer`, under the caller's key.
async fn serve(customer: &str, effect: &str) -> Result<String, ToolError> {
    let key = current_key().expect("tools run under their key");
    let line = format!("{effect} {customer}");
    let answer = provider(|p| {
        *p.bodies.entry(format!("{customer}/{effect}")).or_default() += 1;
        if let Some(first) = p.answered.get(&key) {
            if p.conflicts.iter().any(|c| c == customer) {
                return Err(ToolError::Transient(
                    "409 Conflict: this idempotency key was already used".into(),
                ));
            }
            return Ok(first.clone());
        }
        if let Some(at) = p.declines.iter().position(|c| c == customer) {
            p.declines.remove(at);
            return Err(ToolError::Declined("card declined".into()));
        }
        p.effects.push(line.clone());
        p.answered.insert(key, line.clone());
        Ok(line)
    })?;
    let hang = provider(|p| p.hangs.remove(&format!("{customer}/{effect}")));
    if let Some(hang) = hang {
        hang.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(answer)
}

/// The provider's lookup of a charge by its idempotency key: what a `verify` asks.
fn lookup() -> Option<String> {
    let key = current_key().expect("verify runs under the key");
    provider(|p| p.answered.get(&key).cloned())
}

#[saga_step(compensate = d_close_contract)]
async fn d_open_contract(customer: &str) -> Result<String, ToolError> {
    serve(customer, "contract").await
}

async fn d_close_contract(_contract: String, customer: &str) -> Result<(), ToolError> {
    serve(customer, "close").await.map(drop)
}

#[saga_step(compensate = d_refund)]
async fn d_charge(customer: &str, cents: u64) -> Result<String, ToolError> {
    serve(customer, &format!("charge {cents}")).await
}

async fn d_refund(_charge: String, customer: &str, cents: u64) -> Result<(), ToolError> {
    serve(customer, &format!("refund {cents}")).await.map(drop)
}

/// The same charge, with a `verify` that looks the charge up by its key.
#[saga_step(compensate = d_refund, verify = d_find_charge)]
async fn d_verified_charge(customer: &str, cents: u64) -> Result<String, ToolError> {
    serve(customer, &format!("charge {cents}")).await
}

async fn d_find_charge(_customer: &str, _cents: &u64) -> Result<Option<String>, ToolError> {
    Ok(lookup())
}

#[saga_step(irreversible)]
async fn d_issue_ticket(customer: &str) -> Result<String, ToolError> {
    serve(customer, "ticket").await
}

/// A ticket office slow to take the request: a caller's timeout drops it before it is made.
#[saga_step(irreversible, verify = d_find_ticket)]
async fn d_verified_ticket(customer: &str) -> Result<String, ToolError> {
    tokio::time::sleep(Duration::from_secs(10)).await;
    serve(customer, "ticket").await
}

async fn d_find_ticket(_customer: &str) -> Result<Option<String>, ToolError> {
    Ok(lookup())
}

fn saga<'s>(id: &str, store: &'s dyn Store) -> Saga<'s> {
    Saga::new(id)
        .store(store)
        .lease(Duration::from_millis(100))
        .compensation_retry(quick(3))
}

async fn saga_status(store: &dyn Store, id: &str) -> (SagaStatus, Vec<(String, StepState)>) {
    let key = idem::Action::new("saga").key(&(id,)).unwrap();
    let log = store
        .read_saga(&key)
        .await
        .unwrap()
        .expect("the saga's log");
    let steps = log
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect();
    (log.status, steps)
}

/// Case 2 of issue 12: the charge is made, the process dies before its output is logged, and
/// the re-run under the same key is answered 409. It was logged `Failed`, skipped by the
/// rollback, and the saga reported compensated: the contract closed, the charge kept.
#[tokio::test]
async fn a_step_in_doubt_whose_rerun_gets_409_is_never_reported_compensated() {
    let (store, who) = (MemoryStore::new(), "rd-409");
    provider(|p| p.conflicts.push(who.into()));
    let hung = hang_after(who, "charge 500");
    let run = saga(who, &store).run(|s| async move {
        s.step(d_open_contract(who)).await?;
        s.step(d_charge(who, 500)).await?;
        Ok::<_, ToolError>(())
    });
    crash(run, &hung).await;

    let report = recover_when_stale(&store).await;
    assert_eq!(report.needs_attention, [who], "{report}");
    assert_eq!(
        effects(who),
        ["contract rd-409", "charge 500 rd-409"],
        "nothing undone while the charge may have happened"
    );
    let (status, steps) = saga_status(&store, who).await;
    assert_eq!(status, SagaStatus::NeedsAttention);
    assert_eq!(
        steps[1],
        ("d_charge".into(), StepState::Started),
        "still in doubt"
    );

    // Every later run says so, and what is left to do.
    let again = saga(who, &store)
        .run(|_| async { Ok::<_, ToolError>(()) })
        .await;
    let Err(ToolError::Idem(message)) = again else {
        panic!("the saga needs attention, got {again:?}");
    };
    assert!(message.contains("may have happened"), "{message}");
    assert!(
        message.contains("find out whether `d_charge` (step 1) happened"),
        "{message}"
    );
    assert!(
        message.contains("undo `d_open_contract` (step 0)"),
        "{message}"
    );
}

/// The same crash, with a `verify` that looks the charge up by its key: the doubt is settled
/// without running the charge again, and the saga is undone in full.
#[tokio::test]
async fn a_step_in_doubt_is_settled_by_verify_and_undone() {
    let (store, who) = (MemoryStore::new(), "rd-verify");
    provider(|p| p.conflicts.push(who.into()));
    let hung = hang_after(who, "charge 700");
    let run = saga(who, &store).run(|s| async move {
        s.step(d_open_contract(who)).await?;
        s.step(d_verified_charge(who, 700)).await?;
        Ok::<_, ToolError>(())
    });
    crash(run, &hung).await;

    let report = recover_when_stale(&store).await;
    assert_eq!(report.compensated, [who], "{report}");
    assert_eq!(
        bodies(who, "charge 700"),
        1,
        "verify asked, the charge not run again"
    );
    assert_eq!(
        effects(who),
        [
            "contract rd-verify",
            "charge 700 rd-verify",
            "refund 700 rd-verify",
            "close rd-verify"
        ]
    );
}

/// Case 3 of issue 12: a step logged `Failed` (declined) ran again without a fresh intent; it
/// charged, the process died, and recovery read `Failed`, skipped it, and reported the saga
/// compensated while the charge stood.
#[tokio::test]
async fn a_step_logged_failed_writes_a_fresh_intent_before_it_runs_again() {
    let (store, who) = (MemoryStore::new(), "rd-failed");
    provider(|p| p.declines.push(who.into()));
    // First run: the charge is declined; the agent's code handles it, then its process dies.
    let declined = hang_after(who, "contract");
    let first = saga(who, &store).run(|s| async move {
        let _ = s.step(d_charge(who, 900)).await;
        s.step(d_open_contract(who)).await?;
        Ok::<_, ToolError>(())
    });
    crash(first, &declined).await;
    let (_, steps) = saga_status(&store, who).await;
    assert_eq!(steps[0], ("d_charge".into(), StepState::Failed));

    // Second run, once the first's lease ran out: the charge goes through, and the process
    // dies before its output is logged.
    let charged = hang_after(who, "charge 900");
    let second = saga(who, &store)
        .on_conflict(idem::OnConflict::Wait(Duration::from_secs(5)))
        .run(|s| async move {
            let _ = s.step(d_charge(who, 900)).await;
            s.step(d_open_contract(who)).await?;
            Ok::<_, ToolError>(())
        });
    crash(second, &charged).await;
    let (_, steps) = saga_status(&store, who).await;
    assert_eq!(
        steps[0],
        ("d_charge".into(), StepState::Started),
        "the intent of the second run is logged before its charge"
    );

    let report = recover_when_stale(&store).await;
    assert_eq!(report.compensated, [who], "{report}");
    assert_eq!(
        effects(who),
        [
            "contract rd-failed",
            "charge 900 rd-failed",
            "close rd-failed",
            "refund 900 rd-failed"
        ],
        "the charge is learned under its key and refunded, last step first"
    );
}

/// Case 4 of issue 12: an irreversible step dropped by a timeout is in doubt; the rollback ran
/// it (the ticket issued while the saga was being undone), then stopped with nothing left to
/// do listed: the fare kept, the seat held.
#[tokio::test]
async fn rollback_never_runs_an_irreversible_step_in_doubt() {
    let (store, who) = (MemoryStore::new(), "rd-ticket");
    let _hung = hang_after(who, "ticket");
    let done = saga(who, &store)
        .run(|s| async move {
            s.step(d_open_contract(who)).await?;
            s.step(d_charge(who, 300)).await?;
            let ticket =
                tokio::time::timeout(Duration::from_millis(50), s.step(d_issue_ticket(who)));
            match ticket.await {
                Ok(ticket) => ticket.map(drop),
                Err(_elapsed) => Err(ToolError::Transient("the ticket office timed out".into())),
            }
        })
        .await;
    let Err(ToolError::Idem(message)) = done else {
        panic!("the saga needs attention, got {done:?}");
    };
    assert_eq!(bodies(who, "ticket"), 1, "never run during the rollback");
    assert_eq!(
        effects(who),
        [
            "contract rd-ticket",
            "charge 300 rd-ticket",
            "ticket rd-ticket"
        ],
        "nothing undone while the ticket may have been issued"
    );
    assert!(message.contains("may have happened"), "{message}");
    for pending in [
        "find out whether `d_issue_ticket` (step 2) happened",
        "undo `d_charge` (step 1)",
        "undo `d_open_contract` (step 0)",
    ] {
        assert!(message.contains(pending), "{pending}: {message}");
    }
    let (status, _) = saga_status(&store, who).await;
    assert_eq!(status, SagaStatus::NeedsAttention);
}

/// An irreversible step in doubt whose `verify` finds that it did not happen: the saga is
/// undone without it, and it is not run.
#[tokio::test]
async fn an_irreversible_step_verify_finds_absent_is_rolled_back_without_it() {
    let (store, who) = (MemoryStore::new(), "rd-noticket");
    let done = saga(who, &store)
        .run(|s| async move {
            s.step(d_open_contract(who)).await?;
            // The ticket office never got the request: the step's future is dropped first.
            let ticket =
                tokio::time::timeout(Duration::from_millis(50), s.step(d_verified_ticket(who)));
            match ticket.await {
                Ok(ticket) => ticket.map(drop),
                Err(_elapsed) => Err(ToolError::Transient("timed out".into())),
            }
        })
        .await;
    assert_eq!(
        done,
        Err(ToolError::Transient("timed out".into())),
        "rolled back, with the saga's own error"
    );
    assert_eq!(bodies(who, "ticket"), 0);
    assert_eq!(effects(who), ["contract rd-noticket", "close rd-noticket"]);
    let (status, steps) = saga_status(&store, who).await;
    assert_eq!(status, SagaStatus::Compensated);
    assert_eq!(steps[1], ("d_verified_ticket".into(), StepState::Failed));
}

// ---- `#[idempotent]`: in_doubt and verify ----

fn is_ambiguous(error: &ToolError) -> bool {
    matches!(error, ToolError::Transient(why) if why.contains("timed out"))
}

/// A charge whose provider answers "timed out" after making it, once.
#[idempotent(store = store, skip = [store], lease = "100ms", in_doubt = is_ambiguous, verify = find_payment)]
async fn pay(store: &MemoryStore, customer: &str, cents: u64) -> Result<String, ToolError> {
    let charged = serve(customer, &format!("pay {cents}")).await?;
    let time_out = provider(|p| p.conflicts.iter().any(|c| c == customer));
    if time_out && !current_call().expect("in the body").resumed() {
        return Err(ToolError::Transient("timed out after sending".into()));
    }
    Ok(charged)
}

async fn find_payment(
    _store: &MemoryStore,
    _customer: &str,
    _cents: &u64,
) -> Result<Option<String>, ToolError> {
    Ok(lookup())
}

/// The same, without `verify`, parked for review when in doubt.
#[idempotent(store = store, skip = [store], in_doubt = is_ambiguous, on_stale = review)]
async fn pay_reviewed(store: &MemoryStore, customer: &str) -> Result<String, ToolError> {
    serve(customer, "pay").await?;
    Err(ToolError::Transient("timed out after sending".into()))
}

/// Case 5 of issue 12: an ambiguous error released the key, and the agent's retry charged
/// again. Now the key stays in doubt, and the retry asks `verify`, which finds the charge.
#[tokio::test]
async fn an_ambiguous_error_keeps_the_key_in_doubt_and_verify_settles_it() {
    let (store, who) = (MemoryStore::new(), "rd-ambiguous");
    provider(|p| p.conflicts.push(who.into()));
    let (first, how) = observe(pay(&store, who, 1200)).await;
    assert_eq!(
        first,
        Err(ToolError::Transient("timed out after sending".into()))
    );
    assert_eq!(how, Some(Disposition::InDoubt));
    let (again, how) = observe(pay(&store, who, 1200)).await;
    assert_eq!(again, Ok("pay 1200 rd-ambiguous".into()));
    assert_eq!(how, Some(Disposition::Verified));
    assert_eq!(
        bodies(who, "pay 1200"),
        1,
        "verify answered; the body did not run"
    );
    let (third, how) = observe(pay(&store, who, 1200)).await;
    assert_eq!(third, Ok("pay 1200 rd-ambiguous".into()));
    assert_eq!(how, Some(Disposition::Replayed), "recorded once verified");
}

#[tokio::test]
async fn an_ambiguous_error_under_review_is_parked_for_an_operator() {
    let (store, who) = (MemoryStore::new(), "rd-review");
    let first = pay_reviewed(&store, who).await;
    assert!(matches!(first, Err(ToolError::Transient(_))), "{first:?}");
    // Parked at once, by the call that met the doubt: a key nobody calls again is not left
    // to the purge of dead claims (found in review).
    let key = idem::Action::new("pay_reviewed").key(&(who,)).unwrap();
    let record = store.get(&key).await.unwrap().expect("kept");
    assert_eq!(record.status, idem::store::Status::NeedsReview);
    let again = pay_reviewed(&store, who).await;
    let Err(ToolError::Idem(message)) = again else {
        panic!("parked for review, got {again:?}");
    };
    assert!(message.contains("operator"), "{message}");
    assert_eq!(effects(who), ["pay rd-review"], "never run twice");
}

/// A dead owner's call is resumed through `verify`: the body is not run again.
#[tokio::test]
async fn a_dead_owners_call_is_settled_by_verify() {
    let (store, who) = (MemoryStore::new(), "rd-dead");
    let hung = hang_after(who, "pay 800");
    tokio::select! {
        _ = pay(&store, who, 800) => panic!("the call hangs"),
        _ = hung.notified() => {}
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (paid, how) = loop {
        let (paid, how) = observe(pay(&store, who, 800)).await;
        match paid {
            Err(ToolError::Idem(ref busy)) if busy.contains("in progress") => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the lease never ran out"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            paid => break (paid, how),
        }
    };
    assert_eq!(paid, Ok("pay 800 rd-dead".into()));
    assert_eq!(how, Some(Disposition::Verified));
    assert_eq!(bodies(who, "pay 800"), 1);
}

/// A ticket office that deduplicates by key: recovery may run it again to learn its outcome,
/// but never while the saga is being undone.
#[saga_step(irreversible, rerun_safe)]
async fn d_dedup_ticket(customer: &str) -> Result<String, ToolError> {
    serve(customer, "ticket").await
}

/// Found in review: a saga killed while being undone (its log says compensating) with an
/// irreversible `rerun_safe` step in doubt was recovered as a running saga would be, and the
/// ticket was issued during the rollback.
#[tokio::test]
async fn recovery_of_a_saga_being_undone_never_runs_its_irreversible_step() {
    use idem::store::{Claim, ClaimRequest, SagaStore, SagaWrite, StepRecord};
    use idem::{Action, Fingerprint, OnStale};

    let (store, who) = (MemoryStore::new(), "rd-undoing");
    let saga = Action::new("saga").key(&(who,)).unwrap();
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
    // The ticket's intent is logged; its owner's code then failed and began to undo the saga,
    // and the process died there.
    let ticket = StepRecord {
        index: 0,
        name: "d_dedup_ticket".into(),
        key: Action::new("saga_step").key(&(who, 0)).unwrap(),
        irreversible: true,
        args: br#"["rd-undoing"]"#.to_vec(),
        state: StepState::Started,
        output: None,
        error: None,
    };
    let logged = store.write_saga(&saga, who, token, SagaWrite::Step(&ticket));
    assert_eq!(logged.await.unwrap(), idem::store::Ownership::Held);
    let undoing = SagaWrite::Status {
        status: SagaStatus::Compensating,
        error: Some("the ticket office timed out"),
    };
    let logged = store.write_saga(&saga, who, token, undoing);
    assert_eq!(logged.await.unwrap(), idem::store::Ownership::Held);

    let report = recover_when_stale(&store).await;
    assert_eq!(report.needs_attention, [who], "{report}");
    assert_eq!(bodies(who, "ticket"), 0, "never run during the rollback");
    let (status, steps) = saga_status(&store, who).await;
    assert_eq!(status, SagaStatus::NeedsAttention);
    assert_eq!(steps[0], ("d_dedup_ticket".into(), StepState::Started));
}
