//! The claim protocol of the [`Store`] trait, one rule per check: claim, complete and replay;
//! payloads; release and body errors; fencing, leases, takeover and review; heartbeats; TTL;
//! cached errors; `wait`; purge; `get`; claims left in doubt; the shared handle; a body that
//! lost its lease; dead claims.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    acquired, claim, claim_token, complete_ok, fingerprint, key, past, request, still_stored, LONG,
    SHORT,
};
use crate::call::{Action, OnConflict};
use crate::key::{Fingerprint, Key};
use crate::store::OnStale;
use crate::store::{
    Claim, ClaimRequest, Ownership, SagaStatus, SagaWrite, Status, Store, StoredOutcome,
};
use crate::{current_call, Error};

/// A claim of a free key is acquired; once completed, claims are answered with the result.
pub async fn claim_complete_replay(store: &dyn Store) {
    let k = key(1);
    let token = claim_token(store, &k, LONG).await;
    assert_eq!(
        complete_ok(store, &k, token, b"\"receipt\"").await,
        Ownership::Held
    );
    // The same owner again (a retry after a lost answer): held, and the first result stays.
    assert_eq!(
        complete_ok(store, &k, token, b"\"other\"").await,
        Ownership::Held
    );
    for _ in 0..2 {
        match claim(store, &k, LONG).await {
            Claim::Completed {
                fingerprint,
                outcome,
                expires_in,
            } => {
                assert_eq!(fingerprint, Fingerprint::from(k));
                assert_eq!(outcome, StoredOutcome::Ok(b"\"receipt\"".to_vec()));
                // What is left of the TTL (`complete_ok` keeps results `LONG`): never more,
                // and not yet run out (a cache in front of a store may say less: its own
                // bound).
                let left = expires_in.expect("the store says how long it keeps the result");
                assert!(left <= LONG && !left.is_zero(), "{left:?} of {LONG:?}");
            }
            other => panic!("expected the recorded result, got {other:?}"),
        }
    }
}

/// A call's claim ([`Store::claim_without_expiry`]) answers as [`Store::claim`] does: it
/// acquires a free key, reports a live owner with its lease, and a result with its outcome;
/// only a result's `expires_in` may be left out, and when it is said, it is what is left of
/// the TTL. Also on a handle that reads records first (a new handle; Redis then reads a
/// result with one `GET`), after replays.
pub async fn claim_without_expiry_answers_as_claim(store: &dyn Store) {
    let k = key(18);
    let fingerprint = Fingerprint::from(k);
    let request = request(&k, &fingerprint, LONG, OnStale::TakeOver);
    let token = match store.claim_without_expiry(&request).await.expect("claim") {
        Claim::Acquired {
            token,
            resumed: false,
        } => token,
        other => panic!("a fresh key is acquired, not {other:?}"),
    };
    match store.claim_without_expiry(&request).await.expect("claim") {
        Claim::InProgress {
            token: owner,
            lease_remaining,
            fingerprint: owners,
        } => {
            assert_eq!((owner, owners), (token, fingerprint));
            assert!(
                lease_remaining <= LONG && !lease_remaining.is_zero(),
                "{lease_remaining:?}"
            );
        }
        other => panic!("the owner is reported, not {other:?}"),
    }
    assert_eq!(
        complete_ok(store, &k, token, b"\"receipt\"").await,
        Ownership::Held
    );
    for _ in 0..10 {
        match store.claim_without_expiry(&request).await.expect("claim") {
            Claim::Completed {
                fingerprint: of,
                outcome,
                expires_in,
            } => {
                assert_eq!(of, fingerprint);
                assert_eq!(outcome, StoredOutcome::Ok(b"\"receipt\"".to_vec()));
                if let Some(left) = expires_in {
                    assert!(left <= LONG && !left.is_zero(), "{left:?} of {LONG:?}");
                }
            }
            other => panic!("expected the recorded result, got {other:?}"),
        }
    }
}

