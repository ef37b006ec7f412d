//! A write whose answer never came back, settled by reading the record back.
//!
//! A statement that was sent and whose answer was lost (the store's wait ran out, the
//! connection was cut: a failover, a backend terminated while its commit waited for a
//! synchronous standby) may have committed or not. Each write says, as a `judge`, what the
//! record shows of it; [`PostgresStore::write`] reads the record back on a fresh connection
//! (retrying until the statement timeout has run out: a failover takes a while) and answers
//! as the record says:
//!
//! ```text
//! write       the record shows                         answer
//! complete    completed under the token                Held (as if the commit had answered)
//!             in progress or parked under the token    run it again
//!             anything else                            Lost
//! release     no record                                Held
//!             in progress or parked under the token    run it again
//!             anything else                            Lost
//! heartbeat,  in progress under the token              run it again
//! saga write  anything else                            Lost
//! claim       a live claim of the caller's payload     a store error: it may be this call's
//!                                                      claim or a duplicate's, and only the
//!                                                      statement's answer had its token
//!             anything else                            run it again (it finds the record)
//! ```
//!
//! A write that could not even get a connection (a failover under way) was not sent; it is
//! tried again after a pause, within the same deadline, so that a body that ends during a
//! failover still has its result recorded.
//!
//! Running a write again is safe once the record shows it not made: every write is fenced by
//! the token, and one still in flight (a commit waiting for a standby, invisible to a read)
//! holds the row's lock, so the write run again waits for it and sees its effect. A read back
//! that fails until the deadline, or a write run again that fails, is a store error naming the
//! key that says the write may have been made.

use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::decode::looked;
use super::{described, PostgresStore};
use crate::key::{Fingerprint, Key};
use crate::store::{FencingToken, Found, Ownership, Status};
use crate::Error;

/// Why a statement has no answer.
pub(super) enum Unanswered {
    /// No connection could be had: it was not sent.
    Unsent(Error),
    /// The server refused it: nothing it would write was written.
    Failed(Error),
    /// It was sent and its answer never came back: it may have been written.
    Lost(Error),
}

impl Unanswered {
    /// The error, for a statement whose missing answer nothing settles (a read: it fails).
    pub(super) fn into_error(self) -> Error {
        match self {
            Unanswered::Unsent(error) | Unanswered::Failed(error) | Unanswered::Lost(error) => {
                error
            }
        }
    }
}

/// Whether a driver's error means that the statement's answer was lost (the connection was
/// closed or broke while it ran), rather than that the server refused it. An error the server
/// sent ends the transaction without a commit: PostgreSQL reports a failure after its commit
/// record only as a WARNING (a cancelled wait for a synchronous standby).
pub(super) fn answer_lost(error: &tokio_postgres::Error) -> bool {
    if error.as_db_error().is_some() {
        return false;
    }
    let io = std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>());
    error.is_closed() || io
}

