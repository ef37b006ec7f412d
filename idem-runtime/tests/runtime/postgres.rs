//! `PostgresStore` on a real server that the tests start themselves: the whole conformance
//! suite, and what connecting does to the schema.
//!
//! Every test runs on a schema of its own in the one server of the test process. Without
//! PostgreSQL installed, every test passes by skipping, with the reason printed (under
//! `CI=true` they fail instead).

use idem_runtime::store::SagaStore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_runtime::conformance::servers::PostgresServer;
use idem_runtime::conformance_tests;
use idem_runtime::store::{
    Claim, ClaimRequest, FirstStep, Ownership, PostgresStore, SagaWrite, Status, Store,
    StoredOutcome,
};
use idem_runtime::{Action, Error, Fingerprint, Key, OnStale};

/// A schema name no other test of this process uses.
fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn connect(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::builder(url)
        .schema(schema)
        .connect()
        .await
        .expect("connect to the test server")
}

/// A store on a new, empty schema; `None` when there is no PostgreSQL here (skipped).
async fn fresh_store() -> Option<PostgresStore> {
    let server = PostgresServer::shared()?;
    Some(connect(&server.url(), &unique_schema("conformance")).await)
}

conformance_tests!(
    #[cfg_attr(
        idem_no_postgres,
        ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    postgres,
    available = fresh_store(),
    reopen = |store: &PostgresStore| {
        // Another store on the same schema: its own pool, as another process would have.
        let url = PostgresServer::shared().expect("the server").url();
        let schema = store.schema().to_owned();
        async move { connect(&url, &schema).await }
    }
);

/// A store on `schema` whose claims always write first (`FirstStep::Write`): the suite above
/// runs mostly on claims that read first (a new handle does, until eight claims in a row find
/// no record), so the other way round runs the whole suite here.
async fn writing_first(schema: String) -> PostgresStore {
    PostgresStore::builder(PostgresServer::shared().expect("the server").url())
        .schema(schema)
        .first_step(FirstStep::Write)
        .connect()
        .await
        .expect("connect to the test server")
}

conformance_tests!(
    #[cfg_attr(
        idem_no_postgres,
        ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
    )]
    postgres_writing_first,
    available = async {
        PostgresServer::shared()?;
        Some(writing_first(unique_schema("writing_first")).await)
    },
    reopen = |store: &PostgresStore| writing_first(store.schema().to_owned())
);

/// A pool built as a user who brings their own would build it (deadpool-postgres's config).
fn own_pool(url: &str) -> deadpool_postgres::Pool {
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.to_owned());
    config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .expect("a pool")
}

/// A plain client, to look at the tables as an operator (or a foreign program) would.
async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a plain connection");
    tokio::spawn(connection);
    client
}

/// Sets the schema version recorded in `schema`, as an older or newer idem would have left it.
async fn set_schema_version(admin: &tokio_postgres::Client, schema: &str, version: i64) {
    admin
        .execute(
            &format!("UPDATE {schema}.idem_meta SET value = $1 WHERE name = 'schema_version'"),
            &[&version],
        )
        .await
        .expect("set the schema version");
}

/// The schema version recorded in `schema`.
async fn schema_version(admin: &tokio_postgres::Client, schema: &str) -> i64 {
    admin
        .query_one(
            &format!("SELECT value FROM {schema}.idem_meta WHERE name = 'schema_version'"),
            &[],
        )
        .await
        .expect("the schema version")
        .get(0)
}

/// The schema as shipped for teams that migrate themselves.
const SCHEMA_SQL: &str = include_str!("../../src/store/postgres/schema.sql");

/// A claim request of the test action for `key`, with a lease and TTL no test outlives.
pub(crate) fn request<'a>(key: &'a Key, fingerprint: &'a Fingerprint) -> ClaimRequest<'a> {
    ClaimRequest {
        key,
        fingerprint,
        action: "test",
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    }
}

