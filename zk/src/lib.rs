//! Apache ZooKeeper, as Strata's masters and their followers use it.
//!
//! Masters started with `--zk zk://HOST:PORT[,HOST:PORT...]/PATH` contend
//! for leadership the way Apache Mesos's do ([`election`]): each creates an
//! ephemeral sequential `PATH/json.info_NNNNNNNNNN` node holding its
//! `MasterInfo` in Mesos's JSON ([`MasterInfo`]), and the lowest sequence
//! leads, so tools that find a Mesos leader in ZooKeeper find Strata's.
//! Agents, schedulers and the CLI find the leader the same way
//! ([`election::Detector`]). The leading master keeps its registry under
//! `PATH/registry` (see the master crate's `registry` module).
//!
//! Everything goes through [`Session`], one ZooKeeper session with the few
//! operations Strata needs; [`client::connect`] is the real one (the
//! `zookeeper-client` crate) and [`memory::Ensemble`] an in-memory
//! ensemble with sessions, ephemeral sequential nodes, watches, versions,
//! expiry and lost quorums, for tests and the simulation.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

pub mod client;
pub mod election;
pub mod memory;
pub mod server;

pub use election::{Detector, Leadership, MasterInfo};

/// ZooKeeper's default largest node (jute.maxbuffer is 1 MiB); Strata
/// keeps every node it writes, and every multi-operation, well below.
pub const MAX_NODE_BYTES: usize = 1 << 20;

/// The default session timeout (Mesos's `--zk_session_timeout`).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the ZooKeeper ensemble is and the path under it:
/// `zk://host1:2181,host2:2181/strata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    servers: Vec<String>,
    path: String,
}

/// Why a `zk://` address is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not a ZooKeeper address (zk://HOST:PORT[,HOST:PORT...]/PATH): {reason}")]
pub struct ZkUrlError {
    url: String,
    reason: String,
}

impl ZkUrl {
    /// The servers, `host:port` each.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The path under which masters contend (no trailing slash).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The servers as ZooKeeper's connect string.
    pub fn connect_string(&self) -> String {
        self.servers.join(",")
    }

    /// Whether `text` is meant as a ZooKeeper address (starts `zk://`).
    pub fn is_zk(text: &str) -> bool {
        text.starts_with("zk://")
    }
}

impl FromStr for ZkUrl {
    type Err = ZkUrlError;

