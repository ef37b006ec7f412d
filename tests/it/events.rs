//! Each call emits one `tracing` event: action, key (a hash), outcome, time taken.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use idem::idempotent;
use idem::store::MemoryStore;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::support::ToolError;

/// Collects the fields of the events of target `idem`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "idem" {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

/// The `idem` events recorded while `calls` runs.
fn events_of(calls: impl std::future::Future<Output = ()>) -> Vec<BTreeMap<String, String>> {
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || runtime.block_on(calls));
    let recorded = events.0.lock().unwrap().clone();
    recorded
}

#[idempotent(skip = [store], store = store)]
async fn send_sms(store: &MemoryStore, to: &str, text: &str) -> Result<u32, ToolError> {
    Ok(1)
}

#[test]
fn one_event_per_call_with_action_key_outcome_and_time() {
    let events = events_of(async {
        let store = MemoryStore::new();
        send_sms(&store, "+15550100", "your code is 123456")
            .await
            .unwrap();
        send_sms(&store, "+15550100", "your code is 123456")
            .await
            .unwrap();
    });
    assert_eq!(events.len(), 2, "{events:?}");
    let key = idem::Action::new("send_sms")
        .key(&("+15550100", "your code is 123456"))
        .unwrap()
        .to_string();
    for (event, outcome) in events.iter().zip(["executed", "replayed"]) {
        assert_eq!(event["action"], "send_sms");
        assert_eq!(event["key"], key);
        assert_eq!(event["outcome"], outcome);
        assert_eq!(event["failed"], "false");
        assert!(event["elapsed_us"].parse::<u64>().is_ok(), "{event:?}");
        let text = format!("{event:?}");
        assert!(
            !text.contains("123456") && !text.contains("+1555"),
            "no argument may leak into an event: {text}"
        );
    }
}

#[idempotent(skip = [store], store = store, on_conflict = fail)]
async fn export(store: &MemoryStore, report: &str) -> Result<u32, ToolError> {
    Ok(1)
}

#[test]
fn a_refused_duplicate_is_a_conflict_event() {
    let key = idem::Action::new("export").key(&("q3",)).unwrap();
    let events = events_of(async {
        let store = MemoryStore::new();
        // Another caller holds the key.
        let fingerprint = key.into();
        let request = idem::store::ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "export",
            lease: std::time::Duration::from_secs(60),
            ttl: std::time::Duration::from_secs(3600),
            on_stale: idem::OnStale::TakeOver,
        };
        idem::store::Store::claim(&store, &request).await.unwrap();
        assert!(export(&store, "q3").await.is_err());
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["outcome"], "conflict");
    assert_eq!(events[0]["failed"], "true");
    assert_eq!(events[0]["key"], key.to_string());
}

#[idempotent(skip = [store], store = store)]
async fn measure(store: &MemoryStore, value: f64) -> Result<u32, ToolError> {
    Ok(1)
}

#[test]
fn a_call_that_fails_before_its_claim_has_an_event_too() {
    let events = events_of(async {
        let store = MemoryStore::new();
        assert!(measure(&store, f64::NAN).await.is_err());
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "measure");
    assert_eq!(events[0]["outcome"], "error");
    assert_eq!(events[0]["failed"], "true");
    assert!(events[0]["error"].contains("encode"), "{:?}", events[0]);
}
