//! A model of the claim protocol, checked exhaustively with [`stateright`]: every interleaving
//! of a few owners' claims, heartbeats, completions, releases, stalls and crashes against one
//! store, with the store's clock ticking in between.
//!
//! The conformance suite checks each store against chosen scenarios; the model checks the
//! protocol itself against every scenario up to a bound. Its store step decides claims with
//! the real rule ([`decide`]) and fences writes with the real predicates of [`Found`]
//! (`settled_by`, `completed_by`, `renewed_by`), so a change to `rules.rs` that opens a hole
//! fails here, not only a copy of the rule.
//!
//! # What maps to what
//!
//! | model action | the real code path |
//! |---|---|
//! | [`Step::Claim`] | [`Store::claim`](crate::Store::claim): no record → insert under a new token; else [`decide`] → `Report`, `Insert`, `TakeOver` (new token, resumed) or `Park` (NEEDS_REVIEW), as `MemoryStore::claim` applies it |
//! | [`Step::Heartbeat`] | [`Store::heartbeat`](crate::Store::heartbeat): lease renewed to `now + lease` iff [`Found::renewed_by`] |
//! | [`Step::Complete`] | [`Store::complete`](crate::Store::complete): result written iff [`Found::settled_by`], `Held` unchanged iff [`Found::completed_by`], else `Lost` |
//! | [`Step::Release`] | [`Store::release`](crate::Store::release): record removed iff [`Found::settled_by`] |
//! | [`Step::LeaveInDoubt`] | [`Store::leave_in_doubt`](crate::Store::leave_in_doubt): a heartbeat of zero, so the lease ends now |
//! | [`Step::Stall`] | an owner paused (GC, a slow network, a laptop lid) until its lease ran out: the store's clock jumps to the lease's end while the owner does nothing |
//! | [`Step::Tick`] | the store's clock (`now_ms` of every store) advancing one unit; leases and TTLs are in these units |
//! | [`Step::Crash`] | the owner's process dies: it never takes another step, its claim runs out |
//! | `last_token` | the store's token counter (`idem_meta.fencing_token`, Redis' counter, a sequence): each acquisition takes the next |
//!
//! Owners that got a claim's answer other than `Acquired` act on it as `Call::run` does: a
//! result or a review ends their call, a key in progress sends them back to claim again later.
//!
//! # What is abstracted away
//!
//! - Payloads: every caller of a key sends the same payload (the same fingerprint), so a
//!   stale claim is always this caller's to take over; the fingerprint-mismatch branch of
//!   [`decide`] is left to the conformance suite.
//! - Time: a small discrete clock bounded at [`Model::horizon`]; results are kept longer than
//!   the horizon, so their TTL never runs out here (a result that expired is a new key's life,
//!   not a change of the old result). `purge_expired`, waiting (`Store::wait`) and saga logs are
//!   not modelled.
//! - Atomicity: each store operation is one atomic step, as every store makes it (a Lua
//!   script, a transaction, one SQL statement, a mutex); what happens inside one is the stores'
//!   own tests' business. Lost answers and retried requests are not modelled.
//! - Outcomes: an owner's result is its own index, enough to tell whose result is recorded.

use stateright::Property;

use crate::key::{Fingerprint, Key};
use crate::store::{decide, ClaimRequest, FencingToken, Found, OnStale, Status, Verdict, Write};

/// How the modelled store applies `complete`: as the real stores do, or broken on purpose to
/// show that the checker notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// `complete` is fenced by [`Found::settled_by`], as in every store.
    Fenced,
    /// `complete` writes whenever the key has a record, whoever owns it: the bug fencing
    /// tokens exist to prevent.
    UnfencedComplete,
}

/// The protocol's world, bounded.
#[derive(Debug, Clone)]
pub(super) struct Model {
    /// How many owners race.
    pub(super) owners: usize,
    /// One entry per key: what its action does with a stale claim.
    pub(super) keys: Vec<OnStale>,
    /// How long a claim or heartbeat holds, in ticks.
    pub(super) lease: i64,
    /// The last moment of the store's clock that is explored.
    pub(super) horizon: i64,
    /// How `complete` behaves.
    pub(super) protocol: Protocol,
}

