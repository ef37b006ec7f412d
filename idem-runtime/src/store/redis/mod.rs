//! `RedisStore`: records on a Redis server, for agents on many machines.
//!
//! A claim is one native command, `SET <record> <claim> NX GET PX <lease + TTL>`
//! (`claim.rs`): it makes a claim where there is no record, and otherwise reads the record as
//! it is (a replay, a key parked for review; a live owner, timed by a `PTTL` after it) with
//! no script on either path. A handle whose claims lately found records reads first: a
//! call's replay is then one `GET`. The result of such a claim, its record unchanged since,
//! is one compare-and-set of the whole record (`SET … IFEQ` on Valkey, a three-line script
//! on Redis 7: `in_place.rs`). A saga step's write by its owner is one native `RPUSHX` to a
//! list of that owner's, which exists only while it holds the record (`write_saga`). Every
//! other write, and a claim that must change a record (a dead
//! owner taken over or parked, a released key claimed again), is one Lua script, run
//! atomically by the server, that checks the fencing token and reads the server's clock
//! (`TIME`): the clocks of the callers never matter. A claim's lease is in its key's expiry
//! (the lease end plus the action's TTL), so the `SET` needs no clock. Fencing tokens of
//! fresh claims come from blocks the store reserves (`tokens.rs`).
//!
//! The keys sit in 4,096 buckets (the first three hex digits of a call's key), each bucket a
//! hash tag, so that every script and pipeline touches one cluster slot: the store runs on
//! one server (`redis://`) and on Redis Cluster (`redis+cluster://`) alike (`layout.rs`):
//!
//! ```text
//! <prefix>{9f3}:9f3a…:r   string: the record (status, token, claim id, lease end, TTL,
//!                         created, fingerprint, outcome kind, action, result; `record.rs`)
//! <prefix>{9f3}:9f3a…:s   hash: a saga's log head (id, status, error, updated, note)
//! <prefix>{9f3}:9f3a…:steps  hash: a saga's steps as layout 2 wrote them ("<index>:<field>")
//! <prefix>{9f3}:9f3a…:log:<token>:<claim id>  list: the step writes of the saga's owner in
//!                         progress, moved onto `:log` when the record leaves it
//! <prefix>{9f3}:9f3a…:log list: the step writes of the saga's owners before
//! <prefix>{9f3}:sagas     sorted set: the bucket's sagas running or being undone (recovery)
//! <prefix>tokens          counter: the fencing tokens (reserved in blocks, by no script)
//! <prefix>layout          the layout of the keys under the prefix
//! ```
//!
//! Redis deletes a record itself (native expiry) when the purge would: a completed record,
//! with its saga log, at the end of its TTL; a claim at the end of its lease plus the action's
//! TTL (`PEXPIREAT`, moved by each heartbeat), unless it has a saga log (then it never
//! expires: recovery needs it) or is parked for review (written with no expiry). So the purge has nothing
//! left to delete, and `count_expired` nothing to count. (An older idem kept an expiry index,
//! `<prefix>expiry`, to count them: 31 % of a record's memory and two commands per call. The
//! purge deletes it.)
//!
//! The operators' queries (`list_records`, `record_counts`, `list_sagas`) have no index by
//! action or time to read: they walk the store's keys with `SCAN`, a page at a time, on every
//! master, which costs a round trip per page and a pass over the whole keyspace. Recovery
//! reads the index of running sagas of every bucket.
//!
//! Where each part lives: `connection.rs` one server or a cluster; `layout.rs` the key
//! names, their buckets, the layout check and the migration from an older one; `claim.rs`
//! the claim (native commands, a script for what must change); `claim_ids.rs` the claim ids
//! beside the tokens; `in_place.rs` a result over an unchanged claim; `record.rs` a record's
//! format; `tokens.rs` the fencing tokens' blocks;
//! `scripts/*.lua` the writes (loaded by `scripts.rs`, the clock read once in
//! `scripts/prelude.lua`); `decode.rs` Redis's answers read into records, claims and
//! saga logs; `scan.rs` the operators' walks; `durability.rs` the eviction check on
//! `connect` and the `WAIT` for replicas. This file: the store, its builder, the `Store` impl.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use crate::key::Key;
use crate::store::tls::{ClientIdentity, TlsSettings};
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Ownership, Record, RecordCount, RecordQuery,
    SagaLog, SagaQuery, SagaWrite, StaleSaga, Status, Store, StoredOutcome,
};
use crate::store::{Inspect, SagaStore};
use crate::Error;

