//! The published key test vectors (`src/key/vectors.md`, shown in the docs of `Key`) are what
//! idem computes, and what Python computes from the definition with `hashlib` and the
//! `rfc8785` package.

use serde_json::Value;

use crate::python::{required_under_ci, run_python};

/// One row of the table: namespace, action, version, arguments, key.
struct Vector {
    namespace: String,
    action: String,
    version: u32,
    arguments: Value,
    key: String,
}

/// Reads the Markdown table: `| `ns` | `action` | version | `[args]` | `key` |`.
fn vectors() -> Vec<Vector> {
    let table = include_str!("../../src/key/vectors.md");
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let rows: Vec<Vector> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 5, "a vector row has five cells: {line}");
            Vector {
                namespace: unquote(cells[0]),
                action: unquote(cells[1]),
                version: cells[2].trim().parse().expect("a version number"),
                arguments: serde_json::from_str(&unquote(cells[3])).expect("arguments in JSON"),
                key: unquote(cells[4]),
            }
        })
        .collect();
    assert!(rows.len() >= 8, "the table has only {} vectors", rows.len());
    rows
}

fn idem_key(vector: &Vector) -> String {
    // Actions are `static`s in real code; a test table leaks its few names instead.
    let leak = |text: &str| -> &'static str { Box::leak(text.to_owned().into_boxed_str()) };
    let action = idem_runtime::Action::new(leak(&vector.action))
        .namespace(leak(&vector.namespace))
        .version(vector.version);
    action.key(&vector.arguments).expect("a key").to_string()
}

#[test]
fn published_vectors_are_what_idem_computes() {
    for vector in vectors() {
        assert_eq!(
            idem_key(&vector),
            vector.key,
            "{} {} v{} {}",
            vector.namespace,
            vector.action,
            vector.version,
            vector.arguments
        );
    }
}

/// The definition, written again in Python from the docs of `Key`.
const SCRIPT: &str = r#"
import hashlib, json, sys
try:
    import rfc8785
except ImportError:
    print("no rfc8785")
    sys.exit(0)
with open(sys.argv[1], encoding="utf-8") as f:
    rows = json.load(f)
print("rfc8785")
for namespace, action, version, arguments in rows:
    header = b'["idem",1,' + rfc8785.dumps(namespace) + b"," + rfc8785.dumps(action) + b"," + str(version).encode() + b","
    header += b" " * (-len(header) % 64)
    text = header + rfc8785.dumps(arguments) + b"]"
    # The text is JSON whose value is the call; whitespace aside, it is canonical.
    assert json.loads(text) == ["idem", 1, namespace, action, version, arguments]
    print(hashlib.sha256(text).hexdigest())
"#;

#[test]
fn published_vectors_match_python() {
    let vectors = vectors();
    let rows: Vec<(&str, &str, u32, &Value)> = vectors
        .iter()
        .map(|v| {
            (
                v.namespace.as_str(),
                v.action.as_str(),
                v.version,
                &v.arguments,
            )
        })
        .collect();
    let Some((python, stdout)) = run_python(SCRIPT, &rows) else {
        return;
    };
    let mut lines = stdout.lines();
    if lines.next() != Some("rfc8785") {
        required_under_ci(&format!("{python} cannot import rfc8785"));
        eprintln!("skipping the key vectors' Python cross-check: pip install rfc8785");
        return;
    }
    let theirs: Vec<&str> = lines.collect();
    assert_eq!(theirs.len(), vectors.len());
    for (vector, key) in vectors.iter().zip(theirs) {
        assert_eq!(
            vector.key, key,
            "{} {}: the table says left, Python right",
            vector.action, vector.arguments
        );
    }
}
