//! PostgreSQL rows, all on one cluster started for the run (fsync on, the defaults): idem's
//! `PostgresStore` (schema `idem`), agent-effects' `PostgresStore` (schema `ae`), and raw
//! statements through tokio-postgres.
//!
//! - idem and the raw statements share one deadpool pool of 16 connections (a checkout per
//!   statement, as the store takes one for its claim and one for its result);
//! - agent-effects gets a sqlx pool of 16 of its own (`PostgresOptions::max_connections`),
//!   with its defaults otherwise (statements prepared per connection, the database's clock);
//! - raw, fresh: `INSERT INTO raw.records … ON CONFLICT DO NOTHING`, the body, `UPDATE
//!   raw.records SET status = 'completed', result = …`; raw, replay: `SELECT` of the record and
//!   decoding its result. `raw.records` is `LIKE idem.idem_records INCLUDING ALL`: the same
//!   columns and indexes.
//!
//! The tables of the system measured are emptied (`TRUNCATE`) before each round, so every
//! round starts from the same state; idem's fresh keys use the default TTL (a day), so no
//! purge has anything to remove during a round, as agent-effects, which has no TTL.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use agent_effects::Runtime;
use agent_effects_postgres::{PostgresOptions, PostgresStore as EffectsStore};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use idem::store::{PostgresStore, Store};
use idem_runtime::conformance::servers::PostgresServer;

use super::{once_per_call, Mode, RoundResult, System};
use crate::call::{body, IdemCall, IdemFn, Receipt, AMOUNT, CUSTOMER};
use crate::measure::{next_number, Call, Timing};
use crate::peers::agent_effects::EffectCall;

/// Connections of each pool.
pub const POOL_SIZE: usize = 16;

const RAW_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS raw;
    CREATE TABLE IF NOT EXISTS raw.records (LIKE idem.idem_records INCLUDING ALL);
    CREATE TABLE IF NOT EXISTS raw.steps (LIKE idem.idem_saga_steps INCLUDING ALL);";
const RAW_INSERT: &str = "INSERT INTO raw.records
    (key, action, status, token, fingerprint, created_at, expires_at)
    VALUES ($1, 'send_quote', 'in_progress', $2, $3, clock_timestamp(),
            clock_timestamp() + interval '10 seconds')
    ON CONFLICT DO NOTHING";
const RAW_UPDATE: &str = "UPDATE raw.records
    SET status = 'completed', outcome = 'ok', result = $2,
        expires_at = clock_timestamp() + interval '1 day'
    WHERE key = $1";
const RAW_SELECT: &str = "SELECT status, token, fingerprint, outcome, result, expires_at
    FROM raw.records WHERE key = $1";

/// The pools and stores of the PostgreSQL rows, made once for the run.
pub struct PgEnv {
    pool: Pool,
    idem: Arc<dyn Store>,
    effects: Runtime<EffectsStore>,
}

impl PgEnv {
    pub async fn connect(server: &PostgresServer) -> Result<Self, String> {
        let url = server.url();
        let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| e.to_string())?;
        let idem = PostgresStore::with_pool(pool.clone())
            .schema("idem")
            .connect()
            .await
            .map_err(|e| format!("idem PostgresStore: {e}"))?;
        let effects = PostgresOptions::new()
            .schema("ae")
            .max_connections(POOL_SIZE as u32)
            .connect(&url)
            .await
            .map_err(|e| format!("agent-effects PostgresStore: {e}"))?;
        let env = PgEnv {
            pool,
            idem: Arc::new(idem),
            effects: Runtime::new(effects),
        };
        env.sql(RAW_SCHEMA).await?;
        Ok(env)
    }

    /// Runs `sql` (one or more statements) on a pooled connection.
    pub async fn sql(&self, sql: &str) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn idem_store(&self) -> Arc<dyn Store> {
        self.idem.clone()
    }

    /// Empties the tables of `system` (idem's also hold its sagas' logs).
    pub async fn empty(&self, system: System) -> Result<(), String> {
        let tables = match system {
            System::IdemPostgres | System::SagaPostgres | System::LongSagaPostgres => {
                "idem.idem_records, idem.idem_sagas, idem.idem_saga_steps"
            }
            System::AgentEffectsPostgres => "ae.effects, ae.effect_events, ae.late_observations",
            System::RawPostgres => "raw.records",
            System::RawLogPostgres => "raw.steps",
            other => return Err(format!("{other:?} has no PostgreSQL tables")),
        };
        self.sql(&format!("TRUNCATE {tables}")).await
    }
}

