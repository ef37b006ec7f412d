//! Encryption at rest, in front of any store: recorded results and the arguments and outputs
//! of saga steps are sealed with XChaCha20-Poly1305 before they reach the store, and opened
//! when they are read back.
//!
//! What a sealed value looks like in the store (the same bytes in every backend):
//!
//! ```text
//!   "\0idemx1" │ key id (8 bytes) │ nonce (24 bytes, random) │ ciphertext + tag (16 bytes)
//! ```
//!
//! The key id says which key of the [`Keyring`] sealed it, so that values sealed under an
//! older key still open after a rotation. Each value is bound to its place by associated
//! data (`which field` + `the record's key`): a ciphertext copied to another key, or from a
//! result to a step's arguments, does not open. Keys, fingerprints, actions, statuses, tokens
//! and times stay in clear: the claim protocol runs on them, and they hold hashes, not
//! arguments.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::key::Key;
use crate::store::{
    Claim, ClaimRequest, FencingToken, Inspect, Ownership, Record, RecordCount, RecordQuery,
    SagaLog, SagaQuery, SagaStore, SagaWrite, StaleSaga, StepRecord, Store, StoredOutcome,
};
use crate::Error;

/// The first bytes of every sealed value: a NUL (so that no JSON value, which is what idem
/// stores in clear, starts the same way), `idemx`, and the format's version.
const MAGIC: &[u8; 7] = b"\0idemx1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// How many bytes sealing adds to a value.
const OVERHEAD: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN + TAG_LEN;

