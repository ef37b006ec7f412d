//! Crash recovery: finishing the sagas whose owner died, from their logs.

use std::fmt;
use std::time::Duration;

use crate::call::context::current_call;
use crate::call::{execute, Call, Failed};
use crate::call::{Action, OnConflict};
use crate::saga::doubt::{settle_doubt, Settling};
use crate::saga::retry::Retry;
use crate::saga::rollback::rollback;
use crate::saga::run::{
    saga_codec, Run, RunPolicy, SagaEnd, SagaFailure, StoreHandle, SAGA_ACTION,
};
use crate::saga::{ended, shared_settings, SharedSettings};
use crate::store::{SagaStatus, StaleSaga, Store};
use crate::Error;

/// Finishes the sagas whose owner died (their claim's lease ran out while they were running
/// or being undone): call it at start-up, and from time to time in long-lived services.
///
/// For each such saga, it takes over the claim (one recovering process per saga, however
/// many run at once), then works from the log:
///
/// 1. a step left in doubt (intent logged, no output) is settled: its `verify` is asked, or it
///    is run again under its own key where that cannot make a second effect (a reversible
///    step, or `rerun_safe`; never an irreversible step of a saga that was being undone), so
///    that the service it calls answers with the first run's result. A step that stays in
///    doubt leaves the saga NEEDS_ATTENTION, "may have happened", with nothing undone;
/// 2. a saga past an irreversible step that succeeded cannot be undone: it is marked
///    [`Interrupted`](crate::store::SagaStatus::Interrupted) and its claim let go, for the
///    code that runs it to run it again (which replays the finished steps and goes on);
/// 3. any other saga is compensated, last step first, as a failed run would have been.
///
/// Steps are found by name among the `#[saga_step]` functions linked into this program.
///
/// ```
/// use idem_runtime::{recover, store::MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let report = recover(&store).await?;
/// assert!(report.is_empty(), "{report}");
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
pub async fn recover(store: &dyn Store) -> Result<RecoveryReport, Error> {
    Recover::new(store).run().await
}

/// [`recover`] with its settings.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{store::MemoryStore, Recover, Retry};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let report = Recover::new(&store)
///     .compensation_retry(Retry::new(3).backoff(Duration::from_millis(50), Duration::from_secs(1)))
///     .ttl(Duration::from_secs(7 * 24 * 3600)) // the sagas run with `.ttl(…)` of a week
///     .limit(100)
///     .run()
///     .await?;
/// assert_eq!(report.compensated.len(), 0);
/// # Ok::<(), idem_runtime::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
#[must_use = "recovery does nothing until it is `run`"]
pub struct Recover<'a> {
    store: &'a dyn Store,
    limit: usize,
    shared: SharedSettings,
}

impl<'a> Recover<'a> {
    /// Recovery on `store`, with the defaults: compensations retried like a saga's (5 tries,
    /// 100 ms doubling to 5 s), a lease of 10 s while recovering, outcomes kept 24 h (a
    /// saga's default `ttl`), up to 1000 sagas per run.
    pub fn new(store: &'a dyn Store) -> Self {
        Recover {
            store,
            limit: 1000,
            shared: SharedSettings::default(),
        }
    }

    shared_settings!(
        "how long recovery holds each saga it takes on.",
        "Recovery cannot know it: give the `ttl` the sagas are run with ([`Saga::ttl`](crate::Saga::ttl)); it is used for the sagas recovery rolls back."
    );

    /// How many sagas one run takes on at most.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Recovers the sagas whose owner died, and says what it did with each.
    pub async fn run(&self) -> Result<RecoveryReport, Error> {
        let mut report = RecoveryReport::default();
        for saga in self.store.stale_sagas(self.limit).await? {
            let id = saga.id.clone();
            match self.recover_one(&saga).await {
                Ok(()) => report.taken_elsewhere.push(id),
                Err(SagaEnd::RolledBack { .. }) => report.compensated.push(id),
                Err(SagaEnd::NeedsAttention(_)) => report.needs_attention.push(id),
                Err(SagaEnd::Interrupted) => report.interrupted.push(id),
                Err(SagaEnd::Replayed(_) | SagaEnd::LeftAlone { .. }) => {
                    report.taken_elsewhere.push(id)
                }
                Err(SagaEnd::Idem(
                    Error::InProgress { .. }
                    | Error::NeedsReview { .. }
                    | Error::LostOwnership { .. },
                )) => report.taken_elsewhere.push(id),
                Err(SagaEnd::Idem(error)) => report.failed.push((id, error)),
            }
        }
        Ok(report)
    }

