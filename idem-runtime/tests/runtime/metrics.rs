//! What a call tells the outside: with the `metrics` feature, each call counted by action and
//! outcome and its claim and body timed (`idem_runtime::metrics`), seen by a recording sink;
//! and its `tracing` span, with the action and a short key, never an argument.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::private;
use idem_runtime::store::{ClaimRequest, MemoryStore, Store};
use idem_runtime::{Action, Error, OnConflict, OnStale};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;

/// A tool's error: idem's own, or a timeout after the request was sent (ambiguous).
#[derive(Debug)]
enum ToolError {
    #[allow(dead_code)] // Read through `Debug` only.
    Idem(Error),
    Timeout,
}

impl From<Error> for ToolError {
    fn from(error: Error) -> Self {
        ToolError::Idem(error)
    }
}

/// A series: a metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// What a recorder saw: the counters' counts and the histograms' values.
#[derive(Debug, Default)]
struct Recorded {
    counters: BTreeMap<Series, u64>,
    histograms: BTreeMap<Series, Vec<f64>>,
}

impl Recorded {
    /// The `idem_calls_total` count of (action, outcome, failed).
    fn calls(&self, action: &str, outcome: &str, failed: bool) -> u64 {
        let labels = vec![
            ("action".to_owned(), action.to_owned()),
            ("failed".to_owned(), failed.to_string()),
            ("outcome".to_owned(), outcome.to_owned()),
        ];
        let key = (idem_runtime::metrics::CALLS_TOTAL.to_owned(), labels);
        self.counters.get(&key).copied().unwrap_or(0)
    }

    /// The values of a histogram of `action`.
    fn seconds(&self, name: &str, action: &str) -> &[f64] {
        let labels = vec![("action".to_owned(), action.to_owned())];
        self.histograms
            .get(&(name.to_owned(), labels))
            .map_or(&[], Vec::as_slice)
    }
}

/// The metrics recorded while `calls` runs, by a recorder local to this thread (the runtime is
/// current-thread), so that tests running at the same time do not see each other's.
fn recorded(calls: impl Future<Output = ()>) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        idem_runtime::metrics::describe();
        runtime.block_on(calls)
    });
    let mut recorded = Recorded::default();
    for (key, _unit, _description, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<_> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        labels.sort();
        let id = (key.name().to_owned(), labels);
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(count)) => {
                recorded.counters.insert(id, count);
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                let values = values.into_iter().map(|value| value.into_inner()).collect();
                recorded.histograms.insert(id, values);
            }
            other => panic!("idem records no {other:?}"),
        }
    }
    recorded
}

