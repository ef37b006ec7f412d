//! What the store does so that the writes it acknowledged stay: the check, on `connect`, that
//! the server does not evict idem's keys, and the `WAIT` for replicas after the writes a
//! failover must not lose. See [Durability](super::RedisStore#durability) for why.

use std::time::Duration;

use redis::Value;

use super::connection::{Connection, Master};
use super::{failed, RedisStore};
use crate::key::Key;
use crate::store::{FencingToken, Store};
use crate::Error;

/// What too few replicas mean for a write the store has made: it may not survive.
pub(super) const LOSABLE: &str = "a failover now could lose it";

/// A write whose answer waits for the replicas: a script, or one command.
#[derive(Clone, Copy)]
pub(super) enum Write<'a> {
    Script(&'a redis::ScriptInvocation<'a>),
    Command(&'a redis::Cmd),
}

/// How many replicas must have a write before the store acknowledges it, how long it waits
/// for them, and whether in their memory (`WAIT count timeout`) or on their disk (`WAITAOF 0
/// count timeout`: in their append-only file).
#[derive(Debug, Clone, Copy)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout: Duration,
    pub(super) on_disk: bool,
}

impl Replicas {
    /// `WAIT count timeout`, or `WAITAOF 0 count timeout` on disk.
    pub(super) fn wait(self) -> redis::Cmd {
        let mut wait = redis::cmd(self.command());
        if self.on_disk {
            wait.arg(0);
        }
        wait.arg(self.count).arg(self.timeout_ms());
        wait
    }

    fn command(self) -> &'static str {
        if self.on_disk {
            "WAITAOF"
        } else {
            "WAIT"
        }
    }

    /// How many replicas acknowledged, as `WAIT` (a number) or `WAITAOF` (`[local,
    /// replicas]`) answered.
    fn acknowledged(self, answer: &redis::Value) -> Result<i64, String> {
        match (self.on_disk, answer) {
            (false, redis::Value::Int(replicas)) => Ok(*replicas),
            (true, redis::Value::Array(counts)) => match counts.as_slice() {
                [_, redis::Value::Int(replicas)] => Ok(*replicas),
                _ => Err(format!("{} answered {answer:?}", self.command())),
            },
            _ => Err(format!("{} answered {answer:?}", self.command())),
        }
    }

    /// The timeout of `WAIT`, in milliseconds: at least 1, since `WAIT n 0` waits forever.
    fn timeout_ms(self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// An error unless `acknowledged` replicas are enough for `what` (of `key`); `so` says
    /// what follows for the caller.
    pub(super) fn check(
        self,
        answer: &redis::Value,
        key: Option<&Key>,
        what: &str,
        so: &str,
    ) -> Result<(), Error> {
        let acknowledged = self
            .acknowledged(answer)
            .map_err(|problem| Error::store("redis", key, problem))?;
        if acknowledged >= i64::from(self.count) {
            return Ok(());
        }
        let problem = format!(
            "{what} is on the primary, but only {acknowledged} of the {} replicas asked for \
             acknowledged it within {:?} ({}): {so}",
            self.count,
            self.timeout,
            self.command()
        );
        Err(Error::store("redis", key, problem))
    }

    /// `Ok` if the server knows the command this waits with (`WAITAOF` is Redis 7.2 and
    /// later, and Valkey).
    pub(super) async fn supported(self, connection: &mut Connection) -> Result<(), Error> {
        if !self.on_disk {
            return Ok(());
        }
        let info: Vec<redis::Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg("WAITAOF")
            .query_async(connection)
            .await
            .map_err(failed(None))?;
        if matches!(info.first(), Some(redis::Value::Array(_))) {
            return Ok(());
        }
        let problem = "waiting for replicas on disk (WAITAOF) needs Redis 7.2 or later, or \
                       Valkey; this server does not know WAITAOF: wait for them in memory \
                       (wait_for_replicas) instead";
        Err(Error::store("redis", None, problem))
    }
}

/// What the server's memory settings let it do to idem's keys.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MemoryPolicy {
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

/// Reads `maxmemory-policy` and `maxmemory` of `master` (two `CONFIG GET`s in one round trip:
/// asking for both in one is Redis 7 only).
pub(super) async fn memory_policy(
    connection: &Connection,
    master: &Master,
) -> Result<MemoryPolicy, Error> {
    let mut pipe = redis::pipe();
    pipe.cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory");
    type Settings = std::collections::HashMap<String, String>;
    let answer: Result<(Settings, Settings), redis::RedisError> = connection
        .pipeline_on(master, &pipe)
        .await
        .and_then(|answers| redis::FromRedisValue::from_owned_redis_value(Value::Array(answers)));
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
         an evicted result is never replayed (a retry runs the side effect again), an \
         evicted token counter hands out fencing tokens again, and a saga whose claim is \
         evicted while its owner's list of step writes is not keeps taking that owner's \
         writes after another caller claimed it"
    }
}

