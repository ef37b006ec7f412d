//! A process running a three-step saga (contract → charge → email) is killed with SIGKILL at
//! each point: before, inside (after its side effect) and after each step; and, when the email
//! fails, inside each compensation while the saga undoes itself; and once the recovering
//! process is killed too, inside the refund it makes. A new process then runs `recover`, and
//! runs again the sagas that recovery hands back (past the email, which cannot be undone).
//! The ledger of side effects must show no double effect, and the saga either completed or
//! fully compensated.
//!
//! The services write their effects to a ledger file and deduplicate by the idempotency key
//! they are handed (`idem::current_key()`), as real payment and mail APIs do.
//!
//! Every scenario runs on SQLite, Redis and PostgreSQL: the child processes open their store
//! from a URL (`idem::store::open`), each scenario in a namespace of its own on the shared
//! server (a Redis key prefix, a PostgreSQL schema). The servers are started by this test
//! process; without their binaries those tests skip (and fail under `CI=true`).
//!
//! Issue 12's case with real kills: the payment provider answers a reused key with 409
//! Conflict instead of its first answer. The saga's process is killed inside the charge
//! (after the charge is made, before its output is logged); recovery cannot learn whether the
//! charge happened by running it again, so the saga is left NEEDS_ATTENTION with nothing
//! undone. With a `verify` that looks the charge up by its key, it is undone instead.
//!
//! Issue 12's case 3 with real kills: a step logged `Failed` that runs again writes a fresh
//! intent first. The charge is declined on its first call (the saga handles the decline and
//! goes on) and that process is killed; a second run of the same saga runs the charge again,
//! which now goes through, and is killed inside it, before its output is logged. Recovery
//! finds the charge in doubt, learns it under its key, and refunds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use idem::store::{SagaStatus, Store};
use idem::{current_key, saga_step, Recover, Retry, Saga};
use idem_runtime::conformance::servers::{PostgresServer, RedisServer};

use crate::child::{append, ledger_lines, say, temp_folder, var, ChildProcess};
use crate::support::ToolError;

const STEPS: [&str; 3] = ["contract", "charge", "email"];
const SAGA: &str = "order-crash";

fn ledger() -> PathBuf {
    PathBuf::from(var("IDEM_LEDGER"))
}

/// Where this process is told to die: `before:charge`, `inside:email`, …
async fn stop_here(point: &str) {
    if std::env::var("IDEM_CRASH").is_ok_and(|at| at == point) {
        say(&format!("AT {point}"));
        std::future::pending::<()>().await;
    }
}

/// The key the running step (or compensation, or `verify`) is handed.
fn key() -> String {
    current_key()
        .expect("steps run under their key")
        .to_string()
}

/// What the service first answered to `key`: the effect it made under it, if any.
fn answered(ledger: &Path, key: &str) -> Option<String> {
    ledger_lines(ledger)
        .into_iter()
        .find_map(|line| line.strip_prefix(&format!("{key} ")).map(str::to_owned))
}

/// With `IDEM_DECLINE_ONCE` set, the card issuer declines the first charge for `order`
/// (recording nothing), and only the first: the refusal is remembered in a marker file next
/// to the ledger, across processes.
fn declined_once(order: &str) -> bool {
    if std::env::var_os("IDEM_DECLINE_ONCE").is_none() {
        return false;
    }
    let marker = ledger().with_file_name(format!("declined-{order}"));
    if marker.exists() {
        return false;
    }
    std::fs::write(&marker, "declined").expect("remember the decline");
    true
}

/// A service call: one ledger line `<key> <effect>` per key, whatever the retries.
fn serve(ledger: &Path, effect: &str) -> String {
    let key = key();
    answered(ledger, &key).unwrap_or_else(|| {
        append(ledger, &format!("{key} {effect}"));
        effect.to_owned()
    })
}

/// The payment provider: as [`serve`], but with `IDEM_CONFLICTS` set it answers a reused
/// key with 409 Conflict instead of its first answer, as many providers do.
fn serve_charge(ledger: &Path, order: &str, effect: &str) -> Result<String, ToolError> {
    if declined_once(order) {
        return Err(ToolError::Declined("card declined".into()));
    }
    if std::env::var_os("IDEM_CONFLICTS").is_some() && answered(ledger, &key()).is_some() {
        return Err(ToolError::Transient(
            "409 Conflict: this idempotency key was already used".into(),
        ));
    }
    Ok(serve(ledger, effect))
}

