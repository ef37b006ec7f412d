//! The saga-log rules of the [`Store`] trait: fenced writes, reads, stale sagas, purge.

use std::time::Duration;

use crate::call::Action;
use crate::conformance::operator::tick;
use crate::conformance::{claim_token, past, still_stored, LONG, SHORT};
use crate::key::Key;
use crate::store::{
    Ownership, SagaQuery, SagaStatus, SagaWrite, StepRecord, StepState, Store, StoredOutcome,
};

static SAGAS: Action = Action::new("conformance_saga");

fn saga(n: u32) -> Key {
    SAGAS.key(&(n,)).expect("a u32 has a canonical form")
}

fn step(index: u32, state: StepState) -> StepRecord {
    StepRecord {
        index,
        name: format!("step_{index}"),
        key: SAGAS.key(&("step", index)).expect("canonical"),
        irreversible: index == 2,
        args: format!("[\"ada\",{index}]").into_bytes(),
        state,
        output: (state == StepState::Done).then(|| b"{\"id\":\"x-1\"}".to_vec()),
        error: (state == StepState::Failed).then(|| "declined".to_owned()),
    }
}

async fn write(store: &dyn Store, key: &Key, token: u64, write: SagaWrite<'_>) -> Ownership {
    store
        .write_saga(key, "order-1", token, write)
        .await
        .expect("write_saga")
}

fn status(status: SagaStatus, error: Option<&str>) -> SagaWrite<'_> {
    SagaWrite::Status { status, error }
}

/// A step's write dates the log (its `updated_at`) but does not move it in listings, which
/// order sagas by their last status write: a store may keep steps apart from the log's head.
/// The step here is the first write of an owner that took the saga over, which writes no
/// status before its steps (as a resumed saga does).
pub async fn a_step_write_dates_the_log_but_not_its_listing(store: &dyn Store) {
    let (first, second) = (saga(30), saga(31));
    let first_owner = claim_token(store, &first, SHORT).await;
    let second_owner = claim_token(store, &second, LONG).await;
    let running = status(SagaStatus::Running, None);
    for (key, id, token) in [
        (&first, "order-30", first_owner),
        (&second, "order-31", second_owner),
    ] {
        let written = store.write_saga(key, id, token, running).await;
        assert_eq!(written.expect("write_saga"), Ownership::Held);
        tick().await;
    }
    past(SHORT).await;
    let taken_over = claim_token(store, &first, LONG).await;
    assert!(taken_over > first_owner, "the first saga is taken over");
    let started = step(0, StepState::Started);
    let written = store
        .write_saga(&first, "order-30", taken_over, SagaWrite::Step(&started))
        .await;
    assert_eq!(written.expect("a step write"), Ownership::Held);

    let read = |key| async move {
        store
            .read_saga(&key)
            .await
            .expect("read_saga")
            .expect("a log")
    };
    let (first_log, second_log) = (read(first).await, read(second).await);
    assert_eq!(first_log.steps, std::slice::from_ref(&started));
    assert!(
        first_log.updated_at > second_log.updated_at,
        "the step's write dates the log: {:?} after {:?}",
        first_log.updated_at,
        second_log.updated_at
    );
    let listed = store
        .list_sagas(&SagaQuery::new().status(SagaStatus::Running))
        .await
        .expect("list_sagas");
    let ids: Vec<&str> = listed.iter().map(|log| log.id.as_str()).collect();
    assert_eq!(ids, ["order-31", "order-30"], "by the last status write");
    assert_eq!(listed[1], first_log, "listed as read, with its step");
}

/// The log of a saga is written only by the holder of its claim, and reads back as written:
/// id, status, error, steps in order of their place, each step replaced by a later write.
pub async fn saga_log_round_trip(store: &dyn Store) {
    let k = saga(1);
    assert_eq!(store.read_saga(&k).await.expect("read"), None);
    let first = step(0, StepState::Started);
    assert_eq!(
        write(store, &k, 1, SagaWrite::Step(&first)).await,
        Ownership::Lost,
        "no claim, no log"
    );
    assert_eq!(store.read_saga(&k).await.expect("read"), None);

    let token = claim_token(store, &k, LONG).await;
    let second = step(1, StepState::Failed);
    assert_eq!(
        write(store, &k, token, SagaWrite::Step(&second)).await,
        Ownership::Held
    );
    assert_eq!(
        write(store, &k, token, SagaWrite::Step(&first)).await,
        Ownership::Held
    );
    let log = store.read_saga(&k).await.expect("read").expect("a log");
    assert_eq!(log.key, k);
    assert_eq!(log.id, "order-1");
    assert_eq!(log.status, SagaStatus::Running, "a log starts running");
    assert_eq!(log.error, None);
    assert_eq!(
        log.steps,
        vec![first.clone(), second.clone()],
        "in order of place"
    );

    let done = step(0, StepState::Done);
    assert_eq!(
        write(store, &k, token, SagaWrite::Step(&done)).await,
        Ownership::Held
    );
    let failing = status(SagaStatus::Compensating, Some("card declined"));
    assert_eq!(write(store, &k, token, failing).await, Ownership::Held);
    let log = store.read_saga(&k).await.expect("read").expect("a log");
    assert_eq!(
        log.steps,
        vec![done, second.clone()],
        "a step is replaced by place"
    );
    assert_eq!(log.status, SagaStatus::Compensating);
    assert_eq!(log.error.as_deref(), Some("card declined"));

    // A step write leaves status and error alone; a status write sets both.
    assert_eq!(
        write(store, &k, token, SagaWrite::Step(&second)).await,
        Ownership::Held
    );
    let log = store.read_saga(&k).await.expect("read").expect("a log");
    assert_eq!(log.error.as_deref(), Some("card declined"));
    let settled = status(SagaStatus::Compensated, None);
    assert_eq!(write(store, &k, token, settled).await, Ownership::Held);
    let log = store.read_saga(&k).await.expect("read").expect("a log");
    assert_eq!((log.status, log.error), (SagaStatus::Compensated, None));
}

