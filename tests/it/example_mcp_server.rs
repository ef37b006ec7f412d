//! The MCP tool server example, driven by a client nobody here wrote: the official MCP
//! Python SDK (`mcp` from PyPI), through `tests/mcp/client.py`. Two sessions, two server
//! processes on one SQLite file, each tool (one method, `#[idempotent]` and `#[tool]`
//! stacked) called again and again with the same arguments, each call a new JSON-RPC
//! request: every answer must be the first one (a declined card, `isError`, included), idem's
//! refusal must arrive as an MCP error naming the key, and the services must have acted once
//! per call. The refund tool asks the user first (an MCP elicitation, a request from the
//! server to the client, inside the call): a "no" is an error that records nothing, the
//! "yes" that follows refunds once, and the retries after it replay without asking again.
//!
//! The interpreter is `$IDEM_PYTHON`, else `python3`. Without it or without the `mcp`
//! package the test says why and skips; under `CI=true` it fails instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client.py");

#[path = "../mcp/support.rs"]
mod support;

use support::TempDir;

/// The ledger's lines of one kind (`email`, `charge`, `ticket`): one per real effect.
fn effects<'a>(ledger: &'a str, kind: &str) -> Vec<&'a str> {
    ledger
        .lines()
        .filter(|line| line.split_whitespace().next() == Some(kind))
        .collect()
}

fn run_client(python: &str, server: &Path, db: &Path, ledger: &Path) -> Value {
    let mut client = Command::new(python);
    client
        .arg(CLIENT)
        .arg(server)
        .arg("--db")
        .arg(db)
        .arg("--ledger")
        .arg(ledger);
    let output = crate::examples::run_limited(client, "the MCP client", crate::examples::LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the MCP client failed ({}):\n{stdout}\nstderr (client and servers):\n{stderr}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("the client printed no JSON ({error}):\n{stdout}"))
}