#[saga_step(compensate = cancel_contract)]
async fn open_contract(order: &str) -> Result<String, ToolError> {
    let contract = serve(&ledger(), &format!("contract {order}"));
    stop_here("inside:contract").await;
    Ok(contract)
}

async fn cancel_contract(contract: String) -> Result<(), ToolError> {
    serve(&ledger(), &format!("cancel {contract}"));
    stop_here("inside:cancel").await;
    Ok(())
}

#[saga_step(compensate = refund_card)]
async fn charge_card(order: &str, cents: u64) -> Result<String, ToolError> {
    let charge = serve_charge(&ledger(), order, &format!("charge {cents} for {order}"))?;
    stop_here("inside:charge").await;
    Ok(charge)
}

/// The same charge, with a `verify` that looks the charge up by its key (`IDEM_VERIFY`).
#[saga_step(compensate = refund_card, verify = find_charge)]
async fn charge_card_verified(order: &str, cents: u64) -> Result<String, ToolError> {
    let charge = serve_charge(&ledger(), order, &format!("charge {cents} for {order}"))?;
    stop_here("inside:charge").await;
    Ok(charge)
}

/// The provider's lookup of a charge by its idempotency key.
async fn find_charge(_order: &str, _cents: &u64) -> Result<Option<String>, ToolError> {
    Ok(answered(&ledger(), &key()))
}

async fn refund_card(charge: String) -> Result<(), ToolError> {
    serve(&ledger(), &format!("refund {charge}"));
    stop_here("inside:refund").await;
    Ok(())
}

/// The mailer deduplicates by the key it is handed: an email in doubt may be sent again
/// under it (`rerun_safe`).
#[saga_step(irreversible, rerun_safe)]
async fn email_customer(order: &str) -> Result<(), ToolError> {
    if std::env::var_os("IDEM_EMAIL_FAILS").is_some() {
        // The mailer refuses the address: the saga is undone.
        return Err(ToolError::Declined("no such mailbox".into()));
    }
    serve(&ledger(), &format!("email {order}"));
    stop_here("inside:email").await;
    Ok(())
}

async fn run_saga(store: &dyn Store) -> Result<String, ToolError> {
    Saga::new(SAGA)
        .store(store)
        .lease(Duration::from_millis(300))
        .run(|s| async move {
            stop_here("before:contract").await;
            let contract = s.step(open_contract("order-9")).await?;
            stop_here("after:contract").await;
            stop_here("before:charge").await;
            let charged = if std::env::var_os("IDEM_VERIFY").is_some() {
                s.step(charge_card_verified("order-9", 4200)).await
            } else {
                s.step(charge_card("order-9", 4200)).await
            };
            match charged {
                Ok(_) => {}
                // Declined (`IDEM_DECLINE_ONCE`): the saga goes on without the charge; the
                // step stays logged `Failed`, and the next run of this code runs it again.
                Err(ToolError::Declined(_)) if std::env::var_os("IDEM_DECLINE_ONCE").is_some() => {
                    say("DECLINED");
                }
                Err(error) => return Err(error),
            }
            stop_here("after:charge").await;
            stop_here("before:email").await;
            s.step(email_customer("order-9")).await?;
            stop_here("after:email").await;
            Ok(contract)
        })
        .await
}

