//! The operators' queries of the [`Store`] trait: listings, counts, batched purge, resolving
//! a saga by hand. The claim protocol never calls them; the `idem` command does.

use std::time::Duration;

use crate::call::Action;
use crate::conformance::{claim_token, past, still_stored, LONG, SHORT};
use crate::key::{Fingerprint, Key};
use crate::store::OnStale;
use crate::store::{
    Claim, ClaimRequest, Ownership, RecordCount, RecordKind, RecordQuery, SagaQuery, SagaStatus,
    SagaWrite, Status, Store, StoredOutcome,
};

static EMAIL: Action = Action::new("send_email");
static CHARGE: Action = Action::new("charge_card");

/// The four kinds of record, one each, made in this order (so the newest is `review`).
struct Filled {
    sent: Key,
    declined: Key,
    running: Key,
    review: Key,
}

/// A pause that puts a later timestamp on the next record, whatever the clock's resolution.
pub(super) async fn tick() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

async fn claim_as(
    store: &dyn Store,
    action: &str,
    key: &Key,
    lease: Duration,
    on_stale: OnStale,
) -> Claim {
    let fingerprint = Fingerprint::from(*key);
    let request = ClaimRequest {
        key,
        fingerprint: &fingerprint,
        action,
        lease,
        ttl: LONG,
        on_stale,
    };
    store.claim(&request).await.expect("claim")
}

async fn token_as(
    store: &dyn Store,
    action: &str,
    key: &Key,
    lease: Duration,
    on_stale: OnStale,
) -> u64 {
    match claim_as(store, action, key, lease, on_stale).await {
        Claim::Acquired { token, .. } => token,
        other => panic!("expected a free key to be acquired, got {other:?}"),
    }
}

async fn fill(store: &dyn Store) -> Filled {
    let sent = EMAIL.key(&("ada", 1)).expect("canonical");
    let token = token_as(store, "send_email", &sent, LONG, OnStale::TakeOver).await;
    let ok = StoredOutcome::Ok(b"\"msg-1\"".to_vec());
    assert_eq!(
        store
            .complete(&sent, token, ok, LONG)
            .await
            .expect("complete"),
        Ownership::Held
    );
    tick().await;

    let declined = CHARGE.key(&("ada", 2)).expect("canonical");
    let token = token_as(store, "charge_card", &declined, LONG, OnStale::TakeOver).await;
    let err = StoredOutcome::Err(b"\"card declined\"".to_vec());
    assert_eq!(
        store
            .complete(&declined, token, err, LONG)
            .await
            .expect("complete"),
        Ownership::Held
    );
    tick().await;

    let running = CHARGE.key(&("ada", 3)).expect("canonical");
    token_as(store, "charge_card", &running, LONG, OnStale::TakeOver).await;
    tick().await;

    let review = CHARGE.key(&("ada", 4)).expect("canonical");
    token_as(store, "charge_card", &review, SHORT, OnStale::Review).await;
    past(SHORT).await;
    assert!(
        matches!(
            claim_as(store, "charge_card", &review, LONG, OnStale::Review).await,
            Claim::NeedsReview { .. }
        ),
        "a dead owner's claim with on_stale = review is parked"
    );
    Filled {
        sent,
        declined,
        running,
        review,
    }
}

async fn keys(store: &dyn Store, query: RecordQuery) -> Vec<Key> {
    store
        .list_records(&query)
        .await
        .expect("list_records")
        .into_iter()
        .map(|record| record.key)
        .collect()
}

