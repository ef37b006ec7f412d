//! Every store passes the whole conformance suite.

use idem_runtime::conformance_tests;
use idem_runtime::store::{MemoryStore, SqliteStore};

conformance_tests!(
    memory,
    async { MemoryStore::new() },
    reopen = |store: &MemoryStore| {
        let same = store.clone();
        async move { same }
    }
);

conformance_tests!(
    sqlite,
    async {
        // Each test gets its own file; the folder is removed when the process ends.
        let folder = std::env::temp_dir().join(format!("idem-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let file = folder.join(format!("{}.db", unique()));
        SqliteStore::open(file).await.expect("open the store")
    },
    reopen = |store: &SqliteStore| {
        // Another handle on the same file: its own connections, as another process would have.
        let file = store.path().to_path_buf();
        async move { SqliteStore::open(file).await.expect("open the file again") }
    }
);

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
