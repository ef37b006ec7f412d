//! What each option of `#[idempotent]` does, against a store that counts how often a body
//! ran (a `Ledger` of side effects).

use std::sync::Arc;
use std::time::Duration;

use idem::store::{MemoryStore, Store};
use idem::{current_call, current_key, idempotent, observe, Action, Disposition, Key};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::support::{Ledger, Receipt, ToolError};

#[idempotent(skip = [store, ledger], store = store)]
async fn send_email(
    store: &MemoryStore,
    ledger: &Ledger,
    to: &str,
    subject: &str,
) -> Result<Receipt, ToolError> {
    let n = ledger.record();
    Ok(Receipt {
        id: format!("email-{n} to {to}: {subject}"),
    })
}

#[tokio::test]
async fn the_body_runs_once_for_calls_one_after_another() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    for _ in 0..3 {
        let receipt = send_email(&store, &ledger, "ada@example.com", "Your quote")
            .await
            .unwrap();
        assert_eq!(receipt.id, "email-1 to ada@example.com: Your quote");
    }
    assert_eq!(ledger.count(), 1);
    send_email(&store, &ledger, "ada@example.com", "Another subject")
        .await
        .unwrap();
    assert_eq!(ledger.count(), 2, "other arguments are another action");
}

#[idempotent(skip = [store, ledger, started, release], store = store)]
async fn slow_send(
    store: &MemoryStore,
    ledger: &Ledger,
    started: &Notify,
    release: &Notify,
    to: &str,
) -> Result<Receipt, ToolError> {
    let n = ledger.record();
    started.notify_one();
    release.notified().await;
    Ok(Receipt {
        id: format!("email-{n} to {to}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_wait_for_the_first_and_get_its_result() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let (started, release) = (Notify::new(), Notify::new());
    let first = observe(slow_send(&store, &ledger, &started, &release, "ada"));
    let duplicates = async {
        started.notified().await; // the first call owns the key and is inside its body
        let waiting = futures_like_join3(
            observe(slow_send(&store, &ledger, &started, &release, "ada")),
            observe(slow_send(&store, &ledger, &started, &release, "ada")),
            async {
                // Let the duplicates reach the store before the body finishes; they wait
                // however long this takes, so the result does not depend on it.
                tokio::task::yield_now().await;
                release.notify_one();
            },
        );
        waiting.await
    };
    let ((first, how), ((second, how2), (third, how3), ())) = tokio::join!(first, duplicates);
    assert_eq!(ledger.count(), 1);
    let expected = Receipt {
        id: "email-1 to ada".into(),
    };
    assert_eq!(
        (first.unwrap(), second.unwrap(), third.unwrap()),
        (expected.clone(), expected.clone(), expected)
    );
    assert_eq!(how, Some(Disposition::Executed));
    // Both duplicates reached the store while the body ran (it finishes only after they
    // were polled), so both waited.
    assert_eq!(
        (how2, how3),
        (
            Some(Disposition::WaitedThenReplayed),
            Some(Disposition::WaitedThenReplayed)
        )
    );
}

async fn futures_like_join3<A, B, C>(a: A, b: B, c: C) -> (A::Output, B::Output, C::Output)
where
    A: std::future::Future,
    B: std::future::Future,
    C: std::future::Future,
{
    tokio::join!(a, b, c)
}

#[idempotent(skip = [store, ledger, started, release], store = store, on_conflict = fail)]
async fn refuse_duplicates(
    store: &MemoryStore,
    ledger: &Ledger,
    started: &Notify,
    release: &Notify,
    job: u32,
) -> Result<u32, ToolError> {
    ledger.record();
    started.notify_one();
    release.notified().await;
    Ok(job)
}

#[tokio::test]
async fn on_conflict_fail_refuses_a_duplicate_at_once() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let (started, release) = (Notify::new(), Notify::new());
    let first = refuse_duplicates(&store, &ledger, &started, &release, 7);
    let duplicate = async {
        started.notified().await;
        let refused = refuse_duplicates(&store, &ledger, &started, &release, 7).await;
        release.notify_one();
        refused
    };
    let (first, refused) = tokio::join!(first, duplicate);
    assert_eq!(first, Ok(7));
    match refused {
        Err(ToolError::Idem(message)) => assert!(message.contains("in progress"), "{message}"),
        other => panic!("expected InProgress, got {other:?}"),
    }
    assert_eq!(ledger.count(), 1);
}

#[idempotent(skip = [store, ledger], store = store, on_conflict = wait("50ms"))]
async fn bounded_wait(store: &MemoryStore, ledger: &Ledger, job: u32) -> Result<u32, ToolError> {
    ledger.record();
    Ok(job)
}

#[tokio::test]
async fn a_bounded_wait_gives_up_with_in_progress() {
    let store = MemoryStore::new();
    // Another process holds the key with a long lease and never finishes while we wait.
    static SAME: Action = Action::new("bounded_wait");
    let key = SAME.key(&(7u32,)).unwrap();
    let fingerprint = key.into();
    let claim = store
        .claim(&idem::store::ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "bounded_wait",
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(3600),
            on_stale: idem::OnStale::TakeOver,
        })
        .await
        .unwrap();
    assert!(matches!(claim, idem::store::Claim::Acquired { .. }));
    let ledger = Ledger::new();
    match bounded_wait(&store, &ledger, 7).await {
        Err(ToolError::Idem(message)) => assert!(message.contains("in progress"), "{message}"),
        other => panic!("expected InProgress after the wait, got {other:?}"),
    }
    assert_eq!(ledger.count(), 0);
}

#[idempotent(skip = [store, ledger], store = store)]
async fn flaky(
    store: &MemoryStore,
    ledger: &Ledger,
    fail: bool,
    order: u32,
) -> Result<u32, ToolError> {
    ledger.record();
    if fail {
        Err(ToolError::Transient("smtp timeout".into()))
    } else {
        Ok(order)
    }
}

#[tokio::test]
async fn an_error_releases_the_key_so_a_retry_runs_again() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    #[idempotent(key = [order], skip = [store, ledger, fail], store = store)]
    async fn send(
        store: &MemoryStore,
        ledger: &Ledger,
        fail: bool,
        order: u32,
    ) -> Result<u32, ToolError> {
        flaky(store, ledger, fail, order).await
    }
    assert_eq!(
        send(&store, &ledger, true, 1).await,
        Err(ToolError::Transient("smtp timeout".into()))
    );
    assert_eq!(send(&store, &ledger, false, 1).await, Ok(1));
    assert_eq!(
        send(&store, &ledger, true, 1).await,
        Ok(1),
        "the success is replayed"
    );
    // Outer and inner calls: the inner ran twice (fail, then succeed), the outer replayed.
    assert_eq!(ledger.count(), 2);
}