/// The claim of another caller, alive, on `action`'s key for `args`.
async fn held_by_another(store: &MemoryStore, action: &Action, args: &(&str,)) {
    let key = action.key(args).unwrap();
    let fingerprint = key.into();
    let request = ClaimRequest {
        key: &key,
        fingerprint: &fingerprint,
        action: action.name(),
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    store.claim(&request).await.unwrap();
}

#[test]
fn a_fresh_call_and_its_replay_are_counted_and_timed() {
    static SEND: Action = Action::new("metrics_send");
    let recorded = recorded(async {
        let store = MemoryStore::new();
        for _ in 0..2 {
            let call = SEND.call(&("+15550100",)).unwrap();
            let outcome = call
                .run::<_, Error, _>(&store, async {
                    // Long beside a memory claim, even one a loaded machine preempts.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(1u32)
                })
                .await
                .unwrap();
            assert_eq!(outcome.into_inner(), 1);
        }
    });
    assert_eq!(
        recorded.calls("metrics_send", "executed", false),
        1,
        "{recorded:?}"
    );
    assert_eq!(
        recorded.calls("metrics_send", "replayed", false),
        1,
        "{recorded:?}"
    );
    assert_eq!(recorded.counters.len(), 2, "no other series: {recorded:?}");
    // Both calls claimed; only the first ran the body, for at least its 200 ms.
    let claims = recorded.seconds(idem_runtime::metrics::CLAIM_SECONDS, "metrics_send");
    assert_eq!(claims.len(), 2, "{recorded:?}");
    let bodies = recorded.seconds(idem_runtime::metrics::BODY_SECONDS, "metrics_send");
    assert_eq!(bodies.len(), 1, "{recorded:?}");
    assert!(bodies[0] >= 0.200 && bodies[0] < 10.0, "{bodies:?}");
    assert!(
        claims.iter().all(|seconds| *seconds < bodies[0]),
        "{recorded:?}"
    );
}

#[test]
fn a_refused_duplicate_is_a_conflict_and_runs_no_body() {
    static EXPORT: Action = Action::new("metrics_export").on_conflict(OnConflict::Fail);
    let recorded = recorded(async {
        let store = MemoryStore::new();
        held_by_another(&store, &EXPORT, &("q3",)).await;
        let refused = EXPORT
            .call(&("q3",))
            .unwrap()
            .run::<u32, Error, _>(&store, async { Ok(1) })
            .await;
        assert!(
            matches!(refused, Err(Error::InProgress { .. })),
            "{refused:?}"
        );
    });
    assert_eq!(
        recorded.calls("metrics_export", "conflict", true),
        1,
        "{recorded:?}"
    );
    assert_eq!(recorded.counters.len(), 1, "{recorded:?}");
    let claims = recorded.seconds(idem_runtime::metrics::CLAIM_SECONDS, "metrics_export");
    assert_eq!(claims.len(), 1, "{recorded:?}");
    let bodies = recorded.seconds(idem_runtime::metrics::BODY_SECONDS, "metrics_export");
    assert!(bodies.is_empty(), "{recorded:?}");
}

#[test]
fn an_ambiguous_error_is_in_doubt_and_a_plain_error_executed_and_failed() {
    static CHARGE: Action = Action::new("metrics_charge");
    fn is_ambiguous(error: &ToolError) -> bool {
        matches!(error, ToolError::Timeout)
    }
    let recorded = recorded(async {
        let store = MemoryStore::new();
        // An ambiguous error keeps the key in doubt.
        let codec = private::in_doubt(
            private::codec::<Result<u32, ToolError>, _, _>(),
            is_ambiguous,
        );
        let call = CHARGE.call(&("card-1",)).unwrap();
        let result = private::run(call, &store, codec, async { Err(ToolError::Timeout) }).await;
        assert!(matches!(result, Err(ToolError::Timeout)), "{result:?}");
        // Without `in_doubt`, the same error releases its key: the body ran, the call failed.
        let codec = private::codec::<Result<u32, ToolError>, _, _>();
        let call = CHARGE.call(&("card-2",)).unwrap();
        let result = private::run(call, &store, codec, async { Err(ToolError::Timeout) }).await;
        assert!(matches!(result, Err(ToolError::Timeout)), "{result:?}");
    });
    assert_eq!(
        recorded.calls("metrics_charge", "in_doubt", true),
        1,
        "{recorded:?}"
    );
    assert_eq!(
        recorded.calls("metrics_charge", "executed", true),
        1,
        "{recorded:?}"
    );
    assert_eq!(recorded.counters.len(), 2, "{recorded:?}");
    let bodies = recorded.seconds(idem_runtime::metrics::BODY_SECONDS, "metrics_charge");
    assert_eq!(bodies.len(), 2, "{recorded:?}");
}

#[test]
fn another_payload_under_the_key_is_a_payload_mismatch() {
    static QUOTE: Action = Action::new("metrics_quote");
    let recorded = recorded(async {
        let store = MemoryStore::new();
        for amount in [100, 200] {
            let call = QUOTE
                .call(&("c-1",))
                .unwrap()
                .with_payload(&("c-1", amount))
                .unwrap();
            let _ = call.run::<u32, Error, _>(&store, async { Ok(1) }).await;
        }
    });
    assert_eq!(
        recorded.calls("metrics_quote", "executed", false),
        1,
        "{recorded:?}"
    );
    assert_eq!(
        recorded.calls("metrics_quote", "payload_mismatch", true),
        1,
        "{recorded:?}"
    );
}

// ---- the span ----

/// The spans of target `idem` (their fields), and for each event, the span it was in.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpansSeen>>);

#[derive(Default, Debug)]
struct SpansSeen {
    spans: Vec<(tracing::span::Id, BTreeMap<String, String>)>,
    /// Each event's message, and the span current when it was emitted (its id and name).
    events: Vec<(String, Option<(tracing::span::Id, &'static str)>)>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        fields.insert("name".to_owned(), attributes.metadata().name().to_owned());
        fields.insert(
            "target".to_owned(),
            attributes.metadata().target().to_owned(),
        );
        fields.insert(
            "level".to_owned(),
            attributes.metadata().level().to_string(),
        );
        attributes.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().spans.push((id.clone(), fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut seen = self.0.lock().unwrap();
        if let Some((_, fields)) = seen.spans.iter_mut().find(|(span, _)| span == id) {
            values.record(&mut Fields(fields));
        }
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let current = context
            .lookup_current()
            .map(|span| (span.id(), span.name()));
        self.0.lock().unwrap().events.push((message, current));
    }
}

#[test]
fn each_call_has_a_span_with_its_action_and_a_short_key_around_its_body() {
    use tracing_subscriber::layer::SubscriberExt;

    static NOTIFY: Action = Action::new("metrics_notify");
    let args = ("+15550100", "your code is 123456");
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let store = MemoryStore::new();
            for _ in 0..2 {
                NOTIFY
                    .call(&args)
                    .unwrap()
                    .run::<_, Error, _>(&store, async {
                        tracing::info!("in the body");
                        Ok(1u32)
                    })
                    .await
                    .unwrap();
            }
        })
    });
    let seen = spans.0.lock().unwrap();
    let key = NOTIFY.key(&args).unwrap();
    assert_eq!(seen.spans.len(), 2, "one span per call: {seen:?}");
    for (_, fields) in &seen.spans {
        assert_eq!(fields["name"], "idem", "{fields:?}");
        assert_eq!(fields["target"], "idem", "{fields:?}");
        assert_eq!(fields["level"], "INFO", "{fields:?}");
        assert_eq!(fields["action"], "metrics_notify", "{fields:?}");
        assert_eq!(fields["key"], key.short(), "{fields:?}");
        assert_eq!(fields["key"].len(), 12, "{fields:?}");
        assert_eq!(fields.len(), 5, "no other field: {fields:?}");
        let text = format!("{fields:?}");
        assert!(
            !text.contains("123456") && !text.contains("+1555"),
            "no argument may leak into a span: {text}"
        );
    }
    // The body (run by the first call only) is inside its call's span; the call's event is
    // emitted after the span is left, so that a formatter does not print the fields twice.
    let in_body: Vec<_> = seen
        .events
        .iter()
        .filter(|(message, _)| message == "in the body")
        .collect();
    assert_eq!(in_body.len(), 1, "{seen:?}");
    assert_eq!(
        in_body[0].1,
        Some((seen.spans[0].0.clone(), "idem")),
        "{seen:?}"
    );
    let call_events: Vec<_> = seen
        .events
        .iter()
        .filter(|(message, _)| message == "idempotent call")
        .collect();
    assert_eq!(call_events.len(), 2, "{seen:?}");
    assert!(
        call_events.iter().all(|(_, span)| span.is_none()),
        "{seen:?}"
    );
}
