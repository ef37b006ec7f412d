//! The driver's faults, drawn from the seed: the same seed, store, length and number of
//! agents give the same schedule (the agents' own faults come from the seed too, see
//! `agent`).

use std::fmt;
use std::time::Duration;

use crate::rng::Rng;

/// The store a run is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite in a file of the run's folder.
    Sqlite,
    /// One Redis server that writes every change to its append-only file before answering.
    Redis,
    /// One Redis server with no persistence: a restart loses every record, as its
    /// documentation says. Violations that this loss explains are reported apart.
    RedisVolatile,
    /// One PostgreSQL server.
    Postgres,
}

impl StoreKind {
    /// Every kind, in the order `--store all` runs them.
    pub const ALL: [StoreKind; 4] = [
        StoreKind::Sqlite,
        StoreKind::Redis,
        StoreKind::RedisVolatile,
        StoreKind::Postgres,
    ];

    /// The name `--store` takes.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Redis => "redis",
            StoreKind::RedisVolatile => "redis-volatile",
            StoreKind::Postgres => "postgres",
        }
    }

    /// Whether its server is reached over TCP (through the driver's proxy).
    pub fn has_server(self) -> bool {
        self != StoreKind::Sqlite
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        StoreKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                format!("unknown store `{name}` (sqlite, redis, redis-volatile, postgres, all)")
            })
    }
}

/// A fault the driver injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of an agent's process, at whatever point it is; the driver starts it again.
    KillAgent {
        /// Which agent.
        agent: u32,
    },
    /// SIGSTOP of an agent for longer than the lease, then SIGCONT: a paused owner that
    /// wakes up after its key was taken over.
    PauseAgent {
        /// Which agent.
        agent: u32,
        /// How long.
        pause: Duration,
    },
    /// The store's server restarts: Redis killed (SIGKILL) then started; PostgreSQL stopped
    /// `fast` or `immediate`, then started.
    RestartStore {
        /// PostgreSQL: `immediate` (no checkpoint) rather than `fast`. Redis: always a kill.
        immediate: bool,
    },
    /// PostgreSQL: `pg_terminate_backend` on every client connection.
    TerminateBackends,
    /// SQLite: another writer holds the file's write lock (`BEGIN IMMEDIATE`) this long.
    HoldWriteLock {
        /// How long.
        hold: Duration,
    },
    /// Every open connection to the server is cut.
    CutConnections,
    /// Every packet to and from the server is held `delay`, for `lasting`.
    Delay {
        /// Per packet.
        delay: Duration,
        /// How long the slow network lasts.
        lasting: Duration,
    },
}

impl Fault {
    /// The kind's name, as reports count them.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillAgent { .. } => "kill_agent",
            Fault::PauseAgent { .. } => "pause_agent",
            Fault::RestartStore { immediate: true } => "restart_store_immediate",
            Fault::RestartStore { immediate: false } => "restart_store",
            Fault::TerminateBackends => "terminate_backends",
            Fault::HoldWriteLock { .. } => "hold_write_lock",
            Fault::CutConnections => "cut_connections",
            Fault::Delay { .. } => "delay_network",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillAgent { agent } => write!(f, "SIGKILL agent {agent}"),
            Fault::PauseAgent { agent, pause } => {
                write!(f, "SIGSTOP agent {agent} for {} ms", pause.as_millis())
            }
            Fault::RestartStore { immediate } => {
                write!(
                    f,
                    "restart the store{}",
                    if *immediate { " (immediate)" } else { "" }
                )
            }
            Fault::TerminateBackends => f.write_str("pg_terminate_backend every client"),
            Fault::HoldWriteLock { hold } => {
                write!(f, "hold SQLite's write lock {} ms", hold.as_millis())
            }
            Fault::CutConnections => f.write_str("cut every connection"),
            Fault::Delay { delay, lasting } => write!(
                f,
                "delay packets {} ms for {} ms",
                delay.as_millis(),
                lasting.as_millis()
            ),
        }
    }
}

/// The faults of a run of `length` with `agents` agents on `store`, each at its time from
/// the run's start, in order. Faults start after the first second and end a little before
/// the run does (a pause ends before it), so that every agent is running at the end.
pub fn schedule(
    seed: u64,
    store: StoreKind,
    length: Duration,
    agents: u32,
) -> Vec<(Duration, Fault)> {
    let mut rng = Rng::derive(seed, &[0x5C4E_D01E]);
    let end = length.saturating_sub(Duration::from_millis(1500));
    let mut at = Duration::from_millis(1000);
    let mut faults = Vec::new();
    loop {
        at += Duration::from_millis(rng.between(400, 1600));
        if at >= end {
            return faults;
        }
        let agent = rng.below(u64::from(agents)) as u32;
        let fault = match (store, rng.below(10)) {
            (_, 0..=3) => Fault::KillAgent { agent },
            (_, 4..=5) => Fault::PauseAgent {
                agent,
                pause: Duration::from_millis(rng.between(500, 1500)),
            },
            (StoreKind::Sqlite, _) => Fault::HoldWriteLock {
                hold: Duration::from_millis(rng.between(200, 1500)),
            },
            (_, 6) => Fault::RestartStore {
                immediate: rng.percent(50),
            },
            (StoreKind::Postgres, 7) => Fault::TerminateBackends,
            (_, 7 | 8) => Fault::CutConnections,
            _ => Fault::Delay {
                delay: Duration::from_millis(rng.between(20, 200)),
                lasting: Duration::from_millis(rng.between(300, 1500)),
            },
        };
        if let Fault::PauseAgent { pause, .. } = fault {
            if at + pause >= end {
                continue;
            }
        }
        faults.push((at, fault));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_schedule() {
        let length = Duration::from_secs(30);
        let a = schedule(42, StoreKind::Postgres, length, 4);
        assert_eq!(a, schedule(42, StoreKind::Postgres, length, 4));
        assert_ne!(a, schedule(43, StoreKind::Postgres, length, 4));
        assert!(a.len() > 10, "{a:?}");
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        let sqlite = schedule(42, StoreKind::Sqlite, length, 4);
        assert!(sqlite.iter().all(|(_, f)| !matches!(
            f,
            Fault::RestartStore { .. }
                | Fault::CutConnections
                | Fault::Delay { .. }
                | Fault::TerminateBackends
        )));
    }
}