/// One round of a PostgreSQL row.
pub async fn round(
    env: &PgEnv,
    system: System,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    env.empty(system).await?;
    let bodies = Arc::new(AtomicU64::new(0));
    let replay = (mode == Mode::Replay).then(next_number);
    let result = match system {
        System::IdemPostgres => {
            let call = IdemCall::new(env.idem.clone(), &bodies, IdemFn::FreshKept, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::AgentEffectsPostgres => {
            let call = EffectCall {
                runtime: env.effects.clone(),
                bodies: bodies.clone(),
                replay,
            };
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::RawPostgres => {
            let raw = Arc::new(RawPostgres {
                pool: env.pool.clone(),
                bodies: bodies.clone(),
                replay,
            });
            if let Some(order) = replay {
                raw.fresh(order).await?;
            }
            once_per_call(raw, &bodies, mode, callers, timing).await
        }
        other => return Err(format!("{other:?} is not a PostgreSQL row")),
    };
    Ok(result)
}

/// The raw statements.
struct RawPostgres {
    pool: Pool,
    bodies: Arc<AtomicU64>,
    replay: Option<u64>,
}

impl RawPostgres {
    /// `INSERT … ON CONFLICT DO NOTHING`, the body, `UPDATE`: a connection from the pool
    /// for each statement.
    async fn fresh(&self, order: u64) -> Result<(), String> {
        let key = format!("{order:064x}");
        let token = i64::try_from(order).map_err(|e| e.to_string())?;
        let fingerprint = [7u8; 32];
        {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            let insert = client
                .prepare_cached(RAW_INSERT)
                .await
                .map_err(|e| e.to_string())?;
            let claimed = client
                .execute(&insert, &[&key, &token, &&fingerprint[..]])
                .await
                .map_err(|e| format!("INSERT: {e}"))?;
            if claimed != 1 {
                return Err(format!("raw PostgreSQL: key {order} was taken"));
            }
        }
        let receipt = body(&self.bodies, CUSTOMER, order, AMOUNT);
        let result = serde_json::to_vec(&receipt).map_err(|e| e.to_string())?;
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let update = client
            .prepare_cached(RAW_UPDATE)
            .await
            .map_err(|e| e.to_string())?;
        let updated = client
            .execute(&update, &[&key, &result])
            .await
            .map_err(|e| format!("UPDATE: {e}"))?;
        if updated == 1 {
            Ok(())
        } else {
            Err(format!("raw PostgreSQL: key {order} was not recorded"))
        }
    }

    /// `SELECT` and decoding.
    async fn replay(&self, order: u64) -> Result<(), String> {
        let key = format!("{order:064x}");
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let select = client
            .prepare_cached(RAW_SELECT)
            .await
            .map_err(|e| e.to_string())?;
        let row = client
            .query_one(&select, &[&key])
            .await
            .map_err(|e| format!("SELECT: {e}"))?;
        let status: &str = row.get(0);
        let result: Option<Vec<u8>> = row.get(4);
        let receipt: Receipt = match (status, result) {
            ("completed", Some(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| e.to_string())?
            }
            (status, _) => return Err(format!("raw PostgreSQL: key {order} is {status}")),
        };
        if receipt.is_for(order) {
            Ok(())
        } else {
            Err(format!("raw PostgreSQL: a wrong answer {receipt:?}"))
        }
    }
}

impl Call for RawPostgres {
    async fn call(&self, n: u64) -> Result<(), String> {
        match self.replay {
            None => self.fresh(n).await,
            Some(order) => self.replay(order).await,
        }
    }
}
