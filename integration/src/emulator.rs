//! Emulated agents, for runs at scale: the real agent (its core and its
//! shell, the same code as `strata agent`) on a containerizer that runs
//! each task for the time its [`crate::containers::RUN_MS_LABEL`] label
//! declares, with its checkpoints on a simulated disk, many agents to a
//! node, over real QUIC to a real master. Only the processes and the disk
//! are not real.

use std::path::PathBuf;
use std::time::Duration;

use strata_agent::{Agent, AgentConfig};
use strata_runtime::durable::{Disk, SimDisk};
use strata_runtime::{CertificateAuthority, Node, NodeConfig, Role, SpawnOptions, Upid};

use crate::containers::{SimHost, simulated};

/// Emulated agents on one node.
#[derive(Debug)]
pub struct EmulatedAgents {
    pub node: Node,
    /// Each agent's process id (`agent-N@…`).
    pub pids: Vec<Upid>,
}

/// The configuration of emulated agent `index` of `name`, following
/// `master`, offering `resources`: the real agent's, with a simulated
/// machine and disk of its own.
pub fn config(
    master: &Upid,
    name: &str,
    index: usize,
    resources: &str,
) -> anyhow::Result<AgentConfig> {
    let mut config = AgentConfig::new(
        master.clone(),
        format!("{name}-{index}"),
        resources.parse()?,
        Default::default(),
        (index as u64) << 8 ^ 0x5eed,
        simulated(
            SimHost::default(),
            PathBuf::from(format!("/emulated/{name}/{index}")),
        ),
    );
    config.disk = Disk::simulated(&SimDisk::default());
    // An agent's timers cost nothing on a machine of its own; 50,000 on
    // one thread took about a third of the benchmark's (a profile at
    // 50,000 agents: usage sampled every second and the master's silence
    // checked four times a second, for every agent). Emulated tasks use
    // nothing a sample would see, and an agent the master stopped pinging
    // registers again within 2 s of its limit rather than 250 ms.
    config.usage_interval = EMULATED_USAGE_INTERVAL;
    config.master_silence_check = EMULATED_SILENCE_CHECK;
    Ok(config)
}

/// How often an emulated agent samples its tasks' usage.
pub const EMULATED_USAGE_INTERVAL: Duration = Duration::from_secs(10);
/// How often an emulated agent checks whether its master went silent.
pub const EMULATED_SILENCE_CHECK: Duration = Duration::from_secs(2);

/// Starts `count` emulated agents of `master` on one node, whose
/// certificate (`name`, issued by `ca`) they share: a master takes up to
/// `max_agents_per_certificate` (1,000) agents on one certificate.
pub async fn emulate(
    ca: &CertificateAuthority,
    master: &Upid,
    name: &str,
    count: usize,
    resources: &str,
) -> anyhow::Result<EmulatedAgents> {
    emulate_following(ca, master, None, name, count, resources).await
}

/// [`emulate`], the agents following the leading master as `leader`
/// changes (found in ZooKeeper).
pub async fn emulate_following(
    ca: &CertificateAuthority,
    master: &Upid,
    leader: Option<tokio::sync::watch::Receiver<Option<Upid>>>,
    name: &str,
    count: usize,
    resources: &str,
) -> anyhow::Result<EmulatedAgents> {
    let material = ca.issue(Role::Agent, name)?;
    let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, material)).await?;
    let mut pids = Vec::with_capacity(count);
    for index in 0..count {
        let mut config = config(master, name, index, resources)?;
        config.leader = leader.clone();
        let pid = node.spawn(
            &format!("agent-{index}"),
            move || Agent::new(config.clone()),
            SpawnOptions::default(),
        )?;
        pids.push(pid);
    }
    Ok(EmulatedAgents { node, pids })
}
