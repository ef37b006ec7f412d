//! The `idem` command run as an operator runs it, against stores filled by real
//! `#[idempotent]` calls and real sagas: SQLite (a file, always), Redis and PostgreSQL (real
//! servers the tests start on loopback; without them those tests skip and say why, under
//! `CI=true` they fail).
//!
//! Every scenario runs on each store, on a store of its own (a file, a key prefix, a schema).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use idem::store::{RecordQuery, Store};
use idem::{saga_step, Retry, Saga};
use idem_runtime::conformance::servers::{Flavor, PostgresServer, RedisCluster, RedisServer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

// ---- The tools and sagas that fill the stores -------------------------------------------

#[path = "../examples/tools/mod.rs"]
mod tools;

#[path = "cli/mcp_proxy.rs"]
mod mcp_proxy;

use tools::{Receipt, ToolError};

/// Completes: a `completed` record with a value.
#[idem::idempotent(skip = [store], store = store)]
async fn send_quote(store: &dyn Store, customer: &str, quote: &str) -> Result<Receipt, ToolError> {
    Ok(Receipt {
        message_id: format!("<{quote}@mail.example.com>"),
        to: format!("{customer}@example.com"),
    })
}

/// Declines, finally: a `failed` record.
#[idem::idempotent(skip = [store], store = store, cache_err = ToolError::is_final)]
async fn charge_card(
    store: &dyn Store,
    customer: &str,
    amount_cents: u64,
) -> Result<String, ToolError> {
    Err(ToolError::Declined(format!(
        "card of {customer} declined for {amount_cents}"
    )))
}

/// Hangs inside its body under a long lease: dropped there, it leaves an `in_progress`
/// record whose lease is live.
#[idem::idempotent(skip = [store, started], store = store, lease = "1h")]
async fn export_report(store: &dyn Store, started: &Notify, report: &str) -> Result<(), ToolError> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

/// Hangs inside its body under a short lease: dropped there, it leaves an `in_progress`
/// record whose owner is dead (the lease runs out).
#[idem::idempotent(skip = [store, started], store = store, lease = "200ms")]
async fn sync_crm(store: &dyn Store, started: &Notify, customer: &str) -> Result<(), ToolError> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

/// A payment: an owner that dies inside it parks the key for review. Hangs when given
/// `started`; counts its runs in `ledger`.
#[idem::idempotent(skip = [store, started, ledger], store = store, lease = "200ms", on_stale = review)]
async fn wire_transfer(
    store: &dyn Store,
    started: Option<&Notify>,
    ledger: &AtomicUsize,
    amount_cents: u64,
) -> Result<u64, ToolError> {
    ledger.fetch_add(1, Ordering::SeqCst);
    if let Some(started) = started {
        started.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(amount_cents)
}

/// A charge whose provider answers "timed out" after charging: the key is left in doubt
/// (`in_doubt`), for an operator to settle. Counts its runs in `ledger`.
#[idem::idempotent(skip = [store, ledger], store = store, in_doubt = ToolError::is_unavailable)]
async fn book_flight(
    store: &dyn Store,
    ledger: &AtomicUsize,
    flight: &str,
) -> Result<String, ToolError> {
    if ledger.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(ToolError::Unavailable(
            "the airline timed out after booking".into(),
        ));
    }
    Ok(format!(
        "booking for {flight}, run {}",
        ledger.load(Ordering::SeqCst)
    ))
}

/// Kept for 100 ms: records that expire, for `purge`.
#[idem::idempotent(skip = [store], store = store, ttl = "100ms")]
async fn ping(store: &dyn Store, n: u32) -> Result<u32, ToolError> {
    Ok(n)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contract {
    id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    id: String,
    amount_cents: u64,
}

#[saga_step(compensate = cancel_contract)]
async fn create_contract(customer: &str) -> Result<Contract, ToolError> {
    Ok(Contract {
        id: format!("ct_{customer}"),
    })
}

async fn cancel_contract(_: Contract) -> Result<(), ToolError> {
    Ok(())
}

/// Declines the customer `declined`.
#[saga_step(compensate = refund)]
async fn take_payment(customer: &str, amount_cents: u64) -> Result<Charge, ToolError> {
    if customer == "declined" {
        return Err(ToolError::Declined("card declined".into()));
    }
    Ok(Charge {
        id: format!("ch_{customer}"),
        amount_cents,
    })
}

/// Fails for the customer `stuck`: the provider is down, whatever the retries.
async fn refund(charge: Charge) -> Result<(), ToolError> {
    if charge.id == "ch_stuck" {
        return Err(ToolError::Unavailable(
            "the payment provider is down".into(),
        ));
    }
    Ok(())
}

/// Fails for the customer `stuck`; hangs for a customer whose name starts with `hang` (see
/// [`hang_signal`]).
#[saga_step(compensate = cancel_shipment)]
async fn ship_order(customer: &str) -> Result<String, ToolError> {
    if customer == "stuck" {
        return Err(ToolError::Unavailable("the warehouse is closed".into()));
    }
    if customer.starts_with("hang") {
        hang_signal(customer).notify_one();
        std::future::pending::<()>().await;
    }
    Ok(format!("shipment for {customer}"))
}

/// What `ship_order` notifies when it hangs for `customer` (steps take only logged
/// arguments, so the signal is found by name).
fn hang_signal(customer: &str) -> Arc<Notify> {
    static SIGNALS: Mutex<Vec<(String, Arc<Notify>)>> = Mutex::new(Vec::new());
    let mut signals = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, signal)) = signals.iter().find(|(name, _)| name == customer) {
        return Arc::clone(signal);
    }
    let signal = Arc::new(Notify::new());
    signals.push((customer.to_owned(), Arc::clone(&signal)));
    signal
}

async fn cancel_shipment(_: String) -> Result<(), ToolError> {
    Ok(())
}

/// contract → payment → shipment, for `customer`, as saga `id`.
async fn run_order(store: &dyn Store, id: &str, customer: &str) -> Result<String, ToolError> {
    run_order_leased(store, id, customer, Duration::from_secs(10)).await
}

/// [`run_order`] with a lease of `lease` on the saga's claim.
async fn run_order_leased(
    store: &dyn Store,
    id: &str,
    customer: &str,
    lease: Duration,
) -> Result<String, ToolError> {
    let quick = Retry::new(2).backoff(Duration::from_millis(1), Duration::from_millis(2));
    Saga::new(id)
        .store(store)
        .lease(lease)
        .compensation_retry(quick)
        .forward_retry(quick)
        .run(|s| async move {
            let contract = s.step(create_contract(customer)).await?;
            s.step(take_payment(customer, 4200)).await?;
            s.step(ship_order(customer)).await?;
            Ok(contract.id)
        })
        .await
}

