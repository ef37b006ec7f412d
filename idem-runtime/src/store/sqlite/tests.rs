//! The SQLite store's own tests: corrupt rows, files of older and newer versions, purges.

use crate::store::{Inspect, SagaStore};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection};

use super::inspect::list_records_sql;
use super::open::{MIGRATIONS, SCHEMA};
use super::records::{claim, OwnedClaim};
use super::{SqliteStore, PURGE_BATCH, SCHEMA_VERSION};
use crate::key::{Fingerprint, Key};
use crate::store::OnStale;
use crate::store::{
    Claim, Ownership, RecordKind, RecordQuery, SagaStatus, SagaWrite, Status, Store, StoredOutcome,
};
use crate::Error;

/// The first schema, where the chain of [`MIGRATIONS`] starts.
const VERSION_1: &str = include_str!("migrations/v1.sql");

/// Makes `connection`'s database what idem of `version` left: the first schema, the
/// migrations up to `version`, 41 fencing tokens handed out.
fn made_by_version(connection: &Connection, version: i64) {
    connection.execute_batch(VERSION_1).expect("v1.sql");
    for (to, migration) in MIGRATIONS {
        if to <= version {
            connection
                .execute_batch(migration)
                .unwrap_or_else(|e| panic!("v{to}.sql: {e}"));
        }
    }
    connection
        .execute_batch("UPDATE idem_meta SET value = 41 WHERE name = 'fencing_token'")
        .expect("the fencing counter");
    connection
        .pragma_update(None, "user_version", version)
        .expect("the version");
}

/// The tables and indexes of `connection`'s database, each column as SQLite reports it (name,
/// type, not null, default, primary key), comments aside.
fn shape(connection: &Connection) -> Vec<String> {
    let mut statement = connection
        .prepare(
            "SELECT m.type, m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk
             FROM sqlite_schema AS m LEFT JOIN pragma_table_info(m.name) AS p
             WHERE m.name LIKE 'idem%' ORDER BY m.type, m.name, p.cid",
        )
        .expect("the schema");
    statement
        .query_map([], |row| {
            Ok(format!(
                "{} {} {:?} {:?} {:?} {:?} {:?}",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<bool>>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<i64>>(6)?,
            ))
        })
        .expect("the schema")
        .collect::<rusqlite::Result<_>>()
        .expect("the schema")
}

