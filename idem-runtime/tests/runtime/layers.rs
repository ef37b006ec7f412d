//! The runtime's layers import one way (ARCHITECTURE.md): `key`, `error` → `store` → `call`
//! → `saga` → `private`, with `conformance` (tests) above them all. A file's code outside its
//! tests names only modules of its own layer or below; this test reads the sources and says
//! which file reaches up, so that no circle creeps back in.

use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("key", 0),
    ("error", 0),
    ("store", 1),
    ("call", 2),
    ("saga", 3),
    ("private", 4),
    ("http", 3),
    ("rmcp", 3),
    ("conformance", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

fn sources(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).expect("read src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The file's code without its test modules and comments (doc links may point anywhere).
fn code(text: &str) -> String {
    let until_tests = text
        .find("#[cfg(test)]")
        .into_iter()
        .chain(text.find("#[cfg(all(test"))
        .min()
        .unwrap_or(text.len());
    text[..until_tests]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_runtime_imports_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs"))
            .unwrap_or_default();
        let (Some(mine), false) = (layer(top), relative.ends_with("tests.rs")) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source");
        let code = code(&text);
        for (at, _) in code.match_indices("crate::") {
            let named: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if let Some(theirs) = layer(&named) {
                if theirs > mine {
                    upward.push(format!("{} names crate::{named}", relative.display()));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "code that reaches up a layer (see ARCHITECTURE.md):\n{}",
        upward.join("\n")
    );
}
