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

use std::cmp::Ordering;
use std::fmt::{self, Display, Write as _};
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize};

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

// ---------------------------------------------------------------------------
// Scalars

/// RFC 8785 §3.2.2.2: the short escapes where JSON has them, otherwise
/// `\u00xx` with lowercase hex.
const CONTROL_ESCAPES: [&str; 0x20] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", //
    "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
    "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// The escape for `byte`, or `None` when it stands for itself. Bytes of
/// multi-byte UTF-8 sequences are all >= 0x80, so they always stand for
/// themselves and the string is never cut inside a character.
fn escape_of(byte: u8) -> Option<&'static str> {
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        0x00..=0x1f => CONTROL_ESCAPES.get(usize::from(byte)).copied(),
        _ => None,
    }
}

/// Writes the body of a JSON string (no quotes), one `put` per run of plain bytes.
fn write_escaped<S: Sink + ?Sized>(sink: &mut S, text: &str) {
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if let Some(escape) = escape_of(byte) {
            if run_start < i {
                sink.put(&bytes[run_start..i]);
            }
            sink.put(escape.as_bytes());
            run_start = i + 1;
        }
    }
    if run_start < bytes.len() {
        sink.put(&bytes[run_start..]);
    }
}

fn write_string<S: Sink + ?Sized>(sink: &mut S, text: &str) {
    sink.put(b"\"");
    write_escaped(sink, text);
    sink.put(b"\"");
}

/// Lets `Display` output stream into a JSON string without a `String` in between.
struct Escaper<'a, S: ?Sized> {
    sink: &'a mut S,
}

impl<S: Sink + ?Sized> fmt::Write for Escaper<'_, S> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.sink, text);
        Ok(())
    }
}

/// The decimal digits of an integer, formatted on the stack.
struct Decimal {
    /// Room for `-` and the 39 digits of `u128::MAX` or of `i128::MIN`'s magnitude.
    buf: [u8; 40],
    start: usize,
}

impl Decimal {
    fn new(negative: bool, magnitude: u128) -> Self {
        let mut decimal = Self {
            buf: [0; 40],
            start: 40,
        };
        let mut wide = magnitude;
        // 128-bit division is slow; leave it as soon as the rest fits in 64 bits.
        while wide > u128::from(u64::MAX) {
            decimal.push_digit((wide % 10) as u8);
            wide /= 10;
        }
        let mut narrow = wide as u64;
        loop {
            decimal.push_digit((narrow % 10) as u8);
            narrow /= 10;
            if narrow == 0 {
                break;
            }
        }
        if negative {
            decimal.push(b'-');
        }
        decimal
    }

    fn signed(value: i128) -> Self {
        Self::new(value < 0, value.unsigned_abs())
    }

    fn unsigned(value: u128) -> Self {
        Self::new(false, value)
    }

    fn push_digit(&mut self, digit: u8) {
        self.push(b'0' + digit);
    }

