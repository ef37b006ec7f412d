//! # idem: tool calls that are safe to retry
//!
//! Agents retry on timeouts, re-ask when an answer is ambiguous, run as several copies on one
//! task, and are killed and restarted mid-task. Each of those turns one email into three and
//! one charge into two. `#[idempotent]` fixes that where the side effect lives: the body runs
//! once per key, its result is recorded, and every duplicate gets that result.
//!
//! ```
//! use idem::{idempotent, store::MemoryStore};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Receipt { message_id: String }
//!
//! #[derive(Debug)]
//! enum EmailError { Idem(idem::Error) }
//! impl From<idem::Error> for EmailError {
//!     fn from(e: idem::Error) -> Self { EmailError::Idem(e) }
//! }
//!
//! static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
//!
//! #[idempotent(ttl = "24h")]
//! async fn send_quote_email(customer_id: &str, quote_id: &str) -> Result<Receipt, EmailError> {
//!     let n = SENT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     Ok(Receipt { message_id: format!("msg-{n}") })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), EmailError> {
//! idem::set_default_store(MemoryStore::new());
//! let first = send_quote_email("customer-42", "quote-7").await?;
//! let retry = send_quote_email("customer-42", "quote-7").await?; // after a timeout, say
//! assert_eq!(first, retry);
//! assert_eq!(SENT.load(std::sync::atomic::Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```
//!
//! - [`idempotent`]: the attribute and its options (the manual).
//! - [`store`]: where records live. [`store::MemoryStore`] for tests and single processes,
//!   [`store::SqliteStore`] (feature `sqlite`, on by default) as the embedded durable store,
//!   `store::RedisStore` (feature `redis`) and `store::PostgresStore` (feature `postgres`)
//!   for fleets of agents; [`store::open`] opens any of them from a URL.
//! - [`Error`]: what idem adds to a call's errors; the function's error type implements
//!   `From<idem::Error>`.
//! - [`current_key`], [`current_call`]: what a body passes downstream (an `Idempotency-Key`).
//! - [`observe`]: whether a call executed or replayed, for callers that care.
//! - [`Action`] and [`Call`]: the same protocol without the macro.
//! - [`saga_step`], [`Saga`], [`recover`]: steps that are undone in reverse order when a later
//!   one fails, with a durable log that a new process recovers from.
//!
//! ## Keys
//!
//! A call's key is SHA-256 over the RFC 8785 canonical JSON of its namespace, action name,
//! version and key arguments, kept whole (256 bits): equal arguments give equal keys whatever
//! the order of a `HashMap`'s entries, and keys hold hashes only, never arguments. See
//! [`Key`] for the exact text that is hashed and its published test vectors.
#![warn(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    missing_debug_implementations
)]
#![forbid(unsafe_code)]

