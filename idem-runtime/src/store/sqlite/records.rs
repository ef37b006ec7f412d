//! The claim protocol on the file: claim, complete, heartbeat, release, and reading a record.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::key::{Fingerprint, Key};
use crate::store::{
    decide, millis, Claim, ClaimRequest, FencingToken, Found, Ownership, Status, StoredOutcome,
    Verdict, Write,
};
use crate::Error;

use super::{db, statements, Row};

/// A record's columns as SQLite returns them ([`statements::READ`]), before they are checked.
pub(super) type RawRow = (
    String,
    i64,
    Vec<u8>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    Option<i64>,
    String,
);

pub(super) fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

/// Reads the record of `key`, checking every field: a corrupt or foreign row is an error that
/// names the key, never a panic.
pub(super) fn read(connection: &Connection, key: &Key) -> Result<Option<Row>, Error> {
    let mut statement = connection.prepare_cached(statements::READ).map_err(db)?;
    let raw = statement
        .query_row([key.to_string()], raw_row)
        .optional()
        .map_err(|e| Error::codec("a record", Some(key), e))?;
    raw.map(|raw| check(key, raw)).transpose()
}

/// The record of `key` from its raw columns, every field checked.
pub(super) fn check(key: &Key, raw: RawRow) -> Result<Row, Error> {
    let (status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, action) = raw;
    let corrupt =
        |what: &str| Error::codec("a record", Some(key), format!("corrupt record: {what}"));
    let status = Status::parse(&status).ok_or_else(|| corrupt("unknown status"))?;
    let fingerprint: [u8; 32] = fingerprint
        .try_into()
        .map_err(|_| corrupt("the fingerprint is not 32 bytes"))?;
    let outcome = match (outcome.as_deref(), result) {
        (None, _) => None,
        (Some("ok"), Some(bytes)) => Some(StoredOutcome::Ok(bytes)),
        (Some("err"), Some(bytes)) => Some(StoredOutcome::Err(bytes)),
        _ => return Err(corrupt("unknown outcome")),
    };
    if status == Status::Completed && outcome.is_none() {
        return Err(corrupt("completed without a result"));
    }
    Ok(Row {
        found: Found {
            status,
            token: FencingToken::try_from(token).map_err(|_| corrupt("negative token"))?,
            fingerprint: Fingerprint::from_bytes(fingerprint),
            expires_at_ms,
            // Not read: the purge's rule runs in SQL (`expired!` in `statements.rs`).
            claim_ttl_ms: None,
        },
        outcome,
        created_at_ms,
        action,
    })
}

pub(super) fn next_token(connection: &Connection) -> Result<FencingToken, Error> {
    let token: i64 = connection
        .prepare_cached(statements::NEXT_TOKEN)
        .map_err(db)?
        .query_row([], |row| row.get(0))
        .map_err(db)?;
    FencingToken::try_from(token)
        .map_err(|_| db(rusqlite::Error::IntegralValueOutOfRange(0, token)))
}

/// What a claim needs, owned, to move to the blocking thread.
pub(super) struct OwnedClaim {
    pub(super) key: Key,
    pub(super) fingerprint: Fingerprint,
    pub(super) action: String,
    pub(super) lease: Duration,
    pub(super) ttl: Duration,
    pub(super) on_stale: crate::store::OnStale,
}

impl OwnedClaim {
    /// The request as the rules and the `Store` trait take it.
    pub(super) fn borrowed(&self) -> ClaimRequest<'_> {
        ClaimRequest {
            key: &self.key,
            fingerprint: &self.fingerprint,
            action: &self.action,
            lease: self.lease,
            ttl: self.ttl,
            on_stale: self.on_stale,
        }
    }
}

/// Claims `request.key` inside the writer's transaction, at `now` (see [`super::writer`]).
pub(super) fn claim(
    transaction: &Connection,
    now: i64,
    request: &OwnedClaim,
) -> Result<Claim, Error> {
    let key = &request.key;
    let write = match read(transaction, key)? {
        None => Write::Insert,
        Some(row) => match decide(&row.found, &request.borrowed(), now) {
            Verdict::Report => return Ok(row.report(now)),
            Verdict::Write(write) => write,
        },
    };
    let lease_end = now.saturating_add(millis(request.lease));
    let ttl = millis(request.ttl);
    let hex = key.to_string();
    let claim = match write {
        Write::Insert => {
            let token = next_token(transaction)?;
            transaction
                .prepare_cached(statements::INSERT_CLAIM)
                .map_err(db)?
                .execute(params![
                    hex,
                    request.action,
                    token as i64,
                    &request.fingerprint.as_bytes()[..],
                    now,
                    lease_end,
                    ttl
                ])
                .map_err(db)?;
            Claim::Acquired {
                token,
                resumed: false,
            }
        }
        Write::TakeOver => {
            let token = next_token(transaction)?;
            transaction
                .prepare_cached(statements::TAKE_OVER)
                .map_err(db)?
                .execute(params![hex, token as i64, lease_end, ttl])
                .map_err(db)?;
            Claim::Acquired {
                token,
                resumed: true,
            }
        }
        Write::Park => {
            transaction
                .prepare_cached(statements::PARK)
                .map_err(db)?
                .execute([hex])
                .map_err(db)?;
            Claim::NeedsReview {
                fingerprint: request.fingerprint,
            }
        }
    };
    Ok(claim)
}

