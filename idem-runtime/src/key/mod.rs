//! Keys: what identifies one action, derived from its arguments.

mod canonical;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::str::FromStr;

use serde::Serialize;
use sha2::block_api::compress256;

pub(crate) use canonical::write_canonical;
use canonical::Sink;
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
///
/// ```
/// use idem_runtime::{Action, Fingerprint};
///
/// let invoice = Action::new("send_invoice");
/// let key = invoice.key(&("customer-42", 7)).unwrap();
/// let payload = invoice.fingerprint(&("customer-42", 7, 1999)).unwrap();
/// // The payload holds the amount too, so it is not the key's own fingerprint (which is what
/// // a call keyed by all of its arguments uses).
/// assert_ne!(Fingerprint::from(key), payload);
/// ```
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

/// A map keyed by [`Key`]s, hashed by [`KeyHashing`].
pub(crate) type KeyMap<V> = HashMap<Key, V, KeyHashing>;

/// The hashing of in-process maps keyed by [`Key`]: a key is a SHA-256 digest, already uniform,
/// so hashing it again with SipHash (the default) costs more than the rest of a lookup. Its
/// words are folded into a random per-map seed instead, so that the bucket of a key still
/// cannot be predicted from outside the process.
#[derive(Debug, Clone)]
pub(crate) struct KeyHashing {
    seed: u64,
}

impl Default for KeyHashing {
    fn default() -> Self {
        KeyHashing {
            seed: RandomState::new().hash_one(0x1de3_u64),
        }
    }
}

impl BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// See [`KeyHashing`].
#[derive(Debug)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Key {
    /// The key's 64 lowercase hex digits, without the formatting machinery or an
    /// allocation (stores build their own names from it on every call).
    pub(crate) fn hex(&self) -> KeyHex {
        let mut out = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(byte >> 4)];
            out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        KeyHex(out)
    }
}

/// A key's hex digits ([`Key::hex`]).
pub(crate) struct KeyHex([u8; 64]);

impl KeyHex {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
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

/// The SHA-256 state of one action after its constant header: each call copies it and hashes
/// only its arguments.
///
/// The header fills whole blocks, so that state is just the 8 words of the compression
/// function. A call's arguments are gathered into blocks and padded here (FIPS 180-4 §5.1.1)
/// and each block goes to sha2's `compress256`: no buffered hasher to clone, no bookkeeping
/// per piece of JSON. For a few small arguments that is one compression per key.
#[derive(Clone)]
pub(crate) struct KeyDeriver {
    after_header: [u32; 8],
    header_blocks: u64,
}

impl fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDeriver").finish_non_exhaustive()
    }
}

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl KeyDeriver {
    pub(crate) fn new(namespace: &str, name: &str, version: u32) -> Self {
        let mut sink = BlockSink::new(SHA256_INITIAL, 0);
        sink.put(&header(namespace, name, version));
        debug_assert_eq!(sink.len, 0, "the header fills whole blocks");
        KeyDeriver {
            after_header: sink.state,
            header_blocks: sink.blocks,
        }
    }

    fn sink(&self) -> BlockSink {
        BlockSink::new(self.after_header, self.header_blocks)
    }

    /// The digest of the call text whose arguments are `args` (a tuple or an array).
    pub(crate) fn digest<A: Serialize + ?Sized>(
        &self,
        args: &A,
    ) -> Result<[u8; 32], CanonicalError> {
        let mut sink = self.sink();
        write_canonical(&mut sink, args)?;
        Ok(sink.finish(b"]"))
    }
}

/// SHA-256 fed block by block. Canonical JSON arrives in many small pieces (a quote, a string,
/// a comma); they are gathered into one 64-byte block, which is compressed when it is full.
struct BlockSink {
    state: [u32; 8],
    /// Blocks compressed so far, the header's included.
    blocks: u64,
    block: [u8; 64],
    /// Bytes in `block`: always fewer than 64.
    len: usize,
}

impl BlockSink {
    fn new(state: [u32; 8], blocks: u64) -> Self {
        BlockSink {
            state,
            blocks,
            block: [0; 64],
            len: 0,
        }
    }

    fn compress(&mut self) {
        compress256(&mut self.state, &[self.block]);
        self.blocks += 1;
    }

    /// Appends `tail`, pads the message, and returns the digest of everything written.
    fn finish(mut self, tail: &[u8]) -> [u8; 32] {
        self.put(tail);
        let bits = (self.blocks * 64 + self.len as u64) * 8;
        self.block[self.len] = 0x80;
        self.block[self.len + 1..].fill(0);
        if self.len >= 56 {
            // No room for the length: it goes in a block of its own.
            self.compress();
            self.block = [0; 64];
        }
        self.block[56..].copy_from_slice(&bits.to_be_bytes());
        self.compress();
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

impl Sink for BlockSink {
    #[inline]
    fn put(&mut self, mut bytes: &[u8]) {
        loop {
            let room = 64 - self.len;
            if bytes.len() < room {
                // Most pieces are one byte (a quote, a comma): no call to `memcpy` for those.
                match bytes {
                    [byte] => self.block[self.len] = *byte,
                    _ => self.block[self.len..self.len + bytes.len()].copy_from_slice(bytes),
                }
                self.len += bytes.len();
                return;
            }
            let (head, rest) = bytes.split_at(room);
            self.block[self.len..].copy_from_slice(head);
            self.len = 0;
            self.compress();
            bytes = rest;
        }
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
    fn absorb(&self, sink: &mut BlockSink) -> Result<(), CanonicalError>;
}

impl<T: Serialize> AbsorbCanonical for T {
    fn absorb(&self, sink: &mut BlockSink) -> Result<(), CanonicalError> {
        write_canonical(sink, self)
    }
}

impl KeyDeriver {
    /// The same digest as [`KeyDeriver::digest`] of the tuple of `args`.
    pub(crate) fn digest_args(&self, args: &[KeyArg<'_>]) -> Result<[u8; 32], CanonicalError> {
        let mut sink = self.sink();
        sink.put(b"[");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                sink.put(b",");
            }
            arg.0.absorb(&mut sink)?;
        }
        Ok(sink.finish(b"]]"))
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// A key is SHA-256 of the call text defined in the docs of `Key`, whatever the lengths of
    /// header and arguments: every padding case (the length fits in the last block of the
    /// arguments, or needs a block of its own) and argument texts longer than a block.
    #[test]
    fn keys_are_sha256_of_the_call_text() {
        let long_name = "n".repeat(60);
        for name in ["a", "send_quote", long_name.as_str()] {
            let deriver = KeyDeriver::new("default", name, 3);
            let header = header("default", name, 3);
            for len in 0..300 {
                let arg = "x".repeat(len);
                let args = canonical_json(&(&arg, 7)).unwrap();
                let text = [header.as_slice(), args.as_bytes(), b"]"].concat();
                let expected: [u8; 32] = Sha256::digest(&text).into();
                assert_eq!(
                    deriver.digest(&(&arg, 7)).unwrap(),
                    expected,
                    "{name}, {len}"
                );
                let by_args = deriver.digest_args(&[KeyArg::new(&arg), KeyArg::new(&7)]);
                assert_eq!(by_args.unwrap(), expected, "{name}, {len}");
            }
        }
    }
}