/// `schema.sql` loads into a fresh schema of a real server (a syntax error in it fails here),
/// runs again without harm, and is all a store needs: one that connects without migrating
/// (`connect_existing`) claims, records and reads on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_schema_file_loads_into_a_fresh_schema() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("from_file");
    let admin = raw_client(&server.url()).await;
    let load =
        format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};\n{SCHEMA_SQL}");
    admin.batch_execute(&load).await.expect("schema.sql loads");
    admin
        .batch_execute(&load)
        .await
        .expect("schema.sql runs again");
    assert_eq!(schema_version(&admin, &schema).await, 4);

    let store = PostgresStore::builder(server.url())
        .schema(&schema)
        .connect_existing()
        .await
        .expect("the schema the file made is this idem's");
    let key = Action::new("send").key(&("file",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    let Claim::Acquired { token, .. } = store.claim(&request(&key, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    let recorded = store
        .complete(
            &key,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert_eq!(recorded, Ownership::Held);
    let record = store.get(&key).await.expect("get").expect("the record");
    assert_eq!(record.status, Status::Completed);
}

/// Connecting to a schema that is in place migrates nothing: the second store works with a
/// role that may not create anything, keeps the records (and the fencing sequence), and the
/// schema's version row is the one the first connect wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_second_connect_migrates_nothing_and_keeps_the_records() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("reconnect");
    let first = connect(&server.url(), &schema).await;
    let key = Action::new("send").key(&("ada",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    let Claim::Acquired { token, .. } = first.claim(&request(&key, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    let recorded = first
        .complete(
            &key,
            token,
            StoredOutcome::Ok(b"\"sent\"".to_vec()),
            Duration::from_secs(3600),
        )
        .await
        .expect("complete");
    assert_eq!(recorded, Ownership::Held);

    // A role that can use the tables but create nothing: if connecting ran any DDL, it
    // would fail.
    let admin = raw_client(&server.url()).await;
    let role = unique_schema("app");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};"
        ))
        .await
        .expect("a role with no CREATE privilege");
    let version_row = format!(
        "SELECT value, migrated_at::text, xmin::text FROM {schema}.idem_meta WHERE name = 'schema_version'"
    );
    let before = admin.query_one(&version_row, &[]).await.expect("version");

    let url = format!("postgres://{role}@127.0.0.1:{}/postgres", server.port());
    let second = connect(&url, &schema).await;
    let after = admin.query_one(&version_row, &[]).await.expect("version");
    assert_eq!(before.get::<_, i64>(0), 4, "the current schema version");
    for column in [1, 2] {
        assert_eq!(
            before.get::<_, String>(column),
            after.get::<_, String>(column),
            "the version row was not written again"
        );
    }

    let record = second.get(&key).await.expect("get").expect("the record");
    assert_eq!(record.status, Status::Completed);
    assert_eq!(
        record.outcome,
        Some(StoredOutcome::Ok(b"\"sent\"".to_vec()))
    );
    match second.claim(&request(&key, &fingerprint)).await.unwrap() {
        Claim::Completed { outcome, .. } => {
            assert_eq!(outcome, StoredOutcome::Ok(b"\"sent\"".to_vec()))
        }
        other => panic!("expected the recorded result, got {other:?}"),
    }
    let other = Action::new("send").key(&("grace",)).expect("key");
    let Claim::Acquired { token: next, .. } = second
        .claim(&request(&other, &Fingerprint::from(other)))
        .await
        .unwrap()
    else {
        panic!("a free key is acquired");
    };
    assert!(
        next > token,
        "the fencing sequence goes on: {next} after {token}"
    );
}

/// Stores that connect at the same moment to a schema that does not exist yet all succeed,
/// and share one set of tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn stores_connecting_at_once_to_a_new_schema_all_succeed() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = server.url();
    for _ in 0..3 {
        let schema = unique_schema("together");
        let connecting = (0..4).map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move {
                PostgresStore::builder(url)
                    .schema(schema)
                    .pool_size(2)
                    .connect()
                    .await
            })
        });
        let mut stores = Vec::new();
        for joined in connecting.collect::<Vec<_>>() {
            stores.push(
                joined
                    .await
                    .expect("the task")
                    .expect("every connect succeeds"),
            );
        }
        let key = Action::new("together")
            .key(&(schema.as_str(),))
            .expect("key");
        let fingerprint = Fingerprint::from(key);
        let mut acquired = 0;
        for store in &stores {
            if matches!(
                store.claim(&request(&key, &fingerprint)).await.unwrap(),
                Claim::Acquired { .. }
            ) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 1, "one set of tables, so one owner");
    }
}

