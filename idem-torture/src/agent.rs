//! An agent: one OS process making `#[idempotent]` calls and running sagas over a small set
//! of keys that every agent shares, while the driver kills, pauses and restarts it and its
//! store. Its tools act on the ledger (the world); it writes what it saw to its history.
//!
//! Its own faults come from its seed: before some calls it arms a crash point (it SIGKILLs
//! itself there), and it drops some calls with a timeout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use idem::store::Store;
use idem::{idempotent, saga_step, Saga};
use serde::{Deserialize, Serialize};

use crate::faulty::{FaultyStore, Sabotage};
use crate::history::{
    append, now_ms, read_lines, Action, CallId, Effect, Event, LedgerLine, Op, Outcome,
};
use crate::rng::Rng;

/// How many accounts the tools share in each period of [`TOOL_PERIOD`]: few, so that agents
/// meet on the same keys all the time, and new ones each period, so that calls keep running
/// bodies (where the faults matter) rather than only replaying.
const ACCOUNTS: u32 = 6;
/// How long the tools' accounts of one period are the current ones.
const TOOL_PERIOD: Duration = Duration::from_millis(300);
/// How many orders each period of [`ORDER_PERIOD`] has.
const ORDERS: u32 = 4;
/// How long the orders of one period are the current ones.
const ORDER_PERIOD: Duration = Duration::from_millis(1000);
/// The lease of every call and saga: short, so that a paused or killed owner's key is taken
/// over within the run.
pub const LEASE: Duration = Duration::from_millis(400);
/// How many calls each agent process makes at once.
const WORKERS: u64 = 3;

/// Where an agent's call can kill its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before the call's first claim reaches the store.
    BeforeClaim,
    /// After a claim was acquired, before the body starts.
    AfterClaim,
    /// In the body, before its side effect.
    BodyBeforeEffect,
    /// In the body, right after its side effect.
    BodyAfterEffect,
    /// After the body, before its result (or a saga's log entry) is written.
    BeforeRecord,
    /// After the result was written, before the caller hears of it.
    AfterRecord,
    /// Inside a compensation, before it undoes anything.
    InCompensation,
}

impl Point {
    const ALL: [Point; 7] = [
        Point::BeforeClaim,
        Point::AfterClaim,
        Point::BodyBeforeEffect,
        Point::BodyAfterEffect,
        Point::BeforeRecord,
        Point::AfterRecord,
        Point::InCompensation,
    ];

    fn name(self) -> &'static str {
        match self {
            Point::BeforeClaim => "before_claim",
            Point::AfterClaim => "after_claim",
            Point::BodyBeforeEffect => "in_body_before_effect",
            Point::BodyAfterEffect => "in_body_after_effect",
            Point::BeforeRecord => "before_record",
            Point::AfterRecord => "after_record",
            Point::InCompensation => "in_compensation",
        }
    }
}

/// What one agent process is told by the driver.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The store's URL (through the driver's proxy, for server stores).
    pub store: String,
    /// The run's folder: ledger, services, histories.
    pub folder: PathBuf,
    /// The agent's slot.
    pub agent: u32,
    /// How many times the slot's process was started before.
    pub incarnation: u32,
    /// The run's seed.
    pub seed: u64,
    /// How long from its start the agent keeps starting calls (a duration, not a time, so
    /// that a skewed clock does not move it).
    pub stop_after: Duration,
    /// How long the run had been going when this process was started: the agents' periods
    /// of keys are counted from the run's start, the same for all.
    pub run_age: Duration,
    /// A protocol rule broken on purpose, to show the checker catches it.
    pub sabotage: Option<Sabotage>,
}

/// The agent's world: where effects, service answers and its history go.
#[derive(Debug)]
struct World {
    folder: PathBuf,
    history: PathBuf,
    agent: u32,
    incarnation: u32,
    values: AtomicU64,
    calls: AtomicU64,
    run_started: tokio::time::Instant,
}

/// The world of the run this process is in now: an agent's for its life, the driver's for
/// each run's recovery in turn (`--store all`).
static WORLD: RwLock<Option<Arc<World>>> = RwLock::new(None);

fn world() -> Arc<World> {
    WORLD
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .expect("the agent's world is set before any call")
}

/// A crash point armed for one call: it fires at the point's `skip + 1`-th occurrence in the
/// call, so that a saga's later steps and log writes are reached too.
#[derive(Debug)]
pub struct Armed {
    point: Point,
    skip: std::cell::Cell<u32>,
}

tokio::task_local! {
    /// The crash point armed for the call running in this task, if any.
    static ARMED: Option<Armed>;
    /// Whether the call's body blocks its thread past the lease (a stop-the-world pause:
    /// its heartbeats, which run in its task, stop too), then goes on.
    static STALLS: bool;
}

