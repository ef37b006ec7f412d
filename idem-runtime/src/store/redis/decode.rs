//! From what Redis answers to what the store hands out: records (`record.rs` reads their
//! format), the hashes of saga logs and the answers of the claim script, read into `Record`,
//! `Claim` and `SagaLog`; and the fields a saga step is written as, the other way.
//!
//! ```text
//! c|7|0|…|ok|10|send_email{"id":"m-1"} + PEXPIRETIME      → Record
//! [in_progress, <fingerprint>, 7, 1500]                  → Claim::InProgress
//! {0:name: charge, 0:state: done, …, 1:name: …}          → [StepRecord]
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;

use super::record::{State, Stored};
use crate::key::{Fingerprint, Key};
use crate::store::{
    Claim, FencingToken, Record, SagaLog, SagaStatus, StepRecord, StepState, StoredOutcome,
};
use crate::Error;

/// Reads the fields of a Redis hash as (name, bytes) pairs.
pub(super) fn fields(value: Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Value::Nil => Vec::new(),
        other => return Err(format!("a hash, not {other:?}")),
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        out.push((text(&name)?, bytes(value)?));
    }
    Ok(out)
}

pub(super) fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(format!("bytes, not {other:?}")),
    }
}

pub(super) fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|e| e.to_string()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(format!("text, not {other:?}")),
    }
}

fn number(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(n) => Ok(*n),
        other => text(other)?.parse().map_err(|e| format!("a number: {e}")),
    }
}

/// A fingerprint as the scripts answer it: 64 hex digits.
fn fingerprint(value: Value) -> Result<Fingerprint, String> {
    let key: Key = text(&value)?
        .parse()
        .map_err(|_| "the fingerprint is not 64 hex digits".to_owned())?;
    Ok(Fingerprint::from_bytes(*key.as_bytes()))
}

fn outcome(kind: &str, bytes: Vec<u8>) -> Result<StoredOutcome, String> {
    match kind {
        "ok" => Ok(StoredOutcome::Ok(bytes)),
        "err" => Ok(StoredOutcome::Err(bytes)),
        other => Err(format!("unknown outcome {other:?}")),
    }
}

fn token(n: i64) -> Result<FencingToken, String> {
    FencingToken::try_from(n).map_err(|_| format!("negative token {n}"))
}

/// The answer of [`CLAIM`](super::scripts::CLAIM) (`scripts/claim.lua`).
pub(super) fn claim_answer(value: Value) -> Result<Claim, String> {
    let Value::Array(items) = value else {
        return Err(format!("an array, not {value:?}"));
    };
    let mut items = items.into_iter();
    let mut next = || items.next().ok_or_else(|| "a short answer".to_owned());
    let kind = text(&next()?)?;
    Ok(match kind.as_str() {
        "acquired" => Claim::Acquired {
            token: token(number(&next()?)?)?,
            resumed: number(&next()?)? == 1,
        },
        "completed" => {
            let fingerprint = fingerprint(next()?)?;
            let kind = text(&next()?)?;
            let outcome = outcome(&kind, bytes(next()?)?)?;
            let left = number(&next()?)?;
            Claim::Completed {
                fingerprint,
                outcome,
                expires_in: u64::try_from(left).ok().map(Duration::from_millis),
            }
        }
        "in_progress" => Claim::InProgress {
            fingerprint: fingerprint(next()?)?,
            token: token(number(&next()?)?)?,
            lease_remaining: Duration::from_millis(
                u64::try_from(number(&next()?)?.max(0)).unwrap_or(0),
            ),
        },
        "review" => Claim::NeedsReview {
            fingerprint: fingerprint(next()?)?,
        },
        other => return Err(format!("unknown answer {other:?}")),
    })
}

