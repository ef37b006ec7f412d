//! An action: what one idempotent function is, and the policy its calls follow.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::call::Call;
use crate::key::{Fingerprint, Key, KeyArg, KeyDeriver};
use crate::store::OnStale;
use crate::Error;

/// What a caller does when it finds its key held by another caller with a live lease.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{Action, OnConflict};
///
/// // A chat reply can wait a little for a duplicate; a batch job should not wait at all.
/// static REPLY: Action = Action::new("reply").on_conflict(OnConflict::Wait(Duration::from_secs(5)));
/// static EXPORT: Action = Action::new("export").on_conflict(OnConflict::Fail);
/// assert_eq!(EXPORT.settings().on_conflict, OnConflict::Fail);
/// # let _ = &REPLY;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Wait up to this long for the holder to finish, then replay its result (or take over if
    /// the holder's lease expires first). Past the limit: [`Error::InProgress`].
    Wait(Duration),
    /// Return [`Error::InProgress`] at once.
    Fail,
}

/// What an [`Action`] was built with (see [`Action::settings`]): the namespace and version
/// that form its keys with its name, and the policy of its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActionSettings {
    /// Keys of different namespaces never meet.
    pub namespace: &'static str,
    /// A new version gives every call a new key.
    pub version: u32,
    /// How long a completed result is kept and replayed.
    pub ttl: Duration,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// What a duplicate does while another caller holds the key.
    pub on_conflict: OnConflict,
    /// What the next caller does with a key in doubt.
    pub on_stale: OnStale,
    /// The largest result (serialized) that is recorded; a larger one is
    /// [`Error::TooLarge`] and leaves the key in doubt.
    pub max_value_bytes: usize,
}

/// One idempotent action: its name, namespace and version (which form every key) and the
/// policy of its calls. `#[idempotent]` makes one `static` of these per function; it can also
/// be built by hand to use the runtime without the macro.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{Action, OnConflict};
///
/// static SEND_INVOICE: Action = Action::new("send_invoice")
///     .namespace("billing")
///     .ttl(Duration::from_secs(24 * 3600))
///     .on_conflict(OnConflict::Fail);
///
/// let key = SEND_INVOICE.key(&("customer-42", 7)).unwrap();
/// assert_eq!(key, SEND_INVOICE.key(&("customer-42", 7)).unwrap());
/// assert_ne!(key, SEND_INVOICE.key(&("customer-42", 8)).unwrap());
/// ```
#[derive(Debug)]
pub struct Action {
    name: &'static str,
    namespace: &'static str,
    version: u32,
    ttl: Duration,
    lease: Duration,
    on_conflict: OnConflict,
    on_stale: OnStale,
    max_value_bytes: usize,
    /// The function it belongs to (`module::function`), for `#[idempotent]`'s actions: they
    /// take part in the check that two functions never share keys.
    origin: Option<&'static str>,
    /// A method's action: its origin is its `Self` type's, learned at its first call.
    method: bool,
    /// Whether `name` is a method's bare name, to be prefixed with its `Self` type at its
    /// first call (`SendEmail::call`).
    prefixed: bool,
    /// A method action's first `Self` type (its `type_name`) and the action made for it; the
    /// actions of other `Self` types (a trait's default method, instantiations of a generic
    /// impl) are found in `identity::for_self`.
    bound: OnceLock<(&'static str, &'static Action)>,
    /// The answer of the identity check, once made (`Some`: the clashing functions).
    checked: OnceLock<Option<(String, String)>>,
    deriver: OnceLock<KeyDeriver>,
}

impl Action {
    /// How long a result is kept and replayed by default: one day.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    /// How long a claim holds without a heartbeat by default. Heartbeats renew it every third
    /// of that while the body runs, so it bounds how soon a dead owner's key is free again.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    /// How long a duplicate waits for the caller that holds the key, by default.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
    /// The namespace of actions that name none.
    pub const DEFAULT_NAMESPACE: &'static str = "default";
    /// The largest value recorded by default: 1 MiB (serialized). Every store takes far
    /// more (Redis strings 512 MB, PostgreSQL `bytea` 1 GB, SQLite 1 GB blobs), but a result
    /// or a saga step's arguments that large is almost always a model's runaway input or a
    /// tool's runaway output, and would be copied on every replay.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

    /// An action with this name and the defaults: namespace `default`, version 1, ttl 24h,
    /// lease 10s, `on_conflict = wait(30s)`, `on_stale = takeover`.
    pub const fn new(name: &'static str) -> Self {
        Action {
            name,
            namespace: Self::DEFAULT_NAMESPACE,
            version: 1,
            ttl: Self::DEFAULT_TTL,
            lease: Self::DEFAULT_LEASE,
            on_conflict: OnConflict::Wait(Self::DEFAULT_WAIT),
            on_stale: OnStale::TakeOver,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            origin: None,
            method: false,
            prefixed: false,
            bound: OnceLock::new(),
            checked: OnceLock::new(),
            deriver: OnceLock::new(),
        }
    }

