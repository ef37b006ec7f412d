//! Redis rows, all on one `redis-server` started for the run: idem's `RedisStore` (and the
//! same behind a `ReplayCache`, for replays), `idempotent` 0.3's `ValkeyStore`, and the raw
//! commands a claim needs, sent through redis 0.32's `ConnectionManager` with the settings
//! idem's store gives its own (timeouts of 2 s to connect and 5 s per response). The same raw
//! commands run on a cluster too (`redis_cluster.rs`).
//!
//! Raw, fresh: `SET k in_progress NX PX 10000`, the body, `SET k <result JSON> XX PX 2000`
//! (2 round trips). Raw, replay: `GET k` and decoding the JSON (1 round trip). Fresh entries
//! are kept 2 s by all three, so that expiry works as it would in production.
//!
//! Each round starts on an empty database (`FLUSHDB`) with reset statistics (`CONFIG
//! RESETSTAT`), and ends by reading `INFO commandstats`: the note of a row says which
//! commands the server ran per call and the time it spent in them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use idem::store::{RedisStore, ReplayCache, Store};
use idem_runtime::conformance::servers::RedisServer;
use idempotent::store::valkey::ValkeyStore;
use redis::aio::{ConnectionLike, ConnectionManager};

use super::{once_per_call, Mode, RoundResult, System};
use crate::call::{body, IdemCall, IdemFn, Receipt, AMOUNT, CUSTOMER, REPLAY_TTL};
use crate::measure::{next_number, Call, Timing};
use crate::peers::idempotent::IdempotentCall;

/// How long fresh entries are kept, by every system.
const FRESH_TTL: Duration = Duration::from_secs(2);
/// The raw claim's lease (idem's default lease).
const LEASE_MS: u64 = 10_000;

/// The clients of the Redis rows, made once for the run.
pub struct RedisEnv {
    pub port: u16,
    idem: Arc<dyn Store>,
    replay_cache: Arc<dyn Store>,
    idempotent: Arc<ValkeyStore>,
    raw: ConnectionManager,
    admin: ConnectionManager,
}

impl RedisEnv {
    pub async fn connect(server: &RedisServer) -> Result<Self, String> {
        let url = server.url();
        let idem = RedisStore::connect(&url)
            .await
            .map_err(|e| format!("idem RedisStore: {e}"))?;
        let cached = RedisStore::connect(&url)
            .await
            .map_err(|e| format!("idem RedisStore: {e}"))?;
        let replay_cache = ReplayCache::new(cached)
            .max_entries(10_000)
            .max_age(Duration::from_secs(30));
        let client = redis1::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let idempotent = ValkeyStore::new(client)
            .await
            .map_err(|e| format!("idempotent ValkeyStore: {e}"))?;
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_factor(2)
            .set_max_delay(200)
            .set_number_of_retries(1);
        let raw = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| e.to_string())?;
        let admin = client
            .get_connection_manager()
            .await
            .map_err(|e| e.to_string())?;
        Ok(RedisEnv {
            port: server.port(),
            idem: Arc::new(idem),
            replay_cache: Arc::new(replay_cache),
            idempotent: Arc::new(idempotent),
            raw,
            admin,
        })
    }

    /// The idem store the saga rows run on.
    pub fn idem_store(&self) -> Arc<dyn Store> {
        self.idem.clone()
    }

    /// A connection for the raw writes of the saga rows.
    pub fn raw_connection(&self) -> ConnectionManager {
        self.raw.clone()
    }

    /// Sends an administrative command (`FLUSHDB`, `CONFIG RESETSTAT`, `INFO …`).
    pub async fn admin(&self, args: &[&str]) -> Result<redis::Value, String> {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query_async(&mut self.admin.clone())
            .await
            .map_err(|e| format!("{}: {e}", args.join(" ")))
    }

    /// An empty database and reset statistics, before a round.
    pub async fn reset(&self) -> Result<(), String> {
        self.admin(&["FLUSHDB"]).await?;
        self.admin(&["CONFIG", "RESETSTAT"]).await?;
        Ok(())
    }

    /// The two commands the server spent most time in since the last reset, per call of the
    /// round: how many of each, and the time inside them.
    pub async fn server_note(&self, calls: u64) -> Result<String, String> {
        let info = info_text(self.admin(&["INFO", "commandstats"]).await?)?;
        Ok(format!(
            "server/call: {}",
            per_call(&command_stats([info.as_str()]), calls)
        ))
    }
}

