//! Rows as records, saga logs and claims: every field checked, a foreign or corrupt row an
//! error that names its key, never a panic.

use std::fmt;

use tokio_postgres::Row;

use crate::key::{Fingerprint, Key};
use crate::store::{
    decide, Claim, ClaimRequest, FencingToken, Found, Record, SagaLog, SagaStatus, Status,
    StepRecord, StepState, StoredOutcome, Verdict,
};
use crate::Error;

use super::{failed, to_wall};

/// A `timestamptz` column as milliseconds since the Unix epoch, rounded down (`infinity` is
/// `i64::MAX`, `-infinity` `i64::MIN`). Converted here rather than by the statements: the
/// server's `extract(epoch …)` works in `numeric`, which cost a replay's `SELECT` about a
/// fifth of its server time (BENCHMARKS.md); the wire form is already an integer, the
/// microseconds since 2000-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EpochMs(pub(super) i64);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in milliseconds since the Unix epoch.
const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;

impl EpochMs {
    /// From PostgreSQL's wire value: microseconds since 2000-01-01, or a bound for an
    /// infinite time.
    fn from_postgres_micros(micros: i64) -> EpochMs {
        EpochMs(match micros {
            i64::MAX | i64::MIN => micros,
            micros => micros.div_euclid(1000).saturating_add(POSTGRES_EPOCH_MS),
        })
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for EpochMs {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamptz of {} bytes, not 8", raw.len()))?;
        Ok(EpochMs::from_postgres_micros(i64::from_be_bytes(bytes)))
    }

    tokio_postgres::types::accepts!(TIMESTAMPTZ);
}

/// Reads a column, naming the key when the row is not of the expected shape.
pub(super) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
    key: Option<&Key>,
) -> Result<T, Error> {
    row.try_get(index).map_err(|e| Error::codec(what, key, e))
}

/// A codec error for a row that is not what idem writes ("corrupt record: …").
pub(super) fn corrupt(what: &'static str, key: Option<&Key>, problem: impl fmt::Display) -> Error {
    let noun = what.strip_prefix("a ").unwrap_or(what);
    Error::codec(what, key, format!("corrupt {noun}: {problem}"))
}

/// A record's fields as read from the table, checked: a corrupt or foreign row is an error
/// naming the key, never a panic.
pub(super) fn found(
    key: &Key,
    status: &str,
    token: i64,
    fingerprint: &[u8],
    outcome: Option<&str>,
    result: Option<Vec<u8>>,
    expires_at_ms: Option<i64>,
) -> Result<(Found, Option<StoredOutcome>), Error> {
    let bad = |problem: &str| corrupt("a record", Some(key), problem);
    let status = Status::parse(status).ok_or_else(|| bad("unknown status"))?;
    let fingerprint: [u8; 32] = fingerprint
        .try_into()
        .map_err(|_| bad("the fingerprint is not 32 bytes"))?;
    let outcome = match (outcome, result) {
        (None, _) => None,
        (Some("ok"), Some(bytes)) => Some(StoredOutcome::Ok(bytes)),
        (Some("err"), Some(bytes)) => Some(StoredOutcome::Err(bytes)),
        _ => return Err(bad("unknown outcome")),
    };
    if status == Status::Completed && outcome.is_none() {
        return Err(bad("completed without a result"));
    }
    let token = FencingToken::try_from(token).map_err(|_| bad("negative token"))?;
    Ok((
        Found {
            status,
            token,
            fingerprint: Fingerprint::from_bytes(fingerprint),
            expires_at_ms,
            // Not read: the purge's rule runs in SQL (`purgeable`).
            claim_ttl_ms: None,
        },
        outcome,
    ))
}

/// A record from a row of the `get` or `list_records` statement (its first eight columns).
pub(super) fn record(key: &Key, row: &Row) -> Result<Record, Error> {
    let (what, some_key) = ("a record", Some(key));
    let action: String = column(row, 0, what, some_key)?;
    let status: String = column(row, 1, what, some_key)?;
    let token: i64 = column(row, 2, what, some_key)?;
    let fingerprint: Vec<u8> = column(row, 3, what, some_key)?;
    let outcome: Option<String> = column(row, 4, what, some_key)?;
    let result: Option<Vec<u8>> = column(row, 5, what, some_key)?;
    let EpochMs(created_at_ms) = column(row, 6, what, some_key)?;
    let expires_at_ms = column::<Option<EpochMs>>(row, 7, what, some_key)?.map(|ms| ms.0);
    let (found, outcome) = found(
        key,
        &status,
        token,
        &fingerprint,
        outcome.as_deref(),
        result,
        expires_at_ms,
    )?;
    Ok(Record {
        key: *key,
        action,
        status: found.status,
        token: found.token,
        fingerprint: found.fingerprint,
        outcome,
        created_at: to_wall(created_at_ms),
        expires_at: found.expires_at_ms.map(to_wall),
    })
}

