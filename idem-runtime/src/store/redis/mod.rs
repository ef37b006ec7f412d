//! `RedisStore`: records on a Redis server, for agents on many machines.
//!
//! Every write is one Lua script, run atomically by the server, that checks the fencing token
//! and reads the server's clock (`TIME`): the clocks of the callers never matter.
//!
//! ```text
//! <prefix>{<key>}:r       hash: the record (status, token, fingerprint, outcome, times, action,
//!                         and a claim's TTL)
//! <prefix>{<key>}:s       hash: a saga's log head (id, status, error, updated, note)
//! <prefix>{<key>}:steps   hash: a saga's steps, fields "<index>:<field>"
//! <prefix>tokens          counter: the fencing tokens
//! <prefix>expiry          sorted set: records by when Redis deletes them (for the purge)
//! <prefix>sagas           sorted set: sagas running or being undone (for recovery)
//! ```
//!
//! Redis deletes a record itself (native expiry) when the purge would: a completed record,
//! with its saga log, at the end of its TTL; a claim at the end of its lease plus the action's
//! TTL (`PEXPIREAT`, moved by each heartbeat), unless it has a saga log (then it never
//! expires: recovery needs it) or is parked for review (`PERSIST`). The expiry index holds the
//! same moments, so that `count_expired` and the purge can say how many went.
//!
//! The `{<key>}` hash tag keeps a record and its saga log in one cluster slot. The token
//! counter and the two indexes are single keys, so the store runs on one Redis server (with
//! replicas), not on Redis Cluster.
//!
//! The operators' queries (`list_records`, `record_counts`, `list_sagas`) have no index by
//! action or time to read: they walk the store's hashes with `SCAN`, a page at a time, which
//! costs a round trip per page and a pass over the whole keyspace of the server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Value;

use crate::key::{Fingerprint, Key};
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Ownership, Record, RecordCount, RecordKind,
    RecordQuery, RecordTally, SagaLog, SagaQuery, SagaStatus, SagaWrite, StaleSaga, Status,
    StepRecord, StepState, Store, StoredOutcome,
};
use crate::Error;

mod scripts;

use scripts::{CLAIM, COMPLETE, EXPIRED, HEARTBEAT, RELEASE, RESOLVE, WRITE_SAGA};

/// After how many recorded results (of one store handle) the expiry index is trimmed of the
/// records that expired (the records themselves expire natively, on time).
const PURGE_EVERY: u64 = 64;

/// How many keys the operators' listings ask `SCAN` for at a time (a hint to the server).
const SCAN_COUNT: usize = 1000;

/// The length of a key in hex, as it sits in the names of the store's hashes.
const KEY_HEX_LEN: usize = 64;

/// The hashes of one kind the store keeps per key (`<prefix>{<key>}<suffix>`), as the
/// operators' listings walk them: the fields they read of each first (all but the bulky
/// ones), and what a hash is called in errors.
struct Hashes {
    suffix: &'static str,
    head: &'static [&'static str],
    what: &'static str,
}

/// The records, read without their result.
const RECORDS: Hashes = Hashes {
    suffix: ":r",
    head: &["st", "tk", "fp", "oc", "ca", "ex", "ac"],
    what: "a record",
};

/// The heads of the saga logs, read without their steps.
const SAGA_LOGS: Hashes = Hashes {
    suffix: ":s",
    head: &["id", "status", "error", "updated", "note"],
    what: "a saga log",
};

/// The store on a Redis server: atomic Lua scripts with fencing tokens, leases and TTLs on
/// the server's clock, completed records expired natively. Cheap to clone (one multiplexed
/// connection that reconnects by itself).
///
/// ```no_run
/// use idem_runtime::{set_default_store, store::RedisStore};
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?.with_prefix("billing:idem:");
/// set_default_store(store);
/// # Ok(())
/// # }
/// ```
///
/// # Durability
///
/// Redis acknowledges a write once it is in the primary's memory. Replication to replicas is
/// asynchronous, and writing to disk depends on the server's settings, so a write the store
/// acknowledged can still be lost:
///
/// - by a **failover** (Sentinel, a managed service or an operator promotes a replica): the
///   writes the replica had not received yet are gone;
/// - by a **restart without the append-only file** (`appendonly no`: RDB snapshots only, or
///   no persistence): everything written since the last snapshot is gone;
/// - by **eviction** (`maxmemory-policy` other than `noeviction`): keys are dropped to make
///   room. [`connect`](RedisStore::connect) refuses such a server, unless accepted with
///   [`RedisStoreBuilder::accept_eviction`]. A server with no memory limit (`maxmemory 0`)
///   evicts nothing whatever its policy: it connects, with a warning that a limit set later
///   would start evicting. A server that refuses `CONFIG` cannot be checked: it connects,
///   with a warning.
///
/// What idem loses with such writes:
///
/// - **an acknowledged claim**: a second caller finds no record, claims the key and runs the
///   body again, the side effect twice;
/// - **an acknowledged result**: the replay is gone; the next caller runs the body again (or
///   waits for the lease of a claim that survived, then takes over);
/// - **the fencing-token counter going back**: tokens handed out again, so an owner from
///   before the loss can hold the same token as a new claim of its key, and its late
///   `complete` or `release` then acts on the new owner's record;
/// - **a saga's log entry**: recovery no longer knows that a step ran, and does not undo it.
///
/// How to run Redis so that none of this happens:
///
/// - `appendonly yes` with `appendfsync always` (each write is on disk before the answer); with
///   `appendfsync everysec` a crash of the machine (not of the Redis process) loses up to
///   about the last second of acknowledged writes;
/// - `maxmemory-policy noeviction` (a full server then refuses writes, and idem reports them);
/// - against failover, [`RedisStoreBuilder::wait_for_replicas`]: the claims that acquired a
///   key, recorded results, lease extensions and saga log entries are acknowledged only once
///   that many replicas have them (`WAIT`), else the caller gets a store error (a claim is
///   then given back before the body runs). On the primary, `min-replicas-to-write` and
///   `min-replicas-max-lag` make a primary cut off from its replicas refuse writes instead of
///   taking writes a failover would drop. Releases, the parking of a key for review and
///   operators' writes do not wait: losing one of them leaves a key claimed until its lease
///   runs out, or a saga marked as needing attention again, which makes no side effect run
///   twice.
///
/// `WAIT` counts the replicas that have every write made *on the connection* so far. The
/// store's connection is shared by all its clones, so a `WAIT` also waits for the writes of
/// other calls: more than needed, still correct. The server also holds the connection's
/// next commands until the `WAIT` answers, so the calls of one store queue behind each other
/// for a replica's round trip, and for the whole timeout when a replica is missing: keep the
/// timeout short, and give agents that work in parallel stores of their own (each `connect`
/// opens its own connection). `WAIT` does not make Redis strongly consistent: Sentinel and
/// managed services usually promote the most up-to-date replica, but do not promise it.
///
/// `docs/redis.md` in the repository has the same with a configuration to copy.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    replicas: Option<Replicas>,
    recorded: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn failed(key: Option<&Key>) -> impl FnOnce(redis::RedisError) -> Error + '_ {
    move |error| Error::store("redis", key, error)
}

