//! The caller that holds a key: how it records the body's outcome, or lets go of the key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::call::action::Action;
use crate::call::codec::Codec;
use crate::call::context::{CallShared, Verified};
use crate::call::outcome::Disposition;
use crate::call::Failed;
use crate::key::Fingerprint;
use crate::key::Key;
use crate::store::{Claim, ClaimRequest, FencingToken, OnStale, Ownership, Store, StoredOutcome};
use crate::Error;

/// The caller that holds a key, and the three ways it lets go of it.
pub(crate) struct Owner<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) token: FencingToken,
    pub(crate) action: &'a Action,
    /// The action's name as this call knows it (a method's includes its type).
    pub(crate) name: &'static str,
    /// The body's outcome is unknown: the claim is to be left in doubt, not released.
    pub(crate) in_doubt: AtomicBool,
}

/// Whether an outcome reached the store.
enum Recorded {
    Yes,
    /// The store kept failing: the side effect happened but nothing says so.
    No,
}

/// How often, and after what pauses, recording a result is tried again when the store fails.
/// A retry after an attempt that did commit (its answer was lost) finds the result recorded
/// under its own token, which counts as recorded.
const RECORD_RETRIES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(250),
];

impl Owner<'_> {
    /// Whether the body's outcome left the key in doubt (to be marked once the heartbeat
    /// has stopped).
    pub(crate) fn is_in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::Acquire)
    }

    /// What the body's output leaves behind: a recorded result, a recorded final error, or a
    /// released key.
    pub(crate) async fn settle<R, T, E>(
        &self,
        codec: &Codec<R, T, E>,
        output: R,
        how: Disposition,
        shared: &CallShared,
    ) -> Result<(T, Disposition), Failed<E>> {
        let key = self.key;
        let verified = shared.verified();
        let how = if verified == Verified::Happened {
            Disposition::Verified
        } else {
            how
        };
        match (codec.into_result)(output) {
            Ok(value) => match (codec.encode)(&value) {
                // The effect happened and cannot be recorded: as for any outcome idem cannot
                // record, the key is left in doubt, never freed for a blind re-run.
                Ok(bytes) if bytes.len() > self.action.settings().max_value_bytes => {
                    self.in_doubt.store(true, Ordering::Release);
                    Err(Failed::Idem(self.too_large("the result", bytes.len())))
                }
                Ok(bytes) => {
                    let again = || (codec.encode)(&value).ok().map(StoredOutcome::Ok);
                    match self.record(StoredOutcome::Ok(bytes), again).await? {
                        Recorded::Yes => Ok((value, how)),
                        Recorded::No => Ok((value, Disposition::ExecutedUnrecorded)),
                    }
                }
                // The side effect happened: releasing the key would invite every retry to
                // run it again. The claim is left to run out and then follows `on_stale`.
                Err(error) => Err(Failed::Idem(Error::codec("the result", Some(&key), error))),
            },
            Err(error) if (codec.keeps_claim)(&error) => Err(Failed::Body(error, how)),
            // The effect may have happened: `verify` could not tell, or the error itself says
            // so (`in_doubt = …`). Released, the key would let a retry run it blind.
            Err(error)
                if verified == Verified::Failed
                    || codec
                        .in_doubt
                        .is_some_and(|is_ambiguous| is_ambiguous(&error)) =>
            {
                self.in_doubt.store(true, Ordering::Release);
                Err(Failed::Body(error, Disposition::InDoubt))
            }
            Err(error) => {
                let final_errors = codec
                    .final_errors
                    .as_ref()
                    .filter(|errors| (errors.is_final)(&error));
                let Some(errors) = final_errors else {
                    self.release().await;
                    return Err(Failed::Body(error, how));
                };
                match (errors.encode)(&error) {
                    // A final error says the effect did not happen: freeing the key is safe,
                    // as when it cannot be encoded.
                    Ok(bytes) if bytes.len() > self.action.settings().max_value_bytes => {
                        let too_large = self.too_large("the final error", bytes.len());
                        tracing::warn!(target: "idem", key = %key, error = %too_large, "a final error is too large to record; the key is released instead");
                        self.release().await;
                        Err(Failed::Body(error, how))
                    }
                    Ok(bytes) => {
                        let again = || (errors.encode)(&error).ok().map(StoredOutcome::Err);
                        let how = match self.record(StoredOutcome::Err(bytes), again).await? {
                            Recorded::Yes => how,
                            Recorded::No => Disposition::ExecutedUnrecorded,
                        };
                        Err(Failed::Body(error, how))
                    }
                    Err(codec_error) => {
                        tracing::warn!(target: "idem", key = %key, error = %codec_error, "a final error could not be encoded; the key is released instead");
                        self.release().await;
                        Err(Failed::Body(error, how))
                    }
                }
            }
        }
    }

    fn too_large(&self, what: &str, size: usize) -> Error {
        Error::TooLarge {
            key: self.key,
            what: what.to_owned(),
            size,
            limit: self.action.settings().max_value_bytes,
        }
    }

    /// Record the outcome, trying again a few times if the store fails (a busy file, a
    /// dropped connection); the heartbeat keeps the lease meanwhile. If the store still
    /// fails, the side effect has happened but is not recorded: the value still goes to the
    /// caller, with [`Disposition::ExecutedUnrecorded`] and an error event, and the key stays
    /// claimed until its lease runs out (then the next caller resumes it, or it waits for
    /// review).
    ///
    /// `again` encodes the outcome anew for a retry, so that the first try can hand its bytes
    /// to the store without a copy.
    async fn record<E>(
        &self,
        outcome: StoredOutcome,
        again: impl Fn() -> Option<StoredOutcome>,
    ) -> Result<Recorded, Failed<E>> {
        let ttl = self.action.settings().ttl;
        let mut pauses = RECORD_RETRIES.iter();
        let mut next = Some(outcome);
        while let Some(outcome) = next.take() {
            let attempt = self
                .store
                .complete(&self.key, self.token, outcome, ttl)
                .await;
            match attempt {
                Ok(Ownership::Held) => return Ok(Recorded::Yes),
                Ok(Ownership::Lost) => {
                    return Err(Failed::Idem(Error::LostOwnership {
                        key: self.key,
                        action: self.action.name(),
                    }))
                }
                Err(error) => match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(target: "idem", key = %self.key, %error, "recording the result failed; trying again");
                        tokio::time::sleep(*pause).await;
                        next = again();
                    }
                    None => {
                        tracing::error!(target: "idem", key = %self.key, %error, "the result could not be confirmed as recorded (a store that kept failing, or replicas that did not acknowledge it); unless the store did record it, the key stays claimed until its lease runs out");
                    }
                },
            }
        }
        Ok(Recorded::No)
    }

    /// Keep the claim, with its lease ended: the next call finds it in doubt and follows
    /// `verify`, then `on_stale`. Should the store fail, the lease runs out by itself.
    pub(crate) async fn leave_in_doubt(&self) {
        match self.store.leave_in_doubt(&self.key, self.token).await {
            Ok(Ownership::Held) if self.action.settings().on_stale == OnStale::Review => {
                self.park_for_review().await;
            }
            Ok(Ownership::Held) => {
                tracing::warn!(target: "idem", key = %self.key, "the call's outcome is unknown; the key is left in doubt");
            }
            Ok(Ownership::Lost) => {
                tracing::warn!(target: "idem", key = %self.key, "the key was settled or taken over before it could be left in doubt");
            }
            Err(error) => {
                tracing::warn!(target: "idem", key = %self.key, %error, "the key could not be marked in doubt; it is in doubt once its lease runs out");
            }
        }
    }

    /// Parks the key left in doubt for an operator at once (`on_stale = review`), rather than
    /// at the next call: a key nobody calls again would otherwise be purged with the dead
    /// claims once its TTL ran out, and the doubt forgotten. The claim that parks it is the
    /// one any next caller would make.
    async fn park_for_review(&self) {
        let settings = self.action.settings();
        let request = ClaimRequest {
            key: &self.key,
            fingerprint: &self.fingerprint,
            action: self.name,
            lease: settings.lease,
            ttl: settings.ttl,
            on_stale: OnStale::Review,
        };
        match self.store.claim(&request).await {
            Ok(Claim::NeedsReview { .. }) => {
                tracing::warn!(target: "idem", key = %self.key, "the call's outcome is unknown; the key waits for an operator's review");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(target: "idem", key = %self.key, %error, "the key could not be parked for review; the next call parks it");
            }
        }
    }

    /// Let the next call run the body again (the body failed in a way worth retrying).
    async fn release(&self) {
        match self.store.release(&self.key, self.token).await {
            Ok(Ownership::Held) => {}
            Ok(Ownership::Lost) => {
                tracing::warn!(target: "idem", key = %self.key, "the key was taken over before it could be released");
            }
            Err(error) => {
                tracing::warn!(target: "idem", key = %self.key, %error, "the key could not be released; it frees itself when its lease runs out");
            }
        }
    }
}
