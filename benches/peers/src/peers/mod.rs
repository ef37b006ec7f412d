//! The peers, each called the way its documentation shows a user calling it, around the
//! same body ([`crate::call::body`]).

pub mod agent_effects;
pub mod cached;
pub mod idempotent;
