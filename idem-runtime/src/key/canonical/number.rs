//! Numbers: integers as their exact decimal digits, doubles in ECMAScript's form.

use super::{CanonicalError, ErrorKind, Sink};

/// The decimal digits of an integer, formatted on the stack.
pub(super) struct Decimal {
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

    pub(super) fn signed(value: i128) -> Self {
        Self::new(value < 0, value.unsigned_abs())
    }

    pub(super) fn unsigned(value: u128) -> Self {
        Self::new(false, value)
    }

    fn push_digit(&mut self, digit: u8) {
        self.push(b'0' + digit);
    }

    fn push(&mut self, byte: u8) {
        self.start -= 1;
        self.buf[self.start] = byte;
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The ten integer methods of a `Serializer`, each handing its value to `$to` as a
/// [`Decimal`]: the value serializer writes it, the member-name serializer keeps it as a name.
// Expanded where `Decimal` and `CanonicalError` are in scope: the encoder and the key encoder.
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
pub(super) use integers;

/// ECMAScript's Number-to-String (RFC 8785 §3.2.2.3).
pub(super) fn write_f64<S: Sink + ?Sized>(sink: &mut S, value: f64) -> Result<(), CanonicalError> {
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