/// Records are listed newest first, filtered by kind (completed records split into
/// `completed` and `failed` by what they recorded), action and key prefix, up to the limit,
/// and each is the record [`Store::get`] returns.
pub async fn list_records_filters_and_orders(store: &dyn Store) {
    let f = fill(store).await;
    let all = store
        .list_records(&RecordQuery::new())
        .await
        .expect("list_records");
    let listed: Vec<Key> = all.iter().map(|record| record.key).collect();
    assert_eq!(
        listed,
        [f.review, f.running, f.declined, f.sent],
        "newest first"
    );
    for record in &all {
        let got = store
            .get(&record.key)
            .await
            .expect("get")
            .expect("the record");
        assert_eq!(record, &got, "a listed record is the record itself");
    }

    for (kind, expected) in [
        (RecordKind::Completed, f.sent),
        (RecordKind::Failed, f.declined),
        (RecordKind::InProgress, f.running),
        (RecordKind::NeedsReview, f.review),
    ] {
        assert_eq!(
            keys(store, RecordQuery::new().kind(kind)).await,
            [expected],
            "{kind}"
        );
    }
    assert_eq!(
        keys(store, RecordQuery::new().action("charge_card")).await,
        [f.review, f.running, f.declined]
    );
    assert_eq!(
        keys(
            store,
            RecordQuery::new()
                .action("charge_card")
                .kind(RecordKind::Completed)
        )
        .await,
        [],
        "a failed charge is not a completed one"
    );
    assert_eq!(
        keys(store, RecordQuery::new().action("no_such_action")).await,
        []
    );
    assert_eq!(
        keys(store, RecordQuery::new().limit(2)).await,
        [f.review, f.running],
        "the limit keeps the newest"
    );

    let hex = f.sent.to_string();
    assert_eq!(
        keys(store, RecordQuery::new().key_prefix(&hex)).await,
        [f.sent]
    );
    assert_eq!(
        keys(
            store,
            RecordQuery::new().key_prefix(&hex[..8].to_ascii_uppercase())
        )
        .await,
        [f.sent],
        "a prefix is enough, in either case"
    );
    assert_eq!(
        keys(store, RecordQuery::new().key_prefix("")).await.len(),
        4
    );
    for not_hex in ["zz", "*", "?", "[a-f]", "%", "_", "\\"] {
        assert_eq!(
            keys(store, RecordQuery::new().key_prefix(not_hex)).await,
            [],
            "`{not_hex}` is no key's prefix, and no pattern either"
        );
    }
}

/// The counts are by action and kind, sorted, and add up to the records.
pub async fn record_counts_by_action_and_kind(store: &dyn Store) {
    assert_eq!(store.record_counts().await.expect("record_counts"), []);
    fill(store).await;
    let charge = |kind| RecordCount::new("charge_card".into(), kind, 1);
    assert_eq!(
        store.record_counts().await.expect("record_counts"),
        [
            charge(RecordKind::InProgress),
            charge(RecordKind::Failed),
            charge(RecordKind::NeedsReview),
            RecordCount::new("send_email".into(), RecordKind::Completed, 1),
        ]
    );
}

/// `count_expired` counts what `purge_expired` would delete; `purge_expired_batch` deletes
/// at most its limit (here expired results, with the logs of the sagas they ended) until it
/// returns 0.
pub async fn purge_expired_in_batches(store: &dyn Store) {
    let expiring: Vec<Key> = (0..5)
        .map(|n| EMAIL.key(&("batch", n)).expect("canonical"))
        .collect();
    for key in &expiring {
        let token = token_as(store, "send_email", key, LONG, OnStale::TakeOver).await;
        let ok = StoredOutcome::Ok(b"1".to_vec());
        assert_eq!(
            store
                .complete(key, token, ok, SHORT)
                .await
                .expect("complete"),
            Ownership::Held
        );
    }
    let saga = expiring[0];
    let kept = EMAIL.key(&("kept", 1)).expect("canonical");
    let token = token_as(store, "send_email", &kept, LONG, OnStale::TakeOver).await;
    assert_eq!(
        store
            .complete(&kept, token, StoredOutcome::Ok(b"2".to_vec()), LONG)
            .await
            .expect("complete"),
        Ownership::Held
    );
    let running = EMAIL.key(&("running", 1)).expect("canonical");
    token_as(store, "send_email", &running, SHORT, OnStale::TakeOver).await;
    past(SHORT).await;

    // A saga log on one of the expiring records: it goes with its record.
    // Its result expired, so the key is free again: a saga claims it.
    let saga_token = claim_token(store, &saga, LONG).await;
    let write = SagaWrite::Status {
        status: SagaStatus::Completed,
        error: None,
    };
    assert_eq!(
        store
            .write_saga(&saga, "batch-saga", saga_token, write)
            .await
            .expect("write_saga"),
        Ownership::Held
    );
    let done = StoredOutcome::Ok(b"null".to_vec());
    assert_eq!(
        store
            .complete(&saga, saga_token, done, SHORT)
            .await
            .expect("complete"),
        Ownership::Held
    );
    past(SHORT).await;

    // Five to purge, or none where the store deleted them itself when they expired (Redis).
    let left = still_stored(store, &expiring).await;
    assert!(left == 5 || left == 0, "{left}");
    let first = left.min(2);
    assert_eq!(store.count_expired().await.expect("count_expired"), left);
    assert_eq!(store.purge_expired_batch(2).await.expect("purge"), first);
    assert_eq!(
        store.count_expired().await.expect("count_expired"),
        left - first
    );
    assert_eq!(
        store.purge_expired_batch(10).await.expect("purge"),
        left - first
    );
    assert_eq!(store.purge_expired_batch(10).await.expect("purge"), 0);
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    for key in &expiring {
        assert_eq!(store.get(key).await.expect("get"), None, "purged");
    }
    assert_eq!(
        store.read_saga(&saga).await.expect("read_saga"),
        None,
        "its log went with it"
    );
    let kept = store
        .get(&kept)
        .await
        .expect("get")
        .expect("a live result stays");
    assert_eq!(kept.status, Status::Completed);
    let running = store
        .get(&running)
        .await
        .expect("get")
        .expect("a dead owner's claim stays");
    assert_eq!(running.status, Status::InProgress);
}

