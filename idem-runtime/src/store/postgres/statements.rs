//! The store's statements, written once for its schema.

/// `text` as a quoted SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statements, written once for the store's schema.
pub(super) struct Statements {
    // The claim protocol.
    pub(super) peek: String,
    pub(super) insert: String,
    pub(super) claim: String,
    pub(super) get: String,
    pub(super) held: String,
    pub(super) complete: String,
    pub(super) release: String,
    pub(super) heartbeat: String,
    // Purges.
    pub(super) purge: String,
    pub(super) count_expired: String,
    // Saga logs.
    pub(super) saga_status: String,
    pub(super) saga_step: String,
    pub(super) read_saga: String,
    pub(super) stale_sagas: String,
    // The operator's queries.
    pub(super) list_records: String,
    pub(super) record_counts: String,
    pub(super) list_sagas: String,
    pub(super) resolve_saga: String,
    pub(super) forget_result: String,
}

impl Statements {
    /// The statements on the tables of the schema `s` (quoted).
    pub(super) fn new(s: &str) -> Self {
        Statements {
            // The claim protocol.
            peek: peek(s),
            insert: insert(s),
            claim: claim(s),
            get: get(s),
            held: held(s),
            complete: complete(s),
            release: release(s),
            heartbeat: heartbeat(s),
            // Purges.
            purge: purge(s),
            count_expired: count_expired(s),
            // Saga logs.
            saga_status: saga_status(s),
            saga_step: saga_step(s),
            read_saga: read_saga(s),
            stale_sagas: stale_sagas(s),
            // The operator's queries.
            list_records: list_records(s),
            record_counts: record_counts(s),
            list_sagas: list_sagas(s),
            resolve_saga: resolve_saga(s),
            forget_result: forget_result(s),
        }
    }
}

// Conditions and columns that several statements share, on the record (or saga) `r`.

/// A result whose TTL ran out: what a purge deletes (and counts) and a claim replaces.
fn expired(r: &str) -> String {
    format!("{r}.status = 'completed' AND {r}.expires_at <= clock_timestamp()")
}

/// What a purge deletes (and counts), the rule of `Found::is_purgeable`: an expired result, or
/// a claim whose lease ended and the action's TTL after it (NULL in claims made before version
/// 3: kept), unless it has a saga log.
fn purgeable(s: &str, r: &str) -> String {
    format!(
        "({expired}) \
         OR ({r}.status = 'in_progress' AND {r}.expires_at <= clock_timestamp() \
             AND {r}.expires_at + {r}.ttl_ms * interval '1 millisecond' <= clock_timestamp() \
             AND NOT EXISTS (SELECT 1 FROM {s}.idem_sagas AS g WHERE g.key = {r}.key))",
        expired = expired(r),
    )
}

/// A record whose owner may be replaced by the claim of payload `fingerprint`: an expired
/// result, or a claim of the same payload whose lease ran out.
fn claimable(r: &str, fingerprint: &str) -> String {
    format!(
        "({expired}) \
         OR ({r}.status = 'in_progress' AND {r}.expires_at <= clock_timestamp() \
             AND {r}.fingerprint = {fingerprint})",
        expired = expired(r),
    )
}

/// The record's `RecordKind` by name; NULL for a completed record with an unknown outcome,
/// which reading it reports as corrupt.
fn kind(r: &str) -> String {
    format!(
        "CASE WHEN {r}.status <> 'completed' THEN {r}.status \
              WHEN {r}.outcome = 'ok' THEN 'completed' \
              WHEN {r}.outcome = 'err' THEN 'failed' END"
    )
}

/// A record's columns as [`record`](super::decode::record) reads them.
fn record_columns(r: &str) -> String {
    format!(
        "{r}.action, {r}.status, {r}.token, {r}.fingerprint, {r}.outcome, {r}.result, \
         {r}.created_at, {r}.expires_at"
    )
}

/// A saga log's columns (on `g`, its steps on `t`), one row per step, as
/// [`saga_log`](super::decode::saga_log) reads them.
fn saga_columns() -> String {
    "g.id, g.status, g.error, g.updated_at, g.note,
     t.idx, t.name, t.key, t.irreversible, t.args, t.state, t.output, t.error, t.updated_at"
        .to_owned()
}

// The claim protocol.