/// Kills this process with SIGKILL if `point` is armed for the running call: a crash, with
/// no unwinding, no flush, nothing sent to the store.
pub fn crash_if_armed(point: Point) {
    let fires = ARMED
        .try_with(|armed| match armed {
            Some(armed) if armed.point == point => {
                let skip = armed.skip.get();
                armed.skip.set(skip.saturating_sub(1));
                skip == 0
            }
            _ => false,
        })
        .unwrap_or(false);
    if !fires {
        return;
    }
    if let Some(call) = current_call_id() {
        let _ = append(
            &world().history,
            &Event::Crash {
                call,
                point: point.name().to_owned(),
            },
        );
    }
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    loop {
        std::thread::park();
    }
}

tokio::task_local! {
    static CALL: CallId;
}

fn current_call_id() -> Option<CallId> {
    CALL.try_with(|call| *call).ok()
}

/// The error of the agents' tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToolError {
    /// idem's own error: its variant and message.
    Idem {
        /// The variant's name.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The payment was declined (a saga step's failure, which rolls the saga back).
    Declined,
}

impl From<idem::Error> for ToolError {
    fn from(error: idem::Error) -> Self {
        let debug = format!("{error:?}");
        let kind = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("Error")
            .to_owned();
        ToolError::Idem {
            kind,
            message: error.to_string(),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Idem { message, .. } => f.write_str(message),
            ToolError::Declined => f.write_str("declined"),
        }
    }
}

impl std::error::Error for ToolError {}

// ---- The tools -----------------------------------------------------------------------------

/// An email: sent again in the window of a dead owner (`takeover`), and the history says so.
#[idempotent(lease = "400ms", ttl = "1h", on_conflict = wait("3s"))]
async fn send_email(account: u32) -> Result<Effect, ToolError> {
    make_effect(Action::SendEmail, account).await
}

/// A charge whose provider can be asked whether it happened (`verify`).
#[idempotent(lease = "400ms", ttl = "1h", on_conflict = wait("3s"), verify = find_charge)]
async fn charge(account: u32) -> Result<Effect, ToolError> {
    make_effect(Action::Charge, account).await
}

/// Asks the world (the ledger) for a charge of `account`, as a payment provider's lookup. A
/// ledger that cannot be read is an error (the call stays in doubt), never "not charged".
async fn find_charge(account: &u32) -> Result<Option<Effect>, ToolError> {
    first_effect(&world().folder, Action::Charge, *account).map_err(|message| ToolError::Idem {
        kind: "Verify".into(),
        message,
    })
}

/// A wire transfer: never run twice; an interrupted one waits for an operator.
#[idempotent(lease = "400ms", ttl = "1h", on_conflict = wait("3s"), on_stale = review)]
async fn wire(account: u32) -> Result<Effect, ToolError> {
    make_effect(Action::Wire, account).await
}

// ---- The saga ------------------------------------------------------------------------------

#[saga_step(compensate = unreserve)]
async fn reserve(order: u32) -> Result<Effect, ToolError> {
    make_effect(Action::Reserve, order).await
}

async fn unreserve(reserved: Effect) -> Result<(), ToolError> {
    undo(reserved)
}

/// Every fourth order's card is declined, before any effect: the saga is rolled back.
#[saga_step(compensate = refund)]
async fn charge_card(order: u32) -> Result<Effect, ToolError> {
    if order % 4 == 3 {
        return Err(ToolError::Declined);
    }
    make_effect(Action::ChargeCard, order).await
}

async fn refund(charged: Effect) -> Result<(), ToolError> {
    undo(charged)
}

#[saga_step(irreversible)]
async fn notify(order: u32) -> Result<Effect, ToolError> {
    make_effect(Action::Notify, order).await
}

/// The `order` saga: reserve, charge, notify.
pub async fn order(store: &dyn Store, order: u32) -> Result<(), ToolError> {
    Saga::new(format!("order-{order}"))
        .store(store)
        .lease(LEASE)
        .ttl(Duration::from_secs(3600))
        .on_conflict(idem::OnConflict::Wait(Duration::from_secs(3)))
        .run(|saga| async move {
            saga.step(reserve(order)).await?;
            saga.step(charge_card(order)).await?;
            saga.step(notify(order)).await?;
            Ok(())
        })
        .await
}

/// The key of the saga `order-<order>`, as `Saga` makes it.
pub fn order_key(order: u32) -> idem::Key {
    idem::Action::new("saga")
        .key(&(format!("order-{order}"),))
        .expect("a saga id has a key")
}

