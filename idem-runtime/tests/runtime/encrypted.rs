//! `EncryptedStore` beyond the conformance suite: what reaches the store is sealed, keys
//! rotate, and a value that does not open (its key dropped, changed, moved to another record)
//! is an error naming the record's key.

use std::time::Duration;

use idem_runtime::store::{
    sealed_key_id, Claim, ClaimRequest, EncryptedStore, EncryptionKey, Inspect, Keyring,
    MemoryStore, SagaStore, SagaWrite, SqliteStore, StepRecord, StepState, Store, StoredOutcome,
};
use idem_runtime::{Action, Error, Fingerprint, Key, OnStale};

use crate::stores::sqlite_file;

/// A marker that must not appear in clear in the store.
const PLAIN: &str = "ada-lovelace-4242-PLAINTEXT";

fn key_a() -> EncryptionKey {
    EncryptionKey::from_bytes([0x11; 32])
}

fn key_b() -> EncryptionKey {
    EncryptionKey::from_bytes([0x22; 32])
}

static SEND: Action = Action::new("send_contract");

/// Records `value` as the result of `send_contract(who)` through `store`; returns the key.
async fn record(store: &dyn Store, who: &str, value: &str) -> Key {
    let outcome = SEND
        .call(&(who,))
        .expect("a call")
        .run::<_, Error, _>(store, async { Ok(value.to_owned()) })
        .await
        .expect("the call");
    assert!(!outcome.is_replayed());
    SEND.key(&(who,)).expect("a key")
}

/// What a claim of `send_contract(who)` through `store` replays.
async fn replayed(store: &dyn Store, who: &str) -> Result<String, Error> {
    SEND.call(&(who,))?
        .run::<String, Error, _>(store, async { panic!("the result is recorded") })
        .await
        .map(|outcome| {
            assert!(outcome.is_replayed());
            outcome.into_inner()
        })
}

fn step(saga: &Key, index: u32, args: &str, output: Option<&str>) -> StepRecord {
    StepRecord {
        index,
        name: format!("step_{index}"),
        key: Action::new("saga_step")
            .key(&(saga.to_string(), index))
            .expect("a key"),
        irreversible: false,
        args: args.as_bytes().to_vec(),
        state: if output.is_some() {
            StepState::Done
        } else {
            StepState::Started
        },
        output: output.map(|o| o.as_bytes().to_vec()),
        error: None,
    }
}

/// Claims a saga's key through `store` and writes `steps` to its log.
async fn write_log(store: &dyn Store, id: &str, steps: &[StepRecord]) -> Key {
    let saga = Action::new("saga").key(&(id,)).expect("a key");
    let request = ClaimRequest {
        key: &saga,
        fingerprint: &Fingerprint::from(saga),
        action: "saga",
        lease: Duration::from_secs(60),
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    };
    let Claim::Acquired { token, .. } = store.claim(&request).await.expect("claim") else {
        panic!("a fresh saga key is acquired");
    };
    for step in steps {
        let written = store
            .write_saga(&saga, id, token, SagaWrite::Step(step))
            .await
            .expect("write");
        assert_eq!(written, idem_runtime::store::Ownership::Held);
    }
    saga
}

fn sqlite(store: &EncryptedStore<SqliteStore>) -> rusqlite::Connection {
    rusqlite::Connection::open(store.inner().path()).expect("open the file directly")
}