/// While a lease is live, a second claim reports the owner and its remaining lease.
pub async fn second_claim_sees_in_progress(store: &dyn Store) {
    let k = key(2);
    let token = claim_token(store, &k, LONG).await;
    match claim(store, &k, LONG).await {
        Claim::InProgress {
            token: owner,
            lease_remaining,
            fingerprint,
        } => {
            assert_eq!(owner, token);
            assert_eq!(fingerprint, Fingerprint::from(k));
            assert!(
                lease_remaining > Duration::from_secs(50),
                "lease_remaining = {lease_remaining:?}"
            );
        }
        other => panic!("expected in progress, got {other:?}"),
    }
}

/// The same key with another payload is refused, both while in progress and once completed.
pub async fn payload_mismatch_is_refused(store: &dyn Store) {
    static SEND: Action = Action::new("send").on_conflict(OnConflict::Fail);
    let call = |amount: u32| {
        SEND.call(&("order-7",))
            .and_then(|c| c.with_payload(&("order-7", amount)))
    };

    let (release_body, body_released) = tokio::sync::oneshot::channel::<()>();
    let (started, body_started) = tokio::sync::oneshot::channel::<()>();
    let first = async {
        call(100)
            .expect("call")
            .run::<_, Error, _>(store, async {
                let _ = started.send(());
                let _ = body_released.await;
                Ok(100)
            })
            .await
    };
    let second_while_running = async {
        let _ = body_started.await;
        let refused = call(200)
            .expect("call")
            .run::<u32, Error, _>(store, async { Ok(200) })
            .await;
        let _ = release_body.send(());
        refused
    };
    let (first, refused) = tokio::join!(first, second_while_running);
    assert_eq!(first.expect("first call").into_inner(), 100);
    assert!(
        matches!(refused, Err(Error::PayloadMismatch { .. })),
        "in progress: {refused:?}"
    );

    let after = call(200)
        .expect("call")
        .run::<u32, Error, _>(store, async { Ok(200) })
        .await;
    assert!(
        matches!(after, Err(Error::PayloadMismatch { .. })),
        "completed: {after:?}"
    );
    let same = call(100)
        .expect("call")
        .run::<u32, Error, _>(store, async { Ok(999) })
        .await;
    assert_eq!(same.expect("same payload").into_inner(), 100);
}

/// A released key can be claimed again, under a larger token.
pub async fn release_frees_the_key(store: &dyn Store) {
    let k = key(3);
    let first = claim_token(store, &k, LONG).await;
    assert_eq!(
        store.release(&k, first).await.expect("release"),
        Ownership::Held
    );
    assert_eq!(store.get(&k).await.expect("get"), None);
    let (second, resumed) = acquired(claim(store, &k, LONG).await);
    assert!(second > first, "token {second} after {first}");
    assert!(!resumed);
}

/// An error of the body (not declared final) releases the key: the next call runs again.
pub async fn body_error_releases_the_key(store: &dyn Store) {
    static FLAKY: Action = Action::new("flaky");
    let runs = AtomicUsize::new(0);
    let attempt = |fail: bool| {
        let runs = &runs;
        async move {
            FLAKY
                .call(&("job",))?
                .run::<_, Error, _>(store, async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if fail {
                        Err(Error::codec("a test failure", None, "the body failed"))
                    } else {
                        Ok("done".to_string())
                    }
                })
                .await
        }
    };
    assert!(attempt(true).await.is_err());
    assert_eq!(attempt(false).await.expect("retry").into_inner(), "done");
    assert!(attempt(false).await.expect("replay").is_replayed());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Once a key is taken over, the old token can neither complete, release nor heartbeat.
