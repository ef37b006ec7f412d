//! `idem::http`: the call's key sent downstream as `Idempotency-Key`, and which HTTP failures
//! keep a key in doubt. The world is a payment service on loopback that deduplicates by the
//! header, as Stripe does: a key it has seen gets its first answer again, and acts once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem::http::{is_ambiguous, is_ambiguous_reqwest, is_ambiguous_status, IdempotencyKey};
use idem::store::MemoryStore;
use idem::{current_key, idempotent, observe, Disposition};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the service treats a request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers; with `fail_first`, a key's first request acts and is then answered 503 (a
    /// gateway that gave up on a backend that acted).
    Answer { fail_first: bool },
    /// Reads the request and never answers.
    Silent,
    /// Reads the request and closes the connection without an answer.
    HangUp,
    /// Answers every request with this status.
    Status(u16),
}

#[derive(Default)]
struct Books {
    /// The `Idempotency-Key` of every request received, in order (`None`: no header).
    keys: Vec<Option<String>>,
    /// What each key was answered the first time it acted.
    answers: HashMap<String, String>,
    /// The charges made.
    charges: usize,
}

struct Service {
    url: String,
    books: Arc<Mutex<Books>>,
}

impl Service {
    async fn start(mode: Mode) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let books = Arc::new(Mutex::new(Books::default()));
        let shared = books.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, mode, shared.clone()));
            }
        });
        Service {
            url: format!("http://{addr}"),
            books,
        }
    }

    fn keys(&self) -> Vec<Option<String>> {
        self.books.lock().unwrap().keys.clone()
    }

    fn charges(&self) -> usize {
        self.books.lock().unwrap().charges
    }
}

/// Reads one request (head and `Content-Length` body): its request line and its
/// `Idempotency-Key`.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Option<String>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let mut key = None;
    let mut length = 0;
    for header in lines {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "idempotency-key" => key = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Some((line, key))
}

async fn serve(mut stream: TcpStream, mode: Mode, books: Arc<Mutex<Books>>) {
    let Some((line, key)) = read_request(&mut stream).await else {
        return;
    };
    books.lock().unwrap().keys.push(key.clone());
    let (status, body) = {
        match mode {
            Mode::Silent => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Mode::HangUp => return,
            Mode::Status(code) => (
                match code {
                    408 => "408 Request Timeout",
                    429 => "429 Too Many Requests",
                    500 => "500 Internal Server Error",
                    503 => "503 Service Unavailable",
                    _ => "404 Not Found",
                },
                String::new(),
            ),
            Mode::Answer { fail_first } => {
                let mut books = books.lock().unwrap();
                let known = key.as_ref().and_then(|k| books.answers.get(k).cloned());
                if line.starts_with("GET /charges") {
                    // What `verify` asks: the charge made under this key, if any.
                    match known {
                        Some(answer) => ("200 OK", answer),
                        None => ("404 Not Found", String::new()),
                    }
                } else if let Some(answer) = known {
                    ("200 OK", answer)
                } else {
                    books.charges += 1;
                    let answer = format!("charge-{}", books.charges);
                    if let Some(key) = key {
                        books.answers.insert(key, answer.clone());
                    }
                    if fail_first {
                        ("503 Service Unavailable", String::new())
                    } else {
                        ("200 OK", answer)
                    }
                }
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn client() -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(IdempotencyKey::new())
        .build()
}

/// The tool's error keeps the classification: `in_doubt` reads the variant.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum ChargeError {
    /// The charge may have been made: no answer says otherwise.
    Ambiguous(String),
    /// The charge was not made.
    Failed(String),
    Idem(String),
}

impl ChargeError {
    fn is_ambiguous(&self) -> bool {
        matches!(self, ChargeError::Ambiguous(_))
    }

    fn status(status: reqwest::StatusCode) -> Self {
        if is_ambiguous_status(status) {
            ChargeError::Ambiguous(status.to_string())
        } else {
            ChargeError::Failed(status.to_string())
        }
    }
}

impl From<reqwest_middleware::Error> for ChargeError {
    fn from(error: reqwest_middleware::Error) -> Self {
        if is_ambiguous(&error) {
            ChargeError::Ambiguous(error.to_string())
        } else {
            ChargeError::Failed(error.to_string())
        }
    }
}

impl From<idem::Error> for ChargeError {
    fn from(error: idem::Error) -> Self {
        ChargeError::Idem(error.to_string())
    }
}

/// What the tool returns: the service's answer and the key the body ran under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charged {
    answer: String,
    key: String,
}

#[idempotent(store = store, skip = [store, http, url], in_doubt = ChargeError::is_ambiguous)]
async fn http_charge(
    store: &MemoryStore,
    http: &ClientWithMiddleware,
    url: &str,
    customer: &str,
    cents: u64,
) -> Result<Charged, ChargeError> {
    let response = http
        .post(format!("{url}/charges"))
        .body(format!("customer={customer}&cents={cents}"))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ChargeError::status(response.status()));
    }
    let answer = response
        .text()
        .await
        .map_err(reqwest_middleware::Error::from)?;
    let key = current_key().expect("in the body").to_string();
    Ok(Charged { answer, key })
}

