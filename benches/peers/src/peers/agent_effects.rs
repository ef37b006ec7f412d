//! agent-effects 0.2: `runtime.effect(name, key).input(&args).run(action)`, as its README
//! shows, on any of its stores.
//!
//! `remote_idempotency(true)` gives it idem's default on a crash (run the call again under
//! the same key); its kind stays the default, `IrreversibleWrite`. A duplicate of a call in
//! progress gets `EffectOutcome::InProgress` at once: the caller asks again, yielding in
//! between (the crate's `Runtime::wait` polls the store instead).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use agent_effects::{EffectFailure, EffectOutcome, EffectStore, Runtime};

use crate::call::{body, AMOUNT, CUSTOMER};
use crate::measure::{Call, Retrying};

/// A caller through an agent-effects runtime: a new key each call (`replay: None`), or the
/// round's key.
pub struct EffectCall<S> {
    pub runtime: Runtime<S>,
    pub bodies: Arc<AtomicU64>,
    pub replay: Option<u64>,
}

impl<S: EffectStore + Send + Sync + 'static> Call for EffectCall<S> {
    async fn call(&self, n: u64) -> Result<(), String> {
        let order = self.replay.unwrap_or(n);
        let retrying = Retrying::start();
        loop {
            let bodies = self.bodies.clone();
            let outcome = self
                .runtime
                .effect("send_quote", format!("{CUSTOMER}:{order}"))
                .remote_idempotency(true)
                .input(&(CUSTOMER, order, AMOUNT))
                .run(move |_context| {
                    let bodies = bodies.clone();
                    async move { Ok::<_, EffectFailure>(body(&bodies, CUSTOMER, order, AMOUNT)) }
                })
                .await
                .map_err(|e| format!("agent-effects: {e}"))?;
            match outcome {
                EffectOutcome::Committed(receipt) if receipt.is_for(order) => return Ok(()),
                EffectOutcome::InProgress { .. } => retrying.again("agent-effects").await?,
                other => return Err(format!("agent-effects answered {other:?}")),
            }
        }
    }
}