// ---- The world -----------------------------------------------------------------------------

/// A body's side effect: a line in the ledger. A saga step's service deduplicates by the
/// step's idempotency key (its first effect is every later run's answer), as a payment API
/// does; a tool's effect is its own.
async fn make_effect(action: Action, key: u32) -> Result<Effect, ToolError> {
    crash_if_armed(Point::BodyBeforeEffect);
    let world = world();
    let call = idem::current_call();
    let resumed = call.as_ref().is_some_and(|call| call.resumed());
    let token = call.as_ref().map_or(0, |call| call.fencing_token());
    let idem_key = idem::current_key()
        .map(|key| key.to_string())
        .unwrap_or_default();
    let value = (u64::from(world.agent) << 48)
        | (u64::from(world.incarnation) << 32)
        | world.values.fetch_add(1, Ordering::Relaxed);
    let made = Effect { action, key, value };
    let answered = if action.is_step() {
        service_answer(&world.folder, &idem_key, value)
    } else {
        value
    };
    append(
        &world.folder.join("ledger.jsonl"),
        &LedgerLine::Effect {
            effect: made,
            resumed,
            answered,
            idem_key,
            token,
            agent: world.agent,
            incarnation: world.incarnation,
        },
    )
    .expect("the ledger takes the line");
    crash_if_armed(Point::BodyAfterEffect);
    if STALLS.try_with(|stalls| *stalls).unwrap_or(false) {
        std::thread::sleep(LEASE * 3);
    }
    // A little time inside the body, where pauses and kills meet owners mid-call.
    tokio::time::sleep(Duration::from_millis(value % 15)).await;
    Ok(Effect {
        value: answered,
        ..made
    })
}

/// A compensation's effect: a ledger line naming what it undid.
fn undo(effect: Effect) -> Result<(), ToolError> {
    crash_if_armed(Point::InCompensation);
    let world = world();
    append(
        &world.folder.join("ledger.jsonl"),
        &LedgerLine::Compensation {
            undone: effect,
            agent: world.agent,
            incarnation: world.incarnation,
        },
    )
    .expect("the ledger takes the line");
    Ok(())
}

/// The downstream service's answer for `idem_key`: the first value ever proposed under it. A
/// hard link is created only if its name is free, so the first proposal wins across
/// processes, atomically.
fn service_answer(folder: &Path, idem_key: &str, proposed: u64) -> u64 {
    let services = folder.join("services");
    let answer = services.join(idem_key);
    let draft = services.join(format!("draft-{proposed}"));
    std::fs::write(&draft, proposed.to_string()).expect("write a service draft");
    let _ = std::fs::hard_link(&draft, &answer);
    let _ = std::fs::remove_file(&draft);
    std::fs::read_to_string(&answer)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .expect("the service's answer is written whole before it is linked")
}

/// The first effect the ledger has for `action` and `key`.
pub fn first_effect(folder: &Path, action: Action, key: u32) -> Result<Option<Effect>, String> {
    let lines: Vec<LedgerLine> = read_lines(&folder.join("ledger.jsonl"))?;
    Ok(lines.into_iter().find_map(|line| match line {
        LedgerLine::Effect { effect, .. } if effect.action == action && effect.key == key => {
            Some(effect)
        }
        _ => None,
    }))
}

// ---- The agent's loop ----------------------------------------------------------------------

/// Makes this process agent `agent` (incarnation `incarnation`) of the run in `folder`: where
/// its effects and history go.
pub fn enter_world(folder: &Path, agent: u32, incarnation: u32, run_age: Duration) {
    let now = tokio::time::Instant::now();
    let world = World {
        folder: folder.to_path_buf(),
        history: folder.join(format!("history-{agent}-{incarnation}.jsonl")),
        agent,
        incarnation,
        values: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        run_started: now.checked_sub(run_age).unwrap_or(now),
    };
    *WORLD.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(world));
}