fn wall(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The record of `key` from its value (`GET`) and its `PEXPIRETIME`, `now_ms` the time it was
/// read (milliseconds since the epoch); none for no value, or a record as good as gone (a
/// tombstone, a result past its TTL: `Stored::is_gone`).
pub(super) fn record(
    key: &Key,
    value: Value,
    expiry: Value,
    now_ms: i64,
) -> Result<Option<Record>, String> {
    if value == Value::Nil {
        return Ok(None);
    }
    let stored = Stored::decode_owned(bytes(value)?)?;
    let expiry = number(&expiry)?;
    let State::Is(status) = stored.state else {
        return Ok(None);
    };
    if stored.is_gone(now_ms, expiry) {
        return Ok(None);
    }
    Ok(Some(Record {
        key: *key,
        action: stored.action.clone(),
        status,
        token: stored.token,
        fingerprint: stored.fingerprint,
        expires_at: stored.ends_at_ms(expiry).map(wall),
        created_at: wall(stored.created_ms),
        outcome: stored.outcome,
    }))
}

pub(super) fn corrupt<'k>(key: &'k Key, what: &'static str) -> impl FnOnce(String) -> Error + 'k {
    move |problem| Error::codec(what, Some(key), format!("corrupt {what}: {problem}"))
}

/// The answer of `HMGET` on `names`, as the (name, bytes) pairs of the fields that are set.
pub(super) fn named(names: &[&str], value: Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Value::Array(values) = value else {
        return Err(format!("fields, not {value:?}"));
    };
    names
        .iter()
        .zip(values)
        .filter(|(_, value)| !matches!(value, Value::Nil))
        .map(|(name, value)| Ok(((*name).to_owned(), bytes(value)?)))
        .collect()
}

/// The log of a saga from its head and steps (empty: read without its steps).
pub(super) fn saga_log(
    key: &Key,
    head: Vec<(String, Vec<u8>)>,
    step_fields: Vec<(String, Vec<u8>)>,
) -> Result<Option<SagaLog>, String> {
    if head.is_empty() {
        return Ok(None);
    }
    let mut id = None;
    let (mut status, mut error, mut updated, mut note) = (None, None, 0, None);
    for (name, value) in head {
        let value = String::from_utf8(value).map_err(|e| e.to_string())?;
        match name.as_str() {
            "id" => id = Some(value),
            "status" => status = SagaStatus::parse(&value),
            "error" => error = Some(value),
            "updated" => updated = value.parse().map_err(|_| "updated".to_owned())?,
            "note" => note = Some(value),
            _ => {}
        }
    }
    Ok(Some(
        SagaLog::new(
            *key,
            id.ok_or("no id")?,
            status.ok_or("unknown status")?,
            error,
            steps(step_fields)?,
            wall(updated),
        )
        .with_note(note),
    ))
}

/// A step's fields as the log hash keeps them (`<index>:<field>`).
pub(super) fn step_fields(step: &StepRecord) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![
        ("name", step.name.clone().into_bytes()),
        ("key", step.key.to_string().into_bytes()),
        ("irreversible", vec![u8::from(step.irreversible) + b'0']),
        ("args", step.args.clone()),
        ("state", step.state.as_str().as_bytes().to_vec()),
    ];
    if let Some(output) = &step.output {
        fields.push(("output", output.clone()));
    }
    if let Some(error) = &step.error {
        fields.push(("error", error.clone().into_bytes()));
    }
    fields
}

fn steps(hash: Vec<(String, Vec<u8>)>) -> Result<Vec<StepRecord>, String> {
    use std::collections::BTreeMap;
    let mut by_index: BTreeMap<u32, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for (name, value) in hash {
        let (index, field) = name
            .split_once(':')
            .ok_or_else(|| format!("step field {name:?}"))?;
        let index: u32 = index.parse().map_err(|_| format!("step index {index:?}"))?;
        by_index
            .entry(index)
            .or_default()
            .insert(field.to_owned(), value);
    }
    by_index
        .into_iter()
        .map(|(index, mut fields)| {
            let mut take = |field: &str| {
                fields
                    .remove(field)
                    .ok_or_else(|| format!("step {index} has no {field}"))
            };
            let as_text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.to_string());
            let name = as_text(take("name")?)?;
            let key = as_text(take("key")?)?
                .parse()
                .map_err(|_| format!("the key of step {index}"))?;
            let irreversible = take("irreversible")? == b"1";
            let args = take("args")?;
            let state = as_text(take("state")?)?;
            let state = StepState::parse(&state)
                .ok_or_else(|| format!("unknown state {state:?} of step {index}"))?;
            Ok(StepRecord {
                index,
                name,
                key,
                irreversible,
                args,
                state,
                output: fields.remove("output"),
                error: fields.remove("error").map(as_text).transpose()?,
            })
        })
        .collect()
}

