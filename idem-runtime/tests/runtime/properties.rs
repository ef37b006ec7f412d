//! Property tests of what a key is made of and of what stores read back.
//!
//! - Canonical JSON against Python's `rfc8785` (Trail of Bits) on generated values: one
//!   long-lived interpreter per test answers one value per line, so each case is checked as
//!   it is generated and a failure shrinks to a minimal value with the oracle still in the
//!   loop (a batch run would report the first failing value of a file, unshrunk).
//! - Keys: independent of map insertion order and of struct field order, distinct for
//!   distinct arguments, and exactly the SHA-256 the definition on `Key` gives.
//! - Decoders: saga arguments and outputs read back from a log, keys and status names, and a
//!   real SQLite file whose record and saga rows hold garbage: an error naming the key, never
//!   a panic. (The decoders private to each store have their own property tests beside them:
//!   `store/redis/{record,decode}.rs`, `store/postgres/decode.rs`, `store/sqlite/records.rs`.)

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use idem_runtime::store::{ClaimRequest, SagaStatus, SagaStore, StepState, Store};
use idem_runtime::{canonical_json, Action, Error, Fingerprint, Key, OnStale};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::python::{interpreter, required_under_ci};

// ---------------------------------------------------------------------------------------
// Generated JSON
// ---------------------------------------------------------------------------------------

/// Characters where encoders go wrong: every control character (escaped, some as `\n`-style
/// short forms), the characters JCS must not escape (`/`, DEL, U+2028, a BOM), the last
/// characters before and the first after the surrogate range, and characters beyond the
/// BMP, which sort by their UTF-16 surrogates (before U+E000…U+FFFF), not their code points.
fn edge_char() -> impl Strategy<Value = char> {
    let specials = prop::sample::select(vec![
        '"',
        '\\',
        '/',
        '\u{7f}',
        '\u{80}',
        '\u{ff}',
        '\u{2028}',
        '\u{2029}',
        '\u{d7ff}',
        '\u{e000}',
        '\u{feff}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10000}',
        '\u{1f600}',
        '\u{10ffff}',
        'é',
        'a',
        'A',
        'z',
        '0',
    ]);
    prop_oneof![(0u8..0x20).prop_map(char::from), specials, any::<char>(),]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(edge_char(), 0..8).prop_map(|chars| chars.into_iter().collect()),
        "[a-c]{0,3}",
        any::<String>(),
    ]
}

/// Integers JCS holds exactly: within ±(2^53 - 1). (Beyond that `rfc8785` refuses them and
/// idem writes their exact digits: see `integers_beyond_2_pow_53_keep_their_digits`.)
const SAFE: i64 = (1 << 53) - 1;

fn safe_integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        -SAFE..=SAFE,
        -1000i64..1000,
        prop::sample::select(vec![
            0,
            -1,
            SAFE,
            -SAFE,
            SAFE - 1,
            1 << 31,
            -(1 << 31),
            1 << 32
        ]),
    ]
}

/// Finite doubles: any normal or subnormal of either sign, zero and -0.0, decimal mantissas
/// at every exponent (ECMAScript switches to exponent form at 1e21 and 1e-7), integral
/// doubles around 2^53, and the extremes.
fn finite_double() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NORMAL, SUBNORMAL, ZERO};
    let decimal = (-999_999i64..=999_999, -330i32..=310)
        .prop_map(|(mantissa, exponent)| format!("{mantissa}e{exponent}").parse::<f64>())
        .prop_filter_map("finite", |parsed| parsed.ok().filter(|x| x.is_finite()));
    let integral = (-(1i64 << 54)..(1i64 << 54)).prop_map(|n| n as f64);
    prop_oneof![
        NORMAL | SUBNORMAL | ZERO,
        decimal,
        integral,
        prop::sample::select(vec![
            -0.0,
            1e21,
            1e-7,
            999_999_999_999_999_900_000.0,
            9.999_999_999_999_997e-7,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            -5e-324,
        ]),
    ]
}

