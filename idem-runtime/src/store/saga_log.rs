//! The vocabulary of saga logs: what a store keeps of each saga and its steps.
//!
//! A saga is claimed like any key (its record in the claim protocol is its lock and, once it
//! has ended, its replayed outcome). Next to that record the store keeps the saga's log: its
//! id, its status, and one entry per step. Every write to the log names the fencing token of
//! the saga's claim and is refused once that token no longer holds it, exactly as
//! [`Store::complete`](crate::Store::complete) is.
//!
//! ```text
//!   Running ──(every step done)──────────────────────────▶ Completed
//!      │  └─(owner died after an irreversible step)──────▶ Interrupted ──(run again)──▶ Running
//!      └─(a step failed) ─▶ Compensating ──(all undone)──▶ Compensated
//!                                  └──(an undo still fails)──▶ NeedsAttention
//!                                                                   └─(an operator)─▶ Resolved
//! ```

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::key::{Fingerprint, Key};
use crate::store::{FencingToken, Ownership};
use crate::Error;

/// Where a saga is.
///
/// See the example on [`SagaStore::write_saga`](crate::store::SagaStore::write_saga).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SagaStatus {
    /// Its steps are running (or its owner died and its claim will run out).
    Running,
    /// A step failed; its completed steps are being undone in reverse order.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every completed step was undone.
    Compensated,
    /// A compensation still failed after its retries, or a step failed after an irreversible
    /// step: an operator must settle it.
    NeedsAttention,
    /// Its owner died after an irreversible step: it cannot be undone, and waits for the code
    /// that runs it to run it again and carry it forward.
    Interrupted,
    /// It needed attention and an operator settled it by hand
    /// ([`Inspect::resolve_saga`](crate::store::Inspect::resolve_saga)); the log keeps their note. It is
    /// over: later runs of its id get [`Error::SagaResolved`](crate::Error::SagaResolved).
    Resolved,
}

impl SagaStatus {
    /// Every status, in the order of a saga's life.
    pub const ALL: [SagaStatus; 7] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::NeedsAttention,
        SagaStatus::Interrupted,
        SagaStatus::Resolved,
    ];

    /// The name stores write and operators read: `running`, `compensating`, `completed`,
    /// `compensated`, `needs_attention`, `interrupted`, `resolved`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::NeedsAttention => "needs_attention",
            SagaStatus::Interrupted => "interrupted",
            SagaStatus::Resolved => "resolved",
        }
    }

    /// The status named by [`SagaStatus::as_str`], exactly (what a store reads back must be
    /// one of these names; a command line may turn `needs-attention` into `needs_attention`
    /// first).
    ///
    /// ```
    /// use idem_runtime::store::SagaStatus;
    ///
    /// assert_eq!(SagaStatus::parse("needs_attention"), Some(SagaStatus::NeedsAttention));
    /// assert_eq!(SagaStatus::parse("resolved"), Some(SagaStatus::Resolved));
    /// assert_eq!(SagaStatus::parse("needs-attention"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Whether a saga in this status has an owner at work (or one that died): what
    /// [`SagaStore::stale_sagas`](crate::store::SagaStore::stale_sagas) looks for.
    pub const fn is_active(self) -> bool {
        matches!(self, SagaStatus::Running | SagaStatus::Compensating)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one step of a saga is.
///
/// See the example on [`SagaStore::write_saga`](crate::store::SagaStore::write_saga).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Its intent is logged and its body may have run: until its output is logged, the step
    /// is in doubt, and recovery runs it again under the same key to learn its output.
    Started,
    /// Its output is logged.
    Done,
    /// It returned an error: there is nothing to undo.
    Failed,
    /// Its compensation succeeded.
    Compensated,
    /// Its compensation still failed after its retries (the error is logged).
    CompensationFailed,
}

impl StepState {
    /// The name stores write: `started`, `done`, `failed`, `compensated`,
    /// `compensation_failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Started => "started",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Compensated => "compensated",
            StepState::CompensationFailed => "compensation_failed",
        }
    }

    /// The state named by [`StepState::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            StepState::Started,
            StepState::Done,
            StepState::Failed,
            StepState::Compensated,
            StepState::CompensationFailed,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step in a saga's log.
///
/// See the example on [`SagaStore::write_saga`](crate::store::SagaStore::write_saga).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// Its place in the saga, from 0.
    pub index: u32,
    /// The step's registered name (`#[saga_step(name = …)]`, by default the function's).
    pub name: String,
    /// The step's key: what its body reads with `idem::current_key()`.
    pub key: Key,
    /// Whether the step cannot be undone (`#[saga_step(irreversible)]`).
    pub irreversible: bool,
    /// Its arguments, as JSON.
    pub args: Vec<u8>,
    /// Where it is.
    pub state: StepState,
    /// Its output, as JSON, once done.
    pub output: Option<Vec<u8>>,
    /// The error of the step (failed) or of its compensation (compensation failed).
    pub error: Option<String>,
}

