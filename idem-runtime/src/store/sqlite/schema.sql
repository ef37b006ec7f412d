-- The schema of idem's SqliteStore, version 5 (the file's `user_version`).
--
-- A new file gets this whole; a file of an older version is upgraded by the files of
-- `migrations/` instead, from its version up (`v2.sql` … `v5.sql`), and the store then
-- runs this again, which changes nothing: every statement here can be run again.
--
-- Keys and fingerprints are SHA-256 digests: no argument of any call is stored in a key.
-- Times are milliseconds since the Unix epoch on the machine's wall clock.

CREATE TABLE IF NOT EXISTS idem_records (
    key           TEXT    PRIMARY KEY,  -- 64 hex digits: a hash, never the arguments
    action        TEXT    NOT NULL,
    status        TEXT    NOT NULL,     -- in_progress | completed | needs_review
    token         INTEGER NOT NULL,     -- fencing token of the last claim
    fingerprint   BLOB    NOT NULL,     -- 32 bytes
    outcome       TEXT,                 -- ok | err, once completed
    result        BLOB,                 -- the recorded value or error, as JSON
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,              -- lease end, or result expiry; NULL: waits for review
    ttl_ms        INTEGER               -- version 4: the claiming action's TTL (see v4.sql);
                                        -- NULL in claims made before: never purged
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_records_expiry ON idem_records (expires_at_ms);

CREATE TABLE IF NOT EXISTS idem_meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO idem_meta (name, value) VALUES ('fencing_token', 0);

-- Version 2: saga logs. A saga's claim is its row in idem_records.
CREATE TABLE IF NOT EXISTS idem_sagas (
    key           TEXT    PRIMARY KEY,  -- the key of the saga's claim
    id            TEXT    NOT NULL,     -- the saga's id, as its caller gave it
    status        TEXT    NOT NULL,     -- running | compensating | completed | compensated | needs_attention | interrupted | resolved
    error         TEXT,
    updated_at_ms INTEGER NOT NULL,
    note          TEXT                  -- version 3: the operator's, once resolved (see v3.sql)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_sagas_status ON idem_sagas (status);

CREATE TABLE IF NOT EXISTS idem_saga_steps (
    saga          TEXT    NOT NULL,     -- idem_sagas.key
    idx           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    key           TEXT    NOT NULL,     -- the step's key
    irreversible  INTEGER NOT NULL,
    args          BLOB    NOT NULL,     -- JSON
    state         TEXT    NOT NULL,     -- started | done | failed | compensated | compensation_failed
    output        BLOB,                 -- JSON, once done
    error         TEXT,
    updated_at_ms INTEGER,              -- version 5: when the step was last written (see
                                        -- v5.sql); NULL in steps written before, or by an
                                        -- older idem still running
    PRIMARY KEY (saga, idx)
) WITHOUT ROWID;