/// One 256-bit key for [`EncryptedStore`]. Its bytes are never printed: `Debug` shows its
/// id, a hash of it that is stored beside each value it seals.
///
/// The one way to give a key to a process is 64 hex digits (32 random bytes), in an
/// environment variable ([`EncryptionKey::from_env`]) or any text ([`EncryptionKey::from_hex`]);
/// make one with `openssl rand -hex 32`.
///
/// ```
/// use idem_runtime::store::EncryptionKey;
///
/// let key = EncryptionKey::from_bytes([7; 32]);
/// let same = EncryptionKey::from_hex(&"07".repeat(32))?;
/// assert_eq!(key.id(), same.id());
/// assert!(!format!("{key:?}").contains("0707"));
/// # Ok::<(), idem_runtime::Error>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl EncryptionKey {
    /// A key from its 32 bytes (from a secrets manager, a KMS data key, …).
    ///
    /// ```
    /// # use idem_runtime::store::EncryptionKey;
    /// let key = EncryptionKey::from_bytes([42; 32]);
    /// assert_eq!(key.id().len(), 16);
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        // The id is a hash of the key under a label of its own: it names the key in the
        // store and in errors, and says nothing usable about it.
        let digest = Sha256::new()
            .chain_update(b"idem encryption key id v1\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        EncryptionKey {
            id,
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        }
    }

    /// A key from 64 hex digits (surrounding whitespace is ignored). The error never
    /// repeats the text.
    ///
    /// ```
    /// # use idem_runtime::store::EncryptionKey;
    /// assert!(EncryptionKey::from_hex(&"ab".repeat(32)).is_ok());
    /// let short = EncryptionKey::from_hex("abcd").unwrap_err();
    /// assert!(short.to_string().contains("64 hex digits"));
    /// ```
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let invalid = |why: &str| {
            Error::codec(
                "an encryption key",
                None,
                format!(
                    "expected 64 hex digits (32 bytes, as `openssl rand -hex 32` prints): {why}"
                ),
            )
        };
        let text = text.trim().as_bytes();
        if text.len() != 64 {
            return Err(invalid(&format!("found {} characters", text.len())));
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => *byte = (high * 16 + low) as u8,
                _ => return Err(invalid("found a character that is not a hex digit")),
            }
        }
        Ok(EncryptionKey::from_bytes(bytes))
    }

    /// A key from the environment variable `name`, in hex ([`EncryptionKey::from_hex`]).
    ///
    /// ```
    /// # use idem_runtime::store::EncryptionKey;
    /// let missing = EncryptionKey::from_env("IDEM_EXAMPLE_KEY_THAT_IS_NOT_SET").unwrap_err();
    /// assert!(missing.to_string().contains("IDEM_EXAMPLE_KEY_THAT_IS_NOT_SET"));
    /// ```
    pub fn from_env(name: &str) -> Result<Self, Error> {
        let text = std::env::var(name).map_err(|error| {
            Error::codec(
                "an encryption key",
                None,
                format!("environment variable `{name}`: {error}"),
            )
        })?;
        EncryptionKey::from_hex(&text).map_err(|error| match error {
            Error::Codec { source, .. } => Error::codec(
                "an encryption key",
                None,
                format!("environment variable `{name}`: {source}"),
            ),
            other => other,
        })
    }

    /// The key's id: 16 hex digits, a hash of the key, stored beside each value it seals.
    ///
    /// ```
    /// # use idem_runtime::store::EncryptionKey;
    /// assert_ne!(EncryptionKey::from_bytes([1; 32]).id(), EncryptionKey::from_bytes([2; 32]).id());
    /// ```
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// The keys of an [`EncryptedStore`]: the current one seals every new value; the previous
/// ones still open the values they sealed. To rotate, make the new key current and keep the
/// old one as previous until every value it sealed has expired (the actions' TTL) or been
/// purged; a value whose key was dropped is an error naming its key id, never read as absent.
///
/// ```
/// use idem_runtime::store::{EncryptionKey, Keyring};
///
/// let old = EncryptionKey::from_bytes([1; 32]);
/// let new = EncryptionKey::from_bytes([2; 32]);
/// let keyring = Keyring::new(new.clone()).with_previous(old.clone());
/// assert_eq!(keyring.current_id(), new.id());
/// assert_eq!(keyring.ids(), vec![new.id(), old.id()]);
/// ```
#[derive(Clone)]
pub struct Keyring {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

impl Keyring {
    /// A keyring whose current key is `current`.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptionKey, Keyring};
    /// let keyring = Keyring::new(EncryptionKey::from_bytes([1; 32]));
    /// assert_eq!(keyring.ids().len(), 1);
    /// ```
    pub fn new(current: EncryptionKey) -> Self {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// The same keyring, which still opens values sealed under `key`. A key equal to the
    /// current one, or already kept, is not added twice.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptionKey, Keyring};
    /// let a = EncryptionKey::from_bytes([1; 32]);
    /// let keyring = Keyring::new(a.clone()).with_previous(a);
    /// assert_eq!(keyring.ids().len(), 1);
    /// ```
    pub fn with_previous(mut self, key: EncryptionKey) -> Self {
        if self.find(&key.id).is_none() {
            self.previous.push(key);
        }
        self
    }

    /// The id of the key that seals new values.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptionKey, Keyring};
    /// let key = EncryptionKey::from_bytes([1; 32]);
    /// assert_eq!(Keyring::new(key.clone()).current_id(), key.id());
    /// ```
    pub fn current_id(&self) -> String {
        self.current.id()
    }

    /// Every key's id, the current one first.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptionKey, Keyring};
    /// let keyring = Keyring::new(EncryptionKey::from_bytes([1; 32]))
    ///     .with_previous(EncryptionKey::from_bytes([2; 32]));
    /// assert_eq!(keyring.ids().len(), 2);
    /// ```
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(EncryptionKey::id)
            .collect()
    }

    fn find(&self, id: &[u8]) -> Option<&EncryptionKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
    }