/// A claim's first look, a plain read (no row lock, no transaction id, so no commit to
/// flush): the record's columns as [`peek_answer`](super::decode::peek_answer) reads them,
/// and the server's clock. Most claims are decided here: a replay, a live owner, a key
/// parked for review are reported as read; a key with no record is inserted (`insert`); only
/// a record to replace (an expired result, a dead owner) takes the full `claim`.
fn peek(s: &str) -> String {
    format!(
        "SELECT status, token, fingerprint, outcome, result, expires_at, clock_timestamp()
         FROM {s}.idem_records WHERE key = $1::text",
    )
}

/// A new fencing token: the server's WAL timeline times 2^40, plus the next value of the
/// store's sequence. A standby promoted after an asynchronous failover never saw the latest
/// advances of the sequence (their commits were lost with the primary) and would hand those
/// values out again, so that a claim lost in the failover and a new claim of its key could
/// hold the same token; the promotion starts a new timeline, which puts every token it hands
/// out above those of the old one. (Tokens of one timeline stay below the next as long as
/// the sequence stays below 2^40, about 10^12 claims.)
fn new_token(s: &str) -> String {
    let sequence = quote_literal(&format!("{s}.idem_fencing_token"));
    format!(
        "(('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint \
           * 1099511627776 + nextval({sequence}))"
    )
}

/// The claim of a key that had no record at the first look, or a claim's first step when
/// its handle writes first (`FirstLook`): a new claim under a new token, or nothing when
/// the key has a record (the claim then reads it).
fn insert(s: &str) -> String {
    let token = new_token(s);
    format!(
        "INSERT INTO {s}.idem_records
             (key, action, status, token, fingerprint, created_at, expires_at, takeovers, ttl_ms)
         VALUES ($1::text, $2::text, 'in_progress', {token}, $3::bytea,
                 clock_timestamp(), clock_timestamp() + $4::bigint * interval '1 millisecond', 0,
                 $5::bigint)
         ON CONFLICT (key) DO NOTHING
         RETURNING token"
    )
}

/// The full claim, for a record the first look found replaceable (and, run again, for one
/// that changed under it): what it does to a record it may replace is take the place of a dead owner under
/// a new token, or (on_stale = review, `$5`) park the key for an operator, or start afresh over
/// an expired result. The token of a takeover is drawn here, after the row is locked, so it is
/// larger than any the record had. Its answer: what it wrote, and the record as its snapshot
/// saw it (see [`claim_answer`](super::decode::claim_answer)).
fn claim(s: &str) -> String {
    let token = new_token(s);
    format!(
    "WITH cur AS (
         SELECT status, token, fingerprint, outcome, result,
                expires_at AS expires_ms,
                coalesce({cur_claimable}, false) AS claimable
         FROM {s}.idem_records AS rec WHERE key = $1::text
     ),
     claimed AS (
         INSERT INTO {s}.idem_records AS r
             (key, action, status, token, fingerprint, created_at, expires_at, takeovers, ttl_ms)
         SELECT $1::text, $2::text, 'in_progress', {token}, $3::bytea,
                clock_timestamp(), clock_timestamp() + $4::bigint * interval '1 millisecond', 0,
                $6::bigint
         WHERE NOT EXISTS (SELECT 1 FROM cur WHERE NOT cur.claimable)
         ON CONFLICT (key) DO UPDATE SET
             status      = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                THEN 'needs_review' ELSE 'in_progress' END,
             token       = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                THEN r.token ELSE {token} END,
             action      = CASE WHEN r.status = 'completed' THEN excluded.action ELSE r.action END,
             fingerprint = excluded.fingerprint,
             outcome     = NULL,
             result      = NULL,
             created_at  = CASE WHEN r.status = 'completed' THEN excluded.created_at ELSE r.created_at END,
             expires_at  = CASE WHEN r.status = 'in_progress' AND $5::boolean
                                THEN NULL ELSE excluded.expires_at END,
             takeovers   = CASE WHEN r.status = 'completed' THEN 0
                                WHEN $5::boolean THEN r.takeovers
                                ELSE r.takeovers + 1 END,
             ttl_ms      = excluded.ttl_ms
         WHERE {r_claimable}
         RETURNING r.status, r.token, r.takeovers
     )
     SELECT c.status, c.token, c.takeovers,
            f.status, f.token, f.fingerprint, f.outcome, f.result, f.expires_ms, f.claimable,
            clock_timestamp()
     FROM (VALUES (1)) AS one (x)
     LEFT JOIN claimed c ON true
     LEFT JOIN cur f ON true",
    cur_claimable = claimable("rec", "$3::bytea"),
    r_claimable = claimable("r", "excluded.fingerprint"),
    )
}

