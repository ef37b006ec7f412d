//! Strings: the minimal escaping of RFC 8785 §3.2.2.2, written in runs.

use std::fmt;

use super::Sink;

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

pub(super) fn write_string<S: Sink + ?Sized>(sink: &mut S, text: &str) {
    sink.put(b"\"");
    write_escaped(sink, text);
    sink.put(b"\"");
}

/// Lets `Display` output stream into a JSON string without a `String` in between.
pub(super) struct Escaper<'a, S: ?Sized> {
    pub(super) sink: &'a mut S,
}

impl<S: Sink + ?Sized> fmt::Write for Escaper<'_, S> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.sink, text);
        Ok(())
    }
}
