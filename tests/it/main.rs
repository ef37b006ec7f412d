//! `#[idempotent]` as a user sees it: behaviour per option, on the stores, across processes.
//! One test binary, so the crate is linked once.

mod behaviour;
mod composition;
mod default_store;
mod events;
mod examples;
mod processes;
mod store_faults;
mod support;