/// The key in column `index` of a row of a listing, which names every later error.
pub(super) fn listed_key(row: &Row, index: usize, what: &'static str) -> Result<Key, Error> {
    let hex: String = column(row, index, what, None)?;
    hex.parse()
        .map_err(|_| corrupt(what, None, format!("the key {hex:?}")))
}

/// The log of the saga `saga` from its rows of the `read_saga` or `list_sagas` statement
/// (not empty): the log's head in every row, and a step in each, unless the log has none yet
/// (one row, without a step).
///
/// ```text
/// id       | status          | error | updated | note | idx  | name   | … | error | updated
/// order-42 | needs_attention | "…"   | 1718…   | NULL | 0    | charge | … | NULL  | 1718…
/// order-42 | needs_attention | "…"   | 1718…   | NULL | 1    | ship   | … | "…"   | NULL
/// ```
///
/// The log was last written at the latest of its head's time (its last status write) and its
/// steps' (a step written before schema version 4 has none).
pub(super) fn saga_log(saga: &Key, rows: &[Row]) -> Result<SagaLog, Error> {
    let (what, key) = ("a saga log", Some(saga));
    let head = rows
        .first()
        .ok_or_else(|| Error::store("postgres", key, "the saga log has no row"))?;
    let id: String = column(head, 0, what, key)?;
    let status: String = column(head, 1, what, key)?;
    let error: Option<String> = column(head, 2, what, key)?;
    let EpochMs(mut updated_at_ms) = column(head, 3, what, key)?;
    let note: Option<String> = column(head, 4, what, key)?;
    let status = SagaStatus::parse(&status)
        .ok_or_else(|| corrupt(what, key, format!("unknown status {status:?}")))?;
    let mut steps = Vec::new();
    for row in rows {
        let Some(index) = column::<Option<i64>>(row, 5, what, key)? else {
            continue; // A log with no steps yet.
        };
        let step_key: String = column(row, 7, what, key)?;
        let state: String = column(row, 10, what, key)?;
        steps.push(StepRecord {
            index: u32::try_from(index)
                .map_err(|_| corrupt(what, key, format!("step index {index}")))?,
            name: column(row, 6, what, key)?,
            key: step_key
                .parse()
                .map_err(|_| corrupt(what, key, format!("the key of step {index}")))?,
            irreversible: column(row, 8, what, key)?,
            args: column(row, 9, what, key)?,
            state: StepState::parse(&state).ok_or_else(|| {
                corrupt(
                    what,
                    key,
                    format!("unknown state {state:?} of step {index}"),
                )
            })?,
            output: column(row, 11, what, key)?,
            error: column(row, 12, what, key)?,
        });
        if let Some(EpochMs(step_ms)) = column(row, 13, what, key)? {
            updated_at_ms = updated_at_ms.max(step_ms);
        }
    }
    Ok(SagaLog::new(*saga, id, status, error, steps, to_wall(updated_at_ms)).with_note(note))
}

