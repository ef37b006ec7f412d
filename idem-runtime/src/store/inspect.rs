//! What operators ask of a store: records and sagas listed and counted, expired records
//! purged in batches, a saga that needs attention marked settled by hand.
//!
//! These are the queries behind the `idem` command (crate `idem-cli`); the claim protocol
//! never uses them. One rule per query lives here ([`RecordQuery::matches`],
//! [`SagaQuery::matches`]), for the stores that filter in Rust rather than in SQL.

use std::fmt;

use async_trait::async_trait;

use crate::key::Key;
use crate::store::{FencingToken, Ownership, Record, SagaLog, SagaStatus, Status, StoredOutcome};
use crate::Error;

/// What an operator sorts records by: the protocol's [`Status`], with the completed records
/// split by what they recorded (a value, or an error the action declared final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RecordKind {
    /// Claimed; the body is running, or its owner died and the lease will run out.
    InProgress,
    /// A value is recorded and replayed.
    Completed,
    /// An error is recorded and replayed (`cache_err`).
    Failed,
    /// Parked for an operator (`on_stale = review`).
    NeedsReview,
}

impl RecordKind {
    /// Every kind, in the order tables list them.
    pub const ALL: [RecordKind; 4] = [
        RecordKind::InProgress,
        RecordKind::Completed,
        RecordKind::Failed,
        RecordKind::NeedsReview,
    ];

    /// The kind of a record.
    ///
    /// ```
    /// use idem_runtime::store::{RecordKind, Status, StoredOutcome};
    ///
    /// let failed = Some(StoredOutcome::Err(br#""card declined""#.to_vec()));
    /// assert_eq!(RecordKind::of(Status::Completed, failed.as_ref()), RecordKind::Failed);
    /// assert_eq!(RecordKind::of(Status::InProgress, None), RecordKind::InProgress);
    /// ```
    pub fn of(status: Status, outcome: Option<&StoredOutcome>) -> Self {
        match (status, outcome) {
            (Status::InProgress, _) => RecordKind::InProgress,
            (Status::NeedsReview, _) => RecordKind::NeedsReview,
            (Status::Completed, Some(StoredOutcome::Err(_))) => RecordKind::Failed,
            (Status::Completed, _) => RecordKind::Completed,
        }
    }

