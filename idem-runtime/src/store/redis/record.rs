//! A record as Redis keeps it: one string, so that a claim is one native command
//! (`SET … NX GET`) and a replay one read, with no script on either path.
//!
//! ```text
//! <status>|<token>|<claim id>|<lease end>|<ttl>|<created>|<fingerprint>|<outcome>|<action length>|<action><result>
//! p|7|12345678901234567|0|86400000|1764979200000|9f3a…(64 hex)|-|10|send_email
//! c|7|12345678901234567|0|86400000|1764979200000|9f3a…|ok|10|send_email{"id":"msg-1"}
//! ```
//!
//! - status: `p` in progress, `c` completed, `r` parked for review, `z` released (a tombstone
//!   kept for a moment, so that the next claim draws a token from the counter: see
//!   `scripts/release.lua`);
//! - claim id: a random number the claim's owner drew (`0`: none, a record moved from layout
//!   1). A claim sent again (its answer lost, re-sent by the client) finds its own claim id
//!   and gets its own token back; the owner's writes check it beside the token, so that a
//!   token handed out twice (a token counter that went back in a failover) never lets one
//!   owner write over another's claim;
//! - lease end: milliseconds of the server's clock, or `0` when the lease ends where the key's
//!   own expiry minus the TTL says (a claim's key expires at its lease end plus the action's
//!   TTL; `PTTL` reads it): so a claim made by `SET` needs no clock, and a heartbeat moves the
//!   key's expiry. Records that never expire (a saga's claim) keep it explicit;
//! - ttl: the action's TTL (how long a dead claim is kept after its lease);
//! - created: when the key was first claimed (milliseconds since the epoch);
//! - outcome: `-`, `ok` or `err`, the kind of the result that follows the action.
//!
//! `scripts/record.lua` reads and writes the same format in the server.

use crate::key::{Fingerprint, Key};
use crate::store::{FencingToken, Status, StoredOutcome};

/// A record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) state: State,
    pub(super) token: FencingToken,
    /// The random id of the claim that holds the record (0: none).
    pub(super) claim_id: u64,
    /// The lease end in the server's milliseconds; 0: the key's expiry minus `ttl_ms`.
    pub(super) lease_end_ms: i64,
    pub(super) ttl_ms: i64,
    pub(super) created_ms: i64,
    pub(super) fingerprint: Fingerprint,
    pub(super) outcome: Option<StoredOutcome>,
    pub(super) action: String,
}

/// Where a record is: a protocol status, or released a moment ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Is(Status),
    Released,
}

