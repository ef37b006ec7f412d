//! The store used by `#[idempotent]` functions that name none.

use std::sync::{Arc, PoisonError, RwLock};

use crate::store::Store;

static DEFAULT_STORE: RwLock<Option<Arc<dyn Store>>> = RwLock::new(None);

/// Makes `store` the store of every `#[idempotent]` function that does not name its own
/// (`store = …`). Call it once at start-up; a later call replaces the store for the calls
/// that start after it.
///
/// ```
/// use idem_runtime::{default_store, set_default_store, store::MemoryStore};
///
/// set_default_store(MemoryStore::new());
/// assert_eq!(default_store().unwrap().name(), "memory");
/// ```
pub fn set_default_store<S: Store + 'static>(store: S) {
    set_default_store_shared(Arc::new(store));
}

/// As [`set_default_store`], for a store already shared behind an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use idem_runtime::{set_default_store_shared, store::{MemoryStore, Store}};
///
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// set_default_store_shared(Arc::clone(&store)); // the tools and the agent share one store
/// ```
pub fn set_default_store_shared(store: Arc<dyn Store>) {
    *DEFAULT_STORE
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Some(store);
}

/// The store set by [`set_default_store`], if any.
pub fn default_store() -> Option<Arc<dyn Store>> {
    DEFAULT_STORE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}
