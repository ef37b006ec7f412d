//! `examples/rig_agent/`: an agent whose tools are rig tools (rig-core 0.44), `#[idempotent]`
//! on their `call`. A package of its own, outside the workspace, so that rig's
//! `serde_json/preserve_order` stays out of this suite's build (see its `Cargo.toml`): this
//! test builds it with the same cargo and target directory, runs its tests (the tools called
//! twice, directly and through rig's dispatch; keys under `preserve_order`), then runs its
//! program and reads the story it tells.
//!
//! It costs a build of rig-core (about a minute cold), so it runs under `CI=true` or with
//! `IDEM_RIG=1`; otherwise it says so and skips.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::examples::run_limited;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rig_agent/Cargo.toml");
/// A cold build of rig-core and of idem with `preserve_order`, on two cores, with room.
const LIMIT: Duration = Duration::from_secs(900);

fn wanted() -> bool {
    let set = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
    set("CI", "true") || set("IDEM_RIG", "1")
}

/// The target directory this test binary was built in (`<target>/<profile>/deps/it-…`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<binary>")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut command = Command::new(&cargo);
    command
        .args(args)
        .args(["--locked", "--manifest-path", MANIFEST, "--target-dir"])
        .arg(target_dir());
    let what = format!("cargo {} --manifest-path {MANIFEST}", args.join(" "));
    let output = run_limited(command, &what, LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn rig_tools_replay_a_retried_call_and_the_agent_sends_once() {
    if !wanted() {
        eprintln!("skipped: examples/rig_agent builds rig-core; set IDEM_RIG=1 (CI=true runs it)");
        return;
    }

    // The package's own tests: each must have run and passed.
    let tests = cargo(&["test"]);
    for name in [
        "preserve_order_is_on_in_this_build",
        "a_map_in_two_orders_has_one_canonical_form",
        "a_portable_tool_retried_runs_once_and_replays",
        "a_contextual_tool_retried_runs_once_its_context_outside_the_key",
        "rigs_json_dispatch_of_a_retried_call_replays",
    ] {
        assert!(
            tests.contains(&format!("test {name} ... ok")),
            "{name} did not run and pass:\n{tests}"
        );
    }

    // The program.
    let stdout = cargo(&["run", "--quiet"]);
    assert!(
        stdout.contains(
            "summary: 1 ticket and 1 email for two calls each, \
             retries answered with the first answers: true"
        ),
        "unexpected summary:\n{stdout}"
    );
    // The retry's map is written in the model's other order (rig's preserve_order), and
    // still has the first call's key.
    assert!(
        stdout.contains(
            r#"open_ticket retry: args {"fields":{"channel":"email","order":7,"priority":"high"}"#
        ),
        "the retry's arguments must keep the model's order:\n{stdout}"
    );
    let keys: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("open_ticket"))
        .filter_map(|line| line.split(r#""key":""#).nth(1))
        .filter_map(|rest| rest.get(..64))
        .collect();
    assert_eq!(keys.len(), 2, "{stdout}");
    assert_eq!(keys[0], keys[1], "{stdout}");
}