#[idempotent(store = store, skip = [store, http, url], in_doubt = ChargeError::is_ambiguous,
             verify = find_charge)]
async fn http_charge_verified(
    store: &MemoryStore,
    http: &ClientWithMiddleware,
    url: &str,
    customer: &str,
) -> Result<Charged, ChargeError> {
    let response = http.post(format!("{url}/charges")).send().await?;
    if !response.status().is_success() {
        return Err(ChargeError::status(response.status()));
    }
    let answer = response
        .text()
        .await
        .map_err(reqwest_middleware::Error::from)?;
    let key = current_key().expect("in the body").to_string();
    Ok(Charged { answer, key })
}

/// Asks the service for the charge made under this call's key: the layer sends the key here
/// too, since `verify` runs inside the call.
async fn find_charge(
    _store: &MemoryStore,
    http: &ClientWithMiddleware,
    url: &str,
    _customer: &str,
) -> Result<Option<Charged>, ChargeError> {
    let response = http.get(format!("{url}/charges")).send().await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(ChargeError::status(response.status()));
    }
    let answer = response
        .text()
        .await
        .map_err(reqwest_middleware::Error::from)?;
    let key = current_key().expect("in verify").to_string();
    Ok(Some(Charged { answer, key }))
}

#[tokio::test]
async fn the_header_is_the_calls_key_and_a_retry_replays_without_a_request() {
    let (store, service, http) = (
        MemoryStore::new(),
        Service::start(Mode::Answer { fail_first: false }).await,
        client(),
    );
    let (first, how) = observe(http_charge(&store, &http, &service.url, "c-1", 500)).await;
    let first = first.expect("charged");
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(first.answer, "charge-1");
    assert_eq!(service.keys(), [Some(first.key.clone())], "the call's key");
    assert_eq!(first.key.len(), 64);

    let (again, how) = observe(http_charge(&store, &http, &service.url, "c-1", 500)).await;
    assert_eq!(again, Ok(first));
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(
        service.keys().len(),
        1,
        "replayed by idem: no second request"
    );

    let other = http_charge(&store, &http, &service.url, "c-2", 500).await;
    let other = other.expect("charged");
    assert_eq!(other.answer, "charge-2");
    assert_eq!(
        service.keys()[1],
        Some(other.key),
        "another call, another key"
    );
}

#[tokio::test]
async fn a_request_outside_a_body_carries_no_key_and_a_header_set_by_hand_is_kept() {
    let service = Service::start(Mode::Answer { fail_first: false }).await;
    let http = client();
    let response = http
        .post(format!("{}/charges", service.url))
        .send()
        .await
        .expect("answered");
    assert!(response.status().is_success());
    assert_eq!(service.keys(), [None]);

    idem::Action::new("by_hand")
        .call(&("c-3",))
        .expect("a key")
        .run::<_, idem::Error, _>(&MemoryStore::new(), async {
            http.post(format!("{}/charges", service.url))
                .header("Idempotency-Key", "mine")
                .send()
                .await
                .expect("answered");
            Ok(())
        })
        .await
        .expect("ran");
    assert_eq!(service.keys()[1], Some("mine".into()));
}