/// How to connect a [`RedisStore`]: its key prefix, whether a server that may evict keys is
/// accepted, whether results wait for replicas. See [Durability](RedisStore#durability).
///
/// ```no_run
/// use std::time::Duration;
/// use idem_runtime::store::RedisStore;
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = RedisStore::builder("redis://redis.internal:6379/0")
///     .prefix("billing:idem:")
///     .wait_for_replicas(1, Duration::from_millis(500))
///     .connect()
///     .await?;
/// assert_eq!(store.prefix(), "billing:idem:");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    accept_eviction: bool,
    replicas: Option<Replicas>,
}

/// What too few replicas mean for a write the store has made: it may not survive.
const LOSABLE: &str = "a failover now could lose it";

/// How many replicas must have a write before the store acknowledges it, and how long it
/// waits for them (`WAIT count timeout`).
#[derive(Debug, Clone, Copy)]
struct Replicas {
    count: u32,
    timeout: Duration,
}

impl Replicas {
    /// The timeout of `WAIT`, in milliseconds: at least 1, since `WAIT n 0` waits forever.
    fn timeout_ms(self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// An error unless `acknowledged` replicas are enough for `what` (of `key`); `so` says
    /// what follows for the caller.
    fn check(
        self,
        acknowledged: i64,
        key: Option<&Key>,
        what: &str,
        so: &str,
    ) -> Result<(), Error> {
        if acknowledged >= i64::from(self.count) {
            return Ok(());
        }
        let problem = format!(
            "{what} is on the primary, but only {acknowledged} of the {} replicas asked for \
             acknowledged it within {:?} (WAIT): {so}",
            self.count, self.timeout
        );
        Err(Error::store("redis", key, problem))
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes (`idem:` unless set), as
    /// [`RedisStore::with_prefix`] sets it.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .prefix("billing:")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connects even to a server whose `maxmemory-policy` may evict idem's keys (anything but
    /// `noeviction`, with a memory limit set), which [`connect`](Self::connect) refuses
    /// unless this is `true`. Evicted claims and results make bodies run again, and an
    /// evicted token counter repeats fencing tokens: accept it knowingly (a cache-only
    /// Redis, a test). The store logs a warning naming the policy when it connects.
    /// `store::open` takes it as `?accept_eviction=true`.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://cache.internal:6379/")
    ///     .accept_eviction(true)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn accept_eviction(mut self, accept: bool) -> Self {
        self.accept_eviction = accept;
        self
    }

    /// Acknowledges a claim, a recorded result, a lease extension or a saga log entry only
    /// once `count` replicas have it (`WAIT count timeout` after the write, on the same
    /// connection); fewer within `timeout` is a store error saying so, since a failover could
    /// then lose the write. `count` 0 turns it off (the default). A `timeout` of zero is taken
    /// as 1 ms (`WAIT n 0` would wait forever). See [Durability](RedisStore#durability) for
    /// which writes wait and why.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://redis.internal:6379/")
    ///     .wait_for_replicas(1, Duration::from_millis(500))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_replicas(mut self, count: u32, timeout: Duration) -> Self {
        self.replicas = (count > 0).then_some(Replicas { count, timeout });
        self
    }

    /// Connects, checks that the server keeps idem's keys (its `maxmemory-policy`, see
    /// [`accept_eviction`](Self::accept_eviction)), and returns the store. Operations time
    /// out after 5 s (plus the replicas' timeout, if set); a dropped connection is re-made
    /// by the next call.
    ///
    /// Fails with [`Error::Store`] if the URL is not a Redis URL, the server cannot be
    /// reached, or it may evict keys and that was not accepted. A server that refuses
    /// `CONFIG` (managed Redis often does) cannot be checked: the store logs a warning and
    /// connects.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<RedisStore, Error> {
        let client = redis::Client::open(self.url.as_str()).map_err(failed(None))?;
        let waited = self.replicas.map_or(Duration::ZERO, |r| r.timeout);
        // A call that meets a dropped connection fails fast with a store error (the caller
        // retries the call, not idem); the next one reconnects. The client's own reconnect
        // backoff multiplies its delay by `factor` each time, from one second: kept short.
        // A `WAIT` answers after its own timeout: the response timeout leaves room for it.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5).saturating_add(waited))
            .set_factor(2)
            .set_max_delay(200)
            .set_number_of_retries(1);
        let mut connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(failed(None))?;
        memory_policy(&mut connection)
            .await?
            .allowed(self.accept_eviction)?;
        Ok(RedisStore {
            connection,
            prefix: self.prefix,
            replicas: self.replicas,
            recorded: Arc::default(),
        })
    }
}

/// What the server's memory settings let it do to idem's keys.
#[derive(Debug, PartialEq, Eq)]
enum MemoryPolicy {
    /// `noeviction`: a full server refuses writes (idem reports them as store errors).
    Keeps,
    /// A policy that evicts, but no memory limit (`maxmemory 0`): nothing is evicted until
    /// someone sets a limit.
    Unlimited { policy: String },
    /// A policy that evicts under a memory limit.
    Evicts { policy: String, maxmemory: u64 },
    /// The server would not say (`CONFIG` refused or renamed away, or no such setting).
    Unknown { why: String },
}