/// A row that another program wrote (or a disk fault left) is an error naming its key, never
/// a panic; so is a saga log with an unknown status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_corrupt_row_is_an_error_naming_its_key() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("corrupt");
    let store = connect(&server.url(), &schema).await;
    let admin = raw_client(&server.url()).await;
    let (bad_status, bad_fingerprint, bad_outcome, bad_saga) = (
        Key::from_bytes([1; 32]),
        Key::from_bytes([2; 32]),
        Key::from_bytes([3; 32]),
        Key::from_bytes([4; 32]),
    );
    let insert = format!(
        "INSERT INTO {schema}.idem_records
           (key, action, status, token, fingerprint, outcome, result, created_at, expires_at)
         VALUES ($1, 'foreign', $2, 1, $3, $4, '\\x31', now(), 'infinity')"
    );
    for (key, status, fingerprint, outcome) in [
        (bad_status, "exploded", vec![0u8; 32], "ok"),
        (bad_fingerprint, "completed", vec![0u8; 5], "ok"),
        (bad_outcome, "completed", vec![0u8; 32], "maybe"),
    ] {
        admin
            .execute(
                &insert,
                &[&key.to_string(), &status, &fingerprint, &outcome],
            )
            .await
            .expect("a corrupt row");
        let fingerprint = Fingerprint::from(key);
        for result in [
            store.claim(&request(&key, &fingerprint)).await.map(|_| ()),
            store.get(&key).await.map(|_| ()),
        ] {
            match result {
                Err(error @ Error::Codec { .. }) => {
                    assert_eq!(error.key(), Some(&key));
                    assert!(error.to_string().contains(&key.to_string()), "{error}");
                }
                other => panic!("expected a codec error, got {other:?}"),
            }
        }
    }
    admin
        .execute(
            &format!(
                "INSERT INTO {schema}.idem_sagas (key, id, status, updated_at)
                 VALUES ($1, 'order-1', 'exploded', now())"
            ),
            &[&bad_saga.to_string()],
        )
        .await
        .expect("a corrupt saga log");
    match store.read_saga(&bad_saga).await {
        Err(error @ Error::Codec { .. }) => assert_eq!(error.key(), Some(&bad_saga)),
        other => panic!("expected a codec error, got {other:?}"),
    }
}

/// A version-2 schema (claims without the action's TTL) is migrated in place: its claims are
/// kept, and one whose owner died is not purged (its TTL is unknown), while the claims made
/// after the migration record theirs and are purged once their lease and TTL ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_version_2_schema_gets_the_claims_ttl() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("version_2");
    drop(connect(&server.url(), &schema).await);
    let admin = raw_client(&server.url()).await;
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.idem_records DROP COLUMN ttl_ms;
             INSERT INTO {schema}.idem_records
               (key, action, status, token, fingerprint, created_at, expires_at)
             VALUES (repeat('a', 64), 'old', 'in_progress', 1, decode(repeat('00', 32), 'hex'),
                     now() - interval '2 days', now() - interval '1 day');"
        ))
        .await
        .expect("a version-2 schema with a dead claim");
    set_schema_version(&admin, &schema, 2).await;

    let store = connect(&server.url(), &schema).await;
    assert_eq!(schema_version(&admin, &schema).await, 4, "migrated");
    let key = Action::new("send").key(&("ada",)).expect("key");
    let fingerprint = Fingerprint::from(key);
    let short = Duration::from_millis(100);
    let dying = ClaimRequest {
        lease: short,
        ttl: short,
        ..request(&key, &fingerprint)
    };
    assert!(matches!(
        store.claim(&dying).await.unwrap(),
        Claim::Acquired { .. }
    ));
    tokio::time::sleep(2 * short + Duration::from_millis(40)).await;
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(store.get(&key).await.expect("get"), None);
    let old = Key::from_bytes([0xaa; 32]);
    let kept = store.get(&old).await.expect("get").expect("the old claim");
    assert_eq!(kept.status, Status::InProgress);
}

