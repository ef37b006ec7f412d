//! What `#[idempotent]` costs over a plain call, on the memory store, and what its key costs
//! next to raw SHA-256 of the same bytes.
//!
//! ```text
//! cargo bench --bench overhead
//! ```
//!
//! Rows (each one call with three small arguments, on a Tokio current-thread runtime):
//!
//! - `plain`: the function without the attribute;
//! - `idempotent/fresh`: with `#[idempotent(store = …)]` on a `MemoryStore`, a new key each
//!   call (a counter is one of the arguments; `plain` gets the same counter);
//! - `idempotent/replay`: the same key each call, after a first call that recorded the result;
//! - `idempotent/fresh-default-store`, `idempotent/replay-default-store`: the same through
//!   `set_default_store` instead of `store = …`;
//! - `key/derive`: `Action::key(&(a, b, n))`, the public API;
//! - `key/derive-args`: the key as the generated code derives it (`__private::call` with one
//!   `key_arg` per argument);
//! - `sha256/raw`: `Sha256::digest` of the exact text idem hashes for that key (the padded
//!   header, the canonical arguments, the closing `]`), rebuilt here from the definition in
//!   the docs of `idem::Key` and checked against `Action::key`;
//! - `sha256/args-only`: the design's lower bound: a precomputed hasher state after the header,
//!   cloned, absorbing only the argument text, finalized.
//!
//! After the runs, a table of the times with the overheads and ratios is printed (read back
//! from criterion's `estimates.json` files of this run).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use idem::__private::{call, key_arg};
use idem::{idempotent, observe, store::MemoryStore, Action, Disposition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
    amount_cents: u64,
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
enum MyError {
    Idem(idem::Error),
}

impl From<idem::Error> for MyError {
    fn from(error: idem::Error) -> Self {
        MyError::Idem(error)
    }
}

static STORE: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

/// The body every row runs: a receipt, as a mail API would answer.
fn receipt(quote_id: &str, amount_cents: u64) -> Receipt {
    Receipt {
        message_id: format!("msg-{quote_id}"),
        amount_cents,
    }
}

async fn plain(customer_id: &str, quote_id: &str, amount_cents: u64) -> Result<Receipt, MyError> {
    let _ = customer_id;
    Ok(receipt(quote_id, amount_cents))
}

// The TTL is short so that the map of the fresh rows stays small (expired results are swept as
// new ones come in), rather than growing by one record per iteration for the whole run.
#[idempotent(store = *STORE, ttl = "1ms")]
async fn send_quote_fresh(
    customer_id: &str,
    quote_id: &str,
    amount_cents: u64,
) -> Result<Receipt, MyError> {
    let _ = customer_id;
    Ok(receipt(quote_id, amount_cents))
}

#[idempotent(store = *STORE, name = "send_quote")]
async fn send_quote(
    customer_id: &str,
    quote_id: &str,
    amount_cents: u64,
) -> Result<Receipt, MyError> {
    let _ = customer_id;
    Ok(receipt(quote_id, amount_cents))
}

#[idempotent(ttl = "1ms")]
async fn send_quote_default_fresh(
    customer_id: &str,
    quote_id: &str,
    amount_cents: u64,
) -> Result<Receipt, MyError> {
    let _ = customer_id;
    Ok(receipt(quote_id, amount_cents))
}

#[idempotent(name = "send_quote_default_store")]
async fn send_quote_default(
    customer_id: &str,
    quote_id: &str,
    amount_cents: u64,
) -> Result<Receipt, MyError> {
    let _ = customer_id;
    Ok(receipt(quote_id, amount_cents))
}

/// The action of `send_quote`, for the key rows: same namespace, name and version.
static SEND_QUOTE: Action = Action::new("send_quote");

const CUSTOMER: &str = "customer-42";
const QUOTE: &str = "quote-7";
const AMOUNT: u64 = 1999;

/// The padded header of the key text: `["idem",1,<namespace>,<name>,<version>,` and spaces up
/// to a whole number of 64-byte blocks (the rule in the docs of `idem::Key`).
fn header(action: &Action) -> Vec<u8> {
    let mut text = format!(
        "[\"idem\",1,{},{},{},",
        idem::canonical_json(action.settings().namespace).unwrap(),
        idem::canonical_json(action.name()).unwrap(),
        action.settings().version,
    )
    .into_bytes();
    text.resize(text.len().div_ceil(64) * 64, b' ');
    text
}

/// The argument part of the key text: the canonical argument array and the closing `]`.
fn args_text(customer_id: &str, quote_id: &str, amount_cents: u64) -> Vec<u8> {
    let mut text = idem::canonical_json(&(customer_id, quote_id, amount_cents))
        .unwrap()
        .into_bytes();
    text.push(b']');
    text
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn calls(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    // Criterion calls each closure once per sample: the counters live outside so that no key
    // comes twice.
    let mut n = 0u64;
    c.bench_function("plain", |b| {
        b.to_async(runtime).iter(|| {
            n += 1;
            plain(black_box(CUSTOMER), black_box(QUOTE), black_box(n))
        });
    });

    let (_, how) = runtime.block_on(observe(send_quote_fresh(CUSTOMER, QUOTE, u64::MAX)));
    assert_eq!(how, Some(Disposition::Executed), "the fresh row executes");

    let mut group = c.benchmark_group("idempotent");
    group.bench_function("fresh", |b| {
        b.to_async(runtime).iter(|| {
            n += 1;
            send_quote_fresh(black_box(CUSTOMER), black_box(QUOTE), black_box(n))
        });
    });
    // The fresh row measured a steady store: expired results were swept as keys came in.
    assert!(
        STORE.len() < 100_000,
        "{} records after the fresh row",
        STORE.len()
    );
    runtime
        .block_on(send_quote(CUSTOMER, QUOTE, AMOUNT))
        .unwrap();
    let (_, how) = runtime.block_on(observe(send_quote(CUSTOMER, QUOTE, AMOUNT)));
    assert_eq!(how, Some(Disposition::Replayed), "the replay row replays");
    group.bench_function("replay", |b| {
        b.to_async(runtime)
            .iter(|| send_quote(black_box(CUSTOMER), black_box(QUOTE), black_box(AMOUNT)));
    });

    idem::set_default_store(MemoryStore::new());
    group.bench_function("fresh-default-store", |b| {
        b.to_async(runtime).iter(|| {
            n += 1;
            send_quote_default_fresh(black_box(CUSTOMER), black_box(QUOTE), black_box(n))
        });
    });
    runtime
        .block_on(send_quote_default(CUSTOMER, QUOTE, AMOUNT))
        .unwrap();
    group.bench_function("replay-default-store", |b| {
        b.to_async(runtime)
            .iter(|| send_quote_default(black_box(CUSTOMER), black_box(QUOTE), black_box(AMOUNT)));
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let header = header(&SEND_QUOTE);
    let args = args_text(CUSTOMER, QUOTE, AMOUNT);
    let whole = [header.as_slice(), args.as_slice()].concat();
    // The bytes rebuilt here are the bytes idem hashes, or every sha256 row is meaningless.
    let expected = SEND_QUOTE.key(&(CUSTOMER, QUOTE, AMOUNT)).unwrap();
    assert_eq!(Sha256::digest(&whole).as_slice(), expected.as_bytes());
    let made = call(
        &SEND_QUOTE,
        &[key_arg(&CUSTOMER), key_arg(&QUOTE), key_arg(&AMOUNT)],
        None,
    )
    .unwrap();
    assert_eq!(made.key(), expected);

    let mut group = c.benchmark_group("key");
    group.bench_function("derive", |b| {
        b.iter(|| {
            SEND_QUOTE
                .key(&(black_box(CUSTOMER), black_box(QUOTE), black_box(AMOUNT)))
                .unwrap()
        });
    });
    group.bench_function("derive-args", |b| {
        b.iter(|| {
            let (a, q, n) = (black_box(CUSTOMER), black_box(QUOTE), black_box(AMOUNT));
            call(&SEND_QUOTE, &[key_arg(&a), key_arg(&q), key_arg(&n)], None)
                .unwrap()
                .key()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("sha256");
    group.bench_function("raw", |b| {
        b.iter(|| Sha256::digest(black_box(whole.as_slice())));
    });
    let mut after_header = Sha256::new();
    after_header.update(&header);
    group.bench_function("args-only", |b| {
        b.iter(|| {
            let mut hasher = black_box(&after_header).clone();
            hasher.update(black_box(args.as_slice()));
            hasher.finalize()
        });
    });
    group.finish();
}

/// Where criterion writes its results (the same rule as criterion's).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&target).join("criterion");
    }
    // target/release/deps/overhead-… → target/criterion
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .nth(3)
                .map(|target| target.join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The time per call of the benchmark `id` measured by this run, in nanoseconds: criterion's
/// slope estimate (the middle figure of its `time:` line), or the median without one.
fn time_ns(home: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let file = home.join(id).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&file).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let estimates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["median"]["point_estimate"].as_f64())
}

fn summary(since: SystemTime) {
    let home = criterion_home();
    let ids = [
        "plain",
        "idempotent/fresh",
        "idempotent/replay",
        "idempotent/fresh-default-store",
        "idempotent/replay-default-store",
        "key/derive",
        "key/derive-args",
        "sha256/raw",
        "sha256/args-only",
    ];
    let figures: Vec<Option<f64>> = ids.iter().map(|id| time_ns(&home, id, since)).collect();
    let get = |id: &str| figures[ids.iter().position(|i| *i == id).unwrap()];
    let plain = get("plain");
    let raw = get("sha256/raw");
    println!();
    println!("| row | time per call | vs plain | vs sha256/raw |");
    println!("|---|---:|---:|---:|");
    for (id, figure) in ids.iter().zip(&figures) {
        let Some(ns) = figure else {
            println!("| `{id}` | – | | |");
            continue;
        };
        let vs_plain = match (id.starts_with("idempotent/"), plain) {
            (true, Some(plain)) => format!("+{:.0} ns ({:.1}x)", ns - plain, ns / plain),
            _ => String::new(),
        };
        let vs_raw = match (id.starts_with("key/") || id.starts_with("sha256/"), raw) {
            (true, Some(raw)) => format!("{:.2}x", ns / raw),
            _ => String::new(),
        };
        println!("| `{id}` | {ns:.0} ns | {vs_plain} | {vs_raw} |");
    }
}

fn main() {
    let since = SystemTime::now() - Duration::from_secs(1);
    let runtime = runtime();
    // 9 rows of 1 s warm-up and 3 s of samples: about 45 s in all, builds aside.
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    calls(&mut c, &runtime);
    keys(&mut c);
    c.final_summary();
    summary(since);
}