mod claim;
mod claim_ids;
mod connection;
mod decode;
mod durability;
mod in_place;
mod layout;
mod record;
mod scan;
mod scripts;
mod step_log;
mod tokens;

use crate::store::first_look::{FirstLook, FirstStep};
use claim::Looked;
use claim_ids::ClaimIds;
use connection::{Connection, Target};
use decode::{corrupt, read_answer, record, saga_log, step_fields, Answer};
use durability::{memory_policy, Replicas};
use layout::bucket;
pub use layout::Migrated;
use record::{State, Stored};
use scripts::{COMPLETE, FORGET, HEARTBEAT, READ_SAGA, RELEASE, RESOLVE, WRITE_SAGA};

/// The hashes of one kind the store keeps per key (`<prefix>{<bucket>}:<key><suffix>`), as the
/// operators' listings walk them: the fields they read of each first (all but the bulky
/// ones), and what a hash is called in errors.
struct Hashes {
    suffix: &'static str,
    head: &'static [&'static str],
    what: &'static str,
}

/// The records (strings, read whole).
const RECORDS: Hashes = Hashes {
    suffix: ":r",
    head: &[],
    what: "a record",
};

/// The heads of the saga logs, read without their steps.
const SAGA_LOGS: Hashes = Hashes {
    suffix: ":s",
    head: &["id", "status", "error", "updated", "note"],
    what: "a saga log",
};

/// The suffix of a saga's closed log ([`RedisStore::closed_log`]).
const CLOSED_LOG: &str = ":log";

/// How many times a claim or a read of a saga's log is sent again naming the owner the record
/// has (`step_log.rs`): once is the rule, more when owners change meanwhile.
const OWNER_CHANGES: usize = 8;