/// Where an owner is in its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Phase {
    /// Not holding a key: it may claim one.
    Idle,
    /// It owns `key` under `token`, as far as it knows; its lease runs until `lease_end`
    /// (the end the store granted at its last claim or heartbeat).
    Holding {
        key: usize,
        token: FencingToken,
        lease_end: i64,
    },
    /// Its call is over (a result, a review, a release, a lost lease, left in doubt).
    Done,
    /// Its process died.
    Crashed,
}

/// A record of the modelled store: what [`Found`] needs, and whose result it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Rec {
    status: Status,
    token: FencingToken,
    expires_at: Option<i64>,
    /// The owner whose result is recorded, once completed.
    outcome: Option<usize>,
}

/// One state of the world.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct World {
    /// The store's clock.
    now: i64,
    /// The store's token counter.
    last_token: FencingToken,
    /// One record (or none) per key.
    records: Vec<Option<Rec>>,
    owners: Vec<Phase>,
    /// Per key, the first result ever recorded (to check that it never changes).
    first_result: Vec<Option<usize>>,
    /// Per key, a bit per owner whose `complete` wrote a result.
    writers: Vec<u8>,
    /// Whether a claim ever took over a stale claim (for the `sometimes` properties).
    took_over: bool,
    /// Whether a stale owner's `complete` was ever refused (fencing at work).
    fenced_off: bool,
    /// Whether an owner ever kept its key past its first lease by heartbeating.
    renewed: bool,
}

/// What can happen next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Step {
    Claim { owner: usize, key: usize },
    Heartbeat { owner: usize },
    Complete { owner: usize },
    Release { owner: usize },
    LeaveInDoubt { owner: usize },
    Stall { owner: usize },
    Crash { owner: usize },
    Tick,
}

/// Results are kept past the horizon: see "What is abstracted away".
const RESULT_TTL: i64 = 1_000;

impl Model {
    fn key(index: usize) -> Key {
        Key::from_bytes([u8::try_from(index).unwrap_or(u8::MAX); 32])
    }

    /// Every caller of a key sends the same payload.
    fn fingerprint(key: usize) -> Fingerprint {
        Fingerprint::from(Self::key(key))
    }

    fn found(record: &Rec, key: usize) -> Found {
        Found {
            status: record.status,
            token: record.token,
            fingerprint: Self::fingerprint(key),
            expires_at_ms: record.expires_at,
            claim_ttl_ms: None,
        }
    }

    /// `Store::claim` at `world.now`, with the real rule; the owner's phase follows the answer.
    fn claim(&self, world: &mut World, owner: usize, key: usize) {
        let (key_id, fingerprint) = (Self::key(key), Self::fingerprint(key));
        let request = ClaimRequest {
            key: &key_id,
            fingerprint: &fingerprint,
            action: "modelled",
            lease: std::time::Duration::from_millis(self.lease.unsigned_abs()),
            ttl: std::time::Duration::from_millis(RESULT_TTL.unsigned_abs()),
            on_stale: self.keys[key],
        };
        let now = world.now;
        let verdict = match &world.records[key] {
            None => Verdict::Write(Write::Insert),
            Some(record) => decide(&Self::found(record, key), &request, now),
        };
        let acquire = |world: &mut World| {
            world.last_token += 1;
            let token = world.last_token;
            world.records[key] = Some(Rec {
                status: Status::InProgress,
                token,
                expires_at: Some(now + self.lease),
                outcome: None,
            });
            world.owners[owner] = Phase::Holding {
                key,
                token,
                lease_end: now + self.lease,
            };
        };
        match verdict {
            Verdict::Write(Write::Insert) => acquire(world),
            Verdict::Write(Write::TakeOver) => {
                world.took_over = true;
                acquire(world);
            }
            Verdict::Write(Write::Park) => {
                if let Some(record) = world.records[key].as_mut() {
                    record.status = Status::NeedsReview;
                    record.expires_at = None;
                }
                world.owners[owner] = Phase::Done;
            }
            Verdict::Report => {
                // A result or a review ends the call; a key in progress is claimed again later.
                let status = world.records[key].map(|record| record.status);
                if matches!(status, Some(Status::Completed | Status::NeedsReview)) {
                    world.owners[owner] = Phase::Done;
                }
            }
        }
    }

