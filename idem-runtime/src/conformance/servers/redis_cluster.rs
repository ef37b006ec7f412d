//! A Redis Cluster (or a Valkey cluster) for tests: three masters with a replica each, on
//! loopback ports, formed by `redis-cli --cluster create`.

use std::sync::OnceLock;
use std::time::Duration;

use super::redis::{ask, info, Flavor, Listen};
use super::{exchange, required_binary, wait_until, RedisServer, ServerTls};

/// Six servers of one flavor in cluster mode, three masters and three replicas, at
/// `cluster-node-timeout 2000` (a master that dies is replaced by its replica in 3–5 s).
///
/// ```no_run
/// use idem_runtime::conformance::servers::{Flavor, RedisCluster};
///
/// if let Some(cluster) = RedisCluster::shared(Flavor::Redis) {
///     let url = cluster.url(); // redis+cluster://127.0.0.1:P1,…
/// #   let _ = url;
/// }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    flavor: Flavor,
    nodes: Vec<RedisServer>,
    /// Whether its clients connect over TLS (`own_tls`).
    tls: bool,
}

/// How long a cluster may take to form, or to replace a master.
const FORMING: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// The cluster of `flavor` shared by the tests of this process (forming one takes about
    /// 7 s), started on first use; `None` (after printing why) when the server or
    /// `redis-cli` is not installed, a panic under `CI=true`. Tests that kill or pause its
    /// nodes start their [`own`](Self::own) instead.
    pub fn shared(flavor: Flavor) -> Option<&'static RedisCluster> {
        static REDIS: OnceLock<Option<RedisCluster>> = OnceLock::new();
        static VALKEY: OnceLock<Option<RedisCluster>> = OnceLock::new();
        let cell = match flavor {
            Flavor::Redis => &REDIS,
            Flavor::Valkey => &VALKEY,
        };
        cell.get_or_init(|| Self::own(flavor)).as_ref()
    }

    /// A cluster of `flavor` of the caller's own, which it may fail over, kill and pause.
    /// `None` as for [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{Flavor, RedisCluster};
    ///
    /// if let Some(cluster) = RedisCluster::own(Flavor::Redis) {
    ///     let master = cluster.master_of_slot(0).expect("a master");
    ///     master.crash().expect("killed");
    ///     cluster.wait_until_healthy().expect("its replica took over");
    /// }
    /// ```
    pub fn own(flavor: Flavor) -> Option<RedisCluster> {
        Self::form(flavor, None)
    }

    /// A cluster of Redis servers of the caller's own whose clients connect over TLS, with
    /// the certificate and key of `tls` (no client certificate asked for); its nodes talk to
    /// each other (the cluster bus, replication) over TLS too. Its [`url`](Self::url) is
    /// `rediss+cluster://…` naming the nodes' TLS ports. Each node also keeps a plaintext
    /// port on loopback, for this harness's own commands (`redis-cli --cluster create`, the
    /// health checks): Redis answers a client over TLS with the nodes' TLS ports. `None` as
    /// for [`shared`](Self::shared).
    ///
    /// ```no_run
    /// use idem_runtime::conformance::servers::{RedisCluster, ServerTls};
    ///
    /// // PEM files the test made (with `rcgen`, say).
    /// let tls = ServerTls {
    ///     ca_certificate: std::fs::read_to_string("ca.pem").expect("the CA"),
    ///     certificate: std::fs::read_to_string("server.pem").expect("the certificate"),
    ///     key: std::fs::read_to_string("server.key").expect("its key"),
    /// };
    /// if let Some(cluster) = RedisCluster::own_tls(&tls) {
    ///     assert!(cluster.url().starts_with("rediss+cluster://"));
    /// }
    /// ```
    pub fn own_tls(tls: &ServerTls) -> Option<RedisCluster> {
        Self::form(Flavor::Redis, Some(tls))
    }

    fn form(flavor: Flavor, tls: Option<&ServerTls>) -> Option<RedisCluster> {
        let cli = required_binary("redis-cli", &[], "apt-get install -y redis-tools")?;
        let node_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let mut nodes = Vec::new();
        let listen = tls.map_or(Listen::Plain, Listen::PlainAndTls);
        for _ in 0..6 {
            nodes.push(RedisServer::own_listening(flavor, &node_args, listen)?);
        }
        let cluster = RedisCluster {
            flavor,
            nodes,
            tls: tls.is_some(),
        };
        let mut create = std::process::Command::new(cli);
        create.args(["--cluster", "create"]);
        create.args(
            cluster
                .nodes
                .iter()
                .map(|node| format!("127.0.0.1:{}", node.port())),
        );
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let created = output_within(create, FORMING)
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster
            .wait_until_healthy()
            .unwrap_or_else(|e| panic!("the cluster did not form: {e}"));
        Some(cluster)
    }

    /// Waits until every node that answers says `cluster_state:ok` and every master has a
    /// replica online (a failover asked for before that never completes); the error says
    /// what was last seen.
    pub fn wait_until_healthy(&self) -> Result<(), String> {
        let log = self.nodes[0].folder().join("keeper.log");
        wait_until(FORMING, &log, || {
            let up: Vec<&RedisServer> = self
                .nodes
                .iter()
                .filter(|node| info(node.port(), "replication").is_some())
                .collect();
            let ok = up.iter().all(|node| {
                ask(node.port(), "CLUSTER INFO")
                    .is_some_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
            });
            let masters: Vec<String> = up
                .iter()
                .filter_map(|node| info(node.port(), "replication"))
                .filter(|info| info.lines().any(|l| l.trim() == "role:master"))
                .collect();
            ok && masters.len() == 3 && masters.iter().all(|info| info.contains("state=online"))
        })
    }

    /// `redis+cluster://127.0.0.1:P1,…` naming every node (`rediss+cluster://` and their
    /// TLS ports for [`own_tls`](Self::own_tls)).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                let port = if self.tls { node.tls_port() } else { None };
                format!("127.0.0.1:{}", port.unwrap_or(node.port()))
            })
            .collect();
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", hosts.join(","))
    }

    /// The flavor of its servers.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Its six servers.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node that serves `slot` as its master now, as the nodes that answer see it.
    pub fn master_of_slot(&self, slot: u16) -> Option<&RedisServer> {
        let port = self.nodes.iter().find_map(|node| {
            let nodes = ask(node.port(), "CLUSTER NODES")?;
            nodes
                .lines()
                .find_map(|line| master_port_serving(line, slot))
        })?;
        self.nodes.iter().find(|node| node.port() == port)
    }

    /// The node that replicates `master` now, if one does: asked again for up to 10 s, since a
    /// node on a loaded machine may not answer in time, or not have linked yet.
    pub fn replica_of(&self, master: &RedisServer) -> Option<&RedisServer> {
        let replicates = |node: &&RedisServer| {
            info(node.port(), "replication").is_some_and(|info| {
                info.lines().any(|l| l.trim() == "role:slave")
                    && info
                        .lines()
                        .any(|l| l.trim() == format!("master_port:{}", master.port()))
            })
        };
        let mut found = None;
        let log = master.folder().join("keeper.log");
        let _ = wait_until(Duration::from_secs(10), &log, || {
            found = self.nodes.iter().find(replicates);
            found.is_some()
        });
        found
    }

    /// Asks `replica` to take its master's place (`CLUSTER FAILOVER`, the manual failover
    /// that loses no write), and returns once it is a master.
    pub fn fail_over_to(&self, replica: &RedisServer) -> Result<(), String> {
        let answer = exchange(replica.port(), b"CLUSTER FAILOVER\r\n").unwrap_or_default();
        if !answer.starts_with(b"+OK") {
            return Err(format!(
                "CLUSTER FAILOVER answered {:?}",
                String::from_utf8_lossy(&answer)
            ));
        }
        let log = replica.folder().join("keeper.log");
        wait_until(FORMING, &log, || {
            info(replica.port(), "replication")
                .is_some_and(|info| info.lines().any(|l| l.trim() == "role:master"))
        })
    }
}

