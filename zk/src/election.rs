//! Leader election among masters, and finding the leader, in Apache
//! Mesos's layout: each contending master has an ephemeral sequential
//! `BASE/json.info_NNNNNNNNNN` node holding its [`MasterInfo`] as JSON;
//! the lowest sequence leads. Other names under `BASE` are ignored.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_runtime::Upid;
use tracing::{debug, info, warn};

use crate::{Changed, CreateMode, Session, SessionState, ZkError, ZkFuture, ZkUrl};

/// The prefix of a contender's node (Mesos's).
pub const CONTENDER_PREFIX: &str = "json.info_";

/// The largest `MasterInfo` read from a node; a larger one is ignored.
const MAX_INFO_BYTES: usize = 64 * 1024;

/// A master as Apache Mesos describes itself in ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub id: String,
    /// The IPv4 address as Mesos writes it (the address's bytes in
    /// network order read as a little-endian number); 0 for IPv6.
    pub ip: u32,
    pub port: u32,
    /// `master@IP:PORT`.
    pub pid: String,
    pub hostname: String,
    #[serde(default)]
    pub version: String,
    pub address: Address,
}

/// Where a master is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub hostname: String,
    pub ip: String,
    pub port: u32,
}

impl MasterInfo {
    /// The information the master at `pid` publishes.
    pub fn new(id: &str, pid: &Upid, hostname: &str) -> MasterInfo {
        let addr = pid.addr();
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
            std::net::IpAddr::V6(_) => 0,
        };
        MasterInfo {
            id: id.to_owned(),
            ip,
            port: u32::from(addr.port()),
            pid: format!("{}@{}", pid.id(), addr),
            hostname: hostname.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            address: Address {
                hostname: hostname.to_owned(),
                ip: addr.ip().to_string(),
                port: u32::from(addr.port()),
            },
        }
    }

    /// The master's process address.
    pub fn upid(&self) -> Option<Upid> {
        self.pid.parse().ok()
    }

    /// Where its HTTP API is (`ip:port`).
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.upid().map(|pid| pid.addr())
    }

    /// The JSON written into the contender's node.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A contender node's JSON; `None` when it is not a master's.
    pub fn from_json(bytes: &[u8]) -> Option<MasterInfo> {
        if bytes.len() > MAX_INFO_BYTES {
            return None;
        }
        let info: MasterInfo = serde_json::from_slice(bytes).ok()?;
        info.upid().is_some().then_some(info)
    }
}

/// The sequence number of a contender node's name.
fn sequence_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CONTENDER_PREFIX)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The leading contender's node name among `children`.
fn lowest(children: &[String]) -> Option<&str> {
    children
        .iter()
        .filter_map(|name| sequence_of(name).map(|sequence| (sequence, name.as_str())))
        .min()
        .map(|(_, name)| name)
}

/// The leading master under `base` now (`None` when none leads, or its
/// node does not hold a master's information), and a future that
/// resolves when that may have changed.
pub async fn leader(
    session: &dyn Session,
    base: &str,
) -> Result<(Option<MasterInfo>, Changed), ZkError> {
    loop {
        let (children, changed) = session.watch_children(base).await?;
        let Some(name) = lowest(&children) else {
            return Ok((None, changed));
        };
        match session.get(&format!("{base}/{name}")).await? {
            // Gone between the two reads: look again.
            None => continue,
            Some((data, _)) => {
                let info = MasterInfo::from_json(&data);
                if info.is_none() {
                    warn!(node = %name, "the leading contender's node holds no master information");
                }
                return Ok((info, changed));
            }
        }
    }
}

/// Every contender under `base` with its information, lowest (the
/// leader) first; nodes that hold none are left out.
pub async fn contenders(session: &dyn Session, base: &str) -> Result<Vec<MasterInfo>, ZkError> {
    let mut named: Vec<(u64, String)> = session
        .children(base)
        .await?
        .into_iter()
        .filter_map(|name| sequence_of(&name).map(|sequence| (sequence, name)))
        .collect();
    named.sort_unstable();
    let mut found = Vec::with_capacity(named.len());
    for (_, name) in named {
        if let Some((data, _)) = session.get(&format!("{base}/{name}")).await?
            && let Some(info) = MasterInfo::from_json(&data)
        {
            found.push(info);
        }
    }
    Ok(found)
}

/// Where a contender stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Leading,
    /// Another master leads (`None`: its node says nothing usable).
    Following(Option<MasterInfo>),
}

