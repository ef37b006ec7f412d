//! The store's connection: to one server (a `ConnectionManager`, which reconnects by itself)
//! or to a Redis Cluster (the `redis` crate's cluster client, which follows the slots as they
//! move and reconnects to a promoted replica). Both send a command where its key lives; the
//! store's scripts and pipelines touch one bucket each (`mod.rs`), so one slot.
//!
//! What differs is the walk over the whole store (`scan.rs`): one server is one `SCAN`; a
//! cluster is a `SCAN` on every master, and the reads of a page grouped by bucket, since a
//! cluster refuses a pipeline across slots.
//!
//! ```text
//! redis://host:port/db                    one server (with its replicas)
//! redis+cluster://h1:p1,h2:p2,…           a cluster, found from any of the nodes named
//! rediss://… and rediss+cluster://…       the same over TLS (feature `tls`)
//! ```

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::failed;
use crate::store::tls::TlsSettings;
use crate::Error;

/// How a user gives a Redis store the CA that signed its server's certificate.
#[cfg(feature = "tls")]
const GIVE_CA: &str = "give the CA that signed it with `RedisStoreBuilder::tls_root_certificate` \
     (or `?tls_ca_cert=/path/ca.pem` in a URL for `store::open`)";

/// Where a store's keys live, as its URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `redis://…` or `rediss://…`: one server.
    Single(String),
    /// `redis+cluster://h1:p1,h2:p2/` (or `rediss+cluster://`): the URLs of the nodes to
    /// start from, each `redis://[user:password@]h:p`.
    Cluster(Vec<String>),
}

impl Target {
    /// Whether the URL asks for TLS (`rediss://`, `rediss+cluster://`).
    fn is_tls(&self) -> bool {
        match self {
            Target::Single(url) => url.starts_with("rediss:"),
            Target::Cluster(nodes) => nodes.iter().any(|node| node.starts_with("rediss:")),
        }
    }

    /// The target a URL names: a cluster for `redis+cluster://` and `rediss+cluster://`, with
    /// the user and password, if any, given to every node.
    pub(super) fn of(url: &str) -> Result<Target, Error> {
        let Some((scheme, rest)) = url.split_once("+cluster://") else {
            return Ok(Target::Single(url.to_owned()));
        };
        let (authority, query) = match rest.split_once('/') {
            Some((authority, path)) => {
                let query = path.split_once('?').map_or("", |(_, query)| query);
                if !path.is_empty() && !path.starts_with('?') && path != "0" {
                    let problem =
                        format!("{url:?}: a cluster has one database, 0; give no database number");
                    return Err(Error::store("redis", None, problem));
                }
                (authority, query)
            }
            None => rest.split_once('?').unwrap_or((rest, "")),
        };
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("/?{query}")
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("{scheme}://{user}{host}{query}"))
            .collect();
        if nodes.is_empty() {
            let problem = format!("{url:?} names no node: redis+cluster://host:port,host:port");
            return Err(Error::store("redis", None, problem));
        }
        Ok(Target::Cluster(nodes))
    }
}

/// The `redis` crate's certificates for `target`: `Some` when the builder was given a CA or a
/// client certificate, which needs a TLS URL; `None` for a plain URL, and for a TLS URL to
/// check with the platform's roots (the `redis` crate loads them itself). A TLS URL in a build
/// without the `tls` feature is an error naming it.
#[cfg(feature = "tls")]
fn certificates(
    target: &Target,
    tls: &TlsSettings,
) -> Result<Option<redis::TlsCertificates>, Error> {
    if !target.is_tls() {
        return plain(tls).map(|()| None);
    }
    // The `redis` crate builds its rustls configuration with the process's default provider;
    // a program that compiles rustls's aws-lc-rs too (through another dependency) has none
    // unless it installs one, and the crate would panic: ring, which idem compiles, is
    // installed then. An error means a default is in place already, which is kept.
    let _ = crate::store::tls::ring_provider().install_default();
    if !tls.is_set() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls: tls.client.as_ref().map(|identity| redis::ClientTlsConfig {
            client_cert: identity.certificate_chain.clone(),
            client_key: identity.key.clone(),
        }),
        root_cert: tls.root_certificates.clone(),
    }))
}