    /// `plaintext` sealed under the current key, bound to `place`.
    fn seal(&self, place: &Place<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = place.associated_data();
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only a message too long for the cipher (256 GiB) fails.
            .map_err(|_| Error::codec(place.what, Some(place.key), "it cannot be encrypted"))?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a value sealed by [`Keyring::seal`] for `place`.
    fn open(&self, place: &Place<'_>, stored: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = |why: String| Error::codec(place.what, Some(place.key), why);
        let Some(rest) = stored.strip_prefix(MAGIC.as_slice()) else {
            return Err(fail(
                "it is not encrypted (written without EncryptedStore, or by another program); \
                 it is not read in clear through EncryptedStore"
                    .to_owned(),
            ));
        };
        if rest.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(fail(format!(
                "its encrypted value is truncated ({} bytes)",
                stored.len()
            )));
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let Some(key) = self.find(id) else {
            return Err(fail(format!(
                "it was encrypted under key {}, which the keyring does not have (it has {}); \
                 add that key with `Keyring::with_previous`",
                hex(id),
                self.ids().join(", ")
            )));
        };
        let aad = place.associated_data();
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                fail(format!(
                    "its encrypted value does not authenticate under key {}: it was changed, \
                     or copied from another record or field",
                    key.id()
                ))
            })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current_id())
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(EncryptionKey::id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where a sealed value belongs: which field of which record. It is the associated data of
/// the seal, so that a value opens only where it was sealed.
struct Place<'a> {
    /// The field, as it goes into the associated data.
    field: &'static str,
    /// The same, for errors.
    what: &'static str,
    /// The record's key (a step's own key for its arguments and output).
    key: &'a Key,
}

impl Place<'_> {
    fn result<'a>(key: &'a Key, outcome: &StoredOutcome) -> Place<'a> {
        // Ok and Err are told apart in clear by the store: bound too, so that flipping them
        // does not turn a recorded error into a value.
        let field = match outcome {
            StoredOutcome::Ok(_) => "result/ok",
            StoredOutcome::Err(_) => "result/err",
        };
        Place {
            field,
            what: "the recorded result (encrypted)",
            key,
        }
    }

    fn step_args(step: &StepRecord) -> Place<'_> {
        Place {
            field: "step/args",
            what: "the logged arguments of a saga step (encrypted)",
            key: &step.key,
        }
    }

    fn step_output(step: &StepRecord) -> Place<'_> {
        Place {
            field: "step/output",
            what: "the logged output of a saga step (encrypted)",
            key: &step.key,
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        let key = self.key.to_string();
        let mut aad = Vec::with_capacity(32 + self.field.len() + key.len());
        aad.extend_from_slice(b"idem/encrypted/v1\0");
        aad.extend_from_slice(self.field.as_bytes());
        aad.push(0);
        aad.extend_from_slice(key.as_bytes());
        aad
    }
}

/// A store whose recorded results and saga step arguments and outputs are encrypted at rest
/// with XChaCha20-Poly1305 (feature `encryption`). What an operator or an attacker with the
/// store's files or credentials reads is ciphertext; the claim protocol (keys, fingerprints,
/// tokens, leases) works on the clear parts as before, and the whole conformance suite passes
/// through it.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::store::{EncryptedStore, EncryptionKey, Keyring, MemoryStore, Store};
/// use idem_runtime::{Action, Error};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // In production: EncryptionKey::from_env("IDEM_ENCRYPTION_KEY")?, and a durable store.
/// let key = EncryptionKey::from_bytes([7; 32]);
/// let store = EncryptedStore::new(MemoryStore::new(), Keyring::new(key));
///
/// static QUOTE: Action = Action::new("send_quote");
/// let sent = QUOTE.call(&("ada@example.com",))?.run::<_, Error, _>(&store, async { Ok("msg-1".to_string()) }).await?;
/// assert_eq!(sent.into_inner(), "msg-1");
///
/// // Read through the wrapper, the result is clear; in the store, it is sealed.
/// let key = QUOTE.key(&("ada@example.com",))?;
/// let through = store.get(&key).await?.and_then(|r| r.outcome);
/// assert_eq!(through, Some(idem_runtime::store::StoredOutcome::Ok(br#""msg-1""#.to_vec())));
/// let raw = store.inner().get(&key).await?.and_then(|r| r.outcome);
/// assert_ne!(raw, through);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
///
/// # What is encrypted, and what is not
///
/// - Encrypted: a recorded result ([`StoredOutcome`]'s bytes), and a saga step's arguments
///   and output. Each is bound to its record's key and field, so a ciphertext copied to
///   another record does not open.
/// - In clear: keys and fingerprints (SHA-256 hashes), action names, statuses, fencing
///   tokens, times, saga ids and statuses, and the error texts and notes of saga logs (a
///   step's error is its `Display`; keep secrets out of it).
///
/// A value that does not open (its key id is not in the keyring, it was changed or moved, it
/// was written in clear) is an [`Error::Codec`] naming the record's key: never a panic, and
/// never read as absent. A call that meets one does not run its body.
///
/// # Rotation
///
/// Build the store with `Keyring::new(new_key).with_previous(old_key)` in every process:
/// new values are sealed under the new key, old ones still open. Once the old key's values
/// are gone (the longest TTL of your actions has passed, or `idem purge`), drop it.
///
/// # Size
///
/// Sealing adds 55 bytes to each value (format tag, key id, nonce, tag).
pub struct EncryptedStore<S> {
    store: S,
    keyring: Arc<Keyring>,
}

