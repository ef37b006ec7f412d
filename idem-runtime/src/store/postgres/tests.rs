//! What connecting does to the schema: upgrades in place, and the schema file run again.

use tokio_postgres::NoTls;

use super::migrate::SCHEMA_SQL;
use super::{PostgresStore, SCHEMA_VERSION};
use crate::conformance::servers::PostgresServer;
use crate::key::Key;
use crate::store::{Inspect, SagaStatus, SagaStore};

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a plain connection");
    tokio::spawn(connection);
    client
}

async fn version_of(admin: &tokio_postgres::Client, schema: &str) -> i64 {
    admin
        .query_one(
            &format!("SELECT value FROM {schema}.idem_meta WHERE name = 'schema_version'"),
            &[],
        )
        .await
        .expect("the version row")
        .get(0)
}

/// A schema of version 1 (before `idem_sagas.note`) is upgraded in place by the next
/// store that connects: a saga that needed attention then is kept, and can be resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_version_1_schema_is_upgraded_in_place() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = "upgraded_from_1";
    let admin = admin(&server.url()).await;
    let saga = Key::from_bytes([7; 32]);
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema};
             {SCHEMA_SQL}
             ALTER TABLE idem_sagas DROP COLUMN note;
             UPDATE idem_meta SET value = 1;
             INSERT INTO idem_sagas (key, id, status, error, updated_at)
             VALUES ('{saga}', 'order-1', 'needs_attention', 'refund failed', now());"
        ))
        .await
        .expect("a schema of version 1");

    let store = PostgresStore::builder(server.url())
        .schema(schema)
        .connect()
        .await
        .expect("connect and upgrade");
    assert_eq!(version_of(&admin, schema).await, SCHEMA_VERSION);
    assert!(store
        .resolve_saga(&saga, "refunded by hand")
        .await
        .expect("resolve"));
    let log = store
        .read_saga(&saga)
        .await
        .expect("read")
        .expect("the log");
    assert_eq!(log.status, SagaStatus::Resolved);
    assert_eq!(log.note.as_deref(), Some("refunded by hand"));
    assert_eq!(log.error.as_deref(), Some("refund failed"));
}

/// `schema.sql` can be run again, as teams that migrate themselves may: on a schema in
/// place it changes nothing, and it never lowers the version of one a newer idem made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_schema_file_runs_again_and_never_lowers_the_version() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = "run_again";
    drop(
        PostgresStore::builder(server.url())
            .schema(schema)
            .connect()
            .await
            .expect("connect"),
    );
    let admin = admin(&server.url()).await;
    let run_again = format!("SET search_path TO {schema};\n{SCHEMA_SQL}");
    admin.batch_execute(&run_again).await.expect("run again");
    assert_eq!(version_of(&admin, schema).await, SCHEMA_VERSION);
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.idem_meta SET value = 99 WHERE name = 'schema_version'"
        ))
        .await
        .expect("a newer version");
    admin.batch_execute(&run_again).await.expect("run again");
    assert_eq!(version_of(&admin, schema).await, 99);
}

/// An upgrade that keeps giving way fails once its runs are spent, with an error that says
/// what it waited for and names the session in the way (here an operator's reader holding
/// the steps table in an open transaction, which PostgreSQL never cancels for it). The
/// connection's own timeouts are as they were after each run, failed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_upgrade_that_keeps_giving_way_names_who_holds_the_tables() {
    use super::migrate::{migrate, Retries};

    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = "gives_up";
    drop(
        PostgresStore::builder(server.url())
            .schema(schema)
            .connect()
            .await
            .expect("connect"),
    );
    let admin = admin(&server.url()).await;
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.idem_meta SET value = 3 WHERE name = 'schema_version'"
        ))
        .await
        .expect("an older version");
    let reader = self::admin(&server.url()).await;
    reader
        .batch_execute(&format!(
            "SET application_name = 'report'; BEGIN;
             LOCK TABLE {schema}.idem_saga_steps IN ACCESS SHARE MODE"
        ))
        .await
        .expect("a reader in a long transaction");
    // One connection, whose settings are looked at after each upgrade.
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(format!(
        "{}?options=-c%20statement_timeout%3D800",
        server.url()
    ));
    config.pool = Some(deadpool_postgres::PoolConfig::new(1));
    let pool = config
        .create_pool(Some(deadpool_postgres::Runtime::Tokio1), NoTls)
        .expect("a pool");
    let timeouts = || async {
        let connection = pool.get().await.expect("the connection");
        let mut shown = Vec::new();
        for name in ["statement_timeout", "lock_timeout"] {
            let row = connection
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect("SHOW");
            shown.push(row.get::<_, String>(0));
        }
        shown
    };
    let as_set = ["800ms", "0"];
    assert_eq!(timeouts().await, as_set);
    let twice = Retries {
        runs: 2,
        pause: std::time::Duration::ZERO,
    };

    let error = migrate(&pool, schema, twice)
        .await
        .expect_err("the upgrade cannot take the steps table")
        .to_string();
    for said in [
        "stayed locked for 2 runs",
        "waiting for a lock on its tables",
        "lock timeout",
        "application \"report\"",
        "AccessShareLock",
        "docs/postgres.md",
    ] {
        assert!(error.contains(said), "{said:?} is not in: {error}");
    }
    assert_eq!(version_of(&admin, schema).await, 3, "nothing was changed");
    assert_eq!(timeouts().await, as_set, "after runs that gave way");
    reader
        .batch_execute("ROLLBACK")
        .await
        .expect("the reader ends");
    migrate(&pool, schema, twice).await.expect("the upgrade");
    assert_eq!(version_of(&admin, schema).await, SCHEMA_VERSION);
    assert_eq!(timeouts().await, as_set, "after the upgrade");
}