/// The store on a Redis server or a Redis Cluster (Valkey too): atomic Lua scripts with
/// fencing tokens and claim ids, leases and TTLs on the server's clock, completed records
/// expired natively. Cheap to clone (one multiplexed connection that reconnects by itself, or
/// the cluster client's connections).
///
/// ```no_run
/// use idem_runtime::{set_default_store, store::RedisStore};
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .prefix("billing:idem:")
///     .connect()
///     .await?;
/// set_default_store(store);
/// // A cluster, found from any of its nodes:
/// let fleet = RedisStore::connect("redis+cluster://10.0.0.1:6379,10.0.0.2:6379").await?;
/// # Ok(())
/// # }
/// ```
///
/// # Layouts
///
/// The store's keys sit in 4,096 buckets, each a hash tag, so that every script touches one
/// cluster slot; the layout is kept in `<prefix>layout` (now `3`: a saga step's write is one
/// `RPUSHX` to its owner's own list). A store written by an idem from before (layout 1,
/// which wrote no layout key; layout 2, which wrote saga steps through a script and would
/// not fence this idem's) or by a newer one is refused by
/// [`connect`](RedisStoreBuilder::connect) with an error saying what to do, never read as
/// empty: [`RedisStoreBuilder::migrate_layout`] (`idem migrate`) moves a layout-1 store and
/// marks a layout-2 one.
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
///   key, reservations of fencing tokens, recorded results, lease extensions and saga log
///   entries are acknowledged only once
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
    /// Everything, behind one reference count: a call's claim is made through a clone (see
    /// `Store::shared`), and with a count per field every call took and gave back six counts
    /// that all callers' threads share (2 % of the peers benchmark's samples in a Redis run
    /// at 64 callers; one count, 0.9 %).
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    connection: Connection,
    prefix: String,
    replicas: Option<Replicas>,
    tokens: tokens::Tokens,
    claim_ids: ClaimIds,
    /// Whether claims start with `GET` or with `SET … NX GET` (`claim.rs`), from the claims
    /// made through every clone.
    first_look: FirstLook,
    /// Whether the server takes `SET … IFEQ` (`in_place.rs`).
    set_ifeq: bool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("cluster", &self.inner.connection.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The command `name`, its buffers sized for `args` more arguments of `bytes` bytes in all: a
/// command made by `redis::cmd` grows them one argument at a time, and those reallocations
/// were 6.5 % of a replay's client samples in a profile at 64 callers (BENCHMARKS.md).
fn command(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut command = redis::Cmd::with_capacity(args + 1, name.len() + bytes);
    command.arg(name);
    command
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
    tls: TlsSettings,
    first_step: FirstStep,
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

    /// Which step a claim starts with: reading the key's record (`GET`: a replay then sends
    /// no claim) or writing the claim (`SET … NX GET`: a new key then costs one round trip,
    /// not two). By default ([`FirstStep::Adaptive`]) each store handle follows its recent
    /// claims; give [`FirstStep::Read`] or [`FirstStep::Write`] for work known to be mostly
    /// duplicates or mostly new calls. The guarantees are the same either way.
    ///
    /// ```no_run
    /// use idem_runtime::store::{FirstStep, RedisStore};
    ///
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .first_step(FirstStep::Write)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn first_step(mut self, step: FirstStep) -> Self {
        self.first_step = step;
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
        self.replicas = (count > 0).then_some(Replicas {
            count,
            timeout,
            on_disk: false,
        });
        self
    }

    /// As [`wait_for_replicas`](Self::wait_for_replicas), but each of the `count` replicas
    /// must have the write in its append-only file (`WAITAOF 0 count timeout`, on the same
    /// node right after the write): a failover *and* a restart of those replicas keep it.
    /// Needs Redis 7.2 or later, or Valkey (where the store is opened on an older server,
    /// [`connect`](Self::connect) refuses, saying so), and replicas with `appendonly yes`: a
    /// replica without its append-only file never acknowledges. `count` 0 turns it off.
    ///
    /// It is slow: a replica reports how far its file is written about once a second, so a
    /// write may wait up to about a second (the test with a Valkey 9 replica needs a timeout
    /// above that); give it a timeout of a second or more.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("redis://valkey.internal:6379/")
    ///     .wait_for_replicas_on_disk(1, Duration::from_millis(500))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_replicas_on_disk(mut self, count: u32, timeout: Duration) -> Self {
        self.replicas = (count > 0).then_some(Replicas {
            count,
            timeout,
            on_disk: true,
        });
        self
    }

    /// Trusts the CA certificate `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks) for
    /// the server's TLS certificate, instead of the platform's trusted roots: for a server
    /// whose certificate a private CA signed. Needs a `rediss://` (or `rediss+cluster://`)
    /// URL and the `tls` feature; [`connect`](Self::connect) fails otherwise, and when the
    /// server's certificate is not signed by this CA or not for the URL's host name.
    /// `store::open` takes it as `?tls_ca_cert=/path/to/ca.pem`.
    ///
    /// Without it, a `rediss://` store trusts the platform's roots (the system's CA store,
    /// read with `rustls-native-certs`).
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let ca = std::fs::read("/etc/idem/redis-ca.pem").expect("the CA's certificate");
    /// let store = idem_runtime::store::RedisStore::builder("rediss://redis.internal:6380/")
    ///     .tls_root_certificate(ca)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificates = Some(pem.into());
        self
    }

    /// Presents the client certificate `certificate_pem` (with its chain, if any) and its
    /// private key `key_pem` to a server that asks for one (mutual TLS: Redis's
    /// `tls-auth-clients yes`, its default). Needs a `rediss://` URL and the `tls` feature.
    /// `store::open` takes it as `?tls_cert=/path/client.pem&tls_key=/path/client.key`.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::builder("rediss://redis.internal:6380/")
    ///     .tls_root_certificate(std::fs::read("/etc/idem/ca.pem").expect("CA"))
    ///     .tls_client_certificate(
    ///         std::fs::read("/etc/idem/client.pem").expect("certificate"),
    ///         std::fs::read("/etc/idem/client.key").expect("key"),
    ///     )
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some(ClientIdentity::new(certificate_pem, key_pem));
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
        let store = self.open().await?;
        store.check_layout().await?;
        Ok(store)
    }

    /// Connects, and moves the keys under the prefix from an older layout of idem's into the
    /// one this idem reads (see [Layouts](RedisStore#layouts)); a store already in it is left
    /// as it is. Stop the agents of the older idem first: a key they write meanwhile stays in
    /// the old layout, where the new one does not look. Running it again is harmless: it
    /// moves what is left.
    ///
    /// ```no_run
    /// # async fn upgrade() -> Result<(), idem_runtime::Error> {
    /// let moved = idem_runtime::store::RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .migrate_layout()
    ///     .await?;
    /// println!("{} records moved from layout {}", moved.records, moved.from_layout);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn migrate_layout(self) -> Result<Migrated, Error> {
        self.open().await?.migrate().await
    }

    /// Connects and checks the memory policy, not the layout.
    async fn open(self) -> Result<RedisStore, Error> {
        let target = Target::of(&self.url)?;
        // A `WAIT` answers after its own timeout: the response timeout leaves room for it.
        let waited = self.replicas.map_or(Duration::ZERO, |r| r.timeout);
        let response = Duration::from_secs(5).saturating_add(waited);
        let mut connection = Connection::open(&target, response, &self.tls).await?;
        // Every master keeps its share of the keys: each must keep them.
        for master in connection.masters().await? {
            memory_policy(&connection, &master)
                .await?
                .allowed(self.accept_eviction)?;
        }
        if let Some(replicas) = self.replicas {
            replicas.supported(&mut connection).await?;
        }
        let set_ifeq = in_place::knows_set_ifeq(&connection, &self.prefix).await;
        Ok(RedisStore::under_prefix(
            connection,
            self.prefix,
            self.replicas,
            FirstLook::new(self.first_step),
            set_ifeq,
        ))
    }
}

