//! Every statement the store runs, in one place: the schema is in `schema.sql` and
//! `migrations/`, what reads and writes it is here. Parameters are numbered (`?1`) where a
//! statement is fixed, positional (`?`) in the operator's listings, which are built from the
//! filters given.

/// The columns of a record, in the order `RawRow` reads them.
macro_rules! record_columns {
    () => {
        "status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, action"
    };
}

/// The columns of a saga log's head, in the order `RawSaga` reads them.
macro_rules! saga_columns {
    () => {
        "id, status, error, updated_at_ms, note"
    };
}

/// The records a purge deletes at `?1`, the rule of `Found::is_purgeable`: results whose TTL
/// ran out, and claims whose lease ended and the action's TTL after it, unless they have a
/// saga log (on `idem_records AS r`). Both kinds have `expires_at_ms <= ?1`: the expiry index
/// finds them.
macro_rules! expired {
    () => {
        "expires_at_ms <= ?1 AND (status = 'completed' OR (status = 'in_progress' \
         AND expires_at_ms + ttl_ms <= ?1 \
         AND NOT EXISTS (SELECT 1 FROM idem_sagas AS g WHERE g.key = r.key)))"
    };
}

/// The keys of at most `?2` records a purge deletes at `?1`, the oldest expiries first: the
/// order of the expiry index, which ends with the primary key, so it is total.
macro_rules! purged_keys {
    () => {
        concat!(
            "SELECT r.key FROM idem_records AS r WHERE ",
            expired!(),
            " ORDER BY r.expires_at_ms, r.key LIMIT ?2"
        )
    };
}

// The claim protocol.

/// A record by its key.
pub(super) const READ: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM idem_records WHERE key = ?1"
);

/// The next fencing token.
pub(super) const NEXT_TOKEN: &str =
    "UPDATE idem_meta SET value = value + 1 WHERE name = 'fencing_token' RETURNING value";

/// A claim of a free key (or over an expired result).
pub(super) const INSERT_CLAIM: &str = "INSERT OR REPLACE INTO idem_records
       (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms, ttl_ms)
     VALUES (?1, ?2, 'in_progress', ?3, ?4, NULL, NULL, ?5, ?6, ?7)";

/// A claim that takes the place of a dead owner.
pub(super) const TAKE_OVER: &str =
    "UPDATE idem_records SET token = ?2, expires_at_ms = ?3, ttl_ms = ?4 WHERE key = ?1";

/// A key parked for an operator (`on_stale = review`).
pub(super) const PARK: &str =
    "UPDATE idem_records SET status = 'needs_review', expires_at_ms = NULL WHERE key = ?1";

/// The result, recorded if the token `?2` still owns the key.
pub(super) const COMPLETE: &str =
    "UPDATE idem_records SET status = 'completed', outcome = ?3, result = ?4, expires_at_ms = ?5
     WHERE key = ?1 AND token = ?2 AND status IN ('in_progress', 'needs_review')";

/// The lease, extended if the token `?2` still owns the key.
pub(super) const HEARTBEAT: &str =
    "UPDATE idem_records SET expires_at_ms = ?3 WHERE key = ?1 AND status = 'in_progress' AND token = ?2";

/// The key, given back if the token `?2` still owns it.
pub(super) const RELEASE: &str =
    "DELETE FROM idem_records WHERE key = ?1 AND token = ?2 AND status IN ('in_progress', 'needs_review')";

// Purges: the same keys in all three deletes, the records last.

/// The steps of the sagas a purge ends.
pub(super) const PURGE_STEPS: &str = concat!(
    "DELETE FROM idem_saga_steps WHERE saga IN (",
    purged_keys!(),
    ")"
);

/// The heads of the sagas a purge ends.
pub(super) const PURGE_SAGAS: &str =
    concat!("DELETE FROM idem_sagas WHERE key IN (", purged_keys!(), ")");

/// The records a purge deletes.
pub(super) const PURGE_RECORDS: &str = concat!(
    "DELETE FROM idem_records WHERE key IN (",
    purged_keys!(),
    ")"
);

/// How many records a purge would delete at `?1`.
pub(super) const COUNT_EXPIRED: &str =
    concat!("SELECT count(*) FROM idem_records AS r WHERE ", expired!());

// Saga logs.

/// A saga log's status (`?3`) and error (`?4`), written at `?5`.
pub(super) const WRITE_SAGA_STATUS: &str =
    "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (key) DO UPDATE SET status = ?3, error = ?4, updated_at_ms = ?5";

/// A saga log's head, made running at `?3` for a step's write if the log has none yet, and
/// otherwise left alone: a step keeps its own time, so its write changes one row, as the raw
/// write of a step's log does.
pub(super) const MAKE_SAGA: &str = "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms)
     VALUES (?1, ?2, 'running', NULL, ?3)
     ON CONFLICT (key) DO NOTHING";

/// A step of a saga log, written at `?10`.
pub(super) const WRITE_STEP: &str = "INSERT OR REPLACE INTO idem_saga_steps
       (saga, idx, name, key, irreversible, args, state, output, error, updated_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// A saga log's head.
pub(super) const READ_SAGA: &str = concat!(
    "SELECT ",
    saga_columns!(),
    " FROM idem_sagas WHERE key = ?1"
);

/// A saga log's steps, in order.
pub(super) const READ_STEPS: &str =
    "SELECT idx, name, key, irreversible, args, state, output, error, updated_at_ms
     FROM idem_saga_steps WHERE saga = ?1 ORDER BY idx";

/// At most `?2` sagas running or compensating whose claim's lease ran out at `?1`.
pub(super) const STALE_SAGAS: &str =
    "SELECT s.key, s.id, r.fingerprint FROM idem_sagas s JOIN idem_records r ON r.key = s.key
     WHERE s.status IN ('running', 'compensating')
       AND r.status = 'in_progress' AND r.expires_at_ms <= ?1
     LIMIT ?2";

// The operator's queries.

/// Records (and their key, last) that match `filter` (`WHERE …`, or nothing), the newest
/// first; the limit is the last parameter.
pub(super) fn list_records(filter: &str) -> String {
    format!(
        concat!(
            "SELECT ",
            record_columns!(),
            ", key FROM idem_records {} ORDER BY created_at_ms DESC, key LIMIT ?"
        ),
        filter
    )
}

/// Records by action, status and outcome.
pub(super) const RECORD_COUNTS: &str = "SELECT action, status, outcome, count(*) FROM idem_records
     GROUP BY action, status, outcome";

/// Saga log heads (and their key, last) that match `filter`, the latest status write first
/// (a step's write leaves the head alone); the limit is the last parameter.
pub(super) fn list_sagas(filter: &str) -> String {
    format!(
        concat!(
            "SELECT ",
            saga_columns!(),
            ", key FROM idem_sagas {} ORDER BY updated_at_ms DESC, id, key LIMIT ?"
        ),
        filter
    )
}

/// Deletes a result recorded under a token, unless it is a saga's.
pub(super) const FORGET_RESULT: &str =
    "DELETE FROM idem_records WHERE key = ?1 AND token = ?2 AND status = 'completed'
     AND NOT EXISTS (SELECT 1 FROM idem_sagas WHERE key = ?1)";

/// A saga that needs attention, resolved with the operator's note.
pub(super) const RESOLVE_SAGA: &str =
    "UPDATE idem_sagas SET status = 'resolved', note = ?2, updated_at_ms = ?3
     WHERE key = ?1 AND status = 'needs_attention'";