#[idempotent(skip = [store, ledger, outcome], store = store, cache_err = ToolError::is_final,
             name = "behaviour_charge")]
async fn charge(
    store: &MemoryStore,
    ledger: &Ledger,
    outcome: Result<u64, ToolError>,
    card: &str,
) -> Result<u64, ToolError> {
    ledger.record();
    outcome
}

#[tokio::test]
async fn cache_err_records_final_errors_and_replays_them() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let declined = Err(ToolError::Declined("insufficient funds".into()));
    assert_eq!(
        charge(&store, &ledger, declined.clone(), "card-1").await,
        declined
    );
    assert_eq!(
        charge(&store, &ledger, Ok(1999), "card-1").await,
        declined,
        "the decline is replayed"
    );
    assert_eq!(ledger.count(), 1);

    let timeout = Err(ToolError::Transient("timeout".into()));
    assert_eq!(
        charge(&store, &ledger, timeout.clone(), "card-2").await,
        timeout
    );
    assert_eq!(
        charge(&store, &ledger, Ok(1999), "card-2").await,
        Ok(1999),
        "a transient error is retried"
    );
    assert_eq!(ledger.count(), 3);
}

#[derive(Serialize)]
struct Order {
    id: u64,
    total_cents: u64,
}

struct InvoiceTool {
    store: Arc<dyn Store>,
    ledger: Ledger,
}

struct Mailer;

impl InvoiceTool {
    #[idempotent(key = [customer_id, order.id], skip = [mailer], name = "send_invoice",
                 on_conflict = wait("10s"), store = self.store.clone())]
    async fn send_invoice(
        &self,
        mailer: &Mailer,
        customer_id: &str,
        order: &Order,
    ) -> Result<Receipt, ToolError> {
        let _ = mailer;
        let n = self.ledger.record();
        Ok(Receipt {
            id: format!("invoice-{n} for order {}", order.id),
        })
    }

    #[idempotent(key = [customer_id, order.id], skip = [mailer], name = "send_invoice",
                 store = self.store.clone())]
    async fn send_invoice_renamed(
        &mut self,
        mailer: &Mailer,
        customer_id: &str,
        order: &Order,
    ) -> Result<Receipt, ToolError> {
        let _ = mailer;
        let n = self.ledger.record();
        Ok(Receipt {
            id: format!("renamed-{n}"),
        })
    }
}

