//! How many heap allocations an `#[idempotent]` call makes, and how large they are, on each
//! store: counted by a global allocator that counts, not timed, so the figures are the same
//! on every run and machine (for one build of the same dependencies).
//!
//! ```text
//! cargo bench --bench allocations
//! ```
//!
//! Rows: a replay (the same key every call, after one call recorded it) and a fresh call (a
//! new key each call) on the memory store, SQLite (a new file), Redis and PostgreSQL (started
//! on loopback ports as the tests start them; a row whose server is missing says so). Each
//! row makes 2,000 calls after 50 to warm up, one at a time, on a Tokio multi-thread runtime
//! of 2 workers, and prints allocations per call, bytes per call, and the allocations
//! larger than 1,032 bytes per call: glibc's per-thread cache keeps blocks up to that size, so
//! each larger one takes an arena's lock, which the runtime's workers contend for when many
//! calls run at once. The body itself allocates one `String` of its result.
//!
//! The counts include the store's client (redis, tokio-postgres with deadpool, rusqlite's
//! thread) and Tokio's, not only idem's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[path = "common/call.rs"]
mod call;

use call::{BenchError, Receipt};

use idem::idempotent;
use idem::store::{MemoryStore, PostgresStore, RedisStore, SqliteStore, Store};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

/// The allocator: the system's, counting while [`COUNTING`] is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LARGE: AtomicU64 = AtomicU64::new(0);

/// The largest block glibc's per-thread cache (tcache) keeps, on 64-bit targets.
const THREAD_CACHE_MAX: usize = 1032;

fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        if size > THREAD_CACHE_MAX {
            LARGE.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method hands the call on to `System` unchanged; counting touches atomics only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[idempotent(skip = [store], store = store, name = "alloc_send")]
async fn send(store: &dyn Store, n: u64) -> Result<Receipt, BenchError> {
    Ok(Receipt {
        message_id: format!("msg-{n}"),
        amount_cents: 1999,
    })
}

const WARM_UP: u64 = 50;
const CALLS: u64 = 2000;

/// One call of `call`'s kind: the same key, 0, every time (replay), or key `n` (fresh).
async fn one(store: &dyn Store, call: &str, n: u64) {
    let n = if call == "replay" { 0 } else { n };
    send(store, n).await.expect("the call succeeds");
}

/// Prints the row of `call` on `store`.
async fn row(name: &str, store: &dyn Store, call: &str, first: u64) {
    for n in first..first + WARM_UP {
        one(store, call, n).await;
    }
    for counter in [&ALLOCATIONS, &BYTES, &LARGE] {
        counter.store(0, Ordering::SeqCst);
    }
    COUNTING.store(true, Ordering::SeqCst);
    for n in first + WARM_UP..first + WARM_UP + CALLS {
        one(store, call, n).await;
    }
    COUNTING.store(false, Ordering::SeqCst);
    let per_call = |counter: &AtomicU64| counter.load(Ordering::SeqCst) as f64 / CALLS as f64;
    println!(
        "| {name} | {call} | {:.1} | {:.0} | {:.2} |",
        per_call(&ALLOCATIONS),
        per_call(&BYTES),
        per_call(&LARGE)
    );
}

/// The replay and fresh rows of `store`; fresh keys start at `first` (distinct per store).
async fn rows(name: &str, store: &dyn Store, first: u64) {
    row(name, store, "replay", 0).await;
    row(name, store, "fresh", first).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("| store | call | allocations/call | bytes/call | over {THREAD_CACHE_MAX} B/call |");
    println!("|---|---|---:|---:|---:|");
    rows("memory", &MemoryStore::new(), 1_000_000).await;

    let folder = std::env::temp_dir().join(format!("idem-allocations-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let sqlite = SqliteStore::open(folder.join("allocations.db"))
        .await
        .expect("open SQLite");
    rows("SQLite", &sqlite, 2_000_000).await;
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&folder);

    let mut missing = Vec::new();
    match RedisServer::shared() {
        Some(server) => {
            let store = RedisStore::connect(&server.url())
                .await
                .expect("connect to Redis")
                .with_prefix("allocations:");
            rows("Redis", &store, 3_000_000).await;
        }
        None => missing.push("Redis: redis-server is not installed"),
    }
    match PostgresServer::shared() {
        Some(server) => {
            let store = PostgresStore::connect(&server.url())
                .await
                .expect("connect to PostgreSQL");
            rows("PostgreSQL", &store, 4_000_000).await;
        }
        None => missing.push("PostgreSQL: postgres is not installed"),
    }
    for why in missing {
        println!("\n(no rows for {why})");
    }
}
