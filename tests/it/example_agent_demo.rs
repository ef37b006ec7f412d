//! The fleet demo (the README's first command) keeps side effects to one per intended action
//! with idem, on the default SQLite store and on memory, and shows the duplicates without it.

use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

use crate::examples::{run_example, stdout_of, LIMIT};

fn run_demo(args: &[&str]) -> String {
    stdout_of("agent_demo", args)
}

fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|line| line.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"))
}

/// What the world did to the run, the same on every run: its trouble is planned per task.
/// (How many attempts time out depends on the machine's pace, so no count of them is held.)
fn assert_the_trouble_happened(stdout: &str) {
    for row in [
        "tasks delivered twice                  3",
        "agents killed and restarted            2",
    ] {
        assert!(stdout.contains(row), "missing `{row}`:\n{stdout}");
    }
    assert!(stdout.contains("card of grace declined"), "{stdout}");
}

/// The number after `what ` in the summary.
fn figure(summary: &str, what: &str) -> usize {
    let (_, rest) = summary
        .split_once(&format!("{what} "))
        .unwrap_or_else(|| panic!("no {what} in {summary}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {what} in {summary}"))
}

#[test]
fn with_idem_every_side_effect_happens_once_on_the_default_sqlite_store() {
    let stdout = run_demo(&[]);
    assert!(stdout.contains("on the sqlite store"), "{stdout}");
    let summary = summary(&stdout);
    assert!(
        summary.starts_with(
            "summary: with idem, side effects == unique intended actions: yes \
             (emails 15/15, charges 15/15, contracts 7/7); duplicates prevented "
        ),
        "\n{stdout}"
    );
    // Each task delivered twice is answered once from the record, at least; the declined
    // deal is the one saga undone.
    assert!(figure(summary, "duplicates prevented") >= 3, "{summary}");
    assert_eq!(figure(summary, "sagas compensated"), 1, "{summary}");
    assert_the_trouble_happened(&stdout);
    assert!(
        stdout.contains("its call is taken over"),
        "the killed payment is taken over under its key:\n{stdout}"
    );
}

#[test]
fn with_idem_on_a_store_named_by_url() {
    let stdout = run_demo(&["--store", "memory:"]);
    assert!(stdout.contains("on the memory store"), "{stdout}");
    assert!(
        summary(&stdout).starts_with(
            "summary: with idem, side effects == unique intended actions: yes \
             (emails 15/15, charges 15/15, contracts 7/7)"
        ),
        "\n{stdout}"
    );
}

/// The same on the servers a fleet would share (skipped, with a reason, where they are not
/// installed; under `CI=true` they must be).
fn assert_on_store(url: &str, name: &str) {
    let stdout = run_demo(&["--store", url]);
    assert!(stdout.contains(&format!("on the {name} store")), "{stdout}");
    assert!(
        summary(&stdout).starts_with(
            "summary: with idem, side effects == unique intended actions: yes \
             (emails 15/15, charges 15/15, contracts 7/7)"
        ),
        "\n{stdout}"
    );
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn with_idem_on_redis() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    assert_on_store(&format!("{}4", server.url()), "redis");
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn with_idem_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    assert_on_store(&format!("{}?schema=agent_demo", server.url()), "postgres");
}

#[test]
fn without_idem_the_same_world_makes_duplicates_and_leaves_a_contract() {
    let stdout = run_demo(&["--unprotected"]);
    let summary = summary(&stdout);
    assert!(
        summary.starts_with("summary: without idem, side effects == unique intended actions: no"),
        "\n{stdout}"
    );
    // The double deliveries alone send a second email and make a second charge; the declined
    // deal leaves its contract behind.
    assert!(figure(summary, "emails") > 15, "{summary}");
    assert!(figure(summary, "charges") > 15, "{summary}");
    assert!(figure(summary, "contracts") > 7, "{summary}");
    assert!(
        summary.ends_with("duplicates prevented 0, sagas compensated 0"),
        "{summary}"
    );
    assert!(stdout.contains("the contract stays behind"), "{stdout}");
    assert_the_trouble_happened(&stdout);
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let output = run_example("agent_demo", &["--no-such-flag"], LIMIT);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown argument `--no-such-flag`"),
        "{stderr}"
    );
    assert!(stderr.contains("usage: agent_demo"), "{stderr}");
}