/// A record by its key, its columns as [`record`](super::decode::record) reads them.
fn get(s: &str) -> String {
    format!(
        "SELECT {columns} FROM {s}.idem_records AS r WHERE r.key = $1::text",
        columns = record_columns("r"),
    )
}

/// Whether a token still holds a live lease on the key.
fn held(s: &str) -> String {
    format!(
        "SELECT EXISTS (SELECT 1 FROM {s}.idem_records
                        WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
                          AND expires_at > clock_timestamp())"
    )
}

/// Records the result if the token still owns the key. A second `complete` by the owner
/// whose first answer was lost finds its own result: held, and the first result stays.
fn complete(s: &str) -> String {
    format!(
        "WITH done AS (
             UPDATE {s}.idem_records
             SET status = 'completed', outcome = $3::text, result = $4::bytea,
                 expires_at = clock_timestamp() + $5::bigint * interval '1 millisecond'
             WHERE key = $1::text AND token = $2::bigint
               AND status IN ('in_progress', 'needs_review')
             RETURNING 1
         )
         SELECT EXISTS (SELECT 1 FROM done)
             OR EXISTS (SELECT 1 FROM {s}.idem_records
                        WHERE key = $1::text AND token = $2::bigint AND status = 'completed')"
    )
}

/// Gives the key back if the token still owns it; answers a row if it did.
fn release(s: &str) -> String {
    format!(
        "DELETE FROM {s}.idem_records
         WHERE key = $1::text AND token = $2::bigint AND status IN ('in_progress', 'needs_review')
         RETURNING 1"
    )
}

/// Extends the lease if the token still owns the key; answers a row if it did.
fn heartbeat(s: &str) -> String {
    format!(
        "UPDATE {s}.idem_records
         SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
         WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
         RETURNING 1"
    )
}

// Purges.

/// Deletes up to `$1` purgeable records and the logs of their sagas. Rows that a claim is
/// replacing at this moment are skipped (and left to it).
fn purge(s: &str) -> String {
    format!(
        "WITH gone AS (
             DELETE FROM {s}.idem_records
             WHERE key IN (SELECT r.key FROM {s}.idem_records AS r
                           WHERE {purgeable}
                           LIMIT $1::bigint
                           FOR UPDATE SKIP LOCKED)
             RETURNING key
         ),
         steps AS (DELETE FROM {s}.idem_saga_steps WHERE saga IN (SELECT key FROM gone)),
         sagas AS (DELETE FROM {s}.idem_sagas WHERE key IN (SELECT key FROM gone))
         SELECT count(*) FROM gone",
        purgeable = purgeable(s, "r"),
    )
}

/// How many records a purge would delete now.
fn count_expired(s: &str) -> String {
    format!(
        "SELECT count(*) FROM {s}.idem_records AS r WHERE {purgeable}",
        purgeable = purgeable(s, "r"),
    )
}

// Saga logs.

/// Writes a saga log's status. The saga's record is locked (FOR SHARE) by the statement
/// that writes the log: a takeover waits for the write, and a write after a takeover finds no
/// record.
fn saga_status(s: &str) -> String {
    format!(
        "WITH held AS (
             SELECT key FROM {s}.idem_records
             WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
             FOR SHARE
         )
         INSERT INTO {s}.idem_sagas AS g (key, id, status, error, updated_at)
         SELECT key, $3::text, $4::text, $5::text, clock_timestamp() FROM held
         ON CONFLICT (key) DO UPDATE SET
             status = excluded.status, error = excluded.error, updated_at = excluded.updated_at
         RETURNING 1"
    )
}

/// Writes a step of a saga log, with its own time, fenced as [`saga_status`] is. The head
/// is made if the log has none yet, and otherwise left alone (`DO NOTHING` finds the row and
/// writes nothing): a step's write is the fence and the step's row, as the raw write of a
/// step's log is the row alone (the head's time, written by each step before schema
/// version 4, was most of the difference in WAL: `benches/saga_step_wal.sql`).
fn saga_step(s: &str) -> String {
    format!(
        "WITH held AS (
             SELECT key FROM {s}.idem_records
             WHERE key = $1::text AND token = $2::bigint AND status = 'in_progress'
             FOR SHARE
         ),
         head AS (
             INSERT INTO {s}.idem_sagas (key, id, status, error, updated_at)
             SELECT key, $3::text, 'running', NULL, clock_timestamp() FROM held
             ON CONFLICT (key) DO NOTHING
         )
         INSERT INTO {s}.idem_saga_steps AS t
             (saga, idx, name, key, irreversible, args, state, output, error, updated_at)
         SELECT key, $4::bigint, $5::text, $6::text, $7::boolean, $8::bytea, $9::text,
                $10::bytea, $11::text, clock_timestamp()
         FROM held
         ON CONFLICT (saga, idx) DO UPDATE SET
             name = excluded.name, key = excluded.key, irreversible = excluded.irreversible,
             args = excluded.args, state = excluded.state, output = excluded.output,
             error = excluded.error, updated_at = excluded.updated_at
         RETURNING 1"
    )
}