impl<S: Store> EncryptedStore<S> {
    /// `store`, with its values sealed under `keyring`'s current key.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptedStore, EncryptionKey, Keyring, MemoryStore, Store};
    /// let store = EncryptedStore::new(MemoryStore::new(), Keyring::new(EncryptionKey::from_bytes([1; 32])));
    /// assert_eq!(store.name(), "memory");
    /// ```
    pub fn new(store: S, keyring: Keyring) -> Self {
        EncryptedStore {
            store,
            keyring: Arc::new(keyring),
        }
    }

    /// The store behind the wrapper: what it returns is sealed.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptedStore, EncryptionKey, Keyring, MemoryStore, Store};
    /// let store = EncryptedStore::new(MemoryStore::new(), Keyring::new(EncryptionKey::from_bytes([1; 32])));
    /// assert_eq!(store.inner().name(), "memory");
    /// ```
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// The keys.
    ///
    /// ```
    /// # use idem_runtime::store::{EncryptedStore, EncryptionKey, Keyring, MemoryStore};
    /// let key = EncryptionKey::from_bytes([1; 32]);
    /// let store = EncryptedStore::new(MemoryStore::new(), Keyring::new(key.clone()));
    /// assert_eq!(store.keyring().current_id(), key.id());
    /// ```
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn seal_outcome(&self, key: &Key, outcome: StoredOutcome) -> Result<StoredOutcome, Error> {
        let sealed = self
            .keyring
            .seal(&Place::result(key, &outcome), outcome_bytes(&outcome))?;
        Ok(match outcome {
            StoredOutcome::Ok(_) => StoredOutcome::Ok(sealed),
            StoredOutcome::Err(_) => StoredOutcome::Err(sealed),
        })
    }

    fn open_outcome(&self, key: &Key, outcome: StoredOutcome) -> Result<StoredOutcome, Error> {
        let opened = self
            .keyring
            .open(&Place::result(key, &outcome), outcome_bytes(&outcome))?;
        Ok(match outcome {
            StoredOutcome::Ok(_) => StoredOutcome::Ok(opened),
            StoredOutcome::Err(_) => StoredOutcome::Err(opened),
        })
    }

    /// A claim's answer as the caller reads it: a recorded result opened.
    fn open_claim(&self, key: &Key, claim: Claim) -> Result<Claim, Error> {
        match claim {
            Claim::Completed {
                fingerprint,
                outcome,
                expires_in,
            } => Ok(Claim::Completed {
                fingerprint,
                outcome: self.open_outcome(key, outcome)?,
                expires_in,
            }),
            other => Ok(other),
        }
    }

    fn open_record(&self, mut record: Record) -> Result<Record, Error> {
        if let Some(outcome) = record.outcome.take() {
            record.outcome = Some(self.open_outcome(&record.key, outcome)?);
        }
        Ok(record)
    }

