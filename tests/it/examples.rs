//! The examples run and tell the story they promise. They are built by `cargo test`
//! (examples are part of the test build) and run here as a user would run them.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built example `name`, next to this test binary.
pub(crate) fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("the test binary");
    let profile = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

/// Runs the example `name` with `args` and returns what it printed, failing the test if it
/// runs longer than `limit` (a hang is a failure, not a CI that never ends).
pub(crate) fn run_example(name: &str, args: &[&str], limit: Duration) -> Output {
    let mut command = Command::new(example(name));
    command.args(args);
    run_limited(command, &format!("{name} {args:?}"), limit)
}

/// Runs `command` (described as `what`) and returns what it printed, failing the test if it
/// runs longer than `limit`. After a kill only stdout is read: processes the command started
/// may still hold its stderr.
pub(crate) fn run_limited(mut command: Command, what: &str, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = stdout.join().unwrap_or_default();
            panic!(
                "{what} ran longer than {limit:?}:\n{}",
                String::from_utf8_lossy(&stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Far more than any example takes (seconds): only a hang reaches it.
pub(crate) const LIMIT: Duration = Duration::from_secs(120);

/// Runs the example `name` with `args` (see [`run_example`]), checks that it succeeded, and
/// returns what it printed on stdout.
pub(crate) fn stdout_of(name: &str, args: &[&str]) -> String {
    let output = run_example(name, args, LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn email_agent_sends_one_email_for_three_attempts() {
    let stdout = stdout_of("email_agent", &[]);
    assert!(
        stdout.contains("summary: without idem 3 emails, with idem 1 email"),
        "unexpected summary:\n{stdout}"
    );
    assert!(
        stdout.contains("sends nothing"),
        "the restarted agent's call must be a replay:\n{stdout}"
    );
}

#[test]
fn contract_saga_completes_rolls_back_and_recovers_a_killed_agent() {
    let stdout = stdout_of("contract_saga", &[]);
    assert!(
        stdout.contains(
            "summary: order-1 completed, order-2 compensated (contract deleted: true), \
             order-3 compensated after SIGKILL (1 charge, 1 refund); charges 2, refunds 1"
        ),
        "unexpected summary:\n{stdout}"
    );
    assert!(stdout.contains("✝ agent killed"), "{stdout}");
}