/// A version-3 schema (a step's write moved the head's time; steps have none) is migrated in
/// place: its logs are kept and dated by their heads, and a step written after the migration
/// keeps its own time, dates the log, and leaves the head as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_version_3_schema_gets_each_steps_time() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("version_3");
    drop(connect(&server.url(), &schema).await);
    let admin = raw_client(&server.url()).await;
    let saga = Key::from_bytes([0xbb; 32]);
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.idem_saga_steps DROP COLUMN updated_at;
             INSERT INTO {schema}.idem_sagas (key, id, status, updated_at)
             VALUES ('{saga}', 'order-11', 'running', to_timestamp(1));
             INSERT INTO {schema}.idem_saga_steps
               (saga, idx, name, key, irreversible, args, state, output)
             VALUES ('{saga}', 0, 'reserve_seat', repeat('c', 64), false, '\\x5b5d', 'done',
                     '\\x31');"
        ))
        .await
        .expect("a version-3 schema with a saga log");
    set_schema_version(&admin, &schema, 3).await;
    let head_time = format!("SELECT updated_at::text FROM {schema}.idem_sagas");
    let head = admin.query_one(&head_time, &[]).await.expect("the head");

    let store = connect(&server.url(), &schema).await;
    assert_eq!(schema_version(&admin, &schema).await, 4, "migrated");
    let log = store.read_saga(&saga).await.expect("read").expect("kept");
    assert_eq!(log.steps.len(), 1);
    let epoch_plus_one = std::time::UNIX_EPOCH + Duration::from_secs(1);
    assert_eq!(log.updated_at, epoch_plus_one, "dated by its head");

    let fingerprint = Fingerprint::from(saga);
    let Claim::Acquired { token, .. } = store.claim(&request(&saga, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    let mut step = log.steps[0].clone();
    step.index = 1;
    let written = store
        .write_saga(&saga, "order-11", token, SagaWrite::Step(&step))
        .await;
    assert_eq!(written.expect("write_saga"), Ownership::Held);
    let after = admin.query_one(&head_time, &[]).await.expect("the head");
    assert_eq!(
        head.get::<_, String>(0),
        after.get::<_, String>(0),
        "a step's write leaves the head alone"
    );
    let log = store.read_saga(&saga).await.expect("read").expect("kept");
    assert_eq!(log.steps.len(), 2);
    assert!(
        log.updated_at > epoch_plus_one + Duration::from_secs(1_000_000),
        "dated by the new step: {:?}",
        log.updated_at
    );
}

/// A schema made by the previous version, as agents of the older idem find it when one of
/// this version connects and upgrades it; and a session to look at the server as an operator.
async fn a_previous_version_schema(
    server: &PostgresServer,
    prefix: &str,
) -> (String, tokio_postgres::Client) {
    let schema = unique_schema(prefix);
    drop(connect(&server.url(), &schema).await);
    let admin = raw_client(&server.url()).await;
    set_schema_version(&admin, &schema, 3).await;
    (schema, admin)
}

/// A session standing in for an agent of the older idem midway through a statement that
/// writes `table`: it holds what such a statement holds on it (`ROW EXCLUSIVE`) and goes on
/// to other tables in the same transaction, as the agents' statements do.
async fn an_older_agent_writing(url: &str, schema: &str, table: &str) -> tokio_postgres::Client {
    let agent = raw_client(url).await;
    agent
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".{table} IN ROW EXCLUSIVE MODE"
        ))
        .await
        .expect("the agent's lock");
    agent
}

/// Returns once `count` (a query of one count, on the server's views) counts something;
/// fails the test after `within`, saying `what` never came.
async fn until_counted(admin: &tokio_postgres::Client, count: &str, within: Duration, what: &str) {
    let deadline = std::time::Instant::now() + within;
    while admin
        .query_one(count, &[])
        .await
        .expect("the count")
        .get::<_, i64>(0)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Returns once a session waits for a lock on `table` of `schema` (as `pg_locks` shows).
async fn until_a_session_waits_for(admin: &tokio_postgres::Client, schema: &str, table: &str) {
    let waiting = format!(
        "SELECT count(*) FROM pg_locks
         WHERE NOT granted AND relation = to_regclass('\"{schema}\".{table}')"
    );
    let what = format!("no session waited for {table}");
    until_counted(admin, &waiting, Duration::from_secs(30), &what).await;
}

/// A store connecting to `schema`, which upgrades it, in a task of its own.
fn upgrading(url: &str, schema: &str) -> tokio::task::JoinHandle<Result<PostgresStore, Error>> {
    tokio::spawn(PostgresStore::builder(url).schema(schema).connect())
}

/// The end of an upgrade's test: the upgrade (which gave way meanwhile) finishes, and the
/// schema has this version.
async fn the_upgrade_finishes(
    upgrade: tokio::task::JoinHandle<Result<PostgresStore, Error>>,
    admin: &tokio_postgres::Client,
    schema: &str,
) {
    upgrade
        .await
        .expect("the upgrade's task")
        .expect("the upgrade finishes");
    assert_eq!(schema_version(admin, schema).await, 4, "migrated");
}

/// The end of a lock cycle's test: the agent's transaction commits, and the upgrade finishes.
async fn the_agent_commits_and_the_upgrade_finishes(
    agent: tokio_postgres::Client,
    upgrade: tokio::task::JoinHandle<Result<PostgresStore, Error>>,
    admin: &tokio_postgres::Client,
    schema: &str,
) {
    agent
        .batch_execute("COMMIT")
        .await
        .expect("the agent commits");
    the_upgrade_finishes(upgrade, admin, schema).await;
}

/// An upgrade that meets an older agent's statement in a lock cycle gives way to it: the
/// agent's statement is not the deadlock's victim, and the upgrade finishes once it is done.
/// Here the agent began waiting first (for `idem_sagas`, which the upgrade had changed) and
/// the upgrade then waits for `idem_saga_steps`, which the agent holds: PostgreSQL's deadlock
/// check runs first in the session that waited first, and cancelled the agent's statement
/// before the upgrade gave way (before `8171f51`). (The steps below take longer than the
/// upgrade's short lock wait at times; it then gives way to the reader before the cycle
/// forms, and the agent's statement must go through all the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_upgrade_in_a_lock_cycle_gives_way_to_an_older_agent() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (schema, admin) = a_previous_version_schema(server, "upgrade_gives_way").await;
    // A reader of the records table stops the upgrade after it has changed `idem_sagas`.
    let reader = raw_client(&server.url()).await;
    reader
        .batch_execute(&format!(
            "BEGIN; SELECT count(*) FROM \"{schema}\".idem_records"
        ))
        .await
        .expect("the reader");
    let agent = an_older_agent_writing(&server.url(), &schema, "idem_saga_steps").await;
    let upgrade = upgrading(&server.url(), &schema);
    until_a_session_waits_for(&admin, &schema, "idem_records").await;
    let sagas = format!("SELECT count(*) FROM \"{schema}\".idem_sagas");
    let agents_read =
        tokio::spawn(async move { agent.batch_execute(&sagas).await.map(|()| agent) });
    until_a_session_waits_for(&admin, &schema, "idem_sagas").await;
    reader
        .batch_execute("COMMIT")
        .await
        .expect("the reader ends");

    let agent = agents_read
        .await
        .expect("the agent's task")
        .expect("the agent's statement is not cancelled");
    the_agent_commits_and_the_upgrade_finishes(agent, upgrade, &admin, &schema).await;
}