/// Once a saga's claim is taken over, its old owner can write nothing to the log; the new
/// owner can. A completed claim refuses every writer.
pub async fn saga_log_is_fenced(store: &dyn Store) {
    let k = saga(2);
    let old = claim_token(store, &k, SHORT).await;
    assert_eq!(
        write(
            store,
            &k,
            old,
            SagaWrite::Step(&step(0, StepState::Started))
        )
        .await,
        Ownership::Held
    );
    past(SHORT).await;
    let new = claim_token(store, &k, LONG).await;
    assert!(new > old);
    let late = step(0, StepState::Done);
    assert_eq!(
        write(store, &k, old, SagaWrite::Step(&late)).await,
        Ownership::Lost
    );
    assert_eq!(
        write(store, &k, old, status(SagaStatus::Completed, None)).await,
        Ownership::Lost
    );
    let log = store.read_saga(&k).await.expect("read").expect("a log");
    assert_eq!(
        log.steps,
        vec![step(0, StepState::Started)],
        "the old owner wrote nothing"
    );
    assert_eq!(log.status, SagaStatus::Running);
    assert_eq!(
        write(store, &k, new, status(SagaStatus::Completed, None)).await,
        Ownership::Held
    );
    let done = store
        .complete(&k, new, StoredOutcome::Ok(b"1".to_vec()), LONG)
        .await
        .expect("complete");
    assert_eq!(done, Ownership::Held);
    assert_eq!(
        write(store, &k, new, status(SagaStatus::Running, None)).await,
        Ownership::Lost,
        "a finished saga's log is closed"
    );
}

/// Stale sagas are those running or compensating whose claim's lease ran out: not the live
/// ones, not the finished ones, not those handed to an operator; at most `limit` of them.
pub async fn stale_sagas_are_the_dead_owners(store: &dyn Store) {
    let (dead, compensating, live, finished, attention) =
        (saga(10), saga(11), saga(12), saga(13), saga(14));
    for k in [dead, compensating, finished, attention] {
        let token = claim_token(store, &k, SHORT).await;
        let set = match k {
            k if k == compensating => SagaStatus::Compensating,
            k if k == attention => SagaStatus::NeedsAttention,
            _ => SagaStatus::Running,
        };
        assert_eq!(
            write(store, &k, token, status(set, None)).await,
            Ownership::Held
        );
        if k == finished {
            let completed = store
                .complete(&k, token, StoredOutcome::Ok(b"1".to_vec()), LONG)
                .await
                .expect("complete");
            assert_eq!(completed, Ownership::Held);
        }
        if k == attention {
            assert_eq!(
                store.release(&k, token).await.expect("release"),
                Ownership::Held
            );
        }
    }
    let token = claim_token(store, &live, LONG).await;
    assert_eq!(
        write(store, &live, token, status(SagaStatus::Running, None)).await,
        Ownership::Held
    );
    past(SHORT).await;

    let mut stale: Vec<Key> = store
        .stale_sagas(100)
        .await
        .expect("stale_sagas")
        .into_iter()
        .map(|s| {
            assert_eq!(s.id, "order-1");
            assert_eq!(s.fingerprint, crate::key::Fingerprint::from(s.key));
            s.key
        })
        .collect();
    stale.sort();
    let mut expected = vec![dead, compensating];
    expected.sort();
    assert_eq!(stale, expected);
    assert_eq!(
        store.stale_sagas(1).await.expect("stale_sagas").len(),
        1,
        "the limit holds"
    );
}

/// A purge removes a finished saga's log with its expired record, and keeps the logs that
/// wait for someone (a saga that needs attention has no record to expire) and those of sagas
/// whose outcome is still replayed.
pub async fn purge_removes_finished_saga_logs(store: &dyn Store) {
    let (finished, attention, replayed) = (saga(20), saga(21), saga(22));
    let token = claim_token(store, &replayed, LONG).await;
    assert_eq!(
        write(store, &replayed, token, status(SagaStatus::Completed, None)).await,
        Ownership::Held
    );
    let completed = store
        .complete(&replayed, token, StoredOutcome::Ok(b"1".to_vec()), LONG)
        .await
        .expect("complete");
    assert_eq!(completed, Ownership::Held);

    let token = claim_token(store, &finished, LONG).await;
    let done = step(0, StepState::Done);
    assert_eq!(
        write(store, &finished, token, SagaWrite::Step(&done)).await,
        Ownership::Held
    );
    assert_eq!(
        write(store, &finished, token, status(SagaStatus::Completed, None)).await,
        Ownership::Held
    );
    let completed = store
        .complete(
            &finished,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_millis(1),
        )
        .await
        .expect("complete");
    assert_eq!(completed, Ownership::Held);

    let token = claim_token(store, &attention, LONG).await;
    let stuck = status(SagaStatus::NeedsAttention, Some("refund failed"));
    assert_eq!(
        write(store, &attention, token, stuck).await,
        Ownership::Held
    );
    assert_eq!(
        store.release(&attention, token).await.expect("release"),
        Ownership::Held
    );

    past(Duration::from_millis(1)).await;
    let left = still_stored(store, &[finished]).await;
    assert_eq!(store.purge_expired().await.expect("purge"), left);
    assert_eq!(store.read_saga(&finished).await.expect("read"), None);
    let kept = store
        .read_saga(&attention)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(kept.status, SagaStatus::NeedsAttention);
}
