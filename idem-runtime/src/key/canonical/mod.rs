//! Canonical JSON: the bytes an idempotency key is hashed from.
//!
//! Two calls must get the same key exactly when their arguments are the same
//! values — whatever order a `HashMap` happened to iterate in, whichever order
//! a struct declares its fields in. So arguments are not hashed as `serde_json`
//! prints them but in the JSON Canonicalization Scheme of
//! [RFC 8785](https://www.rfc-editor.org/rfc/rfc8785) (JCS): no whitespace,
//! object members sorted by their names compared as UTF-16 code units, strings
//! with the minimal escaping, numbers in ECMAScript's shortest round-trip form.
//! JCS gives the same bytes in every language that implements it, so a key can
//! be recomputed outside Rust; the test suite checks this encoder against
//! Python's `rfc8785` package.
//!
//! The serde data model maps onto JSON as `serde_json` maps it: `None` and `()`
//! are `null`, `Some(x)` is `x`, enums are externally tagged
//! (`"Unit"`, `{"Newtype":…}`, `{"Tuple":[…]}`, `{"Struct":{…}}`), bytes are
//! an array of numbers. A map key may be a string, a char, a unit variant or an
//! integer, which becomes its decimal string. JSON has one number type, so
//! `1u8`, `1i64` and `1.0f64` are all `1`.
//!
//! A value without a JSON form — NaN or an infinity, a map keyed by something
//! other than strings or integers, an object naming the same member twice —
//! is a [`CanonicalError`], never a key.
//!
//! # The one extension: integers beyond 2^53
//!
//! JCS reads every number as an IEEE 754 double. Every integer of magnitude up
//! to 2^53 is a double, and for those ECMAScript's formatting is the plain
//! decimal digits, which is what is written here. Beyond ±2^53 a double no
//! longer holds every integer: strict JCS would round `u64::MAX` to
//! `18446744073709552000`, and two different arguments would share a key.
//! Instead `i64`, `u64`, `i128` and `u128` values are always written as their
//! exact decimal digits. That keeps the encoding injective (and matches the
//! digits Python's `json.dumps` writes), but such output is outside JCS proper:
//! a strict implementation such as Python's `rfc8785` refuses those integers.
//!
//! # Layout
//!
//! This file holds the entry points, the [`Sink`] and the error; `string.rs`
//! escapes strings, `number.rs` writes integers and doubles, `encoder.rs` is the
//! serializer for values and arrays, `object.rs` sorts object members and
//! serializes map keys, and `tests.rs` holds the unit tests.

mod encoder;
mod number;
mod object;
mod string;
#[cfg(test)]
mod tests;

use std::fmt::{self, Display};

use serde::ser::{self, Serialize};

use encoder::Encoder;

/// A destination for canonical bytes: a buffer, or a hasher that absorbs them without a buffer.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for sha2::Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

/// Why a value has no canonical JSON form (NaN, a map key that is not a string,
/// a custom `Serialize` error…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalError {
    kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrorKind {
    NonFinite,
    /// What the key was instead, with its article: "a bool".
    KeyNotString(&'static str),
    DuplicateName(String),
    /// A `Serialize` impl drove `SerializeMap` out of order.
    MapProtocol(&'static str),
    Custom(String),
}

impl CanonicalError {
    fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    fn key_not_string(what: &'static str) -> Self {
        Self::new(ErrorKind::KeyNotString(what))
    }

    fn display_failed() -> Self {
        Self::new(ErrorKind::Custom(
            "a Display implementation returned an error".to_owned(),
        ))
    }
}

impl Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NonFinite => f.write_str("NaN and infinities have no JSON form"),
            ErrorKind::KeyNotString(what) => {
                write!(f, "map keys must be strings or integers, but one is {what}")
            }
            ErrorKind::DuplicateName(name) => write!(
                f,
                "an object names the member {name:?} twice, and a JSON object needs unique names"
            ),
            ErrorKind::MapProtocol(what) => f.write_str(what),
            ErrorKind::Custom(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CanonicalError {}

impl ser::Error for CanonicalError {
    fn custom<T: Display>(msg: T) -> Self {
        Self::new(ErrorKind::Custom(msg.to_string()))
    }
}

/// Writes the canonical JSON of `value` into `sink`.
///
/// Arrays, strings and numbers go straight through to the sink; only objects
/// are buffered, since their members must be sorted first. An argument tuple of
/// strings and numbers therefore reaches a hasher without any allocation.
pub(crate) fn write_canonical<S: Sink + ?Sized, T: Serialize + ?Sized>(
    sink: &mut S,
    value: &T,
) -> Result<(), CanonicalError> {
    value.serialize(Encoder { sink })
}

/// The canonical JSON text of `value` (RFC 8785), as hashed into idempotency keys.
///
/// Fails if `value` has no JSON form: see [`CanonicalError`].
///
/// ```
/// assert_eq!(
///     idem_runtime::canonical_json(&serde_json::json!({"b": 1, "a": [true, null]})).unwrap(),
///     r#"{"a":[true,null],"b":1}"#
/// );
/// ```
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CanonicalError> {
    let mut out = Vec::new();
    write_canonical(&mut out, value)?;
    // Every byte written comes from a `&str` or is ASCII, so this cannot fail;
    // it is still an error rather than a panic, and no `unsafe` is needed.
    String::from_utf8(out)
        .map_err(|_| ser::Error::custom("canonical JSON came out as invalid UTF-8"))
}
