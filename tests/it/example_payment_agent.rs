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
    // Agent B gives up on its first attempt in both runs (the provider answers after its
    // timeout), so its retry is a new charge without idem and a replay with it.
    assert_eq!(
        stdout
            .matches("[agent B] attempt 1, charge $49.99 for order 7: no answer after 200 ms")
            .count(),
        2,
        "agent B's first attempt must time out in both runs:\n{stdout}"
    );
    assert!(
        stdout.contains("was first called with different arguments"),
        "the changed amount must be refused with idem's payload-mismatch error:\n{stdout}"
    );
}

#[test]
fn payment_agent_settles_a_crash_an_ambiguous_answer_and_a_409_with_one_charge_each() {
    let stdout = stdout_of("payment_agent", &[]);
    // One charge per scene; the dispositions of the agent's calls, first call then retry.
    assert!(
        stdout.contains(
            "summary in doubt: crash after the charge 1 charge (verified), \
             ambiguous answer 1 charge (in_doubt, verified), \
             409 on re-run without verify 1 charge (in_doubt, in_doubt), \
             with verify 1 charge (in_doubt, verified)"
        ),
        "unexpected summary:\n{stdout}"
    );
    // The 409 of the re-run is not taken for "not charged": the key stays in doubt.
    assert!(
        stdout.contains(
            "retry: failed: 409 Conflict: this Idempotency-Key was already used (in_doubt: "
        ),
        "the 409 must leave the call in doubt:\n{stdout}"
    );
    // Every scene's charge is held by the agent, except the one left in doubt.
    assert_eq!(
        stdout.matches("(the agent was not told)").count(),
        1,
        "one charge in doubt, none forgotten elsewhere:\n{stdout}"
    );
}
