//! How a call converts and records the values of one function, and reads back a recorded
//! one.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::outcome::Disposition;
use crate::call::Failed;
use crate::key::Key;
use crate::store::StoredOutcome;
use crate::Error;

/// An `#[idempotent]` function returns a `Result`.
#[diagnostic::on_unimplemented(
    message = "an `#[idempotent]` or `#[saga_step]` function must return a `Result`, not `{Self}`",
    label = "not a `Result`",
    note = "return `Result<T, E>`: `T` (`Serialize + DeserializeOwned`) is recorded and replayed, `E` (`From<idem::Error>`) also carries idem's own errors"
)]
pub trait IdemReturn: Sized {
    /// The `Ok` type.
    type Ok;
    /// The `Err` type.
    type Err;
    /// The value as a `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// The value from a `Result`.
    fn from_result(result: Result<Self::Ok, Self::Err>) -> Self;
}

impl<T, E> IdemReturn for Result<T, E> {
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Self {
        self
    }

    fn from_result(result: Self) -> Self {
        result
    }
}

/// How a call converts and records the values of one function: plain function pointers,
/// made where the types are known to fit, so that the protocol itself has no trait bounds
/// (and a type that does not fit is reported once, where the user wrote it).
#[derive(Debug)]
pub struct Codec<R, T, E> {
    pub(crate) into_result: fn(R) -> Result<T, E>,
    pub(crate) from_result: fn(Result<T, E>) -> R,
    pub(crate) from_error: fn(Error) -> E,
    pub(crate) encode: fn(&T) -> serde_json::Result<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> serde_json::Result<T>,
    pub(crate) final_errors: Option<FinalErrors<E>>,
    /// Errors after which the effect may have happened (`in_doubt = …`): the claim is kept,
    /// in doubt, rather than released.
    pub(crate) in_doubt: Option<fn(&E) -> bool>,
    /// Errors after which the claim is neither recorded nor released, but left to run out
    /// (then `on_stale` decides): a saga whose rollback could not finish, for recovery.
    pub(crate) keeps_claim: fn(&E) -> bool,
}

/// How errors that an action declares final are recognised and recorded.
#[derive(Debug)]
pub(crate) struct FinalErrors<E> {
    pub(crate) is_final: fn(&E) -> bool,
    pub(crate) encode: fn(&E) -> serde_json::Result<Vec<u8>>,
    pub(crate) decode: fn(&[u8]) -> serde_json::Result<E>,
}

impl<R> Codec<R, R::Ok, R::Err>
where
    R: IdemReturn,
    R::Ok: Serialize + DeserializeOwned,
    R::Err: From<Error>,
{
    pub(crate) fn new() -> Self {
        Codec {
            into_result: R::into_result,
            from_result: R::from_result,
            from_error: R::Err::from,
            encode: |value| serde_json::to_vec(value),
            decode: |bytes| serde_json::from_slice(bytes),
            final_errors: None,
            in_doubt: None,
            keeps_claim: |_| false,
        }
    }
}

impl<R, T, E> Codec<R, T, E> {
    /// The same codec, keeping the key in doubt after the errors for which `is_ambiguous` is
    /// true (a timeout after the request was sent, a reset, a 5xx): the effect may have
    /// happened, so the key is not released; the next call follows `verify`, then
    /// `on_stale`.
    pub fn in_doubt(mut self, is_ambiguous: fn(&E) -> bool) -> Self {
        self.in_doubt = Some(is_ambiguous);
        self
    }

    /// The same codec, recording the errors for which `is_final` is true.
    pub fn caching_errors(mut self, is_final: fn(&E) -> bool) -> Self
    where
        E: Serialize + DeserializeOwned,
    {
        self.final_errors = Some(FinalErrors {
            is_final,
            encode: |error| serde_json::to_vec(error),
            decode: |bytes| serde_json::from_slice(bytes),
        });
        self
    }
}

/// A recorded outcome, decoded as the call's value, or its final error.
pub(crate) fn replay<R, T, E>(
    outcome: StoredOutcome,
    codec: &Codec<R, T, E>,
    key: &Key,
    how: Disposition,
) -> Result<(T, Disposition), Failed<E>> {
    let corrupt = |error: serde_json::Error| {
        Failed::Idem(Error::codec("the recorded result", Some(key), error))
    };
    match outcome {
        StoredOutcome::Ok(bytes) => (codec.decode)(&bytes).map(|value| (value, how)).map_err(corrupt),
        StoredOutcome::Err(bytes) => match &codec.final_errors {
            Some(errors) => match (errors.decode)(&bytes) {
                Ok(error) => Err(Failed::Replayed(error, how)),
                Err(error) => Err(corrupt(error)),
            },
            None => Err(Failed::Idem(Error::codec(
                "the recorded error",
                Some(key),
                "a final error is recorded for this key, but the action does not cache errors (`cache_err`)",
            ))),
        },
    }
}
