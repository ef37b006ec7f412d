//! Memory rows: the plain call, idem on `MemoryStore`, `cached`, `idempotent`'s
//! `MemoryStore`, agent-effects' `MemoryStore`. In-process only, so what they measure is the
//! deduplication's own cost per call; the table reports it as overhead over the plain call.
//!
//! Fresh rows: idem and `idempotent` keep results 100 ms (their stores sweep expired ones, so
//! they stay at a steady size, of the order of 100,000 entries here); `cached` is an LRU of
//! 100,000; agent-effects has no TTL, so it gets a new store each round and grows during it.
//! Replay rows: one new key per round.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use agent_effects::Runtime;
use idem::store::{MemoryStore, Store};

use super::{once_per_call, Mode, RoundResult, System};
use crate::call::{IdemCall, IdemFn, PlainCall};
use crate::measure::{next_number, Timing};
use crate::peers::agent_effects::EffectCall;
use crate::peers::cached::CachedCall;
use crate::peers::idempotent::IdempotentCall;

/// The TTL of fresh entries, for the systems that have one (idem's is in its attribute).
const FRESH_TTL: Duration = Duration::from_millis(100);

/// One round of a memory row.
pub async fn round(
    system: System,
    mode: Mode,
    callers: usize,
    timing: Timing,
) -> Result<RoundResult, String> {
    let bodies = Arc::new(AtomicU64::new(0));
    let replay = (mode == Mode::Replay).then(next_number);
    let result = match system {
        System::Plain => {
            let call = PlainCall {
                bodies: bodies.clone(),
            };
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::IdemMemory => {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let call = IdemCall::new(store, &bodies, IdemFn::FreshMemory, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::Cached => {
            let call = CachedCall {
                bodies: bodies.clone(),
                replay,
            };
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::IdempotentMemory => {
            // Its store is an actor task fed by a channel of `buffer` requests; expired
            // entries are swept every `sweep_interval`.
            let store = idempotent::store::memory::MemoryStore::new(1024, FRESH_TTL);
            let call = IdempotentCall::new(Arc::new(store), FRESH_TTL, &bodies, replay);
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        System::AgentEffectsMemory => {
            let call = EffectCall {
                runtime: Runtime::new(agent_effects_memory::MemoryStore::new()),
                bodies: bodies.clone(),
                replay,
            };
            once_per_call(Arc::new(call), &bodies, mode, callers, timing).await
        }
        other => return Err(format!("{other:?} is not a memory row")),
    };
    Ok(result)
}
