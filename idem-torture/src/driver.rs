//! The driver: starts the store's server, the agents (OS processes of this same binary), and
//! injects the schedule's faults; at the end it stops the agents, recovers what they left,
//! reads what the store holds, and hands the folder to the checker.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idem::store::{SagaStatus, Status, Store, StoredOutcome};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer, Shutdown};

use crate::agent::{self, LEASE};
use crate::check::{check, Report, Run};
use crate::faulty::Sabotage;
use crate::history::{
    append, read_lines, record_name, Effect, Event, FaultLine, Final, LedgerLine, Op, SagaEnd,
};
use crate::proxy::Proxy;
use crate::schedule::{schedule, Fault, StoreKind};

/// What one run is.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The store.
    pub store: StoreKind,
    /// How long the agents run.
    pub length: Duration,
    /// The seed of every choice.
    pub seed: u64,
    /// How many agent processes run at once.
    pub agents: u32,
    /// Where the run's files go (made anew).
    pub folder: PathBuf,
    /// A protocol rule broken on purpose.
    pub sabotage: Option<Sabotage>,
    /// Print each fault as it is injected.
    pub verbose: bool,
}

/// The store's server, or its file.
enum Backend {
    Sqlite(PathBuf),
    Redis(RedisServer),
    Postgres(PostgresServer),
}

impl Backend {
    fn start(kind: StoreKind, folder: &Path) -> Result<Backend, String> {
        let missing = |what: &str| {
            format!(
                "{what} is not installed here: cannot run `--store {}`",
                kind.name()
            )
        };
        Ok(match kind {
            StoreKind::Sqlite => Backend::Sqlite(folder.join("store.db")),
            StoreKind::Redis => {
                Backend::Redis(RedisServer::own().ok_or_else(|| missing("redis-server"))?)
            }
            StoreKind::RedisVolatile => {
                Backend::Redis(RedisServer::own_with(&[]).ok_or_else(|| missing("redis-server"))?)
            }
            StoreKind::Postgres => {
                Backend::Postgres(PostgresServer::primary().ok_or_else(|| missing("PostgreSQL"))?)
            }
        })
    }

    /// The URL of the store on `port` (the server's own, or the proxy's).
    fn url(&self, port: Option<u16>) -> String {
        match self {
            Backend::Sqlite(file) => format!("sqlite://{}", file.display()),
            Backend::Redis(server) => {
                format!("redis://127.0.0.1:{}/", port.unwrap_or(server.port()))
            }
            Backend::Postgres(server) => format!(
                "postgres://postgres@127.0.0.1:{}/postgres",
                port.unwrap_or(server.port())
            ),
        }
    }

    fn port(&self) -> Option<u16> {
        match self {
            Backend::Sqlite(_) => None,
            Backend::Redis(server) => Some(server.port()),
            Backend::Postgres(server) => Some(server.port()),
        }
    }
}

/// One agent slot: its process now, and how many it had.
struct Slot {
    child: Option<Child>,
    incarnation: u32,
}

