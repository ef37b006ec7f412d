-- What one saga step write costs PostgreSQL beside the raw write of the step's row: the WAL
-- it makes and its time, 2,000 writes (1,000 steps, an intent and an outcome each), each its
-- own transaction, as the store and the raw log of the peers benchmark make them.
--
--   psql "$URL" -X -q -f benches/saga_step_wal.sql
--
-- on a scratch database (it makes and drops the schema `saga_step_wal`). The writes are the
-- store's step write (`saga_step` in `idem-runtime/src/store/postgres/statements.rs`), the one
-- it replaced, and a variant that leaves a part out, to say what each part costs:
--
--   idem       the store's write since schema version 4: the claim's check under FOR SHARE
--              (the fence), the saga's head made if it has none (here it has: nothing is
--              written), the step's row with its own time;
--   version_3  the write of schema version 3, which also wrote the head's `updated_at`;
--   no_lock    the check without FOR SHARE, and without the head (not a fence: a measure);
--   raw        the step's row alone (`INSERT … ON CONFLICT DO UPDATE`).
--
-- Each write is static SQL in a procedure that commits after each one (PostgreSQL 11 or
-- later), so its plan is made once, as a prepared statement's is. WAL: the difference of
-- `pg_current_wal_lsn()` around the 2,000 writes, after a CHECKPOINT, per write.

\set ON_ERROR_STOP 1
SET client_min_messages TO warning;
DROP SCHEMA IF EXISTS saga_step_wal CASCADE;
CREATE SCHEMA saga_step_wal;
SET search_path TO saga_step_wal;
\ir ../idem-runtime/src/store/postgres/schema.sql
CREATE TABLE raw_steps (LIKE idem_saga_steps INCLUDING ALL);

-- 1,000 sagas, each claimed under token 7, each with its head (its status write made it).
INSERT INTO idem_records (key, action, status, token, fingerprint, created_at, expires_at, ttl_ms)
SELECT lpad(to_hex(g), 64, '0'), 'saga', 'in_progress', 7, '\x00'::bytea, now(),
       now() + interval '1 hour', 60000
FROM generate_series(1, 1000) g;
INSERT INTO idem_sagas (key, id, status, updated_at)
SELECT key, 'order', 'running', now() FROM idem_records;

CREATE TABLE results (what text, us_per_write numeric, wal_bytes_per_write numeric);

CREATE PROCEDURE write_steps(kind text) LANGUAGE plpgsql AS $$
DECLARE
  the_saga text;
  the_state text;
  the_output bytea;
  started timestamptz := clock_timestamp();
  lsn pg_lsn := pg_current_wal_lsn();
BEGIN
  FOR i IN 1..1000 LOOP
    the_saga := lpad(to_hex(i), 64, '0');
    FOREACH the_state IN ARRAY ARRAY['started', 'done'] LOOP
      the_output := CASE WHEN the_state = 'done' THEN '\x22612d312f736561742d3722'::bytea END;
      IF kind = 'idem' THEN
        WITH held AS (
          SELECT key FROM idem_records
          WHERE key = the_saga AND token = 7 AND status = 'in_progress'
          FOR SHARE
        ), head AS (
          INSERT INTO idem_sagas (key, id, status, error, updated_at)
          SELECT key, 'order', 'running', NULL, clock_timestamp() FROM held
          ON CONFLICT (key) DO NOTHING
        )
        INSERT INTO idem_saga_steps AS t
          (saga, idx, name, key, irreversible, args, state, output, error, updated_at)
        SELECT key, 0, 'reserve_seat', the_saga, false, '\x5b5d'::bytea, the_state, the_output,
               NULL, clock_timestamp()
        FROM held
        ON CONFLICT (saga, idx) DO UPDATE SET
          name = excluded.name, key = excluded.key, irreversible = excluded.irreversible,
          args = excluded.args, state = excluded.state, output = excluded.output,
          error = excluded.error, updated_at = excluded.updated_at;
      ELSIF kind = 'version_3' THEN
        WITH held AS (
          SELECT key FROM idem_records
          WHERE key = the_saga AND token = 7 AND status = 'in_progress'
          FOR SHARE
        ), head AS (
          INSERT INTO idem_sagas AS g (key, id, status, error, updated_at)
          SELECT key, 'order', 'running', NULL, clock_timestamp() FROM held
          ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at
          RETURNING g.key
        )
        INSERT INTO idem_saga_steps AS t
          (saga, idx, name, key, irreversible, args, state, output, error)
        SELECT key, 0, 'reserve_seat', the_saga, false, '\x5b5d'::bytea, the_state, the_output, NULL
        FROM head
        ON CONFLICT (saga, idx) DO UPDATE SET
          name = excluded.name, key = excluded.key, irreversible = excluded.irreversible,
          args = excluded.args, state = excluded.state, output = excluded.output,
          error = excluded.error;
      ELSIF kind = 'no_lock' THEN
        WITH held AS (
          SELECT key FROM idem_records
          WHERE key = the_saga AND token = 7 AND status = 'in_progress'
        )
        INSERT INTO idem_saga_steps AS t
          (saga, idx, name, key, irreversible, args, state, output, error)
        SELECT key, 0, 'reserve_seat', the_saga, false, '\x5b5d'::bytea, the_state, the_output, NULL
        FROM held
        ON CONFLICT (saga, idx) DO UPDATE SET
          name = excluded.name, key = excluded.key, irreversible = excluded.irreversible,
          args = excluded.args, state = excluded.state, output = excluded.output,
          error = excluded.error;
      ELSE
        INSERT INTO raw_steps (saga, idx, name, key, irreversible, args, state, output)
        VALUES (the_saga, 0, 'reserve_seat', the_saga, false, '\x5b5d'::bytea, the_state, the_output)
        ON CONFLICT (saga, idx) DO UPDATE SET state = EXCLUDED.state, output = EXCLUDED.output;
      END IF;
      COMMIT;
    END LOOP;
  END LOOP;
  INSERT INTO results VALUES (
    kind,
    round(extract(epoch FROM clock_timestamp() - started) * 1e6 / 2000),
    round(pg_wal_lsn_diff(pg_current_wal_lsn(), lsn) / 2000.0));
  COMMIT;
END $$;

-- Each kind on empty step tables, after a checkpoint (so each pays the same first writes of
-- whole pages); twice, alternating, the second round after the first.
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('raw');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('idem');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('version_3');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('no_lock');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('raw');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('idem');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('version_3');
TRUNCATE idem_saga_steps, raw_steps; CHECKPOINT; CALL write_steps('no_lock');

SELECT what, string_agg(us_per_write::text, ' / ') AS "µs per write (two rounds)",
       string_agg(wal_bytes_per_write::text, ' / ') AS "WAL bytes per write"
FROM results GROUP BY what ORDER BY min(wal_bytes_per_write) DESC, what;
DROP SCHEMA saga_step_wal CASCADE;
