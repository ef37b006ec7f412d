//! The runtime of [idem](https://docs.rs/idem): key derivation, the claim protocol, the
//! [`Store`] trait and its stores.
//!
//! Most users depend on the `idem` crate, which re-exports all of this next to the
//! `#[idempotent]` attribute. This crate is for store implementations and for code that wants
//! the protocol without the macro:
//!
//! ```
//! use idem_runtime::{store::MemoryStore, Action, Error, Outcome};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! static SEND_QUOTE: Action = Action::new("send_quote_email");
//! let store = MemoryStore::new();
//! let mut sent = 0;
//! for _attempt in 0..3 {
//!     let receipt = SEND_QUOTE
//!         .call(&("customer-42", "quote-7"))?
//!         .run::<_, Error, _>(&store, async {
//!             sent += 1;
//!             Ok(format!("message-{sent}"))
//!         })
//!         .await?;
//!     assert_eq!(receipt.value(), "message-1");
//! }
//! assert_eq!(sent, 1);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```
//!
//! Bodies run on a Tokio runtime with its time driver enabled (`#[tokio::main]` has it): the
//! heartbeat that keeps a long body's claim alive is a Tokio timer.
#![warn(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    missing_debug_implementations
)]
#![forbid(unsafe_code)]

mod call;
mod error;
mod key;
mod saga;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

#[cfg(feature = "http")]
pub mod http;

// Feature `rmcp`: `From<Error> for rmcp::ErrorData` (an impl, nothing to name).
#[cfg(feature = "rmcp")]
mod rmcp;

#[doc(hidden)]
pub mod private;

/// Counters and histograms of calls through the [`metrics`](https://docs.rs/metrics) facade
/// (feature `metrics`, off by default): install any recorder (a Prometheus exporter, …) and
/// every call is counted and timed. The names and labels are stable:
///
/// | name | kind | labels | what |
/// |---|---|---|---|
/// | `idem_calls_total` | counter | `action`, `outcome`, `failed` | calls, one per call |
/// | `idem_claim_seconds` | histogram (seconds) | `action` | the claim phase: until the call owns its key, found its record, or is refused; a wait for another caller (`on_conflict = wait`) included |
/// | `idem_body_seconds` | histogram (seconds) | `action` | the body, for calls that ran it (a `verify` asked first included; recording the outcome not) |
///
/// `action` is the action's name (`send_invoice`, `SendEmail::call`); a saga's own claim is
/// a call too, under the saga's name. `failed` is `"true"` when the call returned an error.
/// `outcome` is the word of the call's `tracing` event:
///
/// | `outcome` | the call |
/// |---|---|
/// | `executed` | ran the body (`failed = "true"`: the body's error, the key released or its final error recorded) |
/// | `taken_over` | ran the body again after an owner died inside it, or left it in doubt |
/// | `unrecorded` | ran the body, whose result the store failed to record |
/// | `in_doubt` | ran the body, whose error was ambiguous (`in_doubt = …`): the key kept in doubt |
/// | `verified` | found by `verify` that an earlier call in doubt had its effect: its output recorded |
/// | `replayed` | returned a recorded result (or final error) at once |
/// | `waited` | waited for another caller holding the key, then returned its result |
/// | `conflict` | refused: another caller holds the key (`on_conflict = fail`, or the wait ran out) |
/// | `payload_mismatch` | refused: the key was used with another payload |
/// | `needs_review` | refused: the key is parked for an operator |
/// | `lost_ownership` | ran the body, but its lease was taken over (or an operator settled the key, or the store lost the claim in a failover) before its result was recorded |
/// | `error` | failed in idem or its store (no store, arguments with no JSON form, the store unreachable, …) |
///
/// Without a recorder the facade records nothing, but it cannot say so: the feature costs each
/// call a few reads of the clock and three look-ups of the facade's no-op recorder. Without
/// the feature, none of it is compiled.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use idem_runtime::{store::MemoryStore, Action, Error};
/// use metrics_util::debugging::DebuggingRecorder;
///
/// static SEND: Action = Action::new("send_sms");
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// let store = MemoryStore::new();
/// // A local recorder only sees this thread; a program installs one with its exporter.
/// let _local = metrics::set_default_local_recorder(&recorder);
/// SEND.call(&("+15550100",))?.run::<_, Error, _>(&store, async { Ok(1u32) }).await?;
/// let calls = snapshotter.snapshot().into_vec().into_iter().filter(|(key, ..)| {
///     key.key().name() == idem_runtime::metrics::CALLS_TOTAL
/// });
/// assert_eq!(calls.count(), 1);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[cfg(feature = "metrics")]
pub mod metrics {
    pub use crate::call::metrics::{describe, BODY_SECONDS, CALLS_TOTAL, CLAIM_SECONDS};
}

pub use call::{
    current_call, current_key, default_store, observe, set_default_store, set_default_store_shared,
    Action, ActionSettings, Call, CallContext, Disposition, OnConflict, Outcome,
};
pub use error::{BoxError, Error, SharedError};
pub use key::{canonical_json, CanonicalError, Fingerprint, Key, ParseKeyError};
pub use saga::{
    recover, Recover, RecoveryReport, Retry, Saga, StepCall, Steps, SECRET_PLACEHOLDER,
};
pub use store::{OnStale, Store};
