//! What a run writes down, one JSON object a line, in files outside the store:
//!
//! - `history-<agent>-<incarnation>.jsonl`: each call and saga an agent process made, a
//!   `start` line before it and an `end` line after it (a killed process leaves starts with
//!   no end), and a `crash` line where it kills itself on purpose;
//! - `ledger.jsonl`: the side effects, appended by the bodies as they happen (the "world" the
//!   tools act on), each line one `write_all` of a few hundred bytes to a file opened with
//!   `O_APPEND` (one `write(2)` on a local file system), so lines from several processes do
//!   not interleave and a SIGKILL loses none that was written;
//! - `faults.jsonl`: each fault the driver injected, when;
//! - `final.json`: what the store holds at the end, read by the driver after recovery.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, on this process's clock (an agent under `faketime`
/// writes its skewed clock: the checker orders nothing by these).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which call: the agent slot, the incarnation of its process (each restart after a kill is
/// one more), and the call's number in that process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CallId {
    /// The agent slot.
    pub agent: u32,
    /// How many times the slot's process was started before this one.
    pub incarnation: u32,
    /// The call's number within the process.
    pub seq: u64,
}

/// What a tool returns: the side effect it made, named by the action and key it was made
/// for, so that a value handed to the wrong caller shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The tool (or saga step) that made it.
    pub action: Action,
    /// The tool's argument: an account, an order.
    pub key: u32,
    /// The effect's own number, unique in the run.
    pub value: u64,
}

/// The tools and saga steps of the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `on_stale = takeover`: at-least-once in the window of a dead owner.
    SendEmail,
    /// `on_stale = takeover` with a `verify` that asks the ledger.
    Charge,
    /// `on_stale = review`: never run twice.
    Wire,
    /// Saga step, compensated by un-reserving.
    Reserve,
    /// Saga step, compensated by a refund.
    ChargeCard,
    /// Saga step, irreversible.
    Notify,
}

impl Action {
    /// The plain tools, as opposed to saga steps.
    pub const TOOLS: [Action; 3] = [Action::SendEmail, Action::Charge, Action::Wire];

    /// Its name in ledgers, records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Action::SendEmail => "send_email",
            Action::Charge => "charge",
            Action::Wire => "wire",
            Action::Reserve => "reserve",
            Action::ChargeCard => "charge_card",
            Action::Notify => "notify",
        }
    }

    /// Whether it is a step of the `order` saga.
    pub fn is_step(self) -> bool {
        matches!(self, Action::Reserve | Action::ChargeCard | Action::Notify)
    }
}

/// What an agent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A call of a tool.
    Tool {
        /// Which tool.
        action: Action,
        /// Its argument.
        key: u32,
    },
    /// A run of the `order` saga.
    Saga {
        /// The order's number (the saga id is `order-<n>`).
        order: u32,
    },
}

/// How a call ended, as its caller saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// A value: the tool's effect, and idem's `Disposition` (`executed`, `replayed`, …).
    Ok {
        /// The value (a saga's: none).
        value: Option<Effect>,
        /// `Disposition::as_str`, when observed.
        disposition: Option<String>,
    },
    /// An error, as the caller got it.
    Err {
        /// The error's variant (`LostOwnership`, `NeedsReview`, …) or `Declined`.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The caller gave up (a `tokio::time::timeout` dropped the call's future).
    TimedOut,
}

/// A line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A call is about to be made.
    Start {
        /// Which call.
        call: CallId,
        /// What it is.
        op: Op,
        /// When, on the agent's clock.
        at_ms: u64,
    },
    /// A call returned to its caller.
    End {
        /// Which call.
        call: CallId,
        /// What the caller got.
        outcome: Outcome,
        /// When, on the agent's clock.
        at_ms: u64,
    },
    /// The agent kills itself now (SIGKILL), at a fault point of the schedule.
    Crash {
        /// The call during which it does.
        call: CallId,
        /// Where: `before_claim`, `body_after_effect`, …
        point: String,
    },
}

/// A line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "line")]
pub enum LedgerLine {
    /// A body made its side effect.
    Effect {
        /// The effect, as the body made it.
        effect: Effect,
        /// `CallContext::resumed`: the body runs again after an owner died (the documented
        /// at-least-once window).
        resumed: bool,
        /// For saga steps, the value the downstream service answered: the first effect made
        /// under the step's idempotency key (a service deduplicates by it, as payment APIs
        /// do). For tools, the effect's own value.
        answered: u64,
        /// The idem key the body ran under (`idem::current_key`), for the driver's last look
        /// at the store.
        idem_key: String,
        /// The fencing token of the claim the body ran under: two effects of one key under
        /// one token are two owners of one claim.
        token: u64,
        /// Who: agent slot and incarnation.
        agent: u32,
        /// The incarnation.
        incarnation: u32,
    },
    /// The driver restarted a store that loses its records on a restart (Redis without
    /// persistence), and it answers again: effects before this line belong to an earlier era
    /// of the store, and a break of an invariant across eras is what its documentation
    /// allows.
    StoreLost {
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// The driver is about to restart such a store: effects from here to the next
    /// `StoreLost` may belong to either era (made before the kill, or after the restart).
    StoreLosing {
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A compensation undid a saga step's effect.
    Compensation {
        /// The effect undone (the step's output, as the compensation got it).
        undone: Effect,
        /// Who.
        agent: u32,
        /// The incarnation (the driver's own recovery is agent `--agents`, incarnation 0).
        incarnation: u32,
    },
}

/// A fault the driver injected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultLine {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// The kind: `kill_agent`, `pause_agent`, `restart_store`, …
    pub kind: String,
    /// More: which agent, how long.
    pub detail: String,
}

/// What the store holds at the end, and the sagas' ends, as the driver read them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Final {
    /// Per tool and key: the value recorded, if the record is completed with a value.
    pub records: BTreeMap<String, Option<u64>>,
    /// Per order: the saga's status name after recovery, and its steps' states.
    pub sagas: BTreeMap<u32, SagaEnd>,
}

/// A saga as recovery left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEnd {
    /// `SagaStatus::as_str`, or `none` when no log exists.
    pub status: String,
    /// Step name and state (`done`, `compensated`, `started`, …), in order.
    pub steps: Vec<(String, String)>,
}

/// The name a tool's record has in [`Final::records`].
pub fn record_name(action: Action, key: u32) -> String {
    format!("{}/{key}", action.name())
}

/// Appends `line` as one line to the file at `path`, with one `write_all`.
pub fn append<T: Serialize>(path: &Path, line: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(&text)
}

/// The history files in a run's `folder`, in name order.
pub fn history_files(folder: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("history-") && name.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every line of a JSON-lines file; a last line cut short (its writer was killed in
/// the middle of a write, which `O_APPEND` writes of this size do not do, but a full disk
/// could) is skipped, any other bad line is an error naming it.
pub fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let last = lines.len().saturating_sub(1);
    let mut read = Vec::with_capacity(lines.len());
    for (number, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(value) => read.push(value),
            Err(_) if number == last && !line.ends_with('}') => {}
            Err(e) => return Err(format!("{}:{}: {e}: {line}", path.display(), number + 1)),
        }
    }
    Ok(read)
}