#[cfg(not(feature = "tls"))]
fn certificates(
    target: &Target,
    tls: &TlsSettings,
) -> Result<Option<std::convert::Infallible>, Error> {
    if target.is_tls() {
        return Err(crate::store::tls::without_feature(
            "redis",
            "a rediss:// URL",
        ));
    }
    plain(tls).map(|()| None)
}

/// A plain URL is fine unless the builder was given certificates: they would go unused.
fn plain(tls: &TlsSettings) -> Result<(), Error> {
    if tls.is_set() {
        return Err(Error::store(
            "redis",
            None,
            "a TLS certificate was given for a plain redis:// URL: connect with rediss:// (or \
             rediss+cluster://) to use TLS",
        ));
    }
    Ok(())
}

/// A failure to make the client or to connect: a certificate refused on either side is
/// said in words that tell what to do.
fn tls_failed(error: redis::RedisError) -> Error {
    #[cfg(feature = "tls")]
    if let Some(said) = crate::store::tls::explained(&error, GIVE_CA) {
        return Error::store("redis", None, said);
    }
    failed(None)(error)
}

/// The `redis+cluster://` URL of the cluster that `nodes` (`host:port`, or
/// `redis://[user:password@]host:port/` URLs) belong to: `rediss+cluster://` if any is
/// `rediss://`, with the first user and password given.
pub(super) fn cluster_url<N: AsRef<str>>(nodes: impl IntoIterator<Item = N>) -> String {
    let (mut scheme, mut user, mut hosts) = ("redis", None, Vec::new());
    for node in nodes {
        let node = node.as_ref().trim();
        let rest = if let Some(rest) = node.strip_prefix("rediss://") {
            scheme = "rediss";
            rest
        } else {
            node.strip_prefix("redis://").unwrap_or(node)
        };
        let rest = rest.split(['/', '?']).next().unwrap_or_default();
        let host = match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                user.get_or_insert_with(|| credentials.to_owned());
                host
            }
            None => rest,
        };
        hosts.push(host.to_owned());
    }
    let user = user.map(|user| format!("{user}@")).unwrap_or_default();
    format!("{scheme}+cluster://{user}{}", hosts.join(","))
}

/// The route of a command to the node at `host:port`.
fn to_node(host: &str, port: u16) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    }
}

/// A connection to one server or to a cluster; cheap to clone (the clones share it).
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Connects to `target`. Operations time out after `response`; a dropped connection is
    /// re-made by the next call (one server), or by the cluster client as it finds where the
    /// slots went (a cluster).
    /// `tls` is what the builder was told to trust and present; it needs a TLS URL.
    pub(super) async fn open(
        target: &Target,
        response: Duration,
        tls: &TlsSettings,
    ) -> Result<Connection, Error> {
        let certificates = certificates(target, tls)?;
        match target {
            Target::Single(url) => {
                let client = match certificates {
                    #[cfg(feature = "tls")]
                    Some(certificates) => redis::Client::build_with_tls(url.as_str(), certificates)
                        .map_err(tls_failed)?,
                    _ => redis::Client::open(url.as_str()).map_err(failed(None))?,
                };
                // A call that meets a dropped connection fails fast with a store error (the
                // caller retries the call, not idem); the next one reconnects. The client's
                // own reconnect backoff multiplies its delay by `factor` each time, from one
                // second: kept short.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(response)
                    .set_factor(2)
                    .set_max_delay(200)
                    .set_number_of_retries(1);
                let connection = client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(tls_failed)?;
                Ok(Connection::Single(connection))
            }
            Target::Cluster(nodes) => {
                // The client re-sends a command that met a moved slot or a lost node, with a
                // backoff, until the slot's new master answers: a failover (3–5 s at
                // `cluster-node-timeout 2000`) is waited out within the response timeout.
                let builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(response)
                    .retries(6)
                    .min_retry_wait(50)
                    .max_retry_wait(1000);
                // The nodes found from the first ones are reached with the same certificates.
                #[cfg(feature = "tls")]
                let builder = match certificates {
                    Some(certificates) => builder.certs(certificates),
                    None => builder,
                };
                let client = builder.build().map_err(tls_failed)?;
                let connection = client.get_async_connection().await.map_err(tls_failed)?;
                Ok(Connection::Cluster(connection))
            }
        }
    }

    /// Whether the keys live on a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// The masters to walk for the whole store: the one server, or every master of the
    /// cluster (`CLUSTER SLOTS`).
    pub(super) async fn masters(&self) -> Result<Vec<Master>, Error> {
        let Connection::Cluster(cluster) = self else {
            return Ok(vec![Master::TheServer]);
        };
        let mut cluster = cluster.clone();
        let slots: Value = cluster
            .route_command(
                &redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(failed(None))?;
        let mut masters = masters_in(slots).map_err(|problem| {
            Error::store("redis", None, format!("CLUSTER SLOTS answered {problem}"))
        })?;
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// Sends `pipe` (of commands with no key, or keys on `master`) to `master`; the server's
    /// errors come back as they are.
    pub(super) async fn pipeline_on(
        &self,
        master: &Master,
        pipe: &Pipeline,
    ) -> redis::RedisResult<Vec<Value>> {
        match (self, master) {
            (Connection::Cluster(cluster), Master::At { host, port }) => {
                let route = to_node(host, *port);
                let mut cluster = cluster.clone();
                cluster.route_pipeline(pipe, 0, pipe.len(), route).await
            }
            _ => pipe.query_async(&mut self.clone()).await,
        }
    }

    /// Sends `command` to `master`.
    pub(super) async fn on(&self, master: &Master, command: &Cmd) -> Result<Value, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(command.clone());
        let mut answers = self
            .pipeline_on(master, &pipe)
            .await
            .map_err(failed(None))?;
        answers
            .pop()
            .ok_or_else(|| Error::store("redis", None, "a command got no answer"))
    }
}