/// The text of an answer to `INFO`.
pub fn info_text(answer: redis::Value) -> Result<String, String> {
    match answer {
        redis::Value::BulkString(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        redis::Value::VerbatimString { text, .. } => Ok(text),
        other => Err(format!("INFO answered {other:?}")),
    }
}

/// The commands in answers to `INFO commandstats` (one per server), summed over the answers,
/// most time first: `(name, calls, µs)`. Commands that are not the rows' are left out.
///
/// ```text
/// cmdstat_evalsha:calls=10,usec=80,usec_per_call=8.00,…   ─┐
/// cmdstat_evalsha:calls=12,usec=90,…                       ─┴→ ("evalsha", 22, 170)
/// ```
pub fn command_stats<'a>(infos: impl IntoIterator<Item = &'a str>) -> Vec<(String, u64, u64)> {
    let mut commands: Vec<(String, u64, u64)> = Vec::new();
    for line in infos.into_iter().flat_map(str::lines) {
        let Some((name, stats)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (Some(count), Some(usec)) = (field("calls"), field("usec")) else {
            continue;
        };
        // The benchmark's own commands, the cluster client's and the replicas' (`REPLCONF
        // ACK`, once a second).
        let others = [
            "config", "info", "flushdb", "flushall", "cluster", "replconf",
        ];
        if others.iter().any(|other| name.starts_with(other)) {
            continue;
        }
        match commands.iter_mut().find(|c| c.0 == name) {
            Some(command) => {
                command.1 += count;
                command.2 += usec;
            }
            None => commands.push((name.to_owned(), count, usec)),
        }
    }
    commands.sort_by_key(|c| std::cmp::Reverse(c.2));
    commands
}

/// `evalsha×2.00 14.1µs, incrby×0.00 0.0µs`: the two commands of most time, per call.
pub fn per_call(commands: &[(String, u64, u64)], calls: u64) -> String {
    let calls = calls.max(1) as f64;
    let parts: Vec<String> = commands
        .iter()
        .take(2)
        .map(|(name, count, usec)| {
            format!(
                "{name}×{:.2} {:.1}µs",
                *count as f64 / calls,
                *usec as f64 / calls
            )
        })
        .collect();
    parts.join(", ")
}

/// One round of a Redis row.
pub async fn round(
    env: &RedisEnv,
    system: System,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    env.reset().await?;
    let bodies = Arc::new(AtomicU64::new(0));
    let replay = (mode == Mode::Replay).then(next_number);
    let mut result = match system {
        System::IdemRedis | System::IdemRedisReplayCache => {
            let store = if system == System::IdemRedis {
                env.idem.clone()
            } else {
                env.replay_cache.clone()
            };
            let call = IdemCall::new(store, &bodies, IdemFn::FreshRedis, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::IdempotentRedis => {
            let call = IdempotentCall::new(env.idempotent.clone(), FRESH_TTL, &bodies, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::RawRedis => {
            let connection = env.raw.clone();
            raw_commands(connection, &bodies, mode, replay, callers, timing).await?
        }
        other => return Err(format!("{other:?} is not a Redis row")),
    };
    result.extra = Some(env.server_note(result.measured.calls).await?);
    Ok(result)
}

/// One round of the raw commands on `connection` (one server, or a cluster): a fresh row
/// claims a new key each call; a replay row (`replay`: its key's number) reads back the one
/// key recorded here before the round.
pub async fn raw_commands<C>(
    connection: C,
    bodies: &Arc<AtomicU64>,
    mode: Mode,
    replay: Option<u64>,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let raw = Arc::new(RawRedis {
        connection,
        bodies: bodies.clone(),
        replay,
    });
    if let Some(order) = replay {
        raw.fresh(order, REPLAY_TTL).await?;
    }
    Ok(once_per_call(raw, bodies, mode, callers, timing).await)
}

/// The raw commands, on a `ConnectionManager` or a cluster's connection.
struct RawRedis<C> {
    connection: C,
    bodies: Arc<AtomicU64>,
    replay: Option<u64>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RawRedis<C> {
    /// `SET NX PX`, the body, `SET XX PX`.
    async fn fresh(&self, order: u64, ttl: Duration) -> Result<(), String> {
        let key = format!("raw:{order}");
        let mut connection = self.connection.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg("in_progress")
            .arg("NX")
            .arg("PX")
            .arg(LEASE_MS)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("SET NX: {e}"))?;
        if claimed.is_none() {
            return Err(format!("raw Redis: key {key} was taken"));
        }
        let receipt = body(&self.bodies, CUSTOMER, order, AMOUNT);
        let result = serde_json::to_vec(&receipt).map_err(|e| e.to_string())?;
        let recorded: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(result)
            .arg("XX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("SET XX: {e}"))?;
        recorded
            .map(|_| ())
            .ok_or_else(|| format!("raw Redis: key {key} was not recorded"))
    }

    /// `GET` and decoding.
    async fn replay(&self, order: u64) -> Result<(), String> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("raw:{order}"))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| format!("GET: {e}"))?;
        let bytes = bytes.ok_or("raw Redis: the result is gone")?;
        let receipt: Receipt = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if receipt.is_for(order) {
            Ok(())
        } else {
            Err(format!("raw Redis: a wrong answer {receipt:?}"))
        }
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Call for RawRedis<C> {
    async fn call(&self, n: u64) -> Result<(), String> {
        match self.replay {
            None => self.fresh(n, FRESH_TTL).await,
            Some(order) => self.replay(order).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{command_stats, per_call};

    #[test]
    fn commandstats_of_several_masters_are_summed() {
        let a = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=80,usec_per_call=8.00,rejected_calls=0,failed_calls=0\r\ncmdstat_flushall:calls=1,usec=500\r\n";
        let b = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=90,usec_per_call=7.50\r\ncmdstat_incrby:calls=1,usec=2\r\ncmdstat_cluster|slots:calls=3,usec=300\r\ncmdstat_replconf:calls=2,usec=1\r\n";
        let commands = command_stats([a, b]);
        assert_eq!(
            commands,
            vec![("evalsha".into(), 22, 170), ("incrby".into(), 1, 2)]
        );
        assert_eq!(
            per_call(&commands, 10),
            "evalsha×2.20 17.0µs, incrby×0.10 0.2µs"
        );
    }
}