/// Drops `call` once its body has started (it then hangs): the owner "dies" there.
async fn die_inside<F: Future>(call: F, started: &Notify) {
    tokio::select! {
        _ = call => panic!("the body was meant to hang"),
        () = started.notified() => {}
    }
}

/// Waits until every record of `action` has an expiry in the past (a dead owner's lease, a
/// short TTL), for at most ten seconds; `may_vanish`: the store deletes expired results by
/// itself (Redis), so none left is fine too.
async fn until_expired(store: &dyn Store, action: &str, may_vanish: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = store
            .list_records(&RecordQuery::new().action(action).limit(10_000))
            .await
            .expect("list_records");
        let now = SystemTime::now();
        if (may_vanish || !records.is_empty())
            && records
                .iter()
                .all(|record| record.expires_at.is_some_and(|at| at < now))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the records of {action} did not expire: {records:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One record of each kind: two completed (`send_quote`), one failed (`charge_card`), one in
/// progress with a live lease (`export_report`), one in progress whose owner died
/// (`sync_crm`), one parked for review (`wire_transfer`).
async fn fill_records(store: &dyn Store, ledger: &AtomicUsize) {
    send_quote(store, "ada", "Q-7")
        .await
        .expect("send ada's quote");
    send_quote(store, "bob", "Q-8")
        .await
        .expect("send bob's quote");
    assert!(matches!(
        charge_card(store, "ada", 4200).await,
        Err(ToolError::Declined(_))
    ));
    let started = Notify::new();
    die_inside(export_report(store, &started, "q3"), &started).await;
    die_inside(sync_crm(store, &started, "ada"), &started).await;
    die_inside(wire_transfer(store, Some(&started), ledger, 990), &started).await;
    until_expired(store, "sync_crm", false).await;
    until_expired(store, "wire_transfer", false).await;
    let parked = wire_transfer(store, None, ledger, 990).await;
    assert!(
        matches!(&parked, Err(ToolError::Idem(why)) if why.contains("review")),
        "a dead owner's payment is parked for review: {parked:?}"
    );
    assert_eq!(ledger.load(Ordering::SeqCst), 1);
}

// ---- The stores ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Redis,
    RedisCluster,
    Postgres,
}

/// A store of one scenario: its URL for the command, and a handle for the test's own calls.
struct Env {
    url: String,
    store: Arc<dyn Store>,
    /// `sqlite`, `redis` or `postgres`: how the command names it.
    name: &'static str,
    backend: Backend,
    /// Files to delete at the end (SQLite).
    files: Vec<PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Env {
    /// `idem --store URL ARGS…`, with nothing on stdin.
    fn idem(&self, args: &[&str]) -> Ran {
        self.idem_with_stdin(args, "")
    }

    /// `idem --store URL ARGS…`, with `stdin` on its standard input.
    fn idem_with_stdin(&self, args: &[&str], stdin: &str) -> Ran {
        let mut all = vec!["--store", self.url.as_str()];
        all.extend_from_slice(args);
        run_idem(&all, &[], stdin)
    }

    /// The store as the command names it in messages: `the sqlite store at sqlite:///…`.
    fn label(&self) -> String {
        format!("the {} store at {}", self.name, self.url)
    }
}

/// A fresh, empty store for `scenario`; `None` when its server is not installed (skipped).
async fn fresh(backend: Backend, scenario: &str) -> Option<Env> {
    let (url, name, files) = match backend {
        Backend::Sqlite => {
            let path =
                std::env::temp_dir().join(format!("idem-cli-{}-{scenario}.db", std::process::id()));
            let files: Vec<PathBuf> = ["", "-wal", "-shm"]
                .iter()
                .map(|end| PathBuf::from(format!("{}{end}", path.display())))
                .collect();
            for file in &files {
                let _ = std::fs::remove_file(file);
            }
            (format!("sqlite://{}", path.display()), "sqlite", files)
        }
        Backend::Redis => {
            let server = RedisServer::shared()?;
            (
                format!("{}?prefix=cli:{scenario}:", server.url()),
                "redis",
                Vec::new(),
            )
        }
        Backend::RedisCluster => {
            let cluster = RedisCluster::shared(Flavor::Redis)?;
            (
                format!("{}?prefix=cli:{scenario}:", cluster.url()),
                "redis",
                Vec::new(),
            )
        }
        Backend::Postgres => {
            let server = PostgresServer::shared()?;
            (
                format!("{}?schema=cli_{scenario}", server.url()),
                "postgres",
                Vec::new(),
            )
        }
    };
    let store = idem::store::open(&url).await.expect("open the test store");
    Some(Env {
        url,
        store,
        name,
        backend,
        files,
    })
}

/// What a run of the command did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Asserts exit code 0 and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts `code`, nothing on stdout, and returns stderr.
    fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit code {code}: {self:#?}");
        assert_eq!(self.stdout, "", "a refusal prints nothing on stdout");
        &self.stderr
    }

    /// stdout parsed as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

/// Runs the `idem` binary with `args`, the environment changes `env` (and no `IDEM_STORE`
/// from outside), and `stdin`.
fn run_idem(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Ran {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_idem"));
    command
        .args(args)
        .env_remove("IDEM_STORE")
        .write_stdin(stdin)
        .timeout(Duration::from_secs(120));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run the idem binary");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 on stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 on stderr"),
    }
}

/// A table's header and rows, cells split at two or more spaces.
fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().map(|line| {
        line.split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

/// The row whose first cell is `first` and whose cell `column` is `value`.
fn row<'t>(rows: &'t [Vec<String>], column: usize, value: &str) -> &'t Vec<String> {
    let found: Vec<_> = rows.iter().filter(|row| row[column] == value).collect();
    assert_eq!(
        found.len(),
        1,
        "one row with {value:?} in column {column}: {rows:?}"
    );
    found[0]
}

/// The record of `action` in the JSON listing (the only one of it).
fn record_of<'j>(listing: &'j Value, action: &str) -> &'j Value {
    let found: Vec<&Value> = listing
        .as_array()
        .expect("an array")
        .iter()
        .filter(|record| record["action"] == action)
        .collect();
    assert_eq!(found.len(), 1, "one record of {action}: {listing:#}");
    found[0]
}

fn key_of(listing: &Value, action: &str) -> String {
    record_of(listing, action)["key"]
        .as_str()
        .expect("a key")
        .to_owned()
}

// ---- The scenarios, on every store ---------------------------------------------------------