/// A JSON value, nested up to four levels, with objects up to eight members.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        safe_integer().prop_map(Value::from),
        finite_double().prop_filter_map("finite", |x| Number::from_f64(x).map(Value::Number)),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((json_string(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------
// Canonical JSON against rfc8785
// ---------------------------------------------------------------------------------------

/// Reads one JSON value per line and answers its RFC 8785 form on one line (canonical JSON
/// never holds a raw newline), or `!` and the exception for a value it refuses. The first
/// line says whether `rfc8785` is there.
const ORACLE: &str = r#"
import json, sys
out = sys.stdout.buffer
try:
    import rfc8785
except ImportError:
    out.write(b"missing rfc8785\n")
    out.flush()
    sys.exit(0)
out.write(b"rfc8785\n")
out.flush()
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    try:
        out.write(rfc8785.dumps(json.loads(line)) + b"\n")
    except Exception as error:
        out.write(b"!" + repr(error).encode("utf-8", "replace") + b"\n")
    out.flush()
"#;

/// A Python process that canonicalizes values with `rfc8785`, one at a time.
struct Rfc8785 {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Rfc8785 {
    /// The oracle, or `None` (after saying why) outside CI when Python or the package is
    /// missing; under CI that is a failure.
    fn start() -> Option<Self> {
        let python = interpreter();
        let spawned = Command::new(&python)
            .arg("-c")
            .arg(ORACLE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let reason = format!("cannot run {python}: {error}");
                required_under_ci(&reason);
                eprintln!("skipping the rfc8785 property test: {reason}");
                return None;
            }
        };
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("read the oracle's first line");
        let oracle = Rfc8785 {
            child,
            stdin,
            stdout,
        };
        match first.trim_end() {
            "rfc8785" => Some(oracle),
            "missing rfc8785" => {
                let reason = format!("{python} cannot import rfc8785");
                required_under_ci(&reason);
                eprintln!("skipping the rfc8785 property test: {reason} (pip install rfc8785)");
                None
            }
            other => panic!("unexpected first line from {python}: {other:?}"),
        }
    }

    /// `rfc8785.dumps(value)`, or the exception it raised.
    fn canonical(&mut self, value: &Value) -> Result<String, String> {
        let stdin = self.stdin.as_mut().expect("stdin is open until drop");
        let mut line = serde_json::to_vec(value).expect("a JSON value serializes");
        line.push(b'\n');
        stdin.write_all(&line).expect("write to the oracle");
        stdin.flush().expect("flush to the oracle");
        let mut answer = Vec::new();
        self.stdout
            .read_until(b'\n', &mut answer)
            .expect("read from the oracle");
        assert_eq!(answer.pop(), Some(b'\n'), "the oracle stopped answering");
        let answer = String::from_utf8(answer).expect("the oracle answers UTF-8");
        match answer.strip_prefix('!') {
            Some(error) => Err(error.to_owned()),
            None => Ok(answer),
        }
    }
}

impl Drop for Rfc8785 {
    fn drop(&mut self) {
        // End of input ends the loop; the process is waited for so that none is left behind.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A runner for the properties run by hand (not through `proptest!`): a fixed number of
/// cases, whatever `PROPTEST_CASES` says, so the test's cost is known.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Panics with the minimal failing input, shrunk, if the run failed.
fn assert_passed<T: std::fmt::Debug>(result: Result<(), TestError<T>>) {
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn canonical_json_matches_rfc8785_on_generated_values() {
    let Some(oracle) = Rfc8785::start() else {
        return;
    };
    let oracle = RefCell::new(oracle);
    let result = runner(1000).run(&json_value(), |value| {
        let theirs = oracle
            .borrow_mut()
            .canonical(&value)
            .map_err(|error| TestCaseError::fail(format!("rfc8785 refused {value}: {error}")))?;
        let ours = canonical_json(&value)
            .map_err(|error| TestCaseError::fail(format!("idem refused {value}: {error}")))?;
        prop_assert_eq!(ours, theirs, "for {}", value);
        Ok(())
    });
    assert_passed(result);
}

proptest! {
    /// NaN and the infinities have no JSON form: wherever they are, the value has no
    /// canonical form (and so no key), rather than a spelling of our own.
    #[test]
    fn non_finite_doubles_are_errors_wherever_they_are(
        bad in prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN]),
        before in prop::collection::vec(finite_double(), 0..3),
        name in json_string(),
    ) {
        prop_assert!(canonical_json(&bad).is_err());
        let mut list = before.clone();
        list.push(bad);
        prop_assert!(canonical_json(&list).is_err());
        prop_assert!(canonical_json(&BTreeMap::from([(name.clone(), bad)])).is_err());
        prop_assert!(Action::new("non_finite").key(&(name, list)).is_err());
    }

    /// idem's one extension to JCS (see the module doc of the canonical encoder): integers
    /// beyond ±2^53 are written as their exact digits, so that two of them never share a key.
    #[test]
    fn integers_beyond_2_pow_53_keep_their_digits(
        signed in any::<i64>(),
        unsigned in any::<u64>(),
        wide in any::<i128>(),
        wide_unsigned in any::<u128>(),
    ) {
        prop_assert_eq!(canonical_json(&signed).ok(), Some(signed.to_string()));
        prop_assert_eq!(canonical_json(&unsigned).ok(), Some(unsigned.to_string()));
        prop_assert_eq!(canonical_json(&wide).ok(), Some(wide.to_string()));
        prop_assert_eq!(canonical_json(&wide_unsigned).ok(), Some(wide_unsigned.to_string()));
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

static QUOTE: Action = Action::new("send_quote");

#[derive(Debug, Clone, Serialize)]
struct Line {
    sku: String,
    qty: u32,
}

/// The same arguments as [`QuoteReordered`], its fields declared in another order.
#[derive(Debug, Clone, Serialize)]
struct Quote {
    customer: String,
    amount_cents: u64,
    lines: Vec<Line>,
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct QuoteReordered {
    note: Option<String>,
    lines: Vec<Line>,
    amount_cents: u64,
    customer: String,
}

fn quote() -> impl Strategy<Value = Quote> {
    let line = (json_string(), any::<u32>()).prop_map(|(sku, qty)| Line { sku, qty });
    (
        json_string(),
        any::<u64>(),
        prop::collection::vec(line, 0..4),
        prop::option::of(json_string()),
    )
        .prop_map(|(customer, amount_cents, lines, note)| Quote {
            customer,
            amount_cents,
            lines,
            note,
        })
}

/// An object's members, as a list.
type Members = Vec<(String, Value)>;

/// Members with distinct names, in the order a `BTreeMap` gives them and shuffled.
fn members_in_two_orders() -> impl Strategy<Value = (Members, Members)> {
    prop::collection::btree_map(json_string(), json_value(), 0..8).prop_flat_map(|members| {
        let sorted: Members = members.into_iter().collect();
        (Just(sorted.clone()), Just(sorted).prop_shuffle())
    })
}

/// The key as its definition on [`Key`] gives it, computed here with nothing of idem's but
/// `canonical_json`: SHA-256 over `["idem",1,<namespace>,<name>,<version>,` padded with spaces
/// to whole 64-byte blocks, then the arguments' canonical array, then `]`.
fn key_by_definition(action: &Action, name: &str, args: &impl Serialize) -> Vec<u8> {
    let settings = action.settings();
    let text = |value: &str| canonical_json(value).expect("a string has a canonical form");
    let mut call = format!(
        r#"["idem",1,{},{},{},"#,
        text(settings.namespace),
        text(name),
        settings.version
    )
    .into_bytes();
    call.resize(call.len().div_ceil(64) * 64, b' ');
    call.extend_from_slice(canonical_json(args).expect("a canonical form").as_bytes());
    call.push(b']');
    Sha256::digest(&call).as_slice().to_vec()
}

const QUOTE_NAME: &str = "send_quote";

proptest! {
    /// A map argument gives the same key whatever order its entries were inserted in and
    /// whichever map holds them: the key is over canonical JSON, whose members are sorted.
    #[test]
    fn a_maps_key_does_not_depend_on_its_order_or_its_type(
        (sorted, shuffled) in members_in_two_orders(),
    ) {
        let btree: BTreeMap<String, Value> = shuffled.iter().cloned().collect();
        // Two `HashMap`s get two random hashers: they iterate in different orders.
        let hashed: HashMap<String, Value> = shuffled.iter().cloned().collect();
        let hashed_again: HashMap<String, Value> = sorted.iter().cloned().collect();
        let object: Map<String, Value> = shuffled.iter().cloned().collect();
        let expected = QUOTE.key(&(&btree,)).expect("a key");
        prop_assert_eq!(QUOTE.key(&(&hashed,)).ok(), Some(expected));
        prop_assert_eq!(QUOTE.key(&(&hashed_again,)).ok(), Some(expected));
        prop_assert_eq!(QUOTE.key(&(&object,)).ok(), Some(expected));
        prop_assert_eq!(QUOTE.key(&(Value::Object(object),)).ok(), Some(expected));
    }

    /// A struct's key does not depend on the order its fields are declared in, and is the
    /// key of the map with the same members: a refactoring that reorders fields, or a caller
    /// that builds the arguments as JSON, keeps every key.
    #[test]
    fn a_structs_key_is_its_members_key_in_any_field_order(quote in quote()) {
        let reordered = QuoteReordered {
            note: quote.note.clone(),
            lines: quote.lines.clone(),
            amount_cents: quote.amount_cents,
            customer: quote.customer.clone(),
        };
        let as_map = serde_json::json!({
            "lines": quote.lines.iter().map(|line| serde_json::json!({"qty": line.qty, "sku": line.sku})).collect::<Vec<_>>(),
            "note": quote.note,
            "customer": quote.customer,
            "amount_cents": quote.amount_cents,
        });
        let expected = QUOTE.key(&(&quote,)).expect("a key");
        prop_assert_eq!(QUOTE.key(&(&reordered,)).ok(), Some(expected));
        prop_assert_eq!(QUOTE.key(&(&as_map,)).ok(), Some(expected));
    }

    /// Two arguments share a key exactly when they are the same JSON value, as JSON compares
    /// values (numbers by their value, so `1` and `1.0` are one, objects whatever their
    /// order; decided here without the encoder): different arguments never replay each
    /// other's results (SHA-256 collisions aside), and equal ones always do.
    #[test]
    fn arguments_share_a_key_exactly_when_they_are_the_same_value(
        (a, b) in json_value().prop_flat_map(|a| (Just(a.clone()), prop_oneof![Just(a), json_value()])),
    ) {
        prop_assert_eq!(QUOTE.key(&(&a,)).ok() == QUOTE.key(&(&b,)).ok(), same_json(&a, &b));
    }

    /// Arguments are positional by design: a key is over the array of the key arguments in
    /// the order the function declares them (`#[idempotent]` passes them so), not a map of
    /// their names, so swapping two different arguments is another call.
    #[test]
    fn swapping_two_different_arguments_changes_the_key(a in json_value(), b in json_value()) {
        prop_assume!(canonical_json(&a) != canonical_json(&b));
        prop_assert_ne!(QUOTE.key(&(&a, &b)).ok(), QUOTE.key(&(&b, &a)).ok());
    }

    /// The key is the SHA-256 its definition gives, by both of idem's paths to it: a tuple
    /// (`Action::key`) and the argument list `#[idempotent]` builds (`__private::call`), which
    /// hash block by block from a precomputed header state.
    #[test]
    fn the_key_is_the_digest_its_definition_gives(
        quote in quote(),
        extra in json_value(),
        version in 1u32..4,
    ) {
        let action = Action::new(QUOTE_NAME).version(version);
        let expected = key_by_definition(&action, QUOTE_NAME, &(&quote, &extra));
        let by_tuple = action.key(&(&quote, &extra)).expect("a key");
        prop_assert_eq!(&by_tuple.as_bytes()[..], &expected[..]);
        let args = [
            idem_runtime::private::key_arg(&quote),
            idem_runtime::private::key_arg(&extra),
        ];
        let by_list = idem_runtime::private::call(&action, &args, None).expect("a call").key();
        prop_assert_eq!(by_list, by_tuple);
    }
}

// ---------------------------------------------------------------------------------------
// Decoders shared by every store
// ---------------------------------------------------------------------------------------

proptest! {
    /// Keys are read back from every store's rows and logs: any text is a key exactly when it
    /// is 64 hex digits, and a key reads back from its own text.
    #[test]
    fn a_text_is_a_key_exactly_when_it_is_64_hex_digits(
        text in prop_oneof!["[0-9a-fA-F]{64}", "[0-9a-fA-F]{60,68}", "\\PC{0,70}"],
    ) {
        let is_key = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
        match text.parse::<Key>() {
            Ok(key) => {
                prop_assert!(is_key);
                prop_assert_eq!(key.to_string(), text.to_ascii_lowercase());
            }
            Err(_) => prop_assert!(!is_key),
        }
    }

    /// Status and state names are read back from every store: a name is parsed only as the
    /// status (or state) that is written as exactly that name.
    #[test]
    fn a_status_name_is_parsed_only_as_itself(
        name in prop_oneof![
            Just("running".to_owned()), Just("needs_attention".to_owned()),
            Just("done".to_owned()), Just("compensation_failed".to_owned()),
            Just("in_progress".to_owned()), Just("completed".to_owned()),
            "[a-z_]{0,20}", "\\PC{0,12}",
        ],
    ) {
        if let Some(status) = SagaStatus::parse(&name) {
            prop_assert_eq!(status.as_str(), name.as_str());
        }
        if let Some(state) = StepState::parse(&name) {
            prop_assert_eq!(state.as_str(), name.as_str());
        }
        if let Some(status) = idem_runtime::store::Status::parse(&name) {
            prop_assert_eq!(status.as_str(), name.as_str());
        }
    }

    /// What recovery reads back from a saga's log (a step's arguments, its output) is an
    /// error when it is not what was written, never a panic; what was written reads back.
    #[test]
    fn a_logged_steps_arguments_and_output_read_back_or_are_errors(
        bytes in prop_oneof![
            any::<Vec<u8>>(),
            json_value().prop_map(|value| serde_json::to_vec(&value).expect("JSON")),
        ],
        args in (json_string(), any::<u64>()),
    ) {
        type Args = (String, u64);
        if let Err(failure) = idem_runtime::private::decode_args::<Args>(&bytes) {
            prop_assert!(failure.to_string().contains("saga step"), "{}", failure);
        }
        let _ = idem_runtime::private::decode_output::<Vec<Option<String>>>(&bytes);
        // Steps' arguments are logged as their canonical JSON (`__private::step_args`).
        let written = canonical_json(&args).expect("a canonical form");
        let read = idem_runtime::private::decode_args::<Args>(written.as_bytes());
        prop_assert_eq!(read.ok(), Some(args));
    }
}

// ---------------------------------------------------------------------------------------
// SQLite, end to end: garbage in a real file
// ---------------------------------------------------------------------------------------

/// A value of any SQLite storage class, or one that idem could have written there.
fn sql_value(
    plausible: impl Strategy<Value = rusqlite::types::Value>,
) -> impl Strategy<Value = rusqlite::types::Value> {
    use rusqlite::types::Value as Sql;
    prop_oneof![
        3 => plausible,
        1 => Just(Sql::Null),
        1 => any::<i64>().prop_map(Sql::Integer),
        1 => finite_double().prop_map(Sql::Real),
        1 => "\\PC{0,8}".prop_map(Sql::Text),
        1 => any::<Vec<u8>>().prop_map(Sql::Blob),
    ]
}

fn text_of(names: &'static [&'static str]) -> impl Strategy<Value = rusqlite::types::Value> {
    prop::sample::select(names).prop_map(|name| rusqlite::types::Value::Text(name.to_owned()))
}

/// One row of `idem_records` (key aside), each column anything SQLite can hold.
fn record_columns() -> impl Strategy<Value = Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value as Sql;
    let count = || (0i64..1 << 40).prop_map(Sql::Integer);
    vec![
        sql_value(Just(Sql::Text("an_action".to_owned())).boxed()).boxed(),
        sql_value(text_of(&["in_progress", "completed", "needs_review"])).boxed(),
        sql_value(count()).boxed(),
        sql_value(any::<[u8; 32]>().prop_map(|fp| Sql::Blob(fp.to_vec()))).boxed(),
        sql_value(text_of(&["ok", "err"])).boxed(),
        sql_value(Just(Sql::Blob(b"{}".to_vec()))).boxed(),
        sql_value(count()).boxed(),
        sql_value(count()).boxed(),
        sql_value(count()).boxed(),
    ]
}

/// A saga's head (`idem_sagas`, key aside) and one step (`idem_saga_steps`, saga aside).
fn saga_columns(
) -> impl Strategy<Value = (Vec<rusqlite::types::Value>, Vec<rusqlite::types::Value>)> {
    use rusqlite::types::Value as Sql;
    let head = vec![
        sql_value(Just(Sql::Text("order-42".to_owned()))).boxed(),
        sql_value(text_of(&["running", "compensating", "needs_attention"])).boxed(),
        sql_value(Just(Sql::Null)).boxed(),
        sql_value((0i64..1 << 40).prop_map(Sql::Integer)).boxed(),
        sql_value(Just(Sql::Null)).boxed(),
    ];
    let step = vec![
        sql_value((0i64..4).prop_map(Sql::Integer)).boxed(),
        sql_value(Just(Sql::Text("charge".to_owned()))).boxed(),
        sql_value(any::<[u8; 32]>().prop_map(|k| Sql::Text(Key::from_bytes(k).to_string())))
            .boxed(),
        sql_value((0i64..2).prop_map(Sql::Integer)).boxed(),
        sql_value(Just(Sql::Blob(b"[]".to_vec()))).boxed(),
        sql_value(text_of(&["started", "done", "failed"])).boxed(),
        sql_value(Just(Sql::Null)).boxed(),
        sql_value(Just(Sql::Null)).boxed(),
        // The step's own time (schema 5): NULL in steps an older version wrote.
        sql_value((0i64..1 << 40).prop_map(Sql::Integer)).boxed(),
    ];
    (head, step)
}

/// Whether `answer` is what a store must give for a damaged record of `key`: an answer, or
/// an error that names the key.
fn answered_or_named<T: std::fmt::Debug>(
    key: &Key,
    answer: &Result<T, Error>,
) -> Result<(), TestCaseError> {
    if let Err(error) = answer {
        prop_assert_eq!(error.key(), Some(key), "{}", error);
        prop_assert!(error.to_string().contains(&key.to_string()), "{}", error);
    }
    Ok(())
}

/// A fresh key per case, so that nothing one case left behind is read by the next.
fn fresh_key(counter: &std::cell::Cell<u64>) -> Key {
    counter.set(counter.get() + 1);
    let mut bytes = [0xab; 32];
    bytes[..8].copy_from_slice(&counter.get().to_be_bytes());
    Key::from_bytes(bytes)
}

struct SqliteFile {
    path: std::path::PathBuf,
    store: idem_runtime::store::SqliteStore,
    raw: rusqlite::Connection,
    runtime: tokio::runtime::Runtime,
}

impl SqliteFile {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("idem-props-{}-{name}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = runtime
            .block_on(idem_runtime::store::SqliteStore::open(&path))
            .expect("open the store");
        let raw = rusqlite::Connection::open(&path).expect("open the file");
        raw.busy_timeout(std::time::Duration::from_secs(10))
            .expect("a busy timeout");
        SqliteFile {
            path,
            store,
            raw,
            runtime,
        }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

#[test]
fn a_damaged_sqlite_record_is_an_error_naming_its_key() {
    let file = SqliteFile::new("records");
    let counter = std::cell::Cell::new(0);
    let result = runner(200).run(&record_columns(), |columns| {
        let key = fresh_key(&counter);
        let mut values = vec![rusqlite::types::Value::Text(key.to_string())];
        values.extend(columns.iter().cloned());
        let written = file.raw.execute(
            "INSERT INTO idem_records (key, action, status, token, fingerprint, outcome, result,
                                       created_at_ms, expires_at_ms, ttl_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params_from_iter(values),
        );
        // A NULL in a NOT NULL column: the schema keeps that garbage out.
        prop_assume!(written.is_ok());
        let fingerprint = Fingerprint::from(key);
        let request = ClaimRequest {
            key: &key,
            fingerprint: &fingerprint,
            action: "an_action",
            lease: std::time::Duration::from_secs(10),
            ttl: std::time::Duration::from_secs(60),
            on_stale: OnStale::TakeOver,
        };
        let got = file.runtime.block_on(file.store.get(&key));
        let claimed = file.runtime.block_on(file.store.claim(&request));
        answered_or_named(&key, &got)?;
        answered_or_named(&key, &claimed)?;
        let status_is_a_name = matches!(&columns[1], rusqlite::types::Value::Text(name)
            if ["in_progress", "completed", "needs_review"].contains(&name.as_str()));
        if !status_is_a_name {
            prop_assert!(
                got.is_err() && claimed.is_err(),
                "a record without a status was read"
            );
        }
        Ok(())
    });
    assert_passed(result);
}

#[test]
fn a_damaged_sqlite_saga_log_is_an_error_naming_its_key() {
    let file = SqliteFile::new("sagas");
    let counter = std::cell::Cell::new(0);
    let result = runner(200).run(&saga_columns(), |(head, step)| {
        let key = fresh_key(&counter);
        let mut values = vec![rusqlite::types::Value::Text(key.to_string())];
        values.extend(head.iter().cloned());
        let written = file.raw.execute(
            "INSERT INTO idem_sagas (key, id, status, error, updated_at_ms, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params_from_iter(values),
        );
        prop_assume!(written.is_ok());
        let mut values = vec![rusqlite::types::Value::Text(key.to_string())];
        values.extend(step.iter().cloned());
        // A step the schema refuses leaves a log with no steps, which is still read.
        let _ = file.raw.execute(
            "INSERT INTO idem_saga_steps
               (saga, idx, name, key, irreversible, args, state, output, error, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params_from_iter(values),
        );
        let read = file.runtime.block_on(file.store.read_saga(&key));
        answered_or_named(&key, &read)?;
        Ok(())
    });
    assert_passed(result);
}

/// Whether `a` and `b` are the same JSON value: numbers compared by value (the generated
/// integers stay within ±(2^53 - 1), where every integer is exactly a double), strings by
/// their characters, arrays element by element, objects by their members whatever the order.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(name, x)| y.get(name).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}