pub async fn fencing_refuses_a_stale_owner(store: &dyn Store) {
    let k = key(4);
    let stale = claim_token(store, &k, SHORT).await;
    past(SHORT).await;
    let (current, resumed) = acquired(claim(store, &k, LONG).await);
    assert!(resumed, "a takeover is a resumed call");
    assert!(current > stale);
    assert_eq!(complete_ok(store, &k, stale, b"1").await, Ownership::Lost);
    assert_eq!(
        store.release(&k, stale).await.expect("release"),
        Ownership::Lost
    );
    assert_eq!(
        store.heartbeat(&k, stale, LONG).await.expect("heartbeat"),
        Ownership::Lost
    );
    // The current owner is untouched by all of that.
    assert_eq!(complete_ok(store, &k, current, b"2").await, Ownership::Held);
    match claim(store, &k, LONG).await {
        Claim::Completed { outcome, .. } => assert_eq!(outcome, StoredOutcome::Ok(b"2".to_vec())),
        other => panic!("expected the current owner's result, got {other:?}"),
    }
}

/// A live lease is not taken over; an expired one is, by the next claim.
pub async fn expired_lease_is_taken_over(store: &dyn Store) {
    let k = key(5);
    let claimed = Instant::now();
    let first = claim_token(store, &k, SHORT).await;
    let second_claim = claim(store, &k, SHORT).await;
    // Only meaningful while the lease can still be live (a loaded machine may be slower).
    if claimed.elapsed() < SHORT {
        assert!(
            matches!(second_claim, Claim::InProgress { .. }),
            "{second_claim:?}"
        );
    }
    past(SHORT).await;
    let (second, resumed) = acquired(claim(store, &k, LONG).await);
    assert!(resumed && second > first);
}

/// An expired lease of a call with another payload is not the caller's to resume.
pub async fn stale_lease_with_other_payload_is_not_taken_over(store: &dyn Store) {
    let k = key(6);
    let (a, b) = (fingerprint(1), fingerprint(2));
    let first = store
        .claim(&request(&k, &a, SHORT, OnStale::TakeOver))
        .await
        .expect("claim");
    acquired(first);
    past(SHORT).await;
    match store
        .claim(&request(&k, &b, LONG, OnStale::TakeOver))
        .await
        .expect("claim")
    {
        Claim::InProgress { fingerprint, .. } => assert_eq!(fingerprint, a),
        other => panic!("expected the dead owner's record, got {other:?}"),
    }
}

/// With `OnStale::Review`, an expired lease parks the key as NEEDS_REVIEW, until an operator
/// or the late owner itself settles it.
pub async fn stale_lease_parks_for_review(store: &dyn Store) {
    let k = key(7);
    let fp = Fingerprint::from(k);
    let stale = acquired(
        store
            .claim(&request(&k, &fp, SHORT, OnStale::Review))
            .await
            .expect("claim"),
    )
    .0;
    past(SHORT).await;
    for _ in 0..2 {
        match store
            .claim(&request(&k, &fp, LONG, OnStale::Review))
            .await
            .expect("claim")
        {
            Claim::NeedsReview { fingerprint } => assert_eq!(fingerprint, fp),
            other => panic!("expected needs review, got {other:?}"),
        }
    }
    let record = store.get(&k).await.expect("get").expect("a record");
    assert_eq!(record.status, Status::NeedsReview);
    assert_eq!(record.expires_at, None);
    // The owner was slow, not dead: what it records settles the review.
    assert_eq!(
        complete_ok(store, &k, stale, b"late").await,
        Ownership::Held
    );
    match store
        .claim(&request(&k, &fp, LONG, OnStale::Review))
        .await
        .expect("claim")
    {
        Claim::Completed { outcome, .. } => {
            assert_eq!(outcome, StoredOutcome::Ok(b"late".to_vec()))
        }
        other => panic!("expected the late owner's result, got {other:?}"),
    }
}

