//! A reference to a store and a shared store are stores too, so that `store = &store` and
//! `store = Arc<dyn Store>` work wherever a store does. Every method is forwarded, the ones
//! with defaults too (a default here would hide the store's own answer); the conformance
//! suite runs once through `Arc<MemoryStore>` to hold that.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::key::Key;
use crate::store::{Boxed, Inspect, SagaStore};
use crate::store::{
    Claim, ClaimRequest, FencingToken, Ownership, Record, RecordCount, RecordQuery, SagaLog,
    SagaQuery, SagaWrite, StaleSaga, Store, StoredOutcome,
};
use crate::Error;

// The pointers hand on the future of the store they point to, as it is: an `async fn` here
// would box it a second time on every call (the default store is an `Arc<dyn Store>`, and a
// store given as `&dyn Store` is reached through `&S`). The signatures are those
// `async_trait` gives the trait's methods.
macro_rules! forward_store {
    ($($pointer:ty),*) => {$(
        #[async_trait]
        impl<S: Store + ?Sized> Store for $pointer {
            fn name(&self) -> &'static str {
                (**self).name()
            }

            fn shared(&self) -> Option<Arc<dyn Store>> {
                (**self).shared()
            }

            fn claim<'s, 'r, 'k, 'async_trait>(
                &'s self,
                request: &'r ClaimRequest<'k>,
            ) -> Boxed<'async_trait, Claim>
            where
                's: 'async_trait,
                'r: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).claim(request)
            }

            fn claim_without_expiry<'s, 'r, 'k, 'async_trait>(
                &'s self,
                request: &'r ClaimRequest<'k>,
            ) -> Boxed<'async_trait, Claim>
            where
                's: 'async_trait,
                'r: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).claim_without_expiry(request)
            }

            fn complete<'s, 'k, 'async_trait>(
                &'s self,
                key: &'k Key,
                token: FencingToken,
                outcome: StoredOutcome,
                ttl: Duration,
            ) -> Boxed<'async_trait, Ownership>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).complete(key, token, outcome, ttl)
            }

            fn release<'s, 'k, 'async_trait>(
                &'s self,
                key: &'k Key,
                token: FencingToken,
            ) -> Boxed<'async_trait, Ownership>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).release(key, token)
            }

            fn heartbeat<'s, 'k, 'async_trait>(
                &'s self,
                key: &'k Key,
                token: FencingToken,
                lease: Duration,
            ) -> Boxed<'async_trait, Ownership>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).heartbeat(key, token, lease)
            }

            fn leave_in_doubt<'s, 'k, 'async_trait>(
                &'s self,
                key: &'k Key,
                token: FencingToken,
            ) -> Boxed<'async_trait, Ownership>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).leave_in_doubt(key, token)
            }

            fn wait<'s, 'k, 'async_trait>(
                &'s self,
                key: &'k Key,
                token: FencingToken,
                at_most: Duration,
            ) -> Boxed<'async_trait, ()>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).wait(key, token, at_most)
            }

            fn get<'s, 'k, 'async_trait>(&'s self, key: &'k Key) -> Boxed<'async_trait, Option<Record>>
            where
                's: 'async_trait,
                'k: 'async_trait,
                Self: 'async_trait,
            {
                (**self).get(key)
            }

            fn purge_expired<'s, 'async_trait>(&'s self) -> Boxed<'async_trait, u64>
            where
                's: 'async_trait,
                Self: 'async_trait,
            {
                (**self).purge_expired()
            }
        }
    )*};
}

forward_store!(&S, Arc<S>, Box<S>);

/// `SagaStore` and `Inspect` forwarded to an inner store, the same for every wrapper:
/// `[generics] Type, |this| expression reaching the inner store from this`, and optionally
/// `on_forget = |this, key| expression` run before a `forget_result` is forwarded.
macro_rules! forward_logs_and_inspect {
    (
        [$($generics:tt)*] $ty:ty, |$this:ident| $inner:expr
        $(, on_forget = |$forget_this:ident, $forget_key:ident| $on_forget:expr)?
    ) => {
    // `inner!(self)` is the inner store of a method's `self`.
    macro_rules! inner {
        ($self_:expr) => {{
            let $this = $self_;
            $inner
        }};
    }
    #[async_trait]
    impl<$($generics)*> SagaStore for $ty {
        async fn write_saga(
            &self,
            saga: &Key,
            id: &str,
            token: FencingToken,
            write: SagaWrite<'_>,
        ) -> Result<Ownership, Error> {
            inner!(self).write_saga(saga, id, token, write).await
        }

        async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
            inner!(self).read_saga(saga).await
        }

        async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
            inner!(self).stale_sagas(limit).await
        }
    }

    #[async_trait]
    impl<$($generics)*> Inspect for $ty {
        async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
            inner!(self).list_records(query).await
        }

        async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
            inner!(self).record_counts().await
        }

        async fn count_expired(&self) -> Result<u64, Error> {
            inner!(self).count_expired().await
        }

        async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
            inner!(self).purge_expired_batch(limit).await
        }

        async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
            inner!(self).list_sagas(query).await
        }

        async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
            inner!(self).resolve_saga(saga, note).await
        }

        async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
            $({
                let ($forget_this, $forget_key) = (self, key);
                $on_forget;
            })?
            inner!(self).forget_result(key, token).await
        }
    }
    };
}
pub(crate) use forward_logs_and_inspect;

forward_logs_and_inspect!([S: Store + ?Sized] &S, |this| &**this);
forward_logs_and_inspect!([S: Store + ?Sized] Arc<S>, |this| &**this);
forward_logs_and_inspect!([S: Store + ?Sized] Box<S>, |this| &**this);