/// Makes an `async fn` idempotent: its body runs once per key, and every duplicate call
/// returns the recorded result.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Receipt;
/// # #[derive(Serialize)] struct Quote { total_cents: u64 }
/// # #[derive(Debug)] struct EmailError;
/// # impl From<idem::Error> for EmailError { fn from(_: idem::Error) -> Self { EmailError } }
/// #[idem::idempotent(ttl = "24h")]
/// async fn send_quote_email(customer_id: &str, quote: &Quote) -> Result<Receipt, EmailError> {
///     // … send it …
/// #   Ok(Receipt)
/// }
/// ```
///
/// # What it does
///
/// On each call: the key is derived from the arguments; the store is asked, in one atomic
/// step, to make this call the key's owner. The owner runs the body (its lease renewed by
/// heartbeats while it runs) and records the result; duplicates get the recorded result
/// without running the body. A duplicate that arrives while the owner runs waits for it, or
/// is refused (`on_conflict`). An error of the body releases the key, so a retry runs it again,
/// unless `cache_err` says the error is final. An owner that dies inside the body leaves its
/// claim to expire; the next caller then takes over (told so by
/// [`CallContext::resumed`]) or the key waits for review (`on_stale = review`).
///
/// # Crashes, cancellation, and what "once" means
///
/// A result is recorded once and replayed to every duplicate, whatever the concurrency. The
/// one window where a body can run twice is an owner that stops inside the body, after its
/// side effect and before its result is recorded: a killed process, or a call whose future
/// is dropped (a `tokio::time::timeout` around it, an agent that gives up). Its claim then
/// stays until the lease runs out (no heartbeat renews it), and the next caller either runs
/// the body again, told so by [`CallContext::resumed`] (`on_stale = takeover`, the default:
/// at-least-once for that window), or gets [`Error::NeedsReview`] and leaves the key to an
/// operator (`on_stale = review`: at-most-once). Passing [`current_key`] downstream as an
/// idempotency key closes the window where the downstream service deduplicates.
///
/// Heartbeats run in the call's own task: a body that blocks its thread (a synchronous
/// client, a long computation without `.await`) starves them, and a lease shorter than the
/// block lets another caller take over. Move blocking work to `spawn_blocking`.
///
/// # Requirements
///
/// - an `async fn` (free function or method; `&self`/`&mut self` are never part of the key;
///   inside `#[async_trait]` impls too);
/// - it returns `Result<T, E>` where `T: Serialize + DeserializeOwned` (the recorded value)
///   and `E: From<idem::Error>` (how idem's own errors reach the caller);
/// - every argument that is not skipped is `Serialize`;
/// - a Tokio runtime with its time driver (heartbeats are Tokio timers).
///
/// Each of these is checked at compile time, with the error on the offending tokens.
///
/// # Options
///
/// | option | meaning | default |
/// |---|---|---|
/// | `key = [customer_id, order.id]` | the arguments, or fields and method calls of them, that identify the action; the other non-skipped arguments still form the payload fingerprint, and a key reused with a different payload is refused with [`Error::PayloadMismatch`] | all non-skipped arguments |
/// | `skip = [mailer, ctx]` | arguments left out of key and payload: clients, contexts, handles | none |
/// | `name = "send_invoice"` | the action name in every key: fix it so a rename of the function keeps its keys (see *Identity* below) | the function's name; a method's is `Type::method` (`SendEmail::call`) |
/// | `namespace = "billing"` | keys of different namespaces never meet | `"default"` |
/// | `version = 2` | a new version gives every call a new key: old results are retired on purpose | `1` |
/// | `ttl = "24h"` | how long a result is kept and replayed (`ms`, `s`, `m`, `h`, `d`, combined as `1h30m`) | `"24h"` |
/// | `lease = "30s"` | how long a claim holds without a heartbeat: how soon a dead owner's key is free | `"10s"` |
/// | `on_conflict = wait("10s")` or `fail` | a duplicate that finds the key held waits (bounded) for the result, or gets [`Error::InProgress`] at once | `wait("30s")` |
/// | `cache_err = is_final` | a `fn(&E) -> bool`: errors for which it returns true are recorded and replayed like results (`E` must then be `Serialize + DeserializeOwned`) | errors release the key |
/// | `in_doubt = is_ambiguous` | a `fn(&E) -> bool`: errors for which it returns true (a timeout after the request was sent, a reset, a 5xx) mean the effect may have happened: the key is kept in doubt, not released, and the next call follows `verify`, then `on_stale` | errors release the key |
/// | `on_stale = takeover` or `review` | after an owner died inside the body, or left it in doubt: run it again, or park the key as NEEDS_REVIEW for an operator (payments) | `takeover` |
/// | `verify = find_charge` | a function asked, before a call in doubt runs again, whether the effect happened: it takes the same arguments by reference (`&T` as it is, `T` as `&T`, `&self` first), returns `Result<Option<T>, E>`; `Some(output)` is recorded and returned without running the body ([`Disposition::Verified`]), `None` lets the body run, an error keeps the key in doubt | none: the body runs again |
/// | `store = self.store` | the store, any expression giving a store or an `Arc` of one | the one given to [`set_default_store`] |
/// | `crate = path` | where the `idem` crate is, for crates that rename it | `::idem` |
///
/// # What the next call gets
///
/// For each state a key can be in, and each policy:
///
/// | the key is | `on_stale = takeover` | `on_stale = review` |
/// |---|---|---|
/// | free (never claimed, released after an error, or its result expired) | the body runs | the body runs |
/// | claimed, its body not started (the call was dropped while it claimed: an agent's `timeout`) | the claim is given back at once: the key is free, and the body runs as a fresh call | the same: never parked for review |
/// | claimed, its owner alive (lease renewed) | waits for the result (`on_conflict = wait`), or [`Error::InProgress`] (`fail`) | the same |
/// | in doubt: its owner died inside the body (its lease ran out), or its body's error was ambiguous (`in_doubt`), or its `verify` failed | `verify` is asked: its output is returned and recorded; with `None`, or no `verify`, the body runs again, [`CallContext::resumed`] true | the key is parked for review: [`Error::NeedsReview`] |
/// | done: its result recorded, within its `ttl` | the result, replayed (the body does not run) | the same |
/// | needs review (parked) | [`Error::NeedsReview`] until an operator settles it | the same |
/// | any of these, with other arguments under the same key | [`Error::PayloadMismatch`] | the same |
///
/// The conformance suite checks every row on every store.
///
/// # Identity
///
/// Keys are made of the namespace, the action's name and its version, so two functions with
/// the same three would answer each other's calls. The name is the function's name, or, for a
/// method, `Type::method` (so that every tool's `call` is its own); generic arguments of the
/// type are left out. Two different functions that still have the same three in one program
/// are refused at their first call with [`Error::ActionClash`], which names both.
///
/// To rename a function and keep its keys (results recorded before a deploy are still
/// replayed after it), pin the old name: `#[idempotent(name = "send_invoice")]` on
/// `send_invoice_v2`. To retire the old keys on purpose, raise `version`.
///
/// # A method of an agent's tool
///
/// ```
/// use idem::{idempotent, store::MemoryStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
/// pub struct Receipt { pub id: String }
/// #[derive(Serialize)]
/// pub struct Order { pub id: u64, pub total_cents: u64 }
/// pub struct Mailer; // a client: not part of any key
///
/// #[derive(Debug)]
/// pub enum Error { Idem(idem::Error) }
/// impl From<idem::Error> for Error {
///     fn from(e: idem::Error) -> Self { Error::Idem(e) }
/// }
///
/// pub struct InvoiceTool { store: MemoryStore }
///
/// impl InvoiceTool {
///     #[idempotent(key = [customer_id, order.id], skip = [mailer], name = "send_invoice",
///                  on_conflict = wait("10s"), store = self.store.clone())]
///     pub async fn send_invoice(&self, mailer: &Mailer, customer_id: &str, order: &Order)
///         -> Result<Receipt, Error>
///     {
///         Ok(Receipt { id: format!("invoice-{}", order.id) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tool = InvoiceTool { store: MemoryStore::new() };
/// let order = Order { id: 7, total_cents: 1999 };
/// let receipt = tool.send_invoice(&Mailer, "customer-42", &order).await.unwrap();
/// assert_eq!(receipt.id, "invoice-7");
///
/// // Same customer and order, another total: refused, not answered with the first receipt.
/// let changed = Order { id: 7, total_cents: 2999 };
/// let refused = tool.send_invoice(&Mailer, "customer-42", &changed).await;
/// assert!(matches!(refused, Err(Error::Idem(idem::Error::PayloadMismatch { .. }))));
/// # }
/// ```
#[doc(inline)]
pub use idem_macros::idempotent;

#[doc = include_str!("saga_step.md")]
#[doc(inline)]
pub use idem_macros::saga_step;

pub use idem_runtime::{
    canonical_json, current_call, current_key, default_store, observe, set_default_store,
    set_default_store_shared, Action, BoxError, Call, CallContext, CanonicalError, Disposition,
    Error, Fingerprint, Key, OnConflict, OnStale, Outcome, ParseKeyError,
};
pub use idem_runtime::{recover, Recover, RecoveryReport, Retry, Saga, StepCall, Steps};

/// Where idem keeps its records: the [`Store`](store::Store) trait and its stores.
pub mod store {
    pub use idem_runtime::store::*;
}

/// What the code generated by the attributes calls. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use idem_runtime::private::*;
}
