//! Objects: members buffered, then sorted by their names as UTF-16 code units,
//! and the serializer for map keys, which become member names.

use std::cmp::Ordering;
use std::fmt::{Display, Write as _};
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize};

use super::encoder::Encoder;
use super::number::{integers, Decimal};
use super::string::write_string;
use super::{CanonicalError, ErrorKind, Sink};

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
pub(super) struct ObjectEncoder<'a, S: ?Sized> {
    sink: &'a mut S,
    members: Members,
    /// Nothing, or `}` to also close a struct variant's tag.
    close: &'static [u8],
}

impl<'a, S: Sink + ?Sized> ObjectEncoder<'a, S> {
    pub(super) fn new(sink: &'a mut S, close: &'static [u8]) -> Self {
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