/// A saga log made by its claim, left with `status`; the claim released as the runtime does
/// for sagas that end without a recorded value.
async fn saga_in(store: &dyn Store, id: &str, status: SagaStatus, release: bool) -> Key {
    let key = Action::new("saga").key(&(id,)).expect("canonical");
    let token = claim_token(store, &key, LONG).await;
    let write = SagaWrite::Status {
        status,
        error: Some("refund failed: provider down"),
    };
    assert_eq!(
        store
            .write_saga(&key, id, token, write)
            .await
            .expect("write_saga"),
        Ownership::Held
    );
    if release {
        assert_eq!(
            store.release(&key, token).await.expect("release"),
            Ownership::Held
        );
    }
    key
}

fn ids(logs: &[crate::store::SagaLog]) -> Vec<&str> {
    logs.iter().map(|log| log.id.as_str()).collect()
}

/// Sagas are listed by their latest status change first, filtered by status and id, up to the
/// limit.
pub async fn list_sagas_filters_by_status_and_id(store: &dyn Store) {
    saga_in(store, "order-1", SagaStatus::Running, false).await;
    tick().await;
    saga_in(store, "order-2", SagaStatus::NeedsAttention, true).await;
    tick().await;
    saga_in(store, "order-3", SagaStatus::NeedsAttention, true).await;

    let all = store
        .list_sagas(&SagaQuery::new())
        .await
        .expect("list_sagas");
    assert_eq!(ids(&all), ["order-3", "order-2", "order-1"]);
    assert_eq!(
        all[0].error.as_deref(),
        Some("refund failed: provider down")
    );
    let attention = SagaQuery::new().status(SagaStatus::NeedsAttention);
    assert_eq!(
        ids(&store.list_sagas(&attention).await.expect("list")),
        ["order-3", "order-2"]
    );
    let limited = SagaQuery::new().status(SagaStatus::NeedsAttention).limit(1);
    assert_eq!(
        ids(&store.list_sagas(&limited).await.expect("list")),
        ["order-3"]
    );
    let one = SagaQuery::new().id("order-1");
    assert_eq!(
        ids(&store.list_sagas(&one).await.expect("list")),
        ["order-1"]
    );
    let none = SagaQuery::new().id("order-9");
    assert_eq!(
        ids(&store.list_sagas(&none).await.expect("list")),
        Vec::<&str>::new()
    );
}

/// Only a saga that needs attention can be resolved; it keeps the operator's note, and a
/// second resolve, or one of a saga in another status or of no saga, changes nothing.
pub async fn resolve_saga_settles_only_what_needs_attention(store: &dyn Store) {
    let running = saga_in(store, "order-1", SagaStatus::Running, false).await;
    let stuck = saga_in(store, "order-2", SagaStatus::NeedsAttention, true).await;
    let nothing = Action::new("saga").key(&("order-9",)).expect("canonical");

    let note = "refunded by hand in the provider's dashboard, ticket OPS-7";
    assert!(store.resolve_saga(&stuck, note).await.expect("resolve"));
    let log = store
        .read_saga(&stuck)
        .await
        .expect("read")
        .expect("the log");
    assert_eq!(log.status, SagaStatus::Resolved);
    assert_eq!(log.note.as_deref(), Some(note));
    assert_eq!(
        log.error.as_deref(),
        Some("refund failed: provider down"),
        "the problem stays on record"
    );

    assert!(
        !store.resolve_saga(&stuck, "again").await.expect("resolve"),
        "resolved once"
    );
    let log = store
        .read_saga(&stuck)
        .await
        .expect("read")
        .expect("the log");
    assert_eq!(log.note.as_deref(), Some(note), "the first note stays");
    assert!(!store.resolve_saga(&running, note).await.expect("resolve"));
    let log = store
        .read_saga(&running)
        .await
        .expect("read")
        .expect("the log");
    assert_eq!((log.status, log.note), (SagaStatus::Running, None));
    assert!(!store.resolve_saga(&nothing, note).await.expect("resolve"));
    assert_eq!(store.read_saga(&nothing).await.expect("read"), None);

    let resolved = SagaQuery::new().status(SagaStatus::Resolved);
    let listed = store.list_sagas(&resolved).await.expect("list");
    assert_eq!(ids(&listed), ["order-2"]);
    assert_eq!(listed[0].note.as_deref(), Some(note));
}

