-- Version 2 to 3: the operator's note on a saga settled by hand (`idem resolve`).

ALTER TABLE idem_sagas ADD COLUMN note TEXT;
