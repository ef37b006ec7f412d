//! `RedisStore`: records on a Redis server, for agents on many machines.
//!
//! Every write is one Lua script, run atomically by the server, that checks the fencing token
//! and reads the server's clock (`TIME`): the clocks of the callers never matter.
//!
//! ```text
//! <prefix>{<key>}:r       hash: the record (status, token, fingerprint, outcome, times, action)
//! <prefix>{<key>}:s       hash: a saga's log head (id, status, error, updated)
//! <prefix>{<key>}:steps   hash: a saga's steps, fields "<index>:<field>"
//! <prefix>tokens          counter: the fencing tokens
//! <prefix>expiry          sorted set: completed records by expiry (for the purge)
//! <prefix>sagas           sorted set: sagas running or being undone (for recovery)
//! ```
//!
//! The `{<key>}` hash tag keeps a record and its saga log in one cluster slot. The token
//! counter and the two indexes are single keys, so the store runs on one Redis server (with
//! replicas), not on Redis Cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::key::{Fingerprint, Key};
use crate::store::{
    millis, Claim, ClaimRequest, FencingToken, Ownership, Record, SagaLog, SagaStatus, SagaWrite,
    StaleSaga, Status, StepRecord, StepState, Store, StoredOutcome,
};
use crate::Error;

/// After how many recorded results (of one store handle) the expiry index is trimmed of the
/// records that expired (the records themselves expire natively, on time).
const PURGE_EVERY: u64 = 64;

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
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
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

impl RedisStore {
    /// The default prefix of every key the store writes.
    pub const DEFAULT_PREFIX: &'static str = "idem:";

    /// Connects to the server at `url` (`redis://host:port/db`), with the prefix `idem:`.
    /// Operations time out after 5 s; a dropped connection is re-made by the next call.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(failed(None))?;
        // A call that meets a dropped connection fails fast with a store error (the caller
        // retries the call, not idem); the next one reconnects. The client's own reconnect
        // backoff multiplies its delay by `factor` each time, from one second: kept short.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_factor(2)
            .set_max_delay(200)
            .set_number_of_retries(1);
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(failed(None))?;
        Ok(RedisStore {
            connection,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            recorded: Arc::default(),
        })
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

    fn record_key(&self, key: &Key) -> String {
        format!("{}{{{key}}}:r", self.prefix)
    }

    fn saga_keys(&self, key: &Key) -> (String, String) {
        (
            format!("{}{{{key}}}:s", self.prefix),
            format!("{}{{{key}}}:steps", self.prefix),
        )
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

    /// Trims the expiry index of the results whose TTL ran out (Redis expired the records
    /// and their saga logs at that moment), and says how many there were.
    async fn purge(&self) -> Result<u64, Error> {
        let mut invocation = PURGE.prepare_invoke();
        invocation.key(self.global("expiry"));
        self.run(None, &invocation).await
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

/// The claim rule of `store::rules`, in the server. Returns
/// `{"acquired", token, resumed}`, `{"completed", fingerprint, kind, bytes}`,
/// `{"in_progress", fingerprint, token, lease_remaining_ms}` or `{"review", fingerprint}`.
static CLAIM: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'st', 'tk', 'fp', 'oc', 'rs', 'ex')
local st, ex = r[1], tonumber(r[6])
local expired = ex ~= nil and ex <= now
local function acquire(resumed)
  local token = redis.call('INCR', KEYS[2])
  if resumed then
    redis.call('HSET', KEYS[1], 'tk', token, 'ex', now + lease)
  else
    if st then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[3], ARGV[5])
    end
    redis.call('HSET', KEYS[1], 'st', 'in_progress', 'tk', token, 'fp', ARGV[1],
      'ac', ARGV[2], 'ca', now, 'ex', now + lease)
  end
  return {'acquired', token, resumed and 1 or 0}
end
if not st then return acquire(false) end
if st == 'completed' then
  if expired then return acquire(false) end
  return {'completed', r[3], r[4], r[5]}
end
if st == 'needs_review' then return {'review', r[3]} end
if not expired then return {'in_progress', r[3], tonumber(r[2]), ex - now} end
if r[3] ~= ARGV[1] then return {'in_progress', r[3], tonumber(r[2]), 0} end
if ARGV[4] == 'takeover' then return acquire(true) end
redis.call('HSET', KEYS[1], 'st', 'needs_review')
redis.call('HDEL', KEYS[1], 'ex')
return {'review', r[3]}
",
    )
});

