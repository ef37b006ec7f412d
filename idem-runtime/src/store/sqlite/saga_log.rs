//! Saga logs: writes fenced by the saga's claim, reads, and the sagas left stale.

use rusqlite::{params, Connection, OptionalExtension};

use crate::key::{Fingerprint, Key};
use crate::store::{
    FencingToken, Ownership, SagaLog, SagaStatus, StaleSaga, StepRecord, StepState,
};
use crate::Error;

use super::records::read;
use super::{db, now_ms, statements, to_wall};

/// What a saga write needs, owned, to move to the blocking thread.
pub(super) enum OwnedSagaWrite {
    Status {
        status: SagaStatus,
        error: Option<String>,
    },
    Step(StepRecord),
}

pub(super) fn write_saga(
    transaction: &Connection,
    now: i64,
    saga: &Key,
    id: &str,
    token: FencingToken,
    write: &OwnedSagaWrite,
) -> Result<Ownership, Error> {
    let held = read(transaction, saga)?.is_some_and(|row| row.found.renewed_by(token));
    if !held {
        return Ok(Ownership::Lost);
    }
    let hex = saga.to_string();
    match write {
        OwnedSagaWrite::Status { status, error } => {
            transaction
                .prepare_cached(statements::WRITE_SAGA_STATUS)
                .map_err(db)?
                .execute(params![hex, id, status.as_str(), error, now])
                .map_err(db)?;
        }
        OwnedSagaWrite::Step(step) => {
            transaction
                .prepare_cached(statements::MAKE_SAGA)
                .map_err(db)?
                .execute(params![hex, id, now])
                .map_err(db)?;
            transaction
                .prepare_cached(statements::WRITE_STEP)
                .map_err(db)?
                .execute(params![
                    hex,
                    step.index,
                    step.name,
                    step.key.to_string(),
                    step.irreversible,
                    step.args,
                    step.state.as_str(),
                    step.output,
                    step.error,
                    now,
                ])
                .map_err(db)?;
        }
    }
    Ok(Ownership::Held)
}

/// A saga log's head as SQLite returns it ([`statements::READ_SAGA`]), before they are checked.
pub(super) type RawSaga = (String, String, Option<String>, i64, Option<String>);

pub(super) fn raw_saga(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSaga> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

/// Reads a saga's log, checking every field as [`read`] does.
pub(super) fn read_saga(connection: &Connection, saga: &Key) -> Result<Option<SagaLog>, Error> {
    let head = connection
        .prepare_cached(statements::READ_SAGA)
        .map_err(db)?
        .query_row([saga.to_string()], raw_saga)
        .optional()
        .map_err(|e| Error::codec("a saga log", Some(saga), e))?;
    head.map(|head| saga_log(connection, saga, head))
        .transpose()
}

/// The log of `saga` from its head's raw columns and its steps, every field checked.
pub(super) fn saga_log(
    connection: &Connection,
    saga: &Key,
    head: RawSaga,
) -> Result<SagaLog, Error> {
    let corrupt = |what: String| {
        Error::codec(
            "a saga log",
            Some(saga),
            format!("corrupt saga log: {what}"),
        )
    };
    let (id, status, error, mut updated_at_ms, note) = head;
    let status =
        SagaStatus::parse(&status).ok_or_else(|| corrupt(format!("unknown status {status:?}")))?;
    let mut statement = connection
        .prepare_cached(statements::READ_STEPS)
        .map_err(db)?;
    let rows = statement
        .query_map([saga.to_string()], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<Vec<u8>>>(6)?,
                row.get::<_, Option<String>>(7)?,
                row.get::<_, Option<i64>>(8)?,
            ))
        })
        .map_err(db)?;
    let mut steps = Vec::new();
    for row in rows {
        let (index, name, key, irreversible, args, state, output, error, step_ms) =
            row.map_err(|e| Error::codec("a saga log", Some(saga), e))?;
        // The log was last written at the latest of its head's time (its last status write)
        // and its steps' (a step written before schema version 5 has none).
        if let Some(step_ms) = step_ms {
            updated_at_ms = updated_at_ms.max(step_ms);
        }
        steps.push(StepRecord {
            index: u32::try_from(index).map_err(|_| corrupt(format!("step index {index}")))?,
            key: key
                .parse()
                .map_err(|_| corrupt(format!("the key of step {index}")))?,
            state: StepState::parse(&state)
                .ok_or_else(|| corrupt(format!("unknown state {state:?} of step {index}")))?,
            name,
            irreversible,
            args,
            output,
            error,
        });
    }
    Ok(SagaLog::new(*saga, id, status, error, steps, to_wall(updated_at_ms)).with_note(note))
}

/// The sagas whose claim's lease ran out while they were running or compensating.
///
/// A read takes no lock, and here the clock is read before the statement takes its snapshot
/// on purpose: a heartbeat committed in between only makes a saga look alive, whereas a clock
/// read after the snapshot could call stale a saga whose owner had just renewed its lease.
/// Recovery claims each saga before it acts, and the claim decides under the write lock.
pub(super) fn stale_sagas(connection: &Connection, limit: usize) -> Result<Vec<StaleSaga>, Error> {
    let now = now_ms();
    let mut statement = connection
        .prepare_cached(statements::STALE_SAGAS)
        .map_err(db)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(params![now, limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(db)?;
    let mut stale = Vec::new();
    for row in rows {
        let (key, id, fingerprint) = row.map_err(|e| Error::codec("a saga log", None, e))?;
        let corrupt = || Error::codec("a saga log", None, format!("corrupt saga row {key:?}"));
        let key: Key = key.parse().map_err(|_| corrupt())?;
        let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| corrupt())?;
        stale.push(StaleSaga::new(
            key,
            id,
            Fingerprint::from_bytes(fingerprint),
        ));
    }
    Ok(stale)
}
