//! `redis-server` for tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::{exchange, find_binary, free_port, temp_folder, unavailable, wait_until, Keeper};

/// A `redis-server` of this test process, on a loopback port, with no persistence.
///
/// ```no_run
/// # async fn run() {
/// if let Some(server) = idem_runtime::conformance::servers::RedisServer::shared() {
///     let url = server.url(); // redis://127.0.0.1:PORT/
/// #   let _ = url;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    folder: PathBuf,
    _keeper: Keeper,
}

impl RedisServer {
    /// The server shared by the tests of this process, started on first use; `None` (after
    /// printing why) when `redis-server` is not installed, a panic under `CI=true`.
    pub fn shared() -> Option<&'static RedisServer> {
        static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
        SERVER
            .get_or_init(|| match find_binary("redis-server", &[]) {
                None => unavailable(
                    "redis-server is not installed (apt-get install -y redis-server)".into(),
                ),
                Some(binary) => Some(RedisServer::start(&binary).unwrap_or_else(|e| {
                    panic!("redis-server is installed but did not start: {e}")
                })),
            })
            .as_ref()
    }

    fn start(binary: &std::path::Path) -> Result<RedisServer, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let folder = temp_folder("redis").map_err(|e| e.to_string())?;
        let log = folder.join("keeper.log");
        let script = format!(
            "'{binary}' --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{dir}' & \
             pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf '{dir}'",
            binary = binary.display(),
            dir = folder.display(),
        );
        let keeper = Keeper::spawn(&script, &log).map_err(|e| e.to_string())?;
        wait_until(Duration::from_secs(10), &log, || {
            exchange(port, b"PING\r\n").is_some_and(|answer| answer.starts_with(b"+PONG"))
        })?;
        Ok(RedisServer {
            port,
            folder,
            _keeper: keeper,
        })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder it runs in.
    pub fn folder(&self) -> &std::path::Path {
        &self.folder
    }
}
