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
    let expected =
        "{\"z\":5,\"\u{d7ff}\":4,\"\u{10000}\":3,\"\u{1f600}\":1,\"\u{e000}\":2,\"\u{ffff}\":0}";
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