/// With `on_stale = review`, the caller after an interrupted call gets `NeedsReview`, and
/// so does every later one.
pub async fn interrupted_call_waits_for_review(store: &dyn Store) {
    static PAY: Action = Action::new("pay")
        .lease(SHORT)
        .on_stale(OnStale::Review)
        .on_conflict(OnConflict::Wait(LONG));
    let k = PAY.key(&("order-9",)).expect("key");
    // An owner that died: its claim is there, nobody will complete or heartbeat it.
    let dead = store
        .claim(&request(&k, &Fingerprint::from(k), SHORT, OnStale::Review))
        .await
        .expect("claim");
    acquired(dead);
    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        let result = PAY
            .call(&("order-9",))
            .expect("call")
            .run::<u32, Error, _>(store, async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            })
            .await;
        assert!(
            matches!(result, Err(Error::NeedsReview { .. })),
            "{result:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// The "in doubt" row of the state table: a claim left in doubt (its body's outcome unknown)
/// is not free, and the next claim follows `on_stale` at once, without waiting for the lease:
/// resumed under a new token (`takeover`, then `verify`), or parked for review. A waiter on
/// the key returns. A token that no longer owns the key changes nothing.
pub async fn a_claim_left_in_doubt_follows_on_stale_at_once(store: &dyn Store) {
    let (k, fp) = (key(40), Fingerprint::from(key(40)));
    let first = claim_token(store, &k, LONG).await;
    let waited = Instant::now();
    let (left, ()) = tokio::join!(store.leave_in_doubt(&k, first), async {
        store.wait(&k, first, LONG).await.expect("wait")
    });
    assert_eq!(left.expect("leave in doubt"), Ownership::Held);
    assert!(
        waited.elapsed() < LONG,
        "the waiter returned when the key was left in doubt"
    );
    let record = store
        .get(&k)
        .await
        .expect("get")
        .expect("kept, not released");
    assert_eq!(record.status, Status::InProgress);
    let (second, resumed) = acquired(
        store
            .claim(&request(&k, &fp, LONG, OnStale::TakeOver))
            .await
            .expect("claim"),
    );
    assert!(resumed && second > first, "resumed under a new token");
    assert_eq!(
        store.leave_in_doubt(&k, first).await.expect("stale token"),
        Ownership::Lost
    );

    let (k, fp) = (key(41), Fingerprint::from(key(41)));
    let owner = acquired(
        store
            .claim(&request(&k, &fp, LONG, OnStale::Review))
            .await
            .expect("claim"),
    )
    .0;
    assert_eq!(
        store
            .leave_in_doubt(&k, owner)
            .await
            .expect("leave in doubt"),
        Ownership::Held
    );
    match store
        .claim(&request(&k, &fp, LONG, OnStale::Review))
        .await
        .expect("claim")
    {
        Claim::NeedsReview { fingerprint } => assert_eq!(fingerprint, fp),
        other => panic!("expected the key parked for review, got {other:?}"),
    }
}

/// A store's owned handle ([`Store::shared`]), when it has one, is the same store: what a
/// call dropped while it claims gives back through it is the claim it made.
pub async fn a_shared_handle_is_the_same_store(store: &dyn Store) {
    let Some(handle) = store.shared() else {
        return;
    };
    let k = key(42);
    let token = claim_token(&*handle, &k, LONG).await;
    let record = store
        .get(&k)
        .await
        .expect("get")
        .expect("the handle's claim");
    assert_eq!((record.status, record.token), (Status::InProgress, token));
    assert_eq!(
        handle.release(&k, token).await.expect("release"),
        Ownership::Held
    );
    assert!(store.get(&k).await.expect("get").is_none(), "given back");
}

/// A body whose lease is lost meanwhile (here an operator released the key under it) learns
/// it from its heartbeat: `CallContext::is_lease_lost` and the `lease_lost` future, on which
/// a long body can stop. Its result is not recorded.
pub async fn a_body_learns_that_its_lease_was_lost(store: &dyn Store) {
    static EXPORT: Action = Action::new("export_rows").lease(SHORT);
    let (started, token) = tokio::sync::oneshot::channel();
    let saw_it = std::sync::atomic::AtomicBool::new(false);
    let owner = async {
        EXPORT
            .call(&("table-7",))?
            .run::<_, Error, _>(store, async {
                let call = current_call().expect("inside the body");
                let _ = started.send((call.key(), call.fencing_token()));
                if tokio::time::timeout(LONG, call.lease_lost()).await.is_ok() {
                    saw_it.store(call.is_lease_lost(), std::sync::atomic::Ordering::SeqCst);
                }
                Ok(7)
            })
            .await
    };
    let operator = async {
        let (key, token) = token.await.expect("the body started");
        assert_eq!(
            store.release(&key, token).await.expect("release"),
            Ownership::Held
        );
    };
    let (owned, ()) = tokio::join!(owner, operator);
    assert!(
        saw_it.load(std::sync::atomic::Ordering::SeqCst),
        "the body was told"
    );
    assert!(
        matches!(owned, Err(Error::LostOwnership { .. })),
        "not recorded: {owned:?}"
    );
}

/// A heartbeat renews the lease from the moment it is made.
pub async fn heartbeat_extends_the_lease(store: &dyn Store) {
    let k = key(8);
    let token = claim_token(store, &k, SHORT).await;
    assert_eq!(
        store.heartbeat(&k, token, LONG).await.expect("heartbeat"),
        Ownership::Held
    );
    past(SHORT).await;
    assert!(
        matches!(claim(store, &k, LONG).await, Claim::InProgress { token: t, .. } if t == token)
    );
}

/// A result whose TTL ran out is gone: the key runs afresh (not as a resumed call).
pub async fn ttl_expiry_frees_the_key(store: &dyn Store) {
    let k = key(9);
    let first = claim_token(store, &k, LONG).await;
    let recorded = Instant::now();
    let done = store
        .complete(&k, first, StoredOutcome::Ok(b"1".to_vec()), SHORT)
        .await
        .expect("complete");
    assert_eq!(done, Ownership::Held);
    let replay = claim(store, &k, LONG).await;
    if recorded.elapsed() < SHORT {
        assert!(matches!(replay, Claim::Completed { .. }), "{replay:?}");
    }
    past(SHORT).await;
    let (second, resumed) = acquired(claim(store, &k, LONG).await);
    assert!(second > first && !resumed);
}

/// Tokens keep growing when a key's record is deleted and made again, so that an owner from
/// before can never match a later owner's token.
pub async fn tokens_grow_across_release_and_expiry(store: &dyn Store) {
    let k = key(10);
    let mut last = 0;
    for _ in 0..3 {
        let token = claim_token(store, &k, LONG).await;
        assert!(token > last, "token {token} after {last}");
        assert_eq!(
            store.release(&k, token).await.expect("release"),
            Ownership::Held
        );
        last = token;
    }
    let token = claim_token(store, &k, LONG).await;
    let done = store
        .complete(&k, token, StoredOutcome::Ok(b"1".to_vec()), SHORT)
        .await
        .expect("complete");
    assert_eq!(done, Ownership::Held);
    past(SHORT).await;
    let again = claim_token(store, &k, LONG).await;
    assert!(again > token, "token {again} after {token}");
}

/// An error the action declares final is recorded and replayed without running the body.
pub async fn cached_errors_are_replayed(store: &dyn Store) {
    static CHARGE: Action = Action::new("charge");
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum PayError {
        Declined,
        Timeout,
        Idem(String),
    }
    impl From<Error> for PayError {
        fn from(e: Error) -> Self {
            PayError::Idem(e.to_string())
        }
    }
    let runs = AtomicUsize::new(0);
    let charge = |card: &'static str, error: PayError| {
        let runs = &runs;
        async move {
            let call = CHARGE.call(&(card,)).map_err(PayError::from)?;
            call.run_caching_errors::<u32, _, _>(store, |e| *e == PayError::Declined, async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err(error)
            })
            .await
        }
    };
    assert_eq!(
        charge("card-1", PayError::Declined).await,
        Err(PayError::Declined)
    );
    assert_eq!(
        charge("card-1", PayError::Timeout).await,
        Err(PayError::Declined)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a final error is replayed");
    assert_eq!(
        charge("card-2", PayError::Timeout).await,
        Err(PayError::Timeout)
    );
    assert_eq!(
        charge("card-2", PayError::Timeout).await,
        Err(PayError::Timeout)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "a transient error is not recorded"
    );

    let record = store
        .get(&CHARGE.key(&("card-1",)).expect("key"))
        .await
        .expect("get")
        .expect("a record");
    assert_eq!(
        record.outcome,
        Some(StoredOutcome::Err(b"\"Declined\"".to_vec()))
    );
}

