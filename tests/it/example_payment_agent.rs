//! `examples/payment_agent.rs`: two agents, a retry and a changed amount, one charge.

use crate::examples::stdout_of;

#[test]
fn payment_agent_charges_once_for_two_agents_a_retry_and_a_changed_amount() {
    let stdout = stdout_of("payment_agent", &[]);
    // The charge id is random: the summary is checked on either side of it.
    assert!(
        stdout.contains("summary: without idem 4 charges, with idem 1 charge (ch_"),
        "unexpected summary:\n{stdout}"
    );
    assert!(
        stdout.contains("), same charge id for both agents: true, changed amount refused: true"),
        "unexpected summary:\n{stdout}"
    );
    assert!(
        stdout.contains("was first called with different arguments"),
        "the changed amount must be refused with idem's payload-mismatch error:\n{stdout}"
    );
}