/// `keys` as a table and as JSON, with each filter; `show` of a value and of a recorded
/// error; `stats` as a table and as JSON.
async fn records_are_listed_shown_and_counted(env: Env) {
    let ledger = AtomicUsize::new(0);
    fill_records(&*env.store, &ledger).await;

    // The table: a header, one row per record, the key as its 12-digit prefix.
    let ran = env.idem(&["keys"]);
    let (header, rows) = table(ran.ok());
    assert_eq!(
        header,
        ["action", "key", "status", "token", "age", "expires"]
    );
    assert_eq!(rows.len(), 6, "{}", ran.stdout);
    let listing = env.idem(&["keys", "--json"]).json();
    assert_eq!(listing.as_array().map(Vec::len), Some(6), "{listing:#}");
    for record in listing.as_array().unwrap() {
        let key = record["key"].as_str().unwrap();
        assert_eq!(key.len(), 64);
        let row = row(&rows, 1, &key[..12]);
        assert_eq!(row[0], record["action"].as_str().unwrap());
        assert_eq!(row[2], record["status"].as_str().unwrap());
        assert_eq!(row[3], record["token"].to_string());
        assert_eq!(row.len(), 6, "every cell filled: {row:?}");
    }
    let statuses: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (row[0].as_str(), row[2].as_str()))
        .collect();
    for expected in [
        ("send_quote", "completed"),
        ("charge_card", "failed"),
        ("export_report", "in_progress"),
        ("sync_crm", "in_progress"),
        ("wire_transfer", "needs_review"),
    ] {
        assert!(statuses.contains(&expected), "{expected:?} in {statuses:?}");
    }
    // Expiries as an operator reads them.
    let expires = |action: &str| row(&rows, 0, action)[5].clone();
    assert!(expires("charge_card").starts_with("in "), "{rows:?}");
    assert!(
        expires("export_report").starts_with("in "),
        "a live lease: {rows:?}"
    );
    let dead = expires("sync_crm");
    assert!(
        dead.starts_with("expired ") && dead.ends_with(" ago"),
        "{dead}"
    );
    assert_eq!(expires("wire_transfer"), "never");

    // The JSON fields.
    let review = record_of(&listing, "wire_transfer");
    assert_eq!(review["status"], "needs_review");
    assert_eq!(review["expires_at"], Value::Null);
    assert_eq!(review["expired"], false);
    let stale = record_of(&listing, "sync_crm");
    assert_eq!(stale["expired"], true);
    let created = stale["created_at"].as_str().unwrap();
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "RFC 3339 UTC with milliseconds: {created}"
    );
    assert_eq!(
        record_of(&listing, "charge_card")["fingerprint"]
            .as_str()
            .map(str::len),
        Some(64)
    );

    // Filters.
    let stuck = env
        .idem(&["keys", "--status", "in-progress", "--json"])
        .json();
    let mut actions: Vec<&str> = stuck
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    assert_eq!(actions, ["export_report", "sync_crm"]);
    let (_, parked) = table(env.idem(&["keys", "--status", "needs_review"]).ok());
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0][0], "wire_transfer");
    let (_, failed) = table(env.idem(&["keys", "--status", "failed"]).ok());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0], "charge_card");
    let (_, quotes) = table(env.idem(&["keys", "--action", "send_quote"]).ok());
    assert_eq!(quotes.len(), 2);
    assert!(quotes.iter().all(|row| row[0] == "send_quote"));
    let limited = env.idem(&["keys", "--limit", "2"]);
    assert_eq!(table(limited.ok()).1.len(), 2);
    assert!(limited.stderr.contains("--limit"), "{limited:#?}");
    let none = env.idem(&["keys", "--action", "nobody"]);
    assert_eq!(none.ok(), "");
    assert!(none.stderr.contains("no records match"), "{none:#?}");
    assert_eq!(
        env.idem(&["keys", "--action", "nobody", "--json"]).json(),
        serde_json::json!([])
    );

    // show: the stored value, pretty-printed, by a prefix of the key.
    let quote_key = key_of(
        &env.idem(&["keys", "--action", "send_quote", "--limit", "1", "--json"])
            .json(),
        "send_quote",
    );
    // By default a stored value is shown as its size only: it may hold personal data.
    let hidden = env.idem(&["show", &quote_key[..10]]).ok().to_owned();
    assert!(
        hidden.contains("result: <") && hidden.contains(" bytes; --show-values prints it>"),
        "{hidden}"
    );
    assert!(!hidden.contains("message_id"), "{hidden}");
    let hidden_json = env.idem(&["show", &quote_key[..10], "--json"]).json();
    assert!(
        hidden_json["outcome"]["ok"]
            .as_str()
            .is_some_and(|shown| shown.ends_with("bytes; --show-values prints it>")),
        "{hidden_json}"
    );
    let shown = env.idem(&["show", &quote_key[..10], "--show-values"]);
    let text = shown.ok();
    assert!(
        text.contains(&format!("key          {quote_key}")),
        "{text}"
    );
    assert!(text.contains("action       send_quote"), "{text}");
    assert!(text.contains("status       completed"), "{text}");
    assert!(
        text.contains("result:\n{\n  \"message_id\": \"<Q-"),
        "pretty JSON: {text}"
    );
    let json = env
        .idem(&["show", &quote_key[..10], "--json", "--show-values"])
        .json();
    assert_eq!(json["key"], quote_key.as_str());
    assert_eq!(json["status"], "completed");
    let receipt: Receipt =
        serde_json::from_value(json["outcome"]["ok"].clone()).expect("the stored receipt");
    assert!(receipt.to.ends_with("@example.com"), "{receipt:?}");
    // A full key in capitals works too.
    assert_eq!(
        env.idem(&["show", &quote_key.to_uppercase(), "--json"])
            .json()["key"],
        quote_key.as_str()
    );

    // show: a recorded error.
    let declined = key_of(&listing, "charge_card");
    let text = env.idem(&["--show-values", "show", &declined[..12]]).stdout;
    assert!(text.contains("status       failed"), "{text}");
    assert!(
        text.contains("error (declared final with cache_err):"),
        "{text}"
    );
    assert!(text.contains("card of ada declined for 4200"), "{text}");
    let json = env
        .idem(&["show", &declined, "--json", "--show-values"])
        .json();
    assert_eq!(
        json["outcome"]["err"],
        serde_json::json!({ "Declined": "card of ada declined for 4200" })
    );
    // show: a record with no result.
    let json = env
        .idem(&["show", &key_of(&listing, "export_report"), "--json"])
        .json();
    assert_eq!(json["outcome"], Value::Null);
    assert_eq!(json["status"], "in_progress");

    // stats.
    let (header, rows) = table(env.idem(&["stats"]).ok());
    assert_eq!(
        header,
        [
            "action",
            "in_progress",
            "completed",
            "failed",
            "needs_review",
            "total"
        ]
    );
    let counts = |action: &str| row(&rows, 0, action)[1..].to_vec();
    assert_eq!(counts("send_quote"), ["0", "2", "0", "0", "2"]);
    assert_eq!(counts("charge_card"), ["0", "0", "1", "0", "1"]);
    assert_eq!(counts("export_report"), ["1", "0", "0", "0", "1"]);
    assert_eq!(counts("sync_crm"), ["1", "0", "0", "0", "1"]);
    assert_eq!(counts("wire_transfer"), ["0", "0", "0", "1", "1"]);
    assert_eq!(counts("total"), ["2", "2", "1", "1", "6"]);
    assert_eq!(rows.last().unwrap()[0], "total");
    let stats = env.idem(&["stats", "--json"]).json();
    assert_eq!(
        stats["total"],
        serde_json::json!({"in_progress": 2, "completed": 2, "failed": 1, "needs_review": 1, "total": 6})
    );
    let quotes = stats["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["action"] == "send_quote")
        .expect("a row for send_quote");
    assert_eq!(quotes["completed"], 2);
    assert_eq!(quotes["total"], 2);
}

