//! `#[idempotent]` as a user sees it: behaviour per option, on the stores, across processes.
//! One test binary, so the crate is linked once.

mod behaviour;
mod child;
mod clock_skew;
mod composition;
mod default_store;
mod dropped_calls;
mod events;
mod example_agent_demo;
mod example_mcp_server;
mod example_payment_agent;
mod example_rig_agent;
mod examples;
mod faulty_store;
mod fleet;
mod http;
mod identity;
mod in_doubt;
mod processes;
mod replay_cache;
mod safe_at_rest;
mod saga_crashes;
mod saga_regressions;
mod saga_world;
mod sagas;
mod server_faults;
mod store_faults;
mod support;
