//! Which tests cannot run here, decided when the tests are built, so that `cargo test` lists
//! them as ignored, with the reason, instead of passing them without running anything.
//!
//! The tests that need a Redis, Valkey or PostgreSQL server carry
//! `#[cfg_attr(idem_no_redis, ignore = "…")]` (or `idem_no_valkey`, `idem_no_postgres`). This
//! script sets `idem_no_redis` when `redis-server` or `redis-cli` is not on `PATH`,
//! `idem_no_valkey` when `valkey-server` or `redis-cli` is not, and `idem_no_postgres` when
//! PostgreSQL's `initdb` and `pg_ctl` are neither on `PATH` nor in
//! `/usr/lib/postgresql/<version>/bin`. `IDEM_TEST_SERVERS` chooses instead: `none`, or the
//! servers the tests may use (`redis`, `valkey`, `postgres`, `redis,postgres`, …). Under `CI=true` it sets nothing: the tests run, and fail
//! when their server is missing (`conformance::servers`), so that CI never passes by running
//! nothing.
//!
//! It decides only in the idem repository: built as a dependency, it sets nothing and reads
//! nothing. The same file is `build.rs` of the packages `idem`, `idem-runtime` and `idem-cli`
//! (a test checks that they stay the same).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(idem_no_redis, idem_no_valkey, idem_no_postgres)");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let in_the_repository = [Some(manifest.as_path()), manifest.parent()]
        .into_iter()
        .flatten()
        .any(|folder| folder.join("idem-runtime/src/conformance/servers").is_dir());
    if !in_the_repository {
        return;
    }
    for variable in ["IDEM_TEST_SERVERS", "CI", "PATH"] {
        println!("cargo::rerun-if-env-changed={variable}");
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        return;
    }
    let chosen = std::env::var("IDEM_TEST_SERVERS").ok();
    let allowed = |server: &str| match chosen.as_deref().map(str::trim) {
        None | Some("") => true,
        Some("none") => false,
        Some(list) => list.split(',').any(|word| {
            let word = word.trim();
            assert!(
                ["redis", "valkey", "postgres"].contains(&word),
                "IDEM_TEST_SERVERS={list}: expected `none` or a list of redis, valkey, postgres"
            );
            word == server
        }),
    };
    let postgres_folders = postgres_folders();
    let cli = found("redis-cli", &[]);
    let redis = allowed("redis") && found("redis-server", &[]) && cli;
    let valkey = allowed("valkey") && found("valkey-server", &[]) && cli;
    let postgres = allowed("postgres")
        && found("initdb", &postgres_folders)
        && found("pg_ctl", &postgres_folders);
    if !redis {
        println!("cargo::rustc-cfg=idem_no_redis");
    }
    if !valkey {
        println!("cargo::rustc-cfg=idem_no_valkey");
    }
    if !postgres {
        println!("cargo::rustc-cfg=idem_no_postgres");
    }
}

/// Debian's `/usr/lib/postgresql/<version>/bin` folders (not on `PATH`).
fn postgres_folders() -> Vec<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect()
}

/// Whether `name` is on `PATH` or in `extra`; a binary found is watched, so that removing it
/// decides again.
fn found(name: &str, extra: &[PathBuf]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let binary = std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|folder| folder.join(name))
        .find(|candidate| candidate.is_file());
    if let Some(binary) = &binary {
        watch(binary);
    }
    binary.is_some()
}

fn watch(file: &Path) {
    println!("cargo::rerun-if-changed={}", file.display());
}
