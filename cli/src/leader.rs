//! Where the master is: `HOST:PORT`, or whichever master leads in
//! ZooKeeper (`zk://HOST:PORT[,HOST:PORT...]/PATH`), followed as it
//! changes.

use std::net::SocketAddr;
use std::time::Duration;

use strata_master::MASTER_ID;
use strata_runtime::{Incarnation, Upid};
use strata_zk::{Detector, ZkUrl};

/// A `--master` flag's value.
#[derive(Debug, Clone)]
pub enum MasterAddress {
    At(SocketAddr),
    Zk(ZkUrl),
}

impl std::str::FromStr for MasterAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<MasterAddress, String> {
        if ZkUrl::is_zk(text) {
            return text
                .parse()
                .map(MasterAddress::Zk)
                .map_err(|e: strata_zk::ZkUrlError| e.to_string());
        }
        strata_runtime::upid::parse_socket_addr(text)
            .map(MasterAddress::At)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for MasterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterAddress::At(address) => write!(f, "{address}"),
            MasterAddress::Zk(url) => write!(f, "{url}"),
        }
    }
}

/// The leading master as it changes.
pub type Leader = tokio::sync::watch::Receiver<Option<Upid>>;

/// The master to talk to now, and with ZooKeeper the leader as it
/// changes; waits (up to `within`, forever without) for a master to lead.
pub async fn find(
    address: &MasterAddress,
    within: Option<Duration>,
) -> anyhow::Result<(Upid, Option<Leader>)> {
    let url = match address {
        MasterAddress::At(address) => {
            return Ok((Upid::new(MASTER_ID, *address, Incarnation::ANY)?, None));
        }
        MasterAddress::Zk(url) => url,
    };
    let mut leader = Detector::spawn_upids(
        strata_zk::election::connector(url, strata_zk::DEFAULT_SESSION_TIMEOUT),
        url.path(),
    );
    let wait = leader.wait_for(Option::is_some);
    let first = match within {
        Some(within) => tokio::time::timeout(within, wait)
            .await
            .map_err(|_| anyhow::anyhow!("no master leads in {url} (waited {within:?})"))?,
        None => wait.await,
    }
    .map_err(|_| anyhow::anyhow!("lost track of the leader in {url}"))?
    .clone();
    let first = first.ok_or_else(|| anyhow::anyhow!("no master leads in {url}"))?;
    Ok((first, Some(leader)))
}

/// The HTTP address of the master to ask now (the leader's, with
/// ZooKeeper), for commands that read the cluster once.
pub fn http_address(address: &MasterAddress) -> anyhow::Result<SocketAddr> {
    match address {
        MasterAddress::At(address) => Ok(*address),
        MasterAddress::Zk(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (master, _) = runtime.block_on(find(address, Some(Duration::from_secs(30))))?;
            Ok(master.addr())
        }
    }
}