/// The service acted, then its gateway answered 503: the key stays in doubt, and the next
/// call runs the body again under the same key, which the service answers with its first
/// answer without charging again.
#[tokio::test]
async fn a_503_keeps_the_key_in_doubt_and_the_retry_is_deduplicated_downstream() {
    let (store, service, http) = (
        MemoryStore::new(),
        Service::start(Mode::Answer { fail_first: true }).await,
        client(),
    );
    let (first, how) = observe(http_charge(&store, &http, &service.url, "c-4", 900)).await;
    assert_eq!(
        first,
        Err(ChargeError::Ambiguous("503 Service Unavailable".into()))
    );
    assert_eq!(how, Some(Disposition::InDoubt));

    let (again, how) = observe(http_charge(&store, &http, &service.url, "c-4", 900)).await;
    let again = again.expect("answered");
    assert_eq!(how, Some(Disposition::TookOver), "the body ran again");
    assert_eq!(again.answer, "charge-1", "the first charge's answer");
    assert_eq!(service.charges(), 1, "charged once");
    let keys = service.keys();
    assert_eq!(keys, [Some(again.key.clone()), Some(again.key)], "one key");

    let (_, how) = observe(http_charge(&store, &http, &service.url, "c-4", 900)).await;
    assert_eq!(how, Some(Disposition::Replayed));
}

/// The same with `verify`: it asks the service under the call's key and finds the charge;
/// the body does not run again.
#[tokio::test]
async fn a_503_in_doubt_is_settled_by_verify_asking_under_the_same_key() {
    let (store, service, http) = (
        MemoryStore::new(),
        Service::start(Mode::Answer { fail_first: true }).await,
        client(),
    );
    let (first, how) = observe(http_charge_verified(&store, &http, &service.url, "c-5")).await;
    assert!(matches!(first, Err(ChargeError::Ambiguous(_))), "{first:?}");
    assert_eq!(how, Some(Disposition::InDoubt));

    let (again, how) = observe(http_charge_verified(&store, &http, &service.url, "c-5")).await;
    let again = again.expect("verified");
    assert_eq!(how, Some(Disposition::Verified));
    assert_eq!(again.answer, "charge-1");
    assert_eq!(service.charges(), 1);
    let keys = service.keys();
    assert_eq!(keys.len(), 2, "the charge, then verify's question");
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[1], Some(again.key));
}

/// A failed request's classification, as `is_ambiguous` reads it.
async fn send_to(url: &str, timeout: Duration) -> reqwest_middleware::Error {
    let http = ClientBuilder::new(
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a client"),
    )
    .with(IdempotencyKey::new())
    .build();
    http.post(format!("{url}/charges"))
        .body("cents=100")
        .send()
        .await
        .expect_err("no answer")
}

#[tokio::test]
async fn a_timeout_after_the_request_was_sent_is_ambiguous() {
    let service = Service::start(Mode::Silent).await;
    // Room for the service's task to read the request before the client gives up, on a
    // loaded machine (the service never answers).
    let error = send_to(&service.url, Duration::from_secs(2)).await;
    assert!(error.is_timeout(), "{error:?}");
    assert!(is_ambiguous(&error), "{error:?}");
    assert_eq!(service.keys(), [None], "the service got the request");
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_is_ambiguous() {
    let service = Service::start(Mode::HangUp).await;
    let error = send_to(&service.url, Duration::from_secs(5)).await;
    assert!(!error.is_connect(), "{error:?}");
    assert!(is_ambiguous(&error), "{error:?}");
}

#[tokio::test]
async fn a_closed_port_is_not_ambiguous() {
    let addr: SocketAddr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("an address")
    };
    let error = send_to(&format!("http://{addr}"), Duration::from_secs(5)).await;
    assert!(error.is_connect(), "{error:?}");
    assert!(!is_ambiguous(&error), "nothing was sent: {error:?}");
}

#[tokio::test]
async fn status_errors_follow_the_status() {
    for (status, ambiguous) in [
        (503, true),
        (408, true),
        (429, true),
        (500, true),
        (404, false),
    ] {
        let service = Service::start(Mode::Status(status)).await;
        let response = client()
            .get(format!("{}/charges", service.url))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            is_ambiguous_status(response.status()),
            ambiguous,
            "{status}"
        );
        let error = response.error_for_status().expect_err("an error status");
        assert_eq!(is_ambiguous_reqwest(&error), ambiguous, "{status}");
        let wrapped = reqwest_middleware::Error::from(error);
        assert_eq!(is_ambiguous(&wrapped), ambiguous, "{status}");
    }
}