/// What the record, read back, says of a write whose answer was lost.
pub(super) enum Judged<T> {
    /// The write is made, or the record shows that it cannot be: this is its answer.
    Answer(T),
    /// The write is not made and can be: run it again.
    Again,
    /// The record cannot tell, for this reason.
    Unknown(&'static str),
}

/// `complete` under `token`.
pub(super) fn completed(found: Option<(&Found, i64)>, token: FencingToken) -> Judged<Ownership> {
    match found {
        Some((found, _)) if found.completed_by(token) => Judged::Answer(Ownership::Held),
        Some((found, _)) if found.settled_by(token) => Judged::Again,
        _ => Judged::Answer(Ownership::Lost),
    }
}

/// `release` under `token`.
pub(super) fn released(found: Option<(&Found, i64)>, token: FencingToken) -> Judged<Ownership> {
    match found {
        None => Judged::Answer(Ownership::Held),
        Some((found, _)) if found.settled_by(token) => Judged::Again,
        Some(_) => Judged::Answer(Ownership::Lost),
    }
}

/// A write that needs the claim of `token` in progress: a heartbeat, a saga log write.
pub(super) fn renewed(found: Option<(&Found, i64)>, token: FencingToken) -> Judged<Ownership> {
    match found {
        Some((found, _)) if found.renewed_by(token) => Judged::Again,
        _ => Judged::Answer(Ownership::Lost),
    }
}

/// A claim (either statement) of the payload `fingerprint`.
pub(super) fn claimed<T>(found: Option<(&Found, i64)>, fingerprint: &Fingerprint) -> Judged<T> {
    match found {
        Some((found, now_ms))
            if found.status == Status::InProgress
                && !found.is_stale_claim(now_ms)
                && found.fingerprint == *fingerprint =>
        {
            Judged::Unknown(
                "the key holds a live claim of this payload, which may be this call's (only \
                 the lost answer had its token) or a duplicate's: the body is not run now, and \
                 a claim of this call's runs out with its lease",
            )
        }
        _ => Judged::Again,
    }
}

/// The first pause between reads back; each next one is twice as long, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(25);
const MAX_PAUSE: Duration = Duration::from_millis(400);

impl PostgresStore {
    /// Runs `statement`, a write on the record of `key` (`what`, for errors), and makes its
    /// answer with `answer`. When its answer was lost, reads the record back (see the
    /// module's table) and answers what `judge` makes of it, runs the write again, or fails
    /// with a store error naming the key that says the write may have been made. When no
    /// connection can be had (a failover under way: the old primary is gone, the standby not
    /// yet promoted), nothing was sent: it tries again after a pause. Both wait at most the
    /// statement timeout from the first trouble.
    pub(super) async fn write<T>(
        &self,
        key: &Key,
        what: &str,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
        answer: impl Fn(Vec<Row>) -> Result<T, Error>,
        judge: impl Fn(Option<(&Found, i64)>) -> Judged<T>,
    ) -> Result<T, Error> {
        let mut deadline = None;
        // The error of the first attempt whose answer was lost, if one was.
        let mut lost: Option<Error> = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let unanswered = match self.attempt(Some(key), statement, params).await {
                Ok(rows) => return answer(rows),
                Err(unanswered) => unanswered,
            };
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.inner.read_back_within);
            // After an answer was lost, a failure to run the write again does not say that it
            // was not made.
            let unsettled =
                |then: String| lost.as_ref().map(|first| in_doubt(key, what, first, then));
            let error = match unanswered {
                Unanswered::Failed(error) => {
                    let then = format!("running it again failed: {}", said(&error));
                    return Err(unsettled(then).unwrap_or(error));
                }
                Unanswered::Unsent(error) if Instant::now() + pause >= deadline => {
                    let then = format!("it could not be run again: {}", said(&error));
                    return Err(unsettled(then).unwrap_or(error));
                }
                Unanswered::Unsent(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
                Unanswered::Lost(error) => error,
            };
            let first = &*lost.get_or_insert(error);
            let found = match self.read_back(key, deadline).await {
                Ok(looked) => looked,
                Err(corrupt @ Error::Codec { .. }) => return Err(corrupt),
                Err(failed) => {
                    let then = format!("reading the record back failed {}", said(&failed));
                    return Err(in_doubt(key, what, first, then));
                }
            };
            match judge(found.as_ref().map(|(found, now_ms)| (found, *now_ms))) {
                Judged::Answer(answer) => {
                    tracing::info!(target: "idem", key = %key, error = %first, "{what}: its answer was lost; the record read back answers it");
                    return Ok(answer);
                }
                Judged::Again if Instant::now() < deadline => {
                    tracing::info!(target: "idem", key = %key, error = %first, "{what}: its answer was lost and the record shows it not made; running it again");
                }
                Judged::Again => {
                    let then =
                        "the record still shows it not made when the statement timeout ran out";
                    return Err(in_doubt(key, what, first, then.to_owned()));
                }
                Judged::Unknown(why) => return Err(in_doubt(key, what, first, why.to_owned())),
            }
        }
    }