/// Reads `maxmemory-policy` and `maxmemory` (two `CONFIG GET`s in one round trip: asking
/// for both in one is Redis 7 only).
async fn memory_policy(connection: &mut ConnectionManager) -> Result<MemoryPolicy, Error> {
    let mut pipe = redis::pipe();
    pipe.cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory");
    type Settings = std::collections::HashMap<String, String>;
    let answer: Result<(Settings, Settings), redis::RedisError> =
        pipe.query_async(connection).await;
    let (policy, limit) = match answer {
        Ok(answer) => answer,
        // The server answered with an error (an unknown command, no permission): it runs,
        // but will not tell. A lost connection is an error of `connect`.
        Err(error)
            if !(error.is_io_error() || error.is_timeout() || error.is_connection_dropped()) =>
        {
            return Ok(MemoryPolicy::Unknown {
                why: format!("CONFIG GET was refused: {error}"),
            })
        }
        Err(error) => return Err(failed(None)(error)),
    };
    let (Some(policy), Some(limit)) = (policy.get("maxmemory-policy"), limit.get("maxmemory"))
    else {
        return Ok(MemoryPolicy::Unknown {
            why: "CONFIG GET did not name maxmemory-policy and maxmemory".to_owned(),
        });
    };
    Ok(match (policy.as_str(), limit.parse::<u64>()) {
        ("noeviction", _) => MemoryPolicy::Keeps,
        (_, Ok(0)) => MemoryPolicy::Unlimited {
            policy: policy.clone(),
        },
        (_, Ok(maxmemory)) => MemoryPolicy::Evicts {
            policy: policy.clone(),
            maxmemory,
        },
        (_, Err(_)) => MemoryPolicy::Unknown {
            why: format!("maxmemory is {limit:?}, not a number"),
        },
    })
}

/// What eviction under `policy` takes from idem, and what that breaks.
fn evicted_by(policy: &str) -> &'static str {
    if policy.starts_with("volatile-") {
        "evicts keys with a TTL, which idem's recorded results and their saga logs have: an \
         evicted result is never replayed, and a retry runs the side effect again"
    } else {
        // `allkeys-*`, and any policy this idem does not know, may take any key.
        "may evict any key: an evicted claim lets a second caller run the side effect again, \
         an evicted result is never replayed (a retry runs the side effect again), and an \
         evicted token counter hands out fencing tokens again"
    }
}

impl MemoryPolicy {
    /// `Ok` if the store may connect: the policy keeps idem's keys, or its risk is
    /// `accepted`, or it cannot be checked (warned).
    fn allowed(self, accepted: bool) -> Result<(), Error> {
        match self {
            MemoryPolicy::Keeps => Ok(()),
            MemoryPolicy::Unlimited { policy } => {
                tracing::warn!(
                    target: "idem",
                    %policy,
                    "the Redis server has no memory limit (maxmemory 0), so nothing is evicted \
                     now; but its maxmemory-policy {policy} {}, once a limit is set: set \
                     maxmemory-policy noeviction",
                    evicted_by(&policy)
                );
                Ok(())
            }
            MemoryPolicy::Evicts { policy, maxmemory } if accepted => {
                tracing::warn!(
                    target: "idem",
                    %policy,
                    maxmemory,
                    "accepted knowingly: the Redis server's maxmemory-policy {policy} {}",
                    evicted_by(&policy)
                );
                Ok(())
            }
            MemoryPolicy::Evicts { policy, maxmemory } => {
                let problem = format!(
                    "the Redis server may evict idem's keys: its maxmemory-policy {policy} (with \
                     maxmemory {maxmemory} bytes) {}. Set maxmemory-policy noeviction (a full \
                     server then refuses writes, which idem reports), or accept the risk \
                     knowingly with RedisStore::builder(url).accept_eviction(true) \
                     (store::open: ?accept_eviction=true)",
                    evicted_by(&policy)
                );
                Err(Error::store("redis", None, problem))
            }
            MemoryPolicy::Unknown { why } => {
                tracing::warn!(
                    target: "idem",
                    reason = %why,
                    "could not check the Redis server's maxmemory-policy: unless it is \
                     noeviction, the server may evict idem's claims and results"
                );
                Ok(())
            }
        }
    }
}

impl RedisStore {
    /// The default prefix of every key the store writes.
    pub const DEFAULT_PREFIX: &'static str = "idem:";