impl RedisStore {
    /// The default prefix of every key the store writes.
    pub const DEFAULT_PREFIX: &'static str = "idem:";

    /// Connects to the server at `url` (`redis://host:port/db`), or to the cluster whose nodes
    /// it names (`redis+cluster://host:port,host:port`), with the prefix `idem:`:
    /// [`RedisStore::builder`]`(url).connect()`. Operations time out after 5 s; a dropped
    /// connection is re-made by the next call (on a cluster: once the slot's master, or the
    /// replica promoted in its place, answers). A server whose `maxmemory-policy` may evict
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

    /// A builder for a store on the server at `url` (or the cluster, `redis+cluster://…`), to
    /// choose the prefix, accept a server that may evict keys, or wait for replicas.
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
            tls: TlsSettings::default(),
            first_step: FirstStep::default(),
        }
    }

    /// A builder for a store on the Redis Cluster that `nodes` belong to (`host:port`, or
    /// `redis://[user:password@]host:port` URLs): the cluster client finds the others from
    /// any one of them. The same as [`builder`](Self::builder) with
    /// `redis+cluster://host:port,host:port`.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), idem_runtime::Error> {
    /// let store = idem_runtime::store::RedisStore::cluster(["10.0.0.1:6379", "10.0.0.2:6379"])
    ///     .prefix("billing:")
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster<N: AsRef<str>>(nodes: impl IntoIterator<Item = N>) -> RedisStoreBuilder {
        Self::builder(connection::cluster_url(nodes))
    }

    /// The same store, writing its keys under `prefix` (several applications can share one
    /// server, each under its own prefix). The keys under it are not checked for their layout
    /// as [`connect`](RedisStoreBuilder::connect) checks those of the builder's prefix: give
    /// the prefix to the builder ([`RedisStoreBuilder::prefix`]) where the keys may be old.
    /// The new handle shares the connection, and keeps apart what belongs to a prefix: its
    /// block of fencing tokens, the claims it made, the record of its recent claims.
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let inner = &self.inner;
        RedisStore::under_prefix(
            inner.connection.clone(),
            prefix.into(),
            inner.replicas,
            inner.first_look.anew(),
            inner.set_ifeq,
        )
    }

    /// A handle on `connection` writing under `prefix`, with what belongs to a prefix of its
    /// own: tokens from the prefix's counter (a block of another's could be smaller than
    /// tokens its keys had), and the claims it made remembered apart (two prefixes can hand
    /// out the same token for the same key).
    fn under_prefix(
        connection: Connection,
        prefix: String,
        replicas: Option<Replicas>,
        first_look: FirstLook,
        set_ifeq: bool,
    ) -> RedisStore {
        RedisStore {
            inner: std::sync::Arc::new(Inner {
                connection,
                prefix,
                replicas,
                tokens: tokens::Tokens::default(),
                claim_ids: ClaimIds::default(),
                first_look,
                set_ifeq,
            }),
        }
    }

    /// The prefix of every key the store writes.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
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
        let mut connection = self.inner.connection.clone();
        redis::cmd("EXISTS")
            .arg(self.global("tokens"))
            .query_async(&mut connection)
            .await
            .map_err(failed(None))
    }

    /// `<prefix>{<bucket>}:<key><suffix>`: a name of `key`'s, in its bucket.
    fn hash_key(&self, key: &Key, suffix: &str) -> String {
        // Built by hand: with `format!` this was a few percent of a replay's client time.
        let hex = key.hex();
        let hex = hex.as_str();
        let mut name =
            String::with_capacity(self.inner.prefix.len() + hex.len() + suffix.len() + 8);
        name.push_str(&self.inner.prefix);
        name.push('{');
        name.push_str(layout::bucket_of(hex));
        name.push_str("}:");
        name.push_str(hex);
        name.push_str(suffix);
        name
    }

    /// `<prefix>{<bucket>}:sagas`: the bucket's index of running sagas.
    fn saga_index(&self, bucket: &str) -> String {
        format!("{}{{{bucket}}}:sagas", self.inner.prefix)
    }

    /// The claim of [`Store::claim`], reading a result's expiry if `expiry` (see
    /// [`Store::claim_without_expiry`]).
    //
    // Its future is part of the claim's, boxed on every call (`async_trait`), and that size
    // decides how: the allocator serves a small block from the thread's own cache (glibc: up
    // to 1032 bytes), a larger one from an arena under a lock that the runtime's workers
    // contend for (allocating and freeing were a quarter of a replay's client samples at 64
    // callers, much of it waiting on those locks: BENCHMARKS.md). So the steps of a replay
    // and of a fresh claim are awaited inline, and the rare ones (the script, the replicas'
    // `WAIT`, a new block of tokens, a late claim's new token) are boxed apart.
    async fn claim_reading_expiry(
        &self,
        request: &ClaimRequest<'_>,
        expiry: bool,
    ) -> Result<Claim, Error> {
        let key = request.key;
        let looked = if self.inner.first_look.write_first() {
            Looked::NoRecord
        } else {
            self.claim_by_reading(request, expiry).await?
        };
        let to_change = match looked {
            Looked::Answered(claim) => {
                self.inner.first_look.found_record();
                return Ok(claim);
            }
            Looked::ToChange => true,
            Looked::NoRecord => false,
        };
        // Drawn only for a claim that may write: a replay read first has returned.
        let claim_id = self.inner.claim_ids.draw();
        let (claim, written) = if to_change {
            self.inner.first_look.found_record();
            (
                Box::pin(self.claim_by_script(request, claim_id)).await?,
                None,
            )
        } else {
            match self.claim_natively(request, claim_id, expiry).await? {
                Some((claim, written)) => {
                    if written.is_some() {
                        self.inner.first_look.found_none();
                    } else {
                        self.inner.first_look.found_record();
                    }
                    (claim, written)
                }
                None => (
                    Box::pin(self.claim_by_script(request, claim_id)).await?,
                    None,
                ),
            }
        };
        if let Claim::Acquired { token, .. } = claim {
            self.inner.claim_ids.remember(key, token, claim_id, written);
            if self.inner.replicas.is_some() {
                Box::pin(self.replicated_claim(key, token)).await?;
            }
        }
        Ok(claim)
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

    /// `<prefix>{<bucket>}:<key>:log`: a saga's closed log, the step writes of its owners
    /// before the one in progress (`close_log` in `scripts/record.lua`).
    fn closed_log(&self, key: &Key) -> String {
        self.hash_key(key, CLOSED_LOG)
    }

    fn global(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        key: Option<&Key>,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let mut connection = self.inner.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(failed(key))
    }

    /// Runs `script` on `key`'s keys and arguments as `fill` gives them, then the list of step
    /// writes of the owner it expects as its last key and that owner's token and claim id as
    /// its last arguments: none at first; when the script answers with the record's owner
    /// (`step_log.rs`), it is sent again naming that one. `decode` reads its answer, `what`
    /// names it in an error.
    async fn run_naming_the_owner<T>(
        &self,
        key: &Key,
        script: &redis::Script,
        fill: impl Fn(&mut redis::ScriptInvocation<'_>),
        decode: impl Fn(Value) -> Result<Answer<T>, String>,
        what: &'static str,
    ) -> Result<T, Error> {
        let mut owner = (0, "0".to_owned());
        for _ in 0..OWNER_CHANGES {
            let mut invocation = script.prepare_invoke();
            fill(&mut invocation);
            invocation
                .key(self.owner_log(key, owner.0, &owner.1))
                .arg(owner.0)
                .arg(&owner.1);
            let answer: Value = self.run(Some(key), &invocation).await?;
            match decode(answer).map_err(corrupt(key, what))? {
                Answer::Done(done) => return Ok(done),
                Answer::Owner(token, claim_id) => owner = (token, claim_id),
            }
        }
        Err(Error::store(
            "redis",
            Some(key),
            format!("the owner of the record changed {OWNER_CHANGES} times while it was read"),
        ))
    }

    /// `Store::complete` by `scripts/complete.lua`: for a claim the handle did not make
    /// natively, or a TTL the record keeps itself.
    async fn complete_by_script(
        &self,
        key: &Key,
        token: FencingToken,
        kind: &str,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let (head, steps) = self.saga_keys(key);
        let claim_id = self.claim_id_of(key, token).await?;
        let mut invocation = COMPLETE.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(head)
            .key(steps)
            .key(self.closed_log(key))
            .key(self.owner_log(key, token, &claim_id))
            .arg(token)
            .arg(kind)
            .arg(bytes)
            .arg(millis(ttl))
            .arg(claim_id);
        let held: i64 = self
            .run_acknowledged(key, &invocation, "the result", |held| *held == 1)
            .await?;
        self.inner.claim_ids.forget(key, token);
        Ok(ownership(held))
    }

    /// `Store::release` by `scripts/release.lua`: 1 if the token held the claim.
    async fn release_by_script(&self, key: &Key, token: FencingToken) -> Result<i64, Error> {
        let claim_id = self.claim_id_of(key, token).await?;
        let mut invocation = RELEASE.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.closed_log(key))
            .key(self.owner_log(key, token, &claim_id))
            .arg(token)
            .arg(claim_id);
        self.run(Some(key), &invocation).await
    }

    /// What a purge does on Redis, which deletes expired records itself: it deletes the
    /// expiry index an older idem kept (`<prefix>expiry`), if it is still there, and has no
    /// record left to delete or count.
    async fn purge(&self) -> Result<u64, Error> {
        let mut connection = self.inner.connection.clone();
        redis::cmd("UNLINK")
            .arg(self.global("expiry"))
            .query_async::<i64>(&mut connection)
            .await
            .map_err(failed(None))?;
        Ok(0)
    }
}