/// `unlock`: refused for a completed record, for a live lease without --force, without a
/// confirmation; done with one, and the next call runs its body.
async fn unlock_refuses_what_it_must_and_releases_the_rest(env: Env) {
    let ledger = AtomicUsize::new(0);
    fill_records(&*env.store, &ledger).await;
    let listing = env.idem(&["keys", "--json"]).json();
    let label = env.label();

    // A completed record: nothing to unlock.
    let done = key_of(&listing, "charge_card");
    let why = env
        .idem(&["unlock", &done[..12], "--yes"])
        .fails(1)
        .to_owned();
    assert!(why.contains("nothing to unlock"), "{why}");
    assert!(
        why.contains(&done) && why.contains(&label),
        "names the key and the store: {why}"
    );
    let quotes = env
        .idem(&["keys", "--action", "send_quote", "--json"])
        .json();
    let quote = quotes[0]["key"].as_str().expect("a key");
    let why = env
        .idem(&["unlock", quote, "--yes", "--force"])
        .fails(1)
        .to_owned();
    assert!(
        why.contains("is completed: there is nothing to unlock"),
        "even forced: {why}"
    );

    // A live lease: refused without --force, saying for how long it runs.
    let live = key_of(&listing, "export_report");
    let why = env
        .idem(&["unlock", &live[..12], "--yes"])
        .fails(1)
        .to_owned();
    assert!(
        why.contains("lease is live") && why.contains("ends in "),
        "{why}"
    );
    assert!(
        why.contains("--force") && why.contains(&live) && why.contains(&label),
        "{why}"
    );

    // A dead owner's claim: asks first; no answer, or anything but yes, is a refusal.
    let dead = key_of(&listing, "sync_crm");
    for answer in ["", "n\n", "maybe\n"] {
        let ran = env.idem_with_stdin(&["unlock", &dead[..12]], answer);
        let why = ran.fails(1);
        assert!(
            why.contains("[y/N]"),
            "the question is asked on stderr: {why}"
        );
        assert!(
            why.contains("not confirmed") && why.contains(&dead),
            "{why}"
        );
    }
    assert_eq!(
        env.idem(&["show", &dead, "--json"]).json()["status"],
        "in_progress",
        "still there"
    );
    let unlocked = env.idem_with_stdin(&["unlock", &dead[..12]], "y\n");
    assert!(
        unlocked.ok().contains(&format!("unlocked key {dead}")),
        "{unlocked:#?}"
    );
    let gone = env.idem(&["show", &dead]).fails(1).to_owned();
    assert!(
        gone.contains("no record with key") && gone.contains(&label),
        "{gone}"
    );
    // Unlocking it again: not found.
    assert!(env
        .idem(&["unlock", &dead[..12], "--yes"])
        .fails(1)
        .contains("no record whose key starts with"));

    // The parked payment: unlocked with --yes; the next call runs the body again.
    let parked = key_of(&listing, "wire_transfer");
    let unlocked = env.idem(&["unlock", &parked[..12], "--yes"]);
    assert!(unlocked.ok().contains("was needs_review"), "{unlocked:#?}");
    assert_eq!(
        wire_transfer(&*env.store, None, &ledger, 990).await,
        Ok(990)
    );
    assert_eq!(ledger.load(Ordering::SeqCst), 2, "the body ran again");

    // The live lease, forced (the operator knows its owner is dead).
    let forced = env.idem(&["unlock", &live[..12], "--force", "--yes"]);
    assert!(forced.ok().contains("was in_progress"), "{forced:#?}");
    let left = env
        .idem(&["keys", "--status", "in-progress", "--json"])
        .json();
    assert_eq!(left, serde_json::json!([]));
}

/// `unlock` leaves the claim of a saga whose owner died to `idem::recover`, unless forced.
async fn unlock_leaves_a_dead_sagas_claim_to_recovery(env: Env) {
    let store = &*env.store;
    let customer = format!("hang-{}", env.name);
    let hung = hang_signal(&customer);
    let saga = run_order_leased(store, "order-dead", &customer, Duration::from_millis(300));
    die_inside(saga, &hung).await;
    until_expired(store, "saga", false).await;

    let claim = key_of(
        &env.idem(&["keys", "--action", "saga", "--json"]).json(),
        "saga",
    );
    let sagas = env.idem(&["saga", "order-dead", "--json"]).json();
    assert_eq!(sagas[0]["key"], claim.as_str());
    assert_eq!(sagas[0]["status"], "running");
    let why = env
        .idem(&["unlock", &claim[..12], "--yes"])
        .fails(1)
        .to_owned();
    assert!(
        why.contains("is the claim of saga `order-dead`, which is running"),
        "{why}"
    );
    assert!(
        why.contains("idem::recover") && why.contains("--force"),
        "{why}"
    );
    let forced = env.idem(&["unlock", &claim[..12], "--yes", "--force"]);
    assert!(
        forced.ok().contains(&format!("unlocked key {claim}")),
        "{forced:#?}"
    );
}