    /// Connects to the server at `url` (`redis://host:port/db`), with the prefix `idem:`:
    /// [`RedisStore::builder`]`(url).connect()`. Operations time out after 5 s; a dropped
    /// connection is re-made by the next call. A server whose `maxmemory-policy` may evict
    /// keys is refused (see [`RedisStoreBuilder::accept_eviction`]).
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::connect("redis://127.0.0.1:6379/").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// A builder for a store on the server at `url`, to choose the prefix, accept a server
    /// that may evict keys, or wait for replicas.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .prefix("billing:")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            accept_eviction: false,
            replicas: None,
        }
    }

    /// The same store, writing its keys under `prefix` (several applications can share one
    /// server, each under its own prefix).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix of every key the store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether an agent has used the store: its fencing-token counter, which the first claim
    /// makes, exists under the prefix. What an operator's look checks, so that a mistyped
    /// prefix or database number is an error rather than an empty store
    /// ([`store::open_existing`](crate::store::open_existing)).
    ///
    /// ```no_run
    /// # async fn look() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::connect("redis://127.0.0.1:6379/0").await?;
    /// if !store.with_prefix("billing:").is_in_use().await? {
    ///     eprintln!("no idem records under billing: in database 0");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_in_use(&self) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        redis::cmd("EXISTS")
            .arg(self.global("tokens"))
            .query_async(&mut connection)
            .await
            .map_err(failed(None))
    }

    fn hash_key(&self, key: &Key, suffix: &str) -> String {
        format!("{}{{{key}}}{suffix}", self.prefix)
    }

    fn record_key(&self, key: &Key) -> String {
        self.hash_key(key, RECORDS.suffix)
    }

    fn saga_keys(&self, key: &Key) -> (String, String) {
        (
            self.hash_key(key, SAGA_LOGS.suffix),
            self.hash_key(key, ":steps"),
        )
    }

    /// The `SCAN` pattern of the `hashes` whose key starts with `hex` (lowercase hex digits,
    /// at most a key's length): `<prefix>{<hex>??…?}<suffix>`, the store's prefix escaped.
    fn pattern(&self, hex: &str, hashes: &Hashes) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + KEY_HEX_LEN + 8);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('{');
        pattern.push_str(hex);
        pattern.push_str(&"?".repeat(KEY_HEX_LEN.saturating_sub(hex.len())));
        pattern.push('}');
        pattern.push_str(hashes.suffix);
        pattern
    }

    /// The key in the name of one of the `hashes`, if the name is one of theirs.
    fn key_in(&self, name: &[u8], hashes: &Hashes) -> Option<Key> {
        let hex = name
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b"{")?
            .strip_suffix(hashes.suffix.as_bytes())?
            .strip_suffix(b"}")?;
        std::str::from_utf8(hex).ok()?.parse().ok()
    }

    /// Sends `pipe` and checks that it got `answers` answers.
    async fn send(&self, pipe: &redis::Pipeline, answers: usize) -> Result<Vec<Value>, Error> {
        if answers == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let replies: Vec<Value> = pipe
            .query_async(&mut connection)
            .await
            .map_err(failed(None))?;
        if replies.len() != answers {
            let problem = format!("{} answers to {answers} commands", replies.len());
            return Err(Error::store("redis", None, problem));
        }
        Ok(replies)
    }

    /// Walks the `hashes` that match `pattern` with `SCAN` and hands each key, once, to
    /// `each` with the fields of its head that are set (none: the hash went in the meantime).
    /// The fields of one page are read in the round trip that asks for the next page.
    async fn scan(
        &self,
        pattern: &str,
        hashes: &Hashes,
        mut each: impl FnMut(Key, Vec<(String, Vec<u8>)>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // SCAN may hand out a key twice (when the server resizes its table meanwhile).
        let mut seen = HashSet::new();
        let mut cursor = Some(0u64);
        let mut page: Vec<Key> = Vec::new();
        while cursor.is_some() || !page.is_empty() {
            let mut pipe = redis::pipe();
            for key in &page {
                pipe.cmd("HMGET")
                    .arg(self.hash_key(key, hashes.suffix))
                    .arg(hashes.head);
            }
            if let Some(cursor) = cursor {
                pipe.cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
            }
            let answers = page.len() + usize::from(cursor.is_some());
            let mut replies = self.send(&pipe, answers).await?;
            let next = match cursor {
                Some(_) => Some(
                    replies
                        .pop()
                        .ok_or_else(|| "no answer".to_owned())
                        .and_then(scan_page)
                        .map_err(|problem| {
                            Error::store("redis", None, format!("SCAN answered {problem}"))
                        })?,
                ),
                None => None,
            };
            for (key, reply) in page.drain(..).zip(replies) {
                let head = named(hashes.head, reply).map_err(corrupt(&key, hashes.what))?;
                each(key, head)?;
            }
            if let Some((next, names)) = next {
                cursor = (next != 0).then_some(next);
                page = names
                    .iter()
                    .filter_map(|name| self.key_in(name, hashes))
                    .filter(|key| seen.insert(*key))
                    .collect();
            }
        }
        Ok(())
    }

    /// The records that match `query`, with their results, newest first: a scan of the record
    /// heads (no results), then one pipeline that reads the `limit` newest in full.
    async fn scan_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let hex = query.key_prefix.as_deref().unwrap_or_default();
        let mut newest = Newest::new(query.limit, newest_record_first);
        self.scan(&self.pattern(hex, &RECORDS), &RECORDS, |key, head| {
            newest.extend(record_head(&key, head)?.filter(|head| query.matches(head)));
            Ok(())
        })
        .await?;
        let chosen: Vec<Key> = newest.into_vec().iter().map(|head| head.key).collect();
        let mut pipe = redis::pipe();
        for key in &chosen {
            pipe.cmd("HGETALL").arg(self.record_key(key));
        }
        let replies = self.send(&pipe, chosen.len()).await?;
        let mut records = Vec::with_capacity(chosen.len());
        for (key, reply) in chosen.iter().zip(replies) {
            let found = fields(reply)
                .and_then(|hash| record(key, hash))
                .map_err(corrupt(key, RECORDS.what))?;
            // A record that went or changed since its head was read is left out.
            records.extend(found.filter(|record| query.matches(record)));
        }
        records.sort_by(newest_record_first);
        Ok(records)
    }

    /// The results whose TTL ran out by the server's clock, as the expiry index holds them:
    /// counted (`None`), or trimmed from the index, the oldest first, at most `trim` of them.
    async fn expired(&self, trim: Option<u64>) -> Result<u64, Error> {
        let mut invocation = EXPIRED.prepare_invoke();
        invocation.key(self.global("expiry"));
        match trim {
            Some(at_most) => invocation.arg(at_most),
            None => invocation.arg("count"),
        };
        self.run(None, &invocation).await
    }

    fn global(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        key: Option<&Key>,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(failed(key))
    }

    /// Runs a write whose answer the store hands to its caller as done (`what`, for errors).
    /// With [`wait_for_replicas`](RedisStoreBuilder::wait_for_replicas) set, the script and a
    /// `WAIT` go in one round trip, and too few replicas is an error, unless `wrote` says the
    /// answer is of a write that did nothing (a lost token: nothing to keep).
    async fn run_acknowledged<T: redis::FromRedisValue>(
        &self,
        key: &Key,
        invocation: &redis::ScriptInvocation<'_>,
        what: &str,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let Some(replicas) = self.replicas else {
            return self.run(Some(key), invocation).await;
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(replicas.count)
            .arg(replicas.timeout_ms());
        let mut connection = self.connection.clone();
        let answer = match pipe.query_async(&mut connection).await {
            // The server lost its scripts (a restart, SCRIPT FLUSH): the script did not run;
            // load it and send the pair again.
            Err(error) if error.kind() == redis::ErrorKind::NoScriptError => {
                invocation
                    .load_async(&mut connection)
                    .await
                    .map_err(failed(Some(key)))?;
                pipe.query_async(&mut connection).await
            }
            answer => answer,
        };
        let (answer, acknowledged): (T, i64) = answer.map_err(failed(Some(key)))?;
        if wrote(&answer) {
            replicas.check(acknowledged, Some(key), what, LOSABLE)?;
        }
        Ok(answer)
    }

    /// With replicas asked for, waits until they have every write of the connection so far
    /// (`WAIT`); `what` names the write for errors, `so` what follows from too few.
    async fn wait_for_replicas(&self, key: &Key, what: &str, so: &str) -> Result<(), Error> {
        let Some(replicas) = self.replicas else {
            return Ok(());
        };
        let mut connection = self.connection.clone();
        let acknowledged: i64 = redis::cmd("WAIT")
            .arg(replicas.count)
            .arg(replicas.timeout_ms())
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        replicas.check(acknowledged, Some(key), what, so)
    }

    /// With replicas asked for, waits for them to have the claim that handed out `token`.
    /// The claim is a second round trip, unlike the other writes: most claims of a retried
    /// call are replays that wrote nothing, and they should not wait for replicas (a `WAIT`
    /// holds up the whole multiplexed connection). Too few replicas: the claim is given back
    /// (best effort) so that the key is not held until its lease runs out, and the caller
    /// gets the error before the body runs.
    async fn replicated_claim(&self, key: &Key, token: FencingToken) -> Result<(), Error> {
        let so = "the claim is given back, and the body does not run";
        let Err(error) = self.wait_for_replicas(key, "the claim", so).await else {
            return Ok(());
        };
        let mut invocation = RELEASE.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.global("expiry"))
            .arg(token)
            .arg(key.to_string());
        if let Err(release) = self.run::<i64>(Some(key), &invocation).await {
            tracing::warn!(target: "idem", key = %key, error = %release, "giving back a claim the replicas did not acknowledge failed; it is held until its lease runs out");
        }
        Err(error)
    }

    /// Trims the expiry index of the records Redis deleted by now (the results whose TTL ran
    /// out, with their saga logs, and the dead claims), and says how many there were.
    async fn purge(&self) -> Result<u64, Error> {
        self.expired(Some(u64::MAX)).await
    }
}