/// This machine's clock, in milliseconds since the epoch: when a native claim was made (the
/// record's `created`, for operators), and the moment a record was read, for the times an
/// operator is shown.
fn wall_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
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
        self.claim_reading_expiry(request, true).await
    }

    /// A replay read first is one `GET` here: its result's expiry is not read.
    async fn claim_without_expiry(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.claim_reading_expiry(request, false).await
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
        if let Some(held) = self
            .complete_in_place(key, token, kind, &bytes, ttl)
            .await?
        {
            self.inner.claim_ids.forget(key, token);
            return Ok(held);
        }
        // Boxed: the script is rare (a claim not made natively, a short TTL), and inline it
        // would make every completion's future larger (see `claim_reading_expiry`).
        Box::pin(self.complete_by_script(key, token, kind, bytes, ttl)).await
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        // Not tried again by the caller, whatever the answer: done with the claim. Boxed: an
        // error's path, which would make the future of every call that may release larger.
        let held = Box::pin(self.release_by_script(key, token)).await;
        self.inner.claim_ids.forget(key, token);
        Ok(ownership(held?))
    }

    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let held = self.heartbeat(key, token, Duration::ZERO).await;
        // The owner writes no more, whatever the answer: whoever settles the key claims it
        // afresh.
        self.inner.claim_ids.forget(key, token);
        held
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
            .arg(token)
            .arg(millis(lease))
            .arg(self.inner.claim_ids.of(key, token));
        let held = self
            .run_acknowledged(key, &invocation, "the extended lease", |held| *held == 1)
            .await?;
        Ok(ownership(held))
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        let mut connection = self.inner.connection.clone();
        let record_key = self.record_key(key);
        let (value, expiry, (seconds, micros)): (Value, Value, (i64, i64)) = redis::pipe()
            .cmd("GET")
            .arg(&record_key)
            .cmd("PEXPIRETIME")
            .arg(&record_key)
            .cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        let now_ms = seconds * 1000 + micros / 1000;
        record(key, value, expiry, now_ms).map_err(corrupt(key, "a record"))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.purge().await
    }
}

