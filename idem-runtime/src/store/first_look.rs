//! Whether a claim starts by reading the key's record or by writing its own.
//!
//! A store whose claim can take either way round pays one step more for every claim that
//! starts the wrong way:
//!
//! - PostgreSQL: a `SELECT`, then an `INSERT … ON CONFLICT DO NOTHING` if there was no
//!   record; or the `INSERT` first, then the `SELECT` if there was one;
//! - Redis: `GET`, then `SET … NX GET` if there was no record; or `SET … NX GET` alone, which
//!   claims a free key and reads any other record, but sends the whole claim even for a
//!   replay.
//!
//! Which way is right depends on the work: a fleet making new calls finds no record, an
//! agent's retries and its copies find one. Both ways are the same protocol (each step
//! decides on what it reads or writes atomically, and a step that finds the other case goes
//! on to the other step), so the choice is only about speed, and it follows the claims the
//! store handle made last.
//!
//! ```text
//! each claim that found no record: +1, up to 15     write first from 8 up
//! each claim that found one:       -1, down to 0    read first below 8
//! ```
//!
//! A new handle reads first. A run of eight new keys turns it to writing first, eight
//! duplicates turn it back; a mix settles on its majority. A store can also be told one way
//! for good ([`FirstStep`]).

use std::sync::atomic::{AtomicU8, Ordering};

/// The counter: 0 (duplicates lately) to [`MOST`] (new keys lately).
const MOST: u8 = 15;
/// From here up, a claim writes first.
const WRITE_FIRST_FROM: u8 = 8;

/// Which step a claim starts with, on a store whose claim can start either way: PostgreSQL
/// and Redis (`PostgresStoreBuilder::first_step`, `RedisStoreBuilder::first_step`).
///
/// Either way is the same protocol with the same guarantees; a claim that started the wrong
/// way takes the other step next, so the choice costs at most one statement per claim.
///
/// ```no_run
/// use idem_runtime::store::{FirstStep, PostgresStore};
///
/// # async fn start() -> Result<(), idem_runtime::Error> {
/// // An MCP proxy in front of agents that retry a lot: most claims find a result.
/// let store = PostgresStore::builder("postgres://idem@db.internal/agents")
///     .first_step(FirstStep::Read)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FirstStep {
    /// Follow the store handle's recent claims (the default): write first while most of
    /// them found no record, read first while most found one.
    #[default]
    Adaptive,
    /// Always read the key's record first: a replay costs one read, a new key a read and
    /// then the claim. For work where most calls are duplicates.
    Read,
    /// Always write the claim first: a new key costs one write; a replay costs a write that
    /// finds the record (PostgreSQL then reads it; Redis's `SET … NX GET` has read it
    /// already, but sent the whole claim). For work where most calls are new.
    Write,
}

/// Which way a store handle's next claim starts (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct FirstLook {
    step: FirstStep,
    recent: AtomicU8,
}

impl FirstLook {
    /// A handle's chooser, following `step`.
    pub(crate) fn new(step: FirstStep) -> Self {
        FirstLook {
            step,
            recent: AtomicU8::new(0),
        }
    }

    /// A chooser following the same step, with no claims seen yet (for other keys).
    pub(crate) fn anew(&self) -> Self {
        FirstLook::new(self.step)
    }

    /// Whether the next claim should write first.
    pub(crate) fn write_first(&self) -> bool {
        match self.step {
            FirstStep::Adaptive => self.recent.load(Ordering::Relaxed) >= WRITE_FIRST_FROM,
            FirstStep::Read => false,
            FirstStep::Write => true,
        }
    }

    /// A claim found no record (it made one).
    pub(crate) fn found_none(&self) {
        self.step(|n| (n < MOST).then_some(n + 1));
    }

    /// A claim found a record (a result, an owner, a key to take over or to review).
    pub(crate) fn found_record(&self) {
        self.step(|n| n.checked_sub(1));
    }

    fn step(&self, next: impl FnMut(u8) -> Option<u8>) {
        // Relaxed, and a lost update is fine: the counter only steers speed.
        let _ = self
            .recent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_given_is_kept_whatever_the_claims_find() {
        let read = FirstLook::new(FirstStep::Read);
        let write = FirstLook::new(FirstStep::Write);
        for _ in 0..20 {
            read.found_none();
            write.found_record();
        }
        assert!(!read.write_first());
        assert!(write.write_first());
    }

    #[test]
    fn a_new_handle_reads_first_and_eight_new_keys_turn_it() {
        let look = FirstLook::default();
        assert!(!look.write_first());
        for _ in 0..7 {
            look.found_none();
        }
        assert!(!look.write_first());
        look.found_none();
        assert!(look.write_first());
    }

    #[test]
    fn the_counter_is_bounded_so_duplicates_turn_it_back_soon() {
        let look = FirstLook::default();
        for _ in 0..1000 {
            look.found_none();
        }
        for _ in 0..7 {
            look.found_record();
        }
        assert!(look.write_first());
        look.found_record();
        assert!(!look.write_first());
        for _ in 0..1000 {
            look.found_record();
        }
        assert!(!look.write_first());
    }

    #[test]
    fn a_mix_follows_its_majority() {
        let look = FirstLook::default();
        // Two new keys for each duplicate.
        for _ in 0..30 {
            look.found_none();
            look.found_none();
            look.found_record();
        }
        assert!(look.write_first());
        // Two duplicates for each new key.
        for _ in 0..30 {
            look.found_record();
            look.found_record();
            look.found_none();
        }
        assert!(!look.write_first());
    }
}
