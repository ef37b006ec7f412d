//! PostgresStore on a real server: the whole conformance suite (written by the postgres work).
