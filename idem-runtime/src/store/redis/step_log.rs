//! A saga step's write by its owner in one native command.
//!
//! The fence a step's write needs (nothing is written once the owner lost the saga's claim,
//! and the owner learns so before its next step runs) took a script that read the record:
//! 14-23 µs of the server's time per write, where the write itself is about 1 µs
//! (BENCHMARKS.md). Here each owner appends its step writes to a list of its own,
//! `<key>:log:<token>:<claim id>`, with `RPUSHX`, which writes only to a list that exists and
//! answers 0 otherwise. The owner's first write makes the list, through the script, which
//! checks the claim; every script that takes the record from that owner (a takeover, a
//! parking for review, the result, a release) moves the list onto the end of the saga's
//! closed log, `<key>:log`, in the same atomic step (`close_log` in `scripts/record.lua`: a
//! `RENAME` for the saga's first owner). So a list exists only while its owner holds the
//! record in progress, and an `RPUSHX` that finds one is the owner's write. One that finds
//! none goes to the script, which makes the list or says the claim was lost. A reader applies
//! the closed log and then the owner's list, in order, over the steps hash that layout 2
//! wrote (`decode.rs`).
//!
//! Every script names the owner's list among its `KEYS`: a cluster moving a slot moves keys
//! one batch at a time, and only the keys a command declares are checked for being here (a
//! script reaching for one not yet moved would find nothing, and close nothing). So each
//! script is given the list of the owner it expects: the claim id is this handle's, or read
//! from the record when the handle did not make the claim; a claim or a read that finds
//! another owner, whose list it could not name, is answered with that owner and sent again.
//!
//! A list's entries, each write one group: `<index>:<pairs>:<the writer's ms>`, then its
//! field-value pairs (the step's fields, as the steps hash names them without the index);
//! `+` marks a list a status write made. The writer's clock is read for the log's `updated`
//! only, which decides no claim.

use super::decode::{corrupt, step_fields};
use super::durability::{Write, LOSABLE};
use super::record::Stored;
use super::{command, failed, wall_now_ms, RedisStore};
use crate::key::Key;
use crate::store::{FencingToken, Ownership, StepRecord};
use crate::Error;

impl RedisStore {
    /// `<prefix>{<bucket>}:<key>:log:<token>:<claim id>`: the list of step writes of the
    /// owner of `key`'s claim under `token` and `claim_id`.
    pub(super) fn owner_log(&self, key: &Key, token: FencingToken, claim_id: &str) -> String {
        self.hash_key(key, &format!(":log:{token}:{claim_id}"))
    }

    /// The claim id of the owner of `key`'s claim under `token`, as the owner's writes check it
    /// and name its list by: this handle's, or read from the record when the handle did not
    /// make the claim (an operator's write by the token it read); "0", which no claim has,
    /// when the record is not that claim's.
    pub(super) async fn claim_id_of(
        &self,
        key: &Key,
        token: FencingToken,
    ) -> Result<String, Error> {
        let known = self.inner.claim_ids.of(key, token);
        if !known.is_empty() {
            return Ok(known);
        }
        let mut connection = self.inner.connection.clone();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.record_key(key))
            .query_async(&mut connection)
            .await
            .map_err(failed(Some(key)))?;
        let Some(value) = value else {
            return Ok("0".to_owned());
        };
        let stored = Stored::decode_owned(value).map_err(corrupt(key, "a record"))?;
        Ok(if stored.token == token {
            stored.claim_id.to_string()
        } else {
            "0".to_owned()
        })
    }

    /// Appends `step`'s write to the list of the owner of `saga`'s claim under `token` and
    /// `claim_id`: `Some(Held)` if the list was there; `None` if it was not (this owner's
    /// first step write, or a claim lost), for the script to decide.
    pub(super) async fn append_step(
        &self,
        saga: &Key,
        token: FencingToken,
        claim_id: &str,
        step: &StepRecord,
    ) -> Result<Option<Ownership>, Error> {
        let fields = step_fields(step);
        let list = self.owner_log(saga, token, claim_id);
        let group = format!("{}:{}:{}", step.index, fields.len(), wall_now_ms());
        let bytes: usize = fields
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let mut append = command(
            "RPUSHX",
            2 + 2 * fields.len(),
            list.len() + group.len() + bytes,
        );
        append.arg(&list).arg(group);
        for (name, value) in fields {
            append.arg(name).arg(value);
        }
        let length: i64 = self
            .acknowledged(
                Some(saga),
                Write::Command(&append),
                "the saga log entry",
                LOSABLE,
                |length| *length > 0,
            )
            .await?;
        Ok((length > 0).then_some(Ownership::Held))
    }
}
