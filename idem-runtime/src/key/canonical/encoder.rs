//! Values: the serializer that writes one value, and arrays, written straight through.

use std::fmt::{Display, Write as _};

use serde::ser::{self, Serialize};

use super::number::{integers, write_f64, Decimal};
use super::object::ObjectEncoder;
use super::string::{write_string, Escaper};
use super::{CanonicalError, Sink};

/// The serializer for one value, writing into `sink`.
pub(super) struct Encoder<'a, S: ?Sized> {
    pub(super) sink: &'a mut S,
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
pub(super) struct ArrayEncoder<'a, S: ?Sized> {
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