/// `wait` returns once the key is no longer held: at once when it is already free, and soon
/// after a release while it waits.
pub async fn wait_returns_when_the_key_is_released(store: &dyn Store) {
    let k = key(11);
    let token = claim_token(store, &k, LONG).await;
    let waiting = store.wait(&k, token, LONG);
    let releasing = async {
        tokio::task::yield_now().await;
        store.release(&k, token).await.expect("release")
    };
    let bounded = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(waiting, releasing)
    });
    let (waited, released) = bounded
        .await
        .expect("wait must return once the key is released");
    waited.expect("wait");
    assert_eq!(released, Ownership::Held);
    let again = tokio::time::timeout(Duration::from_secs(20), store.wait(&k, token, LONG)).await;
    again
        .expect("wait on a free key returns at once")
        .expect("wait");
}

/// Purging removes the results whose TTL ran out and nothing else.
pub async fn purge_removes_only_expired_results(store: &dyn Store) {
    let (expiring, kept, running) = (key(12), key(13), key(14));
    let t = claim_token(store, &expiring, LONG).await;
    let done = store
        .complete(&expiring, t, StoredOutcome::Ok(b"1".to_vec()), SHORT)
        .await
        .expect("complete");
    assert_eq!(done, Ownership::Held);
    let t = claim_token(store, &kept, LONG).await;
    assert_eq!(complete_ok(store, &kept, t, b"2").await, Ownership::Held);
    claim_token(store, &running, SHORT).await;
    past(SHORT).await;
    let left = still_stored(store, &[expiring]).await;
    assert_eq!(store.purge_expired().await.expect("purge"), left);
    assert_eq!(store.get(&expiring).await.expect("get"), None);
    assert!(store.get(&kept).await.expect("get").is_some());
    assert!(
        store.get(&running).await.expect("get").is_some(),
        "a dead owner's claim stays for takeover while its TTL runs"
    );
}