/// `show` and `unlock` by a key prefix that matches nothing, or more than one record.
async fn key_prefixes_must_match_one_record(env: Env) {
    // 17 records: two of them share their first hex digit.
    for n in 0..17 {
        send_quote(&*env.store, "ada", &format!("Q-{n}"))
            .await
            .expect("send");
    }
    let listing = env.idem(&["keys", "--json"]).json();
    let keys: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 17);
    let shared = (b'0'..=b'f')
        .map(char::from)
        .find(|digit| keys.iter().filter(|key| key.starts_with(*digit)).count() >= 2)
        .expect("pigeonholes");
    let label = env.label();
    for command in ["show", "unlock"] {
        let why = env
            .idem(&[command, &shared.to_string()])
            .fails(1)
            .to_owned();
        assert!(
            why.contains(&format!("key prefix `{shared}` is ambiguous")),
            "{why}"
        );
        assert!(why.contains(&label), "{why}");
        let named = keys.iter().filter(|key| why.contains(*key)).count();
        assert!(named >= 2, "names the candidates: {why}");

        let missing = "0000000000deadbeef00";
        let why = env.idem(&[command, missing]).fails(1).to_owned();
        assert!(
            why.contains(&format!(
                "no record whose key starts with `{missing}` in {label}"
            )),
            "{why}"
        );
    }
    // A whole key that is not there.
    let absent = "ab".repeat(32);
    let why = env.idem(&["show", &absent]).fails(1).to_owned();
    assert!(
        why.contains(&format!("no record with key {absent} in {label}")),
        "{why}"
    );
}

/// `sagas`, `saga`, `resolve`: listed by status, shown with their steps, settled by hand
/// (and only when they need attention).
async fn sagas_are_listed_shown_and_resolved(env: Env) {
    let store = &*env.store;
    assert_eq!(
        run_order(store, "order-ok", "ok").await,
        Ok("ct_ok".to_owned())
    );
    assert_eq!(
        run_order(store, "order-declined", "declined").await,
        Err(ToolError::Declined("card declined".into()))
    );
    let stuck = run_order(store, "order-stuck", "stuck").await;
    assert!(
        matches!(&stuck, Err(ToolError::Idem(why)) if why.contains("needs attention")),
        "{stuck:?}"
    );

    let (header, rows) = table(env.idem(&["sagas"]).ok());
    assert_eq!(header, ["id", "status", "steps", "updated", "error"]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(row(&rows, 0, "order-ok")[1], "completed");
    assert_eq!(row(&rows, 0, "order-ok")[2], "3");
    assert_eq!(row(&rows, 0, "order-declined")[1], "compensated");
    assert!(
        row(&rows, 0, "order-declined")[4].contains("card declined"),
        "{rows:?}"
    );
    assert_eq!(row(&rows, 0, "order-stuck")[1], "needs_attention");
    assert!(row(&rows, 0, "order-ok")[3].ends_with(" ago"));
    for status in ["needs-attention", "needs_attention"] {
        let (_, rows) = table(env.idem(&["sagas", "--status", status]).ok());
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0], "order-stuck");
    }
    let (_, rows) = table(env.idem(&["sagas", "--status", "completed"]).ok());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "order-ok");
    let compensated = env
        .idem(&["sagas", "--status", "compensated", "--json"])
        .json();
    assert_eq!(compensated.as_array().map(Vec::len), Some(1));
    assert_eq!(compensated[0]["id"], "order-declined");
    let running = env.idem(&["sagas", "--status", "running"]);
    assert_eq!(running.ok(), "");
    assert!(running.stderr.contains("no sagas match"));
    let all = env.idem(&["sagas", "--json"]).json();
    assert_eq!(all.as_array().map(Vec::len), Some(3));

    // One saga: its steps, their outputs, the compensation's error.
    let hidden = env.idem(&["saga", "order-stuck"]).stdout;
    assert!(hidden.contains("args    <"), "{hidden}");
    assert!(!hidden.contains("ch_stuck"), "{hidden}");
    let text = env.idem(&["saga", "order-stuck", "--show-values"]).stdout;
    assert!(text.contains("saga     order-stuck"), "{text}");
    assert!(text.contains("status   needs_attention"), "{text}");
    assert!(text.contains("idem resolve"), "says what to do: {text}");
    assert!(text.contains("0. create_contract"), "{text}");
    assert!(
        text.contains("1. take_payment  compensation_failed"),
        "{text}"
    );
    assert!(
        text.contains(r#"output  {"amount_cents":4200,"id":"ch_stuck"}"#),
        "{text}"
    );
    assert!(text.contains("the payment provider is down"), "{text}");
    assert!(text.contains("2. ship_order  failed"), "{text}");
    assert!(text.contains("the warehouse is closed"), "{text}");
    let json = env
        .idem(&["saga", "order-stuck", "--json", "--show-values"])
        .json();
    let saga = &json[0];
    assert_eq!(saga["status"], "needs_attention");
    assert_eq!(saga["note"], Value::Null);
    assert_eq!(saga["key"].as_str().map(str::len), Some(64));
    let steps = saga["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["name"], "take_payment");
    assert_eq!(steps[1]["state"], "compensation_failed");
    assert_eq!(steps[1]["args"], serde_json::json!(["stuck", 4200]));
    assert_eq!(
        steps[1]["output"],
        serde_json::json!({"id": "ch_stuck", "amount_cents": 4200})
    );
    assert!(steps[1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("the payment provider is down")));
    assert_eq!(steps[2]["state"], "failed");
    assert_eq!(steps[2]["output"], Value::Null);
    let ok = env
        .idem(&["saga", "order-ok", "--json", "--show-values"])
        .json();
    assert_eq!(ok[0]["status"], "completed");
    assert_eq!(ok[0]["steps"][2]["output"], "shipment for ok");

    // Refusals: an unknown saga, a saga that does not need attention.
    let label = env.label();
    let why = env.idem(&["saga", "order-nope"]).fails(1).to_owned();
    assert!(
        why.contains(&format!("no saga with id `order-nope` in {label}")),
        "{why}"
    );
    let why = env
        .idem(&["resolve", "order-nope", "--note", "x"])
        .fails(1)
        .to_owned();
    assert!(why.contains("no saga with id `order-nope`"), "{why}");
    for (id, status) in [("order-ok", "completed"), ("order-declined", "compensated")] {
        let why = env
            .idem(&["resolve", id, "--note", "x"])
            .fails(1)
            .to_owned();
        assert!(
            why.contains(&format!("saga `{id}`"))
                && why.contains(&format!("is {status}, not needs_attention")),
            "{why}"
        );
        assert!(why.contains(&label), "{why}");
    }

    // Resolved by hand: the note is kept, and later runs are told.
    let note = "refunded ch_stuck by hand, ticket OPS-12";
    let resolved = env.idem(&["resolve", "order-stuck", "--note", note]);
    assert!(
        resolved.ok().contains("resolved saga `order-stuck`"),
        "{resolved:#?}"
    );
    assert!(resolved.stdout.contains(note));
    let json = env.idem(&["saga", "order-stuck", "--json"]).json();
    assert_eq!(json[0]["status"], "resolved");
    assert_eq!(json[0]["note"], note);
    assert!(env
        .idem(&["saga", "order-stuck"])
        .ok()
        .contains(&format!("note     {note}")));
    let (_, rows) = table(env.idem(&["sagas", "--status", "resolved"]).ok());
    assert_eq!(rows.len(), 1);
    let again = run_order(store, "order-stuck", "stuck").await;
    assert!(
        matches!(&again, Err(ToolError::Idem(why)) if why.contains(note)),
        "a later run gets the note: {again:?}"
    );
    let why = env
        .idem(&["resolve", "order-stuck", "--note", "again"])
        .fails(1)
        .to_owned();
    assert!(why.contains("is resolved, not needs_attention"), "{why}");
}

/// `purge`: a dry run counts, a purge deletes the expired records and only them.
async fn purge_deletes_expired_records(env: Env) {
    let store = &*env.store;
    // On PostgreSQL, more than one batch of 1000 (and fewer than the 1024 recorded results
    // after which the store purges on its own).
    let pings = match env.backend {
        Backend::Postgres => 1010,
        Backend::Sqlite | Backend::Redis | Backend::RedisCluster => 25,
    };
    for n in 0..pings {
        assert_eq!(ping(store, n).await, Ok(n));
    }
    send_quote(store, "ada", "Q-1").await.expect("send");
    let redis = matches!(env.backend, Backend::Redis | Backend::RedisCluster);
    until_expired(store, "ping", redis).await;

    // The dry run counts and deletes nothing: asked twice, it says the same.
    let dry_run = || {
        let ran = env.idem(&["purge", "--dry-run"]);
        let text = ran.ok();
        let expected_end = format!(
            " expired records would be purged from {} (dry run: nothing deleted)\n",
            env.label()
        );
        assert!(text.ends_with(&expected_end), "{ran:#?}");
        text[..text.len() - expected_end.len()]
            .parse::<usize>()
            .expect("a count")
    };
    let expired = dry_run();
    assert_eq!(dry_run(), expired);
    // What the count covers depends on the store: PostgreSQL and SQLite keep expired results
    // until they are purged, and list them (the command opens the store as it is, purging
    // nothing); Redis deletes them at their TTL (the purge finds none left), so the
    // listing no longer has them.
    let listed = env.idem(&["keys", "--limit", "2000", "--json"]).json();
    let listed = listed.as_array().expect("an array");
    let listed_expired = listed.iter().filter(|r| r["expired"] == true).count();
    match env.backend {
        Backend::Postgres | Backend::Sqlite => {
            assert_eq!(
                expired, listed_expired,
                "the count is what the listing shows"
            );
            assert_eq!(
                listed.len(),
                listed_expired + 1,
                "nothing deleted by the dry run"
            );
        }
        Backend::Redis | Backend::RedisCluster => {
            assert_eq!(listed.len(), 1, "results go at their TTL");
        }
    }
    match env.backend {
        Backend::Postgres => assert_eq!(expired, 1010, "more than one batch to purge"),
        Backend::Sqlite => assert_eq!(expired, 25, "every expired ping, none purged by opening"),
        Backend::Redis | Backend::RedisCluster => {}
    }

    let purged = env.idem(&["purge"]);
    assert_eq!(
        purged.ok(),
        format!("purged {expired} expired records from {}\n", env.label())
    );
    assert_eq!(
        purged.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let (_, rows) = table(env.idem(&["keys"]).ok());
    assert_eq!(
        rows.len(),
        1,
        "only the record that has not expired: {rows:?}"
    );
    assert_eq!(rows[0][0], "send_quote");
    assert_eq!(dry_run(), 0);
    let again = env.idem(&["purge", "--expired"]);
    assert!(
        again.ok().starts_with("purged 0 expired records"),
        "{again:#?}"
    );
    assert_eq!(env.idem(&["stats", "--json"]).json()["total"]["total"], 1);
}

/// Runs `scenario` on a fresh store of `backend`, or skips it.
async fn on<F, Fut>(backend: Backend, name: &str, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(env) = fresh(backend, name).await {
        scenario(env).await;
    }
}

macro_rules! on_store {
    // `$attrs`: `[#[…]…]`, attributes for each test (a test whose server cannot run here is
    // listed as ignored).
    ($module:ident, $backend:expr, $attrs:tt, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                on_store!(@one $backend, $attrs, $scenario);
            )*
        }
    };
    (@one $backend:expr, [$(#[$attr:meta])*], $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $scenario() {
            super::on($backend, stringify!($scenario), super::$scenario).await;
        }
    };
}

macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        on_store!(sqlite, super::Backend::Sqlite, [], [$($scenario),*]);
        on_store!(redis, super::Backend::Redis, [
            #[cfg_attr(idem_no_redis, ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out")]
        ], [$($scenario),*]);
        on_store!(redis_cluster, super::Backend::RedisCluster, [
            #[cfg_attr(idem_no_redis, ignore = "redis-server or redis-cli is not installed, or IDEM_TEST_SERVERS leaves it out")]
        ], [$($scenario),*]);
        on_store!(postgres, super::Backend::Postgres, [
            #[cfg_attr(idem_no_postgres, ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out")]
        ], [$($scenario),*]);
    };
}

