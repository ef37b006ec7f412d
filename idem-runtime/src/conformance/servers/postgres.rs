//! PostgreSQL for tests: a cluster made by `initdb`, run by `pg_ctl`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::{find_binary, free_port, temp_folder, unavailable, wait_until, Keeper};

/// A PostgreSQL server of this test process: a fresh cluster in a temporary folder, on a
/// loopback port, with `trust` authentication for the user `postgres`.
///
/// PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the
/// `postgres` user (which the distribution's package creates) and `initdb` and `pg_ctl` run
/// as that user through `runuser`.
///
/// ```no_run
/// # async fn run() {
/// if let Some(server) = idem_runtime::conformance::servers::PostgresServer::shared() {
///     let url = server.url(); // postgres://postgres@127.0.0.1:PORT/postgres
/// #   let _ = url;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    folder: PathBuf,
    _keeper: Keeper,
}

impl PostgresServer {
    /// The server shared by the tests of this process, started on first use; `None` (after
    /// printing why) when PostgreSQL's `initdb` and `pg_ctl` are not installed, a panic under
    /// `CI=true`.
    ///
    /// ```no_run
    /// # async fn run() {
    /// let Some(server) = idem_runtime::conformance::servers::PostgresServer::shared() else {
    ///     return; // skipped: PostgreSQL is not installed here
    /// };
    /// # let _ = server;
    /// # }
    /// ```
    pub fn shared() -> Option<&'static PostgresServer> {
        static SERVER: OnceLock<Option<PostgresServer>> = OnceLock::new();
        SERVER
            .get_or_init(|| match binaries() {
                None => unavailable(
                    "PostgreSQL's initdb and pg_ctl are not installed (apt-get install -y postgresql)"
                        .into(),
                ),
                Some((initdb, pg_ctl)) => {
                    Some(PostgresServer::start(&initdb, &pg_ctl).unwrap_or_else(|e| {
                        panic!("PostgreSQL is installed but did not start: {e}")
                    }))
                }
            })
            .as_ref()
    }

    fn start(initdb: &Path, pg_ctl: &Path) -> Result<PostgresServer, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let folder = temp_folder("postgres").map_err(|e| e.to_string())?;
        let data = folder.join("data");
        // `runuser -u postgres --` in front of the server's commands when we are root.
        let as_owner = if running_as_root() {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&folder)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !chowned.success() {
                return Err(format!(
                    "cannot give {} to the user postgres (is there one?)",
                    folder.display()
                ));
            }
            vec!["runuser", "-u", "postgres", "--"]
        } else {
            Vec::new()
        };

        let mut command = Command::new(as_owner.first().copied().unwrap_or("env"));
        command.args(as_owner.iter().skip(1)).arg(initdb);
        command.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let made = command.output().map_err(|e| format!("initdb: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&made.stdout),
                String::from_utf8_lossy(&made.stderr)
            ));
        }

        let log = folder.join("keeper.log");
        let server_log = folder.join("server.log");
        let ready = folder.join("ready");
        let as_owner = as_owner.join(" ");
        // Up to 300 connections: each store of a test has a pool, and tests run in parallel.
        let script = format!(
            "{as_owner} '{pg_ctl}' -D '{data}' -l '{server_log}' -w -t 60 \
               -o '-p {port} -c listen_addresses=127.0.0.1 -k {dir} -c max_connections=300' start \
               && touch '{ready}' || exit 1; \
             cat >/dev/null; \
             {as_owner} '{pg_ctl}' -D '{data}' -m immediate -w stop; rm -rf '{dir}'",
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            server_log = server_log.display(),
            ready = ready.display(),
            dir = folder.display(),
        );
        let keeper = Keeper::spawn(&script, &log).map_err(|e| e.to_string())?;
        wait_until(Duration::from_secs(60), &log, || ready.exists()).map_err(|e| {
            let logged = std::fs::read_to_string(&server_log).unwrap_or_default();
            format!("{e}\nthe server's log:\n{logged}")
        })?;
        Ok(PostgresServer {
            port,
            folder,
            _keeper: keeper,
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    ///
    /// ```no_run
    /// # async fn run() {
    /// # let server = idem_runtime::conformance::servers::PostgresServer::shared().unwrap();
    /// assert!(server.url().starts_with("postgres://postgres@127.0.0.1:"));
    /// # }
    /// ```
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on.
    ///
    /// ```no_run
    /// # async fn run() {
    /// # let server = idem_runtime::conformance::servers::PostgresServer::shared().unwrap();
    /// assert!(server.url().ends_with(&format!(":{}/postgres", server.port())));
    /// # }
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one SQL statement as the superuser with `psql` (installed with the server),
    /// and returns what it printed (unaligned, tuples only): for fault tests that create
    /// databases or terminate backends.
    ///
    /// ```no_run
    /// # let server = idem_runtime::conformance::servers::PostgresServer::shared().unwrap();
    /// assert_eq!(server.sql("SELECT 1").unwrap().trim(), "1");
    /// ```
    pub fn sql(&self, statement: &str) -> Result<String, String> {
        let psql = binaries()
            .map(|(_, pg_ctl)| pg_ctl.with_file_name("psql"))
            .filter(|psql| psql.is_file())
            .or_else(|| find_binary("psql", &[]))
            .ok_or("psql is not installed")?;
        let output = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-X", "-q", "-t", "-A"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", statement])
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The folder it runs in: the cluster in `data/`, the server's log in `server.log`.
    ///
    /// ```no_run
    /// # async fn run() {
    /// # let server = idem_runtime::conformance::servers::PostgresServer::shared().unwrap();
    /// let log = server.folder().join("server.log");
    /// # let _ = log;
    /// # }
    /// ```
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

/// `initdb` and `pg_ctl` of one installation: found on `PATH`, or in Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest version first), which is not on `PATH`.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let extra: Vec<PathBuf> = versions.into_iter().map(|(_, bin)| bin).collect();
    let pg_ctl = find_binary("pg_ctl", &extra)?;
    // initdb from the same installation as pg_ctl, when it is there.
    let beside = pg_ctl.with_file_name("initdb");
    let initdb = if beside.is_file() {
        beside
    } else {
        find_binary("initdb", &extra)?
    };
    Some((initdb, pg_ctl))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}
