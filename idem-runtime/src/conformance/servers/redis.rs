//! `redis-server` for tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::{exchange, free_port, required_binary, temp_folder, wait_until, Keeper};

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
    keeper: Keeper,
}

impl RedisServer {
    /// The server shared by the tests of this process, started on first use; `None` (after
    /// printing why) when `redis-server` is not installed, a panic under `CI=true`.
    pub fn shared() -> Option<&'static RedisServer> {
        static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
        SERVER.get_or_init(|| Self::start(false)).as_ref()
    }

    /// A server of the caller's own, that it may stop and start again (fault tests). It
    /// writes every change to its append-only file before answering, so that a restart loses
    /// nothing. `None` as for [`shared`](Self::shared).
    pub fn own() -> Option<RedisServer> {
        Self::start(true)
    }

    fn start(durable: bool) -> Option<RedisServer> {
        let binary = required_binary("redis-server", &[], "apt-get install -y redis-server")?;
        let started = Self::launch(&binary, durable);
        Some(started.unwrap_or_else(|e| panic!("redis-server is installed but did not start: {e}")))
    }

    fn launch(binary: &std::path::Path, durable: bool) -> Result<RedisServer, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let folder = temp_folder("redis").map_err(|e| e.to_string())?;
        let log = folder.join("keeper.log");
        let persistence = if durable {
            "--appendonly yes --appendfsync always"
        } else {
            "--appendonly no"
        };
        let script = format!(
            "start() {{ '{binary}' --port {port} --bind 127.0.0.1 --save '' {persistence} \
               --dir '{dir}' & pid=$!; }}\n\
             stop() {{ kill $pid; wait $pid; }}\n\
             clean() {{ rm -rf '{dir}'; }}",
            binary = binary.display(),
            dir = folder.display(),
        );
        let keeper = Keeper::spawn_controlled(&script, &log).map_err(|e| e.to_string())?;
        let server = RedisServer {
            port,
            folder,
            keeper,
        };
        server.wait_for(true)?;
        Ok(server)
    }

    /// Waits until the server answers (`up`) or refuses connections (`!up`).
    fn wait_for(&self, up: bool) -> Result<(), String> {
        let log = self.folder.join("keeper.log");
        wait_until(Duration::from_secs(10), &log, || {
            let answers =
                exchange(self.port, b"PING\r\n").is_some_and(|answer| answer.starts_with(b"+PONG"));
            answers == up
        })
    }

    /// Stops the server (its clients' connections drop), and returns once it is down.
    pub fn stop(&self) -> Result<(), String> {
        self.keeper.send("stop").map_err(|e| e.to_string())?;
        self.wait_for(false)
    }

    /// Starts the server again on the same port, and returns once it answers.
    pub fn restart(&self) -> Result<(), String> {
        self.keeper.send("start").map_err(|e| e.to_string())?;
        self.wait_for(true)
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