/// The child: `IDEM_ROLE=saga` runs the saga (and is killed at `IDEM_CRASH`);
/// `IDEM_ROLE=recover` recovers until the saga is settled (completed, compensated, or left
/// NEEDS_ATTENTION), then prints its status and its steps. Its store is `IDEM_STORE`, a URL.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn saga_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = async {
        let store = idem::store::open(&var("IDEM_STORE"))
            .await
            .expect("open the store");
        let store: &dyn Store = &*store;
        if var("IDEM_ROLE") == "saga" {
            say("RUNNING");
            let result = run_saga(store).await;
            say(&format!("FINISHED {result:?}"));
            return;
        }
        let key = idem::Action::new("saga").key(&(SAGA,)).unwrap();
        loop {
            let report = Recover::new(store)
                .lease(Duration::from_millis(300))
                .compensation_retry(
                    Retry::new(3).backoff(Duration::from_millis(5), Duration::from_millis(20)),
                )
                .run()
                .await
                .expect("recover");
            // What recovery hands back is carried forward by the code that owns it.
            for id in &report.interrupted {
                assert_eq!(id, SAGA);
                run_saga(store).await.expect("the saga carries forward");
            }
            let log = store.read_saga(&key).await.expect("read");
            if let Some(log) = log.filter(|log| {
                matches!(
                    log.status,
                    SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::NeedsAttention
                )
            }) {
                let steps: Vec<String> = log
                    .steps
                    .iter()
                    .map(|step| format!("{}={}", step.name, step.state))
                    .collect();
                say(&format!("SETTLED {}", log.status));
                say(&format!("STEPS {}", steps.join(" ")));
                return;
            }
            // The dead owner's lease (300 ms) has to run out before recovery may take over.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), work).await })
        .expect("the child finishes in time");
}

/// Where the scenarios' stores live. Each scenario gets a clean store of its own: a new
/// SQLite file in its folder, or its own key prefix (Redis) or schema (PostgreSQL) on the
/// server shared by this test process.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Redis(&'static RedisServer),
    Postgres(&'static PostgresServer),
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Redis(_) => "redis",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The store URL of the scenario `namespace` (letters, digits and `_`), whose files are
    /// in `folder`.
    fn url(self, folder: &Path, namespace: &str) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", folder.join("idem.db").display()),
            Backend::Redis(server) => format!("{}?prefix={namespace}:", server.url()),
            Backend::Postgres(server) => format!("{}?schema={namespace}", server.url()),
        }
    }
}

/// One way to die: where the saga's process is killed, where a second run of the saga is
/// killed (if there is one), where the first recovering process is killed (if it is), whether
/// the email fails (so that the saga is being undone), whether the payment provider answers
/// a reused key with 409, whether the charge has a `verify`, whether the first charge is
/// declined, and how the saga must end.
struct Scenario {
    kill_saga_at: String,
    kill_rerun_at: Option<&'static str>,
    kill_recovery_at: Option<&'static str>,
    email_fails: bool,
    conflicts: bool,
    verify: bool,
    decline_once: bool,
    ends: &'static str,
}

impl Scenario {
    fn killed_at(point: &str, ends: &'static str) -> Self {
        Scenario {
            kill_saga_at: point.to_owned(),
            kill_rerun_at: None,
            kill_recovery_at: None,
            email_fails: false,
            conflicts: false,
            verify: false,
            decline_once: false,
            ends,
        }
    }

    /// What the assertions call it: `inside:charge`, `after:charge, then recovery at …`.
    fn label(&self) -> String {
        let mut label = self.kill_saga_at.clone();
        if self.decline_once {
            label.push_str(", the charge declined");
        }
        if let Some(again) = self.kill_rerun_at {
            label.push_str(&format!(", then the saga run again at {again}"));
        }
        if let Some(again) = self.kill_recovery_at {
            label.push_str(&format!(", then recovery at {again}"));
        }
        if self.conflicts {
            label.push_str(", a reused key answered 409");
        }
        if self.verify {
            label.push_str(", the charge verified");
        }
        label
    }

    /// Its store namespace, short enough for a PostgreSQL schema name (63 bytes):
    /// `crash_after_charge_then_inside_refund`, `doubt_inside_charge_409_verify`.
    fn namespace(&self, tag: &str) -> String {
        let mut parts = vec![tag, &self.kill_saga_at];
        if self.decline_once {
            parts.push("declined");
        }
        if let Some(again) = self.kill_rerun_at {
            parts.extend(["rerun", again]);
        }
        if let Some(again) = self.kill_recovery_at {
            parts.extend(["then", again]);
        }
        if self.conflicts {
            parts.push("409");
        }
        if self.verify {
            parts.push("verify");
        }
        parts.join("_").replace(':', "_")
    }
}

