//! From what Redis answers to what the store hands out: records (`record.rs` reads their
//! format), the hashes of saga logs and the answers of the claim script, read into `Record`,
//! `Claim` and `SagaLog`; and the fields a saga step is written as, the other way.
//!
//! ```text
//! c|7|0|…|ok|10|send_email{"id":"m-1"} + PEXPIRETIME      → Record
//! [in_progress, <fingerprint>, 7, 1500]                  → Claim::InProgress
//! {0:name: charge, 0:state: done, …, 1:name: …}          → [StepRecord]
//!   + [1:2:<ms>, state, done, output, {…}]               (an owner's step writes, over it)
//! ```

use std::collections::BTreeMap;
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

/// The answer of a script that is given the list of step writes of the owner it expects
/// (`step_log.rs`).
#[derive(Debug)]
pub(super) enum Answer<T> {
    /// The script's answer.
    Done(T),
    /// The record's owner (its token and claim id) was not the one expected: the script
    /// changed nothing, and is sent again naming this owner's list.
    Owner(FencingToken, String),
}

/// The fields of a saga log's hashes as read: its head, its steps (layout 2's), and the
/// entries of its lists of step writes in order.
pub(super) type LogRead = (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>, Vec<Vec<u8>>);

/// The answer of [`READ_SAGA`](super::scripts::READ_SAGA) (`scripts/read_saga.lua`).
pub(super) fn read_answer(value: Value) -> Result<Answer<LogRead>, String> {
    let (kind, mut items) = kind_and_rest(value)?;
    let mut next = || items.next().ok_or_else(|| "a short answer".to_owned());
    Ok(match kind.as_str() {
        "owner" => Answer::Owner(token(number(&next()?)?)?, text(&next()?)?),
        "log" => {
            let (head, steps) = (fields(next()?)?, fields(next()?)?);
            let mut entries = list(next()?)?;
            entries.extend(list(next()?)?);
            Answer::Done((head, steps, entries))
        }
        other => return Err(format!("unknown answer {other:?}")),
    })
}

/// A script's answer `{kind, …}`: its kind and the rest.
fn kind_and_rest(value: Value) -> Result<(String, std::vec::IntoIter<Value>), String> {
    let Value::Array(items) = value else {
        return Err(format!("an array, not {value:?}"));
    };
    let mut items = items.into_iter();
    let kind = text(&items.next().ok_or("an empty answer")?)?;
    Ok((kind, items))
}

/// The entries of a Redis list as bytes.
fn list(value: Value) -> Result<Vec<Vec<u8>>, String> {
    match value {
        Value::Array(items) => items.into_iter().map(bytes).collect(),
        other => Err(format!("a list, not {other:?}")),
    }
}

