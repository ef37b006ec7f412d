//! `ReplayCache`: a process's repeated replays answered from memory, within its bounds (its
//! entries, its age, the record's TTL), and what an operator's deletion, `unlock` and
//! `settle` mean while a result is cached.

use std::sync::atomic::Ordering;
use std::time::Duration;

use idem::idempotent;
use idem::store::{
    Claim, ClaimRequest, Inspect, MemoryStore, Ownership, ReplayCache, SqliteStore, Store,
    StoredOutcome,
};
use idem::{Action, Fingerprint, OnStale};

use crate::faulty_store::FaultyStore;
use crate::support::{Ledger, Receipt, ToolError};

#[idempotent(store = store, skip = [store, ledger], name = "replay_cache_send")]
async fn send(store: &dyn Store, ledger: &Ledger, to: &str) -> Result<Receipt, ToolError> {
    let n = ledger.record();
    Ok(Receipt {
        id: format!("{n}: {to}"),
    })
}

/// A short-lived result: kept 2 s.
#[idempotent(store = store, skip = [store, ledger], name = "replay_cache_short", ttl = "2s")]
async fn send_briefly(store: &dyn Store, ledger: &Ledger, to: &str) -> Result<Receipt, ToolError> {
    let n = ledger.record();
    Ok(Receipt {
        id: format!("{n}: {to}"),
    })
}

fn claims(store: &ReplayCache<FaultyStore>) -> usize {
    store.inner().claims.load(Ordering::SeqCst)
}

#[tokio::test]
async fn repeated_replays_skip_the_store_once_the_result_is_learned() {
    let store = ReplayCache::new(FaultyStore::new());
    let ledger = Ledger::new();
    let first = send(&store, &ledger, "ada").await.unwrap();
    // The owner's claim, then the first replay's: the result is learned from the store.
    assert_eq!(send(&store, &ledger, "ada").await.unwrap(), first);
    assert_eq!(claims(&store), 2);
    assert_eq!(store.len(), 1);
    for _ in 0..10 {
        assert_eq!(send(&store, &ledger, "ada").await.unwrap(), first);
    }
    assert_eq!(claims(&store), 2, "the replays were answered from memory");
    assert_eq!(ledger.count(), 1);
    // Another key is not answered from the cache.
    send(&store, &ledger, "grace").await.unwrap();
    assert_eq!(ledger.count(), 2);
}

