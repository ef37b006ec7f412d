//! The examples run and tell the story they promise. They are built by `cargo test`
//! (examples are part of the test build) and run here as a user would run them.

use std::path::PathBuf;
use std::process::Command;

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

#[test]
fn email_agent_sends_one_email_for_three_attempts() {
    let output = Command::new(example("email_agent"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    let output = Command::new(example("contract_saga"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "summary: order-1 completed, order-2 compensated (contract deleted: true), \
             order-3 compensated after SIGKILL (1 charge, 1 refund); charges 2, refunds 1"
        ),
        "unexpected summary:\n{stdout}"
    );
    assert!(stdout.contains("✝ agent killed"), "{stdout}");
}
