//! A client whose clock is minutes off still gets correct leases on Redis and PostgreSQL:
//! they measure leases on the server's clock. A child process runs with its clock set ten
//! minutes behind or ahead (`faketime`, from libfaketime) and claims a key with a two-second
//! lease; this process, on the true clock, must find that lease live for about two seconds,
//! neither long expired nor ten minutes long, and take it over once it runs out.
//!
//! Without `faketime` or the servers the tests skip, saying why; under `CI=true` they fail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem::store::{Claim, ClaimRequest, Store};
use idem::{Action, Fingerprint, OnStale};
use idem_runtime::conformance::servers::{required_binary, PostgresServer, RedisServer};

use crate::child::{say, var, ChildProcess};

const LEASE: Duration = Duration::from_secs(2);

fn request<'a>(key: &'a idem::Key, fingerprint: &'a Fingerprint) -> ClaimRequest<'a> {
    ClaimRequest {
        key,
        fingerprint,
        action: "clock_skew",
        lease: LEASE,
        ttl: Duration::from_secs(3600),
        on_stale: OnStale::TakeOver,
    }
}

fn key() -> idem::Key {
    Action::new("clock_skew").key(&("order-1",)).unwrap()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// The child: prints its own clock, claims the key, prints what it got.
#[test]
#[ignore = "run by the tests of this module as a child process"]
fn skewed_client() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Bounded, as the other children are: a child that hangs fails, so its parent cannot hang.
    let run = async {
        let store = idem::store::open(&var("IDEM_STORE")).await.expect("open");
        say(&format!("CLOCK {}", now_ms()));
        let (key, fingerprint) = (key(), Fingerprint::from(key()));
        let claim = store
            .claim(&request(&key, &fingerprint))
            .await
            .expect("claim");
        assert!(matches!(claim, Claim::Acquired { .. }), "{claim:?}");
        say("CLAIMED");
    };
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), run).await })
        .expect("the child finishes in time");
}

/// Runs the skewed child on `url` with its clock moved by `offset` (`-10m`, `+10m`), then
/// checks the lease from this process's true clock.
async fn lease_is_kept_by_the_server(url: &str, offset: &str) {
    let Some(faketime) = required_binary("faketime", &[], "apt-get install -y faketime") else {
        return;
    };
    let store = idem::store::open(url).await.expect("open");
    let mut child = ChildProcess::start_with(
        &faketime,
        &["-f", offset],
        "clock_skew::skewed_client",
        &[("IDEM_STORE", url)],
    );
    let their_clock: u128 = child.expect("CLOCK").parse().expect("a time");
    let skew = their_clock.abs_diff(now_ms());
    assert!(
        skew > 9 * 60 * 1000,
        "the child's clock is {offset} off ({skew} ms)"
    );
    child.expect("CLAIMED");

    // At once, inside the child's lease: before the child's exit, which a loaded machine can
    // make slow.
    let key = key();
    let fingerprint = Fingerprint::from(key);
    match store
        .claim(&request(&key, &fingerprint))
        .await
        .expect("claim")
    {
        Claim::InProgress {
            lease_remaining, ..
        } => assert!(
            lease_remaining > Duration::ZERO && lease_remaining <= LEASE,
            "{offset}: the lease runs {lease_remaining:?} on the server's clock"
        ),
        other => panic!("{offset}: the skewed client's claim is live, not {other:?}"),
    }
    child.finish();
    // Once it runs out, another caller takes over: on time, whatever the client's clock said.
    let deadline = tokio::time::Instant::now() + LEASE * 5;
    loop {
        match store
            .claim(&request(&key, &fingerprint))
            .await
            .expect("claim")
        {
            Claim::Acquired { resumed, .. } => {
                assert!(resumed);
                break;
            }
            Claim::InProgress { .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{offset}: the lease ran out long ago, yet {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_redis,
    ignore = "redis-server is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn redis_leases_ignore_a_client_clock_ten_minutes_off() {
    let Some(server) = RedisServer::shared() else {
        return;
    };
    for (db, offset) in [(2, "-10m"), (3, "+10m")] {
        lease_is_kept_by_the_server(&format!("{}{db}", server.url()), offset).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    idem_no_postgres,
    ignore = "PostgreSQL is not installed, or IDEM_TEST_SERVERS leaves it out"
)]
async fn postgres_leases_ignore_a_client_clock_ten_minutes_off() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    for (schema, offset) in [("skew_behind", "-10m"), ("skew_ahead", "+10m")] {
        let url = format!("{}?schema={schema}", server.url());
        lease_is_kept_by_the_server(&url, offset).await;
    }
}
