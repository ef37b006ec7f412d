//! The key, sent downstream: a [`reqwest_middleware`] layer that puts the running call's key in
//! an `Idempotency-Key` header, and what an HTTP failure says about the request's effect.
//!
//! Feature `http`. Built on `reqwest` with its default features off: no TLS backend is chosen
//! here. A client that talks HTTPS enables one in its own dependency on `reqwest`
//! (`features = ["rustls"]`, or `"native-tls"`); Cargo unifies the features, and this layer
//! works with whichever client it is given.
//!
//! - [`IdempotencyKey`]: inside an idempotent body (or a saga step), each request made through a
//!   [`ClientWithMiddleware`](reqwest_middleware::ClientWithMiddleware) that has it carries
//!   `Idempotency-Key: <current_key()>`, so a service that deduplicates by that header answers
//!   a retried call's request with its first answer instead of acting twice.
//! - [`is_ambiguous`], [`is_ambiguous_reqwest`], [`is_ambiguous_status`]: whether a failure
//!   leaves the effect unknown (it may have happened), for an `in_doubt` option.
//!
//! ```
//! use idem_runtime::http::{reqwest, reqwest_middleware, IdempotencyKey};
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotencyKey::new())
//!     .build();
//! # drop(client);
//! ```

use http::header::{HeaderName, HeaderValue};
use http::Extensions;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};

pub use reqwest;
pub use reqwest_middleware;

/// The header's name by default: `Idempotency-Key`, as Stripe, Adyen and the IETF draft
/// *The Idempotency-Key HTTP Header Field* spell it.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A [`Middleware`] that sends the running call's key downstream: a request made inside the
/// body of an idempotent call (or of a saga step, whose key it is there) gets the header
/// `Idempotency-Key: <key>`, the key's 64 hex digits ([`current_key`](crate::current_key)).
///
/// - A request that already has the header keeps its own value: the caller knows better.
/// - A request made outside any idempotent body is sent as it is, without the header. So is a
///   request made on another task (`tokio::spawn` inside the body): the key is the body's
///   task's, as `current_key()` is.
/// - Every request of one call carries the same key. A body that makes two different
///   requests to one service that deduplicates by key should send its own headers (the key
///   and a suffix), or split the work in two calls.
///
/// ```
/// use idem_runtime::http::{reqwest, reqwest_middleware, IdempotencyKey};
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(IdempotencyKey::with_header("X-Request-Key").expect("a valid header name"))
///     .build();
/// # drop(client);
/// ```
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    header: HeaderName,
}

impl IdempotencyKey {
    /// The layer with the header `Idempotency-Key`.
    pub fn new() -> Self {
        IdempotencyKey {
            header: HeaderName::from_static("idempotency-key"),
        }
    }

    /// The layer with another header name (a service that spells it `X-Idempotency-Key`).
    /// Fails on a name that is not a valid header name.
    pub fn with_header(name: &str) -> Result<Self, http::header::InvalidHeaderName> {
        Ok(IdempotencyKey {
            header: HeaderName::from_bytes(name.as_bytes())?,
        })
    }

    /// The header this layer sets.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }
}

impl Default for IdempotencyKey {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Middleware for IdempotencyKey {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if let Some(key) = crate::current_key() {
            if !req.headers().contains_key(&self.header) {
                let value = HeaderValue::from_str(&key.to_string())
                    .expect("a key is 64 hex digits, a valid header value");
                req.headers_mut().insert(self.header.clone(), value);
            }
        }
        next.run(req, extensions).await
    }
}

/// Whether a failed request through a [`ClientWithMiddleware`](reqwest_middleware::ClientWithMiddleware)
/// may have had its effect: the request may have reached the service, and no answer says
/// what became of it. See [`is_ambiguous_reqwest`] for the rule; an error of another
/// middleware counts by the first `reqwest::Error` in its chain of causes, and is not
/// ambiguous without one.
pub fn is_ambiguous(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Reqwest(e) => is_ambiguous_reqwest(e),
        reqwest_middleware::Error::Middleware(e) => e
            .chain()
            .find_map(|cause| cause.downcast_ref::<reqwest::Error>())
            .is_some_and(is_ambiguous_reqwest),
    }
}

/// Whether a failed `reqwest` request may have had its effect.
///
/// | the error | ambiguous |
/// |---|---|
/// | a connect error: refused, DNS, TLS handshake, the client's `connect_timeout` (nothing was sent) | no |
/// | a request that could not be built (`is_builder`), a redirect policy's refusal, an upgrade, a body that does not decode (the service answered) | no |
/// | a status error (`error_for_status`) | as [`is_ambiguous_status`] says |
/// | a timeout after the connection was made (`timeout`, `read_timeout`, a request's `timeout`) | yes |
/// | the connection reset or closed while the request was sent or its answer awaited; an answer that is not HTTP; a body error (the answer's body cut off) | yes |
///
/// A client's total `timeout` that runs out while connecting is told apart from one after
/// the request was sent only by a `connect_timeout` shorter than it: without one, such a
/// timeout counts as ambiguous (in doubt is the safe side).
pub fn is_ambiguous_reqwest(error: &reqwest::Error) -> bool {
    if error.is_builder() || error.is_connect() {
        return false;
    }
    if let Some(status) = error.status() {
        return is_ambiguous_status(status);
    }
    error.is_timeout() || error.is_request() || error.is_body()
}

/// Whether an answer with this status leaves the effect unknown: 408 (Request Timeout), 429
/// (Too Many Requests) and every 5xx. A 5xx may come from a proxy in front of a service that
/// acted, or from a service that failed after acting; 408 and 429 are answers to which the
/// usual response is to send the same request again. Other statuses say what happened: 2xx
/// done, other 4xx refused.
///
/// A 5xx is an answer, not an error of `reqwest`: check the response's status with this.
pub fn is_ambiguous_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                is_ambiguous_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 201, 204, 301, 400, 401, 403, 404, 409, 422] {
            assert!(
                !is_ambiguous_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn a_header_name_is_checked() {
        assert_eq!(IdempotencyKey::new().header().as_str(), "idempotency-key");
        assert!(IdempotencyKey::with_header("X-Idempotency-Key").is_ok());
        assert!(IdempotencyKey::with_header("not a name").is_err());
    }
}
