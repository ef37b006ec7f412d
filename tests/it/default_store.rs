//! The store set with `idem::set_default_store`. The only test in this binary that sets it,
//! since it is one per process.

use idem::store::MemoryStore;
use idem::{idempotent, Saga};

use crate::support::{Ledger, ToolError};

static LEDGER: Ledger = Ledger::new();

#[idempotent(ttl = "24h")]
async fn send_quote_email(customer_id: &str, quote_id: &str) -> Result<usize, ToolError> {
    Ok(LEDGER.record())
}

#[tokio::test]
async fn without_a_store_a_call_or_saga_says_so_and_with_one_it_runs_once() {
    let saga = || {
        Saga::new("order-default-store").run(|s| async move {
            s.step(crate::saga_world::send_email("default-store"))
                .await?;
            Ok::<_, ToolError>(7)
        })
    };
    match saga().await {
        Err(ToolError::Idem(message)) => {
            assert!(message.contains("set_default_store"), "{message}")
        }
        other => panic!("expected NoStore, got {other:?}"),
    }
    match send_quote_email("customer-42", "quote-7").await {
        Err(ToolError::Idem(message)) => {
            assert!(message.contains("set_default_store"), "{message}")
        }
        other => panic!("expected NoStore, got {other:?}"),
    }
    assert_eq!(LEDGER.count(), 0);

    idem::set_default_store(MemoryStore::new());
    for _ in 0..3 {
        assert_eq!(send_quote_email("customer-42", "quote-7").await, Ok(1));
    }
    assert_eq!(LEDGER.count(), 1);

    // A saga with no store of its own uses it too.
    for _ in 0..2 {
        assert_eq!(saga().await, Ok(7));
    }
    assert_eq!(
        crate::saga_world::effects("default-store"),
        ["email to default-store"]
    );
}
