//! `idem`: see and settle what agents left behind in an idem store.
//!
//! A key stuck IN_PROGRESS because its agent died, a payment parked NEEDS_REVIEW, a saga
//! whose refund keeps failing and now NEEDS_ATTENTION: this command shows them and settles
//! them, on any durable store, without SQL or Lua.
//!
//! ```text
//! idem --store sqlite://idem.db keys --status in-progress
//! idem --store sqlite://idem.db show 9f3a1c
//! idem --store sqlite://idem.db unlock 9f3a1c
//! idem --store sqlite://idem.db settle 9f3a1c --result '{"id":"ch_1"}'
//! idem --store redis://127.0.0.1:6379/0 sagas --status needs-attention
//! idem --store redis://127.0.0.1:6379/0 saga order-42
//! idem --store redis://127.0.0.1:6379/0 resolve order-42 --note "refunded by hand, ticket 1234"
//! IDEM_STORE=postgres://idem@db/idem idem purge --dry-run
//! IDEM_STORE=postgres://idem@db/idem idem stats --json
//! ```
//!
//! | command | what it does |
//! |---|---|
//! | `keys [--status S] [--action NAME] [--limit N] [--json]` | lists records, newest first: action, key prefix, status, owner token, age, expiry |
//! | `show KEY [--json]` | one record (a unique key prefix is enough), its stored result pretty-printed |
//! | `unlock KEY [--yes] [--force]` | releases a stuck IN_PROGRESS or NEEDS_REVIEW record, so the next call runs its body; asks first unless `--yes`; refuses a live lease, or the claim of a running saga (`idem::recover`'s job), unless `--force` |
//! | `forget KEY [--yes]` | deletes a recorded result (or a recorded final error) before its TTL runs out, so the next call runs its body again; asks first unless `--yes`; refuses anything but a completed record, and a saga's outcome |
//! | `settle KEY --result JSON [--ttl SECONDS] [--yes] [--force]` | records the result of a call left in doubt (its owner died, its error was ambiguous, or it waits for review), once you know its effect happened: every later call replays it; the same refusals as `unlock` |
//! | `sagas [--status S] [--limit N] [--json]` | lists saga logs, the latest status change first |
//! | `saga ID [--json]` | one saga: status, error, note, and each step's state, arguments, output and error |
//! | `resolve ID --note TEXT [--key PREFIX]` | marks a NEEDS_ATTENTION saga as settled by hand, keeping the note |
//! | `purge [--expired] [--dry-run]` | deletes the expired records, 1000 at a time (a progress bar on a terminal when there are more), and prints the count |
//! | `stats [--json]` | counts of records by action and status |
//! | `mcp-proxy [--config FILE] [--upstream URL] [--listen ADDR] -- COMMAND…` | an MCP server in front of another (a command on stdio, or a streamable-HTTP URL): each `tools/call` runs once per tool and arguments, its result replayed to retries, other sessions and other copies of the agent; everything else passes through (`idem mcp-proxy --help`) |
//!
//! # The store
//!
//! `--store URL` or the environment variable `IDEM_STORE` (`mcp-proxy` opens it as agents
//! do, creating it, and without one uses `$XDG_STATE_HOME/idem/mcp-proxy.db`): `sqlite://path/to/idem.db` (or
//! `sqlite:///absolute/path.db`; the file must exist: the command never creates a database),
//! `redis://host:port/db?prefix=billing:`, `postgres://user@host/db?schema=idem`. `memory:` is
//! refused: a memory store lives inside the process that made it, so a new process would see
//! an empty one. A password in a URL is shown as `***` in messages.
//!
//! # Statuses
//!
//! Records: `in_progress`, `completed` (a value is recorded), `failed` (an error declared final
//! with `cache_err` is recorded), `needs_review`. Sagas: `running`, `compensating`,
//! `completed`, `compensated`, `needs_attention`, `interrupted`, `resolved`. On the command
//! line `-` and `_` are the same (`in-progress`, `needs_attention`).
//!
//! # Output
//!
//! Tables and reports go to standard output, errors, prompts and the progress bar to standard
//! error. Ages and expiries in tables are measured on this machine's clock (`3m12s`,
//! `in 23h59m`, `expired 2m ago`, `never` for a record that waits for an operator).
//!
//! `--json` (on `keys`, `show`, `sagas`, `saga`, `stats`) prints one JSON document whose
//! field names are snake_case and stable. Times are RFC 3339 strings in UTC with
//! milliseconds (`"2025-06-01T03:12:45.120Z"`); keys are the full 64 hex digits; stored
//! results, step arguments and step outputs are embedded as JSON values. A record:
//!
//! ```json
//! {
//!   "action": "charge_card",
//!   "created_at": "2025-06-01T03:12:45.120Z",
//!   "expired": false,
//!   "expires_at": "2025-06-02T03:12:45.311Z",
//!   "fingerprint": "…64 hex digits…",
//!   "key": "…64 hex digits…",
//!   "outcome": { "ok": { "charge_id": "ch_1" } },
//!   "status": "completed",
//!   "token": 1
//! }
//! ```
//!
//! (`outcome` only in `show`: `null`, `{"ok": value}` or `{"err": value}`.) `keys` and
//! `sagas` print arrays; `saga ID` prints an array too (one saga, unless sagas of several
//! namespaces share the id). A saga has `id`, `key`, `status`, `error`, `note`,
//! `updated_at` and `steps`, each step `index`, `name`, `key`, `irreversible`, `state`,
//! `args`, `output`, `error`. `stats` gives `actions` (one object per action with `action`,
//! `in_progress`, `completed`, `failed`, `needs_review`, `total`) and `total` (the same
//! counts over all actions).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | not found, refused (completed record, live lease, running saga's claim, not confirmed, saga not needing attention, ambiguous prefix), or the store failed (or could not be reached); the message names the store and the key |
//! | 2 | usage: an unknown command or option, a bad status or key prefix, no store given, a `memory:` store, a URL of an unknown scheme |
#![warn(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    missing_debug_implementations
)]
#![forbid(unsafe_code)]

