//! Checks `canonical_json` against an RFC 8785 implementation nobody here wrote:
//! Trail of Bits' pure-Python `rfc8785` package.
//!
//! The interpreter is `$IDEM_PYTHON`, else `python3`. Without `rfc8785`, outside
//! CI the test falls back to Python's standard `json` module on the values where
//! it agrees with JCS; under `CI=true` a missing Python or package is a failure,
//! so the check cannot silently stop running there.

use serde_json::{json, Value};

use crate::python::{required_under_ci, run_python};

/// Loads the JSON array in `argv[1]` and prints one line per element: a header
/// line naming the encoder, then each element's canonical form. Canonical JSON
/// never holds a raw newline, so lines separate values unambiguously.
const SCRIPT: &str = r#"
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    values = json.load(f)
try:
    import rfc8785
except ImportError:
    rfc8785 = None
out = sys.stdout.buffer
if rfc8785 is not None:
    out.write(b"rfc8785\n")
    for v in values:
        out.write(rfc8785.dumps(v) + b"\n")
else:
    out.write(b"stdlib\n")
    for v in values:
        text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        out.write(text.encode("utf-8") + b"\n")
"#;

/// Every control character, then the characters JCS must leave alone.
fn escape_cases() -> String {
    let controls: String = (0u8..0x20).map(char::from).collect();
    format!("{controls}\"\\/\u{7f}é\u{80}\u{2028}\u{2029}\u{feff}\u{ffff}😀 end")
}

fn deep(depth: usize) -> Value {
    let mut value = json!("bottom");
    for level in 0..depth {
        value = if level % 2 == 0 {
            json!([level, value])
        } else {
            json!({ format!("l{level}"): value, "é": level })
        };
    }
    value
}

fn wide_object() -> Value {
    let members = (0..60u32).map(|i| {
        let name = match i % 4 {
            0 => format!("k{i}"),
            1 => format!("{}{i}", char::from_u32(0xe000 + i).unwrap_or('?')),
            2 => format!("{}{i}", char::from_u32(0x1f300 + i).unwrap_or('?')),
            _ => format!("\u{f6}{i}"),
        };
        (name, json!(i64::from(i) * 7919 - 200_000))
    });
    Value::Object(members.collect())
}