/// Runs `command` to its end, or kills it after `within`: `redis-cli --cluster create` waits
/// for every node to join, and a node that never does would hang the suite. Its output is a
/// few kilobytes, which the pipes hold until it ends.
fn output_within(
    mut command: std::process::Command,
    within: Duration,
) -> Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("did not run: {e}"))?;
    let started = std::time::Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let output = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!(
                "still running after {within:?}, killed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    child.wait_with_output().map_err(|e| e.to_string())
}

/// The port of the master in a line of `CLUSTER NODES` if it serves `slot`:
/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>`.
fn master_port_serving(line: &str, slot: u16) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields.get(2)?;
    if !flags.contains("master") || flags.contains("fail") {
        return None;
    }
    let serves = fields.iter().skip(8).any(|range| {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(start), Ok(end)) if (start..=end).contains(&slot))
    });
    if !serves {
        return None;
    }
    let address = fields.get(1)?.split('@').next()?;
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_line_names_its_slots() {
        let line = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 6000";
        assert_eq!(master_port_serving(line, 0), Some(30001));
        assert_eq!(master_port_serving(line, 6000), Some(30001));
        assert_eq!(master_port_serving(line, 5461), None);
        let replica = "f1 127.0.0.1:30004@40004 slave e7d1 0 0 1 connected";
        assert_eq!(master_port_serving(replica, 0), None);
    }
}