    /// The function this action belongs to (`module::function`): `#[idempotent]` sets it, so
    /// that two different functions with the same namespace, name and version are refused
    /// ([`Error::ActionClash`]) instead of sharing keys.
    #[doc(hidden)]
    pub const fn defined_at(mut self, origin: &'static str) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The action is a method's: its first call learns the method's `Self` type, and, with
    /// `default_name` (no `name = …`), prefixes the name with it.
    #[doc(hidden)]
    pub const fn method(mut self, default_name: bool) -> Self {
        self.method = true;
        self.prefixed = default_name;
        self
    }

    /// Keys of different namespaces never meet, even for actions of the same name.
    pub const fn namespace(mut self, namespace: &'static str) -> Self {
        self.namespace = namespace;
        self
    }

    /// A new version gives every call a new key: the way to retire old results on purpose.
    pub const fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// How long a completed result is kept and replayed.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim holds without a heartbeat (clamped to at least 1 ms).
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = if lease.is_zero() {
            Duration::from_millis(1)
        } else {
            lease
        };
        self
    }

    /// What a duplicate does while another caller holds the key.
    pub const fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }

    /// What the next caller does with a key whose owner died inside the body.
    pub const fn on_stale(mut self, on_stale: OnStale) -> Self {
        self.on_stale = on_stale;
        self
    }

    /// The largest result, serialized, that a call records (default
    /// [`Action::DEFAULT_MAX_VALUE_BYTES`], 1 MiB; `#[idempotent(max_value_bytes = …)]`).
    /// The body of a call whose result is larger has run, so its key is not freed for a
    /// blind re-run: the call returns [`Error::TooLarge`] and the key is left in doubt (the
    /// next call follows `on_stale`). `usize::MAX` sets no limit.
    ///
    /// ```
    /// use idem_runtime::Action;
    ///
    /// // Page contents can be large; keep up to 8 MiB of them.
    /// static FETCH: Action = Action::new("fetch_page").max_value_bytes(8 << 20);
    /// assert_eq!(FETCH.settings().max_value_bytes, 8 << 20);
    /// assert_eq!(Action::new("send").settings().max_value_bytes, Action::DEFAULT_MAX_VALUE_BYTES);
    /// ```
    pub const fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// The action's name (part of every key). A method's default name includes its `Self`
    /// type (`SendEmail::call`): its calls run under an action of that name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// `namespace/name@version`: what makes the action's keys.
    fn identity(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name(), self.version)
    }

    /// The identity, when it is known before the first call (not a method's default name).
    pub(crate) fn static_identity(&self) -> Option<String> {
        (!self.method).then(|| self.identity())
    }

    /// The function the action belongs to.
    pub(crate) fn origin(&self) -> Option<&'static str> {
        self.origin
    }

    /// The action a method's call runs under, for its `Self` type `S`: the same settings, the
    /// name `S::method` unless `name = …` fixed it, and `S`'s path as its origin. Each `Self`
    /// type has its own (made once): one `static` serves every implementor of a trait's default
    /// method and every instantiation of a generic impl, and they must not share keys.
    pub(crate) fn for_self<S: ?Sized>(&'static self) -> &'static Action {
        if !self.method {
            return self;
        }
        let type_name = std::any::type_name::<S>();
        if let Some((bound, action)) = self.bound.get() {
            if std::ptr::eq(*bound, type_name) || *bound == type_name {
                return action;
            }
            return crate::call::identity::for_self(self, type_name);
        }
        let action = crate::call::identity::for_self(self, type_name);
        let _ = self.bound.set((type_name, action));
        action
    }

    /// The action of this method for the `Self` type named `type_name`, made anew (leaked
    /// once per type by `identity::for_self`).
    pub(crate) fn made_for(&self, type_name: &str) -> Action {
        let function = self
            .origin
            .map_or(self.name, |o| o.rsplit("::").next().unwrap_or(o));
        let (name, origin) = if self.prefixed {
            let short = crate::call::identity::short_type_name(type_name);
            (
                format!("{short}::{}", self.name),
                format!("{type_name}::{function}"),
            )
        } else {
            // A name fixed by `name = …` is one action for every instantiation of the type.
            let path = crate::call::identity::type_path(type_name);
            (self.name.to_owned(), format!("{path}::{function}"))
        };
        Action {
            name: Box::leak(name.into_boxed_str()),
            origin: Some(Box::leak(origin.into_boxed_str())),
            method: false,
            prefixed: false,
            bound: OnceLock::new(),
            checked: OnceLock::new(),
            deriver: OnceLock::new(),
            ..*self
        }
    }

    /// Refuses to derive keys for an action whose identity another function has.
    fn check_identity(&self) -> Result<(), Error> {
        let Some(origin) = self.origin() else {
            return Ok(());
        };
        let clash = self.checked.get_or_init(|| {
            match crate::call::identity::check(self.identity(), origin) {
                Ok(()) => None,
                Err(Error::ActionClash { first, second, .. }) => Some((first, second)),
                Err(_) => None,
            }
        });
        match clash {
            None => Ok(()),
            Some((first, second)) => Err(Error::ActionClash {
                action: self.identity(),
                first: first.clone(),
                second: second.clone(),
            }),
        }
    }

    /// What the action was built with, read back: one field per setter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_runtime::{Action, OnConflict, OnStale};
    ///
    /// static CHARGE: Action = Action::new("charge_card")
    ///     .namespace("billing")
    ///     .ttl(Duration::from_secs(3600))
    ///     .on_conflict(OnConflict::Fail)
    ///     .on_stale(OnStale::Review);
    /// let settings = CHARGE.settings();
    /// assert_eq!((settings.namespace, settings.version), ("billing", 1));
    /// assert_eq!(settings.ttl, Duration::from_secs(3600));
    /// assert_eq!(settings.lease, Action::DEFAULT_LEASE);
    /// assert_eq!(settings.on_conflict, OnConflict::Fail);
    /// assert_eq!(settings.on_stale, OnStale::Review);
    /// ```
    pub const fn settings(&self) -> ActionSettings {
        ActionSettings {
            namespace: self.namespace,
            version: self.version,
            ttl: self.ttl,
            lease: self.lease,
            on_conflict: self.on_conflict,
            on_stale: self.on_stale,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// The action's namespace (part of every key).
    #[deprecated(since = "0.2.0", note = "use `settings().namespace`")]
    pub const fn namespace_name(&self) -> &'static str {
        self.settings().namespace
    }

    /// The action's version (part of every key).
    #[deprecated(since = "0.2.0", note = "use `settings().version`")]
    pub const fn version_number(&self) -> u32 {
        self.settings().version
    }

    /// How long a completed result is kept.
    #[deprecated(since = "0.2.0", note = "use `settings().ttl`")]
    pub const fn ttl_duration(&self) -> Duration {
        self.settings().ttl
    }

    /// How long a claim holds without a heartbeat.
    #[deprecated(since = "0.2.0", note = "use `settings().lease`")]
    pub const fn lease_duration(&self) -> Duration {
        self.settings().lease
    }

    /// What a duplicate does while another caller holds the key.
    #[deprecated(since = "0.2.0", note = "use `settings().on_conflict`")]
    pub const fn conflict_policy(&self) -> OnConflict {
        self.settings().on_conflict
    }

    /// What the next caller does with a key whose owner died.
    #[deprecated(since = "0.2.0", note = "use `settings().on_stale`")]
    pub const fn stale_policy(&self) -> OnStale {
        self.settings().on_stale
    }

    /// The key of a call whose identifying arguments are `key_args` (a tuple or an array, in a
    /// fixed order).
    pub fn key<A: Serialize + ?Sized>(&self, key_args: &A) -> Result<Key, Error> {
        self.digest(key_args, "the key arguments")
            .map(Key::from_bytes)
    }

    /// The fingerprint of a call's whole payload: every argument that is not skipped.
    pub fn fingerprint<A: Serialize + ?Sized>(&self, payload: &A) -> Result<Fingerprint, Error> {
        self.digest(payload, "the arguments")
            .map(Fingerprint::from_bytes)
    }

    fn digest<A: Serialize + ?Sized>(
        &self,
        args: &A,
        what: &'static str,
    ) -> Result<[u8; 32], Error> {
        self.check_identity()?;
        self.deriver()
            .digest(args)
            .map_err(|e| Error::codec(what, None, e))
    }

    /// The call made by `#[idempotent]`: key and payload as lists of arguments.
    pub(crate) fn call_with_args(
        &self,
        key_args: &[KeyArg<'_>],
        payload: Option<&[KeyArg<'_>]>,
    ) -> Result<Call<'_>, Error> {
        self.check_identity()?;
        let deriver = self.deriver();
        let key = deriver
            .digest_args(key_args)
            .map(Key::from_bytes)
            .map_err(|e| Error::codec("the key arguments", None, e))?;
        let fingerprint = match payload {
            None => Fingerprint::from(key),
            Some(payload) => deriver
                .digest_args(payload)
                .map(Fingerprint::from_bytes)
                .map_err(|e| Error::codec("the arguments", Some(&key), e))?,
        };
        Ok(Call::new(self, key, fingerprint))
    }

    fn deriver(&self) -> &KeyDeriver {
        self.deriver
            .get_or_init(|| KeyDeriver::new(self.namespace, self.name(), self.version))
    }
}