/// The other way round: the upgrade waits first (for `idem_saga_steps`, held by an older
/// agent) and the agent then waits for a table the upgrade has changed. The upgrade gives way
/// and tries again, instead of failing the connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_upgrade_in_a_lock_cycle_tries_again() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (schema, admin) = a_previous_version_schema(server, "upgrade_tries_again").await;
    let agent = an_older_agent_writing(&server.url(), &schema, "idem_saga_steps").await;
    let upgrade = upgrading(&server.url(), &schema);
    until_a_session_waits_for(&admin, &schema, "idem_saga_steps").await;
    agent
        .batch_execute(&format!("SELECT count(*) FROM \"{schema}\".idem_sagas"))
        .await
        .expect("the agent's statement is not cancelled");
    the_agent_commits_and_the_upgrade_finishes(agent, upgrade, &admin, &schema).await;
}

/// While the upgrade waits for a vacuum of a table (here a session holding the lock a vacuum
/// holds), agents of the older idem write and read that table without waiting: the upgrade
/// waits in a lock mode no agent's statement conflicts with, so none queues behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn agents_write_while_the_upgrade_waits_for_a_vacuum() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (schema, admin) = a_previous_version_schema(server, "upgrade_behind_vacuum").await;
    let vacuum = raw_client(&server.url()).await;
    vacuum
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".idem_records IN SHARE UPDATE EXCLUSIVE MODE"
        ))
        .await
        .expect("a vacuum's lock");
    let upgrade = upgrading(&server.url(), &schema);
    until_a_session_waits_for(&admin, &schema, "idem_records").await;
    // The upgrade's wait, to show that the agent's statements ran during this same wait.
    let waiting_since = format!(
        "SELECT waitstart::text FROM pg_locks
         WHERE NOT granted AND relation = '\"{schema}\".idem_records'::regclass"
    );
    let before: String = admin
        .query_one(&waiting_since, &[])
        .await
        .expect("the upgrade's wait")
        .get(0);
    let agent = raw_client(&server.url()).await;
    agent
        .batch_execute(&format!(
            "SET lock_timeout = '200ms';
             INSERT INTO \"{schema}\".idem_records
               (key, action, status, token, fingerprint, created_at, expires_at)
             VALUES (repeat('d', 64), 'old', 'in_progress', 1, decode(repeat('00', 32), 'hex'),
                     now(), now() + interval '1 hour');
             SELECT 1 FROM \"{schema}\".idem_records WHERE key = repeat('d', 64) FOR SHARE;
             UPDATE \"{schema}\".idem_records SET status = 'completed'
             WHERE key = repeat('d', 64);"
        ))
        .await
        .expect("an agent's statements wait for no lock");
    let after = admin
        .query_opt(&waiting_since, &[])
        .await
        .expect("pg_locks");
    assert_eq!(
        after.map(|row| row.get::<_, String>(0)),
        Some(before),
        "the agent's statements ran while the upgrade waited"
    );
    vacuum
        .batch_execute("COMMIT")
        .await
        .expect("the vacuum ends");
    the_upgrade_finishes(upgrade, &admin, &schema).await;
}