    fn from_str(text: &str) -> Result<ZkUrl, ZkUrlError> {
        let error = |reason: &str| ZkUrlError {
            url: text.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix("zk://")
            .ok_or_else(|| error("it must start with zk://"))?;
        let (servers, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => return Err(error("it names no path (zk://HOST:PORT/PATH)")),
        };
        if servers.contains('@') {
            return Err(error("credentials in the address are not supported"));
        }
        let servers: Vec<String> = servers.split(',').map(str::to_owned).collect();
        for server in &servers {
            let Some((host, port)) = server.rsplit_once(':') else {
                return Err(error(&format!("server {server:?} names no port")));
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
            if !host_ok {
                return Err(error(&format!("server {server:?} names no host")));
            }
            if port.parse::<u16>().map_or(true, |port| port == 0) {
                return Err(error(&format!("server {server:?} has no valid port")));
            }
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(error("the path must not be the root"));
        }
        let valid_segment = |segment: &str| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !path[1..].split('/').all(valid_segment) {
            return Err(error(
                "path segments are letters, digits, '-', '_' and '.' (not '.' or '..')",
            ));
        }
        Ok(ZkUrl {
            servers,
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.servers.join(","), self.path)
    }
}

/// What a ZooKeeper operation failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZkError {
    #[error("no such node")]
    NoNode,
    #[error("the node exists already")]
    NodeExists,
    #[error("the node has another version than expected")]
    BadVersion,
    #[error("the node has children")]
    NotEmpty,
    /// The session is over: its ephemeral nodes are gone.
    #[error("the ZooKeeper session expired")]
    SessionExpired,
    /// Not connected now; the session may still be alive.
    #[error("not connected to ZooKeeper")]
    ConnectionLoss,
    #[error("ZooKeeper: {0}")]
    Other(String),
}

/// How a node is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    /// Gone with the session that made it; a 10-digit sequence number is
    /// appended to its name.
    EphemeralSequential,
}

/// One operation of an all-or-nothing [`Session::multi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Fails the whole unless the node has `version`.
    Check {
        path: String,
        version: i32,
    },
    Create {
        path: String,
        data: Vec<u8>,
    },
    /// `version: None` writes whatever version the node has.
    Set {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
}

impl Op {
    /// About how many bytes the operation takes in a request.
    pub fn size(&self) -> usize {
        match self {
            Op::Check { path, .. } | Op::Delete { path, .. } => path.len() + 16,
            Op::Create { path, data } | Op::Set { path, data, .. } => path.len() + data.len() + 32,
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected to a server of a quorum.
    Connected,
    /// Not connected now; the session lives on until the ensemble has not
    /// heard from it for its timeout.
    Disconnected,
    /// Over: its ephemeral nodes are gone; a new session is needed.
    Expired,
}

/// A boxed future of a ZooKeeper operation.
pub type ZkFuture<T> = Pin<Box<dyn Future<Output = Result<T, ZkError>> + Send + 'static>>;

/// Resolves once what was watched changed (or the session ended).
pub type Changed = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One ZooKeeper session: the operations Strata uses. Paths are absolute.
pub trait Session: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a node; the path created (with its sequence number, for a
    /// sequential node).
    fn create(&self, path: &str, data: Vec<u8>, mode: CreateMode) -> ZkFuture<String>;

    /// A node's data and version; `None` when there is no such node.
    fn get(&self, path: &str) -> ZkFuture<Option<(Vec<u8>, i32)>>;

    /// A node's children's names.
    fn children(&self, path: &str) -> ZkFuture<Vec<String>>;

    /// A node's children's names, and a future that resolves once they
    /// change, the node goes or the session ends.
    fn watch_children(&self, path: &str) -> ZkFuture<(Vec<String>, Changed)>;

    /// Carries out `ops` all or none.
    fn multi(&self, ops: Vec<Op>) -> ZkFuture<()>;

    /// Where the session stands, as it changes.
    fn state(&self) -> tokio::sync::watch::Receiver<SessionState>;

    /// The session timeout the ensemble granted.
    fn timeout(&self) -> Duration;
}

/// Creates `path` and its missing ancestors as persistent nodes.
pub async fn ensure_path(session: &dyn Session, path: &str) -> Result<(), ZkError> {
    let mut at = String::new();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        at.push('/');
        at.push_str(segment);
        match session
            .create(&at, Vec::new(), CreateMode::Persistent)
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_addresses_parse_and_bad_ones_say_why() {
        let url: ZkUrl = "zk://10.0.0.1:2181,zk2:2182/strata/prod/".parse().unwrap();
        assert_eq!(url.servers(), ["10.0.0.1:2181", "zk2:2182"]);
        assert_eq!(url.path(), "/strata/prod");
        assert_eq!(url.connect_string(), "10.0.0.1:2181,zk2:2182");
        assert_eq!(url.to_string(), "zk://10.0.0.1:2181,zk2:2182/strata/prod");
        for (bad, why) in [
            ("http://h:1/x", "zk://"),
            ("zk://h:2181", "no path"),
            ("zk://h:2181/", "root"),
            ("zk://h/x", "no port"),
            ("zk://:2181/x", "no host"),
            ("zk://h:0/x", "valid port"),
            ("zk://h:99999/x", "valid port"),
            ("zk://u:p@h:1/x", "credentials"),
            ("zk://h:1/a/../b", "segments"),
            ("zk://h:1/a//b", "segments"),
            ("zk://h:1/a b", "segments"),
        ] {
            let error = bad.parse::<ZkUrl>().unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
