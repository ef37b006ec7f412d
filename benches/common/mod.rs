//! What the benches `stores` and `footprint` both measure, taken in by each with `mod common;`:
//! the CPU time of a server's processes (or of this one) from `/proc`, and the server's own time
//! inside each Redis command from `INFO commandstats`.

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;

// ---------------------------------------------------------------------------------------------
// CPU time from /proc

/// Whose CPU time a window counts.
#[derive(Clone, Copy)]
pub enum Cpu {
    /// The `redis-server` listening on this port.
    Redis(u16),
    /// The PostgreSQL server listening on this port (its postmaster and all its children).
    Postgres(u16),
    /// This process: the callers and the clients, and an embedded store.
    ThisProcess,
}

impl Cpu {
    /// CPU seconds (user + system, from `/proc/<pid>/stat`) used so far; what a window cost is
    /// the difference of two readings.
    ///
    /// - `Redis(port)`: the `redis-server` processes with `port` on their command line (the
    ///   event loop, the sockets and the commands);
    /// - `Postgres(port)`: the postmaster started with `-p <port>` and its children (backends,
    ///   WAL writer, checkpointer, autovacuum), plus the time of its children that have ended
    ///   and that it waited for (the postmaster's `cutime` + `cstime`), so that the backends of
    ///   a pool that closed within the window still count; 0 if there is no such postmaster;
    /// - `ThisProcess`: this process, all its threads.
    pub fn seconds(self) -> f64 {
        let all = processes();
        match self {
            Cpu::Redis(port) => all
                .iter()
                .filter(|p| p.comm == "redis-server" && cmdline(p.pid).contains(&port.to_string()))
                .map(|p| p.cpu)
                .sum(),
            Cpu::Postgres(port) => {
                let flag = format!("-p {port} ");
                let Some(postmaster) = all
                    .iter()
                    .find(|p| p.comm == "postgres" && cmdline(p.pid).contains(&flag))
                else {
                    return 0.0;
                };
                postmaster.ended_children_cpu
                    + all
                        .iter()
                        .filter(|p| p.pid == postmaster.pid || p.ppid == postmaster.pid)
                        .map(|p| p.cpu)
                        .sum::<f64>()
            }
            Cpu::ThisProcess => all
                .iter()
                .find(|p| p.pid == std::process::id())
                .map_or(0.0, |p| p.cpu),
        }
    }
}

/// A process as `/proc/<pid>/stat` tells it.
struct Process {
    pid: u32,
    ppid: u32,
    /// The executable's name (`comm`).
    comm: String,
    /// CPU seconds of its own (`utime` + `stime`).
    cpu: f64,
    /// CPU seconds of its children that ended and were waited for (`cutime` + `cstime`).
    ended_children_cpu: f64,
}

/// Every process in `/proc` (none if it cannot be read).
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            // After `)`: state ppid … utime (14th field of the line) stime cutime cstime, in
            // clock ticks of 1/100 s.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ppid = fields.get(1)?.parse().ok()?;
            let field = |i: usize| fields.get(i)?.parse::<f64>().ok();
            let own = field(11)? + field(12)?;
            let children = field(13)? + field(14)?;
            Some(Process {
                pid,
                ppid,
                comm,
                cpu: own / 100.0,
                ended_children_cpu: children / 100.0,
            })
        })
        .collect()
}

/// The command line of process `pid`, its arguments separated by spaces (empty if it is gone).
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Redis

/// Sends one command, `args` its words, and returns its answer as a `T`; panics on an error.
pub async fn redis_cmd<T: redis::FromRedisValue>(
    connection: &ConnectionManager,
    args: &[&str],
) -> T {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query_async(&mut connection.clone())
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The server's time inside each command since its last `CONFIG RESETSTAT`, from `INFO
/// commandstats`: by command (lowercase, a subcommand as `config|resetstat`), (calls, µs).
/// The time of an `EVALSHA` includes the commands its script runs, which are counted again
/// under their own names. The commands sent to measure (`CONFIG RESETSTAT`, an earlier `INFO`)
/// are in it too: the caller leaves them out.
pub async fn info_commandstats(connection: &ConnectionManager) -> BTreeMap<String, (u64, u64)> {
    let info: String = redis_cmd(connection, &["INFO", "commandstats"]).await;
    // cmdstat_evalsha:calls=1000,usec=7380,usec_per_call=7.38,rejected_calls=0,failed_calls=0
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Some((name.to_owned(), (field("calls="), field("usec="))))
        })
        .collect()
}