impl Stored {
    /// A new claim of `action` under `token`, with the lease in the key's expiry, encoded
    /// (as `scripts/record.lua` writes a record, without making one first).
    pub(super) fn encode_claim(
        token: FencingToken,
        claim_id: u64,
        ttl_ms: i64,
        created_ms: i64,
        fingerprint: &Fingerprint,
        action: &str,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + action.len());
        write_head(
            &mut out,
            'p',
            token,
            claim_id,
            0,
            ttl_ms,
            created_ms,
            fingerprint,
            "-",
            action,
        );
        out
    }

    /// The record as the scripts write it (the store itself writes only claims; the tests
    /// read back what this writes).
    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        let status = match self.state {
            State::Is(Status::InProgress) => 'p',
            State::Is(Status::Completed) => 'c',
            State::Is(Status::NeedsReview) => 'r',
            State::Released => 'z',
        };
        let (kind, result): (&str, &[u8]) = match &self.outcome {
            None => ("-", &[]),
            Some(StoredOutcome::Ok(bytes)) => ("ok", bytes),
            Some(StoredOutcome::Err(bytes)) => ("err", bytes),
        };
        let mut out = Vec::with_capacity(128 + self.action.len() + result.len());
        write_head(
            &mut out,
            status,
            self.token,
            self.claim_id,
            self.lease_end_ms,
            self.ttl_ms,
            self.created_ms,
            &self.fingerprint,
            kind,
            &self.action,
        );
        out.extend_from_slice(result);
        out
    }

    /// The record `written` by a native claim (in progress, its lease in its key's expiry),
    /// completed with the outcome `kind` (`ok` or `err`) and `result`: what
    /// `scripts/complete.lua` writes over such a claim for a TTL of at least `SHORTEST_MS`.
    /// `None` if `written` is not such a claim.
    pub(super) fn completed(written: &[u8], kind: &str, result: &[u8]) -> Option<Vec<u8>> {
        // `p|<token>|<claim id>|0|<ttl>|<created>|<fingerprint>|-|<length>|<action>` becomes
        // `c|<token>|<claim id>|0|<ttl>|<created>|<fingerprint>|<kind>|<length>|<action><result>`.
        // `written` is the handle's own bytes, kept since it sent them (never read back from
        // the server), so the fields are copied as they are, not decoded and written again
        // (which was a tenth of a fresh call's client time); only the shape is checked.
        let mut bars = written
            .iter()
            .enumerate()
            .filter_map(|(at, &byte)| (byte == b'|').then_some(at));
        let mut separator = [0usize; 8];
        for slot in &mut separator {
            *slot = bars.next()?;
        }
        let field = |n: usize| &written[separator[n - 1] + 1..separator[n]];
        if separator[0] != 1 || written[0] != b'p' || field(3) != b"0" || field(7) != b"-" {
            return None;
        }
        let mut out = Vec::with_capacity(written.len() + kind.len() + result.len());
        out.push(b'c');
        out.extend_from_slice(&written[1..=separator[6]]);
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(&written[separator[7]..]);
        out.extend_from_slice(result);
        Some(out)
    }

    /// Reads a record the caller owns, checking every field (a foreign or corrupt value is an
    /// error saying what is wrong, never a panic); its result is the value's tail, moved out
    /// rather than copied.
    pub(super) fn decode_owned(mut bytes: Vec<u8>) -> Result<Self, String> {
        let (mut stored, result_at) = Self::decode_head(&bytes)?;
        if let Some(StoredOutcome::Ok(result) | StoredOutcome::Err(result)) =
            stored.outcome.as_mut()
        {
            // The head moved out of the way, in place: no second buffer for the result.
            bytes.drain(..result_at);
            *result = bytes;
        }
        Ok(stored)
    }

    /// Reads a record, checking every field: a foreign or corrupt value is an error saying
    /// what is wrong, never a panic.
    #[cfg(test)]
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        Self::decode_owned(bytes.to_vec())
    }

    /// The record without its result's bytes (an outcome's are left empty), and where the
    /// result starts in `bytes`.
    fn decode_head(bytes: &[u8]) -> Result<(Self, usize), String> {
        let mut rest = bytes;
        let mut field = |name: &str| -> Result<&[u8], String> {
            let end = rest
                .iter()
                .position(|&b| b == b'|')
                .ok_or_else(|| format!("no {name}"))?;
            let (value, tail) = rest.split_at(end);
            rest = &tail[1..];
            Ok(value)
        };
        let state = match field("status")? {
            b"p" => State::Is(Status::InProgress),
            b"c" => State::Is(Status::Completed),
            b"r" => State::Is(Status::NeedsReview),
            b"z" => State::Released,
            other => {
                return Err(format!(
                    "unknown status {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        let token = number(field("token")?, "token")?;
        let claim_id = std::str::from_utf8(field("claim id")?)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or("the claim id is not a number")?;
        let lease_end_ms = number(field("lease end")?, "lease end")?;
        let ttl_ms = number(field("ttl")?, "ttl")?;
        let created_ms = number(field("created")?, "created")?;
        let fingerprint = unhex(field("fingerprint")?)?;
        let outcome = match field("outcome")? {
            b"-" => None,
            b"ok" => Some(StoredOutcome::Ok(Vec::new())),
            b"err" => Some(StoredOutcome::Err(Vec::new())),
            other => {
                return Err(format!(
                    "unknown outcome {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        };
        let action_len = usize::try_from(number(field("action length")?, "action length")?)
            .map_err(|_| "a negative action length".to_owned())?;
        let action = rest.get(..action_len).ok_or("a short action")?;
        let action = String::from_utf8(action.to_vec()).map_err(|e| e.to_string())?;
        if state == State::Is(Status::Completed) && outcome.is_none() {
            return Err("completed without a result".to_owned());
        }
        let stored = Stored {
            state,
            token: FencingToken::try_from(token).map_err(|_| format!("negative token {token}"))?,
            claim_id,
            lease_end_ms,
            ttl_ms,
            created_ms,
            fingerprint,
            outcome,
            action,
        };
        Ok((stored, bytes.len() - rest.len() + action_len))
    }

    /// A record as layout 1 wrote it (no claim id), in the current format, with a claim id
    /// of 0; checked by reading it back.
    pub(super) fn from_layout_one(old: &[u8]) -> Result<Vec<u8>, String> {
        // `<status>|<token>|` then the rest, unchanged.
        let after_token = old
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'|')
            .nth(1)
            .map(|(at, _)| at + 1)
            .ok_or("a record of layout 1 with no token")?;
        let mut new = Vec::with_capacity(old.len() + 2);
        new.extend_from_slice(&old[..after_token]);
        new.extend_from_slice(b"0|");
        new.extend_from_slice(&old[after_token..]);
        Self::decode_head(&new)?;
        Ok(new)
    }

    /// When the lease ends (in progress) or the result goes (completed), in the server's
    /// milliseconds, given the key's `PEXPIRETIME` (`expiry`: -1 none, -2 no key); `None` for
    /// a record that waits for an operator.
    pub(super) fn ends_at_ms(&self, expiry: i64) -> Option<i64> {
        // Saturating: a damaged record's TTL can be any number, and must not overflow here.
        let from_expiry = |minus: i64| {
            if expiry >= 0 {
                expiry.saturating_sub(minus)
            } else {
                0
            }
        };
        match self.state {
            State::Is(Status::NeedsReview) => None,
            _ if self.lease_end_ms > 0 => Some(self.lease_end_ms),
            State::Is(Status::InProgress) => Some(from_expiry(self.ttl_ms)),
            State::Is(Status::Completed) => Some(from_expiry(0)),
            State::Released => Some(0),
        }
    }

    /// Whether the record is as good as gone at `now_ms` (the server's milliseconds): a
    /// tombstone, a result whose TTL ran out, or a claim (not a saga's: those never expire)
    /// whose lease and the action's TTL after it ran out. A record is kept a moment longer
    /// than that (see `SHORTEST_MS` in `scripts/record.lua`); a claim treats it as no record,
    /// and operators do not see it, as if Redis had deleted it on time.
    pub(super) fn is_gone(&self, now_ms: i64, expiry: i64) -> bool {
        let ends = self.ends_at_ms(expiry);
        match self.state {
            State::Released => true,
            State::Is(Status::Completed) => ends.is_some_and(|at| at <= now_ms),
            State::Is(Status::InProgress) => {
                expiry >= 0 && ends.is_some_and(|at| at.saturating_add(self.ttl_ms) <= now_ms)
            }
            State::Is(Status::NeedsReview) => false,
        }
    }
}

/// Writes a record up to its result: `<status>|<token>|…|<action length>|<action>`.
#[allow(clippy::too_many_arguments)] // the record's fields, in their order
fn write_head(
    out: &mut Vec<u8>,
    status: char,
    token: FencingToken,
    claim_id: u64,
    lease_end_ms: i64,
    ttl_ms: i64,
    created_ms: i64,
    fingerprint: &Fingerprint,
    kind: &str,
    action: &str,
) {
    use std::io::Write;
    // Writing to a `Vec` cannot fail.
    let _ = write!(
        out,
        "{status}|{token}|{claim_id}|{lease_end_ms}|{ttl_ms}|{created_ms}|"
    );
    push_hex(out, fingerprint.as_bytes());
    let _ = write!(out, "|{kind}|{}|{action}", action.len());
}

fn number(bytes: &[u8], name: &str) -> Result<i64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("the {name} is not a number"))
}

/// 32 bytes as 64 lowercase hex digits, as records and scripts write fingerprints.
pub(super) fn hex(bytes: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

fn unhex(bytes: &[u8]) -> Result<Fingerprint, String> {
    let key: Key = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "the fingerprint is not 64 hex digits".to_owned())?;
    Ok(Fingerprint::from_bytes(*key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Stored {
        let fingerprint = Fingerprint::from_bytes([7; 32]);
        let encoded = Stored::encode_claim(
            42,
            u64::MAX,
            86_400_000,
            1_764_979_200_000,
            &fingerprint,
            "send|email",
        );
        Stored::decode(&encoded).expect("a claim reads back")
    }

    #[test]
    fn a_record_reads_back_as_it_was_written() {
        let mut record = claim();
        assert_eq!(record.action, "send|email");
        assert_eq!(record.state, State::Is(Status::InProgress));
        assert_eq!(Stored::decode(&record.encode()), Ok(record.clone()));
        assert_eq!(Stored::decode_owned(record.encode()), Ok(record.clone()));
        record.state = State::Is(Status::Completed);
        record.outcome = Some(StoredOutcome::Ok(b"{\"id\":\"a|b\"}".to_vec()));
        assert_eq!(Stored::decode(&record.encode()), Ok(record.clone()));
        assert_eq!(Stored::decode_owned(record.encode()), Ok(record.clone()));
        record.outcome = Some(StoredOutcome::Err(Vec::new()));
        assert_eq!(Stored::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn a_claim_completed_in_place_is_what_the_script_writes() {
        let claim = claim();
        let mut done = claim.clone();
        done.state = State::Is(Status::Completed);
        done.outcome = Some(StoredOutcome::Err(b"declined".to_vec()));
        assert_eq!(
            Stored::completed(&claim.encode(), "err", b"declined"),
            Some(done.encode())
        );
        assert_eq!(Stored::completed(&done.encode(), "ok", b"1"), None);
        let mut saga = claim;
        saga.lease_end_ms = 1;
        assert_eq!(Stored::completed(&saga.encode(), "ok", b"1"), None);
    }

    #[test]
    fn foreign_or_cut_values_are_errors() {
        let whole = claim().encode();
        for cut in 0..whole.len() {
            assert!(Stored::decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        for foreign in [
            &b"hello"[..],
            b"q|1|0|0|0|",
            b"p|-1|0|0|0|",
            b"p|1|-1|0|0|0|",
        ] {
            assert!(Stored::decode(foreign).is_err());
        }
    }

    /// Found by `properties::a_records_end_is_defined_for_every_field_value`: a claim whose
    /// TTL field is negative (no idem writes one; a damaged or foreign value can hold one)
    /// made `ends_at_ms` subtract past `i64::MAX`, a panic in debug builds and a wrapped,
    /// meaningless lease end in release builds, where the store must answer instead.
    #[test]
    fn a_negative_ttl_in_a_damaged_record_does_not_overflow_its_lease_end() {
        let mut record = claim();
        record.ttl_ms = -1_763_970_940_048_717_173;
        let record = Stored::decode(&record.encode()).expect("the fields are numbers");
        let expiry = 7_459_401_096_806_058_635;
        assert_eq!(record.ends_at_ms(expiry), Some(i64::MAX));
        assert!(!record.is_gone(0, expiry));
    }

    #[test]
    fn a_layout_one_record_gets_a_claim_id_of_zero() {
        let mut record = claim();
        record.claim_id = 0;
        let new = record.encode();
        let old: Vec<u8> = String::from_utf8(new.clone())
            .expect("text")
            .replacen("|0|", "|", 1)
            .into_bytes();
        assert_eq!(Stored::from_layout_one(&old), Ok(new));
        assert!(Stored::from_layout_one(b"p").is_err());
    }
}

/// Property tests: a record reads back as written, and no value, foreign, cut or damaged,
/// makes the decoder panic (a Redis key may hold anything another program or a failover
/// left there; the store must answer an error naming the key, `decode::corrupt`).
#[cfg(test)]
pub(super) mod properties {
    use proptest::prelude::*;

    use super::*;

    fn status() -> impl Strategy<Value = State> {
        prop_oneof![
            Just(State::Is(Status::InProgress)),
            Just(State::Is(Status::Completed)),
            Just(State::Is(Status::NeedsReview)),
            Just(State::Released),
        ]
    }

    /// Records as the scripts write them: any field values, an outcome exactly when one may
    /// be (a completed record always has one), actions and results holding the separator.
    pub(in crate::store::redis) fn stored() -> impl Strategy<Value = Stored> {
        let outcome = prop_oneof![
            Just(None),
            any::<Vec<u8>>().prop_map(|bytes| Some(StoredOutcome::Ok(bytes))),
            any::<Vec<u8>>().prop_map(|bytes| Some(StoredOutcome::Err(bytes))),
        ];
        (
            status(),
            0..=i64::MAX as u64,
            any::<u64>(),
            (any::<i64>(), any::<i64>(), any::<i64>()),
            any::<[u8; 32]>(),
            outcome,
            "[a-z_|]{0,12}|\\PC{0,8}",
        )
            .prop_map(
                |(
                    state,
                    token,
                    claim_id,
                    (lease_end_ms, ttl_ms, created_ms),
                    fp,
                    outcome,
                    action,
                )| {
                    let outcome = match (state, outcome) {
                        (State::Is(Status::Completed), None) => {
                            Some(StoredOutcome::Ok(b"null".to_vec()))
                        }
                        (_, outcome) => outcome,
                    };
                    Stored {
                        state,
                        token,
                        claim_id,
                        lease_end_ms,
                        ttl_ms,
                        created_ms,
                        fingerprint: Fingerprint::from_bytes(fp),
                        outcome,
                        action,
                    }
                },
            )
    }

    /// The length of a record's encoding up to its result.
    fn head_len(stored: &Stored) -> usize {
        let result = match &stored.outcome {
            Some(StoredOutcome::Ok(bytes) | StoredOutcome::Err(bytes)) => bytes.len(),
            None => 0,
        };
        stored.encode().len() - result
    }

    proptest! {
        #[test]
        fn every_record_reads_back_as_written(stored in stored()) {
            prop_assert_eq!(Stored::decode(&stored.encode()), Ok(stored.clone()));
            prop_assert_eq!(Stored::decode_owned(stored.encode()), Ok(stored));
        }

        /// A value cut anywhere before its result ends is refused; cut inside the result (the
        /// value's tail, which has no length of its own) it reads as that shorter result.
        #[test]
        fn a_cut_record_is_refused_or_reads_as_a_shorter_result(
            stored in stored(),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = stored.encode();
            let cut = cut.index(whole.len());
            let head = head_len(&stored);
            match Stored::decode(&whole[..cut]) {
                Err(problem) => prop_assert!(cut < head, "cut at {cut} of {head}: {problem}"),
                Ok(read) => {
                    prop_assert!(cut >= head, "cut at {cut} of {head} read as {read:?}");
                    let mut shorter = stored.clone();
                    if let Some(StoredOutcome::Ok(bytes) | StoredOutcome::Err(bytes)) =
                        shorter.outcome.as_mut()
                    {
                        bytes.truncate(cut - head);
                    }
                    prop_assert_eq!(read, shorter);
                }
            }
        }

        /// One damaged byte anywhere: an answer either way, never a panic; and nothing the
        /// record's readers derive from what was read (its end, whether it is gone) panics.
        #[test]
        fn a_damaged_record_never_panics(
            stored in stored(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            expiry in any::<i64>(),
            now_ms in any::<i64>(),
        ) {
            let mut bytes = stored.encode();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok(read) = Stored::decode(&bytes) {
                let _ = (read.ends_at_ms(expiry), read.is_gone(now_ms, expiry));
            }
            let _ = Stored::from_layout_one(&bytes);
            let _ = Stored::completed(&bytes, "ok", b"1");
        }

        #[test]
        fn random_bytes_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = Stored::decode(&bytes);
            let _ = Stored::from_layout_one(&bytes);
            let _ = Stored::completed(&bytes, "err", b"");
        }

        /// What a record's readers derive from its fields (`ends_at_ms`, `is_gone`) is defined
        /// for every value a record can hold, not only the ones idem writes.
        #[test]
        fn a_records_end_is_defined_for_every_field_value(
            stored in stored(),
            expiry in prop_oneof![Just(-2i64), Just(-1), any::<i64>()],
            now_ms in any::<i64>(),
        ) {
            let _ = (stored.ends_at_ms(expiry), stored.is_gone(now_ms, expiry));
        }
    }
}