/// An autovacuum of a table the upgrade needs does not hold it up: the upgrade waits for
/// it long enough that PostgreSQL cancels it, also when the store's role may not see what
/// other sessions are, and when its statement timeout is shorter than that wait. (A server
/// of the test's own, whose autovacuum wakes every second and vacuums the records table
/// slowly; the store connects as a role that is not a superuser.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_upgrade_is_not_held_up_by_an_autovacuum() {
    let Some(server) = PostgresServer::primary() else {
        return;
    };
    for statement in [
        "ALTER SYSTEM SET autovacuum_naptime = 1",
        "ALTER SYSTEM SET lc_messages = 'C'",
        "SELECT pg_reload_conf()",
        "CREATE ROLE agents LOGIN",
        "GRANT CREATE ON DATABASE postgres TO agents",
    ] {
        server.sql(statement).expect("a quick autovacuum, a role");
    }
    let url = server.url().replacen("postgres@", "agents@", 1);
    let schema = unique_schema("upgrade_autovacuum");
    drop(connect(&url, &schema).await);
    let admin = raw_client(&server.url()).await;
    set_schema_version(&admin, &schema, 3).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.idem_records
               (key, action, status, token, fingerprint, created_at, expires_at)
             SELECT md5(i::text) || md5(i::text), 'old', 'completed', i,
                    decode(repeat('00', 32), 'hex'), now(), now()
             FROM generate_series(1, 50000) i;
             DELETE FROM {schema}.idem_records;
             ALTER TABLE {schema}.idem_records SET (autovacuum_vacuum_threshold = 0,
               autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,
               autovacuum_vacuum_cost_limit = 1);"
        ))
        .await
        .expect("dead rows for a slow autovacuum");
    // Its lock, not only its activity: a worker that has not yet locked the table skips it
    // once the upgrade holds it, and there would be nothing to cancel.
    let vacuuming = format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE a.backend_type = 'autovacuum worker' AND l.granted
           AND l.relation = '{schema}.idem_records'::regclass"
    );
    until_counted(
        &admin,
        &vacuuming,
        Duration::from_secs(120),
        "no autovacuum started",
    )
    .await;

    // Two stores at once, one upgrading, the other waiting for it; with a statement timeout
    // shorter than `deadlock_timeout` (1 s), after which PostgreSQL cancels the autovacuum.
    let upgrade = || {
        PostgresStore::builder(&url)
            .schema(&schema)
            .statement_timeout(Duration::from_millis(800))
            .connect()
    };
    let both = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(upgrade(), upgrade())
    })
    .await
    .expect("the upgrade is not held up for the autovacuum's whole run");
    both.0.expect("a store connects");
    both.1.expect("the other store connects");
    assert_eq!(schema_version(&admin, &schema).await, 4, "migrated");
    let log = std::fs::read_to_string(server.folder().join("server.log")).expect("the log");
    assert!(
        log.contains("canceling autovacuum task")
            && log.contains(&format!(
                "automatic vacuum of table \"postgres.{schema}.idem_records\""
            )),
        "the autovacuum was cancelled:\n{log}"
    );
}

/// A schema of an older version with a table dropped by hand gets it back from the upgrade
/// (`schema.sql` makes every missing table), as before the upgrade waited for vacuums.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn an_upgrade_makes_a_table_dropped_by_hand_again() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (schema, admin) = a_previous_version_schema(server, "upgrade_dropped").await;
    admin
        .batch_execute(&format!("DROP TABLE \"{schema}\".idem_saga_steps"))
        .await
        .expect("a table dropped by hand");

    drop(connect(&server.url(), &schema).await);
    assert_eq!(schema_version(&admin, &schema).await, 4, "migrated");
    let steps = admin
        .query_one(
            "SELECT to_regclass($1::text) IS NOT NULL",
            &[&format!("\"{schema}\".idem_saga_steps")],
        )
        .await
        .expect("to_regclass");
    assert!(steps.get::<_, bool>(0), "the steps table is there again");
}

/// A schema made by a newer idem is refused, not written to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_schema_from_a_newer_idem_is_refused() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("newer");
    drop(connect(&server.url(), &schema).await);
    let admin = raw_client(&server.url()).await;
    set_schema_version(&admin, &schema, 99).await;
    let refused = PostgresStore::builder(server.url())
        .schema(&schema)
        .connect()
        .await
        .expect_err("a newer schema is refused");
    assert!(refused.to_string().contains("newer idem"), "{refused}");
}