/// The server's clock, in milliseconds since the epoch.
async fn server_now_ms(connection: &mut ConnectionManager) -> Result<i64, Error> {
    let (seconds, micros): (i64, i64) = redis::cmd("TIME")
        .query_async(connection)
        .await
        .map_err(failed(None))?;
    Ok(seconds * 1000 + micros / 1000)
}

/// Reads the fields of a Redis hash as (name, bytes) pairs.
fn fields(value: Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => return Err(format!("a hash, not {other:?}")),
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        out.push((text(&name)?, bytes(value)?));
    }
    Ok(out)
}

fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(format!("bytes, not {other:?}")),
    }
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|e| e.to_string()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(format!("text, not {other:?}")),
    }
}

fn number(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(n) => Ok(*n),
        other => text(other)?.parse().map_err(|e| format!("a number: {e}")),
    }
}

fn fingerprint(value: Value) -> Result<Fingerprint, String> {
    let bytes: [u8; 32] = bytes(value)?
        .try_into()
        .map_err(|_| "the fingerprint is not 32 bytes".to_owned())?;
    Ok(Fingerprint::from_bytes(bytes))
}

fn outcome(kind: &str, bytes: Vec<u8>) -> Result<StoredOutcome, String> {
    match kind {
        "ok" => Ok(StoredOutcome::Ok(bytes)),
        "err" => Ok(StoredOutcome::Err(bytes)),
        other => Err(format!("unknown outcome {other:?}")),
    }
}

fn token(n: i64) -> Result<FencingToken, String> {
    FencingToken::try_from(n).map_err(|_| format!("negative token {n}"))
}

/// The answer of [`CLAIM`].
fn claim_answer(value: Value) -> Result<Claim, String> {
    let Value::Array(items) = value else {
        return Err(format!("an array, not {value:?}"));
    };
    let mut items = items.into_iter();
    let mut next = || items.next().ok_or_else(|| "a short answer".to_owned());
    let kind = text(&next()?)?;
    Ok(match kind.as_str() {
        "acquired" => Claim::Acquired {
            token: token(number(&next()?)?)?,
            resumed: number(&next()?)? == 1,
        },
        "completed" => {
            let fingerprint = fingerprint(next()?)?;
            let kind = text(&next()?)?;
            Claim::Completed {
                fingerprint,
                outcome: outcome(&kind, bytes(next()?)?)?,
            }
        }
        "in_progress" => Claim::InProgress {
            fingerprint: fingerprint(next()?)?,
            token: token(number(&next()?)?)?,
            lease_remaining: Duration::from_millis(
                u64::try_from(number(&next()?)?.max(0)).unwrap_or(0),
            ),
        },
        "review" => Claim::NeedsReview {
            fingerprint: fingerprint(next()?)?,
        },
        other => return Err(format!("unknown answer {other:?}")),
    })
}

fn wall(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn record(key: &Key, hash: Vec<(String, Vec<u8>)>) -> Result<Option<Record>, String> {
    if hash.is_empty() {
        return Ok(None);
    }
    let mut status = None;
    let (mut tok, mut fp, mut kind, mut result) = (None, None, None, None);
    let (mut created, mut expires, mut action) = (None, None, String::new());
    for (name, value) in hash {
        match name.as_str() {
            "st" => status = Some(String::from_utf8_lossy(&value).into_owned()),
            "tk" => tok = Some(number(&Value::BulkString(value))?),
            "fp" => fp = Some(fingerprint(Value::BulkString(value))?),
            "oc" => kind = Some(String::from_utf8_lossy(&value).into_owned()),
            "rs" => result = Some(value),
            "ca" => created = Some(number(&Value::BulkString(value))?),
            "ex" => expires = Some(number(&Value::BulkString(value))?),
            "ac" => action = String::from_utf8_lossy(&value).into_owned(),
            _ => {}
        }
    }
    let status = status
        .as_deref()
        .and_then(Status::parse)
        .ok_or("unknown status")?;
    let outcome = match (kind, result) {
        (Some(kind), Some(bytes)) => Some(outcome(&kind, bytes)?),
        _ => None,
    };
    if status == Status::Completed && outcome.is_none() {
        return Err("completed without a result".into());
    }
    Ok(Some(Record {
        key: *key,
        action,
        status,
        token: token(tok.ok_or("no token")?)?,
        fingerprint: fp.ok_or("no fingerprint")?,
        outcome,
        created_at: wall(created.unwrap_or(0)),
        expires_at: expires.map(wall),
    }))
}

fn corrupt<'k>(key: &'k Key, what: &'static str) -> impl FnOnce(String) -> Error + 'k {
    move |problem| Error::codec(what, Some(key), format!("corrupt {what}: {problem}"))
}

/// A page of `SCAN`: the next cursor (0 at the end) and the names found.
fn scan_page(value: Value) -> Result<(u64, Vec<Vec<u8>>), String> {
    let Value::Array(items) = value else {
        return Err(format!("{value:?}"));
    };
    let [cursor, Value::Array(names)] =
        <[Value; 2]>::try_from(items).map_err(|items| format!("{items:?}"))?
    else {
        return Err("no names".to_owned());
    };
    let cursor = text(&cursor)?
        .parse()
        .map_err(|e| format!("a cursor: {e}"))?;
    Ok((
        cursor,
        names.into_iter().map(bytes).collect::<Result<_, _>>()?,
    ))
}

/// The answer of `HMGET` on `names`, as the (name, bytes) pairs of the fields that are set.
fn named(names: &[&str], value: Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Value::Array(values) = value else {
        return Err(format!("fields, not {value:?}"));
    };
    names
        .iter()
        .zip(values)
        .filter(|(_, value)| !matches!(value, Value::Nil))
        .map(|(name, value)| Ok(((*name).to_owned(), bytes(value)?)))
        .collect()
}

/// A record read without its result (the fields of [`RECORDS`]): what filters and orders
/// need. Its outcome, if any, holds no bytes.
fn record_head(key: &Key, mut head: Vec<(String, Vec<u8>)>) -> Result<Option<Record>, Error> {
    if head.is_empty() {
        return Ok(None);
    }
    head.push(("rs".to_owned(), Vec::new()));
    record(key, head).map_err(corrupt(key, RECORDS.what))
}

/// The log of a saga from its head and steps (empty: read without its steps).
fn saga_log(
    key: &Key,
    head: Vec<(String, Vec<u8>)>,
    step_fields: Vec<(String, Vec<u8>)>,
) -> Result<Option<SagaLog>, String> {
    if head.is_empty() {
        return Ok(None);
    }
    let mut id = None;
    let (mut status, mut error, mut updated, mut note) = (None, None, 0, None);
    for (name, value) in head {
        let value = String::from_utf8(value).map_err(|e| e.to_string())?;
        match name.as_str() {
            "id" => id = Some(value),
            "status" => status = SagaStatus::parse(&value),
            "error" => error = Some(value),
            "updated" => updated = value.parse().map_err(|_| "updated".to_owned())?,
            "note" => note = Some(value),
            _ => {}
        }
    }
    Ok(Some(
        SagaLog::new(
            *key,
            id.ok_or("no id")?,
            status.ok_or("unknown status")?,
            error,
            steps(step_fields)?,
            wall(updated),
        )
        .with_note(note),
    ))
}

/// The order of [`Store::list_records`]: newest first, then by key.
fn newest_record_first(a: &Record, b: &Record) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| a.key.cmp(&b.key))
}

