//! Claim ids: a random number each claim writes into its record beside its fencing token.
//!
//! A token alone does not name a claim for sure on Redis: a failover can lose the latest
//! reservations of the token counter, which then hands the same tokens out again (`tokens.rs`).
//! So every claim draws a claim id; a claim whose answer was lost and which the client sends
//! again recognises its own record by it (and gets its own token back), and the owner's
//! writes (complete, release, heartbeat, saga log) check it beside the token. The handle that
//! made a claim remembers its id until the claim is done with; a handle that did not make it
//! (an operator's `idem settle`, from the token it read) writes by the token alone.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::key::Key;
use crate::store::FencingToken;

/// The ids of the claims a store handle (and its clones) made and has not finished with.
#[derive(Debug, Default)]
pub(super) struct ClaimIds {
    /// Seeded at random per handle: the ids of two processes never follow one another.
    seed: std::collections::hash_map::RandomState,
    drawn: AtomicU64,
    held: Mutex<HashMap<(Key, FencingToken), Held>>,
}

/// A claim this handle made.
#[derive(Debug)]
struct Held {
    id: u64,
    /// The record as the claim wrote it, for a claim made by the native `SET`: while the
    /// record is unchanged, its result replaces it with one comparison (`complete.rs`).
    written: Option<Vec<u8>>,
}

impl ClaimIds {
    /// A new claim id, never 0 (the id of a record with none).
    pub(super) fn draw(&self) -> u64 {
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(self.drawn.fetch_add(1, Ordering::Relaxed));
        hasher.finish().max(1)
    }

    /// Remembers that the claim of `key` under `token` has `id`, and the record it `written`,
    /// if it made it with the native `SET`.
    pub(super) fn remember(
        &self,
        key: &Key,
        token: FencingToken,
        id: u64,
        written: Option<Vec<u8>>,
    ) {
        self.held().insert((*key, token), Held { id, written });
    }

    /// The id of the claim of `key` under `token` as the scripts take it: its digits, or ''
    /// when this handle did not make that claim (the token alone is checked).
    pub(super) fn of(&self, key: &Key, token: FencingToken) -> String {
        self.held()
            .get(&(*key, token))
            .map(|held| held.id.to_string())
            .unwrap_or_default()
    }

    /// The record the claim of `key` under `token` wrote with the native `SET`, if this handle
    /// made it so.
    pub(super) fn written(&self, key: &Key, token: FencingToken) -> Option<Vec<u8>> {
        self.held().get(&(*key, token))?.written.clone()
    }

    /// Forgets the record the claim of `key` under `token` wrote: it changed (a saga's first
    /// write makes it last), and its result goes to the script without a comparison first.
    pub(super) fn changed(&self, key: &Key, token: FencingToken) {
        if let Some(held) = self.held().get_mut(&(*key, token)) {
            held.written = None;
        }
    }

    /// Forgets the claim of `key` under `token` (done with: completed, released, lost).
    pub(super) fn forget(&self, key: &Key, token: FencingToken) {
        self.held().remove(&(*key, token));
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(Key, FencingToken), Held>> {
        // Every write leaves the map whole: a poisoned lock holds a usable one.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_are_remembered_until_forgotten() {
        let ids = ClaimIds::default();
        let (a, b) = (ids.draw(), ids.draw());
        assert_ne!(a, b);
        assert_ne!(a, ClaimIds::default().draw());
        let key = Key::from_bytes([1; 32]);
        ids.remember(&key, 7, a, Some(b"p|7".to_vec()));
        assert_eq!(ids.of(&key, 7), a.to_string());
        assert_eq!(ids.written(&key, 7), Some(b"p|7".to_vec()));
        assert_eq!(ids.of(&key, 8), "");
        ids.changed(&key, 7);
        assert_eq!(ids.written(&key, 7), None, "the record it wrote is gone");
        assert_eq!(ids.of(&key, 7), a.to_string(), "its id is kept");
        ids.forget(&key, 7);
        assert_eq!(ids.of(&key, 7), "");
    }
}