#[async_trait]
impl SagaStore for RedisStore {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        let claim_id = self.claim_id_of(saga, token).await?;
        if let SagaWrite::Step(step) = write {
            if let Some(held) = self.append_step(saga, token, &claim_id, step).await? {
                return Ok(held);
            }
        }
        let mut invocation = WRITE_SAGA.prepare_invoke();
        invocation
            .key(self.record_key(saga))
            .key(self.saga_keys(saga).0)
            .key(self.saga_index(&bucket(saga)))
            .key(self.owner_log(saga, token, &claim_id))
            .arg(token)
            .arg(id)
            .arg(saga.to_string())
            .arg(claim_id);
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
        // The script makes a saga's record last on its first write: the record the native
        // claim wrote is no longer there to compare the result with (`in_place.rs`).
        self.inner.claim_ids.changed(saga, token);
        let held = self
            .run_acknowledged(saga, &invocation, "the saga log entry", |held| *held == 1)
            .await?;
        Ok(ownership(held))
    }

    /// One read by `scripts/read_saga.lua`: the head, the steps, the closed log and the
    /// owner's list of step writes. The owner is known only once the record is read: the
    /// script answers with it when it is not the one named, and is sent again naming it.
    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        let (head, steps) = self.saga_keys(saga);
        let fill = |invocation: &mut redis::ScriptInvocation<'_>| {
            invocation
                .key(self.record_key(saga))
                .key(&head)
                .key(&steps)
                .key(self.closed_log(saga));
        };
        let (head, steps, entries) = self
            .run_naming_the_owner(saga, &READ_SAGA, fill, read_answer, SAGA_LOGS.what)
            .await?;
        saga_log(saga, head, steps, entries).map_err(corrupt(saga, SAGA_LOGS.what))
    }

    /// The sagas whose owner died, from the index of running sagas of every bucket: one
    /// `ZRANGE` per bucket, all sent at once (on one server they share the connection's
    /// pipeline; on a cluster each goes to its bucket's master), then one read per saga
    /// found, with the clock of the saga's own master.
    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        let indexes = futures_util::future::try_join_all(layout::all_buckets().map(|bucket| {
            let mut connection = self.inner.connection.clone();
            let index = self.saga_index(&bucket);
            async move {
                redis::cmd("ZRANGE")
                    .arg(index)
                    .arg(0)
                    .arg(-1)
                    .query_async::<Vec<String>>(&mut connection)
                    .await
                    .map_err(failed(None))
            }
        }))
        .await?;
        let mut stale = Vec::new();
        for member in indexes.into_iter().flatten() {
            if stale.len() >= limit {
                break;
            }
            let Ok(key) = member.parse::<Key>() else {
                continue;
            };
            stale.extend(self.stale_saga(&key).await?);
        }
        Ok(stale)
    }
}

