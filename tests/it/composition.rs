//! `#[idempotent]` together with the macros agents are written with.

use async_trait::async_trait;
use idem::idempotent;
use idem::store::MemoryStore;

use crate::support::{Ledger, Receipt, ToolError};

#[async_trait]
trait EmailTool {
    async fn send(&self, to: &str, body: &str) -> Result<Receipt, ToolError>;
}

struct Smtp {
    store: MemoryStore,
    ledger: Ledger,
}

#[async_trait]
impl EmailTool for Smtp {
    #[idempotent(store = self.store.clone())]
    async fn send(&self, to: &str, body: &str) -> Result<Receipt, ToolError> {
        let n = self.ledger.record();
        Ok(Receipt {
            id: format!("{n}: {to} {body}"),
        })
    }
}

#[tokio::test]
async fn inside_an_async_trait_impl() {
    let smtp = Smtp {
        store: MemoryStore::new(),
        ledger: Ledger::new(),
    };
    let tool: &dyn EmailTool = &smtp;
    let first = tool.send("ada", "hi").await.unwrap();
    assert_eq!(tool.send("ada", "hi").await.unwrap(), first);
    assert_eq!(smtp.ledger.count(), 1);
}

#[tracing::instrument(skip_all)]
#[idempotent(skip = [store, ledger], store = store)]
async fn instrumented_outside(
    store: &MemoryStore,
    ledger: &Ledger,
    to: &str,
) -> Result<usize, ToolError> {
    tracing::info!("sending");
    Ok(ledger.record())
}

#[idempotent(skip = [store, ledger], store = store)]
#[tracing::instrument(skip_all, fields(to))]
async fn instrumented_inside(
    store: &MemoryStore,
    ledger: &Ledger,
    to: &str,
) -> Result<usize, ToolError> {
    tracing::info!("sending");
    Ok(ledger.record())
}

#[tokio::test]
async fn stacked_with_tracing_instrument_either_way() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    assert_eq!(instrumented_outside(&store, &ledger, "ada").await, Ok(1));
    assert_eq!(instrumented_outside(&store, &ledger, "ada").await, Ok(1));
    assert_eq!(instrumented_inside(&store, &ledger, "ada").await, Ok(2));
    assert_eq!(instrumented_inside(&store, &ledger, "ada").await, Ok(2));
}
