//! Real servers for tests: Redis (one server or a cluster), Valkey and PostgreSQL, started on a free loopback port in a
//! temporary folder, once per test process, and stopped when that process ends.
//!
//! Each server runs under a small keeper shell whose standard input is a pipe from the test
//! process: when the test process ends, however it ends (a panic, a kill), the pipe closes
//! and the keeper stops the server. Without the server's binary a test skips with a printed
//! reason; under `CI=true` it fails instead, so that CI never passes by running nothing.
//!
//! So that `cargo test` counts such a test as ignored, not passed, this repository's tests
//! carry `#[cfg_attr(idem_no_redis, ignore = "…")]` (or `idem_no_postgres`): the packages'
//! `build.rs` sets these where the server is not installed, or where `IDEM_TEST_SERVERS`
//! (`none`, or `redis`, `postgres`, `redis,postgres`) leaves it out, and never under `CI=true`.
//! The check here stays for a test run anyway (`--include-ignored`) and for other crates.

mod postgres;
mod redis;
mod redis_cluster;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use self::postgres::{PostgresServer, Shutdown};
pub use self::redis::{Flavor, RedisServer};
pub use self::redis_cluster::RedisCluster;

/// A server's TLS identity for a test, PEM: its certificate (for `127.0.0.1`), its private
/// key, and the CA that signed the certificate (which a server that asks for client
/// certificates also checks them with). The test makes them (with `rcgen`); the server
/// reads them from files in its folder.
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
///     assert!(server.url().starts_with("rediss://127.0.0.1:"));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA's certificate.
    pub ca_certificate: String,
    /// The server's certificate, signed by the CA.
    pub certificate: String,
    /// The server's private key.
    pub key: String,
}

impl ServerTls {
    /// Writes the three into `folder` (`ca.pem`, `server.pem`, `server.key`, the key
    /// readable by its owner only, as PostgreSQL demands) and returns their paths.
    pub(crate) fn write_to(&self, folder: &Path) -> std::io::Result<[PathBuf; 3]> {
        let files = [
            (folder.join("ca.pem"), &self.ca_certificate),
            (folder.join("server.pem"), &self.certificate),
            (folder.join("server.key"), &self.key),
        ];
        for (path, text) in &files {
            std::fs::write(path, text)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files[2].0, std::fs::Permissions::from_mode(0o600))?;
        }
        let [(ca, _), (certificate, _), (key, _)] = files;
        Ok([ca, certificate, key])
    }
}

/// A server process under its keeper, which stops the server (and removes its files) once
/// the pipe from this process closes: when the `Keeper` is dropped (a server of a test's
/// own, at the test's end), or when the test process ends (a shared server's, never
/// dropped).
#[derive(Debug)]
pub struct Keeper {
    child: Child,
    commands: Mutex<Option<ChildStdin>>,
}

impl Keeper {
    /// Runs `script` under `sh` with a pipe from this process as its standard input; `script`
    /// starts the server, waits for the pipe to close (`cat >/dev/null`), then stops it.
    pub(crate) fn spawn(script: &str, log: &Path) -> std::io::Result<Keeper> {
        let log = std::fs::File::create(log)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let commands = Mutex::new(child.stdin.take());
        Ok(Keeper { child, commands })
    }

    /// As [`spawn`](Self::spawn), for a server that can be stopped and started again:
    /// `functions` defines the shell functions `start`, `stop` and `clean`. The keeper starts
    /// the server, runs each line it reads as a command ([`send`](Self::send) `stop` or
    /// `start`), and once the pipe closes (this process ended) stops the server and cleans up.
    pub(crate) fn spawn_controlled(functions: &str, log: &Path) -> std::io::Result<Keeper> {
        let script =
            format!("{functions}\nstart\nwhile read command; do $command; done\nstop\nclean\n");
        Self::spawn(&script, log)
    }

    /// Tells the keeper to run `command` (`stop` or `start`).
    pub(crate) fn send(&self, command: &str) -> std::io::Result<()> {
        let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let pipe = commands
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the keeper is gone"))?;
        pipe.write_all(format!("{command}\n").as_bytes())?;
        pipe.flush()
    }

    /// The keeper's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

/// The reason a test cannot run here. Outside CI the test is skipped (returns `None`) with
/// the reason printed; under `CI=true` a missing server fails the test.
pub(crate) fn unavailable<T>(reason: String) -> Option<T> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true: {reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

/// The program `name` (on `PATH` or in `extra` folders) that a test needs; when it is
/// missing, `None` after printing why the test skips (and how to `install` it), or a panic
/// under `CI=true`.
///
/// ```no_run
/// if let Some(faketime) = idem_runtime::conformance::servers::required_binary(
///     "faketime", &[], "apt-get install -y faketime",
/// ) {
///     # let _ = faketime;
/// }
/// ```
pub fn required_binary(name: &str, extra: &[PathBuf], install: &str) -> Option<PathBuf> {
    find_binary(name, extra).or_else(|| unavailable(format!("{name} is not installed ({install})")))
}

/// The first of `names` found on `PATH` or in `extra` folders.
pub(crate) fn find_binary(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|folder| folder.join(name))
        .find(|candidate| candidate.is_file())
}

/// How far above its port a Redis Cluster node listens for its peers (its bus port).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A loopback port for a new server: nobody listens on it or on its cluster bus port now
/// ([`CLUSTER_BUS_OFFSET`] above, so that any Redis server can be a cluster node: Redis
/// refuses one above 55,535), and neither was handed out before in this process.
///
/// Why the process remembers: the tests start many servers at once, and a port that is free
/// when asked for is free again whenever its server stops. Without the memory, a cluster
/// node's bus port could go to another test's server, or a killed server's ports to
/// another test's server before it restarts: a node that cannot bind them exits, and one
/// test's client could talk to another test's server.
pub(crate) fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1_000 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        // Taken: the port itself, or it is the bus port of one handed out, or its bus port
        // is one handed out.
        let taken = handed_out.contains(&port)
            || handed_out.contains(&bus)
            || port
                .checked_sub(CLUSTER_BUS_OFFSET)
                .is_some_and(|below| handed_out.contains(&below));
        if taken || TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return Ok(port);
    }
    Err(std::io::Error::other(
        "no loopback port with a free cluster bus port after 1,000 tries",
    ))
}

/// A fresh folder for one server.
pub(crate) fn temp_folder(kind: &str) -> std::io::Result<PathBuf> {
    static FOLDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let folder = std::env::temp_dir().join(format!(
        "idem-{kind}-{}-{}",
        std::process::id(),
        FOLDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)?;
    Ok(folder)
}

/// Waits until `ready` holds, for at most `within`; the error says what the server logged.
pub(crate) fn wait_until(
    within: Duration,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!("not ready after {within:?}; its log:\n{logged}"))
}

/// Sends `request` to 127.0.0.1:`port` and reads what comes back first.
pub(crate) fn exchange(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = [0u8; 64];
    let read = stream.read(&mut answer).ok()?;
    Some(answer[..read].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_handed_out_twice_or_as_anothers_cluster_bus() {
        let ports: Vec<u16> = (0..300).map(|_| free_port().expect("a port")).collect();
        let set: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len(), "a port was handed out twice");
        for port in &ports {
            let bus = port.checked_add(CLUSTER_BUS_OFFSET);
            assert!(bus.is_some(), "{port}: too high to be a cluster node");
            assert!(
                !set.contains(&bus.unwrap()),
                "{port}'s bus port was handed out"
            );
        }
    }
}