impl RedisStore {
    /// The saga of `key`, if its owner died: its record in progress with its lease run out,
    /// on the clock of the master that holds it (the `TIME` goes in the same pipeline, to the
    /// same node).
    async fn stale_saga(&self, key: &Key) -> Result<Option<StaleSaga>, Error> {
        let (head, _) = self.saga_keys(key);
        let record_key = self.record_key(key);
        let mut connection = self.inner.connection.clone();
        let (value, expiry, id, (seconds, micros)): (
            Option<Vec<u8>>,
            i64,
            Option<String>,
            (i64, i64),
        ) = redis::pipe()
            .cmd("GET")
            .arg(&record_key)
            .cmd("PEXPIRETIME")
            .arg(&record_key)
            .cmd("HGET")
            .arg(head)
            .arg("id")
            .cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        let now = seconds * 1000 + micros / 1000;
        let Some(value) = value else { return Ok(None) };
        let stored = Stored::decode_owned(value).map_err(corrupt(key, "a record"))?;
        let dead_owner = stored.state == State::Is(Status::InProgress)
            && stored.ends_at_ms(expiry).is_some_and(|at| at <= now);
        Ok(match (dead_owner, id) {
            (true, Some(id)) => Some(StaleSaga::new(*key, id, stored.fingerprint)),
            _ => None,
        })
    }
}

#[async_trait]
impl Inspect for RedisStore {
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
        self.count_records().await
    }

    /// None: Redis deletes expired records itself, when they expire (results with the logs of
    /// the sagas they ended at their TTL, dead claims at their lease end plus TTL), so none is
    /// left for a purge.
    async fn count_expired(&self) -> Result<u64, Error> {
        Ok(0)
    }

    /// As `purge_expired`: nothing is left to delete (Redis deleted the expired records when
    /// they expired), and an older idem's expiry index is deleted if it is still there.
    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        let _ = limit;
        self.purge().await
    }

    /// The saga logs that `query` selects, the latest status change first, with their steps.
    /// As `list_records` does, this walks every saga log of the store with `SCAN` (reading
    /// their heads, whose time is the last status write: a step's write goes to its owner's
    /// list, `step_log.rs`), then reads the `limit` newest whole, as `read_saga` does, 64 at
    /// a time.
    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        self.scan_sagas(query).await
    }

    /// Deletes a result recorded under `token` (not a saga's): one script.
    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        let mut invocation = FORGET.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.saga_keys(key).0)
            .arg(token);
        Ok(ownership(self.run(Some(key), &invocation).await?))
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