/// A key left in doubt is settled by an operator who learned the effect happened: the
/// result given is replayed, and the body does not run again.
async fn settle_records_the_result_of_a_key_in_doubt(env: Env) {
    let ledger = AtomicUsize::new(0);
    let first = book_flight(&*env.store, &ledger, "LH-400").await;
    assert!(matches!(first, Err(ToolError::Unavailable(_))), "{first:?}");
    let listing = env
        .idem(&["keys", "--action", "book_flight", "--json"])
        .json();
    let key = key_of(&listing, "book_flight");

    let why = env
        .idem(&["settle", &key[..12], "--result", "not json", "--yes"])
        .fails(2)
        .to_owned();
    assert!(why.contains("as JSON"), "{why}");
    let settled = env
        .idem(&[
            "settle",
            &key[..12],
            "--result",
            r#""booking ABC123 for LH-400""#,
            "--yes",
        ])
        .ok()
        .to_owned();
    assert!(
        settled.contains("settled key") && settled.contains(&key),
        "{settled}"
    );
    let replayed = book_flight(&*env.store, &ledger, "LH-400").await;
    assert_eq!(replayed, Ok("booking ABC123 for LH-400".into()));
    assert_eq!(
        ledger.load(Ordering::SeqCst),
        1,
        "the body did not run again"
    );
    let why = env
        .idem(&["settle", &key[..12], "--result", "1", "--yes"])
        .fails(1)
        .to_owned();
    assert!(why.contains("nothing to settle"), "{why}");
}