/// An operator's look (`connect_existing`, `store::open_existing`) changes nothing: a
/// mistyped schema is an error, not a new empty schema; an older schema is not migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn connecting_to_an_existing_schema_changes_nothing() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let admin = raw_client(&server.url()).await;
    let schema_exists = |schema: String| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
                    &[&schema],
                )
                .await
                .expect("schemata")
                .get::<_, i64>(0)
                == 1
        }
    };
    let typo = unique_schema("typo");
    let refused = PostgresStore::builder(server.url())
        .schema(&typo)
        .connect_existing()
        .await
        .expect_err("no such schema");
    assert!(refused.to_string().contains("no idem schema"), "{refused}");
    assert!(!schema_exists(typo.clone()).await, "nothing was created");
    let by_url = idem_runtime::store::open_existing(&format!("{}?schema={typo}", server.url()))
        .await
        .expect_err("no such schema");
    assert!(by_url.to_string().contains("no idem schema"), "{by_url}");

    let schema = unique_schema("existing");
    drop(connect(&server.url(), &schema).await);
    let store = idem_runtime::store::open_existing(&format!("{}?schema={schema}", server.url()))
        .await
        .expect("the schema as it is");
    assert_eq!(store.name(), "postgres");
    set_schema_version(&admin, &schema, 1).await;
    let refused = PostgresStore::builder(server.url())
        .schema(&schema)
        .connect_existing()
        .await
        .expect_err("an older schema");
    assert!(refused.to_string().contains("older idem"), "{refused}");
    assert_eq!(schema_version(&admin, &schema).await, 1, "not migrated");
    set_schema_version(&admin, &schema, 99).await;
    let refused = PostgresStore::builder(server.url())
        .schema(&schema)
        .connect_existing()
        .await
        .expect_err("a newer schema");
    assert!(refused.to_string().contains("newer idem"), "{refused}");
}

/// A purge removes every expired result however many there are (it deletes them in
/// batches), with the logs of the sagas they ended, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn purge_removes_a_large_backlog_in_batches() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("backlog");
    let store = connect(&server.url(), &schema).await;
    let admin = raw_client(&server.url()).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.idem_records
               (key, action, status, token, fingerprint, outcome, result, created_at, expires_at)
             SELECT lpad(to_hex(n), 64, '0'), 'old', 'completed', n, decode(repeat('00', 32), 'hex'),
                    'ok', '\\x31', now() - interval '2 days', now() - interval '1 day'
             FROM generate_series(1, 2500) AS n;
             INSERT INTO {schema}.idem_sagas (key, id, status, updated_at)
             SELECT lpad(to_hex(n), 64, '0'), 'saga-' || n, 'completed', now()
             FROM generate_series(1, 2500, 2) AS n;
             INSERT INTO {schema}.idem_saga_steps
               (saga, idx, name, key, irreversible, args, state)
             SELECT lpad(to_hex(n), 64, '0'), 0, 'step', lpad(to_hex(n), 64, '0'), false, '\\x5b5d', 'done'
             FROM generate_series(1, 2500, 2) AS n;"
        ))
        .await
        .expect("a backlog of expired results");
    let live = Action::new("live").key(&("kept",)).expect("key");
    let fingerprint = Fingerprint::from(live);
    let Claim::Acquired { token, .. } = store.claim(&request(&live, &fingerprint)).await.unwrap()
    else {
        panic!("a free key is acquired");
    };
    let kept = store
        .complete(
            &live,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(3600),
        )
        .await
        .expect("complete");
    assert_eq!(kept, Ownership::Held);

    assert_eq!(store.purge_expired().await.expect("purge"), 2500);
    let left: i64 = admin
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {schema}.idem_records)
                      + (SELECT count(*) FROM {schema}.idem_sagas)
                      + (SELECT count(*) FROM {schema}.idem_saga_steps)"
            ),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 1, "only the live result is left");
    assert!(store.get(&live).await.expect("get").is_some());
    assert_eq!(store.purge_expired().await.expect("purge"), 0);
}

/// A store on a pool built by the application (for TLS, or its own settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_store_on_a_pool_of_your_own() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let pool = own_pool(&server.url());
    let store = PostgresStore::with_pool(pool)
        .schema(unique_schema("own_pool"))
        .connect()
        .await
        .expect("connect on the pool");
    let key = Action::new("pooled").key(&(1,)).expect("key");
    let fingerprint = Fingerprint::from(key);
    assert!(matches!(
        store.claim(&request(&key, &fingerprint)).await.unwrap(),
        Claim::Acquired { .. }
    ));
}