/// Every SQL file of the store runs in a real SQLite (a syntax error fails here, not in a
/// user's upgrade): `schema.sql` makes a new database, runs again without harm, and the
/// migrations, run in order from the first schema, make the same tables, columns and indexes.
#[test]
fn every_sql_file_loads_and_the_migrations_lead_to_the_schema() {
    let versions: Vec<i64> = MIGRATIONS.iter().map(|(to, _)| *to).collect();
    assert_eq!(
        versions,
        (2..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "one migration for each version after the first, in order"
    );
    let fresh = Connection::open_in_memory().expect("a database");
    fresh.execute_batch(SCHEMA).expect("schema.sql");
    fresh.execute_batch(SCHEMA).expect("schema.sql, run again");

    let migrated = Connection::open_in_memory().expect("a database");
    made_by_version(&migrated, SCHEMA_VERSION);
    assert_eq!(shape(&migrated), shape(&fresh));
    migrated
        .execute_batch(SCHEMA)
        .expect("schema.sql after the migrations");
    assert_eq!(shape(&migrated), shape(&fresh));
}

fn temp_file(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("idem-sqlite-unit-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let file = folder.join(name);
    let _ = std::fs::remove_file(&file);
    file
}

/// Makes `path` a file of `version` holding one saga log as that version wrote it: the saga's
/// key and the SQL values of its head's id, status, error and `updated_at_ms`; its step 0's
/// key and the SQL values of its name, irreversible, args, state, output and error.
fn file_with_a_saga(path: &Path, version: i64, saga: (&Key, &str), step: (&Key, &str)) {
    let ((saga, head), (step_key, step)) = (saga, step);
    let connection = Connection::open(path).expect("open");
    made_by_version(&connection, version);
    connection
        .execute(
            &format!(
                "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms) VALUES (?1, {head})"
            ),
            [saga.to_string()],
        )
        .expect("a saga log");
    connection
        .execute(
            &format!(
                "INSERT INTO idem_saga_steps
                   (saga, key, idx, name, irreversible, args, state, output, error)
                 VALUES (?1, ?2, 0, {step})"
            ),
            [saga.to_string(), step_key.to_string()],
        )
        .expect("a step");
}

/// Writes a row by hand, as another program (or a disk fault) might have.
fn write_row(path: &Path, key: &Key, status: &str, fingerprint: &[u8], expires_at_ms: Option<i64>) {
    let connection = Connection::open(path).expect("open");
    connection
        .execute(
            "INSERT OR REPLACE INTO idem_records
               (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms)
             VALUES (?1, 'foreign', ?2, 1, ?3, 'ok', x'31', 0, ?4)",
            params![key.to_string(), status, fingerprint, expires_at_ms],
        )
        .expect("insert");
}

fn request(key: &Key) -> OwnedClaim {
    OwnedClaim {
        key: *key,
        fingerprint: Fingerprint::from(*key),
        action: "test".into(),
        lease: Duration::from_secs(10),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    }
}

#[tokio::test]
async fn a_corrupt_record_is_an_error_naming_its_key() {
    let path = temp_file("corrupt.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let (bad_status, bad_fingerprint) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
    write_row(&path, &bad_status, "exploded", &[0; 32], None);
    write_row(
        &path,
        &bad_fingerprint,
        "completed",
        &[0; 5],
        Some(i64::MAX),
    );
    for key in [bad_status, bad_fingerprint] {
        let owned = request(&key);
        let claimed = store
            .writing(Some(&key), None, move |connection, now| {
                claim(connection, now, &owned)
            })
            .await;
        match claimed {
            Err(error @ Error::Codec { .. }) => {
                assert_eq!(error.key(), Some(&key));
                assert!(error.to_string().contains(&key.to_string()), "{error}");
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
        assert!(matches!(store.get(&key).await, Err(Error::Codec { .. })));
    }
}

/// A file made by the first version (no saga tables) opens, keeps its records, and gets
/// the saga tables.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place() {
    let path = temp_file("version-1.db");
    {
        let connection = Connection::open(&path).expect("open");
        made_by_version(&connection, 1);
    }
    let kept = Key::from_bytes([5; 32]);
    write_row(&path, &kept, "completed", &[0; 32], Some(i64::MAX));

    let store = SqliteStore::open(&path)
        .await
        .expect("open a version-1 file");
    assert!(store.get(&kept).await.expect("get").is_some());
    let saga = Key::from_bytes([6; 32]);
    let owned = request(&saga);
    let claimed = store
        .writing(None, None, move |connection, now| {
            claim(connection, now, &owned)
        })
        .await
        .expect("claim");
    let Claim::Acquired { token, .. } = claimed else {
        panic!("a free key is acquired: {claimed:?}");
    };
    assert_eq!(token, 42, "the fencing counter goes on from the file's");
    let running = SagaWrite::Status {
        status: SagaStatus::Running,
        error: None,
    };
    let written = store.write_saga(&saga, "order-1", token, running).await;
    assert_eq!(written.expect("write_saga"), Ownership::Held);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

/// A file made by version 2 (saga logs without the operator's note) opens, keeps its logs,
/// and gets the column: a saga that needed attention can be resolved, its note kept.
#[tokio::test]
async fn a_version_2_file_is_upgraded_in_place() {
    let path = temp_file("version-2.db");
    let (stuck, key) = (Key::from_bytes([7; 32]), Key::from_bytes([8; 32]));
    file_with_a_saga(
        &path,
        2,
        (&stuck, "'order-7', 'needs_attention', 'refund failed', 1"),
        (
            &key,
            "'charge_payment', 0, x'5b5d', 'compensation_failed', NULL, 'down'",
        ),
    );

    let store = SqliteStore::open(&path)
        .await
        .expect("open a version-2 file");
    let log = store
        .read_saga(&stuck)
        .await
        .expect("read_saga")
        .expect("the log is kept");
    assert_eq!(
        (log.id.as_str(), log.status, log.note.as_deref()),
        ("order-7", SagaStatus::NeedsAttention, None)
    );
    assert_eq!(log.steps.len(), 1);
    assert_eq!(log.steps[0].key, key);
    let note = "refunded by hand";
    assert!(store.resolve_saga(&stuck, note).await.expect("resolve"));
    drop(store);

    // Opened again, the file is not upgraded twice, and the note is there.
    let store = SqliteStore::open(&path).await.expect("reopen");
    let log = store
        .read_saga(&stuck)
        .await
        .expect("read_saga")
        .expect("the log");
    assert_eq!(
        (log.status, log.note.as_deref()),
        (SagaStatus::Resolved, Some(note))
    );
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}

/// A file made by version 3 (claims without the action's TTL) opens, keeps its claims and
/// gets the column: a claim of it whose owner died is not purged (its TTL is unknown), one
/// made after the upgrade is, once its lease and TTL ran out.
#[tokio::test]
async fn a_version_3_file_is_upgraded_in_place() {
    let path = temp_file("version-3.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    Connection::open(&path)
        .expect("open")
        .execute_batch(
            "ALTER TABLE idem_records DROP COLUMN ttl_ms;
             ALTER TABLE idem_saga_steps DROP COLUMN updated_at_ms;
             PRAGMA user_version = 3;",
        )
        .expect("a version-3 file");
    let old = Key::from_bytes([9; 32]);
    write_row(&path, &old, "in_progress", &[0; 32], Some(1));
    Connection::open(&path)
        .expect("open")
        .execute(
            "UPDATE idem_records SET outcome = NULL, result = NULL WHERE key = ?1",
            [old.to_string()],
        )
        .expect("an in-progress row");

    let store = SqliteStore::open(&path)
        .await
        .expect("open a version-3 file");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let dying = Key::from_bytes([10; 32]);
    let owned = OwnedClaim {
        lease: Duration::ZERO,
        ttl: Duration::ZERO,
        ..request(&dying)
    };
    let claimed = store
        .writing(None, None, move |connection, now| {
            claim(connection, now, &owned)
        })
        .await
        .expect("claim");
    assert!(matches!(claimed, Claim::Acquired { .. }), "{claimed:?}");
    assert_eq!(store.count_expired().await.expect("count"), 1);
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert_eq!(store.get(&dying).await.expect("get"), None);
    let kept = store.get(&old).await.expect("get").expect("the old claim");
    assert_eq!(kept.status, Status::InProgress);
}

/// A file made by version 4 (a step's write moved the head's time; steps have none) opens
/// and keeps its log, dated by its head; a step written after the upgrade keeps its own
/// time, dates the log, and leaves the head as it was.
#[tokio::test]
async fn a_version_4_file_is_upgraded_in_place() {
    let path = temp_file("version-4.db");
    let (saga, first_step) = (Key::from_bytes([11; 32]), Key::from_bytes([12; 32]));
    file_with_a_saga(
        &path,
        4,
        (&saga, "'order-11', 'running', NULL, 1000"),
        (
            &first_step,
            "'reserve_seat', 0, x'5b5d', 'done', x'31', NULL",
        ),
    );
    let head_ms = || {
        Connection::open(&path)
            .expect("open")
            .query_row(
                "SELECT updated_at_ms FROM idem_sagas WHERE key = ?1",
                [saga.to_string()],
                |row| row.get::<_, i64>(0),
            )
            .expect("the head")
    };

    let store = SqliteStore::open(&path)
        .await
        .expect("open a version-4 file");
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let log = store.read_saga(&saga).await.expect("read").expect("kept");
    assert_eq!(log.steps.len(), 1);
    assert_eq!(
        log.updated_at,
        std::time::UNIX_EPOCH + Duration::from_secs(1),
        "dated by its head"
    );

    let owned = request(&saga);
    let claimed = store
        .writing(None, None, move |connection, now| {
            claim(connection, now, &owned)
        })
        .await
        .expect("claim");
    let Claim::Acquired { token, .. } = claimed else {
        panic!("a free key is acquired: {claimed:?}");
    };
    let mut step = log.steps[0].clone();
    step.index = 1;
    let written = store
        .write_saga(&saga, "order-11", token, SagaWrite::Step(&step))
        .await;
    assert_eq!(written.expect("write_saga"), Ownership::Held);
    assert_eq!(head_ms(), 1000, "a step's write leaves the head alone");
    let log = store.read_saga(&saga).await.expect("read").expect("kept");
    assert_eq!(log.steps.len(), 2);
    assert!(
        log.updated_at > std::time::UNIX_EPOCH + Duration::from_secs(1_000_000),
        "dated by the new step: {:?}",
        log.updated_at
    );
}

/// A file a newer idem upgraded is refused, and its version is never lowered.
#[tokio::test]
async fn a_file_of_a_newer_idem_is_refused_and_left_alone() {
    let path = temp_file("newer.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", 99)
        .expect("set the version");
    let refused = SqliteStore::open(&path).await.expect_err("a newer file");
    assert!(
        refused.to_string().contains("made by a newer idem"),
        "{refused}"
    );
    assert_eq!(user_version(&path), 99);
    let refused = SqliteStore::open_existing(&path)
        .await
        .expect_err("a newer file");
    assert!(
        refused.to_string().contains("made by a newer idem"),
        "{refused}"
    );
}

/// An operator's look changes nothing: no file made, no expired result purged, no older
/// schema upgraded, an empty file left empty.
#[tokio::test]
async fn opening_an_existing_store_changes_nothing() {
    let missing = temp_file("missing.db");
    let refused = SqliteStore::open_existing(&missing)
        .await
        .expect_err("missing");
    assert!(
        refused.to_string().contains("no SQLite database"),
        "{refused}"
    );
    assert!(!missing.exists(), "no file was made");

    let path = temp_file("existing.db");
    let store = SqliteStore::open(&path).await.expect("create");
    let key = Key::from_bytes([3; 32]);
    write_row(&path, &key, "completed", &[3; 32], Some(1));
    drop(store);
    let store = SqliteStore::open_existing(&path)
        .await
        .expect("open it as it is");
    assert_eq!(
        store.count_expired().await.expect("count"),
        1,
        "not purged by opening"
    );

    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", 2)
        .expect("set the version");
    let refused = SqliteStore::open_existing(&path)
        .await
        .expect_err("an older file");
    assert!(
        refused.to_string().contains("made by an older idem"),
        "{refused}"
    );
    assert_eq!(user_version(&path), 2, "not upgraded");

    let empty = temp_file("empty.db");
    std::fs::write(&empty, b"").expect("an empty file");
    let refused = SqliteStore::open_existing(&empty)
        .await
        .expect_err("not idem's");
    assert!(
        refused.to_string().contains("not an idem store"),
        "{refused}"
    );
    assert_eq!(std::fs::metadata(&empty).expect("the file").len(), 0);
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open")
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version")
}

/// Listing by key prefix reads a range of the primary key, not the whole table; a prefix
/// no key can have reads nothing.
#[tokio::test]
async fn a_key_prefix_is_a_range_of_the_primary_key() {
    let path = temp_file("prefix-plan.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    let query = RecordQuery::new()
        .key_prefix("9F3A")
        .kind(RecordKind::Failed)
        .action("charge_card");
    let (sql, values) = list_records_sql(&query).expect("a hex prefix");
    let connection = Connection::open(&path).expect("open");
    let mut explain = connection
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let plan = explain
        .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
        .expect("the plan")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("the plan");
    assert!(
        plan.iter()
            .any(|step| step.contains("USING PRIMARY KEY (key>? AND key<?)")),
        "{plan:?}"
    );
    for not_hex in ["9f%", "9f_", "g", "9F"] {
        let mut query = RecordQuery::new();
        query.key_prefix = Some(not_hex.to_owned());
        assert_eq!(list_records_sql(&query), None, "{not_hex}");
    }
}

/// Purges larger than a batch are split into transactions of [`PURGE_BATCH`] results, and
/// still delete what they were asked to: exactly `limit` of them, or every expired one.
#[tokio::test]
async fn purges_larger_than_a_batch_delete_all_they_are_asked_to() {
    let path = temp_file("purge-batches.db");
    let store = SqliteStore::open(&path).await.expect("create");
    let expired = 2 * PURGE_BATCH + 200;
    {
        let mut connection = Connection::open(&path).expect("open");
        let transaction = connection.transaction().expect("a transaction");
        for i in 0..expired {
            transaction
                .execute(
                    "INSERT INTO idem_records
                       (key, action, status, token, fingerprint, outcome, result, created_at_ms, expires_at_ms)
                     VALUES (?1, 'old', 'completed', 1, zeroblob(32), 'ok', x'31', 0, 1)",
                    [format!("{i:064x}")],
                )
                .expect("insert");
        }
        transaction.commit().expect("commit");
    }
    let live = Key::from_bytes([4; 32]);
    write_row(&path, &live, "completed", &[0; 32], Some(i64::MAX));

    let limit = PURGE_BATCH + 100;
    assert_eq!(
        store.purge_expired_batch(limit).await.expect("purge"),
        limit as u64
    );
    let left = (expired - limit) as u64;
    assert_eq!(store.count_expired().await.expect("count"), left);
    assert_eq!(store.purge_expired().await.expect("purge"), left);
    assert_eq!(store.count_expired().await.expect("count"), 0);
    assert!(store.get(&live).await.expect("get").is_some(), "kept");
}

#[tokio::test]
async fn opening_the_store_purges_expired_results() {
    let path = temp_file("purge-on-open.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    let (expired, live) = (Key::from_bytes([3; 32]), Key::from_bytes([4; 32]));
    write_row(&path, &expired, "completed", &[0; 32], Some(1));
    write_row(&path, &live, "completed", &[0; 32], Some(i64::MAX));
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.get(&expired).await.expect("get"), None);
    assert!(store.get(&live).await.expect("get").is_some());
}

/// A raw connection to the store's file, as another process would have.
fn other_process(path: &Path, busy: Duration) -> Connection {
    let connection = Connection::open(path).expect("open the file");
    connection.busy_timeout(busy).expect("busy timeout");
    connection
}

/// A write that errs is rolled back to its savepoint, what it wrote undone, and answered with
/// its error; the writes batched with it commit.
#[tokio::test]
async fn a_failed_write_fails_alone_in_its_batch() {
    use super::writer::{commit_batch, pending, Counts};
    let path = temp_file("batch-failure.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let [first, failing, last] = [[21; 32], [22; 32], [23; 32]].map(Key::from_bytes);
    let (a, a_answer) = pending(None, move |connection, now| {
        claim(connection, now, &request(&first))
    });
    let (b, b_answer) = pending(None, move |connection, now| {
        claim(connection, now, &request(&failing))?;
        Err::<Claim, _>(Error::store("sqlite", None, "refused after writing"))
    });
    let (c, c_answer) = pending(None, move |connection, now| {
        claim(connection, now, &request(&last))
    });
    let counts = Counts::default();
    let mut connection = other_process(&path, Duration::from_secs(5));
    commit_batch(&mut connection, vec![a, b, c], &counts);

    assert!(matches!(
        a_answer.await.unwrap(),
        Ok(Claim::Acquired { .. })
    ));
    assert!(b_answer.await.unwrap().is_err());
    assert!(matches!(
        c_answer.await.unwrap(),
        Ok(Claim::Acquired { .. })
    ));
    assert!(store.get(&first).await.unwrap().is_some());
    assert_eq!(
        store.get(&failing).await.unwrap(),
        None,
        "its write was undone"
    );
    assert!(store.get(&last).await.unwrap().is_some());
    assert_eq!(counts.commits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A batch that cannot begin (another process holds the write lock past the busy timeout)
/// fails every write in it, and runs none.
#[tokio::test]
async fn a_batch_that_cannot_begin_fails_each_of_its_writes() {
    use super::writer::{commit_batch, pending, Counts};
    let path = temp_file("batch-busy.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let holder = other_process(&path, Duration::from_secs(5));
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    let keys = [[24; 32], [25; 32]].map(Key::from_bytes);
    let (writes, answers): (Vec<_>, Vec<_>) = keys
        .iter()
        .map(|key| {
            let key = *key;
            pending(None, move |connection, now| {
                claim(connection, now, &request(&key))
            })
        })
        .unzip();
    let mut connection = other_process(&path, Duration::from_millis(50));
    commit_batch(&mut connection, writes, &Counts::default());
    for answer in answers {
        let error = answer
            .await
            .unwrap()
            .expect_err("the batch could not begin");
        assert!(error.to_string().contains("locked"), "{error}");
    }
    holder.execute_batch("ROLLBACK").expect("let go");
    for key in &keys {
        assert_eq!(store.get(key).await.unwrap(), None);
    }
}

/// Claims that queue while a batch waits for the file share the next commit: sixteen
/// claims, at most two commits, every claim acquired and durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_share_a_commit() {
    use std::sync::atomic::Ordering;
    let path = temp_file("group-commit.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let counts = &store.inner.writer.counts();
    let commits_before = counts.commits.load(Ordering::Relaxed);
    let sent_before = counts.sent.load(Ordering::Acquire);

    // Another process holds the file: the writer's first batch waits in BEGIN, the other
    // claims queue behind it.
    let holder = other_process(&path, Duration::from_secs(5));
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    let claims: Vec<_> = (0..16u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = Key::from_bytes([100 + n; 32]);
                let request = request(&key);
                store
                    .claim(&request.borrowed())
                    .await
                    .map(|claim| (key, claim))
            })
        })
        .collect();
    // Every claim is in the writer's queue (or its first batch) before the file is let go.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counts.sent.load(Ordering::Acquire) - sent_before < 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "the claims never queued"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    holder.execute_batch("COMMIT").expect("let go");

    for claim in claims {
        let (key, claim) = claim.await.unwrap().expect("claim");
        assert!(matches!(claim, Claim::Acquired { .. }), "{claim:?}");
        let record = store.get(&key).await.unwrap().expect("durable");
        assert_eq!(record.status, Status::InProgress);
    }
    let commits = counts.commits.load(Ordering::Relaxed) - commits_before;
    assert!(commits <= 2, "16 claims took {commits} commits");
}

/// A replay is a look at the file before the batch begins: it needs neither a commit nor the
/// write lock, so it is answered while another process holds the file.
#[tokio::test]
async fn a_replay_needs_no_commit_and_no_write_lock() {
    use std::sync::atomic::Ordering;
    let path = temp_file("replay-look.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let key = Key::from_bytes([31; 32]);
    let owned = request(&key);
    let Claim::Acquired { token, .. } = store.claim(&owned.borrowed()).await.expect("claim") else {
        panic!("a free key is acquired");
    };
    let recorded = store
        .complete(
            &key,
            token,
            StoredOutcome::Ok(b"1".to_vec()),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(recorded.expect("complete"), Ownership::Held);
    let commits = store.inner.writer.counts().commits.load(Ordering::Relaxed);

    let holder = other_process(&path, Duration::from_secs(5));
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    let replay = tokio::time::timeout(Duration::from_secs(30), store.claim(&owned.borrowed()))
        .await
        .expect("answered while the lock is held")
        .expect("replay");
    assert!(matches!(replay, Claim::Completed { .. }), "{replay:?}");
    holder.execute_batch("ROLLBACK").expect("let go");
    assert_eq!(
        store.inner.writer.counts().commits.load(Ordering::Relaxed),
        commits
    );
}

/// Alone in its batch, a write that fails after writing is undone with the whole
/// transaction; a write that panics fails alone and the writer goes on; a look that errs
/// answers with its error and writes nothing.
#[tokio::test]
async fn failing_writes_and_looks_leave_nothing_behind() {
    use super::writer::{commit_batch, pending, Counts};
    let path = temp_file("batch-alone.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let [alone, beside, looked] = [[41; 32], [42; 32], [43; 32]].map(Key::from_bytes);
    let counts = Counts::default();
    let mut connection = other_process(&path, Duration::from_secs(5));

    let (write, answer) = pending(None, move |connection, now| {
        claim(connection, now, &request(&alone))?;
        Err::<Claim, _>(Error::store("sqlite", None, "refused after writing"))
    });
    commit_batch(&mut connection, vec![write], &counts);
    assert!(answer.await.unwrap().is_err());
    assert_eq!(
        store.get(&alone).await.unwrap(),
        None,
        "its write was undone"
    );

    let (panics, panicked) = pending(None, |_: &Connection, _| -> Result<Claim, Error> {
        panic!("a bug in a write")
    });
    let (fine, answer) = pending(None, move |connection, now| {
        claim(connection, now, &request(&beside))
    });
    commit_batch(&mut connection, vec![panics, fine], &counts);
    let error = panicked.await.unwrap().expect_err("the panic is an error");
    assert!(error.to_string().contains("panicked"), "{error}");
    assert!(matches!(answer.await.unwrap(), Ok(Claim::Acquired { .. })));
    assert!(store.get(&beside).await.unwrap().is_some());

    // Through the store's own writer: a look that errs is the answer, the write never runs.
    let look: super::writer::Look<Claim> =
        Box::new(|_| Err(Error::store("sqlite", None, "the look failed")));
    let owned = request(&looked);
    let looked_at = store
        .writing(Some(&looked), Some(look), move |connection, now| {
            claim(connection, now, &owned)
        })
        .await;
    assert!(looked_at
        .unwrap_err()
        .to_string()
        .contains("the look failed"));
    assert_eq!(store.get(&looked).await.unwrap(), None);
    assert!(
        store.claim(&request(&looked).borrowed()).await.is_ok(),
        "the writer goes on"
    );
}