    fn seal_step(&self, step: &StepRecord) -> Result<StepRecord, Error> {
        let args = self.keyring.seal(&Place::step_args(step), &step.args)?;
        let output = match &step.output {
            Some(output) => Some(self.keyring.seal(&Place::step_output(step), output)?),
            None => None,
        };
        Ok(StepRecord {
            args,
            output,
            ..step.clone()
        })
    }

    fn open_log(&self, mut log: SagaLog) -> Result<SagaLog, Error> {
        for step in &mut log.steps {
            step.args = self.keyring.open(&Place::step_args(step), &step.args)?;
            if let Some(output) = step.output.take() {
                step.output = Some(self.keyring.open(&Place::step_output(step), &output)?);
            }
        }
        Ok(log)
    }
}

fn outcome_bytes(outcome: &StoredOutcome) -> &[u8] {
    match outcome {
        StoredOutcome::Ok(bytes) | StoredOutcome::Err(bytes) => bytes,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether `bytes` are a value sealed by an [`EncryptedStore`], and under which key id: what
/// a tool that reads a store without its keys (`idem show`) can say about a value.
///
/// ```
/// use idem_runtime::store::sealed_key_id;
///
/// assert_eq!(sealed_key_id(br#"{"id":"msg-1"}"#), None);
/// ```
pub fn sealed_key_id(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    (rest.len() >= KEY_ID_LEN + NONCE_LEN + TAG_LEN).then(|| hex(&rest[..KEY_ID_LEN]))
}

impl<S: Clone> Clone for EncryptedStore<S> {
    /// Another handle to the same store, with the same keys.
    fn clone(&self) -> Self {
        EncryptedStore {
            store: self.store.clone(),
            keyring: Arc::clone(&self.keyring),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for EncryptedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("store", &self.store)
            .field("keyring", &self.keyring)
            .finish()
    }
}

#[async_trait]
impl<S: Store> Store for EncryptedStore<S> {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    /// The store's owned handle, behind the same keys: a call's claim made through it must
    /// read results as this handle does.
    fn shared(&self) -> Option<Arc<dyn Store>> {
        let store = self.store.shared()?;
        Some(Arc::new(EncryptedStore {
            store,
            keyring: Arc::clone(&self.keyring),
        }))
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let claim = self.store.claim(request).await?;
        self.open_claim(request.key, claim)
    }

    async fn claim_without_expiry(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let claim = self.store.claim_without_expiry(request).await?;
        self.open_claim(request.key, claim)
    }

    async fn complete(
        &self,
        key: &Key,
        token: FencingToken,
        outcome: StoredOutcome,
        ttl: Duration,
    ) -> Result<Ownership, Error> {
        let sealed = self.seal_outcome(key, outcome)?;
        self.store.complete(key, token, sealed, ttl).await
    }

    async fn release(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.store.release(key, token).await
    }

    async fn heartbeat(
        &self,
        key: &Key,
        token: FencingToken,
        lease: Duration,
    ) -> Result<Ownership, Error> {
        self.store.heartbeat(key, token, lease).await
    }

    async fn leave_in_doubt(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.store.leave_in_doubt(key, token).await
    }

    async fn wait(&self, key: &Key, token: FencingToken, at_most: Duration) -> Result<(), Error> {
        self.store.wait(key, token, at_most).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        match self.store.get(key).await? {
            Some(record) => self.open_record(record).map(Some),
            None => Ok(None),
        }
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.store.purge_expired().await
    }
}

#[async_trait]
impl<S: Store> SagaStore for EncryptedStore<S> {
    async fn write_saga(
        &self,
        saga: &Key,
        id: &str,
        token: FencingToken,
        write: SagaWrite<'_>,
    ) -> Result<Ownership, Error> {
        match write {
            SagaWrite::Step(step) => {
                let sealed = self.seal_step(step)?;
                self.store
                    .write_saga(saga, id, token, SagaWrite::Step(&sealed))
                    .await
            }
            status @ SagaWrite::Status { .. } => {
                self.store.write_saga(saga, id, token, status).await
            }
        }
    }

    async fn read_saga(&self, saga: &Key) -> Result<Option<SagaLog>, Error> {
        match self.store.read_saga(saga).await? {
            Some(log) => self.open_log(log).map(Some),
            None => Ok(None),
        }
    }

    async fn stale_sagas(&self, limit: usize) -> Result<Vec<StaleSaga>, Error> {
        self.store.stale_sagas(limit).await
    }
}

#[async_trait]
impl<S: Store> Inspect for EncryptedStore<S> {
    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>, Error> {
        let records = self.store.list_records(query).await?;
        records
            .into_iter()
            .map(|record| self.open_record(record))
            .collect()
    }

    async fn record_counts(&self) -> Result<Vec<RecordCount>, Error> {
        self.store.record_counts().await
    }

    async fn count_expired(&self) -> Result<u64, Error> {
        self.store.count_expired().await
    }

    async fn purge_expired_batch(&self, limit: usize) -> Result<u64, Error> {
        self.store.purge_expired_batch(limit).await
    }

    async fn list_sagas(&self, query: &SagaQuery) -> Result<Vec<SagaLog>, Error> {
        let logs = self.store.list_sagas(query).await?;
        logs.into_iter().map(|log| self.open_log(log)).collect()
    }

    async fn resolve_saga(&self, saga: &Key, note: &str) -> Result<bool, Error> {
        self.store.resolve_saga(saga, note).await
    }

    async fn forget_result(&self, key: &Key, token: FencingToken) -> Result<Ownership, Error> {
        self.store.forget_result(key, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        crate::Action::new("send").key(&("ada",)).expect("a key")
    }

    #[test]
    fn a_value_opens_only_in_its_place() {
        let keyring = Keyring::new(EncryptionKey::from_bytes([3; 32]));
        let key = key();
        let other = crate::Action::new("send").key(&("bob",)).expect("a key");
        let ok = StoredOutcome::Ok(b"42".to_vec());
        let sealed = keyring
            .seal(&Place::result(&key, &ok), b"42")
            .expect("sealed");
        assert_eq!(sealed.len(), 2 + OVERHEAD);
        assert_eq!(
            keyring
                .open(&Place::result(&key, &ok), &sealed)
                .expect("opens"),
            b"42"
        );
        let moved = keyring
            .open(&Place::result(&other, &ok), &sealed)
            .unwrap_err();
        assert!(moved.to_string().contains(&other.to_string()), "{moved}");
        let err = StoredOutcome::Err(Vec::new());
        assert!(keyring.open(&Place::result(&key, &err), &sealed).is_err());
        assert_eq!(sealed_key_id(&sealed), Some(keyring.current_id()));
    }

    #[test]
    fn truncated_and_clear_values_are_errors_not_panics() {
        let keyring = Keyring::new(EncryptionKey::from_bytes([3; 32]));
        let key = key();
        let place = Place::result(&key, &StoredOutcome::Ok(Vec::new()));
        for stored in [
            &b""[..],
            b"\0idemx1",
            b"\0idemx1short",
            br#"{"clear":true}"#,
        ] {
            let error = keyring.open(&place, stored).unwrap_err();
            assert!(error.to_string().contains(&key.to_string()), "{error}");
        }
    }

    #[test]
    fn hex_keys_are_read_exactly() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let text: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        let key = EncryptionKey::from_hex(&format!("  {text}\n")).expect("hex");
        assert_eq!(key.id(), EncryptionKey::from_bytes(bytes).id());
        let wrong = format!("{}zz", &text[..62]);
        let error = EncryptionKey::from_hex(&wrong).unwrap_err().to_string();
        assert!(
            error.contains("not a hex digit") && !error.contains(&wrong[..20]),
            "{error}"
        );
    }
}