/// The order of [`Store::list_sagas`]: most recently written first, then by id (and key).
fn newest_saga_first(a: &SagaLog, b: &SagaLog) -> std::cmp::Ordering {
    b.updated_at
        .cmp(&a.updated_at)
        .then_with(|| a.id.cmp(&b.id))
        .then_with(|| a.key.cmp(&b.key))
}

/// The first `limit` of many items in `order`, kept while a scan walks them: sorted and cut
/// whenever twice `limit` are held.
struct Newest<T> {
    items: Vec<T>,
    limit: usize,
    order: fn(&T, &T) -> std::cmp::Ordering,
}

impl<T> Newest<T> {
    fn new(limit: usize, order: fn(&T, &T) -> std::cmp::Ordering) -> Self {
        Newest {
            items: Vec::new(),
            limit,
            order,
        }
    }

    fn push(&mut self, item: T) {
        self.items.push(item);
        if self.items.len() >= self.limit.saturating_mul(2).max(64) {
            self.cut();
        }
    }

    fn extend(&mut self, items: impl IntoIterator<Item = T>) {
        for item in items {
            self.push(item);
        }
    }

    fn cut(&mut self) {
        self.items.sort_by(self.order);
        self.items.truncate(self.limit);
    }

    fn into_vec(mut self) -> Vec<T> {
        self.cut();
        self.items
    }
}

/// A step's fields as the log hash keeps them (`<index>:<field>`).
fn step_fields(step: &StepRecord) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![
        ("name", step.name.clone().into_bytes()),
        ("key", step.key.to_string().into_bytes()),
        ("irreversible", vec![u8::from(step.irreversible) + b'0']),
        ("args", step.args.clone()),
        ("state", step.state.as_str().as_bytes().to_vec()),
    ];
    if let Some(output) = &step.output {
        fields.push(("output", output.clone()));
    }
    if let Some(error) = &step.error {
        fields.push(("error", error.clone().into_bytes()));
    }
    fields
}