/// A line on stderr for the person at the terminal (what matched nothing, what was left
/// out); a stderr that cannot be written to is ignored, not a panic as with `eprintln!`.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

mod forget;
mod mcp_proxy;
mod migrate;
mod purge;
mod records;
mod sagas;
mod settle;
mod stats;
mod table;
mod time;

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use idem_runtime::store::{self, Store};

/// See and settle what agents left behind in an idem store: keys stuck in progress, records
/// parked for review, sagas that need attention, expired records.
#[derive(Debug, Parser)]
#[command(
    name = "idem",
    version,
    after_long_help = AFTER_HELP,
    after_help = "Exit codes: 0 done, 1 not found, refused or the store failed, 2 usage. \
                  More with --help."
)]
struct Cli {
    /// The store: sqlite://path/to/idem.db, redis://host:port/db?prefix=…,
    /// postgres://user@host/db?schema=… (memory: is refused: a new process sees an empty one)
    #[arg(
        long,
        global = true,
        env = "IDEM_STORE",
        value_name = "URL",
        display_order = 100
    )]
    store: Option<String>,

    /// Print recorded results and saga step arguments and outputs (`show`, `saga`, `sagas
    /// --json`). By default each is shown as its size only: they may hold personal data, and
    /// a terminal or a log of this command is not the place for it. Values an
    /// EncryptedStore sealed are shown as their size and key id either way.
    #[arg(long, global = true, display_order = 101)]
    show_values: bool,

    #[command(subcommand)]
    command: Command,
}

/// The end of `idem --help`.
const AFTER_HELP: &str = "\
Statuses: records are in_progress, completed, failed (an error recorded with cache_err) or
needs_review; sagas are running, compensating, completed, compensated, needs_attention,
interrupted or resolved. `-` and `_` are the same on the command line.

Output: tables on stdout; errors, prompts and progress on stderr. Ages are measured on this
machine's clock. --json prints snake_case fields, times as RFC 3339 UTC strings with
milliseconds, keys as 64 hex digits, stored results as JSON values.