/// A saga log, one row per step, as [`saga_log`](super::decode::saga_log) reads them.
fn read_saga(s: &str) -> String {
    let saga_columns = saga_columns();
    format!(
        "SELECT {saga_columns}
         FROM {s}.idem_sagas g LEFT JOIN {s}.idem_saga_steps t ON t.saga = g.key
         WHERE g.key = $1::text
         ORDER BY t.idx"
    )
}

/// Sagas whose claim's lease ran out while they ran. Sagas that another process is claiming
/// right now are skipped: their rows are locked by that claim.
fn stale_sagas(s: &str) -> String {
    format!(
        "SELECT g.key, g.id, r.fingerprint
         FROM {s}.idem_sagas g JOIN {s}.idem_records r ON r.key = g.key
         WHERE g.status IN ('running', 'compensating')
           AND r.status = 'in_progress' AND r.expires_at <= clock_timestamp()
         ORDER BY r.expires_at
         LIMIT $1::bigint
         FOR UPDATE OF r SKIP LOCKED"
    )
}

// The operator's queries.

/// `$1` kind, `$2` the status of that kind, `$3` action, `$4` key prefix (hex digits only:
/// the range of keys that start with it), `$5` limit; NULL filters match all. Ties (by the
/// microsecond) go by key, in byte order as `Key` sorts.
fn list_records(s: &str) -> String {
    format!(
        "SELECT {columns}, r.key
         FROM {s}.idem_records AS r
         WHERE ($1::text IS NULL OR (r.status = $2::text AND ({kind}) = $1::text))
           AND ($3::text IS NULL OR r.action = $3::text)
           AND ($4::text IS NULL OR (r.key >= $4::text AND r.key < ($4::text || 'g')))
         ORDER BY r.created_at DESC, r.key COLLATE \"C\"
         LIMIT $5::bigint",
        columns = record_columns("r"),
        kind = kind("r"),
    )
}

/// Records by action and kind, with one key of each group, to name in an error if the
/// group's kind is corrupt.
fn record_counts(s: &str) -> String {
    format!(
        "SELECT r.action, {kind}, count(*), min(r.key)
         FROM {s}.idem_records AS r
         GROUP BY 1, 2",
        kind = kind("r"),
    )
}

/// `$1` status, `$2` id (NULL: any), `$3` limit: on the sagas, then their steps joined.
fn list_sagas(s: &str) -> String {
    let saga_columns = saga_columns();
    format!(
        "SELECT {saga_columns}, g.key
         FROM (SELECT key, id, status, error, updated_at, note
               FROM {s}.idem_sagas
               WHERE ($1::text IS NULL OR status = $1::text)
                 AND ($2::text IS NULL OR id = $2::text)
               ORDER BY updated_at DESC, id COLLATE \"C\", key COLLATE \"C\"
               LIMIT $3::bigint) AS g
         LEFT JOIN {s}.idem_saga_steps t ON t.saga = g.key
         ORDER BY g.updated_at DESC, g.id COLLATE \"C\", g.key COLLATE \"C\", t.idx"
    )
}

/// Deletes a result recorded under a token, unless it is a saga's.
fn forget_result(s: &str) -> String {
    format!(
        "DELETE FROM {s}.idem_records
         WHERE key = $1::text AND token = $2::bigint AND status = 'completed'
           AND NOT EXISTS (SELECT 1 FROM {s}.idem_sagas WHERE key = $1::text)"
    )
}

/// Marks a saga that needs attention resolved, with the operator's note.
fn resolve_saga(s: &str) -> String {
    format!(
        "UPDATE {s}.idem_sagas
         SET status = 'resolved', note = $2::text, updated_at = clock_timestamp()
         WHERE key = $1::text AND status = 'needs_attention'"
    )
}