#[tokio::test]
async fn a_cached_result_claimed_with_other_arguments_is_refused() {
    static ACTION: Action = Action::new("replay_cache_payload");
    let store = ReplayCache::new(MemoryStore::new());
    let key = ACTION.key(&("order-7",)).unwrap();
    let ours = Fingerprint::from(key);
    let theirs = ACTION.fingerprint(&("order-7", 2_000)).unwrap();
    let request = |fingerprint| ClaimRequest {
        key: &key,
        fingerprint,
        action: "replay_cache_payload",
        lease: Duration::from_secs(10),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let Claim::Acquired { token, .. } = store.claim(&request(&ours)).await.unwrap() else {
        panic!("a free key is acquired")
    };
    let _ = store
        .complete(
            &key,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    store.claim(&request(&ours)).await.unwrap();
    assert_eq!(store.len(), 1, "learned");
    // The cache answers as the store would: the first payload's fingerprint, which the call
    // compares with its own (`PayloadMismatch`).
    match store.claim(&request(&theirs)).await.unwrap() {
        Claim::Completed { fingerprint, .. } => assert_eq!(fingerprint, ours),
        other => panic!("the recorded result, with its fingerprint: {other:?}"),
    }
}

#[tokio::test]
async fn through_a_call_other_arguments_under_a_cached_key_are_a_payload_mismatch() {
    #[idempotent(store = store, skip = [store, ledger], key = [order], name = "replay_cache_charge")]
    async fn charge(
        store: &dyn Store,
        ledger: &Ledger,
        order: &str,
        cents: u64,
    ) -> Result<Receipt, ToolError> {
        let n = ledger.record();
        Ok(Receipt {
            id: format!("{n}: {order} {cents}"),
        })
    }
    let store = ReplayCache::new(MemoryStore::new());
    let ledger = Ledger::new();
    charge(&store, &ledger, "order-7", 1_000).await.unwrap();
    charge(&store, &ledger, "order-7", 1_000).await.unwrap();
    assert_eq!(store.len(), 1);
    let refused = charge(&store, &ledger, "order-7", 2_000).await.unwrap_err();
    assert!(
        matches!(&refused, ToolError::Idem(message) if message.contains("different arguments")),
        "PayloadMismatch: {refused:?}"
    );
    assert_eq!(ledger.count(), 1);
}

#[tokio::test]
async fn a_cached_result_is_never_replayed_past_its_ttl() {
    // The cache may keep results an hour; this one's TTL is 2 s (room for the second call to
    // come within it on a loaded machine).
    let store = ReplayCache::new(FaultyStore::new()).max_age(Duration::from_secs(3600));
    let ledger = Ledger::new();
    send_briefly(&store, &ledger, "ada").await.unwrap();
    send_briefly(&store, &ledger, "ada").await.unwrap();
    assert_eq!(store.len(), 1, "learned");
    // Past the TTL (a sleep of at least that long: the store's own clock says it ran out).
    tokio::time::sleep(Duration::from_millis(2_050)).await;
    send_briefly(&store, &ledger, "ada").await.unwrap();
    assert_eq!(
        ledger.count(),
        2,
        "the store forgot the result, so the cache did too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cached_result_ages_out_after_max_age() {
    let store = ReplayCache::new(FaultyStore::new()).max_age(Duration::from_secs(10));
    let ledger = Ledger::new();
    send(&store, &ledger, "ada").await.unwrap();
    send(&store, &ledger, "ada").await.unwrap();
    send(&store, &ledger, "ada").await.unwrap();
    assert_eq!(claims(&store), 2);
    tokio::time::advance(Duration::from_secs(9)).await;
    send(&store, &ledger, "ada").await.unwrap();
    assert_eq!(claims(&store), 2, "younger than max_age: from memory");
    tokio::time::advance(Duration::from_secs(2)).await;
    send(&store, &ledger, "ada").await.unwrap();
    assert_eq!(
        claims(&store),
        3,
        "older than max_age: asked the store again"
    );
    assert_eq!(ledger.count(), 1, "which still had the result");
}

#[tokio::test]
async fn at_most_max_entries_results_are_kept_the_oldest_going_first() {
    let store = ReplayCache::new(FaultyStore::new()).max_entries(2);
    let ledger = Ledger::new();
    for to in ["ada", "grace", "alan"] {
        send(&store, &ledger, to).await.unwrap();
        send(&store, &ledger, to).await.unwrap(); // learned
    }
    assert_eq!(store.len(), 2);
    let before = claims(&store);
    send(&store, &ledger, "alan").await.unwrap();
    send(&store, &ledger, "grace").await.unwrap();
    assert_eq!(claims(&store), before, "the two newest are cached");
    send(&store, &ledger, "ada").await.unwrap();
    assert_eq!(claims(&store), before + 1, "the oldest was pushed out");
    assert_eq!(ledger.count(), 3);

    let none = ReplayCache::new(FaultyStore::new()).max_entries(0);
    send(&none, &ledger, "ada").await.unwrap();
    send(&none, &ledger, "ada").await.unwrap();
    assert!(none.is_empty(), "max_entries(0) keeps nothing");
}

/// The rule the docs give operators: a completed record deleted elsewhere (by hand, or by
/// code of one's own) is still replayed by a process that cached it, until the entry is
/// `max_age` old or the process drops it (`ReplayCache::forget`).
#[tokio::test]
async fn a_record_deleted_by_hand_is_replayed_from_the_cache_until_forgotten() {
    let folder = std::env::temp_dir().join(format!(
        "idem-replay-cache-{}-{}",
        std::process::id(),
        line!()
    ));
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("idem.db");
    let store = ReplayCache::new(SqliteStore::open(&file).await.unwrap());
    let ledger = Ledger::new();
    let first = send(&store, &ledger, "ada").await.unwrap();
    send(&store, &ledger, "ada").await.unwrap();
    assert_eq!(store.len(), 1, "learned");

    // An operator deletes the record in the database, from another process.
    let deleted = rusqlite::Connection::open(&file)
        .unwrap()
        .execute("DELETE FROM idem_records", [])
        .unwrap();
    assert_eq!(deleted, 1);

    assert_eq!(
        send(&store, &ledger, "ada").await.unwrap(),
        first,
        "the cached result, although the store has none"
    );
    assert_eq!(ledger.count(), 1);
    let key = Action::new("replay_cache_send").key(&("ada",)).unwrap();
    assert!(store.forget(&key));
    assert!(!store.forget(&key));
    let again = send(&store, &ledger, "ada").await.unwrap();
    assert_ne!(
        again, first,
        "forgotten: the store had nothing, so the body ran"
    );
    assert_eq!(ledger.count(), 2);
    let _ = std::fs::remove_dir_all(&folder);
}

/// `unlock` and `settle` (the `idem` command) act on keys in doubt or parked for review,
/// which are never cached: what they did is seen at the next claim.
#[tokio::test]
async fn unlock_and_settle_are_seen_at_once() {
    static ACTION: Action = Action::new("replay_cache_review");
    for (n, operator_settles) in [(1, true), (2, false)] {
        let store = ReplayCache::new(MemoryStore::new());
        let key = ACTION.key(&(n,)).unwrap();
        let fingerprint = Fingerprint::from(key);
        let request = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "replay_cache_review",
            lease: Duration::from_secs(10),
            ttl: Duration::from_secs(3600),
            on_stale: OnStale::Review,
        };
        let Claim::Acquired { token, .. } = store.claim(&request).await.unwrap() else {
            panic!("a free key is acquired")
        };
        // The body's effect is unknown: in doubt, then parked for review by the next call.
        let _ = store.leave_in_doubt(&key, token).await.unwrap();
        for _ in 0..2 {
            let parked = store.claim(&request).await.unwrap();
            assert!(matches!(parked, Claim::NeedsReview { .. }), "{parked:?}");
        }
        assert!(store.is_empty(), "nothing but results is cached");

        // The operator, from another process: through the store itself.
        let record = store.inner().get(&key).await.unwrap().expect("the record");
        if operator_settles {
            let _ = store
                .inner()
                .complete(
                    &key,
                    record.token,
                    StoredOutcome::Ok(b"\"settled\"".to_vec()),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();
            match store.claim(&request).await.unwrap() {
                Claim::Completed { outcome, .. } => {
                    assert_eq!(outcome, StoredOutcome::Ok(b"\"settled\"".to_vec()))
                }
                other => panic!("the settled result at once: {other:?}"),
            }
        } else {
            let _ = store.inner().release(&key, record.token).await.unwrap();
            let claim = store.claim(&request).await.unwrap();
            assert!(
                matches!(claim, Claim::Acquired { .. }),
                "unlocked: the next call runs the body: {claim:?}"
            );
        }
    }
}

/// `forget_result` (what `idem forget` does): made through the cache, the result is dropped
/// here too and the next call runs the body; made through another handle (another process:
/// the operator's command), this process replays the deleted result until the entry ages out.
#[tokio::test(start_paused = true)]
async fn a_result_forgotten_elsewhere_is_replayed_until_max_age() {
    let store = ReplayCache::new(MemoryStore::new()).max_age(Duration::from_secs(10));
    let ledger = Ledger::new();
    let key = Action::new("replay_cache_send").key(&("ada",)).unwrap();
    let first = send(&store, &ledger, "ada").await.unwrap();
    send(&store, &ledger, "ada").await.unwrap(); // learned

    // Elsewhere: the store's own handle.
    let token = store
        .inner()
        .get(&key)
        .await
        .unwrap()
        .expect("the record")
        .token;
    let forgotten = store.inner().forget_result(&key, token).await.unwrap();
    assert_eq!(forgotten, Ownership::Held);
    assert_eq!(send(&store, &ledger, "ada").await.unwrap(), first);
    assert_eq!(
        ledger.count(),
        1,
        "replayed from the cache, although forgotten"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    let second = send(&store, &ledger, "ada").await.unwrap();
    assert_ne!(
        second, first,
        "aged out: the store had nothing, so the body ran"
    );
    send(&store, &ledger, "ada").await.unwrap(); // learned again

    // Through the cache: dropped here at once.
    let token = store.get(&key).await.unwrap().expect("the record").token;
    assert_eq!(
        store.forget_result(&key, token).await.unwrap(),
        Ownership::Held
    );
    let third = send(&store, &ledger, "ada").await.unwrap();
    assert_ne!(
        third, second,
        "forgotten through the cache: the body ran at once"
    );
    assert_eq!(ledger.count(), 3);
}