Exit codes:
  0  done
  1  not found, refused (completed record, live lease, not confirmed, saga not needing
     attention, ambiguous key prefix), or the store failed
  2  usage: unknown command or option, bad status or key prefix, no store, memory:";

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Operate(Operate),
    /// Put idem in front of an MCP server: each tool call runs once, retries get its result
    #[command(name = "mcp-proxy", long_about = mcp_proxy::MCP_PROXY_HELP)]
    McpProxy(mcp_proxy::McpProxyArgs),
    /// Move a Redis store written by an older idem into the layout this idem reads
    #[command(long_about = migrate::MIGRATE_HELP)]
    Migrate(migrate::MigrateArgs),
}

/// The operator's commands: they look at a store as it is and settle what is in it.
#[derive(Debug, Subcommand)]
enum Operate {
    /// List records, newest first: action, key prefix, status, owner token, age, expiry
    Keys(records::KeysArgs),
    /// Show one record and its stored result (a unique key prefix is enough)
    Show(records::ShowArgs),
    /// Release a stuck IN_PROGRESS or NEEDS_REVIEW record so the next call runs its body
    #[command(long_about = records::UNLOCK_HELP)]
    Unlock(records::UnlockArgs),
    /// Delete a recorded result before its TTL runs out, so the next call runs its body
    #[command(long_about = forget::FORGET_HELP)]
    Forget(forget::ForgetArgs),
    /// Record the result of a call left in doubt, once you know its effect happened
    #[command(long_about = settle::SETTLE_HELP)]
    Settle(settle::SettleArgs),
    /// List saga logs, the latest status change first
    Sagas(sagas::SagasArgs),
    /// Show one saga: its status, error, note, and each step's state, output and error
    Saga(sagas::SagaArgs),
    /// Mark a NEEDS_ATTENTION saga as settled by hand, keeping a note
    #[command(long_about = sagas::RESOLVE_HELP)]
    Resolve(sagas::ResolveArgs),
    /// Delete the expired records (completed records past their TTL, dead claims past their lease and TTL)
    #[command(long_about = purge::PURGE_HELP)]
    Purge(purge::PurgeArgs),
    /// Count records by action and status
    Stats(stats::StatsArgs),
}

/// Why a command did not do what it was asked, and the exit code that says so.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    /// `None` for a reader that went away (a closed pipe): nothing more to say.
    message: Option<String>,
    usage: bool,
}

impl Failure {
    /// Not found, refused, or the store failed: exit code 1.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: Some(message.into()),
            usage: false,
        }
    }

    /// The command line is wrong: exit code 2, with clap's usage line.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: Some(message.into()),
            usage: true,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            // `idem keys | head`: the reader has what it wanted.
            return Failure {
                code: 0,
                message: None,
                usage: false,
            };
        }
        Failure::refused(format!("cannot write the output: {error}"))
    }
}

/// What every command works with: the open store, how to name it, and the time it started.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// `the sqlite store at sqlite:///var/lib/agent/idem.db` (passwords hidden).
    pub(crate) label: String,
    /// The time ages and expiries are measured from.
    pub(crate) now: SystemTime,
    /// `--show-values`: print stored values, not only their size.
    pub(crate) show_values: bool,
}

impl Ctx {
    /// A failure of the store while doing `what`: exit code 1, naming the store (and through
    /// idem's error, the key when there is one).
    pub(crate) fn failed(&self, what: impl fmt::Display, error: idem_runtime::Error) -> Failure {
        Failure::refused(format!("cannot {what} in {}: {error}", self.label))
    }
}