/// The answer of a statement that counts: one row of one `bigint`.
pub(super) fn count(rows: &[Row]) -> Result<u64, Error> {
    let row = rows
        .first()
        .ok_or_else(|| Error::store("postgres", None, "the count answered no row"))?;
    let count: i64 = row.try_get(0).map_err(|e| failed(None, &e))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// What one run of the claim statement says.
pub(super) enum Attempt {
    Done(Claim),
    /// The record changed between the statement's snapshot and its write: run it again.
    Raced,
}

/// A record from the columns `status, token, fingerprint, outcome, result, expires_ms` of
/// `row`, from `first` on (as `peek` and the claim's snapshot select them), `status` already
/// read, checked.
fn found_from(
    row: &Row,
    first: usize,
    status: &str,
    key: &Key,
) -> Result<(Found, Option<StoredOutcome>), Error> {
    let (what, some) = ("a record", Some(key));
    let token: Option<i64> = column(row, first + 1, what, some)?;
    let fingerprint: Option<Vec<u8>> = column(row, first + 2, what, some)?;
    let outcome: Option<String> = column(row, first + 3, what, some)?;
    let result: Option<Vec<u8>> = column(row, first + 4, what, some)?;
    let expires_at_ms = column::<Option<EpochMs>>(row, first + 5, what, some)?.map(|ms| ms.0);
    found(
        key,
        status,
        token.ok_or_else(|| corrupt(what, some, "no token"))?,
        &fingerprint.ok_or_else(|| corrupt(what, some, "no fingerprint"))?,
        outcome.as_deref(),
        result,
        expires_at_ms,
    )
}

/// What the first look of a claim (`peek`) decides: the answer, if reading was enough.
pub(super) enum Peek {
    /// The record as it is: a result, a live owner, a key parked for review.
    Report(Claim),
    /// No record: insert one.
    Insert,
    /// A record to replace (an expired result, a dead owner): the full claim.
    Replace,
}

/// Reads the `peek` row (none: no record) and applies the claim rule (`store::rules`) to it.
pub(super) fn peek_answer(row: Option<&Row>, request: &ClaimRequest<'_>) -> Result<Peek, Error> {
    let Some((found, outcome, now_ms)) = peeked(row, request.key)? else {
        return Ok(Peek::Insert);
    };
    Ok(match decide(&found, request, now_ms) {
        Verdict::Report => Peek::Report(found.report(outcome, now_ms)),
        Verdict::Write(_) => Peek::Replace,
    })
}

/// The record in the `peek` row of `key` (none: no record), its outcome and the store's
/// clock, checked.
fn peeked(
    row: Option<&Row>,
    key: &Key,
) -> Result<Option<(Found, Option<StoredOutcome>, i64)>, Error> {
    let Some(row) = row else {
        return Ok(None);
    };
    let status: String = column(row, 0, "a record", Some(key))?;
    let (found, outcome) = found_from(row, 0, &status, key)?;
    let EpochMs(now_ms) = column(row, 6, "a record", Some(key))?;
    Ok(Some((found, outcome, now_ms)))
}

/// A record read back with the `peek` statement (none: no record), and the store's clock.
pub(super) fn looked(row: Option<&Row>, key: &Key) -> Result<Option<(Found, i64)>, Error> {
    Ok(peeked(row, key)?.map(|(found, _, now_ms)| (found, now_ms)))
}

/// The token of the `insert` statement's row, or `None` when a record was made since.
pub(super) fn inserted(rows: &[Row], key: &Key) -> Result<Option<FencingToken>, Error> {
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let token: i64 = column(row, 0, "a record", Some(key))?;
    FencingToken::try_from(token)
        .map(Some)
        .map_err(|_| corrupt("a record", Some(key), "negative token"))
}

pub(super) fn claim_answer(row: &Row, request: &ClaimRequest<'_>) -> Result<Attempt, Error> {
    let key = Some(request.key);
    let what = "a record";
    if let Some(status) = column::<Option<String>>(row, 0, what, key)? {
        let token: i64 = column(row, 1, what, key)?;
        let takeovers: i32 = column(row, 2, what, key)?;
        let token =
            FencingToken::try_from(token).map_err(|_| corrupt(what, key, "negative token"))?;
        return Ok(Attempt::Done(match status.as_str() {
            "in_progress" => Claim::Acquired {
                token,
                resumed: takeovers > 0,
            },
            "needs_review" => Claim::NeedsReview {
                fingerprint: *request.fingerprint,
            },
            other => return Err(corrupt(what, key, format!("claimed as {other:?}"))),
        }));
    }
    let Some(status) = column::<Option<String>>(row, 3, what, key)? else {
        // No record in the snapshot, and the insert met one made since.
        return Ok(Attempt::Raced);
    };
    if column::<Option<bool>>(row, 9, what, key)? == Some(true) {
        // The snapshot's record could be replaced, but the record the write met could not.
        return Ok(Attempt::Raced);
    }
    let (found, outcome) = found_from(row, 3, &status, request.key)?;
    let EpochMs(now_ms) = column(row, 10, what, key)?;
    Ok(Attempt::Done(found.report(outcome, now_ms)))
}

/// Property tests of the byte-level checks under the row decoders: `found` reads the columns
/// of a record once `tokio_postgres` has typed them, and accepts exactly the records idem
/// writes; anything else is an error naming the key, never a panic.
///
/// Not covered here: the functions that take a `tokio_postgres::Row` (`record`, `saga_log`,
/// `claim_answer`, `peek_answer`, `listed_key`), since a `Row` can only come from a server.
/// Their column reads go through `column`, which turns a wrong type or a NULL into a codec
/// error naming the key; what they read then goes through `found`, `Key::from_str`,
/// `SagaStatus::parse` and `StepState::parse`, each tested on arbitrary input.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn status() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("in_progress".to_owned()),
            Just("completed".to_owned()),
            Just("needs_review".to_owned()),
            "\\PC{0,12}",
        ]
    }

    fn outcome() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("ok".to_owned())),
            Just(Some("err".to_owned())),
            prop::option::of("\\PC{0,4}"),
        ]
    }

    fn fingerprint() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(Vec::from),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest! {
        #[test]
        fn a_record_is_read_exactly_when_idem_could_have_written_it(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            status in status(),
            token in any::<i64>(),
            fingerprint in fingerprint(),
            outcome in outcome(),
            result in prop::option::of(any::<Vec<u8>>()),
            expires_at_ms in prop::option::of(any::<i64>()),
        ) {
            let read = found(
                &key,
                &status,
                token,
                &fingerprint,
                outcome.as_deref(),
                result.clone(),
                expires_at_ms,
            );
            let parsed = Status::parse(&status);
            let outcome_ok = match (outcome.as_deref(), &result) {
                (None, _) => parsed != Some(Status::Completed),
                (Some("ok" | "err"), Some(_)) => true,
                _ => false,
            };
            let valid = parsed.is_some() && fingerprint.len() == 32 && outcome_ok && token >= 0;
            match read {
                Ok((found, read_outcome)) => {
                    prop_assert!(valid);
                    prop_assert_eq!(Some(found.status), parsed);
                    prop_assert_eq!(i64::try_from(found.token).ok(), Some(token));
                    prop_assert_eq!(&found.fingerprint.as_bytes()[..], &fingerprint[..]);
                    prop_assert_eq!(found.expires_at_ms, expires_at_ms);
                    prop_assert_eq!(read_outcome.is_some(), outcome.is_some());
                }
                Err(error) => {
                    prop_assert!(!valid, "a valid record refused: {}", error);
                    prop_assert_eq!(error.key(), Some(&key));
                    prop_assert!(error.to_string().contains(&key.to_string()), "{}", error);
                }
            }
        }
    }
}

