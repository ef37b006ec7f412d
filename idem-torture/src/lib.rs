//! idem's torture harness: agents as OS processes make `#[idempotent]` calls and run sagas
//! over shared keys against a ledger of real side effects, while a driver injects faults on
//! a schedule drawn from a seed (SIGKILL, SIGSTOP past the lease, store restarts, cut and
//! slow connections, a SQLite writer holding the lock, a client clock minutes off, calls
//! dropped by timeouts); a checker then reads the history, the ledger and the store and
//! reports each invariant's violations with the first counterexample.
//!
//! ```text
//! cargo run --release -p idem-torture -- --store all --seconds 60 --seed 7
//! ```
//!
//! The invariants, the faults and what a run found are in RELIABILITY.md.

pub mod agent;
pub mod check;
pub mod driver;
pub mod faulty;
pub mod history;
pub mod proxy;
pub mod rng;
pub mod schedule;