/// Records the outcome if the token still owns the record (in progress or parked for
/// review), or holds it if it completed it already. Redis expires the record, and the saga
/// log with it, when its TTL runs out; the expiry index keeps the count for the purge.
static COMPLETE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] then return 0 end
if r[1] == 'completed' then return 1 end
if r[1] ~= 'in_progress' and r[1] ~= 'needs_review' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ex = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'st', 'completed', 'oc', ARGV[2], 'rs', ARGV[3], 'ex', ex)
redis.call('PEXPIREAT', KEYS[1], ex)
redis.call('PEXPIREAT', KEYS[3], ex)
redis.call('PEXPIREAT', KEYS[4], ex)
redis.call('ZADD', KEYS[2], ex, ARGV[5])
return 1
",
    )
});

/// Deletes the record if the token still owns it (in progress or parked for review).
static RELEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] or (r[1] ~= 'in_progress' and r[1] ~= 'needs_review') then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Extends the lease if the token still owns the record, in progress.
static HEARTBEAT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] or r[1] ~= 'in_progress' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'ex', now + tonumber(ARGV[2]))
return 1
",
    )
});

/// Removes from the expiry index the results whose TTL ran out; returns how many.
static PURGE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
",
    )
});

/// One write to a saga's log, if the token still owns the saga's record (in progress).
/// ARGV: token, id, member, then `status <status> <has_error> <error>` or
/// `step <index> <field> <value> …`.
static WRITE_SAGA: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] or r[1] ~= 'in_progress' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'id', ARGV[2], 'status', 'running')
end
redis.call('HSET', KEYS[2], 'updated', now)
if ARGV[4] == 'status' then
  redis.call('HSET', KEYS[2], 'status', ARGV[5])
  if ARGV[6] == '1' then redis.call('HSET', KEYS[2], 'error', ARGV[7])
  else redis.call('HDEL', KEYS[2], 'error') end
else
  local index = ARGV[5]
  redis.call('HDEL', KEYS[3], index .. ':output', index .. ':error')
  for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[3], index .. ':' .. ARGV[i], ARGV[i + 1]) end
end
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'running' or status == 'compensating' then
  redis.call('ZADD', KEYS[4], 0, ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
end
return 1
",
    )
});

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

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let key = request.key;
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(self.record_key(key))
            .key(self.global("tokens"))
            .key(self.global("expiry"))
            .arg(&request.fingerprint.as_bytes()[..])
            .arg(request.action)
            .arg(millis(request.lease))
            .arg(match request.on_stale {
                crate::action::OnStale::TakeOver => "takeover",
                crate::action::OnStale::Review => "review",
            })
            .arg(key.to_string());
        let answer: Value = self.run(Some(key), &invocation).await?;
        claim_answer(answer).map_err(corrupt(key, "a record"))
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
        let held: i64 = self.run(Some(key), &invocation).await?;
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
        invocation.key(self.record_key(key)).arg(token);
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
            .arg(token)
            .arg(millis(lease));
        Ok(ownership(self.run(Some(key), &invocation).await?))
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
        Ok(ownership(self.run(Some(saga), &invocation).await?))
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
        let read = || -> Result<Option<SagaLog>, String> {
            let head = fields(head)?;
            if head.is_empty() {
                return Ok(None);
            }
            let mut id = None;
            let (mut status, mut error, mut updated) = (None, None, 0);
            for (name, value) in head {
                let value = String::from_utf8(value).map_err(|e| e.to_string())?;
                match name.as_str() {
                    "id" => id = Some(value),
                    "status" => status = SagaStatus::parse(&value),
                    "error" => error = Some(value),
                    "updated" => updated = value.parse().map_err(|_| "updated".to_owned())?,
                    _ => {}
                }
            }
            Ok(Some(SagaLog::new(
                *saga,
                id.ok_or("no id")?,
                status.ok_or("unknown status")?,
                error,
                steps(fields(steps_hash)?)?,
                wall(updated),
            )))
        };
        read().map_err(corrupt(saga, "a saga log"))
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
}

fn ownership(held: i64) -> Ownership {
    if held == 1 {
        Ownership::Held
    } else {
        Ownership::Lost
    }
}