#[tokio::test]
async fn key_picks_the_identity_and_the_payload_must_match() {
    let mut tool = InvoiceTool {
        store: Arc::new(MemoryStore::new()),
        ledger: Ledger::new(),
    };
    let order = Order {
        id: 7,
        total_cents: 1999,
    };
    let first = tool
        .send_invoice(&Mailer, "customer-42", &order)
        .await
        .unwrap();
    assert_eq!(first.id, "invoice-1 for order 7");

    let changed = Order {
        id: 7,
        total_cents: 2999,
    };
    match tool.send_invoice(&Mailer, "customer-42", &changed).await {
        Err(ToolError::Idem(message)) => {
            assert!(message.contains("different arguments"), "{message}")
        }
        other => panic!("expected PayloadMismatch, got {other:?}"),
    }
    // `name` pins the action, so that a rename keeps its keys; a second function that takes
    // the same name in the same program is refused, never answered with the first's results.
    match tool
        .send_invoice_renamed(&Mailer, "customer-42", &order)
        .await
    {
        Err(ToolError::Idem(message)) => {
            assert!(message.contains("would share the keys"), "{message}")
        }
        other => panic!("expected ActionClash, got {other:?}"),
    }
    assert_eq!(tool.ledger.count(), 1);
}

#[tokio::test]
async fn version_and_namespace_give_new_keys() {
    #[idempotent(skip = [store, ledger], store = store, name = "notify")]
    async fn v1(store: &MemoryStore, ledger: &Ledger, user: &str) -> Result<usize, ToolError> {
        Ok(ledger.record())
    }
    #[idempotent(skip = [store, ledger], store = store, name = "notify", version = 2)]
    async fn v2(store: &MemoryStore, ledger: &Ledger, user: &str) -> Result<usize, ToolError> {
        Ok(ledger.record())
    }
    #[idempotent(skip = [store, ledger], store = store, name = "notify", namespace = "tenant-b")]
    async fn other_tenant(
        store: &MemoryStore,
        ledger: &Ledger,
        user: &str,
    ) -> Result<usize, ToolError> {
        Ok(ledger.record())
    }
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    assert_eq!(v1(&store, &ledger, "ada").await, Ok(1));
    assert_eq!(v1(&store, &ledger, "ada").await, Ok(1));
    assert_eq!(v2(&store, &ledger, "ada").await, Ok(2));
    assert_eq!(other_tenant(&store, &ledger, "ada").await, Ok(3));
}

#[idempotent(skip = [store], store = store)]
async fn reports_its_key(store: &MemoryStore, payment: &str) -> Result<(String, bool), ToolError> {
    let call = current_call().expect("inside a body");
    assert_eq!(current_key(), Some(call.key()));
    assert_eq!(call.action(), "reports_its_key");
    Ok((call.key().to_string(), call.resumed()))
}

#[tokio::test]
async fn the_body_reads_its_own_key_to_pass_downstream() {
    let store = MemoryStore::new();
    let (seen, resumed) = reports_its_key(&store, "payment-1").await.unwrap();
    let expected: Key = Action::new("reports_its_key").key(&("payment-1",)).unwrap();
    assert_eq!(
        seen,
        expected.to_string(),
        "the macro's key is the runtime's key of the same tuple"
    );
    assert!(!resumed);
    assert_eq!(current_key(), None, "outside a body there is no key");
}

#[tokio::test]
async fn observe_tells_executed_from_replayed() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let (_, first) = observe(send_email(&store, &ledger, "bob", "hello")).await;
    let (_, second) = observe(send_email(&store, &ledger, "bob", "hello")).await;
    assert_eq!(first, Some(Disposition::Executed));
    assert_eq!(second, Some(Disposition::Replayed));
}

#[tokio::test]
async fn generic_functions_and_arguments_by_value() {
    #[idempotent(skip = [store, ledger], store = store)]
    async fn remember<T: Serialize + Send + Sync>(
        store: &MemoryStore,
        ledger: &Ledger,
        value: T,
        tags: Vec<String>,
    ) -> Result<usize, ToolError> {
        let _ = (value, tags);
        Ok(ledger.record())
    }
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let tags = || vec!["a".to_string()];
    assert_eq!(remember(&store, &ledger, 42u8, tags()).await, Ok(1));
    assert_eq!(
        remember(&store, &ledger, 42u64, tags()).await,
        Ok(1),
        "same JSON, same key"
    );
    assert_eq!(
        remember(&store, &ledger, "42", tags()).await,
        Ok(2),
        "a string is not a number"
    );
}

