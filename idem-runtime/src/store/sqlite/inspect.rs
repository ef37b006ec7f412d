//! The operator's queries: listings, counts, and a saga resolved by hand.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

use crate::key::Key;
use crate::store::{
    FencingToken, Ownership, Record, RecordCount, RecordKind, RecordQuery, RecordTally, SagaLog,
    SagaQuery, Status,
};
use crate::Error;

use super::records::{check, fenced, raw_row};
use super::saga_log::{raw_saga, saga_log};
use super::{db, statements};

/// The `outcome` of the records of `kind`, where it tells kinds apart: a completed record is
/// `failed` when it recorded an error. With [`RecordKind::status`], the one mapping between
/// kinds and columns.
pub(super) fn outcome_of(kind: RecordKind) -> Option<&'static str> {
    match kind {
        RecordKind::Completed => Some("ok"),
        RecordKind::Failed => Some("err"),
        RecordKind::InProgress | RecordKind::NeedsReview => None,
    }
}

/// The kind of a record by its `status` and `outcome` columns; `None` if idem writes no such
/// pair.
pub(super) fn kind_of(status: &str, outcome: Option<&str>) -> Option<RecordKind> {
    let status = Status::parse(status)?;
    RecordKind::ALL.into_iter().find(|&kind| {
        kind.status() == status && outcome_of(kind).is_none_or(|wanted| outcome == Some(wanted))
    })
}

/// `WHERE …` over `conditions`, or nothing.
pub(super) fn filter(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

pub(super) fn sql_limit(limit: usize) -> Value {
    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The statement (and its parameters) that lists what `query` selects, the key last; `None`
/// when no record can match.
///
/// ```text
/// kind = failed, action = charge_card, key prefix 9f3a, limit 20
///   SELECT status, …, action, key FROM idem_records
///   WHERE key >= '9f3a' AND key < '9f3ag' AND status = 'completed' AND outcome = 'err'
///     AND action = 'charge_card'
///   ORDER BY created_at_ms DESC, key LIMIT 20
/// ```
pub(super) fn list_records_sql(query: &RecordQuery) -> Option<(String, Vec<Value>)> {
    if !query.key_prefix_can_match() {
        return None;
    }
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    if let Some(prefix) = query.key_prefix.as_deref().filter(|p| !p.is_empty()) {
        // Keys are lowercase hex, so the keys that start with `prefix` are exactly those from
        // `prefix` up to `prefix` + 'g': a range of the primary key.
        conditions.push("key >= ? AND key < ?");
        values.push(Value::Text(prefix.to_owned()));
        values.push(Value::Text(format!("{prefix}g")));
    }
    if let Some(kind) = query.kind {
        conditions.push("status = ?");
        values.push(Value::Text(kind.status().as_str().to_owned()));
        if let Some(outcome) = outcome_of(kind) {
            conditions.push("outcome = ?");
            values.push(Value::Text(outcome.to_owned()));
        }
    }
    if let Some(action) = &query.action {
        conditions.push("action = ?");
        values.push(Value::Text(action.clone()));
    }
    values.push(sql_limit(query.limit));
    let sql = statements::list_records(&filter(&conditions));
    Some((sql, values))
}

pub(super) fn list_records(
    connection: &Connection,
    query: &RecordQuery,
) -> Result<Vec<Record>, Error> {
    let Some((sql, values)) = list_records_sql(query) else {
        return Ok(Vec::new());
    };
    let mut statement = connection.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, String>(8)?, raw_row(row)))
        })
        .map_err(db)?;
    let mut records = Vec::new();
    for row in rows {
        let (key, raw) = row.map_err(|e| Error::codec("a record", None, e))?;
        let key: Key = key.parse().map_err(|_| {
            Error::codec("a record", None, format!("corrupt record: the key {key:?}"))
        })?;
        let raw = raw.map_err(|e| Error::codec("a record", Some(&key), e))?;
        records.push(check(&key, raw)?.into_record(key));
    }
    Ok(records)
}

pub(super) fn record_counts(connection: &Connection) -> Result<Vec<RecordCount>, Error> {
    let mut statement = connection
        .prepare_cached(statements::RECORD_COUNTS)
        .map_err(db)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .map_err(db)?;
    let mut tally = RecordTally::new();
    for row in rows {
        let (action, status, outcome, count) =
            row.map_err(|e| Error::codec("a record", None, e))?;
        let kind = kind_of(&status, outcome.as_deref()).ok_or_else(|| {
            Error::codec(
                "a record",
                None,
                format!("corrupt record of {action:?}: status {status:?}, outcome {outcome:?}"),
            )
        })?;
        tally.add(&action, kind, u64::try_from(count).unwrap_or(0));
    }
    Ok(tally.into_counts())
}

pub(super) fn list_sagas(
    connection: &mut Connection,
    query: &SagaQuery,
) -> Result<Vec<SagaLog>, Error> {
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    if let Some(status) = query.status {
        conditions.push("status = ?");
        values.push(Value::Text(status.as_str().to_owned()));
    }
    if let Some(id) = &query.id {
        conditions.push("id = ?");
        values.push(Value::Text(id.clone()));
    }
    values.push(sql_limit(query.limit));
    let sql = statements::list_sagas(&filter(&conditions));
    // One snapshot: each log's steps as of its head.
    let transaction = connection.transaction().map_err(db)?;
    let heads = transaction
        .prepare_cached(&sql)
        .map_err(db)?
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, String>(5)?, raw_saga(row)))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::codec("a saga log", None, e))?;
    let mut logs = Vec::with_capacity(heads.len());
    for (key, head) in heads {
        let key: Key = key.parse().map_err(|_| {
            Error::codec(
                "a saga log",
                None,
                format!("corrupt saga log: the key {key:?}"),
            )
        })?;
        let head = head.map_err(|e| Error::codec("a saga log", Some(&key), e))?;
        logs.push(saga_log(&transaction, &key, head)?);
    }
    transaction.commit().map_err(db)?;
    Ok(logs)
}

/// Deletes the completed record of `key` if `token` recorded it (an operator's `forget`).
pub(super) fn forget_result(
    transaction: &Connection,
    key: &Key,
    token: FencingToken,
) -> Result<Ownership, Error> {
    // A token past i64::MAX was never handed out here: nothing to delete.
    let Ok(token) = i64::try_from(token) else {
        return Ok(Ownership::Lost);
    };
    fenced(
        transaction,
        statements::FORGET_RESULT,
        params![key.to_string(), token],
    )
}

/// Marks the saga `saga` resolved with `note` at `now` if it needs attention.
pub(super) fn resolve_saga(
    transaction: &Connection,
    now: i64,
    saga: &Key,
    note: &str,
) -> Result<bool, Error> {
    let changed = transaction
        .prepare_cached(statements::RESOLVE_SAGA)
        .map_err(db)?
        .execute(params![saga.to_string(), note, now])
        .map_err(db)?;
    Ok(changed == 1)
}
