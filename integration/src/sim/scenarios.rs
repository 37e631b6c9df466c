//! The built-in failure scenarios, each a function of its seed. They run
//! on the same cluster: three agents (4 cpus, 4 GiB each) under a durable
//! master with Mesos's timings, and two frameworks:
//!
//! - `batch` (index 0): 12 tasks of 1 cpu running 3 to 30 s, no
//!   checkpointing, no failover timeout (Mesos's defaults);
//! - `service` (index 1): 8 tasks of 1 cpu running 10 to 120 s,
//!   checkpointing, partition-aware, with a 60 s failover timeout;
//! - `records` (index 2): 6 tasks of 1 cpu running 5 to 60 s,
//!   checkpointing, not partition-aware, with a 60 s failover timeout.
//!
//! Every scenario ends with [`SimCluster::converge`]: faults healed, the
//! cluster must agree within an hour of virtual time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use strata_protocol::{Capability, FrameworkInfo};
use strata_runtime::transport::sim::LinkConfig;

use super::{ClusterSpec, Failure, NetworkKind, Report, SimCluster, Workload, WorkloadSpec};

/// A scenario: a seed in, a report or a failure out. Run it inside
/// [`super::run`].
pub type Scenario = fn(u64) -> Pin<Box<dyn Future<Output = Result<Report, Failure>>>>;

/// The longest a scenario waits for the cluster to settle.
pub const CONVERGENCE_LIMIT: Duration = Duration::from_secs(3600);

/// Every built-in scenario, by name.
pub const ALL: &[(&str, Scenario)] = &[
    ("agent_crash_restart", |seed| {
        Box::pin(agent_crash_restart(seed))
    }),
    ("agent_machine_lost", |seed| {
        Box::pin(agent_machine_lost(seed))
    }),
    ("agent_to_master_stall", |seed| {
        Box::pin(agent_to_master_stall(seed))
    }),
    ("master_agent_partition", |seed| {
        Box::pin(master_agent_partition(seed))
    }),
    ("scheduler_failover", |seed| {
        Box::pin(scheduler_failover(seed))
    }),
    ("scheduler_failover_too_late", |seed| {
        Box::pin(scheduler_failover_too_late(seed))
    }),
    ("master_agent_partition_quic", |seed| {
        Box::pin(master_agent_partition_quic(seed))
    }),
    ("status_update_storm", |seed| {
        Box::pin(status_update_storm(seed))
    }),
    ("master_crash_agent_straggler", |seed| {
        Box::pin(master_crash_agent_straggler(seed))
    }),
    ("master_crash_restart", |seed| {
        Box::pin(master_crash_restart(seed))
    }),
];

/// The framework index of `batch`.
pub const BATCH: usize = 0;
/// The framework index of `service`.
pub const SERVICE: usize = 1;

/// The cluster every built-in scenario starts from.
pub fn standard_cluster(seed: u64) -> SimCluster {
    standard_cluster_on(seed, NetworkKind::Frames)
}

/// The standard cluster on the given network.
pub fn standard_cluster_on(seed: u64, network: NetworkKind) -> SimCluster {
    let spec = ClusterSpec {
        network,
        ..ClusterSpec::new(3, "cpus:4;mem:4096")
    };
    let mut cluster = SimCluster::new(seed, spec);
    let batch = WorkloadSpec {
        seed,
        run: (Duration::from_secs(3), Duration::from_secs(30)),
        ..WorkloadSpec::new(12, "cpus:1;mem:256", Duration::from_secs(30))
    };
    cluster.add_framework(FrameworkInfo::new("batch", "sim"), Workload::factory(batch));
    let service = WorkloadSpec {
        seed: seed ^ 1,
        run: (Duration::from_secs(10), Duration::from_secs(120)),
        ..WorkloadSpec::new(8, "cpus:1;mem:256", Duration::from_secs(120))
    };
    let mut info = FrameworkInfo::new("service", "sim");
    info.checkpoint = true;
    info.failover_timeout = Duration::from_secs(60);
    info.capabilities.insert(Capability::PartitionAware);
    cluster.add_framework(info, Workload::factory(service));
    let records = WorkloadSpec {
        seed: seed ^ 2,
        run: (Duration::from_secs(5), Duration::from_secs(60)),
        ..WorkloadSpec::new(6, "cpus:1;mem:256", Duration::from_secs(60))
    };
    let mut info = FrameworkInfo::new("records", "sim");
    info.checkpoint = true;
    info.failover_timeout = Duration::from_secs(60);
    cluster.add_framework(info, Workload::factory(records));
    cluster
}

/// The standard cluster after running fault-free for a time drawn from
/// `low..=high`.
async fn running(seed: u64, low: Duration, high: Duration) -> SimCluster {
    running_on(seed, NetworkKind::Frames, low, high).await
}

/// [`running`] on the given network.
async fn running_on(seed: u64, network: NetworkKind, low: Duration, high: Duration) -> SimCluster {
    let mut cluster = standard_cluster_on(seed, network);
    let first = cluster.between(low, high);
    cluster.run_for(first).await;
    cluster
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// An agent crashes while tasks run and comes back after up to 90 s on
/// the same machine and disk: it recovers from its checkpoints, takes
/// back the service framework's tasks (which kept running, or ended
/// meanwhile and are reported so) and re-registers under its id; the
/// batch framework's tasks died with it and are reported lost.
pub async fn agent_crash_restart(seed: u64) -> Result<Report, Failure> {
    agent_down_and_back(seed, false).await
}

/// An agent's machine is lost with its disk while tasks run, and a new
/// agent starts there after up to 90 s: the old agent never returns, its
/// tasks are lost (unreachable for the partition-aware framework, which
/// learns they are gone by reconciliation), the new one gets a new id.
pub async fn agent_machine_lost(seed: u64) -> Result<Report, Failure> {
    agent_down_and_back(seed, true).await
}

/// A random agent crashes (with its machine if `machine`), then starts
/// again on its address after up to 90 s.
async fn agent_down_and_back(seed: u64, machine: bool) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(20)).await;
    let agent = cluster.random().below(3) as usize;
    if machine {
        cluster.crash_machine(agent);
    } else {
        cluster.crash_agent(agent);
    }
    let down = cluster.between(secs(1), secs(90));
    cluster.run_for(down).await;
    cluster.restart_agent(agent);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The master and one agent cannot reach each other for longer than the