#[test]
fn mcp_server_answers_repeated_calls_from_two_sessions_with_one_effect_each() {
    let server = crate::examples::example("mcp_server");
    let Some(python) = support::python_with_mcp("the MCP client test") else {
        return;
    };
    let dir = TempDir::new();
    let (db, ledger) = (dir.join("idem.db"), dir.join("ledger.log"));

    let report = run_client(&python, &server, &db, &ledger);
    let sdk = report["sdk"].as_str().unwrap_or("the MCP SDK");

    // The tools are listed, each telling the client it is safe to retry.
    let tools = report["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "charge_card",
            "create_ticket",
            "refund_charge",
            "send_email"
        ]
    );
    for tool in tools {
        assert_eq!(tool["idempotentHint"], true, "{tool}");
    }

    // Every call with the same tool and arguments got the same answer, in both sessions.
    let calls = report["calls"].as_array().expect("calls");
    let mut answers: BTreeMap<(String, String), Vec<(&Value, &Value)>> = BTreeMap::new();
    let mut declined = Vec::new();
    let mut refused = Vec::new();
    let mut not_approved = Vec::new();
    for call in calls {
        if call.get("error").is_some() && call["tool"] == "refund_charge" {
            not_approved.push(call);
        } else if call.get("error").is_some() {
            refused.push(call);
        } else if call["is_error"] == true {
            declined.push(call);
        } else {
            let tool = call["tool"].as_str().expect("a tool name").to_owned();
            answers
                .entry((tool, call["arguments"].to_string()))
                .or_default()
                .push((&call["session"], &call["answer"]));
        }
    }
    assert_eq!(answers.len(), 4, "one distinct call per tool: {calls:#?}");
    for ((tool, arguments), seen) in &answers {
        let sessions: Vec<&Value> = seen.iter().map(|(session, _)| *session).collect();
        assert!(
            seen.len() >= 2
                && sessions.contains(&&Value::from(1))
                && sessions.contains(&&Value::from(2)),
            "{tool} {arguments} must be called at least twice, from both sessions: {sessions:?}"
        );
        let (_, first) = seen[0];
        assert!(
            first.is_object(),
            "{tool} answered no structured result: {first}"
        );
        for (session, answer) in seen {
            assert_eq!(
                answer, &first,
                "{tool} {arguments}: session {session} got another answer than the first call \
                 ({sdk})"
            );
        }
    }

    // A result with `isError` (the card declined) is an answer: recorded and replayed like
    // any result, to the retry and to the other session; the card was tried once.
    assert_eq!(
        declined.len(),
        3,
        "three calls of the declined charge: {declined:#?}"
    );
    for call in &declined {
        assert_eq!(call["tool"], "charge_card");
        assert_eq!(
            call["text"], declined[0]["text"],
            "the first decline, replayed ({sdk})"
        );
    }
    assert!(
        declined[0]["text"]
            .to_string()
            .contains("card declined (dc_"),
        "the decline says so: {}",
        declined[0]
    );
    assert_eq!(declined[2]["session"], 2);

    // The same order with another amount is refused with an MCP error (invalid params) that
    // names the key: not charged and not replayed.
    assert_eq!(refused.len(), 1, "exactly one refused call: {refused:#?}");
    let refusal = refused[0];
    assert_eq!(refusal["tool"], "charge_card");
    assert_eq!(refusal["session"], 2);
    let error = &refusal["error"];
    assert_eq!(error["code"], -32602, "invalid params: {refusal}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("first called with different arguments")),
        "the refusal says why: {refusal}"
    );
    assert_eq!(error["data"]["idem"], "payload_mismatch", "{refusal}");
    assert_eq!(error["data"]["retry"], false, "{refusal}");
    let key = error["data"]["key"]
        .as_str()
        .expect("the key in the error's data");
    assert_eq!(key.len(), 64, "{refusal}");

    let answer = |tool: &str| {
        answers
            .iter()
            .find(|((t, _), _)| t == tool)
            .map(|(_, seen)| seen[0].1)
            .expect("an answer")
    };

    // The refund asked the user inside the call. The first question was declined: an error,
    // nothing recorded (the key released), so the next call asked again; the user approved
    // and the charge was refunded. The retry after it and the other session's call got that
    // refund (checked with the answers above) and asked nobody: two questions in all, both
    // before the one refund.
    let questions = report["questions"].as_array().expect("questions");
    assert_eq!(
        questions.len(),
        2,
        "the user is asked until they approve, then never again: {questions:#?}"
    );
    let charge_id = answer("charge_card")["charge_id"]
        .as_str()
        .expect("a charge id");
    for question in questions {
        assert_eq!(question["session"], 1, "{question}");
        assert!(
            question["message"]
                .as_str()
                .is_some_and(|m| m.contains(charge_id)),
            "the question names the charge: {question}"
        );
    }
    assert_eq!(not_approved.len(), 1, "{not_approved:#?}");
    let declined_refund = not_approved[0];
    assert_eq!(declined_refund["session"], 1);
    assert_eq!(
        declined_refund["error"]["code"], -32600,
        "{declined_refund}"
    );
    assert!(
        declined_refund["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not approve")),
        "{declined_refund}"
    );
    let refund_calls: Vec<&Value> = calls
        .iter()
        .filter(|call| call["tool"] == "refund_charge")
        .collect();
    assert_eq!(refund_calls.len(), 4, "{refund_calls:#?}");
    assert!(
        refund_calls[0].get("error").is_some(),
        "the declined question came first: {refund_calls:#?}"
    );

    // The services acted once per distinct call, and the answers name those effects.
    let ledger = std::fs::read_to_string(&ledger).expect("the services' ledger");
    for (kind, tool, id) in [
        ("email", "send_email", "message_id"),
        ("charge", "charge_card", "charge_id"),
        ("ticket", "create_ticket", "ticket_id"),
        ("refund", "refund_charge", "refund_id"),
    ] {
        let lines = effects(&ledger, kind);
        if kind == "charge" {
            // The charge was made under the key the refusal names (sent downstream).
            assert!(lines.iter().all(|line| line.contains(key)), "{ledger}");
        }
        assert_eq!(
            lines.len(),
            1,
            "one {kind} for every {tool} call:\n{ledger}"
        );
        let id = answer(tool)[id].as_str().expect("an id in the answer");
        assert!(
            lines[0].contains(id),
            "the answer of {tool} names the effect ({id}):\n{ledger}"
        );
    }
    let declines = effects(&ledger, "decline");
    assert_eq!(declines.len(), 1, "the card was tried once:\n{ledger}");
    let decline_id = declines[0].split_whitespace().nth(1).expect("a decline id");
    assert!(
        declined[0]["text"].to_string().contains(decline_id),
        "the decline replayed is the provider's one:\n{ledger}"
    );
    assert!(
        effects(&ledger, "refund")[0].contains(charge_id),
        "the refund is of the charge:\n{ledger}"
    );
    assert_eq!(
        ledger.lines().count(),
        5,
        "nothing else happened:\n{ledger}"
    );
}