/// A master's candidacy: its node under the base path, for as long as its
/// session lives.
#[derive(Debug, Clone)]
pub struct Leadership {
    session: Arc<dyn Session>,
    base: String,
    node: String,
}

impl Leadership {
    /// Enters the contest under `base` (created when missing) with `info`,
    /// whose `id` must be unique to this candidacy: a node holding it
    /// already (made by an earlier attempt whose answer was lost) is this
    /// contender's, and no second one is made.
    pub async fn contend(
        session: Arc<dyn Session>,
        base: &str,
        info: &MasterInfo,
    ) -> Result<Leadership, ZkError> {
        crate::ensure_path(session.as_ref(), base).await?;
        for name in session.children(base).await? {
            if sequence_of(&name).is_none() {
                continue;
            }
            if let Some((data, _)) = session.get(&format!("{base}/{name}")).await?
                && MasterInfo::from_json(&data).is_some_and(|found| found.id == info.id)
            {
                info!(node = %name, "contending for leadership (with a node made before)");
                return Ok(Leadership {
                    session,
                    base: base.to_owned(),
                    node: name,
                });
            }
        }
        let created = session
            .create(
                &format!("{base}/{CONTENDER_PREFIX}"),
                info.to_json(),
                CreateMode::EphemeralSequential,
            )
            .await?;
        let node = created
            .rsplit('/')
            .next()
            .unwrap_or(created.as_str())
            .to_owned();
        info!(%node, "contending for leadership");
        Ok(Leadership {
            session,
            base: base.to_owned(),
            node,
        })
    }

    /// The session the candidacy lives in.
    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }

    /// This contender's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where this contender stands now, and a future that resolves when
    /// that may have changed. [`ZkError::SessionExpired`] once its node
    /// is gone.
    pub async fn standing(&self) -> Result<(Standing, Changed), ZkError> {
        loop {
            // One listing decides (the watch set with it covers what
            // changes after): a second could see this node lowest with no
            // watch left to say so.
            let (children, changed) = self.session.watch_children(&self.base).await?;
            if !children.contains(&self.node) {
                return Err(ZkError::SessionExpired);
            }
            let Some(lowest) = lowest(&children) else {
                return Err(ZkError::SessionExpired);
            };
            if lowest == self.node {
                return Ok((Standing::Leading, changed));
            }
            match self.session.get(&format!("{}/{lowest}", self.base)).await? {
                // Gone since the listing: its watch has fired; look again.
                None => continue,
                Some((data, _)) => {
                    let leader = MasterInfo::from_json(&data);
                    return Ok((Standing::Following(leader), changed));
                }
            }
        }
    }
}

/// Opens a new session (with retries left to the caller).
pub type Connect = Arc<dyn Fn() -> ZkFuture<Arc<dyn Session>> + Send + Sync>;

/// Opens sessions with the ensemble `url` names.
pub fn connector(url: &ZkUrl, timeout: Duration) -> Connect {
    let url = url.clone();
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move { crate::client::connect(&url, timeout).await })
    })
}

/// Finds the leading master and follows it as it changes, reconnecting
/// when its session ends; for agents, schedulers and the CLI.
#[derive(Debug)]
pub struct Detector;

/// The first wait before connecting again; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

impl Detector {
    /// Follows the leader under `base` in a task of its own: the
    /// receiver holds the leader as last seen (`None` until one is
    /// found), and the task ends when every receiver is dropped.
    pub fn spawn(connect: Connect, base: &str) -> tokio::sync::watch::Receiver<Option<MasterInfo>> {
        let (sender, receiver) = tokio::sync::watch::channel(None);
        let base = base.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                () = follow(connect, &base, &sender) => {}
                () = sender.closed() => {}
            }
        });
        receiver
    }
}

impl Detector {
    /// [`Detector::spawn`], as the leading master's process address.
    pub fn spawn_upids(connect: Connect, base: &str) -> tokio::sync::watch::Receiver<Option<Upid>> {
        let mut found = Detector::spawn(connect, base);
        let (sender, leader) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            loop {
                let now = found
                    .borrow_and_update()
                    .as_ref()
                    .and_then(MasterInfo::upid);
                sender.send_if_modified(|known| {
                    let changed = *known != now;
                    *known = now;
                    changed
                });
                tokio::select! {
                    changed = found.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
            }
        });
        leader
    }
}

