//! `idem mcp-proxy` as users run it: the official MCP Python SDK's client
//! (`tests/mcp/proxy_client.py`) starts `idem mcp-proxy -- python tests/mcp/tool_server.py`
//! (a server written with the SDK's own server class, counting each real execution as a line
//! in a ledger file), or the Rust example server, and makes its calls as an agent does: each
//! retry a new JSON-RPC request, several sessions, several copies at once, a proxy killed
//! mid-call, a server that dies mid-call, streamable HTTP.
//!
//! Without a Python that has the `mcp` package the tests say why and skip; under `CI=true`
//! they fail instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../../../tests/mcp/support.rs"]
mod support;

use support::{python_with_mcp, TempDir};

const MCP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/mcp");

/// Far more than any scenario takes: only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(120);

/// One scenario's world: its Python, its directory, its store and its ledger.
struct World {
    python: String,
    dir: TempDir,
    store: String,
    ledger: PathBuf,
}

impl World {
    fn new(test: &str) -> Option<World> {
        let python = python_with_mcp(test)?;
        let dir = TempDir::new();
        let store = format!("sqlite://{}", dir.join("idem.db").display());
        let ledger = dir.join("ledger.log");
        Some(World {
            python,
            dir,
            store,
            ledger,
        })
    }

    /// A configuration file for the proxy.
    fn config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, toml).expect("write the proxy's configuration");
        path
    }

    /// `idem --store … mcp-proxy [proxy_args] -- python tool_server.py --ledger …`
    fn proxy(&self, proxy_args: &[&str]) -> Vec<String> {
        let mut argv = self.proxy_to(proxy_args);
        argv.push("--".to_owned());
        argv.extend(self.tool_server());
        argv
    }

    /// `idem --store … mcp-proxy [proxy_args]`: the server is in `proxy_args` (`--upstream`).
    fn proxy_to(&self, proxy_args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            env!("CARGO_BIN_EXE_idem").to_owned(),
            "--store".to_owned(),
            self.store.clone(),
            "mcp-proxy".to_owned(),
        ];
        argv.extend(proxy_args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// `python tool_server.py --ledger …`
    fn tool_server(&self) -> Vec<String> {
        vec![
            self.python.clone(),
            format!("{MCP}/tool_server.py"),
            "--ledger".to_owned(),
            self.ledger.display().to_string(),
        ]
    }

    /// The client, started (it runs until its calls are answered or fail).
    fn start_client(&self, flags: &[&str], calls: &Value, server: &[String]) -> Child {
        let mut command = Command::new(&self.python);
        command
            .arg(format!("{MCP}/proxy_client.py"))
            .args(flags)
            .arg("--calls")
            .arg(calls.to_string());
        if !server.is_empty() {
            command.arg("--").args(server);
        }
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the MCP client")
    }

    /// The client's report, once it has ended.
    fn report(&self, client: Child) -> Value {
        let output = wait_limited(client);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the MCP client failed ({}):\n{stdout}\nstderr (client, proxy, server):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!(
                "the client printed no JSON ({error}):\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// Runs the client through a proxy started with `proxy_args`, and returns its report.
    fn session(&self, proxy_args: &[&str], flags: &[&str], calls: &Value) -> Value {
        self.report(self.start_client(flags, calls, &self.proxy(proxy_args)))
    }

    /// Runs the client through the proxy `argv`, and returns its report.
    fn session_to(&self, argv: &[String], calls: &Value) -> Value {
        self.report(self.start_client(&[], calls, argv))
    }

    /// The ledger's lines of one kind (`email`, `charge`, …): one per real execution.
    fn executions(&self, kind: &str) -> Vec<String> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(kind))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for the first execution of `kind` (the server is inside the tool), and returns
    /// its line.
    fn until_executed(&self, kind: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(line) = self.executions(kind).into_iter().next() {
                return line;
            }
            assert!(Instant::now() < deadline, "no `{kind}` in the ledger");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `idem --store … ARGS`, its stdout.
    fn idem(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_idem"))
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .output()
            .expect("run idem");
        assert!(output.status.success(), "idem {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    }
}

/// A child's output, failing the test if it runs past [`LIMIT`].
fn wait_limited(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().expect("wait for the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a process ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the child's output")
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({ "tool": tool, "arguments": arguments })
}

fn email(subject: &str) -> Value {
    call(
        "send_email",
        json!({ "to": "ada@example.com", "subject": subject, "body": "Your quote is attached." }),
    )
}

fn calls(report: &Value) -> &Vec<Value> {
    report["calls"].as_array().expect("calls")
}

/// The `n`th call's answer (structured content), asserting it got one without an error.
fn answer(report: &Value, n: usize) -> &Value {
    let call = &calls(report)[n];
    assert!(
        call.get("answer").is_some_and(Value::is_object) && call["is_error"] == false,
        "call {n} got no result: {call:#}"
    );
    &call["answer"]
}

/// The `n`th call's MCP error, asserting it got one.
fn error(report: &Value, n: usize) -> &Value {
    let call = &calls(report)[n];
    call.get("error")
        .unwrap_or_else(|| panic!("call {n} got no MCP error: {call:#}"))
}

#[test]
fn retries_sessions_and_copies_run_each_tool_call_once() {
    let Some(world) = World::new("the mcp-proxy test") else {
        return;
    };
    let quote = email("Quote Q-7");
    let charge = call(
        "charge_card",
        json!({ "order_id": "o-42", "amount_cents": 12_900 }),
    );
    let declined = call(
        "charge_card",
        json!({ "order_id": "o-43", "amount_cents": 900_000 }),
    );
    let lookup = call("lookup_order", json!({ "order_id": "o-42" }));
    let refund = call("refund_charge", json!({ "charge_id": "ch_1" }));
    let first = world.session(
        &[],
        &["--list-tools", "--browse", "--decline-first"],
        &json!([
            quote, quote, charge, charge, declined, declined, lookup, lookup, refund, refund,
            refund
        ]),
    );

    // The tools are listed as the server lists them; resources and prompts pass through.
    let tools: Vec<&Value> = first["tools"].as_array().expect("tools").iter().collect();
    assert_eq!(tools.len(), 6, "{tools:?}");
    assert_eq!(
        first["resources"],
        json!(["ledger://executions"]),
        "{first:#}"
    );
    assert_eq!(first["prompts"], json!(["apology"]), "{first:#}");
    assert_eq!(
        first["prompt_text"],
        json!(["Write Ada a short apology for the duplicate email."])
    );

    // The retry of the email and of the charge got the first answer; the tool ran once.
    assert_eq!(answer(&first, 0), answer(&first, 1));
    assert_eq!(answer(&first, 0)["message_id"], "msg-1");
    assert_eq!(answer(&first, 2), answer(&first, 3));
    assert_eq!(world.executions("email").len(), 1);
    assert_eq!(world.executions("charge").len(), 1);

    // A result with isError (a declined card) is passed on and not recorded: the retry ran
    // the tool again (record_errors = false by default).
    for n in [4, 5] {
        assert_eq!(calls(&first)[n]["is_error"], true, "{first:#}");
    }
    assert_eq!(world.executions("decline").len(), 2);

    // A read-only tool (readOnlyHint) passes through: each call ran it.
    assert_eq!(answer(&first, 6)["lookups"], 1);
    assert_eq!(answer(&first, 7)["lookups"], 2);

    // The server asked the user inside the refund (an elicitation, passed to the agent and
    // back): the "no" is an error result, not recorded; the "yes" refunded once, and the
    // retry after it replayed without asking again.
    assert_eq!(calls(&first)[8]["is_error"], true, "{first:#}");
    assert_eq!(answer(&first, 9), answer(&first, 10));
    assert_eq!(
        first["questions"].as_array().map(Vec::len),
        Some(2),
        "{first:#}"
    );
    assert_eq!(world.executions("refund").len(), 1);

    // A restarted agent (a new proxy, a new server process, the same store) replays.
    let second = world.session(&[], &[], &json!([quote, charge, refund]));
    assert_eq!(answer(&second, 0), answer(&first, 0));
    assert_eq!(answer(&second, 1), answer(&first, 2));
    assert_eq!(answer(&second, 2), answer(&first, 9));
    assert_eq!(world.executions("email").len(), 1);
    assert_eq!(world.executions("charge").len(), 1);
    assert_eq!(world.executions("refund").len(), 1);

    // Two copies of the agent, each with its own proxy and server, file the same ticket at
    // once, and each copy sends it twice at once: the ticket is filed once, all four answers
    // are that ticket.
    let ticket = call("create_ticket", json!({ "title": "Invoice address" }));
    let copies: Vec<Child> = (0..2)
        .map(|_| {
            world.start_client(
                &["--concurrent"],
                &json!([ticket, ticket]),
                &world.proxy(&[]),
            )
        })
        .collect();
    let reports: Vec<Value> = copies.into_iter().map(|c| world.report(c)).collect();
    assert_eq!(world.executions("ticket").len(), 1, "{reports:#?}");
    let filed = answer(&reports[0], 0);
    for report in &reports {
        assert_eq!(answer(report, 0), filed);
        assert_eq!(answer(report, 1), filed);
    }

    // The records are idem's: the operator's command sees them under the tools' names.
    let listing: Value = serde_json::from_str(&world.idem(&["keys", "--json"])).expect("JSON");
    let actions: Vec<&str> = listing
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|record| record["action"].as_str())
        .collect();
    for tool in [
        "send_email",
        "charge_card",
        "refund_charge",
        "create_ticket",
    ] {
        assert!(actions.contains(&tool), "{tool} in {actions:?}");
    }
    assert!(!actions.contains(&"lookup_order"), "{actions:?}");
}

#[test]
fn a_proxy_killed_mid_call_never_makes_the_retry_run_the_tool_again() {
    let Some(world) = World::new("the mcp-proxy kill test") else {
        return;
    };
    let config = world.config(
        "proxy.toml",
        "[tools.send_email]\nlease = \"1s\"\non_stale = \"review\"\n",
    );
    let config = config.display().to_string();
    let proxy = ["--config", config.as_str()];
    let held = email("hold: the quarterly report");

    // The server has sent the email and holds its answer; the proxy is killed (SIGKILL).
    let agent = world.start_client(&[], &json!([held]), &world.proxy(&proxy));
    let line = world.until_executed("email");
    let proxy_pid = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("ppid="))
        .expect("the proxy's pid in the ledger");
    let killed = Command::new("kill")
        .args(["-KILL", proxy_pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let lost = world.report(agent);
    assert!(calls(&lost)[0].get("failure").is_some(), "{lost:#}");

    // The agent retries through a new proxy: the key is held until the dead proxy's lease
    // runs out, and then waits for an operator (on_stale = "review"): the email is not sent
    // again, even though the server would now answer at once.
    std::fs::write(format!("{}.release", world.ledger.display()), "").expect("release");
    let retry = world.session(&proxy, &[], &json!([held]));
    let refused = error(&retry, 0);
    assert_eq!(refused["data"]["idem"], "needs_review", "{retry:#}");
    assert_eq!(world.executions("email").len(), 1);

    // The operator who knows the email went out records its answer (a proxied tool's result
    // is the MCP `CallToolResult`); the next retry replays it.
    let key = refused["data"]["key"].as_str().expect("the key");
    let sent = json!({
        "content": [{ "type": "text", "text": "sent, confirmed by hand" }],
        "structuredContent": { "message_id": "msg-1", "to": "ada@example.com" },
    });
    world.idem(&["settle", key, "--yes", "--result", &sent.to_string()]);
    let settled = world.session(&proxy, &[], &json!([held]));
    assert_eq!(answer(&settled, 0)["message_id"], "msg-1");
    assert_eq!(world.executions("email").len(), 1);
}

#[test]
fn a_server_that_dies_mid_call_leaves_the_key_in_doubt() {
    let Some(world) = World::new("the mcp-proxy crash test") else {
        return;
    };
    let config = world.config("proxy.toml", "[tools.send_email]\non_stale = \"review\"\n");
    let config = config.display().to_string();
    let proxy = ["--config", config.as_str()];
    let crashing = email("crash: the renewal notice");

    // The server sends the email and dies before it answers: the agent gets an MCP error
    // that says the effect is unknown, with the key.
    let first = world.session(&proxy, &[], &json!([crashing]));
    let unknown = error(&first, 0);
    assert_eq!(unknown["data"]["idem"], "in_doubt", "{first:#}");
    assert_eq!(unknown["data"]["retry"], false, "{first:#}");
    assert!(
        unknown["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown")),
        "{first:#}"
    );
    let key = unknown["data"]["key"].as_str().expect("the key").to_owned();
    assert_eq!(world.executions("email").len(), 1);

    // The retry through a new proxy does not send it again: the key waits for review.
    let retry = world.session(&proxy, &[], &json!([crashing]));
    assert_eq!(
        error(&retry, 0)["data"]["idem"],
        "needs_review",
        "{retry:#}"
    );
    assert_eq!(error(&retry, 0)["data"]["key"], key.as_str());
    assert_eq!(world.executions("email").len(), 1);
    let shown: Value = serde_json::from_str(&world.idem(&["show", &key, "--json"])).expect("JSON");
    assert_eq!(shown["status"], "needs_review", "{shown:#}");
}

#[test]
fn agents_on_streamable_http_share_the_records_of_agents_on_stdio() {
    let Some(world) = World::new("the mcp-proxy HTTP test") else {
        return;
    };
    let argv = world.proxy(&["--listen", "127.0.0.1:0"]);
    let mut proxy = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let url = listening_url(&mut proxy);
    let quote = email("Quote Q-9");
    // The refund asks the user inside the call: the question travels over HTTP too.
    let refund = call("refund_charge", json!({ "charge_id": "ch_9" }));
    let over_http = world.report(world.start_client(
        &["--url", &url],
        &json!([quote, quote, refund, refund]),
        &[],
    ));
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(answer(&over_http, 0), answer(&over_http, 1));
    assert_eq!(answer(&over_http, 2)["refund_id"], "re_1", "{over_http:#}");
    assert_eq!(answer(&over_http, 3), answer(&over_http, 2));
    assert_eq!(
        over_http["questions"],
        json!(["Refund ch_9?"]),
        "{over_http:#}"
    );
    assert_eq!(world.executions("refund").len(), 1);
    let on_stdio = world.session(&[], &[], &json!([quote]));
    assert_eq!(answer(&on_stdio, 0), answer(&over_http, 0));
    assert_eq!(world.executions("email").len(), 1);
}

/// The URL a server says it listens on (its line on stderr that says `listening on`).
fn listening_url(server: &mut Child) -> String {
    use std::io::BufRead;
    let stderr = server.stderr.take().expect("the server's stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let line = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .expect("read the server's stderr");
        if line.contains("listening on") {
            break line;
        }
    };
    // The rest of its stderr is drained so that the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    line.split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned()
}

/// A server on streamable HTTP is fronted with `--upstream URL`; its progress reaches the
/// agent, and the agent's cancellation reaches it (and leaves the key in doubt: the email
/// had gone out).
#[test]
fn a_server_on_streamable_http_is_fronted_with_its_progress_and_cancellations() {
    let Some(world) = World::new("the mcp-proxy upstream test") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let argv = world.tool_server();
    let mut server = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--http", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server on HTTP");
    let url = listening_url(&mut server);
    let config = world.config("proxy.toml", "[tools.send_email]\non_stale = \"review\"\n");
    let config = config.display().to_string();
    let proxy = world.proxy_to(&["--upstream", &url, "--config", &config]);

    // The server's progress on the first call reaches the agent under the agent's own
    // token; the retry is replayed (no progress, the report made once).
    let report = call("export_report", json!({ "name": "q3", "steps": 3 }));
    let progress = world.report(world.start_client(&[], &json!([report, report]), &proxy));
    assert_eq!(
        calls(&progress)[0]["progress"],
        json!([
            [1.0, 3.0, "step 1"],
            [2.0, 3.0, "step 2"],
            [3.0, 3.0, "step 3"]
        ]),
        "{progress:#}"
    );
    assert_eq!(answer(&progress, 0), answer(&progress, 1));
    assert_eq!(calls(&progress)[1]["progress"], json!([]), "{progress:#}");
    assert_eq!(world.executions("report").len(), 1);

    // The agent gives up on a call the server is holding (after sending the email): the
    // server is told and stops; the key is in doubt, and the retry is not sent blind.
    let held = email("hold: the renewal");
    let gave_up =
        world.report(world.start_client(&["--cancel-after", "1"], &json!([held]), &proxy));
    assert!(calls(&gave_up)[0].get("failure").is_some(), "{gave_up:#}");
    world.until_executed("cancelled");
    std::fs::write(format!("{}.release", world.ledger.display()), "").expect("release");
    let retry = world.session_to(&proxy, &json!([held]));
    assert_eq!(
        error(&retry, 0)["data"]["idem"],
        "needs_review",
        "{retry:#}"
    );
    assert_eq!(world.executions("email").len(), 1);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_rust_example_server_behind_the_proxy_answers_as_it_does_alone() {
    let Some(python) = python_with_mcp("the mcp-proxy example test") else {
        return;
    };
    let Some(server) = example("mcp_server") else {
        return;
    };
    let dir = TempDir::new();
    let store = format!("sqlite://{}", dir.join("proxy.db").display());
    let (db, ledger) = (dir.join("idem.db"), dir.join("ledger.log"));
    // The example's own client (two sessions, retries, copies, a declined card, a refund
    // that asks the user), through the proxy: its arguments go after the server command.
    let mut client = Command::new(&python);
    client
        .arg(format!("{MCP}/client.py"))
        .arg(env!("CARGO_BIN_EXE_idem"))
        .args(["--store", &store, "mcp-proxy", "--"])
        .arg(&server)
        .arg("--db")
        .arg(&db)
        .arg("--ledger")
        .arg(&ledger)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = wait_limited(client.spawn().expect("start the client"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("the client's JSON");
    let ledger = std::fs::read_to_string(&ledger).expect("the ledger");
    let count = |kind: &str| ledger.lines().filter(|l| l.starts_with(kind)).count();
    // One effect per distinct call, as without the proxy; the same questions.
    assert_eq!(
        (
            count("email"),
            count("charge"),
            count("ticket"),
            count("refund"),
            count("decline")
        ),
        (1, 1, 1, 1, 1),
        "{ledger}"
    );
    assert_eq!(
        report["questions"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    let refusals: Vec<&Value> = calls(&report)
        .iter()
        .filter(|c| {
            c.get("error")
                .is_some_and(|e| e["data"]["idem"] == "payload_mismatch")
        })
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "the changed charge is refused: {report:#}"
    );
}

/// The workspace's example `name`, built beside this test binary by `cargo test --workspace`.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test binary");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "{} is not built: `cargo test --workspace` builds it",
        path.display()
    );
    eprintln!(
        "skipping: {} is not built (run `cargo test --workspace`)",
        path.display()
    );
    None
}

/// The README's transcript: a Python agent that retries, and is restarted, pointed at
/// `idem mcp-proxy -- python email_server.py` with no store given (the default file in
/// `$XDG_STATE_HOME`), sends its email once and gets the same answer three times.
#[test]
fn the_readme_agent_sends_its_email_once() {
    let Some(python) = python_with_mcp("the mcp-proxy README test") else {
        return;
    };
    let dir = TempDir::new();
    let outbox = dir.join("outbox.log");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/mcp_proxy");
    let agent = Command::new(&python)
        .arg(format!("{examples}/agent.py"))
        .args(["--", env!("CARGO_BIN_EXE_idem"), "mcp-proxy", "--", &python])
        .arg(format!("{examples}/email_server.py"))
        .arg("--outbox")
        .arg(&outbox)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env_remove("IDEM_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let output = wait_limited(agent);
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{transcript}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = transcript.lines().collect();
    assert_eq!(lines.len(), 3, "{transcript}");
    for line in &lines {
        assert!(
            line.ends_with(r#"-> {"message_id": "msg-1", "to": "ada@example.com"}"#),
            "{transcript}"
        );
    }
    let sent = std::fs::read_to_string(&outbox).expect("the outbox");
    assert_eq!(sent.lines().count(), 1, "{sent}");
    assert!(
        dir.join("state/idem/mcp-proxy.db").exists(),
        "the default store"
    );
}

/// The configuration file, per tool: a declined card recorded and replayed
/// (`record_errors`), a tool passed through (`off`), a key made of one argument (`key`):
/// the same order with another amount is refused, not charged and not answered with the
/// first charge.
#[test]
fn the_configuration_records_errors_passes_tools_through_and_picks_key_fields() {
    let Some(world) = World::new("the mcp-proxy configuration test") else {
        return;
    };
    let config = world.config(
        "proxy.toml",
        r#"
        [tools.charge_card]
        record_errors = true
        key = ["/order_id"]
        [tools.create_ticket]
        off = true
        "#,
    );
    let config = config.display().to_string();
    let declined = call(
        "charge_card",
        json!({ "order_id": "o-7", "amount_cents": 900_000 }),
    );
    let other_amount = call(
        "charge_card",
        json!({ "order_id": "o-7", "amount_cents": 1_000 }),
    );
    let ticket = call("create_ticket", json!({ "title": "Refund request" }));
    let report = world.session(
        &["--config", &config],
        &[],
        &json!([declined, declined, other_amount, ticket, ticket]),
    );
    // The decline is recorded: the retry gets it, the card was tried once.
    assert_eq!(calls(&report)[0]["is_error"], true, "{report:#}");
    assert_eq!(
        calls(&report)[1]["text"],
        calls(&report)[0]["text"],
        "{report:#}"
    );
    assert_eq!(world.executions("decline").len(), 1);
    // The key is the order: the same order with another amount is refused.
    assert_eq!(
        error(&report, 2)["data"]["idem"],
        "payload_mismatch",
        "{report:#}"
    );
    assert_eq!(world.executions("charge").len(), 0);
    // A tool configured off runs every time.
    assert_ne!(answer(&report, 3), answer(&report, 4));
    assert_eq!(world.executions("ticket").len(), 2);
}
