//! Redis Cluster rows, on a cluster of three masters with a replica each started for the run
//! (idem's conformance cluster: six `redis-server`s on loopback ports, formed by `redis-cli
//! --cluster create`): idem's `RedisStore` on `redis+cluster://…`, and beside it the raw
//! commands of the single-server rows (`redis.rs`) sent through redis 0.32's cluster client
//! with the settings idem's store gives its own (2 s to connect, 5 s per response, 6 retries
//! from 50 ms to 1 s apart).
//!
//! Both send each command to the master of its key's slot: idem's keys spread over its
//! 4,096 buckets, the raw keys `raw:<n>` over the slots; each call is one key, on one master.
//! The calls and their TTLs are those of the single-server rows.
//!
//! Each round starts with `FLUSHALL` and `CONFIG RESETSTAT` on every master (the replicas
//! follow the flush), and ends by reading `INFO commandstats` from every master: the note of
//! a row says which commands the masters ran per call, summed over them, and the time they
//! spent in them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use idem::store::{RedisStore, Store};
use idem_runtime::conformance::servers::RedisCluster;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};

use super::redis::{command_stats, info_text, per_call, raw_commands};
use super::{once_per_call, Mode, RoundResult, System};
use crate::call::{IdemCall, IdemFn};
use crate::measure::{next_number, Timing};

/// The clients of the cluster rows, made once for the run.
pub struct ClusterEnv {
    /// `redis+cluster://127.0.0.1:P1,…`, naming the six nodes.
    pub url: String,
    idem: Arc<dyn Store>,
    raw: ClusterConnection,
    admin: ClusterConnection,
}

impl ClusterEnv {
    pub async fn connect(cluster: &RedisCluster) -> Result<Self, String> {
        let url = cluster.url();
        let idem = RedisStore::connect(&url)
            .await
            .map_err(|e| format!("idem RedisStore: {e}"))?;
        let nodes: Vec<String> = cluster.nodes().iter().map(|node| node.url()).collect();
        let raw = ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .retries(6)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| format!("the cluster client: {e}"))?
            .get_async_connection()
            .await
            .map_err(|e| format!("the cluster client: {e}"))?;
        let admin = ClusterClientBuilder::new(nodes)
            .build()
            .map_err(|e| format!("the cluster client: {e}"))?
            .get_async_connection()
            .await
            .map_err(|e| format!("the cluster client: {e}"))?;
        Ok(ClusterEnv {
            url,
            idem: Arc::new(idem),
            raw,
            admin,
        })
    }

    /// Sends an administrative command to every master: with `AllSucceeded`, one of their
    /// answers once all have answered; with no policy, a map of each master's address to its
    /// answer.
    async fn on_masters(
        &self,
        args: &[&str],
        policy: Option<ResponsePolicy>,
    ) -> Result<redis::Value, String> {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        let route = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, policy));
        self.admin
            .clone()
            .route_command(&command, route)
            .await
            .map_err(|e| format!("{} on every master: {e}", args.join(" ")))
    }

    /// Empty masters and reset statistics, before a round.
    pub async fn reset(&self) -> Result<(), String> {
        self.on_masters(&["FLUSHALL"], Some(ResponsePolicy::AllSucceeded))
            .await?;
        self.on_masters(&["CONFIG", "RESETSTAT"], Some(ResponsePolicy::AllSucceeded))
            .await?;
        Ok(())
    }

    /// The two commands the masters spent most time in since the last reset, summed over
    /// the masters, per call of the round.
    pub async fn server_note(&self, calls: u64) -> Result<String, String> {
        let answers = match self.on_masters(&["INFO", "commandstats"], None).await? {
            redis::Value::Map(answers) => answers,
            other => return Err(format!("INFO on every master answered {other:?}")),
        };
        let infos = answers
            .into_iter()
            .map(|(_, info)| info_text(info))
            .collect::<Result<Vec<String>, String>>()?;
        let commands = command_stats(infos.iter().map(String::as_str));
        Ok(format!(
            "{} masters/call: {}",
            infos.len(),
            per_call(&commands, calls)
        ))
    }
}

/// One round of a Redis Cluster row.
pub async fn round(
    env: &ClusterEnv,
    system: System,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    env.reset().await?;
    let bodies = Arc::new(AtomicU64::new(0));
    let replay = (mode == Mode::Replay).then(next_number);
    let mut result = match system {
        System::IdemRedisCluster => {
            let call = IdemCall::new(env.idem.clone(), &bodies, IdemFn::FreshRedis, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::RawRedisCluster => {
            let connection = env.raw.clone();
            raw_commands(connection, &bodies, mode, replay, callers, timing).await?
        }
        other => return Err(format!("{other:?} is not a Redis Cluster row")),
    };
    result.extra = Some(env.server_note(result.measured.calls).await?);
    Ok(result)
}