fn steps(hash: Vec<(String, Vec<u8>)>) -> Result<Vec<StepRecord>, String> {
    use std::collections::BTreeMap;
    let mut by_index: BTreeMap<u32, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (name, value) in hash {
        let (index, field) = name
            .split_once(':')
            .ok_or_else(|| format!("step field {name:?}"))?;
        let index: u32 = index.parse().map_err(|_| format!("step index {index:?}"))?;
        by_index
            .entry(index)
            .or_default()
            .insert(field.to_owned(), value);
    }
    by_index
        .into_iter()
        .map(|(index, mut fields)| {
            let mut take = |field: &str| {
                fields
                    .remove(field)
                    .ok_or_else(|| format!("step {index} has no {field}"))
            };
            let as_text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
            let name = as_text(take("name")?)?;
            let key = as_text(take("key")?)?
                .parse()
                .map_err(|_| format!("the key of step {index}"))?;
            let irreversible = take("irreversible")? == b"1";
            let args = take("args")?;
            let state = as_text(take("state")?)?;
            let state = StepState::parse(&state)
                .ok_or_else(|| format!("unknown state {state:?} of step {index}"))?;
            Ok(StepRecord {
                index,
                name,
                key,
                irreversible,
                args,
                state,
                output: fields.remove("output"),
                error: fields.remove("error").map(as_text).transpose()?,
            })
        })
        .collect()
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn shared(&self) -> Option<std::sync::Arc<dyn Store>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let key = request.key;
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.global("tokens"))
            .key(self.global("expiry"))
            .key(self.saga_keys(key).0)
            .arg(&request.fingerprint.as_bytes()[..])
            .arg(request.action)
            .arg(millis(request.lease))
            .arg(match request.on_stale {
                crate::store::OnStale::TakeOver => "takeover",
                crate::store::OnStale::Review => "review",
            })
            .arg(key.to_string())
            .arg(millis(request.ttl));
        let answer: Value = self.run(Some(key), &invocation).await?;
        let claim = claim_answer(answer).map_err(corrupt(key, "a record"))?;
        if let Claim::Acquired { token, .. } = claim {
            self.replicated_claim(key, token).await?;
        }
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let (kind, bytes) = match outcome {
            StoredOutcome::Ok(bytes) => ("ok", bytes),
            StoredOutcome::Err(bytes) => ("err", bytes),
        };
        let (head, steps) = self.saga_keys(key);
        let mut invocation = COMPLETE.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.global("expiry"))
            .key(head)
            .key(steps)
            .arg(token)
            .arg(kind)
            .arg(bytes)
            .arg(millis(ttl))
            .arg(key.to_string());
        let held: i64 = self
            .run_acknowledged(key, &invocation, "the result", |held| *held == 1)
            .await?;
        let due = self.recorded.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1;
        if held == 1 && due {
            // A store nobody purges stays small; the result is recorded whatever this says.
            if let Err(error) = self.purge().await {
                tracing::warn!(target: "idem", %error, "purging expired results failed");
            }
        }
        Ok(ownership(held))
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.global("expiry"))
            .arg(token)
            .arg(key.to_string());
        Ok(ownership(self.run(Some(key), &invocation).await?))
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        let mut invocation = HEARTBEAT.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.saga_keys(key).0)
            .key(self.global("expiry"))
            .arg(token)
            .arg(millis(lease))
            .arg(key.to_string());
        let held = self
            .run_acknowledged(key, &invocation, "the extended lease", |held| *held == 1)
            .await?;
        Ok(ownership(held))
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let mut connection = self.connection.clone();
        let hash: Value = redis::cmd("HGETALL")
            .arg(self.record_key(key))
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        fields(hash)
            .and_then(|hash| record(key, hash))
            .map_err(corrupt(key, "a record"))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.purge().await
    }

    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let (head, steps) = self.saga_keys(saga);
        let mut invocation = WRITE_SAGA.prepare_invoke();
        invocation
            .key(self.record_key(saga))
            .key(head)
            .key(steps)
            .key(self.global("sagas"))
            .key(self.global("expiry"))
            .arg(token)
            .arg(id)
            .arg(saga.to_string());
        match write {
            SagaWrite::Status { status, error } => {
                invocation
                    .arg("status")
                    .arg(status.as_str())
                    .arg(u8::from(error.is_some()))
                    .arg(error.unwrap_or_default());
            }
            SagaWrite::Step(step) => {
                invocation.arg("step").arg(step.index);
                for (field, value) in step_fields(step) {
                    invocation.arg(field).arg(value);
                }
            }
        }
        let held = self
            .run_acknowledged(saga, &invocation, "the saga log entry", |held| *held == 1)
            .await?;
        Ok(ownership(held))
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let (head, steps_key) = self.saga_keys(saga);
        let mut connection = self.connection.clone();
        let (head, steps_hash): (Value, Value) = redis::pipe()
            .cmd("HGETALL")
            .arg(head)
            .cmd("HGETALL")
            .arg(steps_key)
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(saga)))?;
        fields(head)
            .and_then(|head| saga_log(saga, head, fields(steps_hash)?))
            .map_err(corrupt(saga, SAGA_LOGS.what))
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        let mut connection = self.connection.clone();
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.global("sagas"))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(failed(None))?;
        let now = server_now_ms(&mut connection).await?;
        let mut stale = Vec::new();
        for member in members {
            if stale.len() >= limit {
                break;
            }
            let Ok(key) = member.parse::<Key>() else {
                continue;
            };
            let (head, _) = self.saga_keys(&key);
            let (record, id): (
                (Option<String>, Option<i64>, Option<Vec<u8>>),
                Option<String>,
            ) = redis::pipe()
                .cmd("HMGET")
                .arg(self.record_key(&key))
                .arg("st")
                .arg("ex")
                .arg("fp")
                .cmd("HGET")
                .arg(head)
                .arg("id")
                .query_async(&mut connection)
                .await
                .map_err(failed(Some(&key)))?;
            let (status, expires, fp) = record;
            let dead_owner =
                status.as_deref() == Some("in_progress") && expires.is_some_and(|at| at <= now);
            if let (true, Some(fp), Some(id)) = (dead_owner, fp, id) {
                let fingerprint =
                    fingerprint(Value::BulkString(fp)).map_err(corrupt(&key, "a record"))?;
                stale.push(StaleSaga::new(key, id, fingerprint));
            }
        }
        Ok(stale)
    }

    /// The records that `query` selects, newest first. Redis keeps no index by action or
    /// time: this walks every record of the store with `SCAN` (one round trip per page of
    /// about 1000 keys of the server, the heads of the records found on a page read in the
    /// same trip as the next page), then reads the `limit` newest in full in one more. A key
    /// prefix goes into the `SCAN` pattern (it is hex or matches nothing): fewer keys come
    /// back, though the server still walks them all; a whole key is one `HGETALL`. Redis
    /// deletes expired results itself, at their TTL, so none are listed.
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let hex = query.key_prefix.as_deref().unwrap_or_default();
        if query.limit == 0 || !query.key_prefix_can_match() {
            return Ok(Vec::new());
        }
        if let Ok(key) = hex.parse::<Key>() {
            // A whole key: its record, if any.
            let found = self.get(&key).await?;
            return Ok(found.into_iter().filter(|r| query.matches(r)).collect());
        }
        self.scan_records(query).await
    }

    /// How many records there are of each action and kind: a walk of every record of the
    /// store with `SCAN`, as `list_records` does, reading no results.
    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        let mut tally = RecordTally::new();
        self.scan(&self.pattern("", &RECORDS), &RECORDS, |key, head| {
            if let Some(head) = record_head(&key, head)? {
                let kind = RecordKind::of(head.status, head.outcome.as_ref());
                tally.add(&head.action, kind, 1);
            }
            Ok(())
        })
        .await?;
        Ok(tally.into_counts())
    }

    /// How many records `purge_expired` would count now: the members of the expiry index due
    /// by the server's clock (one script, `ZCOUNT`). Redis deleted those records (results, with
    /// the logs of the sagas they ended, at their TTL; dead claims at their lease end plus
    /// TTL); the purge trims the index.
    async fn count_expired(&self) -> Result<u64, Error> {
        self.expired(None).await
    }

    /// Like `purge_expired`, at most `limit` records: they went when they expired (Redis
    /// expires them natively), and this trims up to `limit` of them from the expiry index, the
    /// oldest first (one script).
    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        self.expired(Some(u64::try_from(limit).unwrap_or(u64::MAX)))
            .await
    }

    /// The saga logs that `query` selects, most recently written first, with their steps.
    /// As `list_records` does, this walks every saga log of the store with `SCAN` (reading
    /// their heads), then reads the `limit` newest with their steps in one more round trip.
    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut newest = Newest::new(query.limit, newest_saga_first);
        self.scan(&self.pattern("", &SAGA_LOGS), &SAGA_LOGS, |key, head| {
            let log = saga_log(&key, head, Vec::new()).map_err(corrupt(&key, SAGA_LOGS.what))?;
            newest.extend(log.filter(|log| query.matches(log)));
            Ok(())
        })
        .await?;
        let chosen: Vec<Key> = newest.into_vec().iter().map(|log| log.key).collect();
        let mut pipe = redis::pipe();
        for key in &chosen {
            let (head, steps) = self.saga_keys(key);
            pipe.cmd("HGETALL").arg(head).cmd("HGETALL").arg(steps);
        }
        let mut replies = self.send(&pipe, 2 * chosen.len()).await?.into_iter();
        let mut logs = Vec::with_capacity(chosen.len());
        for key in &chosen {
            // `send` checked that there are two answers a key.
            let mut next = || replies.next().unwrap_or(Value::Nil);
            let (head, steps_hash) = (next(), next());
            let found = fields(head)
                .and_then(|head| saga_log(key, head, fields(steps_hash)?))
                .map_err(corrupt(key, SAGA_LOGS.what))?;
            // A log that went or changed since its head was read is left out.
            logs.extend(found.filter(|log| query.matches(log)));
        }
        logs.sort_by(newest_saga_first);
        Ok(logs)
    }

    /// Settles a saga that needs attention, keeping `note` in its log head: one script that
    /// checks the status and writes `resolved`, the note and the time.
    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        let (head, _) = self.saga_keys(saga);
        let mut invocation = RESOLVE.prepare_invoke();
        invocation.key(head).arg(note);
        let resolved: i64 = self.run(Some(saga), &invocation).await?;
        Ok(resolved == 1)
    }
}