/// Counts its runs: a result to forget, whose next call runs the body again.
#[idem::idempotent(skip = [store, runs], store = store)]
async fn print_label(
    store: &dyn Store,
    runs: &AtomicUsize,
    order: &str,
) -> Result<usize, ToolError> {
    let _ = order;
    Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
}

/// `forget`: deletes a recorded result (value or final error) after asking, so the next call
/// runs its body; refuses a key in progress or parked for review.
async fn forget_deletes_a_recorded_result_and_refuses_the_rest(env: Env) {
    let store = &*env.store;
    let runs = AtomicUsize::new(0);
    assert_eq!(print_label(store, &runs, "order-7").await, Ok(1));
    assert_eq!(
        print_label(store, &runs, "order-7").await,
        Ok(1),
        "replayed"
    );
    let listing = env
        .idem(&["keys", "--action", "print_label", "--json"])
        .json();
    let key = key_of(&listing, "print_label");

    let why = env
        .idem_with_stdin(&["forget", &key[..12]], "n\n")
        .fails(1)
        .to_owned();
    assert!(why.contains("not forgotten"), "{why}");
    assert_eq!(
        print_label(store, &runs, "order-7").await,
        Ok(1),
        "still replayed"
    );

    let forgot = env.idem(&["forget", &key[..12], "--yes"]).ok().to_owned();
    assert!(
        forgot.contains("forgot key") && forgot.contains(&key),
        "{forgot}"
    );
    assert_eq!(
        print_label(store, &runs, "order-7").await,
        Ok(2),
        "forgotten: the body ran again"
    );

    // What is not a recorded result is refused, and stays.
    let ledger = AtomicUsize::new(0);
    fill_records(store, &ledger).await;
    let listing = env.idem(&["keys", "--json"]).json();
    for action in ["export_report", "wire_transfer"] {
        let key = key_of(&listing, action);
        let why = env
            .idem(&["forget", &key[..12], "--yes"])
            .fails(1)
            .to_owned();
        assert!(why.contains("only a recorded result is forgotten"), "{why}");
    }
    let declined = key_of(&listing, "charge_card");
    let forgot = env
        .idem(&["forget", &declined[..12], "--yes"])
        .ok()
        .to_owned();
    assert!(
        forgot.contains("was failed"),
        "a recorded error is forgotten too: {forgot}"
    );
}

on_every_store!(
    forget_deletes_a_recorded_result_and_refuses_the_rest,
    settle_records_the_result_of_a_key_in_doubt,
    records_are_listed_shown_and_counted,
    unlock_refuses_what_it_must_and_releases_the_rest,
    unlock_leaves_a_dead_sagas_claim_to_recovery,
    key_prefixes_must_match_one_record,
    sagas_are_listed_shown_and_resolved,
    purge_deletes_expired_records,
);

// ---- Usage, on no store or a SQLite file -----------------------------------------------------

/// A usage error: exit code 2, clap's format, nothing on stdout.
fn usage_error(ran: &Ran) -> &str {
    let why = ran.fails(2);
    assert!(why.starts_with("error: "), "{why}");
    assert!(why.contains("Usage: idem"), "with the usage line: {why}");
    why
}

#[test]
fn a_memory_store_is_refused() {
    for args in [
        ["--store", "memory:", "keys"],
        ["keys", "--store", "memory:"],
    ] {
        let ran = run_idem(&args, &[], "");
        let why = usage_error(&ran);
        assert!(why.contains("`memory:` is a memory store"), "{why}");
        assert!(why.contains("sqlite://, redis:// or postgres://"), "{why}");
    }
    let ran = run_idem(&["stats"], &[("IDEM_STORE", "memory:")], "");
    assert!(usage_error(&ran).contains("memory store"));
}

#[test]
fn a_missing_store_is_a_usage_error() {
    let ran = run_idem(&["keys"], &[], "");
    let why = usage_error(&ran);
    assert!(
        why.contains("no store given: pass --store URL or set IDEM_STORE"),
        "{why}"
    );
    let ran = run_idem(&["keys"], &[("IDEM_STORE", "")], "");
    assert!(usage_error(&ran).contains("no store given"));
    let ran = run_idem(&["--store", "mysql://localhost/idem", "keys"], &[], "");
    assert!(usage_error(&ran).contains("is not a store URL"));
}