/// A saga's log, as [`SagaStore::read_saga`](crate::store::SagaStore::read_saga) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaLog {
    /// The key of the saga's claim.
    pub key: Key,
    /// The saga's id, as its caller gave it.
    pub id: String,
    /// Where the saga is.
    pub status: SagaStatus,
    /// Why it failed, once it did.
    pub error: Option<String>,
    /// Its steps, in order.
    pub steps: Vec<StepRecord>,
    /// When the log was last written: its last status write or step write, whichever came
    /// later (listings order by the last status write alone, see
    /// [`Inspect::list_sagas`](crate::store::Inspect::list_sagas)).
    pub updated_at: SystemTime,
    /// The operator's note, once the saga was settled by hand ([`SagaStatus::Resolved`]).
    pub note: Option<String>,
}

impl SagaLog {
    /// A log as a store read it.
    pub fn new(
        key: Key,
        id: String,
        status: SagaStatus,
        error: Option<String>,
        steps: Vec<StepRecord>,
        updated_at: SystemTime,
    ) -> Self {
        SagaLog {
            key,
            id,
            status,
            error,
            steps,
            updated_at,
            note: None,
        }
    }

    /// The same log with the operator's note (stores that keep one).
    pub fn with_note(mut self, note: Option<String>) -> Self {
        self.note = note;
        self
    }
}

/// One write to a saga's log.
///
/// See the example on [`SagaStore::write_saga`](crate::store::SagaStore::write_saga).
#[derive(Debug, Clone, Copy)]
pub enum SagaWrite<'a> {
    /// Set the saga's status (and the error that explains it), creating the log if needed.
    Status {
        /// The new status.
        status: SagaStatus,
        /// Why the saga failed, if it did.
        error: Option<&'a str>,
    },
    /// Insert or replace the step at `step.index`, creating the log if needed.
    Step(&'a StepRecord),
}

/// A saga whose owner's lease ran out while it was running or compensating: what
/// `idem::recover` takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleSaga {
    /// The key of the saga's claim.
    pub key: Key,
    /// The saga's id.
    pub id: String,
    /// The fingerprint of the saga's claim (a takeover must present the same).
    pub fingerprint: Fingerprint,
}

impl StaleSaga {
    /// A stale saga as a store found it.
    pub fn new(key: Key, id: String, fingerprint: Fingerprint) -> Self {
        StaleSaga {
            key,
            id,
            fingerprint,
        }
    }
}

/// The sagas' half of a store: each saga's log, written under the fencing token of the saga's
/// claim, and the sagas whose owner died. Every [`Store`](crate::Store) is one.
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Write to the log of the saga whose claim is `saga` (its id is `id`), if `token` still
    /// holds that claim (in progress under it); otherwise write nothing and answer
    /// [`Ownership::Lost`]. The log is created by its first write, with status
    /// [`SagaStatus::Running`] unless the write sets another.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::store::{
    ///     Claim, ClaimRequest, MemoryStore, Ownership, SagaStatus, SagaStore, SagaWrite, StepRecord, StepState, Store,
    /// };
    /// use idem_runtime::{Action, Fingerprint, OnStale};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let saga = Action::new("saga").key(&("order-42",))?;
    /// let request = ClaimRequest {
    ///     key: &saga,
    ///     fingerprint: &Fingerprint::from(saga),
    ///     action: "saga",
    ///     lease: Duration::from_secs(10),
    ///     ttl: Duration::from_secs(3600),
    ///     on_stale: OnStale::TakeOver,
    /// };
    /// let Claim::Acquired { token, .. } = store.claim(&request).await? else { unreachable!() };
    ///
    /// // The intent of step 0, before its side effect …
    /// let mut step = StepRecord {
    ///     index: 0,
    ///     name: "charge_payment".into(),
    ///     key: Action::new("saga_step").key(&("order-42", 0, "charge_payment"))?,
    ///     irreversible: false,
    ///     args: br#"["ada",1999]"#.to_vec(),
    ///     state: StepState::Started,
    ///     output: None,
    ///     error: None,
    /// };
    /// assert_eq!(store.write_saga(&saga, "order-42", token, SagaWrite::Step(&step)).await?, Ownership::Held);
    /// // … and its output after.
    /// step.state = StepState::Done;
    /// step.output = Some(br#"{"charge":"ch_1"}"#.to_vec());
    /// assert_eq!(store.write_saga(&saga, "order-42", token, SagaWrite::Step(&step)).await?, Ownership::Held);
    ///
    /// let log = store.read_saga(&saga).await?.expect("the log");
    /// assert_eq!((log.id.as_str(), log.status), ("order-42", SagaStatus::Running));
    /// assert_eq!(log.steps, vec![step.clone()]);
    ///
    /// // A writer whose claim was taken over writes nothing.
    /// let stale = SagaWrite::Status { status: SagaStatus::Completed, error: None };
    /// assert_eq!(store.write_saga(&saga, "order-42", token + 1, stale).await?, Ownership::Lost);
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error>;

    /// The log of the saga whose claim is `saga`, if there is one.
    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error>;

    /// Up to `limit` sagas that are running or compensating while their claim's lease has
    /// run out: their owner died. `idem::recover` takes them over.
    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error>;
}
