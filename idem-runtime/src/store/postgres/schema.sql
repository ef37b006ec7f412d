-- The schema of idem's PostgresStore, version 4.
--
-- PostgresStore creates this schema itself when it connects: in one transaction, under
-- pg_advisory_xact_lock (so that processes connecting at once do not race), it runs this file
-- with `search_path` set to the store's schema (`public` unless the store is given another),
-- unless `idem_meta` already says version 4. A store that finds the schema in place changes
-- nothing, so it needs no CREATE privilege.
--
-- The same file upgrades a schema of an older version in place, keeping its rows: what a
-- version added is added by an `ALTER TABLE … ADD COLUMN IF NOT EXISTS` (see "Upgrades" at
-- the end), and the version row is raised last. Agents of the older idem can go on writing
-- meanwhile: their statements wait for the upgrade's table locks. They lock the tables in
-- other orders than this file does, so the two can meet in a lock cycle. The store makes
-- sure PostgreSQL then cancels the upgrade, not the agent's statement: before this file it
-- takes the three tables in SHARE UPDATE EXCLUSIVE mode (no agent's statement takes or waits
-- for it; vacuums, ANALYZE and schema changes do), waiting up to `deadlock_timeout` and half
-- a second per table, so that an autovacuum in the way is cancelled; then its statements
-- here wait for a lock at most a tenth of `deadlock_timeout` (at most 50 ms), less than the
-- deadlock check that would cancel an agent, as long as the agents' sessions run with a
-- `deadlock_timeout` of at least half a second and no operator changes the tables' schema
-- meanwhile; a run that gave way is run again after a pause. To upgrade an existing schema
-- by hand beside such agents, as the tables' owner, do the same (the 1500ms and 50ms below
-- are for the default `deadlock_timeout` of 1 s):
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction \
--     -c 'SET LOCAL search_path TO idem' -c 'SET LOCAL statement_timeout = 0' \
--     -c "SET LOCAL lock_timeout = '1500ms'" \
--     -c 'LOCK TABLE idem_records, idem_sagas, idem_saga_steps IN SHARE UPDATE EXCLUSIVE MODE' \
--     -c "SET LOCAL lock_timeout = '50ms'" -f schema.sql
--
-- and run it again until it succeeds (PostgreSQL cancels none of a long transaction, a dump,
-- an operator's VACUUM, ANALYZE or CREATE INDEX CONCURRENTLY, an autovacuum to prevent
-- wraparound: wait for them to end); or stop the older agents first.
--
-- Teams that migrate themselves run this same file, in the schema the store will be given:
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction \
--     -c 'CREATE SCHEMA IF NOT EXISTS idem' -c 'SET LOCAL search_path TO idem' -f schema.sql
--
-- and the application then needs only: USAGE on the schema; SELECT, INSERT, UPDATE, DELETE on
-- its tables; USAGE on the sequence. Every statement here can be run again (IF NOT EXISTS),
-- and on a schema of any older version.
--
-- Keys and fingerprints are SHA-256 digests: no argument of any call is stored in a key.
-- Times are the server's (`clock_timestamp()`), never a client's.

-- Fencing tokens: every successful claim takes a new one, the server's WAL timeline times
-- 2^40 plus the next value of this sequence. A sequence never hands out a number twice, not
-- even after the record that held it was released or purged, and a standby promoted after
-- an asynchronous failover (whose sequence may lag) starts a new timeline: a fenced write by
-- an owner that was taken over can never match.
CREATE SEQUENCE IF NOT EXISTS idem_fencing_token AS bigint;

