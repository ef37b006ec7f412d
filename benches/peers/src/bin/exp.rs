// Throwaway experiment (not committed): where a Redis replay's time goes at 1 caller.
use std::time::Instant;

use idem::idempotent;
use idem::store::{ClaimRequest, OnStale, RedisStore, Store};
use idem_runtime::conformance::servers::RedisServer;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
    amount_cents: u64,
}

#[derive(Debug)]
struct E(String);
impl From<idem::Error> for E {
    fn from(e: idem::Error) -> Self {
        E(e.to_string())
    }
}

#[idempotent(skip = [store], store = store, name = "exp_replay")]
async fn replay(store: &dyn Store, customer: &str, order: u64, amount_cents: u64) -> Result<Receipt, E> {
    Ok(Receipt { message_id: format!("msg-{customer}-{order}"), amount_cents })
}

#[tokio::main]
async fn main() {
    let mode = std::env::var("MODE").unwrap_or_default();
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(20000);
    let server = RedisServer::own().expect("redis");
    let url = server.url();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(RedisStore::connect(&url).await.unwrap());
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw: ConnectionManager = client.get_connection_manager().await.unwrap();
    replay(&*store, "cus_42", 7, 1999).await.unwrap();
    let value = vec![b'x'; 300];
    let _: () = redis::cmd("SET").arg("k").arg(&value).query_async(&mut raw).await.unwrap();
    let key = idem::Action::new("exp_replay").key(&("cus_42", 7u64, 1999u64)).unwrap();
    let fp = idem::Fingerprint::from(key);
    for round in 0..5 {
        for m in ["raw", "idem", "claim"] {
            if !mode.is_empty() && mode != m { continue; }
            let start = Instant::now();
            for _ in 0..n {
                match m {
                    "raw" => {
                        let v: Option<Vec<u8>> = redis::cmd("GET").arg("k").query_async(&mut raw).await.unwrap();
                        std::hint::black_box(v);
                    }
                    "idem" => {
                        let r = replay(&*store, "cus_42", 7, 1999).await.unwrap();
                        std::hint::black_box(r);
                    }
                    _ => {
                        let req = ClaimRequest { key: &key, fingerprint: &fp, action: "exp_replay", lease: std::time::Duration::from_secs(10), ttl: std::time::Duration::from_secs(3600), on_stale: OnStale::TakeOver };
                        let c = store.claim_without_expiry(&req).await.unwrap();
                        std::hint::black_box(c);
                    }
                }
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!("round {round} {m}: {us:.1} µs/call");
        }
    }
}