#[tokio::test]
async fn what_reaches_the_file_is_sealed_not_the_plaintext() {
    let store = EncryptedStore::new(sqlite_file().await, Keyring::new(key_a()));
    let result_key = record(&store, "ada", PLAIN).await;
    let args = format!(r#"["{PLAIN}",1999]"#);
    let output = format!(r#"{{"charge":"{PLAIN}"}}"#);
    let saga = Action::new("saga").key(&("order-1",)).expect("a key");
    let logged = step(&saga, 0, &args, Some(&output));
    write_log(&store, "order-1", std::slice::from_ref(&logged)).await;

    // Through the wrapper, everything reads back in clear.
    assert_eq!(replayed(&store, "ada").await.expect("replay"), PLAIN);
    let log = store.read_saga(&saga).await.expect("read").expect("a log");
    assert_eq!(log.steps, vec![logged]);

    // In the file's rows, every value is sealed under key A, and the marker is nowhere.
    let db = sqlite(&store);
    let result: Vec<u8> = db
        .query_row(
            "SELECT result FROM idem_records WHERE key = ?1",
            [result_key.to_string()],
            |row| row.get(0),
        )
        .expect("the result row");
    let (stored_args, stored_output): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT args, output FROM idem_saga_steps WHERE saga = ?1 AND idx = 0",
            [saga.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the step row");
    for sealed in [&result, &stored_args, &stored_output] {
        assert_eq!(sealed_key_id(sealed), Some(key_a().id()));
        assert!(!contains(sealed, PLAIN.as_bytes()));
    }
    // Nor anywhere in the database's files (the WAL holds the latest pages).
    drop(db);
    let path = store.inner().path().to_path_buf();
    for file in [path.clone(), path.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !contains(&bytes, PLAIN.as_bytes()),
                "{} holds the plaintext",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn rotation_reads_old_and_new_and_a_dropped_key_is_a_clear_error() {
    let inner = MemoryStore::new();
    let under_a = EncryptedStore::new(inner.clone(), Keyring::new(key_a()));
    let old = record(&under_a, "old", "sealed under A").await;

    // Rotate: B is current, A is kept to read what it sealed.
    let rotated = EncryptedStore::new(inner.clone(), Keyring::new(key_b()).with_previous(key_a()));
    assert_eq!(
        replayed(&rotated, "old").await.expect("old"),
        "sealed under A"
    );
    let new = record(&rotated, "new", "sealed under B").await;
    assert_eq!(
        replayed(&rotated, "new").await.expect("new"),
        "sealed under B"
    );
    let raw = |key: Key| {
        let inner = inner.clone();
        async move {
            match inner.get(&key).await.expect("get").and_then(|r| r.outcome) {
                Some(StoredOutcome::Ok(bytes)) => sealed_key_id(&bytes),
                other => panic!("a recorded value, not {other:?}"),
            }
        }
    };
    assert_eq!(raw(old).await, Some(key_a().id()));
    assert_eq!(raw(new).await, Some(key_b().id()));

    // A dropped: the new value reads, the old one is an error naming its key and key id,
    // and the body does not run in its place.
    let without_a = EncryptedStore::new(inner.clone(), Keyring::new(key_b()));
    assert_eq!(
        replayed(&without_a, "new").await.expect("new"),
        "sealed under B"
    );
    let error = replayed(&without_a, "old").await.unwrap_err();
    assert!(
        matches!(error, Error::Codec { key: Some(k), .. } if k == old),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&old.to_string()), "{text}");
    assert!(text.contains(&key_a().id()), "{text}");
    assert!(text.contains("does not have"), "{text}");
    // Read by an operator, the same.
    let error = without_a.get(&old).await.unwrap_err();
    assert!(error.to_string().contains(&key_a().id()), "{error}");
}

#[tokio::test]
async fn a_tampered_value_is_an_error_naming_its_key() {
    let store = EncryptedStore::new(sqlite_file().await, Keyring::new(key_a()));
    let key = record(&store, "ada", "value").await;
    let db = sqlite(&store);
    let mut sealed: Vec<u8> = db
        .query_row(
            "SELECT result FROM idem_records WHERE key = ?1",
            [key.to_string()],
            |row| row.get(0),
        )
        .expect("the row");
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    db.execute(
        "UPDATE idem_records SET result = ?1 WHERE key = ?2",
        rusqlite::params![sealed, key.to_string()],
    )
    .expect("tamper");
    drop(db);

    let error = replayed(&store, "ada").await.unwrap_err();
    assert!(
        matches!(error, Error::Codec { key: Some(k), .. } if k == key),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("does not authenticate"),
        "{error}"
    );
    assert!(store.list_records(&Default::default()).await.is_err());
}

#[tokio::test]
async fn a_value_moved_to_another_record_or_field_does_not_open() {
    let store = EncryptedStore::new(sqlite_file().await, Keyring::new(key_a()));
    let ada = record(&store, "ada", "for ada").await;
    let bob = record(&store, "bob", "for bob").await;
    let db = sqlite(&store);
    // Bob's row gets Ada's sealed result: a valid ciphertext, in the wrong place.
    db.execute(
        "UPDATE idem_records SET result = (SELECT result FROM idem_records WHERE key = ?1) WHERE key = ?2",
        [ada.to_string(), bob.to_string()],
    )
    .expect("move");
    let error = replayed(&store, "bob").await.unwrap_err();
    assert!(error.to_string().contains(&bob.to_string()), "{error}");
    assert_eq!(replayed(&store, "ada").await.expect("ada's own"), "for ada");

    // Ok flipped to Err in clear: the seal says which it was.
    db.execute(
        "UPDATE idem_records SET outcome = 'err' WHERE key = ?1",
        [ada.to_string()],
    )
    .expect("flip");
    assert!(store.get(&ada).await.is_err());

    // A step's arguments moved to its output, and to another step.
    let saga = Action::new("saga").key(&("order-2",)).expect("a key");
    let steps = [
        step(&saga, 0, r#"["a"]"#, Some(r#""out-0""#)),
        step(&saga, 1, r#"["b"]"#, None),
    ];
    write_log(&store, "order-2", &steps).await;
    db.execute(
        "UPDATE idem_saga_steps SET args = (SELECT args FROM idem_saga_steps WHERE saga = ?1 AND idx = 0) WHERE saga = ?1 AND idx = 1",
        [saga.to_string()],
    )
    .expect("move args");
    let error = store.read_saga(&saga).await.unwrap_err();
    assert!(
        error.to_string().contains(&steps[1].key.to_string()),
        "{error}"
    );
    db.execute(
        "UPDATE idem_saga_steps SET output = args WHERE saga = ?1 AND idx = 0",
        [saga.to_string()],
    )
    .expect("args as output");
    assert!(store.list_sagas(&Default::default()).await.is_err());
}

#[tokio::test]
async fn a_value_written_in_clear_is_refused_not_read() {
    let inner = MemoryStore::new();
    let key = record(&inner, "ada", "clear").await;
    let store = EncryptedStore::new(inner, Keyring::new(key_a()));
    let error = replayed(&store, "ada").await.unwrap_err();
    assert!(error.to_string().contains("not encrypted"), "{error}");
    assert!(error.to_string().contains(&key.to_string()), "{error}");
}

#[test]
fn debug_output_names_key_ids_never_key_bytes() {
    let key = EncryptionKey::from_bytes([0xab; 32]);
    let keyring = Keyring::new(key.clone()).with_previous(key_a());
    let inner = MemoryStore::new();
    // The inner store's own fields (its clock's seconds and nanoseconds, any digits) are
    // not what this test is about: only what the keyring and the wrapper add.
    let inner_shown = format!("{inner:?}");
    let store = EncryptedStore::new(inner.clone(), keyring);
    let store_shown = format!("{store:?}");
    assert!(store_shown.contains(&inner_shown), "{store_shown}");
    for shown in [format!("{key:?}"), store_shown.replace(&inner_shown, "")] {
        assert!(shown.contains(&key.id()), "{shown}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
