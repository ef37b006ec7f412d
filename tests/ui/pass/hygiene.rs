//! The expansion names only `::core`, `::std` and `::idem::__private`, and its own names
//! cannot clash with the user's: it compiles next to items that shadow the prelude, under
//! strict lints.
#![deny(warnings, unused_qualifications, unused_results, missing_docs, unused_extern_crates)]
#![allow(non_camel_case_types)]

/// Shadows the `core` crate for relative paths.
pub mod core {}
/// Shadows the `std` crate for relative paths.
pub mod std {}
/// Shadows the prelude's `idem`-like names.
pub mod __private {}

/// Shadows the prelude's `Result`.
pub struct Result;
/// Shadows the prelude's `Option`.
pub struct Option;
/// Shadows the prelude's `Ok` and `Err`.
pub struct Ok;
/// Shadows the prelude's `Err`.
pub struct Err;
/// Shadows the prelude's `Some` and `None`.
pub struct Some;
/// Shadows `None`.
pub struct None;
/// Shadows `Box`.
pub struct Box;
/// Shadows `Send`.
pub trait Send {}

/// The error of the tool.
#[derive(Debug)]
pub struct ToolError;

impl From<idem::Error> for ToolError {
    fn from(_: idem::Error) -> Self {
        ToolError
    }
}

/// Names the expansion uses inside, declared by the user.
#[idem::idempotent(key = [__idem_call], skip = [__idem_store])]
pub async fn shadowing(
    __idem_call: u64,
    __idem_store: u64,
    __idem_codec: u64,
) -> ::core::result::Result<u64, ToolError> {
    const __IDEM_ACTION: u64 = 1;
    ::core::result::Result::Ok(__idem_call + __idem_store + __idem_codec + __IDEM_ACTION)
}

/// Every option, for every path the expansion writes.
#[idem::idempotent(
    key = [order_id],
    name = "hygiene",
    namespace = "tests",
    version = 3,
    ttl = "1h",
    lease = "5s",
    on_conflict = wait("1s"),
    on_stale = takeover,
    store = ::idem::store::MemoryStore::new(),
)]
pub async fn every_option(order_id: u64, note: ::std::string::String) -> ::core::result::Result<u64, ToolError> {
    let _ = note;
    ::core::result::Result::Ok(order_id)
}

fn main() {}