/// master's ping timeout (5 pings of 15 s), then the network heals: the
/// agent is unreachable meanwhile, the partition-aware framework sees
/// its tasks UNREACHABLE and gets them back, the other sees them LOST.
pub async fn master_agent_partition(seed: u64) -> Result<Report, Failure> {
    partition_and_heal(seed, NetworkKind::Frames).await
}

/// A random agent and the master cut off from each other for 80 to 150 s
/// on `network`, then healed.
async fn partition_and_heal(seed: u64, network: NetworkKind) -> Result<Report, Failure> {
    let mut cluster = running_on(seed, network, secs(2), secs(20)).await;
    let agent = cluster.random().below(3) as usize;
    cluster.partition(cluster.master_addr(), cluster.agent_addr(agent));
    let cut = cluster.between(secs(80), secs(150));
    cluster.run_for(cut).await;
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The partition of [`master_agent_partition`] on the real QUIC transport
/// over simulated UDP: the connection's keep-alives stop, its idle timeout
/// ends it, the agent's and master's reconnection attempts fail until the
/// heal, then a new connection carries the agent's re-registration.
pub async fn master_agent_partition_quic(seed: u64) -> Result<Report, Failure> {
    partition_and_heal(seed, NetworkKind::Quic).await
}

/// Everything one agent sends to the master stalls for 20 s to 2 min
/// while the connection stays up (a gray failure: the agent hears the
/// master, the master hears nothing), then arrives at once, in order: the
/// master may give the agent up meanwhile and must take its late pongs,
/// updates and re-registration in their order without contradicting
/// what frameworks were told.
pub async fn agent_to_master_stall(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(20)).await;
    let agent = cluster.random().below(3) as usize;
    let (from, to) = (cluster.agent_addr(agent), cluster.master_addr());
    cluster.hold(from, to);
    let stall = cluster.between(secs(20), secs(120));
    cluster.run_for(stall).await;
    cluster.release(from, to);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The service framework's scheduler crashes and a new one takes over
/// with its id within the 60 s failover timeout: its tasks keep running.
pub async fn scheduler_failover(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(30)).await;
    cluster.crash_framework(SERVICE);
    // The master notices after the idle timeout; the failover timeout
    // counts from then.
    let down = cluster.between(secs(1), secs(55));
    cluster.run_for(down).await;
    cluster.restart_framework(SERVICE);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The service framework's scheduler comes back after its failover
/// timeout: the framework was removed, its tasks killed, and no agent or
/// master may still hold them.
pub async fn scheduler_failover_too_late(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(30)).await;
    cluster.crash_framework(SERVICE);
    let down = cluster.between(secs(70), secs(180));
    cluster.run_for(down).await;
    cluster.restart_framework(SERVICE);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The kinds of message a status update storm hits: updates on their way
/// from agent to master and master to framework, and their
/// acknowledgements on the way back.
pub const STATUS_UPDATE_KINDS: &[&str] = &[
    "StatusUpdate",
    "Update",
    "Acknowledge",
    "StatusUpdateAcknowledged",
];

/// For up to two minutes every link loses and duplicates 5 to 30% of the
/// status updates and acknowledgements (QUIC itself never loses or
/// duplicates a message on a live connection: this tests the protocol's
/// own recovery); agents resend, nothing is applied twice, no update is
/// skipped.
pub async fn status_update_storm(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(1), secs(10)).await;
    let drop = 0.05 + cluster.random().below(26) as f64 / 100.0;
    let duplicate = 0.05 + cluster.random().below(26) as f64 / 100.0;
    cluster.set_default_link(LinkConfig {
        drop,
        duplicate,
        kinds: Some(STATUS_UPDATE_KINDS),
        ..LinkConfig::default()
    });
    let storm = cluster.between(secs(20), secs(120));
    cluster.run_for(storm).await;
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The master and an agent crash together; the master restarts within
/// 15 s, the agent only after the master stopped waiting for it (10 min):
/// frameworks learn its tasks are lost (or unknown, if partition-aware)
/// by reconciliation, and when it returns with tasks it kept running,
/// those of the framework told LOST are killed, not brought back.
pub async fn master_crash_agent_straggler(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(30)).await;
    let agent = cluster.random().below(3) as usize;
    cluster.crash_master();
    cluster.crash_agent(agent);
    let down = cluster.between(secs(1), secs(15));
    cluster.run_for(down).await;
    cluster.restart_master();
    let away = cluster.between(secs(610), secs(900));
    cluster.run_for(away).await;
    cluster.restart_agent(agent);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The master crashes during the workload and restarts after up to 15 s
/// from its registry: agents re-register with their tasks, frameworks
/// re-subscribe and reconcile, nothing is lost.
pub async fn master_crash_restart(seed: u64) -> Result<Report, Failure> {
    let mut cluster = running(seed, secs(2), secs(30)).await;
    cluster.crash_master();
    let down = cluster.between(secs(1), secs(15));
    cluster.run_for(down).await;
    cluster.restart_master();
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}
