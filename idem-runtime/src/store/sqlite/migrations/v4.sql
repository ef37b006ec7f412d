-- Version 3 to 4: the action's TTL on each claim, so that a claim whose owner died is purged
-- once its lease and that TTL ran out. Claims of older files keep NULL here: their TTL is
-- unknown, so a purge leaves them to be resumed, as version 3 did.

ALTER TABLE idem_records ADD COLUMN ttl_ms INTEGER;