/// Claims `key` (its own payload) with `lease` and the action's `ttl`.
async fn claim_with_ttl(
    store: &dyn Store,
    key: &Key,
    lease: Duration,
    ttl: Duration,
    on_stale: OnStale,
) -> Claim {
    let fingerprint = Fingerprint::from(*key);
    let request = ClaimRequest {
        ttl,
        ..request(key, &fingerprint, lease, on_stale)
    };
    store.claim(&request).await.expect("claim")
}

/// A claim whose owner died is purged once its lease and the action's TTL have both run out
/// (also one left in doubt, whose lease ended at once), counted by `count_expired` and
/// purged in batches; until then it is kept for a caller of the same payload to resume. A key
/// parked for review waits for its operator, a claim kept alive by a heartbeat stays, and so
/// does the claim of a saga whose owner died (recovery needs it).
pub async fn a_dead_claim_is_purged_after_its_lease_and_ttl(store: &dyn Store) {
    let (dead, resumable, parked) = (key(40), key(41), key(42));
    let (live, in_doubt, saga) = (key(43), key(44), key(45));
    let take_over = OnStale::TakeOver;
    acquired(claim_with_ttl(store, &dead, SHORT, SHORT, take_over).await);
    acquired(claim_with_ttl(store, &resumable, SHORT, LONG, take_over).await);
    let (token, _) = acquired(claim_with_ttl(store, &live, SHORT, SHORT, take_over).await);
    let beat = store
        .heartbeat(&live, token, LONG)
        .await
        .expect("heartbeat");
    assert_eq!(beat, Ownership::Held);
    let (token, _) = acquired(claim_with_ttl(store, &in_doubt, LONG, SHORT, take_over).await);
    let left = store.leave_in_doubt(&in_doubt, token).await;
    assert_eq!(left.expect("leave_in_doubt"), Ownership::Held);
    let (token, _) = acquired(claim_with_ttl(store, &saga, SHORT, SHORT, take_over).await);
    let running = SagaWrite::Status {
        status: SagaStatus::Running,
        error: None,
    };
    let written = store.write_saga(&saga, "order-45", token, running).await;
    assert_eq!(written.expect("write_saga"), Ownership::Held);
    // Claimed last: its review must come after its lease, before its lease and TTL are over
    // (then it is gone), a window of one SHORT that slow writes before it would narrow.
    acquired(claim_with_ttl(store, &parked, SHORT, SHORT, OnStale::Review).await);

    // The leases ran out: the review is parked.
    past(SHORT).await;
    let review = claim_with_ttl(store, &parked, SHORT, SHORT, OnStale::Review).await;
    assert!(matches!(review, Claim::NeedsReview { .. }), "{review:?}");

    // Lease and TTL ran out for `dead` and `in_doubt`, not the TTL of `resumable`: the two
    // are purged, one batch at a time.
    past(SHORT).await;
    // Two to purge, or none where the store deleted them itself when they expired (Redis).
    let left = still_stored(store, &[dead, in_doubt]).await;
    assert!(left == 2 || left == 0, "{left}");
    assert_eq!(store.count_expired().await.expect("count_expired"), left);
    assert_eq!(store.purge_expired_batch(1).await.expect("purge"), left / 2);
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        left / 2
    );
    assert_eq!(
        store.purge_expired_batch(10).await.expect("purge"),
        left / 2
    );
    assert_eq!(store.purge_expired_batch(10).await.expect("purge"), 0);
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    assert_eq!(store.get(&dead).await.expect("get"), None, "a dead claim");
    assert_eq!(
        store.get(&in_doubt).await.expect("get"),
        None,
        "left in doubt"
    );

    let status = |record: Option<crate::store::Record>| record.map(|record| record.status);
    assert_eq!(
        status(store.get(&parked).await.expect("get")),
        Some(Status::NeedsReview),
        "a parked review waits for its operator"
    );
    assert_eq!(
        status(store.get(&live).await.expect("get")),
        Some(Status::InProgress),
        "a claim kept alive by its heartbeat"
    );
    assert_eq!(
        status(store.get(&saga).await.expect("get")),
        Some(Status::InProgress),
        "a saga's claim stays for recovery"
    );
    let stale = store.stale_sagas(10).await.expect("stale_sagas");
    assert!(stale.iter().any(|s| s.key == saga), "{stale:?}");
    let (_, resumed) = acquired(claim_with_ttl(store, &resumable, LONG, LONG, take_over).await);
    assert!(
        resumed,
        "a dead claim is kept until the action's TTL ran out after its lease, and resumed"
    );
}

/// `get` shows what operators need: action, status, token, fingerprint, result, times.
pub async fn get_shows_the_record(store: &dyn Store) {
    let k = key(15);
    assert_eq!(store.get(&k).await.expect("get"), None);
    let token = claim_token(store, &k, LONG).await;
    let record = store.get(&k).await.expect("get").expect("a record");
    assert_eq!(
        (record.key, record.status, record.token),
        (k, Status::InProgress, token)
    );
    assert_eq!(record.action, "conformance");
    assert_eq!(record.fingerprint, Fingerprint::from(k));
    assert_eq!(record.outcome, None);
    assert!(record.expires_at.is_some_and(|at| at > record.created_at));
    assert_eq!(complete_ok(store, &k, token, b"{}").await, Ownership::Held);
    let record = store.get(&k).await.expect("get").expect("a record");
    assert_eq!(record.status, Status::Completed);
    assert_eq!(record.outcome, Some(StoredOutcome::Ok(b"{}".to_vec())));
}
