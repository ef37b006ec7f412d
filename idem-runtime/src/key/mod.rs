//! Keys: what identifies one action, derived from its arguments.

mod canonical;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) use canonical::write_canonical;
pub use canonical::{canonical_json, CanonicalError};

/// The identity of one action: SHA-256 over its canonical call text, kept whole (256 bits).
///
/// Displayed as 64 lowercase hex digits; it holds a hash only, never the arguments.
///
/// # Definition
///
/// A key is SHA-256 over one JSON text, the array
///
/// ```text
/// ["idem",1,<namespace>,<action name>,<version>,␠␠␠…␠[<argument>,…]]
/// ```
///
/// in which every value is in its canonical form (RFC 8785, see [`canonical_json`](crate::canonical_json)) and the
/// spaces (JSON whitespace, which changes no value) pad the header to a whole number of
/// 64-byte SHA-256 blocks. The padding lets an action absorb its constant header once and clone
/// that hasher state for each call, so a call hashes only its own arguments. Every string in
/// the text is JSON-escaped, so no two different calls share a text: `("a:b", "")` and
/// `("a", "b")` give different keys.
///
/// The payload fingerprint is the same digest over all the arguments that are not skipped;
/// when the key is made of all of them, key and fingerprint are one and the same.
///
/// # Test vectors
///
/// Each row is one call: its namespace, action name, version and arguments (as JSON; the
/// key is the same whatever the order of an object's members), and its key.
///
/// | namespace | action | version | arguments | key |
/// |---|---|---|---|---|
#[doc = include_str!("vectors.md")]
///
/// A test checks that idem computes these keys, and that Python computes them too from the
/// definition above, with its own `hashlib` and the `rfc8785` package (Trail of Bits).
///
/// # Parsing
///
/// ```
/// let key: idem_runtime::Key =
///     "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".parse().unwrap();
/// assert_eq!(key.to_string().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// The digest of all the non-skipped arguments of a call: a key used again with another
/// payload is refused ([`Error::PayloadMismatch`](crate::Error::PayloadMismatch)).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint([u8; 32]);

impl Key {
    /// The key with these 32 bytes (for stores that keep keys as bytes).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The 32 bytes of the digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, enough to tell keys apart in a log line or a table.
    pub fn short(&self) -> String {
        let mut hex = self.to_string();
        hex.truncate(12);
        hex
    }
}

impl Fingerprint {
    /// The fingerprint with these 32 bytes (for stores that keep them as bytes).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes of the digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<Key> for Fingerprint {
    /// When the key is made of every argument, it is its own fingerprint.
    fn from(key: Key) -> Self {
        Fingerprint(key.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

/// The text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseKeyError;

impl fmt::Display for ParseKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key is 64 hex digits")
    }
}

impl std::error::Error for ParseKeyError {}

impl FromStr for Key {
    type Err = ParseKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(ParseKeyError);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseKeyError),
        };
        let mut bytes = [0u8; 32];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(Key(bytes))
    }
}

/// The hasher state of one action after its constant header: each call clones it and hashes
/// only its arguments.
#[derive(Clone)]
pub(crate) struct KeyDeriver {
    after_header: Sha256,
}

impl fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDeriver").finish_non_exhaustive()
    }
}

impl KeyDeriver {
    pub(crate) fn new(namespace: &str, name: &str, version: u32) -> Self {
        let mut after_header = Sha256::new();
        after_header.update(header(namespace, name, version));
        KeyDeriver { after_header }
    }

    /// The digest of the call text whose arguments are `args` (a tuple or an array).
    pub(crate) fn digest<A: Serialize + ?Sized>(
        &self,
        args: &A,
    ) -> Result<[u8; 32], CanonicalError> {
        let mut hasher = self.after_header.clone();
        write_canonical(&mut hasher, args)?;
        hasher.update(b"]");
        Ok(hasher.finalize().into())
    }
}

/// `["idem",1,<namespace>,<name>,<version>,` padded with spaces to a whole number of blocks.
pub(crate) fn header(namespace: &str, name: &str, version: u32) -> Vec<u8> {
    let mut text = Vec::with_capacity(64);
    text.extend_from_slice(br#"["idem",1,"#);
    // Strings always have a canonical form, so these cannot fail.
    let _ = write_canonical(&mut text, namespace);
    text.push(b',');
    let _ = write_canonical(&mut text, name);
    text.push(b',');
    text.extend_from_slice(version.to_string().as_bytes());
    text.push(b',');
    let padded = text.len().div_ceil(64) * 64;
    text.resize(padded, b' ');
    text
}

/// One argument of a call as `#[idempotent]` passes it: already checked to be `Serialize`
/// where the user wrote it, and hashed without knowing its type.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct KeyArg<'a>(&'a dyn AbsorbCanonical);

impl fmt::Debug for KeyArg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyArg")
    }
}

impl<'a> KeyArg<'a> {
    pub(crate) fn new<T: Serialize>(value: &'a T) -> Self {
        KeyArg(value)
    }
}

/// Writes a value's canonical JSON into a hasher: `Serialize` made object-safe for the one
/// serializer keys need.
trait AbsorbCanonical {
    fn absorb(&self, hasher: &mut Sha256) -> Result<(), CanonicalError>;
}

impl<T: Serialize> AbsorbCanonical for T {
    fn absorb(&self, hasher: &mut Sha256) -> Result<(), CanonicalError> {
        write_canonical(hasher, self)
    }
}

impl KeyDeriver {
    /// The same digest as [`KeyDeriver::digest`] of the tuple of `args`.
    pub(crate) fn digest_args(&self, args: &[KeyArg<'_>]) -> Result<[u8; 32], CanonicalError> {
        let mut hasher = self.after_header.clone();
        hasher.update(b"[");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                hasher.update(b",");
            }
            arg.0.absorb(&mut hasher)?;
        }
        hasher.update(b"]]");
        Ok(hasher.finalize().into())
    }
}