/// A store error says what the server said, not only that there was one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn errors_say_what_the_server_said() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/no_such_db", server.port());
    let error = PostgresStore::connect(url)
        .await
        .expect_err("no such database");
    assert!(
        matches!(
            error,
            Error::Store {
                store: "postgres",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("\"no_such_db\" does not exist"),
        "{error}"
    );

    let schema = unique_schema("dropped");
    let store = connect(&server.url(), &schema).await;
    raw_client(&server.url())
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the schema");
    let key = Action::new("lost").key(&(1,)).expect("key");
    let error = store
        .claim(&request(&key, &Fingerprint::from(key)))
        .await
        .expect_err("no tables");
    assert_eq!(error.key(), Some(&key));
    assert!(error.to_string().contains("does not exist"), "{error}");
}

/// `store::open` with a `postgres://` URL and a schema reaches the same records as a store
/// made by hand on that schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_postgres_url_opens_the_store_on_its_schema() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("url");
    let opened = idem_runtime::store::open(&format!("{}?schema={schema}", server.url()))
        .await
        .expect("open the URL");
    assert_eq!(opened.name(), "postgres");
    let by_hand = connect(&server.url(), &schema).await;
    idem_runtime::conformance::races_across_two_handles(&*opened, &by_hand).await;
}

/// Holds `schema`'s records table locked (another session's `LOCK TABLE … ACCESS
/// EXCLUSIVE`, in an open transaction) until the returned client rolls back.
async fn lock_records(url: &str, schema: &str) -> tokio_postgres::Client {
    let holder = raw_client(url).await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".idem_records IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .expect("lock the records table");
    holder
}

/// A statement stuck behind a lock fails its call once the statement timeout has passed (the
/// server cancels it), instead of holding the caller forever; nothing was claimed, and once
/// the lock is gone the store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn a_stuck_statement_fails_its_call_after_the_statement_timeout() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let schema = unique_schema("stuck");
    // Also the bound of `connect`'s schema statements and of the calls after the lock:
    // room for a loaded machine.
    let store = PostgresStore::builder(server.url())
        .schema(&schema)
        .statement_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");
    let key = Action::new("stuck").key(&(1,)).expect("key");
    let fingerprint = Fingerprint::from(key);

    let holder = lock_records(&server.url(), &schema).await;
    let stuck = tokio::time::timeout(
        Duration::from_secs(60),
        store.claim(&request(&key, &fingerprint)),
    )
    .await
    .expect("the call ends by itself");
    let error = stuck.expect_err("the claim cannot run while the table is locked");
    assert!(matches!(error, Error::Store { .. }), "{error}");
    assert!(error.to_string().contains("statement timeout"), "{error}");
    holder.batch_execute("ROLLBACK").await.expect("unlock");

    assert_eq!(
        store.get(&key).await.expect("get"),
        None,
        "nothing was claimed"
    );
    assert!(matches!(
        store
            .claim(&request(&key, &fingerprint))
            .await
            .expect("claim"),
        Claim::Acquired { .. }
    ));
}

/// On a pool of your own the server's timeout is yours to set; the store's own wait still
/// ends a stuck call (5 s after its statement timeout), and closes the connection rather
/// than giving it back to the pool behind the stuck statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn the_stores_own_wait_ends_a_stuck_call_on_a_pool_of_your_own() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let pool = own_pool(&server.url());
    let schema = unique_schema("stuck_own_pool");
    let store = PostgresStore::with_pool(pool.clone())
        .schema(&schema)
        .statement_timeout(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect on the pool");
    let key = Action::new("stuck_own_pool").key(&(1,)).expect("key");
    let fingerprint = Fingerprint::from(key);

    // The connection that set up the schema waits in the pool: the claim takes it.
    let connections = pool.status().size;
    assert!(connections >= 1, "{:?}", pool.status());
    let holder = lock_records(&server.url(), &schema).await;
    let stuck = tokio::time::timeout(
        Duration::from_secs(60),
        store.claim(&request(&key, &fingerprint)),
    )
    .await
    .expect("the call ends by itself");
    let error = stuck.expect_err("the claim cannot run while the table is locked");
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert_eq!(
        pool.status().size,
        connections - 1,
        "the stuck connection is closed, not given back to the pool"
    );
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(matches!(
        store
            .claim(&request(&key, &fingerprint))
            .await
            .expect("claim"),
        Claim::Acquired { .. }
    ));
    assert!(
        pool.status().size <= connections + 1,
        "the stuck connection was not given back to the pool"
    );
}