impl MemoryPolicy {
    /// `Ok` if the store may connect: the policy keeps idem's keys, or its risk is
    /// `accepted`, or it cannot be checked (warned).
    pub(super) fn allowed(self, accepted: bool) -> Result<(), Error> {
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
    /// Runs a write whose answer the store hands to its caller as done (`what`, for errors).
    /// With [`wait_for_replicas`](super::RedisStoreBuilder::wait_for_replicas) set, the script
    /// and a `WAIT` go in one round trip, and too few replicas is an error, unless `wrote` says
    /// the answer is of a write that did nothing (a lost token: nothing to keep).
    pub(super) async fn run_acknowledged<T: redis::FromRedisValue>(
        &self,
        key: &Key,
        invocation: &redis::ScriptInvocation<'_>,
        what: &str,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let write = Write::Script(invocation);
        self.acknowledged(Some(key), write, what, LOSABLE, wrote)
            .await
    }

    /// Sends `write`, followed by a `WAIT` for the replicas in the same round trip when they
    /// are asked for (the pipeline goes to the master of the write's key); too few of them is
    /// an error (`what` names the write, `so` what follows for the caller), unless `wrote`
    /// says the answer is of a write that did nothing.
    pub(super) async fn acknowledged<T: redis::FromRedisValue>(
        &self,
        key: Option<&Key>,
        write: Write<'_>,
        what: &str,
        so: &str,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let Some(replicas) = self.inner.replicas else {
            return match write {
                Write::Script(invocation) => self.run(key, invocation).await,
                Write::Command(command) => command
                    .query_async(&mut self.inner.connection.clone())
                    .await
                    .map_err(failed(key)),
            };
        };
        // Boxed: only with replicas asked for; inline, its round trips would make every
        // write's future larger (see `RedisStore::claim_reading_expiry`).
        Box::pin(self.replicated(replicas, key, write, what, so, wrote)).await
    }

    /// [`acknowledged`](Self::acknowledged) with replicas asked for: `write` and a `WAIT` in
    /// one pipeline.
    async fn replicated<T: redis::FromRedisValue>(
        &self,
        replicas: Replicas,
        key: Option<&Key>,
        write: Write<'_>,
        what: &str,
        so: &str,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let mut connection = self.inner.connection.clone();
        let mut pipe = redis::pipe();
        match write {
            Write::Script(invocation) => pipe.invoke_script(invocation),
            Write::Command(command) => pipe.add_command(command.clone()),
        };
        pipe.add_command(replicas.wait());
        let answer = match (pipe.query_async(&mut connection).await, write) {
            // The server lost its scripts (a restart, SCRIPT FLUSH): the script did not run;
            // load it and send the pair again.
            (Err(error), Write::Script(invocation))
                if error.kind() == redis::ErrorKind::NoScriptError =>
            {
                invocation
                    .load_async(&mut connection)
                    .await
                    .map_err(failed(key))?;
                pipe.query_async(&mut connection).await
            }
            (answer, _) => answer,
        };
        let (answer, acknowledged): (T, Value) = answer.map_err(failed(key))?;
        if wrote(&answer) {
            replicas.check(&acknowledged, key, what, so)?;
        }
        Ok(answer)
    }

    /// With replicas asked for, waits until they have every write of the connection so far
    /// (`WAIT`) on the master of `key`; `what` names the write for errors, `so` what follows
    /// from too few. The `WAIT` follows a read of the key's record in one pipeline, which a
    /// cluster sends to that key's master: a `WAIT` alone would go to every master.
    async fn wait_for_replicas(&self, key: &Key, what: &str, so: &str) -> Result<(), Error> {
        let Some(replicas) = self.inner.replicas else {
            return Ok(());
        };
        let mut connection = self.inner.connection.clone();
        let (acknowledged,): (redis::Value,) = redis::pipe()
            .cmd("PTTL")
            .arg(self.record_key(key))
            .ignore()
            .add_command(replicas.wait())
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        replicas.check(&acknowledged, Some(key), what, so)
    }

    /// With replicas asked for, waits for them to have the claim that handed out `token`.
    /// The claim is a second round trip, unlike the other writes: most claims of a retried
    /// call are replays that wrote nothing, and they should not wait for replicas (a `WAIT`
    /// holds up the whole multiplexed connection). Too few replicas: the claim is given back
    /// (best effort) so that the key is not held until its lease runs out, and the caller
    /// gets the error before the body runs.
    pub(super) async fn replicated_claim(
        &self,
        key: &Key,
        token: FencingToken,
    ) -> Result<(), Error> {
        let so = "the claim is given back, and the body does not run";
        let Err(error) = self.wait_for_replicas(key, "the claim", so).await else {
            return Ok(());
        };
        if let Err(release) = Store::release(self, key, token).await {
            tracing::warn!(
                target: "idem",
                key = %key,
                error = %release,
                "giving back a claim the replicas did not acknowledge failed; it is held until \
                 its lease runs out"
            );
        }
        Err(error)
    }
}