/// Runs the agent until `stop_after`, then returns once its calls are done.
pub async fn run(config: AgentConfig) -> Result<(), String> {
    enter_world(
        &config.folder,
        config.agent,
        config.incarnation,
        config.run_age,
    );
    let store = open_with_retries(&config.store).await?;
    let store: Arc<dyn Store> = Arc::new(FaultyStore::new(store, config.sabotage));
    idem::set_default_store_shared(store.clone());
    let deadline = tokio::time::Instant::now() + config.stop_after;
    // A sabotaged store shows only when an owner is taken over while alive and then records:
    // a body stalled past its lease is the usual way, one call in a hundred. A sabotaged run
    // stalls one in ten, so that it meets the sabotage within its seconds whatever the
    // interleaving (one 25 s run of one in a hundred met none, and passed).
    let stall_percent = if config.sabotage.is_some() { 10 } else { 1 };
    if config.incarnation > 0 {
        // A restarted agent finishes what its predecessors left, as a real one would at
        // start-up. A failure here (the store restarting) is the next start's to retry.
        let _ = idem::recover(&*store).await;
    }
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let store = store.clone();
        let mut rng = Rng::derive(
            config.seed,
            &[
                u64::from(config.agent),
                u64::from(config.incarnation),
                worker,
            ],
        );
        workers.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                one_call(&*store, &mut rng, stall_percent).await;
                // An agent thinks between tool calls.
                tokio::time::sleep(Duration::from_millis(rng.below(10))).await;
            }
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    Ok(())
}

/// Opens the store at `url`, trying again for up to 10 s (a server may be restarting).
pub async fn open_with_retries(url: &str) -> Result<Arc<dyn Store>, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match idem::store::open(url).await {
            Ok(store) => return Ok(store),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the store at {url} did not open: {last}"))
}

/// Draws a call (what, on which key, which faults: a body stalls past its lease in
/// `stall_percent` of them), makes it, and writes it down.
async fn one_call(store: &dyn Store, rng: &mut Rng, stall_percent: u64) {
    let world = world();
    let call = CallId {
        agent: world.agent,
        incarnation: world.incarnation,
        seq: world.calls.fetch_add(1, Ordering::Relaxed),
    };
    let age = world.run_started.elapsed();
    // Mostly this period's keys; one call in five goes back to a recent period's (a replay,
    // or a key an earlier owner left in doubt).
    let back = if rng.percent(20) { rng.below(5) } else { 0 };
    let period = (age.as_millis() / TOOL_PERIOD.as_millis()) as u64;
    let account =
        (period.saturating_sub(back) * u64::from(ACCOUNTS) + rng.below(u64::from(ACCOUNTS))) as u32;
    let period = (age.as_millis() / ORDER_PERIOD.as_millis()) as u64;
    let order =
        (period.saturating_sub(back) * u64::from(ORDERS) + rng.below(u64::from(ORDERS))) as u32;
    let op = match rng.below(100) {
        0..=24 => Op::Tool {
            action: Action::SendEmail,
            key: account,
        },
        25..=44 => Op::Tool {
            action: Action::Charge,
            key: account,
        },
        45..=54 => Op::Tool {
            action: Action::Wire,
            key: account,
        },
        _ => Op::Saga { order },
    };
    let armed = rng.percent(1).then(|| Armed {
        point: Point::ALL[rng.below(Point::ALL.len() as u64) as usize],
        skip: std::cell::Cell::new(rng.below(3) as u32),
    });
    let stalls = rng.percent(stall_percent);
    let give_up_after = rng
        .percent(5)
        .then(|| Duration::from_millis(rng.between(5, 300)));
    let _ = append(
        &world.history,
        &Event::Start {
            call,
            op: op.clone(),
            at_ms: now_ms(),
        },
    );
    let made = make(store, &op);
    let outcome = CALL
        .scope(
            call,
            STALLS.scope(
                stalls,
                ARMED.scope(armed, async {
                    match give_up_after {
                        Some(limit) => tokio::time::timeout(limit, made)
                            .await
                            .unwrap_or(Outcome::TimedOut),
                        None => made.await,
                    }
                }),
            ),
        )
        .await;
    let _ = append(
        &world.history,
        &Event::End {
            call,
            outcome,
            at_ms: now_ms(),
        },
    );
}

async fn make(store: &dyn Store, op: &Op) -> Outcome {
    match *op {
        Op::Tool { action, key } => {
            let (result, disposition) = match action {
                Action::SendEmail => idem::observe(send_email(key)).await,
                Action::Charge => idem::observe(charge(key)).await,
                _ => idem::observe(wire(key)).await,
            };
            let disposition = disposition.map(|d| d.as_str().to_owned());
            match result {
                Ok(value) => Outcome::Ok {
                    value: Some(value),
                    disposition,
                },
                Err(error) => failed(error),
            }
        }
        Op::Saga { order: number } => match order(store, number).await {
            Ok(()) => Outcome::Ok {
                value: None,
                disposition: None,
            },
            Err(error) => failed(error),
        },
    }
}

fn failed(error: ToolError) -> Outcome {
    match error {
        ToolError::Idem { kind, message } => Outcome::Err { kind, message },
        ToolError::Declined => Outcome::Err {
            kind: "Declined".into(),
            message: "declined".into(),
        },
    }
}
