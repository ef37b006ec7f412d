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

#[doc(hidden)]
pub mod private;

pub use call::{
    current_call, current_key, default_store, observe, set_default_store, set_default_store_shared,
    Action, ActionSettings, Call, CallContext, Disposition, OnConflict, Outcome,
};
pub use error::{BoxError, Error, SharedError};
pub use key::{canonical_json, CanonicalError, Fingerprint, Key, ParseKeyError};
pub use saga::{recover, Recover, RecoveryReport, Retry, Saga, StepCall, Steps};
pub use store::{OnStale, Store};