#[cfg(test)]
mod epoch_ms {
    use tokio_postgres::types::{FromSql, Type};

    use super::EpochMs;

    fn read(micros: i64) -> i64 {
        EpochMs::from_sql(&Type::TIMESTAMPTZ, &micros.to_be_bytes())
            .expect("8 bytes")
            .0
    }

    #[test]
    fn a_timestamptz_is_read_as_unix_milliseconds_rounded_down() {
        // 2000-01-01T00:00:00Z is PostgreSQL's 0.
        assert_eq!(read(0), 946_684_800_000);
        assert_eq!(read(1_999), 946_684_800_001);
        // Before 2000, rounded down as `floor(extract(epoch …) * 1000)` did.
        assert_eq!(read(-1), 946_684_799_999);
        assert_eq!(read(-946_684_800_000_000), 0);
        assert_eq!(read(-946_684_800_000_001), -1);
    }

    #[test]
    fn infinite_times_are_the_bounds() {
        assert_eq!(read(i64::MAX), i64::MAX);
        assert_eq!(read(i64::MIN), i64::MIN);
        // The largest finite value saturates rather than wrapping.
        assert!(read(i64::MAX - 1) > 0);
    }

    #[test]
    fn a_value_of_another_width_is_an_error_not_a_panic() {
        assert!(EpochMs::from_sql(&Type::TIMESTAMPTZ, &[0; 4]).is_err());
        assert!(EpochMs::from_sql(&Type::TIMESTAMPTZ, &[]).is_err());
    }
}
