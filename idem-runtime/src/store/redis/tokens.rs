//! Fencing tokens for claims made with one native command: a store handle reserves them from
//! the server's counter a block at a time (`INCRBY`), and uses a block for at most
//! [`BLOCK_AGE`].
//!
//! Tokens are unique (blocks never overlap), and grow the way fencing needs: every block is
//! reserved after every token handed out before it, so a claim's token is larger than that of
//! any claim made more than [`BLOCK_AGE`] earlier. (A claim whose answer comes back more than
//! [`FRESH_BLOCK_TTL`] after its block was reserved, which a stalled process or a long queue
//! could make, exchanges its token for one drawn from the counter before its body runs:
//! `claim.rs`.) An earlier owner of the same key is one of
//! those whenever the key could be claimed afresh: its record went by itself (its TTL, or its
//! lease and the action's TTL) no sooner than the action's TTL after its claim, and claims of
//! actions with a shorter TTL than [`FRESH_BLOCK_TTL`] draw their token from the counter
//! itself; a released key keeps a tombstone that sends the next claim to the counter too; and
//! a takeover (the owner's lease ran out) always draws from the counter. The counter is one
//! key touched by no script, so the store's scripts stay within one key's hash slot.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::durability::Write;
use super::RedisStore;
use crate::store::FencingToken;
use crate::Error;

/// How many tokens one `INCRBY` reserves.
const BLOCK: u64 = 1024;

/// How long a reserved block is used.
pub(super) const BLOCK_AGE: Duration = Duration::from_secs(1);

/// The shortest action TTL whose fresh claims take their token from a block; below it (with a
/// margin over [`BLOCK_AGE`]) a claim draws its token from the counter.
pub(super) const FRESH_BLOCK_TTL: Duration = Duration::from_millis(1500);

/// The tokens a store handle (and its clones) has reserved and not handed out yet.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    /// Whether the handle has checked and marked its prefix's layout (`layout.rs`), which it
    /// does before its first reservation (later ones only set the mark again).
    marked: std::sync::atomic::AtomicBool,
    /// The current block: held for a few instructions at a time.
    block: std::sync::Mutex<Option<Block>>,
    /// Held by the one task that reserves the next block, while the others wait for it.
    refill: Mutex<()>,
}

#[derive(Debug)]
struct Block {
    next: u64,
    last: u64,
    reserved: Instant,
}

impl Tokens {
    /// A token from the current block, reserving a new one (one round trip, once per
    /// [`BLOCK`] tokens or [`BLOCK_AGE`]) when it is used up or too old.
    /// Returns the token with the moment its block was reserved.
    pub(super) async fn next(&self, store: &RedisStore) -> Result<(FencingToken, Instant), Error> {
        if let Some(taken) = self.take() {
            return Ok(taken);
        }
        // Boxed: once per block, and the lock and the round trip would otherwise make every
        // claim's future larger (see `RedisStore::claim_reading_expiry`).
        Box::pin(self.refill(store)).await
    }

    /// A token from a new block, unless another task reserved one meanwhile.
    async fn refill(&self, store: &RedisStore) -> Result<(FencingToken, Instant), Error> {
        let _refilling = self.refill.lock().await;
        if let Some(taken) = self.take() {
            return Ok(taken); // another task reserved a block meanwhile
        }
        let reserved = Instant::now();
        let last = store.draw(BLOCK).await?;
        let first = last - BLOCK + 1;
        *self.block() = Some(Block {
            next: first + 1,
            last,
            reserved,
        });
        Ok((first, reserved))
    }

    fn take(&self) -> Option<(FencingToken, Instant)> {
        let mut block = self.block();
        let current = block.as_mut()?;
        if current.next > current.last || current.reserved.elapsed() >= BLOCK_AGE {
            return None;
        }
        current.next += 1;
        Some((current.next - 1, current.reserved))
    }

    fn block(&self) -> std::sync::MutexGuard<'_, Option<Block>> {
        // Every write leaves the block whole: a poisoned lock holds a usable one.
        self.block
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RedisStore {
    /// `INCRBY <prefix>tokens n`: the last of `n` new tokens, larger than any handed out
    /// before. With replicas asked for, a `WAIT` goes in the same pipeline (to the counter's
    /// master): a reservation a failover could lose would hand the same tokens out again.
    pub(super) async fn draw(&self, n: u64) -> Result<FencingToken, Error> {
        use std::sync::atomic::Ordering;
        if self.inner.tokens.marked.load(Ordering::Acquire) {
            // Marked before every reservation, not only the first: a server that lost its
            // keys since (a restart without persistence, a failover to an empty replica)
            // would otherwise get its counter back without a mark, and every agent started
            // afterwards would take it for an older idem's layout and refuse to start. One
            // round trip per block of tokens; the mark goes first, as `found_layout` expects.
            self.set_layout_mark().await?;
        } else {
            self.mark_layout().await?;
            self.inner.tokens.marked.store(true, Ordering::Release);
        }
        let counter = self.global("tokens");
        let mut incrby = redis::cmd("INCRBY");
        incrby.arg(&counter).arg(n);
        let what = "a reservation of fencing tokens";
        let so = "the tokens are not handed out, and the body does not run";
        let last: i64 = self
            .acknowledged(None, Write::Command(&incrby), what, so, |_| true)
            .await?;
        FencingToken::try_from(last)
            .ok()
            .filter(|last| *last >= n)
            .ok_or_else(|| {
                Error::store(
                    "redis",
                    None,
                    format!("the token counter {counter} is {last}"),
                )
            })
    }
}