/// About forty values across the corners of JCS. Integers stay within
/// ±(2^53 - 1): `rfc8785` refuses anything larger (see the module doc of
/// `idem_runtime`'s canonical encoder for how idem extends that).
// Some inputs are written with more digits than a double holds, as the RFC's own
// examples are: rounding them is part of what is checked.
#[allow(clippy::excessive_precision)]
fn table() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(""),
        json!({}),
        json!([]),
        json!([[], {}, [{}], {"": []}]),
        json!(0),
        json!(-0.0),
        json!([1e21, 1e-7, 1e20, 1e-6, 1e30, 1e-27, 1e23, 1e22]),
        json!([333333333.3333333, 333333333.33333329, 4.5, 2e-3, 0.000001]),
        json!([
            5e-324,
            -5e-324,
            1.7976931348623157e308,
            -1.7976931348623157e308
        ]),
        json!([
            9007199254740992.0,
            -9007199254740992.0,
            295147905179352830000.0
        ]),
        json!([
            9.999999999999997e22,
            1.0000000000000001e23,
            999999999999999700000.0
        ]),
        json!([
            9.999999999999997e-7,
            -0.0000033333333333333333,
            1424953923781206.2
        ]),
        json!([0.1, 0.2, 0.30000000000000004, 1.5, -2.25, 100.0, 1.0, -1.0]),
        json!([
            std::f64::consts::PI,
            std::f64::consts::E,
            6.02214076e23,
            1.602176634e-19
        ]),
        json!([
            123456.789,
            -98.7654321e-12,
            4.35e-9,
            7.0e15,
            1.2345678901234567e-300
        ]),
        json!([
            2.2250738585072014e-308,
            4.9406564584124654e-320,
            8.98846567431158e307
        ]),
        json!([
            9007199254740991i64,
            -9007199254740991i64,
            4294967296u64,
            -2147483648i64
        ]),
        json!([0, 1, -1, 10, 100, 1999, 65535, 1000000, 123456789012345i64]),
        json!(escape_cases()),
        json!({ escape_cases(): escape_cases() }),
        json!({"\n": 1, "\"": 2, "\\": 3, "\u{1}": 4, "a b": 5, "/": 6, "\u{7f}": 7}),
        json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        }),
        json!({"\u{e000}": 1, "\u{10000}": 2, "\u{ffff}": 3, "\u{1f600}": 4, "\u{d7ff}": 5}),
        json!({"ab": 1, "a": 2, "": 3, "b": 4, "A": 5, "aa": 6, "B": 7}),
        json!({"10": 1, "9": 2, "-1": 3, "1e3": 4, "01": 5}),
        json!({"é": {"ö": 1, "z": [{"b": 2, "a": 1}]}, "日本": "語", "a": {}}),
        json!({"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
               "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/",
               "literals": [null, true, false]}),
        json!({"customer": "customer-42", "quote": "quote-7", "amount_cents": 1999,
               "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1, "note": null}]}),
        json!(["customer-42", "quote-7", 1999]),
        json!({"z": {"y": {"x": {"w": {"v": [1, {"u": true}]}}}}}),
        json!({"tags": ["b", "a", "b"], "flags": {"on": true, "off": false}, "none": null}),
        json!([{"b": 1, "a": 2}, {"a": 2, "b": 1}]),
        json!({"mixed": [1, 1.5, "1", [1], {"1": 1}, null, true]}),
        deep(40),
        wide_object(),
        json!("plain ascii text with spaces and punctuation !#$%&'()*+,-.:;<=>?@[]^_`{|}~"),
        json!("日本語のテキスト и кириллица ✓ 𝄞"),
    ]
}

/// Whether Python's `json.dumps(sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` gives JCS bytes: its floats are not ECMAScript's, and it
/// sorts keys by code point rather than UTF-16, so only integers and ASCII keys.
fn stdlib_agrees(value: &Value) -> bool {
    match value {
        Value::Number(number) => !number.is_f64(),
        Value::Array(items) => items.iter().all(stdlib_agrees),
        Value::Object(members) => members
            .iter()
            .all(|(k, v)| k.is_ascii() && stdlib_agrees(v)),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

#[test]
fn canonical_json_matches_python_rfc8785() {
    let values = table();
    let Some((python, stdout)) = run_python(SCRIPT, &values) else {
        return;
    };
    let mut lines = stdout.lines();
    let full = match lines.next() {
        Some("rfc8785") => true,
        Some("stdlib") => {
            required_under_ci(&format!("{python} cannot import rfc8785"));
            eprintln!("skipping full RFC 8785 cross-check: pip install rfc8785");
            false
        }
        other => panic!("unexpected first line from {python}: {other:?}"),
    };
    let expected: Vec<&str> = lines.collect();
    assert_eq!(
        expected.len(),
        values.len(),
        "{python} printed {} values, the table has {}",
        expected.len(),
        values.len()
    );

    let mut checked = 0;
    for (index, (value, theirs)) in values.iter().zip(expected).enumerate() {
        if !full && !stdlib_agrees(value) {
            continue;
        }
        let ours = idem_runtime::canonical_json(value).unwrap_or_else(|error| {
            panic!("value #{index} {value} has no canonical form: {error}")
        });
        assert_eq!(
            ours,
            theirs,
            "value #{index} {value}: idem gives the left, Python ({}) the right",
            if full { "rfc8785" } else { "json.dumps" }
        );
        checked += 1;
    }
    assert!(
        checked >= if full { values.len() } else { 10 },
        "only {checked} values were compared"
    );
}