    /// The record of `key` as the `peek` statement reads it, with the store's clock, from a
    /// fresh connection; tried again after a pause until `deadline`, so that a failover in
    /// progress is waited out.
    async fn read_back(&self, key: &Key, deadline: Instant) -> Result<Option<(Found, i64)>, Error> {
        let mut pause = FIRST_PAUSE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match self.read_once(key, left).await {
                Ok(row) => return looked(row.as_ref(), key),
                Err(error) => error,
            };
            if Instant::now() + pause >= deadline {
                return Err(Error::store(
                    "postgres",
                    Some(key),
                    format!(
                        "until the statement timeout ({} s) ran out: {error}",
                        self.inner.read_back_within.as_secs_f64()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One read of the record of `key` on a new connection, within `left`: one of the
    /// store's own making when it opened the pool from a URL (a pooled one may still be a
    /// connection to a server that is gone, and the pool may be busy; no more of them at once
    /// than the pool has connections), else one from the pool given to it, closed if its
    /// answer does not come in time.
    async fn read_once(&self, key: &Key, left: Duration) -> Result<Option<Row>, String> {
        let hex = key.to_string();
        let statement = &self.inner.sql.peek;
        let late = || "no answer".to_owned();
        match &self.inner.direct {
            Some(direct) => {
                let read = async {
                    // Never closed: the store holds it.
                    let _turn = self.inner.read_backs.acquire().await.ok();
                    let (client, driving) = direct.connect().await?;
                    let row = client.query_opt(statement, &[&hex]).await;
                    driving.abort();
                    row
                };
                match tokio::time::timeout(left, read).await {
                    Ok(row) => row.map_err(|e| described(&e)),
                    Err(_) => Err(late()),
                }
            }
            None => {
                let got = tokio::time::timeout(left, self.inner.pool.get()).await;
                let client = got.map_err(|_| late())?.map_err(|e| described(&e))?;
                match tokio::time::timeout(left, client.query_opt(statement, &[&hex])).await {
                    Ok(row) => row.map_err(|e| described(&e)),
                    Err(_) => {
                        drop(deadpool_postgres::Object::take(client));
                        Err(late())
                    }
                }
            }
        }
    }
}

/// The error of a write (`what`) whose answer was lost (`first`) and which the record could
/// not settle (`then`): it may have been made.
fn in_doubt(key: &Key, what: &str, first: &Error, then: String) -> Error {
    let first = said(first);
    Error::store(
        "postgres",
        Some(key),
        format!("{what}: its answer was lost ({first}), and {then}; it may have been made"),
    )
}

/// What a store error says, without the store and key that the error it goes into names.
fn said(error: &Error) -> String {
    match error {
        Error::Store { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn record(status: Status, token: FencingToken, expires_at_ms: i64) -> Found {
        Found {
            status,
            token,
            fingerprint: Fingerprint::from_bytes([1; 32]),
            expires_at_ms: Some(expires_at_ms),
            claim_ttl_ms: None,
        }
    }

    fn answer<T: PartialEq + std::fmt::Debug>(judged: Judged<T>) -> Option<T> {
        match judged {
            Judged::Answer(answer) => Some(answer),
            Judged::Again | Judged::Unknown(_) => None,
        }
    }

    fn again<T>(judged: Judged<T>) -> bool {
        matches!(judged, Judged::Again)
    }

    /// A record as a read back finds it, at `NOW`.
    fn seen(found: &Found) -> Option<(&Found, i64)> {
        Some((found, NOW))
    }

    /// The module's table, row by row.
    #[test]
    fn the_record_read_back_settles_each_write_as_the_table_says() {
        let live = |status, token| record(status, token, NOW + 5_000);
        let ours = 7;

        // complete
        let done = live(Status::Completed, ours);
        assert_eq!(answer(completed(seen(&done), ours)), Some(Ownership::Held));
        for status in [Status::InProgress, Status::NeedsReview] {
            assert!(again(completed(seen(&live(status, ours)), ours)));
        }
        let taken = live(Status::InProgress, ours + 1);
        assert_eq!(answer(completed(seen(&taken), ours)), Some(Ownership::Lost));
        assert_eq!(answer(completed(None, ours)), Some(Ownership::Lost));

        // release
        assert_eq!(answer(released(None, ours)), Some(Ownership::Held));
        assert!(again(released(seen(&live(Status::InProgress, ours)), ours)));
        assert_eq!(answer(released(seen(&taken), ours)), Some(Ownership::Lost));

        // heartbeat, saga write
        assert!(again(renewed(seen(&live(Status::InProgress, ours)), ours)));
        assert_eq!(answer(renewed(seen(&done), ours)), Some(Ownership::Lost));
        assert_eq!(answer(renewed(seen(&taken), ours)), Some(Ownership::Lost));
        assert_eq!(answer(renewed(None, ours)), Some(Ownership::Lost));

        // claim
        let fingerprint = Fingerprint::from_bytes([1; 32]);
        let other = Fingerprint::from_bytes([2; 32]);
        let claim = live(Status::InProgress, ours);
        assert!(matches!(
            claimed::<()>(seen(&claim), &fingerprint),
            Judged::Unknown(_)
        ));
        assert!(again(claimed::<()>(None, &fingerprint)));
        assert!(again(claimed::<()>(seen(&claim), &other)));
        let dead = record(Status::InProgress, ours, NOW - 1);
        assert!(again(claimed::<()>(seen(&dead), &fingerprint)));
        assert!(again(claimed::<()>(seen(&done), &fingerprint)));
        assert!(again(claimed::<()>(
            seen(&live(Status::NeedsReview, ours)),
            &fingerprint
        )));
    }
}