/// A new session, opened again and again (waiting 100 ms, doubling up to
/// 2 s) until ZooKeeper is reached.
pub async fn open_session(connect: &Connect) -> Arc<dyn Session> {
    let mut retry = FIRST_RETRY;
    loop {
        match connect().await {
            Ok(session) => return session,
            Err(cause) => {
                warn!(%cause, "cannot reach ZooKeeper; trying again");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

async fn follow(
    connect: Connect,
    base: &str,
    sender: &tokio::sync::watch::Sender<Option<MasterInfo>>,
) {
    loop {
        let session = open_session(&connect).await;
        let mut state = session.state();
        loop {
            match leader(session.as_ref(), base).await {
                Ok((found, changed)) => {
                    sender.send_if_modified(|known| {
                        if *known == found {
                            return false;
                        }
                        match &found {
                            Some(info) => info!(leader = %info.pid, "the leading master"),
                            None => info!("no master leads"),
                        }
                        *known = found;
                        true
                    });
                    changed.await;
                }
                Err(ZkError::SessionExpired) => break,
                Err(ZkError::NoNode) => {
                    // No master contended yet: look again shortly.
                    sender.send_if_modified(|known| known.take().is_some());
                    tokio::time::sleep(MAX_RETRY).await;
                }
                Err(cause) => {
                    debug!(%cause, "cannot read the leader; waiting for ZooKeeper");
                    let reconnected = tokio::time::timeout(MAX_RETRY, state.changed()).await;
                    if matches!(reconnected, Ok(Err(_))) || *state.borrow() == SessionState::Expired
                    {
                        break;
                    }
                }
            }
            if *state.borrow() == SessionState::Expired {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Ensemble;

    fn info(port: u16) -> MasterInfo {
        let pid: Upid = format!("master@127.0.0.1:{port}").parse().unwrap();
        MasterInfo::new(&format!("m{port}"), &pid, "localhost")
    }

    #[test]
    fn master_info_is_written_as_mesos_writes_it() {
        let json: serde_json::Value = serde_json::from_slice(&info(5050).to_json()).unwrap();
        assert_eq!(json["ip"], 16_777_343, "127.0.0.1 in network order");
        assert_eq!(json["pid"], "master@127.0.0.1:5050");
        assert_eq!(json["address"]["ip"], "127.0.0.1");
        assert_eq!(json["address"]["port"], 5050);
        assert_eq!(
            MasterInfo::from_json(&info(5050).to_json()),
            Some(info(5050))
        );
        assert_eq!(MasterInfo::from_json(b"{}"), None);
        assert_eq!(MasterInfo::from_json(&vec![b' '; 100_000]), None);
        assert_eq!(sequence_of("json.info_0000000012"), Some(12));
        assert_eq!(sequence_of("json.info_"), None);
        assert_eq!(sequence_of("json.info_12a"), None);
        assert_eq!(sequence_of("log_replicas"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lowest_contender_leads_and_followers_see_it_change() {
        let ensemble = Ensemble::new();
        let timeout = Duration::from_secs(10);
        let (a, b) = (ensemble.session(timeout), ensemble.session(timeout));
        let first = Leadership::contend(a.clone(), "/strata/ha", &info(1))
            .await
            .unwrap();
        let second = Leadership::contend(b.clone(), "/strata/ha", &info(2))
            .await
            .unwrap();
        assert_eq!(first.standing().await.unwrap().0, Standing::Leading);
        let (standing, changed) = second.standing().await.unwrap();
        assert_eq!(standing, Standing::Following(Some(info(1))));

        let for_detector = ensemble.clone();
        let connect: Connect = Arc::new(move || {
            let session: Arc<dyn Session> = for_detector.session(timeout);
            Box::pin(std::future::ready(Ok(session)))
        });
        let mut leader = Detector::spawn(connect, "/strata/ha");
        leader
            .wait_for(|known| *known == Some(info(1)))
            .await
            .unwrap();

        ensemble.expire(a.id());
        changed.await;
        assert_eq!(second.standing().await.unwrap().0, Standing::Leading);
        assert_eq!(first.standing().await.err(), Some(ZkError::SessionExpired));
        leader
            .wait_for(|known| *known == Some(info(2)))
            .await
            .unwrap();

        // A node that is not a master's under the path is ignored; one
        // with a bad name never leads.
        let c = ensemble.session(timeout);
        c.create("/strata/ha/json.info_x", vec![], CreateMode::Persistent)
            .await
            .unwrap();
        assert_eq!(second.standing().await.unwrap().0, Standing::Leading);
        ensemble.expire(b.id());
        leader.wait_for(Option::is_none).await.unwrap();
    }
}