fn ownership(held: i64) -> Ownership {
    if held == 1 {
        Ownership::Held
    } else {
        Ownership::Lost
    }
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use super::*;
    use crate::call::Action;
    use crate::conformance::servers::RedisServer;
    use crate::store::OnStale;

    static TOUCH: Action = Action::new("touch");

    async fn store(prefix: &str) -> Option<RedisStore> {
        let server = RedisServer::shared()?;
        let store = RedisStore::connect(&server.url()).await.expect("connect");
        Some(store.with_prefix(prefix))
    }

    /// Claims `n` fresh keys of `TOUCH` (numbered from `from`), completing every other one.
    async fn fill(store: &RedisStore, from: u32, n: u32) -> Vec<Key> {
        let mut keys = Vec::new();
        for i in from..from + n {
            let key = TOUCH.key(&(i,)).expect("canonical");
            let request = ClaimRequest {
                key: &key,
                fingerprint: &Fingerprint::from(key),
                action: "touch",
                lease: Duration::from_secs(60),
                ttl: Duration::from_secs(3600),
                on_stale: OnStale::TakeOver,
            };
            let Claim::Acquired { token, .. } = store.claim(&request).await.expect("claim") else {
                panic!("a fresh key is acquired");
            };
            if i % 2 == 0 {
                let ok = StoredOutcome::Ok(b"1".to_vec());
                let ttl = Duration::from_secs(60);
                let held = store
                    .complete(&key, token, ok, ttl)
                    .await
                    .expect("complete");
                assert_eq!(held, Ownership::Held);
            }
            keys.push(key);
        }
        keys
    }

    /// A prefix is matched literally: `*`, `?`, `[`, `]` and `\` in it are escaped in the
    /// `SCAN` pattern, so a store does not list the records of another prefix its unescaped
    /// pattern would match.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prefix_with_glob_characters_lists_only_its_own_records() {
        let Some(globby) = store(r"ops[1]*?\:").await else {
            return;
        };
        let Some(other) = store("ops1ab:").await else {
            return;
        };
        let own = fill(&globby, 0, 1).await;
        fill(&other, 100, 2).await;
        let listed: Vec<Key> = globby
            .list_records(&RecordQuery::new())
            .await
            .expect("list")
            .iter()
            .map(|record| record.key)
            .collect();
        assert_eq!(listed, own);
        let counted: u64 = globby
            .record_counts()
            .await
            .expect("counts")
            .iter()
            .map(|row| row.count)
            .sum();
        assert_eq!(counted, 1);
        assert_eq!(
            other
                .list_records(&RecordQuery::new())
                .await
                .expect("list")
                .len(),
            2
        );
    }

    /// More records than a `SCAN` page and than the kept newest hold: each is listed and
    /// counted once, a limit keeps the head of the full order, and a key prefix narrows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_walk_many_pages() {
        let Some(store) = store("pages:").await else {
            return;
        };
        let n = 2 * SCAN_COUNT as u32 + 300;
        let keys = fill(&store, 0, n).await;

        let all = store
            .list_records(&RecordQuery::new().limit(usize::MAX))
            .await
            .expect("list");
        assert_eq!(all.len(), keys.len());
        let unique: HashSet<Key> = all.iter().map(|record| record.key).collect();
        assert_eq!(unique.len(), keys.len(), "each record once");
        assert!(all
            .windows(2)
            .all(|w| newest_record_first(&w[0], &w[1]).is_lt()));

        let first: Vec<Key> = all.iter().take(70).map(|record| record.key).collect();
        let limited: Vec<Key> = store
            .list_records(&RecordQuery::new().limit(70))
            .await
            .expect("list")
            .iter()
            .map(|record| record.key)
            .collect();
        assert_eq!(limited, first, "the limit keeps the head of the order");

        let counts = store.record_counts().await.expect("counts");
        let count = |kind| RecordCount::new("touch".into(), kind, u64::from(n / 2));
        assert_eq!(
            counts,
            [count(RecordKind::InProgress), count(RecordKind::Completed)]
        );

        let hex = keys[0].to_string();
        let narrowed = store
            .list_records(&RecordQuery::new().key_prefix(&hex[..2]).limit(usize::MAX))
            .await
            .expect("list");
        let expected = keys
            .iter()
            .filter(|key| key.to_string().starts_with(&hex[..2]));
        assert_eq!(narrowed.len(), expected.count());
        assert!(narrowed.iter().any(|record| record.key == keys[0]));
    }
}