/// How long opening a store may take before the command gives up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An operator's command is one request after another; the proxy serves agents (and
    // waits on the store and the server) at once.
    let runtime = if matches!(cli.command, Command::McpProxy(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => Err(Failure::refused(format!(
            "cannot start the async runtime: {error}"
        ))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

/// Prints a failure on stderr and gives its exit code.
fn report(failure: Failure) -> ExitCode {
    match failure.message {
        Some(message) if failure.usage => {
            // clap's own format: `error: …`, the usage line, a pointer to --help; exit 2.
            let _ = Cli::command()
                .error(ErrorKind::ValueValidation, message)
                .print();
        }
        Some(message) => {
            let _ = writeln!(io::stderr(), "error: {message}");
        }
        None => {}
    }
    ExitCode::from(failure.code)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        // The proxy opens its store as agents do (creating it), and has a default one.
        Command::McpProxy(args) => mcp_proxy::run(cli.store.as_deref(), args).await,
        Command::Operate(command) => operate(cli.store.as_deref(), command, cli.show_values).await,
        Command::Migrate(args) => {
            let mut out = io::stdout().lock();
            migrate::migrate(cli.store.as_deref(), &args, &mut out).await?;
            out.flush()?;
            Ok(())
        }
    }
}

/// Runs an operator's command on the store at `url`, opened as it is.
async fn operate(url: Option<&str>, command: Operate, show_values: bool) -> Result<(), Failure> {
    let url = url.map(str::trim).unwrap_or_default();
    if url.is_empty() {
        return Err(Failure::usage(
            "no store given: pass --store URL or set IDEM_STORE \
             (sqlite://path/to/idem.db, redis://host:port/db, postgres://user@host/db)",
        ));
    }
    let mut ctx = open(url).await?;
    ctx.show_values = show_values;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match command {
        Operate::Keys(args) => records::keys(&ctx, &args, &mut out).await,
        Operate::Show(args) => records::show(&ctx, &args, &mut out).await,
        Operate::Unlock(args) => records::unlock(&ctx, &args, &mut out).await,
        Operate::Forget(args) => forget::forget(&ctx, &args, &mut out).await,
        Operate::Settle(args) => settle::settle(&ctx, &args, &mut out).await,
        Operate::Sagas(args) => sagas::list(&ctx, &args, &mut out).await,
        Operate::Saga(args) => sagas::show(&ctx, &args, &mut out).await,
        Operate::Resolve(args) => sagas::resolve(&ctx, &args, &mut out).await,
        Operate::Purge(args) => purge::purge(&ctx, &args, &mut out).await,
        Operate::Stats(args) => stats::stats(&ctx, &args, &mut out).await,
    }?;
    out.flush()?;
    Ok(())
}

/// Opens the store named by `url`, refusing what an operator's command cannot use.
async fn open(url: &str) -> Result<Ctx, Failure> {
    let shown = redact(url);
    let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
    match scheme {
        "memory" => {
            return Err(Failure::usage(format!(
                "`{shown}` is a memory store: it lives inside the process that made it, so this \
                 command would only see a new, empty one; give the durable store your agents \
                 use (sqlite://, redis:// or postgres://)"
            )))
        }
        "sqlite" => {
            let rest = &url["sqlite:".len()..];
            if rest.strip_prefix("//").unwrap_or(rest).is_empty() {
                return Err(Failure::usage(format!(
                    "`{shown}` names no file: sqlite://path/to/idem.db or sqlite:///absolute/path.db"
                )));
            }
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "postgres" | "postgresql" => {}
        _ => {
            return Err(Failure::usage(format!(
                "`{shown}` is not a store URL: expected sqlite://…, redis://… or postgres://…"
            )))
        }
    }
    // As it is: an operator's look creates, migrates and purges nothing.
    let opened = tokio::time::timeout(OPEN_TIMEOUT, store::open_existing(url)).await;
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => {
            return Err(Failure::refused(format!(
                "cannot open the store at {shown}: {error}"
            )))
        }
        Err(_) => {
            return Err(Failure::refused(format!(
                "cannot open the store at {shown}: no answer within {}s",
                OPEN_TIMEOUT.as_secs()
            )))
        }
    };
    Ok(Ctx {
        label: format!("the {} store at {shown}", store.name()),
        store,
        now: SystemTime::now(),
        show_values: false,
    })
}

/// `url` with the password of its user info, if any, replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].split_once(':') {
        Some((user, _password)) => format!(
            "{scheme}://{user}:***@{}{}",
            &authority[at + 1..],
            &rest[authority_end..]
        ),
        None => url.to_owned(),
    }
}

/// Writes `value` as pretty JSON and a newline.
pub(crate) fn print_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| Failure::refused(format!("cannot write JSON: {error}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact("postgres://idem:s3cret@db:5432/idem?schema=x"),
            "postgres://idem:***@db:5432/idem?schema=x"
        );
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("postgres://idem@db/idem"), "postgres://idem@db/idem");
        assert_eq!(redact("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
        assert_eq!(redact("memory:"), "memory:");
    }
}