impl Slot {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The agents' slots. Dropped on any way out of the run (an error too), it resumes and kills
/// every agent still running, so that none is left behind, stopped or not.
struct Slots(Vec<Slot>);

impl Slots {
    fn stop_all(&mut self) {
        for slot in &mut self.0 {
            if let Some(mut child) = slot.child.take() {
                signal(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
                forget_faketime_files(child.id());
            }
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Runs the agents under the schedule's faults, then checks the history.
pub fn run(config: &RunConfig) -> Result<Report, String> {
    let _ = std::fs::remove_dir_all(&config.folder);
    std::fs::create_dir_all(config.folder.join("services"))
        .map_err(|e| format!("{}: {e}", config.folder.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(drive(config))?;
    let run = Run::read(&config.folder)?;
    Ok(check(&run))
}

async fn drive(config: &RunConfig) -> Result<(), String> {
    let backend = Backend::start(config.store, &config.folder)?;
    let proxy = match backend.port() {
        Some(port) => Some(Proxy::start(port).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let direct = backend.url(None);
    let through_proxy = backend.url(proxy.as_ref().map(Proxy::port));
    // The schema (or file) exists before the agents race to make it.
    drop(agent::open_with_retries(&direct).await?);

    let faults = schedule(config.seed, config.store, config.length, config.agents);
    let faketime = config.store.has_server().then(libfaketime).flatten();
    if config.store.has_server()
        && faketime.is_none()
        && std::env::var("CI").is_ok_and(|ci| ci == "true")
    {
        // As for a missing server: CI never passes with a fault left out.
        return Err("CI=true: libfaketime is not installed (apt-get install -y faketime)".into());
    }
    if config.verbose {
        println!(
            "{} faults scheduled; {}",
            faults.len(),
            match &faketime {
                Some(_) => "agent 1 runs with its clock 3 minutes ahead (faketime)",
                None if config.store.has_server() => "faketime is not installed: no clock skew",
                None => "no clock skew on SQLite (its leases are on the machine's one clock)",
            }
        );
    }
    let started = Instant::now();
    let end = started + config.length;
    let spawn = |agent: u32, incarnation: u32| -> Result<Child, String> {
        let log = std::fs::File::create(
            config
                .folder
                .join(format!("agent-{agent}-{incarnation}.log")),
        )
        .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        if let (Some(library), 1) = (&faketime, agent) {
            // libfaketime preloaded into the agent itself (not the `faketime` wrapper, which
            // would stand between the driver's signals and the agent).
            command.env("LD_PRELOAD", library).env("FAKETIME", "+3m");
        }
        command
            .arg("agent")
            .args(["--store", &through_proxy])
            .arg("--folder")
            .arg(&config.folder)
            .args(["--agent", &agent.to_string()])
            .args(["--incarnation", &incarnation.to_string()])
            .args(["--seed", &config.seed.to_string()])
            .args([
                "--stop-after-ms",
                &end.saturating_duration_since(Instant::now())
                    .as_millis()
                    .to_string(),
            ])
            .args(["--run-age-ms", &started.elapsed().as_millis().to_string()]);
        if let Some(sabotage) = config.sabotage {
            command.args(["--sabotage", sabotage.name()]);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start an agent: {e}"))
    };
    let mut slots = Slots(Vec::new());
    for agent in 0..config.agents {
        slots.0.push(Slot {
            child: Some(spawn(agent, 0)?),
            incarnation: 0,
        });
    }

    let fault_log = config.folder.join("faults.jsonl");
    let mut pending = faults.into_iter().peekable();
    // When to SIGCONT which paused process (its pid: a slot's process may have been killed
    // and replaced meanwhile, and the new one must not be resumed by the old pause).
    let mut resumes: Vec<(Instant, u32)> = Vec::new();
    let mut undelay: Option<Instant> = None;
    let note = |kind: &str, detail: String| {
        let at_ms = started.elapsed().as_millis() as u64;
        if config.verbose {
            println!("[{:>6.1} s] {kind}: {detail}", at_ms as f64 / 1000.0);
        }
        let _ = append(
            &fault_log,
            &FaultLine {
                at_ms,
                kind: kind.to_owned(),
                detail,
            },
        );
    };
    if faketime.is_some() {
        note(
            "clock_skew",
            "agent 1 runs with its clock 3 minutes ahead (libfaketime)".into(),
        );
    }
    loop {
        let now = Instant::now();
        let mut running = 0;
        for (agent, slot) in slots.0.iter_mut().enumerate() {
            let agent = agent as u32;
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) => {
                    forget_faketime_files(child.id());
                    if !status.success() && status.signal() != Some(libc::SIGKILL) {
                        let log = config
                            .folder
                            .join(format!("agent-{agent}-{}.log", slot.incarnation));
                        let text = std::fs::read_to_string(&log).unwrap_or_default();
                        let tail: String =
                            text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                        note(
                            "agent_failed",
                            format!("agent {agent}.{} {status}: {tail}", slot.incarnation),
                        );
                    }
                    slot.child = None;
                    if now + Duration::from_millis(300) < end {
                        slot.incarnation += 1;
                        slot.child = Some(spawn(agent, slot.incarnation)?);
                        running += 1;
                    }
                }
                Err(e) => return Err(format!("agent {agent}: {e}")),
            }
        }
        resumes.retain(|(at, pid)| {
            if *at > now {
                return true;
            }
            if slots.0.iter().any(|slot| slot.pid() == Some(*pid)) {
                signal(*pid, libc::SIGCONT);
            }
            false
        });
        if undelay.is_some_and(|at| at <= now) {
            if let Some(proxy) = &proxy {
                proxy.set_delay(Duration::ZERO);
            }
            undelay = None;
        }
        while let Some((_, fault)) = pending.next_if(|(at, _)| started + *at <= now) {
            note(fault.kind(), fault.to_string());
            // A restart that loses the store's records is written into the ledger, before the
            // kill and once the server answers again, for the checker's eras.
            let loses_records = config.store == StoreKind::RedisVolatile
                && matches!(fault, Fault::RestartStore { .. });
            let ledger = config.folder.join("ledger.jsonl");
            let at_ms = || started.elapsed().as_millis() as u64;
            if loses_records {
                append(&ledger, &LedgerLine::StoreLosing { at_ms: at_ms() })
                    .map_err(|e| e.to_string())?;
            }
            let injected = inject(
                fault,
                &backend,
                proxy.as_ref(),
                &mut slots.0,
                &mut resumes,
                &mut undelay,
            );
            if let Err(problem) = injected {
                // The run goes on: a fault that could not be made is reported, not fatal.
                note("fault_failed", format!("{fault}: {problem}"));
            }
            if loses_records {
                append(&ledger, &LedgerLine::StoreLost { at_ms: at_ms() })
                    .map_err(|e| e.to_string())?;
            }
        }
        if now >= end && running == 0 && resumes.is_empty() {
            break;
        }
        if now >= end + Duration::from_secs(60) {
            for slot in &slots.0 {
                if slot.child.is_some() {
                    note(
                        "agent_failed",
                        "an agent still ran 60 s after the end".into(),
                    );
                }
            }
            slots.stop_all();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(proxy) = &proxy {
        proxy.set_delay(Duration::ZERO);
    }

    let store = agent::open_with_retries(&direct).await?;
    let end = finish(&*store, &config.folder, config.agents).await?;
    let text = serde_json::to_string_pretty(&end).map_err(|e| e.to_string())?;
    std::fs::write(config.folder.join("final.json"), text).map_err(|e| e.to_string())
}

/// Makes `fault` happen. The server faults block (a restart waits for the server), on a
/// runtime thread that lets the others go on meanwhile.
fn inject(
    fault: Fault,
    backend: &Backend,
    proxy: Option<&Proxy>,
    slots: &mut [Slot],
    resumes: &mut Vec<(Instant, u32)>,
    undelay: &mut Option<Instant>,
) -> Result<(), String> {
    match fault {
        Fault::KillAgent { agent } => {
            if let Some(child) = slots[agent as usize].child.as_mut() {
                // A paused agent is killed too: SIGKILL needs no SIGCONT.
                let _ = child.kill();
            }
        }
        Fault::PauseAgent { agent, pause } => {
            if let Some(pid) = slots[agent as usize].pid() {
                signal(pid, libc::SIGSTOP);
                resumes.push((Instant::now() + pause, pid));
            }
        }
        Fault::RestartStore { immediate } => match backend {
            Backend::Redis(server) => tokio::task::block_in_place(|| {
                server.crash()?;
                server.restart()
            })?,
            Backend::Postgres(server) => {
                let shutdown = if immediate {
                    Shutdown::Immediate
                } else {
                    Shutdown::Fast
                };
                tokio::task::block_in_place(|| server.restart(shutdown))?;
            }
            Backend::Sqlite(_) => {}
        },
        Fault::TerminateBackends => {
            if let Backend::Postgres(server) = backend {
                tokio::task::block_in_place(|| {
                    server.sql(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    )
                })?;
            }
        }
        Fault::HoldWriteLock { hold } => {
            if let Backend::Sqlite(file) = backend {
                let file = file.clone();
                std::thread::spawn(move || hold_write_lock(&file, hold));
            }
        }
        Fault::CutConnections => {
            if let Some(proxy) = proxy {
                proxy.cut();
            }
        }
        Fault::Delay { delay, lasting } => {
            if let Some(proxy) = proxy {
                proxy.set_delay(delay);
                *undelay = Some(Instant::now() + lasting);
            }
        }
    }
    Ok(())
}

/// Another writer on the SQLite file: `BEGIN IMMEDIATE` takes the write lock, held `hold`.
fn hold_write_lock(file: &Path, hold: Duration) {
    let Ok(connection) = rusqlite::Connection::open(file) else {
        return;
    };
    let _ = connection.busy_timeout(Duration::from_secs(10));
    if connection.execute_batch("BEGIN IMMEDIATE").is_ok() {
        std::thread::sleep(hold);
        let _ = connection.execute_batch("COMMIT");
    }
}

/// Sends `signal` to the process `pid` (an agent of this driver, alive as far as it knows).
fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; a process that exited meanwhile is ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Removes what libfaketime, preloaded into the agent `pid`, left in `/dev/shm`: it makes a
/// shared memory segment and a semaphore named after the process, and removes them when the
/// process exits, which a SIGKILLed agent never does. Left there, they pile up, and a later
/// `faketime` wrapper that is given the same pid cannot start ("sem_open: File exists"),
/// which failed `tests/it/clock_skew.rs` once in CI.
fn forget_faketime_files(pid: u32) {
    for name in [
        format!("faketime_shm_{pid}"),
        format!("sem.faketime_sem_{pid}"),
    ] {
        // Absent for every agent but the skewed one, and for one that exited by itself.
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
    }
}

/// libfaketime's multithreaded library (Debian's `faketime` package installs it here).
fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .iter()
    .map(|folder| PathBuf::from(folder).join("faketime/libfaketimeMT.so.1"))
    .find(|path| path.is_file())
}

/// The orders whose saga some agent started, from the histories.
fn orders_started(folder: &Path) -> Result<BTreeSet<u32>, String> {
    let mut orders = BTreeSet::new();
    let entries = std::fs::read_dir(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("history-"))
        {
            for event in read_lines::<Event>(&path)? {
                if let Event::Start {
                    op: Op::Saga { order },
                    ..
                } = event
                {
                    orders.insert(order);
                }
            }
        }
    }
    Ok(orders)
}

/// After the agents: recovery, as a restarted agent does (in this process, which links the
/// same steps), until no saga is left running; then what the store holds.
async fn finish(store: &dyn Store, folder: &Path, agents: u32) -> Result<Final, String> {
    agent::enter_world(folder, agents, 0, Duration::ZERO);
    let orders = orders_started(folder)?;
    for _ in 0..20 {
        // Past every dead owner's lease, so that recovery sees their sagas as stale.
        tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
        let _ = idem::recover(store).await;
        let mut active = false;
        for &order in &orders {
            match store.read_saga(&agent::order_key(order)).await {
                Ok(Some(log)) if log.status == SagaStatus::Interrupted => {
                    // Past its irreversible step: the code that runs it carries it forward.
                    let _ = agent::order(store, order).await;
                    active = true;
                }
                Ok(Some(log)) if log.status.is_active() => active = true,
                Ok(_) => {}
                Err(_) => active = true,
            }
        }
        if !active {
            break;
        }
    }

    let mut end = Final::default();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for line in read_lines::<LedgerLine>(&folder.join("ledger.jsonl"))? {
        if let LedgerLine::Effect {
            effect, idem_key, ..
        } = line
        {
            if !effect.action.is_step() {
                keys.insert(record_name(effect.action, effect.key), idem_key);
            }
        }
    }
    for (name, key) in keys {
        let key: idem::Key = key.parse().map_err(|e| format!("{name}: {e}"))?;
        let record = store.get(&key).await.map_err(|e| format!("{name}: {e}"))?;
        let value = record.and_then(|record| match (record.status, record.outcome) {
            (Status::Completed, Some(StoredOutcome::Ok(bytes))) => {
                serde_json::from_slice::<Effect>(&bytes)
                    .ok()
                    .map(|effect| effect.value)
            }
            _ => None,
        });
        end.records.insert(name, value);
    }
    for &order in &orders {
        let log = store
            .read_saga(&agent::order_key(order))
            .await
            .map_err(|e| format!("order-{order}: {e}"))?;
        if let Some(log) = log {
            end.sagas.insert(
                order,
                SagaEnd {
                    status: log.status.as_str().to_owned(),
                    steps: log
                        .steps
                        .iter()
                        .map(|step| (step.name.clone(), step.state.as_str().to_owned()))
                        .collect(),
                },
            );
        }
    }
    Ok(end)
}