/// Runs a write that only applies while `token` owns `key`.
pub(super) fn fenced(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Ownership, Error> {
    let changed = connection
        .prepare_cached(sql)
        .map_err(db)?
        .execute(params)
        .map_err(db)?;
    Ok(if changed == 1 {
        Ownership::Held
    } else {
        Ownership::Lost
    })
}

/// Records `outcome` as the result of `key` if `token` still owns it; its TTL counts from
/// `now`, read once the write lock is held.
pub(super) fn complete(
    transaction: &Connection,
    now: i64,
    key: &Key,
    token: FencingToken,
    outcome: StoredOutcome,
    ttl: Duration,
) -> Result<Ownership, Error> {
    let (kind, bytes) = match outcome {
        StoredOutcome::Ok(bytes) => ("ok", bytes),
        StoredOutcome::Err(bytes) => ("err", bytes),
    };
    let mut ownership = fenced(
        transaction,
        statements::COMPLETE,
        params![
            key.to_string(),
            token as i64,
            kind,
            bytes,
            now.saturating_add(millis(ttl))
        ],
    )?;
    // A retry of a completion that committed but whose answer was lost: still ours.
    if ownership == Ownership::Lost
        && read(transaction, key)?.is_some_and(|row| row.found.completed_by(token))
    {
        ownership = Ownership::Held;
    }
    Ok(ownership)
}

/// Extends the lease of `key` to `lease` from `now` (read once the write lock is held) if
/// `token` still owns it.
pub(super) fn heartbeat(
    transaction: &Connection,
    now: i64,
    key: &Key,
    token: FencingToken,
    lease: Duration,
) -> Result<Ownership, Error> {
    fenced(
        transaction,
        statements::HEARTBEAT,
        params![
            key.to_string(),
            token as i64,
            now.saturating_add(millis(lease))
        ],
    )
}

/// Property tests of [`check`], the one place a SQLite record's columns are read: it accepts
/// exactly the records idem writes, and answers anything else (a row written by hand, by
/// another program, by a disk fault) with an error naming the key, never a panic. The
/// column types themselves (a BLOB where TEXT belongs) are refused by rusqlite before
/// `check`; `tests/runtime/properties.rs` writes such garbage into a real file.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn raw_row() -> impl Strategy<Value = RawRow> {
        (
            prop_oneof![
                Just("in_progress".to_owned()),
                Just("completed".to_owned()),
                Just("needs_review".to_owned()),
                "\\PC{0,12}",
            ],
            any::<i64>(),
            prop_oneof![
                any::<[u8; 32]>().prop_map(Vec::from),
                prop::collection::vec(any::<u8>(), 0..40),
            ],
            prop_oneof![
                Just(None),
                Just(Some("ok".to_owned())),
                Just(Some("err".to_owned())),
                prop::option::of("\\PC{0,4}"),
            ],
            prop::option::of(any::<Vec<u8>>()),
            any::<i64>(),
            prop::option::of(any::<i64>()),
            "\\PC{0,12}",
        )
    }

    proptest! {
        #[test]
        fn a_row_is_read_exactly_when_idem_could_have_written_it(
            key in any::<[u8; 32]>().prop_map(Key::from_bytes),
            raw in raw_row(),
        ) {
            let (status, token, fingerprint, outcome, result, created_at_ms, expires, action) =
                raw.clone();
            let parsed = Status::parse(&status);
            let outcome_ok = match (outcome.as_deref(), &result) {
                (None, _) => parsed != Some(Status::Completed),
                (Some("ok" | "err"), Some(_)) => true,
                _ => false,
            };
            let valid = parsed.is_some() && fingerprint.len() == 32 && outcome_ok && token >= 0;
            match check(&key, raw) {
                Ok(row) => {
                    prop_assert!(valid);
                    prop_assert_eq!(Some(row.found.status), parsed);
                    prop_assert_eq!(i64::try_from(row.found.token).ok(), Some(token));
                    prop_assert_eq!(&row.found.fingerprint.as_bytes()[..], &fingerprint[..]);
                    prop_assert_eq!(row.found.expires_at_ms, expires);
                    prop_assert_eq!(row.created_at_ms, created_at_ms);
                    prop_assert_eq!(row.action, action);
                    prop_assert_eq!(row.outcome.is_some(), outcome.is_some());
                }
                Err(error) => {
                    prop_assert!(!valid, "a valid row refused: {}", error);
                    prop_assert_eq!(error.key(), Some(&key));
                    prop_assert!(error.to_string().contains(&key.to_string()), "{}", error);
                }
            }
        }
    }
}
