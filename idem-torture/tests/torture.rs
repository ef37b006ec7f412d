//! CI's short seeded runs of the torture harness, one per store, and the proof that the
//! checker catches a broken protocol. Each runs the built binary as a user would.
//!
//! The seed is fixed, so a failure here is replayed by the command it prints. (The
//! interleavings still differ from run to run: the seed fixes the faults and the choices,
//! not the operating system's scheduling.)

use std::process::Command;

/// Runs `idem-torture` with `args`; returns whether it passed and what it printed.
fn torture(store: &str, seconds: u64, extra: &[&str]) -> (bool, String) {
    let folder = std::env::temp_dir().join(format!(
        "idem-torture-test-{}-{store}{}",
        std::process::id(),
        extra.join("")
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_idem-torture"))
        .args(["--store", store, "--seconds", &seconds.to_string()])
        .args(["--seed", "20261206", "--agents", "4", "--quiet"])
        .arg("--folder")
        .arg(&folder)
        .args(extra)
        .output()
        .expect("run idem-torture");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&folder);
    (output.status.success(), printed)
}

/// A run passes only if every invariant held and the run did something: calls that ran
/// bodies, faults of several kinds (`store_faults`: the store's own), sagas that ended.
fn assert_clean(store: &str, seconds: u64, store_faults: &[&str]) {
    let (passed, printed) = torture(store, seconds, &[]);
    println!("{printed}");
    assert!(
        passed,
        "idem-torture --store {store} found violations:\n{printed}"
    );
    assert!(
        printed.contains(&format!("no violations on {store}")),
        "{printed}"
    );
    let always = [
        "ok, executed",
        "fault: kill_agent",
        "fault: pause_agent",
        "sagas ended: completed",
        "sagas ended: compensated",
    ];
    for happened in always.iter().chain(store_faults) {
        assert!(
            printed.contains(happened),
            "the run never had `{happened}`:\n{printed}"
        );
    }
}

#[test]
fn sqlite_under_faults_keeps_every_invariant() {
    assert_clean("sqlite", 40, &["fault: hold_write_lock"]);
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn redis_under_faults_keeps_every_invariant() {
    assert_clean(
        "redis",
        40,
        &[
            "fault: restart_store",
            "fault: cut_connections",
            "fault: clock_skew",
        ],
    );
}

/// Without persistence a restart loses records, as the docs say: what that explains is
/// reported apart, and nothing else may break.
#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn redis_without_persistence_breaks_only_what_its_docs_allow() {
    assert_clean(
        "redis-volatile",
        40,
        &["ledger: the store lost its records"],
    );
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn postgres_under_faults_keeps_every_invariant() {
    assert_clean(
        "postgres",
        40,
        &[
            "fault: restart_store",
            "fault: terminate_backends",
            "fault: clock_skew",
        ],
    );
}

/// A store whose `complete` skips the fencing check: the checker must say so, with a
/// counterexample and the command that replays it, and the harness must exit non-zero.
#[test]
fn a_store_that_skips_the_fencing_check_is_caught() {
    let (passed, printed) = torture("sqlite", 25, &["--sabotage", "skip-fencing"]);
    println!("{printed}");
    assert!(!passed, "the sabotaged run passed:\n{printed}");
    let caught = ["one_result_per_key", "acknowledged_results_kept"]
        .iter()
        .any(|invariant| {
            printed
                .lines()
                .any(|line| line.trim_start().starts_with(invariant) && line.contains("VIOLATED"))
        });
    assert!(
        caught,
        "no fencing invariant was reported broken:\n{printed}"
    );
    assert!(printed.contains("first: "), "no counterexample:\n{printed}");
    assert!(
        printed.contains("Replay with: cargo run --release -p idem-torture -- --store sqlite --seconds 25 --seed 20261206"),
        "{printed}"
    );
}
