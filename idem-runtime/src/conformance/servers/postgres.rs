//! PostgreSQL for tests: a cluster made by `initdb`, run by `pg_ctl`; for failover tests, a
//! primary of the test's own and streaming standbys of it (`pg_basebackup -R`), which the test
//! kills, pauses and promotes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{find_binary, free_port, temp_folder, unavailable, wait_until, Keeper, ServerTls};

/// How long a failover test waits for a condition (a standby streaming, a promoted node
/// taking writes) before it fails.
const CONDITION_WAIT: Duration = Duration::from_secs(30);

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
    /// The name a standby gives its primary (`application_name`); `None` for a primary.
    standby_name: Option<String>,
    /// The server's options (`pg_ctl start -o`), for a [`restart`](Self::restart).
    server_options: String,
    _keeper: Keeper,
}

/// How [`PostgresServer::restart`] stops the server (`pg_ctl stop -m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `fast`: open transactions are rolled back, clients disconnected, a checkpoint
    /// written: an orderly restart, as an upgrade does.
    Fast,
    /// `immediate`: every process quits at once, no checkpoint: the next start replays the
    /// WAL, as after a power cut (committed work is kept, `fsync` being on).
    Immediate,
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
                    Some(PostgresServer::start(&initdb, &pg_ctl, None).unwrap_or_else(|e| {
                        panic!("PostgreSQL is installed but did not start: {e}")
                    }))
                }
            })
            .as_ref()
    }

    /// A server of the caller's own that takes TLS connections only: `ssl = on` with the
    /// certificate and key of `tls`, and a `pg_hba.conf` whose TCP entries are all `hostssl`,
    /// so that a client that does not use TLS is refused ("no pg_hba.conf entry … no
    /// encryption"). With `client_certificates`, those entries also ask for a client
    /// certificate signed by `tls`'s CA (`clientcert=verify-ca`), as [`RedisServer::own_tls`]
    /// does. Its [`url`](Self::url) names no `sslmode`: add one. `None` (after printing why)
    /// when PostgreSQL is not installed, a panic under `CI=true`.
    ///
    /// [`RedisServer::own_tls`]: super::RedisServer::own_tls
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{PostgresServer, ServerTls};
    ///
    /// // PEM files the test made (with `rcgen`, say).
    /// let tls = ServerTls {
    ///     ca_certificate: std::fs::read_to_string("ca.pem").expect("the CA"),
    ///     certificate: std::fs::read_to_string("server.pem").expect("the certificate"),
    ///     key: std::fs::read_to_string("server.key").expect("its key"),
    /// };
    /// if let Some(server) = PostgresServer::own_tls(&tls, false) {
    ///     let url = format!("{}?sslmode=verify-full&sslrootcert=/path/ca.pem", server.url());
    /// #   let _ = url;
    /// }
    /// ```
    pub fn own_tls(tls: &ServerTls, client_certificates: bool) -> Option<PostgresServer> {
        let Some((initdb, pg_ctl)) = binaries() else {
            return unavailable(
                "PostgreSQL's initdb and pg_ctl are not installed (apt-get install -y postgresql)"
                    .into(),
            );
        };
        Some(
            PostgresServer::start(&initdb, &pg_ctl, Some((tls, client_certificates)))
                .unwrap_or_else(|e| panic!("PostgreSQL did not start with TLS: {e}")),
        )
    }

    fn start(
        initdb: &Path,
        pg_ctl: &Path,
        tls: Option<(&ServerTls, bool)>,
    ) -> Result<PostgresServer, String> {
        let folder = temp_folder("postgres").map_err(|e| e.to_string())?;
        // Written before the folder is given to the server's user, so that they are its.
        let files = tls
            .map(|(tls, client_certificates)| {
                tls.write_to(&folder)
                    .map(|files| (files, client_certificates))
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        let as_owner = owned_by_postgres(&folder)?;
        let mut command = owner_command(&as_owner, initdb);
        command.arg("-D").arg(folder.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run("initdb", command)?;
        let options = match files {
            None => String::new(),
            Some(([ca, certificate, key], client_certificates)) => {
                let asks = if client_certificates {
                    " clientcert=verify-ca"
                } else {
                    ""
                };
                let hba = format!(
                    "local all all trust\n\
                     hostssl all all 127.0.0.1/32 trust{asks}\n\
                     hostssl all all ::1/128 trust{asks}\n"
                );
                // Overwriting keeps the file's owner (the server's user).
                std::fs::write(folder.join("data").join("pg_hba.conf"), hba)
                    .map_err(|e| format!("pg_hba.conf: {e}"))?;
                format!(
                    "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_ca_file={}",
                    certificate.display(),
                    key.display(),
                    ca.display()
                )
            }
        };
        Self::run_in(folder, &as_owner, pg_ctl, &options, None)
    }

    /// Starts the cluster in `folder`/data with `pg_ctl` under a keeper, which stops it (and
    /// removes `folder`) when the test process ends. `options` are more server options.
    fn run_in(
        folder: PathBuf,
        as_owner: &[&str],
        pg_ctl: &Path,
        options: &str,
        standby_name: Option<String>,
    ) -> Result<PostgresServer, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let data = folder.join("data");
        let log = folder.join("keeper.log");
        let server_log = folder.join("server.log");
        let ready = folder.join("ready");
        let as_owner = as_owner.join(" ");
        // Up to 300 connections: each store of a test has a pool, and tests run in parallel.
        let server_options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {dir} -c max_connections=300 -c dynamic_shared_memory_type=mmap {options}",
            dir = folder.display(),
        );
        let script = format!(
            "{as_owner} '{pg_ctl}' -D '{data}' -l '{server_log}' -w -t 60 \
               -o '{server_options}' start \
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
            standby_name,
            server_options,
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
        let psql = beside_pg_ctl("psql").ok_or("psql is not installed")?;
        let output = Command::new(psql)
            // A server that takes the connection but never answers fails the test, not hangs it.
            .env("PGCONNECT_TIMEOUT", "10")
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

/// Failover: a primary of the test's own, streaming standbys of it, and what happens to them.
///
/// ```no_run
/// use idem_runtime::conformance::servers::PostgresServer;
///
/// let Some(primary) = PostgresServer::primary() else {
///     return; // skipped: PostgreSQL is not installed here
/// };
/// let standby = primary.start_standby("standby1").unwrap();
/// primary.replicate_synchronously(&[&standby]).unwrap();
/// let url = PostgresServer::failover_url(&[&primary, &standby]);
/// // … a store on `url` at work …
/// primary.kill().unwrap();
/// standby.promote().unwrap(); // the store's next connection reaches it
/// # let _ = url;
/// ```
impl PostgresServer {
    /// A server of the calling test's own (not [`shared`](Self::shared)), to be the primary of
    /// standbys ([`start_standby`](Self::start_standby)) and to be killed. `None` (after
    /// printing why) when PostgreSQL is not installed, a panic under `CI=true`.
    ///
    /// ```no_run
    /// let Some(primary) = idem_runtime::conformance::servers::PostgresServer::primary() else {
    ///     return; // skipped
    /// };
    /// assert_eq!(primary.sql("SELECT pg_is_in_recovery()").unwrap().trim(), "f");
    /// ```
    pub fn primary() -> Option<PostgresServer> {
        let Some((initdb, pg_ctl)) = binaries() else {
            return unavailable(
                "PostgreSQL's initdb and pg_ctl are not installed (apt-get install -y postgresql)"
                    .into(),
            );
        };
        Some(
            PostgresServer::start(&initdb, &pg_ctl, None)
                .unwrap_or_else(|e| panic!("PostgreSQL is installed but did not start: {e}")),
        )
    }

    /// Starts a standby of this server: a base backup (`pg_basebackup -R`, which writes
    /// `primary_conninfo` with `application_name = name`), started on a port of its own;
    /// returns once this server reports it streaming. It has the primary's settings, as a
    /// clone does, and retries a lost primary every 100 ms (`wal_retrieve_retry_interval`) so
    /// that a promotion is not held up by a retry's wait.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// let standby = primary.start_standby("standby1").unwrap();
    /// assert_eq!(standby.sql("SELECT pg_is_in_recovery()").unwrap().trim(), "t");
    /// ```
    pub fn start_standby(&self, name: &str) -> Result<PostgresServer, String> {
        let (_, pg_ctl) = binaries().ok_or("pg_ctl is not installed")?;
        let basebackup = beside_pg_ctl("pg_basebackup").ok_or("pg_basebackup is not installed")?;
        let folder = temp_folder("postgres-standby").map_err(|e| e.to_string())?;
        let as_owner = owned_by_postgres(&folder)?;
        let mut command = owner_command(&as_owner, &basebackup);
        command
            .arg("-D")
            .arg(folder.join("data"))
            .args(["-R", "--checkpoint=fast", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(["-d", &format!("application_name={name}")]);
        run("pg_basebackup", command)?;
        let standby = Self::run_in(
            folder,
            &as_owner,
            &pg_ctl,
            "-c wal_retrieve_retry_interval=100ms",
            Some(name.to_owned()),
        )?;
        let quoted = quote_literal(name);
        self.wait_for(
            &format!("SELECT state FROM pg_stat_replication WHERE application_name = {quoted}"),
            |state| state == "streaming",
            &format!("the standby {name} streaming"),
        )?;
        Ok(standby)
    }

    /// Makes commits on this server wait for one of `standbys`:
    /// `synchronous_standby_names = 'ANY 1 (…)'` naming them all, and `synchronous_commit =
    /// on` (`ALTER SYSTEM`, then a reload). The standbys get the same settings, as clones
    /// made afterwards would, so that a promoted one meets the problem of a real deployment
    /// (see [`promote`](Self::promote)). Returns once this server counts each standby in
    /// the quorum.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// let standby = primary.start_standby("standby1").unwrap();
    /// primary.replicate_synchronously(&[&standby]).unwrap();
    /// let state = primary.sql("SELECT sync_state FROM pg_stat_replication").unwrap();
    /// assert_eq!(state.trim(), "quorum");
    /// ```
    pub fn replicate_synchronously(&self, standbys: &[&PostgresServer]) -> Result<(), String> {
        let names: Vec<&str> = standbys
            .iter()
            .map(|standby| standby.standby_name.as_deref().ok_or("not a standby"))
            .collect::<Result<_, _>>()?;
        let listed = names
            .iter()
            .map(|name| format!("\"{}\"", name.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(", ");
        let setting = quote_literal(&format!("ANY 1 ({listed})"));
        for server in std::iter::once(self).chain(standbys.iter().copied()) {
            server.sql(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = {setting}"
            ))?;
            server.sql("ALTER SYSTEM SET synchronous_commit = 'on'")?;
            server.sql("SELECT pg_reload_conf()")?;
        }
        let quoted: Vec<String> = names.iter().map(|name| quote_literal(name)).collect();
        self.wait_for(
            &format!(
                "SELECT count(*) FROM pg_stat_replication
                 WHERE application_name IN ({}) AND sync_state IN ('quorum', 'sync')",
                quoted.join(", ")
            ),
            |count| count == names.len().to_string(),
            "the standbys counted in the synchronous quorum",
        )
    }

    /// Waits until every standby has replayed all that this server has written so far.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// # let standby = primary.start_standby("standby1").unwrap();
    /// primary.sql("CREATE TABLE t (x int)").unwrap();
    /// primary.wait_replayed().unwrap();
    /// assert_eq!(standby.sql("SELECT to_regclass('t') IS NOT NULL").unwrap().trim(), "t");
    /// ```
    pub fn wait_replayed(&self) -> Result<(), String> {
        self.wait_for(
            "SELECT count(*) > 0 AND bool_and(replay_lsn >= pg_current_wal_lsn())
             FROM pg_stat_replication",
            |replayed| replayed == "t",
            "the standbys replaying everything",
        )
    }

    /// Stops sending WAL to the standbys (SIGSTOP of this server's walsenders): they fall
    /// behind, and a commit that waits for a synchronous standby waits until
    /// [`resume_replication`](Self::resume_replication). Measured here: a commit made while
    /// its walsender is stopped is lost when a standby is promoted after this server is
    /// killed. (A stopped walreceiver on the standby, or `pg_wal_replay_pause()`, loses
    /// nothing: the WAL is already in the standby's socket or on its disk, and promotion
    /// replays it.)
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// # let standby = primary.start_standby("standby1").unwrap();
    /// primary.pause_replication().unwrap();
    /// primary.sql("CREATE TABLE lost (x int)").unwrap(); // asynchronous: committed here only
    /// primary.kill().unwrap();
    /// standby.promote().unwrap();
    /// assert_eq!(standby.sql("SELECT to_regclass('lost') IS NULL").unwrap().trim(), "t");
    /// ```
    pub fn pause_replication(&self) -> Result<(), String> {
        self.signal_walsenders("-STOP")
    }

    /// Sends WAL to the standbys again (SIGCONT of the walsenders that
    /// [`pause_replication`](Self::pause_replication) stopped).
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// # let _standby = primary.start_standby("standby1").unwrap();
    /// primary.pause_replication().unwrap();
    /// primary.resume_replication().unwrap();
    /// primary.wait_replayed().unwrap();
    /// ```
    pub fn resume_replication(&self) -> Result<(), String> {
        self.signal_walsenders("-CONT")
    }

    fn signal_walsenders(&self, signal: &str) -> Result<(), String> {
        let listed = self.sql("SELECT pid FROM pg_stat_replication")?;
        let pids: Vec<&str> = listed.split_whitespace().collect();
        if pids.is_empty() {
            return Err("the server has no walsender".into());
        }
        signal_processes(signal, &pids)
    }

    /// Kills the server as a crash of its machine would: SIGKILL of the postmaster and of
    /// every process it started (backends, walsenders, …), so that nothing more is flushed
    /// or sent to a standby. Returns once they are all gone; its shared memory segment is
    /// removed too.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// primary.kill().unwrap();
    /// assert!(primary.sql("SELECT 1").is_err());
    /// ```
    pub fn kill(&self) -> Result<(), String> {
        let pid_file = self.folder.join("data").join("postmaster.pid");
        let written = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let mut lines = written.lines();
        let postmaster = lines.next().unwrap_or_default().trim().to_owned();
        let parent: u32 = postmaster
            .parse()
            .map_err(|_| format!("no process id in {}", pid_file.display()))?;
        // Line 7: the key and id of its System V shared memory segment, which a process
        // that is killed cannot remove.
        let segment = lines
            .nth(5)
            .and_then(|line| line.split_whitespace().nth(1))
            .map(str::to_owned);
        // Stopped, the postmaster starts no process while its children are listed. (Each
        // child is the leader of a process group of its own: they are found by parent.)
        signal_processes("-STOP", &[postmaster.as_str()])?;
        let mut doomed: Vec<String> = living_children(parent).iter().map(u32::to_string).collect();
        doomed.push(postmaster);
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        signal_processes("-KILL", &doomed)?;
        let deadline = Instant::now() + CONDITION_WAIT;
        while doomed.iter().any(|pid| is_living(pid)) {
            if Instant::now() > deadline {
                return Err(format!("processes of {doomed:?} outlived SIGKILL"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(segment) = segment {
            let _ = Command::new("ipcrm").args(["-m", &segment]).output();
        }
        // The keeper's last `pg_ctl stop` reads this file: with the server gone, its process
        // id could be another process's by then.
        let _ = std::fs::remove_file(&pid_file);
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast` or `immediate`) and starts it again on the same
    /// port with the same settings; returns once it accepts connections again. Its clients'
    /// connections are cut; what they had committed is kept.
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{PostgresServer, Shutdown};
    ///
    /// let server = PostgresServer::primary().unwrap();
    /// server.sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)").unwrap();
    /// server.restart(Shutdown::Immediate).unwrap();
    /// assert_eq!(server.sql("SELECT x FROM kept").unwrap().trim(), "1");
    /// ```
    pub fn restart(&self, shutdown: Shutdown) -> Result<(), String> {
        let (_, pg_ctl) = binaries().ok_or("pg_ctl is not installed")?;
        let data = self.folder.join("data");
        let mode = match shutdown {
            Shutdown::Fast => "fast",
            Shutdown::Immediate => "immediate",
        };
        let mut stop = owner_command(&as_cluster_owner(), &pg_ctl);
        stop.arg("-D")
            .arg(&data)
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run("pg_ctl stop", stop)?;
        let mut start = owner_command(&as_cluster_owner(), &pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.folder.join("server.log"))
            .args(["-w", "-t", "60", "-o", &self.server_options, "start"]);
        run("pg_ctl start", start)
    }

    /// Promotes this standby (`pg_ctl promote`) and clears the `synchronous_standby_names` it
    /// copied from its primary, as a failover manager does: with a standby named that is gone,
    /// every commit on the promoted server would wait forever (`statement_timeout` does not
    /// cover that wait). Returns once it takes writes.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// # let standby = primary.start_standby("standby1").unwrap();
    /// primary.kill().unwrap();
    /// standby.promote().unwrap();
    /// standby.sql("CREATE TABLE after_failover (x int)").unwrap();
    /// ```
    pub fn promote(&self) -> Result<(), String> {
        let (_, pg_ctl) = binaries().ok_or("pg_ctl is not installed")?;
        let mut command = owner_command(&as_cluster_owner(), &pg_ctl);
        command
            .arg("-D")
            .arg(self.folder.join("data"))
            .args(["-w", "-t", "60", "promote"]);
        run("pg_ctl promote", command)?;
        self.sql("ALTER SYSTEM SET synchronous_standby_names = ''")?;
        self.sql("SELECT pg_reload_conf()")?;
        self.wait_for(
            "SELECT pg_is_in_recovery()",
            |recovering| recovering == "f",
            "the promoted server taking writes",
        )
    }

    /// The URL of a client that follows the primary among `servers`: every host in one URL,
    /// and `target_session_attrs=read-write`, so that a new connection skips a server that is
    /// down or a standby, and reaches the one that takes writes.
    ///
    /// ```no_run
    /// # let primary = idem_runtime::conformance::servers::PostgresServer::primary().unwrap();
    /// # let standby = primary.start_standby("standby1").unwrap();
    /// let url = idem_runtime::conformance::servers::PostgresServer::failover_url(&[&primary, &standby]);
    /// // postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2/postgres?target_session_attrs=read-write
    /// assert!(url.ends_with("?target_session_attrs=read-write"));
    /// ```
    pub fn failover_url(servers: &[&PostgresServer]) -> String {
        let hosts: Vec<String> = servers
            .iter()
            .map(|server| format!("127.0.0.1:{}", server.port))
            .collect();
        format!(
            "postgresql://postgres@{}/postgres?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Runs `query` until `done` holds for what it printed (trimmed), for at most
    /// [`CONDITION_WAIT`]; the error names what was waited for and what the query said last.
    fn wait_for(&self, query: &str, done: impl Fn(&str) -> bool, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + CONDITION_WAIT;
        loop {
            let said = self.sql(query);
            if said.as_deref().is_ok_and(|said| done(said.trim())) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "waited {CONDITION_WAIT:?} for {what}; the server said {said:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A program of the installation whose `pg_ctl` [`binaries`] found (`psql`,
/// `pg_basebackup`), or one on `PATH`.
fn beside_pg_ctl(name: &str) -> Option<PathBuf> {
    binaries()
        .map(|(_, pg_ctl)| pg_ctl.with_file_name(name))
        .filter(|program| program.is_file())
        .or_else(|| find_binary(name, &[]))
}

/// `runuser -u postgres --`, to put in front of the server's commands when we are root
/// (PostgreSQL refuses to run as root); nothing otherwise.
fn as_cluster_owner() -> Vec<&'static str> {
    if running_as_root() {
        vec!["runuser", "-u", "postgres", "--"]
    } else {
        Vec::new()
    }
}

/// [`as_cluster_owner`], after giving `folder` to the user `postgres` when we are root.
fn owned_by_postgres(folder: &Path) -> Result<Vec<&'static str>, String> {
    let as_owner = as_cluster_owner();
    if as_owner.is_empty() {
        return Ok(as_owner);
    }
    let chowned = Command::new("chown")
        .args(["-R", "postgres:"])
        .arg(folder)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if !chowned.success() {
        return Err(format!(
            "cannot give {} to the user postgres (is there one?)",
            folder.display()
        ));
    }
    Ok(as_owner)
}

/// `program`, run as the cluster's owner (`as_owner` from [`owned_by_postgres`]).
fn owner_command(as_owner: &[&str], program: &Path) -> Command {
    match as_owner.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs `command` (called `what` in errors) to its end; an error says what it printed.
fn run(what: &str, mut command: Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to the processes `pids`, by their ids.
fn signal_processes(signal: &str, pids: &[&str]) -> Result<(), String> {
    run("kill", {
        let mut command = Command::new("kill");
        command.arg(signal).args(pids);
        command
    })
}

/// The state and parent of process `pid` (from `/proc/PID/stat`: `pid (name) state ppid …`,
/// where the name may hold spaces and parentheses).
fn state_and_parent(pid: &str) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether process `pid` runs (a zombie has ended).
fn is_living(pid: &str) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

/// The processes whose parent is `parent`, and which have not ended.
fn living_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid = name.to_str()?;
            let (_, ppid) = state_and_parent(pid)?;
            (ppid == parent && is_living(pid)).then(|| pid.parse().ok())?
        })
        .collect()
}

/// `text` as a quoted SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}
