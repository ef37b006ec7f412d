//! Every store passes the whole conformance suite.

use idem_runtime::conformance_tests;
use idem_runtime::store::{
    EncryptedStore, EncryptionKey, Keyring, MemoryStore, ReplayCache, SqliteStore,
};

conformance_tests!(
    memory,
    async { MemoryStore::new() },
    reopen = |store: &MemoryStore| {
        let same = store.clone();
        async move { same }
    }
);

// A store behind a pointer is a store too (`store::open` gives an `Arc<dyn Store>`): the
// suite through `Arc<MemoryStore>`'s forwarding impl, so a method it fails to forward fails.
conformance_tests!(memory_in_an_arc, async {
    std::sync::Arc::new(MemoryStore::new())
});

// A cache of results in front of a store changes none of the protocol's answers: the suite
// through `ReplayCache`, on memory, and on SQLite where a reopened handle is another
// process with a cache of its own.
conformance_tests!(memory_behind_a_replay_cache, async {
    ReplayCache::new(MemoryStore::new())
});

conformance_tests!(
    sqlite_behind_a_replay_cache,
    async { ReplayCache::new(sqlite_file().await) },
    reopen = |store: &ReplayCache<SqliteStore>| {
        let file = store.inner().path().to_path_buf();
        async move { ReplayCache::new(SqliteStore::open(file).await.expect("open the file again")) }
    }
);

// Encryption at rest changes none of the protocol's answers either: the suite through
// `EncryptedStore`, on memory, and on SQLite where a reopened handle is another process with
// the same keys.
conformance_tests!(memory_behind_encryption, async {
    EncryptedStore::new(MemoryStore::new(), test_keyring())
});

conformance_tests!(
    sqlite_behind_encryption,
    async { EncryptedStore::new(sqlite_file().await, test_keyring()) },
    reopen = |store: &EncryptedStore<SqliteStore>| {
        let file = store.inner().path().to_path_buf();
        async move {
            let reopened = SqliteStore::open(file).await.expect("open the file again");
            EncryptedStore::new(reopened, test_keyring())
        }
    }
);

/// The keys of the conformance runs through `EncryptedStore`: a current key and an older
/// one, as in a rotation.
pub(crate) fn test_keyring() -> Keyring {
    Keyring::new(EncryptionKey::from_bytes([0x5a; 32]))
        .with_previous(EncryptionKey::from_bytes([0xa5; 32]))
}

conformance_tests!(
    sqlite,
    sqlite_file(),
    reopen = |store: &SqliteStore| {
        // Another handle on the same file: its own connections, as another process would have.
        let file = store.path().to_path_buf();
        async move { SqliteStore::open(file).await.expect("open the file again") }
    }
);

/// A store on a file of its own for each test; the folder is removed when the process ends.
pub(crate) async fn sqlite_file() -> SqliteStore {
    let folder = std::env::temp_dir().join(format!("idem-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let file = folder.join(format!("{}.db", unique()));
    SqliteStore::open(file).await.expect("open the store")
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `store::open` with `memory:` and `sqlite://` URLs.
#[tokio::test]
async fn memory_and_sqlite_urls_open_their_stores() {
    let memory = idem_runtime::store::open("memory:").await.expect("memory:");
    assert_eq!(memory.name(), "memory");
    let folder = std::env::temp_dir().join(format!("idem-url-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let file = folder.join("url.db");
    let opened = idem_runtime::store::open(&format!("sqlite://{}", file.display()))
        .await
        .expect("sqlite://");
    assert_eq!(opened.name(), "sqlite");
    assert!(file.exists(), "the file named by the URL");
    let existing = idem_runtime::store::open_existing(&format!("sqlite://{}", file.display()))
        .await
        .expect("an existing file");
    assert_eq!(existing.name(), "sqlite");
    let missing = folder.join("missing.db");
    let refused = idem_runtime::store::open_existing(&format!("sqlite://{}", missing.display()))
        .await
        .expect_err("a missing file");
    assert!(
        refused.to_string().contains("no SQLite database"),
        "{refused}"
    );
    assert!(!missing.exists(), "an operator's look makes no file");
    assert!(idem_runtime::store::open_existing("memory:").await.is_err());
    for wrong in ["sqlite://", "mysql://localhost/idem", "nonsense"] {
        let refused = idem_runtime::store::open(wrong).await.expect_err(wrong);
        assert!(refused.to_string().contains(wrong), "{refused}");
    }
}
