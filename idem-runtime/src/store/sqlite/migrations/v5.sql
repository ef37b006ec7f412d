-- Version 4 to 5: a step's write leaves the saga's head alone and keeps its own time, so
-- that it changes one row (the log was last written at the latest of its head's and its
-- steps' times). Steps written before keep NULL here: their writes moved the head's time.

ALTER TABLE idem_saga_steps ADD COLUMN updated_at_ms INTEGER;