#[test]
fn a_sqlite_file_that_does_not_exist_is_not_created() {
    let path = std::env::temp_dir().join(format!("idem-cli-{}-absent.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}", path.display());
    let ran = run_idem(&["--store", &url, "keys"], &[], "");
    let why = ran.fails(1);
    assert!(
        why.contains(&format!("no SQLite database at {}", path.display())),
        "{why}"
    );
    assert!(!path.exists(), "the command made no file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_usage_errors() {
    let env = fresh(Backend::Sqlite, "usage").await.expect("sqlite");
    send_quote(&*env.store, "ada", "Q-1").await.expect("send");
    for args in [
        &["keys", "--status", "done"][..],
        &["keys", "--status", "running"],
        &["keys", "--limit", "0"],
        &["keys", "--limit", "many"],
        &["sagas", "--status", "stuck"],
        &["sagas", "--status", "needs-review"],
        &["show", "not-hex"],
        &["show"],
        &["unlock", "zz"],
        &["resolve", "order-1"],
        &["resolve", "order-1", "--note", "  "],
        &["frobnicate"],
        &["keys", "--wat"],
    ] {
        let ran = env.idem(args);
        assert_eq!(ran.code, 2, "{args:?}: {ran:#?}");
        assert_eq!(ran.stdout, "", "{args:?}");
        assert!(ran.stderr.starts_with("error: "), "{args:?}: {ran:#?}");
    }
    let why = env.idem(&["keys", "--status", "done"]).stderr;
    assert!(
        why.contains("in-progress, completed, failed, needs-review"),
        "{why}"
    );
    let why = env.idem(&["sagas", "--status", "stuck"]).stderr;
    assert!(
        why.contains(
            "running, compensating, completed, compensated, needs-attention, interrupted, resolved"
        ),
        "{why}"
    );
    // Every saga status is accepted, with `-` or `_`.
    for status in [
        "running",
        "compensating",
        "completed",
        "compensated",
        "needs-attention",
        "needs_attention",
        "interrupted",
        "resolved",
    ] {
        env.idem(&["sagas", "--status", status]).ok();
    }
    // Help is not an error.
    for args in [
        &["--help"][..],
        &["keys", "--help"],
        &["unlock", "--help"],
        &["-V"],
    ] {
        assert_eq!(run_idem(args, &[], "").code, 0, "{args:?}");
    }
    let help = run_idem(&["--help"], &[], "").stdout;
    for command in [
        "keys", "show", "unlock", "sagas", "saga", "resolve", "purge", "stats",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} in {help}"
        );
    }
    assert!(help.contains("Exit codes:"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_can_come_from_the_environment() {
    let env = fresh(Backend::Sqlite, "environment").await.expect("sqlite");
    send_quote(&*env.store, "ada", "Q-1").await.expect("send");
    let ran = run_idem(&["keys", "--json"], &[("IDEM_STORE", &env.url)], "");
    let listing: Value = serde_json::from_str(ran.ok()).expect("JSON");
    assert_eq!(listing[0]["action"], "send_quote");
    // --store after the command works too, and wins over the environment.
    let ran = run_idem(
        &["stats", "--json", "--store", &env.url],
        &[("IDEM_STORE", "memory:")],
        "",
    );
    assert_eq!(
        serde_json::from_str::<Value>(ran.ok()).unwrap()["total"]["completed"],
        1
    );
}

#[test]
fn a_store_that_cannot_be_reached_is_named_without_its_password() {
    // Nothing listens on port 1 of the loopback.
    for (url, shown) in [
        (
            "postgres://idem:s3cret@127.0.0.1:1/idem",
            "postgres://idem:***@127.0.0.1:1/idem",
        ),
        (
            "redis://:s3cret@127.0.0.1:1/0",
            "redis://:***@127.0.0.1:1/0",
        ),
    ] {
        let ran = run_idem(&["--store", url, "keys"], &[], "");
        let why = ran.fails(1);
        assert!(
            why.contains(&format!("cannot open the store at {shown}: ")),
            "{why}"
        );
        assert!(!why.contains("s3cret"), "{why}");
    }
}

/// A body that runs until the test ends, its lease renewed by heartbeats every 100 ms.
#[idem::idempotent(skip = [store, started], store = store, lease = "300ms")]
async fn import_batch(store: &dyn Store, started: &Notify, batch: u32) -> Result<(), ToolError> {
    started.notify_one();
    std::future::pending::<()>().await;
    Ok(())
}

/// `unlock --force` asks, and the owner renews its lease before the answer comes: the owner
/// is alive, so nothing is released, whatever the operator answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_releases_nothing_when_the_owner_renewed_its_lease_while_asking() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    let env = fresh(Backend::Sqlite, "renewed").await.expect("sqlite");
    let started = Arc::new(Notify::new());
    let owner = {
        let (store, started) = (Arc::clone(&env.store), Arc::clone(&started));
        tokio::spawn(async move { import_batch(&*store, &started, 7).await })
    };
    started.notified().await;
    let records = env
        .store
        .list_records(&RecordQuery::new())
        .await
        .expect("list");
    let key = records[0].key;

    let mut unlock = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["--store", &env.url, "unlock", &key.to_string(), "--force"])
        .env_remove("IDEM_STORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the idem binary");
    let mut stderr = unlock.stderr.take().expect("stderr");
    let mut asked = Vec::new();
    while !String::from_utf8_lossy(&asked).contains("[y/N] ") {
        let mut byte = [0u8; 1];
        match stderr.read(&mut byte).expect("read the prompt") {
            0 => panic!(
                "the command ended without asking: {}",
                String::from_utf8_lossy(&asked)
            ),
            _ => asked.push(byte[0]),
        }
    }
    // Answer only once the owner has renewed its lease after the question was asked.
    let asked_at = env.store.get(&key).await.expect("get").expect("the record");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = env.store.get(&key).await.expect("get").expect("the record");
        if now.expires_at != asked_at.expires_at {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unlock
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"y\n")
        .expect("answer");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    let status = unlock.wait().expect("the command ends");
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("changed while you confirmed"), "{rest}");
    let record = env
        .store
        .get(&key)
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(
        (record.status, record.token),
        (idem::store::Status::InProgress, records[0].token),
        "the live owner keeps its key"
    );
    owner.abort();
}

/// The three packages that start servers in their tests decide which cannot run with the same
/// build script (see `idem-runtime/build.rs`).
#[test]
fn the_build_scripts_that_skip_server_tests_are_one() {
    let runtime = include_str!("../../idem-runtime/build.rs");
    assert_eq!(include_str!("../build.rs"), runtime, "idem-cli/build.rs");
    assert_eq!(include_str!("../../build.rs"), runtime, "build.rs");
}

// ---- Layouts ---------------------------------------------------------------------------------

/// `idem migrate` moves a Redis store an older idem wrote (layout 1) into the current layout:
/// before, an operator's look is refused with what to do; after, the record is listed; run
/// again, it says there is nothing left to move. A SQLite store has nothing to migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn migrate_moves_an_older_redis_layout() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    let prefix = format!("cli:layout{}:", std::process::id());
    let url = format!("{}?prefix={prefix}", server.url());
    let key = idem::Action::new("old").key(&(1,)).expect("a key");
    let fingerprint: String = idem::Fingerprint::from(key)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let client = ::redis::Client::open(server.url()).expect("a client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("a connection");
    ::redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}tokens"))
        .arg(3)
        .ignore()
        .cmd("SET")
        .arg(format!("{prefix}{{{key}}}:r"))
        .arg(format!(
            "c|3|0|86400000|1764979200000|{fingerprint}|ok|3|old{{\"n\":1}}"
        ))
        .arg("PX")
        .arg(600_000)
        .ignore()
        .query_async::<()>(&mut raw)
        .await
        .expect("write layout 1");

    let refused = run_idem(&["--store", &url, "keys"], &[], "");
    assert!(
        refused.fails(1).contains("idem --store <url> migrate"),
        "{refused:#?}"
    );

    let moved = run_idem(&["--store", &url, "migrate"], &[], "");
    assert!(
        moved.ok().ends_with(
            "moved from layout 1 to 3: 1 records, 0 saga logs, 0 running sagas indexed\n"
        ),
        "{moved:#?}"
    );
    let listed = run_idem(&["--store", &url, "keys", "--json"], &[], "").json();
    assert_eq!(listed[0]["key"], key.to_string(), "{listed}");
    let again = run_idem(&["--store", &url, "migrate"], &[], "");
    assert!(
        again
            .ok()
            .ends_with("is in the current layout (3): nothing moved\n"),
        "{again:#?}"
    );

    let sqlite = fresh(Backend::Sqlite, "migrate").await.expect("sqlite");
    assert!(sqlite
        .idem(&["migrate"])
        .ok()
        .contains("nothing to migrate"));
}
