//! The runtime's integration tests: one binary, so the crate is linked once.

mod canonical_python;
mod encrypted;
mod key_vectors;
mod layers;
#[cfg(feature = "metrics")]
mod metrics;
mod postgres;
mod postgres_failover;
mod properties;
mod python;
mod redis;
mod redis_cluster;
mod sqlite_leases;
mod stores;
mod tls;