    /// `Store::complete` of `owner`'s token.
    fn complete(&self, world: &mut World, owner: usize, key: usize, token: FencingToken) {
        let Some(record) = world.records[key].as_mut() else {
            world.fenced_off = true;
            world.owners[owner] = Phase::Done;
            return;
        };
        let found = Self::found(record, key);
        let writes = match self.protocol {
            Protocol::Fenced => found.settled_by(token),
            Protocol::UnfencedComplete => !found.completed_by(token),
        };
        if writes {
            record.status = Status::Completed;
            record.outcome = Some(owner);
            record.expires_at = Some(world.now + RESULT_TTL);
            world.first_result[key].get_or_insert(owner);
            world.writers[key] |= 1 << owner;
        } else if !found.completed_by(token) {
            world.fenced_off = true;
        }
        world.owners[owner] = Phase::Done;
    }

    /// `Store::heartbeat` of `owner`'s token, renewing the lease to `lease` from now.
    fn heartbeat(&self, world: &mut World, owner: usize, lease: i64) -> bool {
        let Phase::Holding { key, token, .. } = world.owners[owner] else {
            return false;
        };
        let now = world.now;
        match world.records[key].as_mut() {
            Some(record) if Self::found(record, key).renewed_by(token) => {
                record.expires_at = Some(now + lease);
                true
            }
            _ => false,
        }
    }
}

impl stateright::Model for Model {
    type State = World;
    type Action = Step;

    fn init_states(&self) -> Vec<World> {
        vec![World {
            now: 0,
            last_token: 0,
            records: vec![None; self.keys.len()],
            owners: vec![Phase::Idle; self.owners],
            first_result: vec![None; self.keys.len()],
            writers: vec![0; self.keys.len()],
            took_over: false,
            fenced_off: false,
            renewed: false,
        }]
    }

    fn actions(&self, world: &World, steps: &mut Vec<Step>) {
        for (owner, phase) in world.owners.iter().enumerate() {
            match *phase {
                Phase::Idle => {
                    for key in 0..self.keys.len() {
                        steps.push(Step::Claim { owner, key });
                    }
                    steps.push(Step::Crash { owner });
                }
                Phase::Holding { lease_end, .. } => {
                    steps.extend([
                        Step::Heartbeat { owner },
                        Step::Complete { owner },
                        Step::Release { owner },
                        Step::LeaveInDoubt { owner },
                        Step::Crash { owner },
                    ]);
                    if world.now < lease_end && lease_end <= self.horizon {
                        steps.push(Step::Stall { owner });
                    }
                }
                Phase::Done | Phase::Crashed => {}
            }
        }
        if world.now < self.horizon {
            steps.push(Step::Tick);
        }
    }