/// The answer of [`CLAIM`](super::scripts::CLAIM) (`scripts/claim.lua`).
pub(super) fn claim_answer(value: Value) -> Result<Answer<Claim>, String> {
    let (kind, mut items) = kind_and_rest(value)?;
    let mut next = || items.next().ok_or_else(|| "a short answer".to_owned());
    Ok(Answer::Done(match kind.as_str() {
        "owner" => return Ok(Answer::Owner(token(number(&next()?)?)?, text(&next()?)?)),
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
    }))
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

/// The log of a saga from its head, its steps hash (layout 2's) and its lists of step writes
/// (`step_log.rs`: the closed log, then the owner's), applied over the hash in order (both
/// empty: read without its steps).
pub(super) fn saga_log(
    key: &Key,
    head: Vec<(String, Vec<u8>)>,
    step_fields: Vec<(String, Vec<u8>)>,
    entries: Vec<Vec<u8>>,
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
    let mut by_index = by_index(step_fields)?;
    let written = apply(&mut by_index, entries)?;
    Ok(Some(
        SagaLog::new(
            *key,
            id.ok_or("no id")?,
            status.ok_or("unknown status")?,
            error,
            steps(by_index)?,
            wall(updated.max(written)),
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

/// A saga's step fields, by step index and field name.
type ByIndex = BTreeMap<u32, BTreeMap<String, Vec<u8>>>;

/// The steps hash's fields (`<index>:<field>`) by step.
fn by_index(hash: Vec<(String, Vec<u8>)>) -> Result<ByIndex, String> {
    let mut by_index = ByIndex::new();
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
    Ok(by_index)
}

/// Applies the groups of a saga's lists of step writes (`step_log.rs`) in order, each
/// replacing its step's fields; the latest writer's time, 0 for none.
fn apply(by_index: &mut ByIndex, entries: Vec<Vec<u8>>) -> Result<i64, String> {
    let mut latest = 0;
    let mut entries = entries.into_iter();
    while let Some(entry) = entries.next() {
        if entry == b"+" {
            continue;
        }
        let group = String::from_utf8(entry).map_err(|e| e.to_string())?;
        let parsed = match group.split(':').collect::<Vec<_>>()[..] {
            [index, pairs, ms] => index
                .parse::<u32>()
                .ok()
                .zip(pairs.parse::<usize>().ok())
                .zip(ms.parse::<i64>().ok()),
            _ => None,
        };
        let ((index, pairs), ms) = parsed.ok_or_else(|| format!("step log entry {group:?}"))?;
        let fields = by_index.entry(index).or_default();
        fields.remove("output");
        fields.remove("error");
        for _ in 0..pairs {
            let (Some(name), Some(value)) = (entries.next(), entries.next()) else {
                return Err(format!("step log entry {group:?} is cut short"));
            };
            let name = String::from_utf8(name).map_err(|e| e.to_string())?;
            fields.insert(name, value);
        }
        latest = latest.max(ms);
    }
    Ok(latest)
}

fn steps(by_index: ByIndex) -> Result<Vec<StepRecord>, String> {
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

    /// What an owner's list of step writes may hold: groups, pairs, '+' and anything else.
    fn step_log_entries() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let entry = prop_oneof![
            Just(b"+".to_vec()),
            (0u32..3, 0usize..3, 0i64..9)
                .prop_map(|(i, n, ms)| format!("{i}:{n}:{ms}").into_bytes()),
            prop_oneof![Just("name"), Just("state"), Just("output"), Just("args")]
                .prop_map(|name| name.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        prop::collection::vec(entry, 0..12)
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
            entries in step_log_entries(),
        ) {
            let _ = saga_log(&key, head, steps, entries);
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
            let log = saga_log(&key, head, fields, Vec::new());
            prop_assert_eq!(log.map(|log| log.map(|log| log.steps)), Ok(Some(steps)));
        }

        /// An owner's step writes (`step_log.rs`) read back over the steps hash: each
        /// replaces its step as the hash had it (an older write of it), the latest time wins.
        #[test]
        fn an_owners_step_writes_read_back_over_the_hash(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            steps in prop::collection::btree_map(0u32..1000, (step(), step(), any::<bool>()), 0..4),
        ) {
            let (mut hash, mut entries, mut expected) = (Vec::new(), Vec::new(), Vec::new());
            for (index, (older, newer, in_hash)) in steps {
                let (older, newer) = (StepRecord { index, ..older }, StepRecord { index, ..newer });
                if in_hash {
                    hash.extend(step_fields(&older).into_iter()
                        .map(|(name, value)| (format!("{index}:{name}"), value)));
                }
                let fields = step_fields(&newer);
                entries.push(b"+".to_vec());
                entries.push(format!("{index}:{}:{}", fields.len(), 7 + index).into_bytes());
                entries.extend(fields.into_iter()
                    .flat_map(|(name, value)| [name.as_bytes().to_vec(), value]));
                expected.push(newer);
            }
            let head = vec![
                ("id".to_owned(), b"order-42".to_vec()),
                ("status".to_owned(), b"running".to_vec()),
                ("updated".to_owned(), b"5".to_vec()),
            ];
            let latest = expected.iter().map(|step| 7 + step.index).max().unwrap_or(5);
            let log = saga_log(&key, head, hash, entries).map_err(TestCaseError::fail)?
                .ok_or_else(|| TestCaseError::fail("no log"))?;
            prop_assert_eq!(log.steps, expected);
            prop_assert_eq!(log.updated_at, wall(i64::from(latest)));
        }

        /// A list cut short, or an entry that is not a group, is an error, never a panic.
        #[test]
        fn a_step_write_cut_short_is_an_error(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            step in step(),
            cut in 1usize..20,
        ) {
            let fields = step_fields(&step);
            let mut entries = vec![format!("{}:{}:1", step.index, fields.len()).into_bytes()];
            entries.extend(fields.into_iter()
                .flat_map(|(name, value)| [name.as_bytes().to_vec(), value]));
            entries.truncate(entries.len().saturating_sub(cut).max(1));
            let head = vec![
                ("id".to_owned(), b"order-42".to_vec()),
                ("status".to_owned(), b"running".to_vec()),
            ];
            prop_assert!(saga_log(&key, head, Vec::new(), entries).is_err());
        }
    }
}
