-- Version 1, the first schema: where the chain of upgrades starts. The store never runs this
-- file (a new file gets `schema.sql`); it is what files of version 1 have, and the tests make
-- such files from it, then upgrade them with `v2.sql` onwards.

CREATE TABLE IF NOT EXISTS idem_records (
    key           TEXT    PRIMARY KEY,
    action        TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    token         INTEGER NOT NULL,
    fingerprint   BLOB    NOT NULL,
    outcome       TEXT,
    result        BLOB,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_records_expiry ON idem_records (expires_at_ms);

CREATE TABLE IF NOT EXISTS idem_meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO idem_meta (name, value) VALUES ('fencing_token', 0);