-- One record per key: the claim protocol.
--   in_progress  -- claimed; expires_at is the end of the owner's lease
--   completed    -- the result is recorded; expires_at is the end of its TTL
--   needs_review -- the owner died inside an `on_stale = review` action; expires_at is NULL
CREATE TABLE IF NOT EXISTS idem_records (
    key          text        PRIMARY KEY,  -- 64 hex digits
    action       text        NOT NULL,     -- the action's name, for operators
    status       text        NOT NULL,     -- in_progress | completed | needs_review
    token        bigint      NOT NULL,     -- fencing token of the last claim
    fingerprint  bytea       NOT NULL,     -- 32 bytes: the digest of the claim's payload
    outcome      text,                     -- ok | err, once completed
    result       bytea,                    -- the recorded value or error (JSON), once completed
    created_at   timestamptz NOT NULL,     -- when the key was first claimed
    expires_at   timestamptz,              -- lease end, or result expiry; NULL: waits for review
    takeovers    integer     NOT NULL DEFAULT 0, -- owners that died and were taken over
    ttl_ms       bigint                    -- the claiming action's TTL in ms: a claim whose owner
                                           -- died is purged once expires_at + ttl_ms has passed
                                           -- (unless it has a saga log); NULL in claims made
                                           -- before version 3: kept. Since version 3
);

-- Expiry: what purges (completed, expires_at passed; in_progress, expires_at + ttl_ms passed)
-- and recovery (in_progress, lease passed) look for.
CREATE INDEX IF NOT EXISTS idem_records_expiry ON idem_records (status, expires_at);

-- Saga logs. A saga's claim is its row in idem_records (the same key); its log outlives that
-- row when the saga waits for an operator (needs_attention) and is deleted with it when a
-- purge removes the saga's expired result.
CREATE TABLE IF NOT EXISTS idem_sagas (
    key         text        PRIMARY KEY,  -- the key of the saga's claim
    id          text        NOT NULL,     -- the saga's id, as its caller gave it
    status      text        NOT NULL,     -- running | compensating | completed | compensated | needs_attention | interrupted | resolved
    error       text,                     -- why it failed, once it did
    updated_at  timestamptz NOT NULL,
    note        text                      -- an operator's note, once settled by hand (resolved); since version 2
);

-- Recovery looks for the sagas that are running or compensating.
CREATE INDEX IF NOT EXISTS idem_sagas_active ON idem_sagas (key)
    WHERE status IN ('running', 'compensating');

CREATE TABLE IF NOT EXISTS idem_saga_steps (
    saga          text    NOT NULL,  -- idem_sagas.key
    idx           bigint  NOT NULL,  -- the step's place in the saga, from 0
    name          text    NOT NULL,  -- the step's registered name
    key           text    NOT NULL,  -- the step's key (64 hex digits)
    irreversible  boolean NOT NULL,
    args          bytea   NOT NULL,  -- JSON
    state         text    NOT NULL,  -- started | done | failed | compensated | compensation_failed
    output        bytea,             -- JSON, once done
    error         text,
    updated_at    timestamptz,       -- when the step was last written; NULL (or older) in steps
                                     -- written before version 4, or by an older idem still
                                     -- running, whose writes move the head's time
    PRIMARY KEY (saga, idx)
);

-- The schema's version, which a store checks when it connects: a schema made by a newer idem
-- is refused, an older one is migrated.
CREATE TABLE IF NOT EXISTS idem_meta (
    name         text        PRIMARY KEY,
    value        bigint      NOT NULL,
    migrated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Upgrades: what each version added to tables that an older version created. On a new schema
-- the tables above already have it, and these change nothing.

-- Version 2: the operator's note on a saga settled by hand (`idem resolve`).
ALTER TABLE idem_sagas ADD COLUMN IF NOT EXISTS note text;

-- Version 3: the action's TTL on each claim, so that claims whose owner died are purged.
ALTER TABLE idem_records ADD COLUMN IF NOT EXISTS ttl_ms bigint;

-- Version 4: a step's write leaves the saga's head alone and keeps its own time (a log was
-- last written at the latest of its head's and its steps' times).
ALTER TABLE idem_saga_steps ADD COLUMN IF NOT EXISTS updated_at timestamptz;

-- Last, once everything above is in place. The version only goes up: run on a schema of a
-- newer idem, this leaves its version alone (and a store of this idem refuses that schema).
INSERT INTO idem_meta (name, value) VALUES ('schema_version', 4)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, migrated_at = excluded.migrated_at
WHERE idem_meta.value < excluded.value;