    /// The name operators type and read: `in_progress`, `completed`, `failed`, `needs_review`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordKind::InProgress => "in_progress",
            RecordKind::Completed => "completed",
            RecordKind::Failed => "failed",
            RecordKind::NeedsReview => "needs_review",
        }
    }

    /// The kind named by [`RecordKind::as_str`], exactly (what a store reads back must be
    /// one of these names; a command line may turn `in-progress` into `in_progress` first).
    ///
    /// ```
    /// use idem_runtime::store::RecordKind;
    ///
    /// assert_eq!(RecordKind::parse("needs_review"), Some(RecordKind::NeedsReview));
    /// assert_eq!(RecordKind::parse("in-progress"), None);
    /// assert_eq!(RecordKind::parse("done"), None);
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The protocol status of records of this kind.
    ///
    /// ```
    /// use idem_runtime::store::{RecordKind, Status};
    ///
    /// assert_eq!(RecordKind::Failed.status(), Status::Completed);
    /// ```
    pub const fn status(self) -> Status {
        match self {
            RecordKind::InProgress => Status::InProgress,
            RecordKind::Completed | RecordKind::Failed => Status::Completed,
            RecordKind::NeedsReview => Status::NeedsReview,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which records [`Inspect::list_records`](crate::store::Inspect::list_records) returns: those of a kind,
/// an action, a key prefix (any filter left out matches all), newest first, at most `limit`.
///
/// ```
/// use idem_runtime::store::{RecordKind, RecordQuery};
///
/// let stuck = RecordQuery::new()
///     .kind(RecordKind::InProgress)
///     .action("charge_card")
///     .key_prefix("9F3A")
///     .limit(20);
/// assert_eq!(stuck.key_prefix.as_deref(), Some("9f3a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordQuery {
    /// Only records of this kind.
    pub kind: Option<RecordKind>,
    /// Only records of this action.
    pub action: Option<String>,
    /// Only keys whose hex form starts with this (lowercase).
    pub key_prefix: Option<String>,
    /// At most this many records.
    pub limit: usize,
}

impl Default for RecordQuery {
    fn default() -> Self {
        RecordQuery {
            kind: None,
            action: None,
            key_prefix: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

impl RecordQuery {
    /// How many records a query returns unless told otherwise.
    pub const DEFAULT_LIMIT: usize = 100;

    /// Every record, up to [`RecordQuery::DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Only records of `kind`.
    pub fn kind(mut self, kind: RecordKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only records of the action named `action`.
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// Only keys whose hex form starts with `prefix` (case does not matter).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.key_prefix = Some(prefix.to_ascii_lowercase());
        self
    }

    /// At most `limit` records.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether any key can start with the query's key prefix. Keys are 64 lowercase hex
    /// digits, so a prefix with any other character (a pattern's `%`, `_`, `*` or a
    /// backslash included) or longer than a key starts none: a store answers with nothing,
    /// unasked.
    ///
    /// ```
    /// use idem_runtime::store::RecordQuery;
    ///
    /// assert!(RecordQuery::new().key_prefix("9F3a").key_prefix_can_match());
    /// assert!(!RecordQuery::new().key_prefix("9f%").key_prefix_can_match());
    /// assert!(RecordQuery::new().key_prefix_can_match(), "no prefix: every key");
    /// ```
    pub fn key_prefix_can_match(&self) -> bool {
        self.key_prefix.as_deref().is_none_or(|prefix| {
            prefix.len() <= 64
                && prefix
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }

    /// Whether `record` passes the filters (the limit aside).
    pub fn matches(&self, record: &Record) -> bool {
        self.kind
            .is_none_or(|kind| kind == RecordKind::of(record.status, record.outcome.as_ref()))
            && self
                .action
                .as_deref()
                .is_none_or(|action| action == record.action)
            && self
                .key_prefix
                .as_deref()
                .is_none_or(|prefix| record.key.to_string().starts_with(prefix))
    }
}

/// Which saga logs [`Inspect::list_sagas`](crate::store::Inspect::list_sagas) returns: those of a
/// status, of an id, the latest status change first, at most `limit`.
///
/// ```
/// use idem_runtime::store::{SagaQuery, SagaStatus};
///
/// let to_settle = SagaQuery::new().status(SagaStatus::NeedsAttention);
/// let one = SagaQuery::new().id("order-42");
/// assert_eq!(one.id.as_deref(), Some("order-42"));
/// # let _ = to_settle;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaQuery {
    /// Only sagas in this status.
    pub status: Option<SagaStatus>,
    /// Only sagas of this id (as the code gave it to `Saga::new`).
    pub id: Option<String>,
    /// At most this many sagas.
    pub limit: usize,
}

impl Default for SagaQuery {
    fn default() -> Self {
        SagaQuery {
            status: None,
            id: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

impl SagaQuery {
    /// How many sagas a query returns unless told otherwise.
    pub const DEFAULT_LIMIT: usize = 100;

    /// Every saga, up to [`SagaQuery::DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Only sagas in `status`.
    pub fn status(mut self, status: SagaStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only sagas of the id `id`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// At most `limit` sagas.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `log` passes the filters (the limit aside).
    pub fn matches(&self, log: &SagaLog) -> bool {
        self.status.is_none_or(|status| status == log.status)
            && self.id.as_deref().is_none_or(|id| id == log.id)
    }
}

/// How many records of one action are of one kind: a row of
/// [`Inspect::record_counts`](crate::store::Inspect::record_counts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct RecordCount {
    /// The action.
    pub action: String,
    /// The kind.
    pub kind: RecordKind,
    /// How many records.
    pub count: u64,
}

impl RecordCount {
    /// A row as a store counted it.
    pub fn new(action: String, kind: RecordKind, count: u64) -> Self {
        RecordCount {
            action,
            kind,
            count,
        }
    }
}

/// Counts records by (action, kind) as a store goes through them, into what
/// [`Inspect::record_counts`](crate::store::Inspect::record_counts) returns: one row per pair, sorted by
/// action then kind.
///
/// ```
/// use idem_runtime::store::{RecordCount, RecordKind, RecordTally};
///
/// let mut tally = RecordTally::new();
/// tally.add("send_email", RecordKind::Completed, 1);
/// tally.add("charge_card", RecordKind::Failed, 1);
/// tally.add("send_email", RecordKind::Completed, 2); // a store that counts by group
/// assert_eq!(
///     tally.into_counts(),
///     [
///         RecordCount::new("charge_card".into(), RecordKind::Failed, 1),
///         RecordCount::new("send_email".into(), RecordKind::Completed, 3),
///     ]
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecordTally {
    /// By action, then kind: looked up by `&str`, so counting a record allocates nothing
    /// once its action is known.
    counts: std::collections::BTreeMap<String, std::collections::BTreeMap<RecordKind, u64>>,
}

impl RecordTally {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `count` more records of `action` and `kind`.
    pub fn add(&mut self, action: &str, kind: RecordKind, count: u64) {
        let kinds = match self.counts.get_mut(action) {
            Some(kinds) => kinds,
            None => self.counts.entry(action.to_owned()).or_default(),
        };
        *kinds.entry(kind).or_default() += count;
    }

    /// The rows, sorted by action then kind.
    pub fn into_counts(self) -> Vec<RecordCount> {
        self.counts
            .into_iter()
            .flat_map(|(action, kinds)| {
                kinds
                    .into_iter()
                    .map(move |(kind, count)| RecordCount::new(action.clone(), kind, count))
            })
            .collect()
    }
}

/// What operators ask of a store (the `idem` command); the protocol never calls these. Each
/// has a default that says the store cannot answer, so that a store of one's own may leave
/// them out (`impl Inspect for MyStore {}`); every store in this crate answers them all, and
/// so do `&S`, `Arc<S>` and `Box<S>` of one. Every [`Store`](crate::Store) is one.
#[async_trait]
pub trait Inspect: Send + Sync {
    /// The records that `query` selects, newest first (by when the key was first claimed),
    /// expired ones included until they are purged (or until a store that deletes them by
    /// itself did: Redis).
    ///
    /// ```
    /// use idem_runtime::store::{Inspect, MemoryStore, RecordKind, RecordQuery};
    /// use idem_runtime::Action;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// Action::new("send_email")
    ///     .call(&("ada",))?
    ///     .run::<_, idem_runtime::Error, _>(&store, async { Ok(String::from("msg-1")) })
    ///     .await?;
    /// let done = store.list_records(&RecordQuery::new().kind(RecordKind::Completed)).await?;
    /// assert_eq!(done.len(), 1);
    /// assert_eq!(done[0].action, "send_email");
    /// assert!(store.list_records(&RecordQuery::new().kind(RecordKind::InProgress)).await?.is_empty());
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let _ = query;
        Err(unsupported::<Self>("list_records"))
    }

    /// How many records there are of each action and kind, sorted by action then kind.
    ///
    /// ```
    /// use idem_runtime::store::{Inspect, MemoryStore, RecordCount, RecordKind};
    /// use idem_runtime::Action;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// for customer in ["ada", "grace"] {
    ///     Action::new("send_email")
    ///         .call(&(customer,))?
    ///         .run::<_, idem_runtime::Error, _>(&store, async { Ok(1) })
    ///         .await?;
    /// }
    /// assert_eq!(
    ///     store.record_counts().await?,
    ///     [RecordCount::new("send_email".into(), RecordKind::Completed, 2)]
    /// );
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        Err(unsupported::<Self>("record_counts"))
    }

    /// How many records [`Store::purge_expired`](crate::Store::purge_expired) would delete now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::store::{Inspect, MemoryStore};
    /// use idem_runtime::Action;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let brief = Action::new("ping").ttl(Duration::from_millis(1));
    /// for n in 0..3 {
    ///     brief.call(&(n,))?.run::<_, idem_runtime::Error, _>(&store, async { Ok(n) }).await?;
    /// }
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    /// assert_eq!(store.count_expired().await?, 3);
    /// // Two at a time, as an operator's tool shows progress:
    /// assert_eq!(store.purge_expired_batch(2).await?, 2);
    /// assert_eq!(store.purge_expired_batch(2).await?, 1);
    /// assert_eq!(store.purge_expired_batch(2).await?, 0);
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn count_expired(&self) -> Result<u64, Error> {
        Err(unsupported::<Self>("count_expired"))
    }

    /// Like [`Store::purge_expired`](crate::Store::purge_expired), but deletes at most `limit` records of either kind
    /// (expired results, with the logs of the sagas they ended, and dead claims); returns how
    /// many. Called in a loop until it returns 0, it
    /// purges everything `purge_expired` would, with progress to show on the way (see the
    /// example on [`Inspect::count_expired`]).
    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        let _ = limit;
        Err(unsupported::<Self>("purge_expired_batch"))
    }

    /// The saga logs that `query` selects, with their steps, the latest status change first
    /// (ties by id): the order of their last status writes (or resolutions), which a step's
    /// write does not move, so that a store may keep steps apart from the log's head. A saga
    /// running long while it writes steps can so be left out of a short listing, and the
    /// order can differ from [`SagaLog::updated_at`]'s, which counts step writes too (see the
    /// example on [`Inspect::resolve_saga`]).
    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let _ = query;
        Err(unsupported::<Self>("list_sagas"))
    }

    /// Marks the saga whose claim is `saga` as settled by hand, keeping `note` in its log:
    /// atomically, and only if it is [`SagaStatus::NeedsAttention`]; returns whether it was.
    /// Later runs of the saga get [`Error::SagaResolved`] with the note.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::store::{
    ///     Claim, ClaimRequest, Inspect, MemoryStore, SagaQuery, SagaStatus, SagaStore, SagaWrite, Store,
    /// };
    /// use idem_runtime::{Action, Fingerprint, OnStale};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// // A saga whose refund kept failing, left for an operator (as `Saga::run` leaves one).
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
    /// let stuck = SagaWrite::Status { status: SagaStatus::NeedsAttention, error: Some("refund failed") };
    /// store.write_saga(&saga, "order-42", token, stuck).await?;
    /// let _ = store.release(&saga, token).await?;
    ///
    /// // The operator finds it, refunds by hand, and says so.
    /// let waiting = store.list_sagas(&SagaQuery::new().status(SagaStatus::NeedsAttention)).await?;
    /// assert_eq!(waiting[0].id, "order-42");
    /// assert!(store.resolve_saga(&waiting[0].key, "refunded by hand, OPS-7").await?);
    /// assert!(!store.resolve_saga(&saga, "again").await?, "resolved once");
    /// let log = store.read_saga(&saga).await?.expect("the log");
    /// assert_eq!((log.status, log.note.as_deref()), (SagaStatus::Resolved, Some("refunded by hand, OPS-7")));
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let _ = (saga, note);
        Err(unsupported::<Self>("resolve_saga"))
    }

    /// Deletes a recorded result before its TTL runs out, so that the next call of the key
    /// runs its body again: atomically, and only if the record is completed under `token`
    /// (the token an operator read) and is not a saga's (a saga's outcome goes with its log).
    /// [`Ownership::Lost`] when the record is anything else, or changed meanwhile.
    ///
    /// A process that keeps results in a [`ReplayCache`](crate::store::ReplayCache) replays
    /// the result until its entry ages out, unless the deletion goes through that cache.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::store::{Claim, ClaimRequest, Inspect, MemoryStore, Ownership, Store, StoredOutcome};
    /// use idem_runtime::{Action, Fingerprint, OnStale};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let key = Action::new("send_email").key(&("ada@example.com",))?;
    /// let request = ClaimRequest {
    ///     key: &key,
    ///     fingerprint: &Fingerprint::from(key),
    ///     action: "send_email",
    ///     lease: Duration::from_secs(10),
    ///     ttl: Duration::from_secs(3600),
    ///     on_stale: OnStale::TakeOver,
    /// };
    /// let Claim::Acquired { token, .. } = store.claim(&request).await? else { unreachable!() };
    /// let ok = StoredOutcome::Ok(br#""a result recorded by a bug""#.to_vec());
    /// let _ = store.complete(&key, token, ok, Duration::from_secs(3600)).await?;
    ///
    /// // The operator reads the record, and deletes it under the token it has.
    /// let record = store.get(&key).await?.expect("the record");
    /// assert_eq!(store.forget_result(&key, record.token).await?, Ownership::Held);
    /// assert_eq!(store.get(&key).await?, None);
    /// assert!(matches!(store.claim(&request).await?, Claim::Acquired { .. }));
    /// # Ok::<(), idem_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let _ = (key, token);
        Err(unsupported::<Self>("forget_result"))
    }
}

/// The error of a store that does not answer an operator's query.
fn unsupported<S: ?Sized>(query: &str) -> Error {
    Error::store(
        std::any::type_name::<S>(),
        None,
        format!("this store does not implement `{query}`, which operators' tools need"),
    )
}
