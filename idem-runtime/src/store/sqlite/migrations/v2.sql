-- Version 1 to 2: saga logs. A saga's claim is its row in idem_records.

CREATE TABLE IF NOT EXISTS idem_sagas (
    key           TEXT    PRIMARY KEY,
    id            TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    error         TEXT,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_sagas_status ON idem_sagas (status);

CREATE TABLE IF NOT EXISTS idem_saga_steps (
    saga          TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    irreversible  INTEGER NOT NULL,
    args          BLOB    NOT NULL,
    state         TEXT    NOT NULL,
    output        BLOB,
    error         TEXT,
    PRIMARY KEY (saga, idx)
) WITHOUT ROWID;