fn start(folder: &Path, url: &str, role: &str, crash: &str, scenario: &Scenario) -> ChildProcess {
    let mut env = vec![
        ("IDEM_STORE", url.to_owned()),
        (
            "IDEM_LEDGER",
            folder.join("ledger.txt").display().to_string(),
        ),
        ("IDEM_ROLE", role.to_owned()),
        ("IDEM_CRASH", crash.to_owned()),
    ];
    for (name, set) in [
        ("IDEM_EMAIL_FAILS", scenario.email_fails),
        ("IDEM_CONFLICTS", scenario.conflicts),
        ("IDEM_VERIFY", scenario.verify),
        ("IDEM_DECLINE_ONCE", scenario.decline_once),
    ] {
        if set {
            env.push((name, "1".to_owned()));
        }
    }
    ChildProcess::start("saga_crashes::saga_child", &env)
}

/// The effects of the ledger, without their keys.
fn effects(folder: &Path) -> Vec<String> {
    ledger_lines(&folder.join("ledger.txt"))
        .into_iter()
        .map(|line| {
            line.split_once(' ')
                .map(|(_, e)| e.to_owned())
                .unwrap_or(line)
        })
        .collect()
}

fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    for step in STEPS {
        for when in ["before", "inside", "after"] {
            let point = format!("{when}:{step}");
            // Killed once the email (which cannot be unsent) went out: carried forward.
            // Killed earlier: fully undone.
            let past_the_pivot = point == "inside:email" || point == "after:email";
            all.push(Scenario::killed_at(
                &point,
                if past_the_pivot {
                    "completed"
                } else {
                    "compensated"
                },
            ));
        }
    }
    // Killed while undoing itself (the email failed), inside each compensation.
    for point in ["inside:refund", "inside:cancel"] {
        all.push(Scenario {
            email_fails: true,
            ..Scenario::killed_at(point, "compensated")
        });
    }
    // The recovering process is killed too, inside the refund it makes.
    all.push(Scenario {
        kill_recovery_at: Some("inside:refund"),
        ..Scenario::killed_at("after:charge", "compensated")
    });
    all
}

/// Issue 12 with real kills: killed inside the charge (made, its output not logged), and the
/// provider answers the charge run again under its key with 409.
fn in_doubt_scenarios() -> Vec<Scenario> {
    vec![
        // Running it again does not tell whether it happened: it stays in doubt, and
        // nothing before it is undone.
        Scenario {
            conflicts: true,
            ..Scenario::killed_at("inside:charge", "needs_attention")
        },
        // Its `verify` finds the charge: it is refunded, and the contract cancelled.
        Scenario {
            conflicts: true,
            verify: true,
            ..Scenario::killed_at("inside:charge", "compensated")
        },
    ]
}

/// Issue 12's case 3 with real kills: the charge is declined, the saga handles it and goes
/// on, and its process is killed before the email; the saga runs again, the charge (logged
/// `Failed`) runs again and goes through, and that process is killed inside it, before its
/// output is logged. The charge is in doubt: recovery refunds it, and cancels the contract.
fn declined_then_charged_scenarios() -> Vec<Scenario> {
    vec![Scenario {
        decline_once: true,
        kill_rerun_at: Some("inside:charge"),
        ..Scenario::killed_at("before:email", "compensated")
    }]
}