/// Property tests: whatever Redis answers (a foreign value under idem's key, a damaged record,
/// a script of another version), reading it gives an answer or an error, never a panic; and
/// the error the store makes of it names the key.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::super::record::properties::stored;
    use super::*;

    /// Any value of the RESP2/RESP3 shapes the decoders meet, nested a few levels.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            any::<i64>().prop_map(Value::Int),
            any::<Vec<u8>>().prop_map(Value::BulkString),
            "[a-z_:0-9]{0,12}".prop_map(|text| Value::BulkString(text.into_bytes())),
            "\\PC{0,12}".prop_map(Value::SimpleString),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
                prop::collection::vec(inner, 0..4).prop_map(Value::Set),
            ]
        })
    }

    /// Answers shaped like the claim script's: a known kind first, then anything.
    fn claim_like() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![
            Just("acquired"),
            Just("completed"),
            Just("in_progress"),
            Just("review"),
            Just("ok"),
            Just("err"),
        ];
        let field = prop_oneof![
            value(),
            any::<i64>().prop_map(|n| Value::BulkString(n.to_string().into_bytes())),
            any::<[u8; 32]>()
                .prop_map(|fp| Value::BulkString(super::super::record::hex(&fp).into_bytes())),
        ];
        (kind, prop::collection::vec(field, 0..6)).prop_map(|(kind, rest)| {
            let mut items = vec![Value::BulkString(kind.as_bytes().to_vec())];
            items.extend(rest);
            Value::Array(items)
        })
    }

    /// Hash fields named as saga logs name them (`id`, `status`, …, `<index>:<field>`), with
    /// values either plausible or random.
    fn saga_fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let name = prop_oneof![
            Just("id".to_owned()),
            Just("status".to_owned()),
            Just("error".to_owned()),
            Just("updated".to_owned()),
            Just("note".to_owned()),
            (0u32..3, "name|key|irreversible|args|state|output|error")
                .prop_map(|(index, field)| format!("{index}:{field}")),
            "\\PC{0,6}",
        ];
        let bytes = prop_oneof![
            any::<Vec<u8>>(),
            Just(b"running".to_vec()),
            Just(b"done".to_vec()),
            Just(b"1".to_vec()),
            any::<[u8; 32]>().prop_map(|k| Key::from_bytes(k).to_string().into_bytes()),
        ];
        prop::collection::vec((name, bytes), 0..12)
    }

    fn step() -> impl Strategy<Value = StepRecord> {
        (
            0u32..1000,
            "\\PC{0,8}",
            any::<[u8; 32]>(),
            any::<bool>(),
            any::<Vec<u8>>(),
            prop::sample::select(vec![
                StepState::Started,
                StepState::Done,
                StepState::Failed,
                StepState::Compensated,
                StepState::CompensationFailed,
            ]),
            prop::option::of(any::<Vec<u8>>()),
            prop::option::of("\\PC{0,8}"),
        )
            .prop_map(
                |(index, name, key, irreversible, args, state, output, error)| StepRecord {
                    index,
                    name,
                    key: Key::from_bytes(key),
                    irreversible,
                    args,
                    state,
                    output,
                    error,
                },
            )
    }

    /// What the store makes of a decoder's complaint names the key.
    fn names_the_key(key: &Key, problem: String) -> Result<(), TestCaseError> {
        let error = corrupt(key, "a record")(problem);
        prop_assert_eq!(error.key(), Some(key));
        prop_assert!(error.to_string().contains(&key.to_string()), "{}", error);
        Ok(())
    }

    proptest! {
        #[test]
        fn any_answer_to_a_claim_decodes_or_is_an_error(answer in prop_oneof![value(), claim_like()]) {
            let _ = claim_answer(answer);
        }

        #[test]
        fn any_value_as_a_record_is_read_or_an_error_naming_the_key(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            value in value(),
            expiry in value(),
            now_ms in any::<i64>(),
        ) {
            if let Err(problem) = record(&key, value, expiry, now_ms) {
                names_the_key(&key, problem)?;
            }
        }

        /// Records with any field values (the clock fields of a foreign or damaged record
        /// included) and any key expiry are read without a panic.
        #[test]
        fn any_record_with_any_expiry_is_read_or_an_error_naming_the_key(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            stored in stored(),
            expiry in prop_oneof![Just(-2i64), Just(-1), any::<i64>()],
            now_ms in any::<i64>(),
        ) {
            let value = Value::BulkString(stored.encode());
            if let Err(problem) = record(&key, value, Value::Int(expiry), now_ms) {
                names_the_key(&key, problem)?;
            }
        }

        #[test]
        fn any_value_as_hash_fields_is_read_or_an_error(value in value()) {
            let _ = fields(value.clone());
            let _ = named(&["id", "status", "error"], value);
        }

        #[test]
        fn any_saga_hash_is_read_or_an_error(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            head in saga_fields(),
            steps in saga_fields(),
        ) {
            let _ = saga_log(&key, head, steps);
        }

        /// The fields a step is written as read back as that step.
        #[test]
        fn a_saga_steps_fields_read_back_as_the_step(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            steps in prop::collection::btree_map(0u32..1000, step(), 0..4),
        ) {
            let steps: Vec<StepRecord> = steps
                .into_iter()
                .map(|(index, step)| StepRecord { index, ..step })
                .collect();
            let fields = steps
                .iter()
                .flat_map(|step| {
                    step_fields(step)
                        .into_iter()
                        .map(move |(name, value)| (format!("{}:{name}", step.index), value))
                })
                .collect();
            let head = vec![
                ("id".to_owned(), b"order-42".to_vec()),
                ("status".to_owned(), b"running".to_vec()),
                ("updated".to_owned(), b"1".to_vec()),
            ];
            let log = saga_log(&key, head, fields);
            prop_assert_eq!(log.map(|log| log.map(|log| log.steps)), Ok(Some(steps)));
        }
    }
}