    /// Takes over one saga's claim and finishes it. `Ok` means someone else had already
    /// finished it.
    async fn recover_one(&self, saga: &StaleSaga) -> Result<(), SagaEnd<Error>> {
        let action = Action::new(SAGA_ACTION)
            .lease(self.shared.lease)
            .ttl(self.shared.ttl)
            .on_conflict(OnConflict::Fail);
        let call = Call::new(&action, saga.key, saga.fingerprint);
        let codec = saga_codec::<Finished, Error>();
        let body = async {
            let claim = current_call().ok_or_else(|| {
                SagaEnd::Idem(Error::SagaLog {
                    saga: saga.id.clone(),
                    problem: "recovery ran outside the saga's claim".into(),
                })
            })?;
            let policy = RunPolicy {
                lease: self.shared.lease,
                compensation_retry: self.shared.compensation_retry,
                forward_retry: Retry::new(1),
            };
            let run = Run::new(
                StoreHandle::Borrowed(self.store),
                saga.id.clone(),
                &claim,
                policy,
            );
            finish(&run).await
        };
        match execute(call, self.store, &codec, body).await {
            Ok((Finished, _)) => Ok(()),
            Err(Failed::Idem(error)) => Err(SagaEnd::Idem(error)),
            Err(Failed::Body(end, _) | Failed::Replayed(end, _)) => Err(end),
        }
    }
}

/// The value of a saga someone else completed meanwhile, whatever its type: recovery only
/// needs to know that it is there.
struct Finished;

impl serde::Serialize for Finished {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Finished {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Finished)
    }
}

/// Settles the doubt of the last step, then compensates the saga, or hands it back to its
/// code when it is past an irreversible step.
async fn finish(run: &Run<'_>) -> Result<Finished, SagaEnd<Error>> {
    let Some(log) = run.store.get().read_saga(&run.key).await? else {
        return Err(SagaEnd::Idem(run.log_problem("its log is gone".into())));
    };
    // Listed while it ran, settled since (its owner was slow, not dead; another recovery
    // got there first): not this recovery's to touch.
    match log.status {
        SagaStatus::Running | SagaStatus::Compensating => {}
        SagaStatus::Completed => return Err(SagaEnd::LeftAlone { keep_claim: true }),
        SagaStatus::Compensated => {
            return Err(SagaEnd::RolledBack {
                error: None,
                failure: SagaFailure::compensated(log.error.as_deref().unwrap_or_default()),
            })
        }
        SagaStatus::NeedsAttention | SagaStatus::Interrupted | SagaStatus::Resolved => {
            return Err(SagaEnd::LeftAlone { keep_claim: false })
        }
    }
    // A step this program has no code for: left, untouched, for one that has it.
    if let Some(unlinked) = run.unlinked(&log.steps) {
        return Err(SagaEnd::Idem(unlinked));
    }
    run.state().steps = log.steps.clone();
    // A saga that was being undone is settled as a rollback is: nothing runs forward.
    let settling = if log.status == SagaStatus::Compensating {
        Settling::Rollback
    } else {
        Settling::Recovery
    };
    if let Err(attention) = settle_doubt(run, settling).await? {
        return Err(SagaEnd::NeedsAttention(attention));
    }
    if log.status == SagaStatus::Running && run.pivot().is_some() {
        run.set_status(SagaStatus::Interrupted, None).await?;
        return Err(SagaEnd::Interrupted);
    }
    let error = log
        .error
        .unwrap_or_else(|| "its owner stopped before it finished".to_owned());
    Err(ended(rollback(run, &error).await?, None))
}

/// What [`recover`] did, saga by saga (by id).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Undone: every completed step compensated.
    pub compensated: Vec<String>,
    /// Left NEEDS_ATTENTION: a compensation still failed, or a step in doubt could not be run
    /// again.
    pub needs_attention: Vec<String>,
    /// Past an irreversible step: handed back to the code that runs them, to carry forward.
    pub interrupted: Vec<String>,
    /// Finished or taken by someone else meanwhile.
    pub taken_elsewhere: Vec<String>,
    /// Could not be recovered now (the store failed, a step is not linked into this program);
    /// the next run tries again.
    pub failed: Vec<(String, Error)>,
}

impl RecoveryReport {
    /// Whether there was nothing to recover.
    pub fn is_empty(&self) -> bool {
        self.compensated.is_empty()
            && self.needs_attention.is_empty()
            && self.interrupted.is_empty()
            && self.taken_elsewhere.is_empty()
            && self.failed.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no saga to recover");
        }
        let mut parts = Vec::new();
        for (what, ids) in [
            ("compensated", &self.compensated),
            ("needs attention", &self.needs_attention),
            (
                "interrupted (run again to carry forward)",
                &self.interrupted,
            ),
            ("taken elsewhere", &self.taken_elsewhere),
        ] {
            if !ids.is_empty() {
                parts.push(format!("{what}: {}", ids.join(", ")));
            }
        }
        for (id, error) in &self.failed {
            parts.push(format!("failed: {id} ({error})"));
        }
        f.write_str(&parts.join("; "))
    }
}