/// A master of the store's keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Master {
    /// The one server of a store that is not on a cluster.
    TheServer,
    /// A cluster's master, at its address.
    At { host: String, port: u16 },
}

/// The masters named in an answer of `CLUSTER SLOTS`: `[[start, end, [host, port, id, …],
/// replicas…], …]`.
fn masters_in(slots: Value) -> Result<Vec<Master>, String> {
    let Value::Array(ranges) = slots else {
        return Err(format!("{slots:?}"));
    };
    ranges
        .into_iter()
        .map(|range| {
            let Value::Array(fields) = range else {
                return Err(format!("a range {range:?}"));
            };
            let Some(Value::Array(master)) = fields.into_iter().nth(2) else {
                return Err("a range with no master".to_owned());
            };
            let mut master = master.into_iter();
            let host = match master.next() {
                Some(Value::BulkString(bytes)) => {
                    String::from_utf8(bytes).map_err(|e| e.to_string())?
                }
                Some(Value::SimpleString(text)) => text,
                other => return Err(format!("a host {other:?}")),
            };
            let port = match master.next() {
                Some(Value::Int(port)) => u16::try_from(port).map_err(|e| e.to_string())?,
                other => return Err(format!("a port {other:?}")),
            };
            Ok(Master::At { host, port })
        })
        .collect()
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_nodes() {
        assert_eq!(
            Target::of("redis://h:1/2").expect("single"),
            Target::Single("redis://h:1/2".to_owned())
        );
        assert_eq!(
            Target::of("redis+cluster://a:1,b:2").expect("cluster"),
            Target::Cluster(vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()])
        );
        assert_eq!(
            Target::of("rediss+cluster://u:p@a:1,b:2/?protocol=3").expect("cluster"),
            Target::Cluster(vec![
                "rediss://u:p@a:1/?protocol=3".to_owned(),
                "rediss://u:p@b:2/?protocol=3".to_owned()
            ])
        );
        assert!(Target::of("redis+cluster://").is_err());
        assert_eq!(
            cluster_url(["redis://u:p@a:1/", "u:p@b:2", "c:3"]),
            "redis+cluster://u:p@a:1,b:2,c:3"
        );
        assert_eq!(
            cluster_url(["rediss://a:1", "b:2"]),
            "rediss+cluster://a:1,b:2"
        );
        assert!(Target::of("redis+cluster://a:1/3").is_err());
    }
}