/// Runs each scenario in processes of its own on `backend`, each in a namespace named after
/// `tag` and the scenario, and checks the ledger and how the saga ended.
fn run_scenarios(backend: Backend, tag: &str, scenarios: Vec<Scenario>) {
    for scenario in scenarios {
        let point = format!("{} on {}", scenario.label(), backend.name());
        let namespace = scenario.namespace(tag);
        let folder = temp_folder(&format!("saga-crash-{}-{namespace}", backend.name()));
        let url = backend.url(&folder, &namespace);

        let mut doomed = start(&folder, &url, "saga", &scenario.kill_saga_at, &scenario);
        if scenario.decline_once {
            doomed.expect("DECLINED");
        }
        doomed.expect(&format!("AT {}", scenario.kill_saga_at));
        doomed.kill();
        if scenario.decline_once {
            assert_eq!(
                effects(&folder),
                ["contract order-9"],
                "{point}: the declined charge made nothing"
            );
        }
        if let Some(at) = scenario.kill_rerun_at {
            // The same saga's code again: it waits for the dead run's claim to run out.
            let mut doomed = start(&folder, &url, "saga", at, &scenario);
            doomed.expect(&format!("AT {at}"));
            doomed.kill();
        }
        if let Some(at) = scenario.kill_recovery_at {
            let mut doomed = start(&folder, &url, "recover", at, &scenario);
            doomed.expect(&format!("AT {at}"));
            doomed.kill();
        }
        let mut recovering = start(&folder, &url, "recover", "", &scenario);
        let status = recovering.expect("SETTLED");
        let steps = recovering.expect("STEPS");
        recovering.finish();

        let effects = effects(&folder);
        let keys: Vec<String> = ledger_lines(&folder.join("ledger.txt"))
            .into_iter()
            .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            keys.len(),
            "{point}: an effect ran twice: {effects:?}"
        );
        let count = |prefix: &str| effects.iter().filter(|e| e.starts_with(prefix)).count();
        assert!(count("charge") <= 1, "{point}: double charge: {effects:?}");
        assert_eq!(status, scenario.ends, "{point}: {effects:?} ({steps})");
        match scenario.ends {
            "completed" => assert_eq!(
                effects,
                [
                    "contract order-9",
                    "charge 4200 for order-9",
                    "email order-9"
                ],
                "{point}"
            ),
            "needs_attention" => {
                // The charge may have happened: nothing is undone, the charge stays in doubt.
                assert_eq!(
                    effects,
                    ["contract order-9", "charge 4200 for order-9"],
                    "{point}: nothing undone, one charge"
                );
                assert_eq!(
                    steps, "open_contract=done charge_card=started",
                    "{point}: the charge still in doubt"
                );
            }
            _ => {
                assert_eq!(count("email"), 0, "{point}: {effects:?}");
                assert_eq!(count("contract"), count("cancel"), "{point}: {effects:?}");
                assert_eq!(count("charge"), count("refund"), "{point}: {effects:?}");
                let expected_contracts = usize::from(scenario.kill_saga_at != "before:contract");
                assert_eq!(
                    count("contract"),
                    expected_contracts,
                    "{point}: {effects:?}"
                );
                if scenario.verify || scenario.decline_once {
                    assert_eq!(
                        effects,
                        [
                            "contract order-9",
                            "charge 4200 for order-9",
                            "refund charge 4200 for order-9",
                            "cancel contract order-9"
                        ],
                        "{point}: the charge in doubt refunded once"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&folder);
    }
}

#[test]
fn a_saga_killed_at_any_point_is_recovered_with_no_double_effect() {
    run_scenarios(Backend::Sqlite, "crash", scenarios());
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_saga_killed_at_any_point_is_recovered_with_no_double_effect_on_redis() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    run_scenarios(Backend::Redis(server), "crash", scenarios());
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_saga_killed_at_any_point_is_recovered_with_no_double_effect_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    run_scenarios(Backend::Postgres(server), "crash", scenarios());
}

#[test]
fn a_charge_killed_in_doubt_and_answered_409_is_never_reported_compensated() {
    run_scenarios(Backend::Sqlite, "doubt", in_doubt_scenarios());
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_charge_killed_in_doubt_and_answered_409_is_never_reported_compensated_on_redis() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    run_scenarios(Backend::Redis(server), "doubt", in_doubt_scenarios());
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_charge_killed_in_doubt_and_answered_409_is_never_reported_compensated_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    run_scenarios(Backend::Postgres(server), "doubt", in_doubt_scenarios());
}

#[test]
fn a_declined_charge_run_again_and_killed_in_doubt_is_refunded() {
    run_scenarios(Backend::Sqlite, "again", declined_then_charged_scenarios());
}

#[test]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_declined_charge_run_again_and_killed_in_doubt_is_refunded_on_redis() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    run_scenarios(
        Backend::Redis(server),
        "again",
        declined_then_charged_scenarios(),
    );
}

#[test]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
fn a_declined_charge_run_again_and_killed_in_doubt_is_refunded_on_postgres() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    run_scenarios(
        Backend::Postgres(server),
        "again",
        declined_then_charged_scenarios(),
    );
}
