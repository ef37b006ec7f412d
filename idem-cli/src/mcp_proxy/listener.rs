//! An rmcp streamable-HTTP service on a TCP listener (hyper, HTTP/1.1): the proxy's
//! `--listen`, and the echo server of `benches/mcp_proxy.rs` (which includes this file).

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServerHandler;

/// Serves MCP on `listener`, a handler made by `make` for each session (or each request, for
/// agents without sessions), until accepting fails: returns that error.
pub(crate) async fn serve<S, M>(listener: tokio::net::TcpListener, make: M) -> std::io::Error
where
    S: ServerHandler + Send + 'static,
    M: Fn() -> S + Send + Sync + 'static,
{
    let service = StreamableHttpService::new(
        move || Ok(make()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => return error,
        };
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            // A connection that breaks is the agent's business, not the listener's.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