    fn next_state(&self, last: &World, step: Step) -> Option<World> {
        let mut world = last.clone();
        match step {
            Step::Claim { owner, key } => self.claim(&mut world, owner, key),
            Step::Heartbeat { owner } => {
                if self.heartbeat(&mut world, owner, self.lease) {
                    if let Phase::Holding {
                        key,
                        token,
                        lease_end,
                    } = world.owners[owner]
                    {
                        let renewed_end = world.now + self.lease;
                        world.renewed |= renewed_end > lease_end;
                        world.owners[owner] = Phase::Holding {
                            key,
                            token,
                            lease_end: renewed_end,
                        };
                    }
                } else {
                    // `Ownership::Lost`: the body's heartbeat task gives up the call.
                    world.owners[owner] = Phase::Done;
                }
            }
            Step::Complete { owner } => {
                let Phase::Holding { key, token, .. } = world.owners[owner] else {
                    return None;
                };
                self.complete(&mut world, owner, key, token);
            }
            Step::Release { owner } => {
                let Phase::Holding { key, token, .. } = world.owners[owner] else {
                    return None;
                };
                let settled = world.records[key]
                    .as_ref()
                    .is_some_and(|record| Self::found(record, key).settled_by(token));
                if settled {
                    world.records[key] = None;
                }
                world.owners[owner] = Phase::Done;
            }
            Step::LeaveInDoubt { owner } => {
                // The default `leave_in_doubt`: a heartbeat of zero.
                let _ = self.heartbeat(&mut world, owner, 0);
                world.owners[owner] = Phase::Done;
            }
            Step::Stall { owner } => {
                let Phase::Holding { lease_end, .. } = world.owners[owner] else {
                    return None;
                };
                world.now = lease_end;
            }
            Step::Crash { owner } => world.owners[owner] = Phase::Crashed,
            Step::Tick => world.now += 1,
        }
        Some(world)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::<Self>::always("no two owners record a result for one key", |_, world| {
                world.writers.iter().all(|bits| bits.count_ones() <= 1)
            }),
            Property::<Self>::always("a recorded result never changes", |_, world| {
                world
                    .first_result
                    .iter()
                    .zip(&world.records)
                    .all(|(first, record)| match first {
                        None => true,
                        Some(owner) => record.is_some_and(|record| {
                            record.status == Status::Completed && record.outcome == Some(*owner)
                        }),
                    })
            }),
            Property::<Self>::always(
                "a live owner that heartbeats in time is never superseded",
                |_, world| {
                    world.owners.iter().all(|phase| match *phase {
                        Phase::Holding {
                            key,
                            token,
                            lease_end,
                        } if world.now < lease_end => world.records[key].is_some_and(|record| {
                            record.status == Status::InProgress && record.token == token
                        }),
                        _ => true,
                    })
                },
            ),
            Property::<Self>::sometimes("a stale claim is taken over", |_, world| world.took_over),
            Property::<Self>::sometimes("a result is recorded", |_, world| {
                world.first_result.iter().any(Option::is_some)
            }),
            Property::<Self>::sometimes("a stale claim is parked for review", |_, world| {
                world
                    .records
                    .iter()
                    .flatten()
                    .any(|r| r.status == Status::NeedsReview)
            }),
            Property::<Self>::sometimes("a superseded owner's complete is refused", |_, world| {
                world.fenced_off
            }),
            Property::<Self>::sometimes(
                "a heartbeat keeps a key past its first lease",
                |_, world| world.renewed,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use stateright::{Checker, Model as _};

    use super::*;

    /// Three owners racing for two keys, one of an action that takes stale claims over and
    /// one of an action that parks them for review.
    fn three_owners_two_keys(protocol: Protocol) -> Model {
        Model {
            owners: 3,
            keys: vec![OnStale::TakeOver, OnStale::Review],
            lease: 2,
            horizon: 4,
            protocol,
        }
    }

    #[test]
    fn the_claim_protocol_holds_in_every_interleaving() {
        let checker = three_owners_two_keys(Protocol::Fenced)
            .checker()
            .spawn_bfs()
            .join();
        println!(
            "claim protocol model: {} states ({} unique), depth {}",
            checker.state_count(),
            checker.unique_state_count(),
            checker.max_depth()
        );
        // Every `always` holds in every reachable state, and every `sometimes` was reached:
        // the states the safety properties are about (takeovers, reviews, refused stale
        // owners) do occur, so the properties are not true for want of them.
        checker.assert_properties();
    }

    #[test]
    fn a_complete_without_fencing_lets_a_stale_owner_overwrite_the_result() {
        let checker = three_owners_two_keys(Protocol::UnfencedComplete)
            .checker()
            .spawn_bfs()
            .join();
        let path = checker
            .discovery("a recorded result never changes")
            .expect("the checker finds the stale owner's overwrite");
        println!("counterexample:\n{path}");
        // BFS finds a shortest path: an owner claims, its lease runs out, a second owner takes
        // over and records its result, then the first (still holding its old token) completes.
        let steps = path.into_actions();
        let first = match steps.first() {
            Some(Step::Claim { owner, .. }) => *owner,
            other => panic!("the overwrite starts with a claim, not {other:?}"),
        };
        assert_eq!(steps.last(), Some(&Step::Complete { owner: first }));
        assert!(checker
            .discovery("no two owners record a result for one key")
            .is_some());
    }
}