#[tokio::test]
async fn hash_maps_give_the_same_key_whatever_their_order() {
    use std::collections::HashMap;
    #[idempotent(skip = [store, ledger], store = store)]
    async fn tag(
        store: &MemoryStore,
        ledger: &Ledger,
        labels: HashMap<String, u32>,
    ) -> Result<usize, ToolError> {
        let _ = labels;
        Ok(ledger.record())
    }
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let forwards: HashMap<String, u32> = (0..64).map(|i| (format!("label-{i}"), i)).collect();
    let backwards: HashMap<String, u32> =
        (0..64).rev().map(|i| (format!("label-{i}"), i)).collect();
    assert_eq!(tag(&store, &ledger, forwards).await, Ok(1));
    assert_eq!(tag(&store, &ledger, backwards).await, Ok(1));
    assert_eq!(ledger.count(), 1);
}

#[tokio::test]
async fn arguments_without_a_json_form_are_a_codec_error_not_a_panic() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    #[idempotent(skip = [store, ledger], store = store, name = "behaviour_measure")]
    async fn measure(store: &MemoryStore, ledger: &Ledger, value: f64) -> Result<usize, ToolError> {
        Ok(ledger.record())
    }
    match measure(&store, &ledger, f64::NAN).await {
        Err(ToolError::Idem(message)) => assert!(message.contains("encode"), "{message}"),
        other => panic!("expected a codec error, got {other:?}"),
    }
    assert_eq!(ledger.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_at_once_run_the_body_once() {
    let store = MemoryStore::new();
    let ledger = Arc::new(Ledger::new());
    #[idempotent(skip = [store, ledger], store = store, name = "behaviour_pay")]
    async fn pay(store: MemoryStore, ledger: Arc<Ledger>, order: u32) -> Result<usize, ToolError> {
        tokio::task::yield_now().await;
        Ok(ledger.record())
    }
    let tasks: Vec<_> = (0..32)
        .map(|_| tokio::spawn(pay(store.clone(), Arc::clone(&ledger), 7)))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(1));
    }
    assert_eq!(ledger.count(), 1);
}

#[idempotent(skip = [store, ledger], store = store, lease = "200ms")]
async fn hangs_the_first_time(
    store: &MemoryStore,
    ledger: &Ledger,
    job: u32,
) -> Result<(usize, bool), ToolError> {
    let n = ledger.record();
    let resumed = current_call().is_some_and(|call| call.resumed());
    if n == 1 {
        std::future::pending::<()>().await;
    }
    Ok((n, resumed))
}

#[tokio::test]
async fn a_call_dropped_inside_its_body_is_resumed_after_its_lease() {
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    // The agent stops waiting: the call's future is dropped inside the body, after the side
    // effect. Nothing is recorded, so the claim stays until its lease runs out.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        hangs_the_first_time(&store, &ledger, 7),
    )
    .await;
    assert!(gave_up.is_err());
    assert_eq!(ledger.count(), 1);
    // The retry waits out the lease, then runs the body again, told that it resumes.
    let (n, resumed) = hangs_the_first_time(&store, &ledger, 7).await.unwrap();
    assert_eq!((n, resumed), (2, true));
    assert_eq!(
        hangs_the_first_time(&store, &ledger, 7).await.unwrap(),
        (2, true),
        "then replayed"
    );
}

/// An extractor, as MCP and web frameworks hand a tool its input: `Parameters(req)`.
struct Parameters<T>(T);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Booking {
    flight: String,
    seat: u32,
}

#[tokio::test]
async fn pattern_arguments_form_the_key_from_their_bindings() {
    #[idempotent(store = store, skip = [store, ledger], name = "behaviour_book")]
    async fn book(
        store: &MemoryStore,
        ledger: &Ledger,
        Parameters(req): Parameters<Booking>,
    ) -> Result<String, ToolError> {
        Ok(format!(
            "{} seat {} #{}",
            req.flight,
            req.seat,
            ledger.record()
        ))
    }
    let (store, ledger) = (MemoryStore::new(), Ledger::new());
    let request = || {
        Parameters(Booking {
            flight: "LH-400".into(),
            seat: 12,
        })
    };
    let first = book(&store, &ledger, request()).await.unwrap();
    let again = book(&store, &ledger, request()).await.unwrap();
    assert_eq!(first, "LH-400 seat 12 #1");
    assert_eq!(again, first, "replayed");
    let other = Parameters(Booking {
        flight: "LH-400".into(),
        seat: 13,
    });
    assert_eq!(
        book(&store, &ledger, other).await.unwrap(),
        "LH-400 seat 13 #2",
        "another booking is another key"
    );
    assert_eq!(ledger.count(), 2);
}