/// A key whose result expired and was claimed again (not completed yet) leaves nothing
/// expired to count or purge: the claim replaced the old result. (Redis, which deletes an
/// expired result by itself, once kept an expiry entry for it and counted that.)
pub async fn a_reclaimed_key_leaves_nothing_expired(store: &dyn Store) {
    let key = EMAIL.key(&("reclaimed", 1)).expect("canonical");
    let token = token_as(store, "send_email", &key, LONG, OnStale::TakeOver).await;
    let ok = StoredOutcome::Ok(b"\"msg-1\"".to_vec());
    assert_eq!(
        store
            .complete(&key, token, ok, SHORT)
            .await
            .expect("complete"),
        Ownership::Held
    );
    past(SHORT).await;
    let again = token_as(store, "send_email", &key, LONG, OnStale::TakeOver).await;
    assert!(again > token, "claimed again under a new token");
    assert_eq!(store.count_expired().await.expect("count_expired"), 0);
    assert_eq!(store.purge_expired_batch(10).await.expect("purge"), 0);
    let record = store.get(&key).await.expect("get").expect("the new claim");
    assert_eq!((record.status, record.token), (Status::InProgress, again));
}

/// `forget_result` deletes a recorded result (a value or a recorded error) under the token
/// it was recorded with, and nothing else: not under another token, not a claim in progress
/// or parked for review, not a saga's outcome; the next claim of a forgotten key is a new
/// one, under a larger token.
pub async fn forget_result_deletes_only_a_recorded_result(store: &dyn Store) {
    let Filled {
        sent,
        declined,
        running,
        review,
    } = fill(store).await;
    let token_of = |key: Key| async move {
        let record = store.get(&key).await.expect("get").expect("a record");
        record.token
    };
    let sent_token = token_of(sent).await;
    let forget = |key: Key, token| async move {
        store
            .forget_result(&key, token)
            .await
            .expect("forget_result")
    };

    assert_eq!(
        forget(sent, sent_token + 1).await,
        Ownership::Lost,
        "another token"
    );
    for key in [running, review] {
        let token = token_of(key).await;
        assert_eq!(forget(key, token).await, Ownership::Lost, "not a result");
        assert!(store.get(&key).await.expect("get").is_some());
    }
    assert_eq!(forget(sent, sent_token).await, Ownership::Held);
    assert_eq!(store.get(&sent).await.expect("get"), None);
    assert_eq!(
        forget(sent, sent_token).await,
        Ownership::Lost,
        "gone already"
    );
    let declined_token = token_of(declined).await;
    assert_eq!(forget(declined, declined_token).await, Ownership::Held);
    let again = token_as(store, "send_email", &sent, LONG, OnStale::TakeOver).await;
    assert!(again > sent_token, "a new claim, under a larger token");

    // A saga's outcome goes with its log: not forgotten.
    let saga = EMAIL.key(&("forget-saga", 1)).expect("canonical");
    let token = claim_token(store, &saga, LONG).await;
    let done = SagaWrite::Status {
        status: SagaStatus::Completed,
        error: None,
    };
    let written = store.write_saga(&saga, "forget-saga", token, done).await;
    assert_eq!(written.expect("write_saga"), Ownership::Held);
    let ok = StoredOutcome::Ok(b"null".to_vec());
    let completed = store.complete(&saga, token, ok, LONG).await;
    assert_eq!(completed.expect("complete"), Ownership::Held);
    assert_eq!(
        forget(saga, token).await,
        Ownership::Lost,
        "a saga's outcome"
    );
    assert!(store.read_saga(&saga).await.expect("read_saga").is_some());
}