    fn push(&mut self, byte: u8) {
        self.start -= 1;
        self.buf[self.start] = byte;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The ten integer methods of a `Serializer`, each handing its value to `$to` as a
/// [`Decimal`]: the value serializer writes it, the member-name serializer keeps it as a name.
macro_rules! integers {
    ($to:ident) => {
        integers!(@each $to;
            serialize_i8 i8 signed, serialize_i16 i16 signed, serialize_i32 i32 signed,
            serialize_i64 i64 signed, serialize_i128 i128 signed,
            serialize_u8 u8 unsigned, serialize_u16 u16 unsigned, serialize_u32 u32 unsigned,
            serialize_u64 u64 unsigned, serialize_u128 u128 unsigned);
    };
    (@each $to:ident; $($name:ident $ty:ident $kind:ident),*) => {$(
        // Widening to 128 bits; for the 128-bit types it is the identity.
        #[allow(clippy::useless_conversion)]
        fn $name(self, v: $ty) -> Result<(), CanonicalError> {
            self.$to(Decimal::$kind(v.into()))
        }
    )*};
}

/// ECMAScript's Number-to-String (RFC 8785 §3.2.2.3).
fn write_f64<S: Sink + ?Sized>(sink: &mut S, value: f64) -> Result<(), CanonicalError> {
    if !value.is_finite() {
        return Err(CanonicalError::new(ErrorKind::NonFinite));
    }
    if value == 0.0 {
        // ECMAScript prints -0 as "0"; say so here rather than trust the formatter.
        sink.put(b"0");
        return Ok(());
    }
    sink.put(ryu_js::Buffer::new().format_finite(value).as_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------
// Values

/// The serializer for one value, writing into `sink`.
struct Encoder<'a, S: ?Sized> {
    sink: &'a mut S,
}

impl<S: Sink + ?Sized> Encoder<'_, S> {
    fn write_integer(self, decimal: Decimal) -> Result<(), CanonicalError> {
        self.sink.put(decimal.as_bytes());
        Ok(())
    }
}

impl<'a, S: Sink + ?Sized> ser::Serializer for Encoder<'a, S> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = ArrayEncoder<'a, S>;
    type SerializeTuple = ArrayEncoder<'a, S>;
    type SerializeTupleStruct = ArrayEncoder<'a, S>;
    type SerializeTupleVariant = ArrayEncoder<'a, S>;
    type SerializeMap = ObjectEncoder<'a, S>;
    type SerializeStruct = ObjectEncoder<'a, S>;
    type SerializeStructVariant = ObjectEncoder<'a, S>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.sink.put(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!(write_integer);

    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        // JCS numbers are doubles: an f32 is the double it widens to.
        write_f64(self.sink, f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        write_f64(self.sink, v)
    }

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        write_string(self.sink, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        write_string(self.sink, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        let mut array = ArrayEncoder::open(self.sink, b"]");
        for byte in v {
            array.element(byte)?;
        }
        array.close()
    }

    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.sink.put(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CanonicalError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        // A single member needs no sorting, so nothing is buffered.
        open_tag(self.sink, variant);
        value.serialize(Encoder {
            sink: &mut *self.sink,
        })?;
        self.sink.put(b"}");
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<ArrayEncoder<'a, S>, CanonicalError> {
        Ok(ArrayEncoder::open(self.sink, b"]"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<ArrayEncoder<'a, S>, CanonicalError> {
        Ok(ArrayEncoder::open(self.sink, b"]"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<ArrayEncoder<'a, S>, CanonicalError> {
        Ok(ArrayEncoder::open(self.sink, b"]"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<ArrayEncoder<'a, S>, CanonicalError> {
        open_tag(self.sink, variant);
        Ok(ArrayEncoder::open(self.sink, b"]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<ObjectEncoder<'a, S>, CanonicalError> {
        Ok(ObjectEncoder::new(self.sink, b""))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<ObjectEncoder<'a, S>, CanonicalError> {
        Ok(ObjectEncoder::new(self.sink, b""))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<ObjectEncoder<'a, S>, CanonicalError> {
        open_tag(self.sink, variant);
        Ok(ObjectEncoder::new(self.sink, b"}"))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        self.sink.put(b"\"");
        write!(
            Escaper {
                sink: &mut *self.sink
            },
            "{value}"
        )
        .map_err(|_| CanonicalError::display_failed())?;
        self.sink.put(b"\"");
        Ok(())
    }
}

/// Opens the one-member object `{"variant":` of an externally tagged enum.
fn open_tag<S: Sink + ?Sized>(sink: &mut S, variant: &str) {
    sink.put(b"{");
    write_string(sink, variant);
    sink.put(b":");
}

// ---------------------------------------------------------------------------
// Arrays: written straight through

/// Sequences, tuples, tuple structs and tuple variants.
struct ArrayEncoder<'a, S: ?Sized> {
    sink: &'a mut S,
    first: bool,
    /// `]`, or `]}` to also close a tuple variant's tag.
    close: &'static [u8],
}

impl<'a, S: Sink + ?Sized> ArrayEncoder<'a, S> {
    fn open(sink: &'a mut S, close: &'static [u8]) -> Self {
        sink.put(b"[");
        Self {
            sink,
            first: true,
            close,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        if !self.first {
            self.sink.put(b",");
        }
        self.first = false;
        value.serialize(Encoder {
            sink: &mut *self.sink,
        })
    }

    fn close(self) -> Result<(), CanonicalError> {
        self.sink.put(self.close);
        Ok(())
    }
}

impl<S: Sink + ?Sized> ser::SerializeSeq for ArrayEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

impl<S: Sink + ?Sized> ser::SerializeTuple for ArrayEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_element<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

impl<S: Sink + ?Sized> ser::SerializeTupleStruct for ArrayEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

impl<S: Sink + ?Sized> ser::SerializeTupleVariant for ArrayEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.element(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

// ---------------------------------------------------------------------------
// Objects: buffered, then sorted

/// One member of an object being collected: where its name and its encoded
/// value sit in the `Members` buffers.
struct Span {
    name: Range<usize>,
    value: Range<usize>,
}

/// The members of one object, in the order serde handed them over. Names and
/// values each share one buffer, so an object costs a few allocations however
/// many members it has.
#[derive(Default)]
struct Members {
    /// Member names, unescaped, end to end.
    names: String,
    /// Member values, already canonical, end to end.
    values: Vec<u8>,
    spans: Vec<Span>,
    /// The name given by `serialize_key`, waiting for its `serialize_value`.
    pending: Option<Range<usize>>,
}

impl Members {
    fn push_name(&mut self, name: &str) -> Range<usize> {
        let start = self.names.len();
        self.names.push_str(name);
        start..self.names.len()
    }

    fn push_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), CanonicalError> {
        if self.pending.is_some() {
            return Err(CanonicalError::new(ErrorKind::MapProtocol(
                "a map key was serialized without a value",
            )));
        }
        let start = self.names.len();
        key.serialize(KeyEncoder {
            names: &mut self.names,
        })?;
        self.pending = Some(start..self.names.len());
        Ok(())
    }

    fn push_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        let name = self.pending.take().ok_or_else(|| {
            CanonicalError::new(ErrorKind::MapProtocol(
                "a map value was serialized without a key",
            ))
        })?;
        self.push_member(name, value)
    }

    fn push_member<T: Serialize + ?Sized>(
        &mut self,
        name: Range<usize>,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let start = self.values.len();
        value.serialize(Encoder {
            sink: &mut self.values,
        })?;
        self.spans.push(Span {
            name,
            value: start..self.values.len(),
        });
        Ok(())
    }

    /// Writes `{…}` with the members sorted as RFC 8785 §3.2.3 asks.
    fn write_sorted<S: Sink + ?Sized>(self, sink: &mut S) -> Result<(), CanonicalError> {
        if self.pending.is_some() {
            return Err(CanonicalError::new(ErrorKind::MapProtocol(
                "a map key was serialized without a value",
            )));
        }
        let Members {
            names,
            values,
            mut spans,
            ..
        } = self;
        let name_of = |span: &Span| &names[span.name.clone()];
        spans.sort_unstable_by(|a, b| utf16_order(name_of(a), name_of(b)));
        // Equal names are adjacent once sorted.
        if let Some(pair) = spans
            .windows(2)
            .find(|pair| name_of(&pair[0]) == name_of(&pair[1]))
        {
            let name = name_of(&pair[0]).to_owned();
            return Err(CanonicalError::new(ErrorKind::DuplicateName(name)));
        }
        sink.put(b"{");
        for (i, span) in spans.iter().enumerate() {
            if i > 0 {
                sink.put(b",");
            }
            write_string(sink, name_of(span));
            sink.put(b":");
            sink.put(&values[span.value.clone()]);
        }
        sink.put(b"}");
        Ok(())
    }
}

/// Orders member names as arrays of UTF-16 code units, as JCS does. This differs
/// from `str`'s byte order exactly when a character above U+FFFF (a surrogate
/// pair, D800–DFFF) meets one in U+E000–U+FFFF.
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Maps, structs and struct variants.
struct ObjectEncoder<'a, S: ?Sized> {
    sink: &'a mut S,
    members: Members,
    /// Nothing, or `}` to also close a struct variant's tag.
    close: &'static [u8],
}

impl<'a, S: Sink + ?Sized> ObjectEncoder<'a, S> {
    fn new(sink: &'a mut S, close: &'static [u8]) -> Self {
        Self {
            sink,
            members: Members::default(),
            close,
        }
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        let name = self.members.push_name(name);
        self.members.push_member(name, value)
    }

    fn close(self) -> Result<(), CanonicalError> {
        self.members.write_sorted(self.sink)?;
        self.sink.put(self.close);
        Ok(())
    }
}

impl<S: Sink + ?Sized> ser::SerializeMap for ObjectEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<(), CanonicalError> {
        self.members.push_key(key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CanonicalError> {
        self.members.push_value(value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

impl<S: Sink + ?Sized> ser::SerializeStruct for ObjectEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

impl<S: Sink + ?Sized> ser::SerializeStructVariant for ObjectEncoder<'_, S> {
    type Ok = ();
    type Error = CanonicalError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        self.field(name, value)
    }

    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

// ---------------------------------------------------------------------------
// Map keys

/// The serializer for a map key: appends the member name, unescaped, to `names`.
struct KeyEncoder<'a> {
    names: &'a mut String,
}

impl KeyEncoder<'_> {
    fn push_integer(self, decimal: Decimal) -> Result<(), CanonicalError> {
        self.names
            .extend(decimal.as_bytes().iter().map(|&digit| char::from(digit)));
        Ok(())
    }
}

/// Key serializer methods for the kinds of key that have no member name.
macro_rules! reject_keys {
    ($($method:ident($($arg:ty),*) is $what:literal;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<(), CanonicalError> {
            Err(CanonicalError::key_not_string($what))
        }
    )*};
}

impl ser::Serializer for KeyEncoder<'_> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Impossible<(), CanonicalError>;
    type SerializeTuple = Impossible<(), CanonicalError>;
    type SerializeTupleStruct = Impossible<(), CanonicalError>;
    type SerializeTupleVariant = Impossible<(), CanonicalError>;
    type SerializeMap = Impossible<(), CanonicalError>;
    type SerializeStruct = Impossible<(), CanonicalError>;
    type SerializeStructVariant = Impossible<(), CanonicalError>;

    reject_keys! {
        serialize_bool(bool) is "a bool";
        serialize_f32(f32) is "a float";
        serialize_f64(f64) is "a float";
        serialize_bytes(&[u8]) is "a byte array";
        serialize_none() is "an Option";
        serialize_unit() is "a unit";
        serialize_unit_struct(&'static str) is "a unit struct";
    }

    integers!(push_integer);

    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        self.names.push(v);
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        self.names.push_str(v);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), CanonicalError> {
        Err(CanonicalError::key_not_string("an Option"))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CanonicalError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), CanonicalError> {
        Err(CanonicalError::key_not_string("an enum variant with data"))
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(CanonicalError::key_not_string("a sequence"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(CanonicalError::key_not_string("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(CanonicalError::key_not_string("a tuple struct"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(CanonicalError::key_not_string("an enum variant with data"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(CanonicalError::key_not_string("a map"))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(CanonicalError::key_not_string("a struct"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(CanonicalError::key_not_string("an enum variant with data"))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), CanonicalError> {
        write!(self.names, "{value}").map_err(|_| CanonicalError::display_failed())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::ser::{SerializeMap, SerializeStruct, Serializer};
    use serde::Serialize;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;

    fn canon<T: Serialize + ?Sized>(value: &T) -> String {
        match canonical_json(value) {
            Ok(text) => text,
            Err(error) => panic!("no canonical form: {error}"),
        }
    }

    fn error_of<T: Serialize + ?Sized>(value: &T) -> CanonicalError {
        match canonical_json(value) {
            Ok(text) => panic!("expected an error, got {text}"),
            Err(error) => error,
        }
    }

    // ---- Numbers -------------------------------------------------------

    /// RFC 8785 appendix B: IEEE 754 bit patterns and their JCS text.
    const APPENDIX_B: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];

    #[test]
    fn numbers_follow_rfc8785_appendix_b() {
        for &(bits, expected) in APPENDIX_B {
            let value = f64::from_bits(bits);
            assert_eq!(canon(&value), expected, "bits {bits:016x}");
        }
    }

    #[test]
    // The RFC's inputs carry more digits than a double: rounding them is the point.
    #[allow(clippy::excessive_precision)]
    fn numbers_in_ecmascript_form() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (100.0, "100"),
            (4.5, "4.5"),
            (4.50, "4.5"),
            (2e-3, "0.002"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1e30, "1e+30"),
            (1e-27, "1e-27"),
            (333333333.33333329, "333333333.3333333"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-1.5e-300, "-1.5e-300"),
            (9007199254740992.0, "9007199254740992"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ];
        for &(value, expected) in cases {
            assert_eq!(canon(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn f32_is_the_double_it_widens_to() {
        assert_eq!(canon(&1.5f32), "1.5");
        assert_eq!(canon(&-0.0f32), "0");
        assert_eq!(canon(&0.1f32), "0.10000000149011612");
        assert_eq!(canon(&f32::MAX), "3.4028234663852886e+38");
    }

    #[test]
    fn integers_are_plain_digits() {
        assert_eq!(canon(&0u8), "0");
        assert_eq!(canon(&0i64), "0");
        assert_eq!(canon(&-1i8), "-1");
        assert_eq!(canon(&i8::MIN), "-128");
        assert_eq!(canon(&u8::MAX), "255");
        assert_eq!(canon(&i16::MIN), "-32768");
        assert_eq!(canon(&u16::MAX), "65535");
        assert_eq!(canon(&i32::MIN), "-2147483648");
        assert_eq!(canon(&u32::MAX), "4294967295");
        assert_eq!(canon(&9007199254740992u64), "9007199254740992");
        assert_eq!(canon(&-9007199254740992i64), "-9007199254740992");
        assert_eq!(canon(&1999u64), "1999");
        // An integer and the double of the same value are the same JSON number.
        assert_eq!(canon(&1999u64), canon(&1999.0f64));
    }

    #[test]
    fn integers_beyond_2_pow_53_keep_every_digit() {
        assert_eq!(canon(&9007199254740993u64), "9007199254740993");
        assert_eq!(canon(&i64::MIN), "-9223372036854775808");
        assert_eq!(canon(&i64::MAX), "9223372036854775807");
        assert_eq!(canon(&u64::MAX), "18446744073709551615");
        assert_eq!(
            canon(&i128::MIN),
            "-170141183460469231731687303715884105728"
        );
        assert_eq!(canon(&i128::MAX), "170141183460469231731687303715884105727");
        assert_eq!(canon(&u128::MAX), "340282366920938463463374607431768211455");
        assert_eq!(canon(&0u128), "0");
        assert_eq!(canon(&(u128::from(u64::MAX) + 1)), "18446744073709551616");
        assert_eq!(canon(&-(i128::from(u64::MAX) + 1)), "-18446744073709551616");
        // The very reason for the extension: these two must not collide.
        assert_ne!(canon(&u64::MAX), canon(&(u64::MAX - 1)));
    }

    #[test]
    fn integers_match_std_formatting() {
        let mut x: u128 = 1;
        while let Some(next) = x.checked_mul(7) {
            assert_eq!(canon(&x), x.to_string());
            assert_eq!(canon(&(x - 1)), (x - 1).to_string());
            if let Ok(signed) = i128::try_from(x) {
                assert_eq!(canon(&-signed), (-signed).to_string());
            }
            x = next;
        }
    }

    #[test]
    fn nan_and_infinities_are_errors() {
        let expected = CanonicalError::new(ErrorKind::NonFinite);
        for value in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(error_of(&value), expected);
        }
        assert_eq!(error_of(&f32::NAN), expected);
        assert_eq!(error_of(&f32::INFINITY), expected);
        assert_eq!(error_of(&vec![1.0, f64::NAN]), expected);
        assert_eq!(error_of(&BTreeMap::from([("a", f64::INFINITY)])), expected);
        assert_eq!(expected.to_string(), "NaN and infinities have no JSON form");
    }

    // ---- Strings -------------------------------------------------------

    #[test]
    fn every_control_character_is_escaped() {
        for code in 0u8..0x20 {
            let expected = match code {
                0x08 => "\\b".to_owned(),
                0x09 => "\\t".to_owned(),
                0x0a => "\\n".to_owned(),
                0x0c => "\\f".to_owned(),
                0x0d => "\\r".to_owned(),
                _ => format!("\\u{code:04x}"),
            };
            let text = char::from(code).to_string();
            assert_eq!(canon(&text), format!("\"{expected}\""), "U+{code:04X}");
        }
        assert_eq!(canon("\u{1f}"), r#""\u001f""#, "hex must be lowercase");
        assert_eq!(canon("\u{b}"), r#""\u000b""#, "hex must be lowercase");
    }

    #[test]
    fn quote_and_backslash_are_escaped_and_nothing_else() {
        assert_eq!(canon("\""), r#""\"""#);
        assert_eq!(canon("\\"), r#""\\""#);
        assert_eq!(canon("/"), r#""/""#);
        assert_eq!(canon("\u{7f}"), "\"\u{7f}\"");
        assert_eq!(canon("é"), "\"é\"");
        assert_eq!(canon("😀"), "\"😀\"");
        assert_eq!(canon("\u{2028}\u{2029}"), "\"\u{2028}\u{2029}\"");
        assert_eq!(canon("\u{feff}\u{ffff}"), "\"\u{feff}\u{ffff}\"");
        assert_eq!(canon(""), r#""""#);
    }

    #[test]
    fn escapes_inside_longer_text() {
        assert_eq!(canon("a\"b\\c\nd\u{0}é😀\t"), r#""a\"b\\c\nd\u0000é😀\t""#);
        assert_eq!(canon("\n\n"), r#""\n\n""#);
        assert_eq!(canon("plain text"), r#""plain text""#);
    }

    /// Counts the `put` calls: plain text must go through in runs.
    #[derive(Default)]
    struct CountingSink {
        bytes: Vec<u8>,
        puts: usize,
    }

    impl Sink for CountingSink {
        fn put(&mut self, bytes: &[u8]) {
            self.bytes.extend_from_slice(bytes);
            self.puts += 1;
        }
    }

    #[test]
    fn plain_runs_are_written_in_one_put() {
        let mut sink = CountingSink::default();
        write_canonical(&mut sink, "a long run of plain text, é and 😀 included").unwrap();
        assert_eq!(sink.puts, 3, "quote, run, quote");
        let mut sink = CountingSink::default();
        write_canonical(&mut sink, "ab\ncd").unwrap();
        assert_eq!(sink.puts, 5, "quote, run, escape, run, quote");
        assert_eq!(sink.bytes, br#""ab\ncd""#);
    }

    #[test]
    fn chars_are_strings() {
        assert_eq!(canon(&'a'), r#""a""#);
        assert_eq!(canon(&'"'), r#""\"""#);
        assert_eq!(canon(&'\n'), r#""\n""#);
        assert_eq!(canon(&'😀'), "\"😀\"");
        assert_eq!(canon(&['x', '\u{1}']), r#"["x","\u0001"]"#);
    }

    struct Shown(&'static str);

    impl Serialize for Shown {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&format_args!("<{}|{}>", self.0, self.0))
        }
    }

    #[test]
    fn collected_display_text_is_escaped() {
        assert_eq!(canon(&Shown("a\"b")), r#""<a\"b|a\"b>""#);
        assert_eq!(canon(&OneEntry(Shown("k\n"))), r#"{"<k\n|k\n>":0}"#);
    }

    // ---- The RFC's own examples ----------------------------------------

    #[test]
    fn rfc8785_section_3_2_3_sorting_example() {
        let value = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let expected = concat!(
            "{",
            r#""\r":"Carriage Return","#,
            r#""1":"One","#,
            "\"\u{80}\":\"Control\",",
            "\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",",
            "\"\u{20ac}\":\"Euro Sign\",",
            "\"\u{1f600}\":\"Emoji: Grinning Face\",",
            "\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"",
            "}"
        );
        assert_eq!(canon(&value), expected);
    }

    #[test]
    // The RFC's inputs carry more digits than a double: rounding them is the point.
    #[allow(clippy::excessive_precision)]
    fn rfc8785_section_3_2_4_full_example() {
        let value = json!({
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/",
            "literals": [null, true, false]
        });
        let expected = concat!(
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"#,
            "\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
        assert_eq!(canon(&value), expected);
    }

    #[test]
    fn utf16_order_differs_from_byte_order_above_the_bmp() {
        // U+1F600 is D83D DE00 in UTF-16, before U+E000 and U+FFFF; in UTF-8 it is after.
        let names = [
            "\u{ffff}",
            "\u{1f600}",
            "\u{e000}",
            "\u{10000}",
            "\u{d7ff}",
            "z",
        ];
        let map: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let expected = "{\"z\":5,\"\u{d7ff}\":4,\"\u{10000}\":3,\"\u{1f600}\":1,\"\u{e000}\":2,\"\u{ffff}\":0}";
        assert_eq!(canon(&map), expected);
        assert!("\u{1f600}" > "\u{e000}", "byte order would disagree");
    }

    #[test]
    fn names_that_are_prefixes_sort_first() {
        assert_eq!(
            canon(&json!({"ab": 1, "a": 2, "": 3, "b": 4, "A": 5})),
            r#"{"":3,"A":5,"a":2,"ab":1,"b":4}"#
        );
    }

    // ---- Containers ----------------------------------------------------

    #[test]
    fn hash_map_order_does_not_matter() {
        // ASCII, U+E000.., and above U+FFFF: the ranges where UTF-16 and byte order part.
        let names: Vec<String> = (0..300u32)
            .map(|i| {
                let base = [0x61, 0xe000, 0x1f300][(i % 3) as usize];
                format!("{}{i}", char::from_u32(base + i % 26).unwrap_or('?'))
            })
            .collect();
        let hashed: HashMap<String, HashMap<String, u32>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let inner = names
                    .iter()
                    .take(i % 7)
                    .map(|n| (n.clone(), i as u32))
                    .collect();
                (name.clone(), inner)
            })
            .collect();
        let ordered: BTreeMap<&String, BTreeMap<&String, &u32>> = hashed
            .iter()
            .map(|(k, inner)| (k, inner.iter().collect()))
            .collect();
        assert_eq!(canon(&hashed), canon(&ordered));
        // Rebuilding the map gives another iteration order, never other bytes.
        let mut entries: Vec<_> = hashed.clone().into_iter().collect();
        entries.reverse();
        let rebuilt: HashMap<_, _> = entries.into_iter().collect();
        assert_eq!(canon(&hashed), canon(&rebuilt));
    }

    #[test]
    fn empty_and_nested_containers() {
        assert_eq!(canon(&json!({})), "{}");
        assert_eq!(canon(&json!([])), "[]");
        assert_eq!(canon(&Vec::<u8>::new()), "[]");
        assert_eq!(canon(&HashMap::<String, u8>::new()), "{}");
        assert_eq!(
            canon(&json!({"b": [{"d": {}, "c": []}], "a": {"z": {"y": null, "x": [1, [2]]}}})),
            r#"{"a":{"z":{"x":[1,[2]],"y":null}},"b":[{"c":[],"d":{}}]}"#
        );
    }

    #[test]
    fn deep_nesting() {
        let mut value = json!(0);
        for depth in 0..200 {
            value = if depth % 2 == 0 {
                json!([value])
            } else {
                json!({"k": value})
            };
        }
        let text = canon(&value);
        assert_eq!(text.len(), 1 + 100 * "[{\"k\":]}".len());
        assert!(text.starts_with("{\"k\":[{\"k\":["));
    }

    #[test]
    fn top_level_scalars() {
        assert_eq!(canon(&()), "null");
        assert_eq!(canon(&true), "true");
        assert_eq!(canon(&false), "false");
        assert_eq!(canon("x"), r#""x""#);
        assert_eq!(canon(&42), "42");
        assert_eq!(canon(&json!(null)), "null");
    }

    #[test]
    fn options() {
        assert_eq!(canon(&None::<u8>), "null");
        assert_eq!(canon(&Some(3)), "3");
        assert_eq!(canon(&Some(Some("x"))), r#""x""#);
        assert_eq!(canon(&vec![Some(1), None]), "[1,null]");
    }

    #[derive(Serialize)]
    struct OutOfOrder {
        zeta: u8,
        alpha: &'static str,
        #[serde(rename = "Mid")]
        mid: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        nested: Inner,
    }

    #[derive(Serialize)]
    struct Inner {
        y: (),
        x: Vec<u8>,
    }

    #[test]
    fn struct_fields_come_out_sorted() {
        let value = OutOfOrder {
            zeta: 1,
            alpha: "a",
            mid: None,
            skipped: None,
            nested: Inner {
                y: (),
                x: vec![2, 1],
            },
        };
        assert_eq!(
            canon(&value),
            r#"{"Mid":null,"alpha":"a","nested":{"x":[2,1],"y":null},"zeta":1}"#
        );
    }

    #[derive(Serialize)]
    struct Flattened {
        b: u8,
        #[serde(flatten)]
        rest: Inner,
        #[serde(flatten)]
        extra: BTreeMap<String, u8>,
    }

    #[test]
    fn flattened_structs_are_sorted_together() {
        let value = Flattened {
            b: 1,
            rest: Inner { y: (), x: vec![] },
            extra: BTreeMap::from([("a".to_owned(), 0), ("c".to_owned(), 2)]),
        };
        assert_eq!(canon(&value), r#"{"a":0,"b":1,"c":2,"x":[],"y":null}"#);
    }

    #[derive(Serialize)]
    struct UnitStruct;

    #[derive(Serialize)]
    struct Newtype(&'static str);

    #[derive(Serialize)]
    struct TupleStruct(u8, &'static str);

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(u8, &'static str),
        Struct { z: u8, a: Vec<Shape> },
        Empty {},
    }

    #[test]
    fn structs_and_enums_in_every_shape() {
        assert_eq!(canon(&UnitStruct), "null");
        assert_eq!(canon(&Newtype("n")), r#""n""#);
        assert_eq!(canon(&TupleStruct(1, "t")), r#"[1,"t"]"#);
        assert_eq!(canon(&Shape::Unit), r#""Unit""#);
        assert_eq!(canon(&Shape::Newtype(7)), r#"{"Newtype":7}"#);
        assert_eq!(canon(&Shape::Tuple(1, "x")), r#"{"Tuple":[1,"x"]}"#);
        assert_eq!(
            canon(&Shape::Struct {
                z: 2,
                a: vec![Shape::Unit, Shape::Newtype(1)]
            }),
            r#"{"Struct":{"a":["Unit",{"Newtype":1}],"z":2}}"#
        );
        assert_eq!(canon(&Shape::Empty {}), r#"{"Empty":{}}"#);
        assert_eq!(canon(&(1, "two", [3.5])), r#"[1,"two",[3.5]]"#);
    }

    #[test]
    fn shapes_agree_with_serde_json() {
        // Without floats and with ASCII names, JCS is serde_json's compact form of
        // the value with sorted keys, which serde_json::Value has.
        let values = [
            serde_json::to_value(Shape::Struct {
                z: 2,
                a: vec![Shape::Tuple(0, "\n")],
            })
            .unwrap(),
            serde_json::to_value(OutOfOrder {
                zeta: 9,
                alpha: "\u{1}é",
                mid: Some(true),
                skipped: Some(4),
                nested: Inner {
                    y: (),
                    x: vec![0, 255],
                },
            })
            .unwrap(),
        ];
        for value in values {
            assert_eq!(canon(&value), serde_json::to_string(&value).unwrap());
        }
    }

    struct Bytes(&'static [u8]);

    impl Serialize for Bytes {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    #[test]
    fn bytes_are_arrays_of_numbers() {
        assert_eq!(canon(&Bytes(b"")), "[]");
        assert_eq!(canon(&Bytes(&[0, 1, 127, 255])), "[0,1,127,255]");
        assert_eq!(
            canon(&Bytes(b"hi")),
            serde_json::to_string(&Bytes(b"hi")).unwrap()
        );
    }

    // ---- Map keys ------------------------------------------------------

    #[test]
    fn integer_keys_are_decimal_strings_sorted_as_strings() {
        let map = BTreeMap::from([
            (10, "ten"),
            (9, "nine"),
            (-1, "minus one"),
            (100, "hundred"),
        ]);
        assert_eq!(
            canon(&map),
            r#"{"-1":"minus one","10":"ten","100":"hundred","9":"nine"}"#
        );
        assert_eq!(
            canon(&BTreeMap::from([(u128::MAX, 0)])),
            format!("{{\"{}\":0}}", u128::MAX)
        );
        assert_eq!(
            canon(&BTreeMap::from([(i128::MIN, 0)])),
            format!("{{\"{}\":0}}", i128::MIN)
        );
        assert_eq!(canon(&BTreeMap::from([(0u8, 0)])), r#"{"0":0}"#);
        assert_eq!(
            canon(&BTreeMap::from([(i64::MIN, 0)])),
            r#"{"-9223372036854775808":0}"#
        );
    }

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        Beta,
        Alpha,
    }

    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct Wrapped(&'static str);

    #[test]
    fn char_newtype_and_unit_variant_keys() {
        assert_eq!(
            canon(&BTreeMap::from([('b', 1), ('"', 2)])),
            r#"{"\"":2,"b":1}"#
        );
        assert_eq!(
            canon(&BTreeMap::from([(Key::Beta, 1), (Key::Alpha, 2)])),
            r#"{"Alpha":2,"Beta":1}"#
        );
        assert_eq!(canon(&BTreeMap::from([(Wrapped("w"), 1)])), r#"{"w":1}"#);
    }

    #[test]
    fn other_keys_are_errors() {
        let message = "map keys must be strings or integers, but one is a bool";
        assert_eq!(error_of(&BTreeMap::from([(true, 1)])).to_string(), message);
        assert_eq!(
            error_of(&BTreeMap::from([((), 1)])),
            CanonicalError::key_not_string("a unit")
        );
        assert_eq!(
            error_of(&BTreeMap::from([(Some("a"), 1)])),
            CanonicalError::key_not_string("an Option")
        );
        assert_eq!(
            error_of(&BTreeMap::from([(vec![1], 1)])),
            CanonicalError::key_not_string("a sequence")
        );
        assert_eq!(
            error_of(&BTreeMap::from([((1, 2), 1)])),
            CanonicalError::key_not_string("a tuple")
        );
        assert_eq!(
            error_of(&OneEntry(1.5)),
            CanonicalError::key_not_string("a float")
        );
        assert_eq!(
            error_of(&OneEntry(Bytes(b"k"))),
            CanonicalError::key_not_string("a byte array")
        );
        assert_eq!(
            error_of(&OneEntry(UnitStruct)),
            CanonicalError::key_not_string("a unit struct")
        );
        assert_eq!(
            error_of(&OneEntry(Shape::Newtype(1))),
            CanonicalError::key_not_string("an enum variant with data")
        );
        assert_eq!(
            error_of(&OneEntry(BTreeMap::from([("k", 1)]))),
            CanonicalError::key_not_string("a map")
        );
    }

    /// A map of one entry keyed by anything, which std maps do not all allow.
    struct OneEntry<K>(K);

    impl<K: Serialize> Serialize for OneEntry<K> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(1))?;
            map.serialize_entry(&self.0, &0)?;
            map.end()
        }
    }

    // ---- Errors from odd Serialize impls ----------------------------------

    #[derive(Serialize)]
    #[serde(untagged)]
    enum AnyKey {
        Text(&'static str),
        Number(i64),
    }

    /// Emits the given entries as a map, as a careless custom impl might.
    struct Entries(Vec<(AnyKey, u8)>);

    impl Serialize for Entries {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            for (key, value) in &self.0 {
                map.serialize_entry(key, value)?;
            }
            map.end()
        }
    }

    #[test]
    fn duplicate_names_are_errors() {
        let twice = Entries(vec![
            (AnyKey::Text("a"), 1),
            (AnyKey::Text("b"), 2),
            (AnyKey::Text("a"), 3),
        ]);
        let error = error_of(&twice);
        assert_eq!(
            error,
            CanonicalError::new(ErrorKind::DuplicateName("a".to_owned()))
        );
        assert!(error.to_string().contains("\"a\" twice"), "{error}");
        // An integer key and a string key can name the same member.
        let mixed = Entries(vec![(AnyKey::Number(1), 1), (AnyKey::Text("1"), 2)]);
        assert_eq!(
            error_of(&mixed),
            CanonicalError::new(ErrorKind::DuplicateName("1".to_owned()))
        );
        // Nested inside an array, the error still surfaces.
        let nested = vec![Entries(vec![
            (AnyKey::Text("x"), 1),
            (AnyKey::Text("x"), 1),
        ])];
        assert!(canonical_json(&nested).is_err());
        let fine = Entries(vec![(AnyKey::Number(2), 1), (AnyKey::Text("1"), 2)]);
        assert_eq!(canon(&fine), r#"{"1":2,"2":1}"#);
    }

    struct TwiceField;

    impl Serialize for TwiceField {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut object = serializer.serialize_struct("TwiceField", 2)?;
            object.serialize_field("f", &1)?;
            object.serialize_field("f", &2)?;
            object.end()
        }
    }

    #[test]
    fn duplicate_struct_fields_are_errors() {
        assert_eq!(
            error_of(&TwiceField),
            CanonicalError::new(ErrorKind::DuplicateName("f".to_owned()))
        );
    }

    /// Drives `SerializeMap` out of order.
    enum Misuse {
        ValueFirst,
        KeyTwice,
        KeyLast,
    }

    impl Serialize for Misuse {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            match self {
                Misuse::ValueFirst => map.serialize_value(&1)?,
                Misuse::KeyTwice => {
                    map.serialize_key("a")?;
                    map.serialize_key("b")?;
                }
                Misuse::KeyLast => map.serialize_key("a")?,
            }
            map.end()
        }
    }

    #[test]
    fn map_protocol_misuse_is_an_error() {
        for misuse in [Misuse::ValueFirst, Misuse::KeyTwice, Misuse::KeyLast] {
            assert!(matches!(error_of(&misuse).kind, ErrorKind::MapProtocol(_)));
        }
    }

    struct Failing;

    impl Serialize for Failing {
        fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot serialize this"))
        }
    }

    struct FailingDisplay;

    impl Display for FailingDisplay {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("partial")?;
            Err(fmt::Error)
        }
    }

    impl Serialize for FailingDisplay {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    #[test]
    fn custom_errors_pass_through() {
        let error = error_of(&Failing);
        assert_eq!(error.to_string(), "cannot serialize this");
        assert_eq!(error_of(&vec![Failing]), error);
        assert_eq!(error_of(&BTreeMap::from([("k", Failing)])), error);
        assert_eq!(error_of(&Some(Failing)), error);
        assert_eq!(error_of(&FailingDisplay), CanonicalError::display_failed());
        assert_eq!(
            error_of(&OneEntry(FailingDisplay)),
            CanonicalError::display_failed()
        );
        let boxed: Box<dyn std::error::Error> = Box::new(error);
        assert_eq!(boxed.to_string(), "cannot serialize this");
    }

    // ---- Keys built on top -------------------------------------------------

    #[test]
    fn argument_boundaries_stay_visible() {
        assert_ne!(canon(&("a:b", "")), canon(&("a", "b")));
        assert_ne!(canon(&["ab"]), canon(&["a", "b"]));
        assert_ne!(canon(&("a", ("b",))), canon(&(("a",), "b")));
        assert_ne!(canon(&(1, 23)), canon(&(12, 3)));
        assert_ne!(canon(&"1"), canon(&1));
        assert_ne!(canon(&None::<u8>), canon(&"null"));
    }

    #[test]
    fn hashing_sink_matches_buffer() {
        let args = (
            &"customer-42",
            &"quote-7",
            &1999u64,
            json!({"b": [1.5, "\u{1f600}"], "a": null}),
        );
        let mut hasher = Sha256::new();
        write_canonical(&mut hasher, &args).unwrap();
        let streamed = hasher.finalize();
        let text = canon(&args);
        assert_eq!(
            text,
            r#"["customer-42","quote-7",1999,{"a":null,"b":[1.5,"😀"]}]"#
        );
        assert_eq!(streamed, Sha256::digest(text.as_bytes()));
    }

    #[test]
    fn dyn_sink_works() {
        let mut buffer = Vec::new();
        let sink: &mut dyn Sink = &mut buffer;
        write_canonical(sink, &(1, "x")).unwrap();
        assert_eq!(buffer, br#"[1,"x"]"#);
    }
}
