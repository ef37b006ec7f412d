//! Safe at rest, as a user sees it: `#[secret]` step arguments never reach the saga log, and
//! values over `max_value_bytes` never reach the store (arguments refused before anything
//! runs; a result too large leaves its key in doubt, never freed for a blind re-run).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use idem::store::{MemoryStore, SagaStatus, SagaStore, StepState, Store};
use idem::{idempotent, saga_step, Action, Error, Saga};
use serde::{Deserialize, Serialize};

/// A tool's error that keeps idem's error whole, so that tests can match its variant.
#[derive(Debug)]
enum PayError {
    Declined,
    Idem(Error),
}

impl From<Error> for PayError {
    fn from(error: Error) -> Self {
        PayError::Idem(error)
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayError::Declined => f.write_str("declined"),
            PayError::Idem(error) => error.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Charge {
    id: String,
}

/// The card numbers the payment provider was handed, and the charges it refunded.
static CHARGED_WITH: Mutex<Vec<String>> = Mutex::new(Vec::new());
static REFUNDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The card number is a secret: it is in the step's call, never in the log.
#[saga_step(compensate = refund_secret_charge)]
async fn charge_card_secretly(
    customer: &str,
    #[secret] card_number: String,
    cents: u64,
) -> Result<Charge, PayError> {
    CHARGED_WITH
        .lock()
        .unwrap()
        .push(format!("{customer}:{card_number}"));
    Ok(Charge {
        id: format!("ch-{customer}-{cents}"),
    })
}

/// Undone from the output alone: the charge id is all a refund needs.
async fn refund_secret_charge(charge: Charge) -> Result<(), PayError> {
    REFUNDED.lock().unwrap().push(charge.id);
    Ok(())
}

#[saga_step(irreversible)]
async fn decline_everything(customer: &str) -> Result<(), PayError> {
    let _ = customer;
    Err(PayError::Declined)
}

const CARD: &str = "4111111111111111";

#[tokio::test]
async fn a_secret_argument_is_a_placeholder_in_the_log_and_the_compensation_needs_only_the_output()
{
    let store = MemoryStore::new();
    let failed = Saga::new("secret-order-1")
        .store(&store)
        .run(|s| async move {
            s.step(charge_card_secretly("ada", CARD.to_owned(), 1999))
                .await?;
            s.step(decline_everything("ada")).await?;
            Ok::<_, PayError>(())
        })
        .await;
    assert!(matches!(failed, Err(PayError::Declined)), "{failed:?}");
    assert!(CHARGED_WITH
        .lock()
        .unwrap()
        .contains(&format!("ada:{CARD}")));
    assert!(REFUNDED.lock().unwrap().contains(&"ch-ada-1999".to_owned()));

    let key = Action::new("saga").key(&("secret-order-1",)).unwrap();
    let log = store.read_saga(&key).await.unwrap().expect("the log");
    assert_eq!(log.status, SagaStatus::Compensated);
    let args = String::from_utf8(log.steps[0].args.clone()).unwrap();
    assert_eq!(args, r#"["ada","<secret>",1999]"#);
    assert!(!args.contains(CARD));
    assert_eq!(log.steps[0].state, StepState::Compensated);
}

#[tokio::test]
async fn a_secret_step_is_run_again_by_the_sagas_code_not_from_the_log() {
    // A second run of the saga replays the step from the log: the placeholder is compared
    // with the placeholder, and the body does not run again.
    let store = MemoryStore::new();
    let run = || {
        Saga::new("secret-order-2")
            .store(&store)
            .run(|s| async move {
                let charge = s
                    .step(charge_card_secretly("bob", CARD.to_owned(), 500))
                    .await?;
                Ok::<_, PayError>(charge.id)
            })
    };
    assert_eq!(run().await.unwrap(), "ch-bob-500");
    let before = CHARGED_WITH.lock().unwrap().len();
    assert_eq!(run().await.unwrap(), "ch-bob-500");
    assert_eq!(CHARGED_WITH.lock().unwrap().len(), before);
}

static RAN: AtomicUsize = AtomicUsize::new(0);

/// A tool whose result can be far larger than it should be.
#[idempotent(max_value_bytes = 64, store = &*LIMITED, on_conflict = fail)]
async fn fetch_page(url: &str, size: usize) -> Result<String, PayError> {
    let _ = url;
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok("x".repeat(size))
}

static LIMITED: std::sync::LazyLock<MemoryStore> = std::sync::LazyLock::new(MemoryStore::new);

#[tokio::test]
async fn a_result_over_the_limit_is_too_large_and_leaves_the_key_in_doubt() {
    assert_eq!(fetch_page("small", 10).await.unwrap().len(), 10);

    let before = RAN.load(Ordering::SeqCst);
    let error = fetch_page("large", 1_000).await.unwrap_err();
    let PayError::Idem(Error::TooLarge {
        key,
        size,
        limit,
        what,
    }) = error
    else {
        panic!("expected TooLarge, got {error:?}");
    };
    assert_eq!((size, limit, what.as_str()), (1_002, 64, "the result"));
    assert_eq!(RAN.load(Ordering::SeqCst), before + 1, "the body ran once");

    // Nothing was recorded, and the key was not released: it is in doubt.
    let record = LIMITED.get(&key).await.unwrap().expect("the claim is kept");
    assert_eq!(record.status, idem::store::Status::InProgress);
    assert!(record.outcome.is_none());
    // Its lease has ended: with `on_conflict = fail`, a live claim would be refused as in
    // progress; this one is taken over at once (`on_stale = takeover`), the body told it
    // resumes an interrupted call.
    let again = fetch_page("large", 1_000).await.unwrap_err();
    assert!(
        matches!(again, PayError::Idem(Error::TooLarge { .. })),
        "{again:?}"
    );
    assert_eq!(RAN.load(Ordering::SeqCst), before + 2);
}

#[test]
fn the_limit_is_set_per_action_with_a_default_of_one_mebibyte() {
    assert_eq!(Action::DEFAULT_MAX_VALUE_BYTES, 1 << 20);
    static BIG: Action = Action::new("big").max_value_bytes(8 << 20);
    assert_eq!(BIG.settings().max_value_bytes, 8 << 20);
}

static LOGGED: AtomicUsize = AtomicUsize::new(0);

#[saga_step(irreversible, max_value_bytes = 100)]
async fn store_note(text: String) -> Result<usize, PayError> {
    LOGGED.fetch_add(1, Ordering::SeqCst);
    Ok(text.len())
}

#[saga_step(irreversible, max_value_bytes = 100)]
async fn echo_note(size: usize) -> Result<String, PayError> {
    Ok("y".repeat(size))
}

#[tokio::test]
async fn step_arguments_over_the_limit_are_refused_before_anything_runs_or_is_logged() {
    let store = MemoryStore::new();
    let error = Saga::new("large-args")
        .store(&store)
        .run(|s| async move { s.step(store_note("z".repeat(500))).await })
        .await
        .unwrap_err();
    let PayError::Idem(Error::TooLarge { what, size, .. }) = &error else {
        panic!("expected TooLarge, got {error:?}");
    };
    assert_eq!(what, "the arguments of saga step `store_note`");
    assert_eq!(*size, 504);
    assert_eq!(LOGGED.load(Ordering::SeqCst), 0, "the body did not run");
    let key = Action::new("saga").key(&("large-args",)).unwrap();
    let log = store.read_saga(&key).await.unwrap();
    assert!(
        log.is_none_or(|log| log.steps.is_empty()),
        "no intent was logged"
    );
}

#[tokio::test]
async fn a_step_output_over_the_limit_leaves_the_step_in_doubt() {
    let store = MemoryStore::new();
    let error = Saga::new("large-output")
        .store(&store)
        .run(|s| async move { s.step(echo_note(500)).await })
        .await
        .unwrap_err();
    assert!(
        matches!(error, PayError::Idem(Error::SagaNeedsAttention { .. })),
        "{error:?}"
    );
    let key = Action::new("saga").key(&("large-output",)).unwrap();
    let log = store.read_saga(&key).await.unwrap().expect("the log");
    // It ran, its output was not logged: in doubt, the saga left for an operator.
    assert_eq!(log.steps[0].state, StepState::Started);
    assert!(log.steps[0].output.is_none());
    assert_eq!(log.status, SagaStatus::NeedsAttention);
}
