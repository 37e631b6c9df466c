//! The built-in failure scenarios, each a function of its seed. They run
//! on the same cluster: three agents (4 cpus, 4 GiB each) under a durable
//! master with Mesos's timings, and three frameworks:
//!
//! - `batch` (index 0): 12 tasks of 1 cpu running 3 to 30 s, no
//!   checkpointing, no failover timeout (Mesos's defaults);
//! - `service` (index 1): 8 tasks of 1 cpu running 10 to 120 s,
//!   checkpointing, partition-aware, with a 60 s failover timeout;
//! - `records` (index 2): 6 tasks of 1 cpu running 5 to 60 s,
//!   checkpointing, not partition-aware, with a 60 s failover timeout.
//!
//! Most inject faults (crashes, partitions, stalls, lossy links); one,
//! [`stolen_agent_certificate`], is an attack: an [`Intruder`] holding an
//! agent certificate sends the agents and the master forged messages, as
//! `master` and as itself, and must achieve nothing: no agent obeys it
//! (what it sends as `master` the runtime drops, counted as
//! impersonations), the master binds it no real agent's id, and every
//! task of the workload ends FINISHED.
//!
//! Every scenario ends with [`SimCluster::converge`]: faults healed, the
//! cluster must agree within an hour of virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use strata_master::MASTER_ID;
use strata_protocol::{
    AgentId, AgentInfo, Capability, CommandInfo, FrameworkId, FrameworkInfo, Reason, Resources,
    TaskId, TaskInfo, TaskKind, TaskState, ToAgent, ToMaster,
};
use strata_runtime::transport::sim::LinkConfig;
use strata_runtime::{Inbox, Received, Role};

use super::{
    ClusterSpec, Failure, Intruder, NetworkKind, RUN_MS_LABEL, Report, SimCluster, Workload,
    WorkloadSpec,
};

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
    ("stolen_agent_certificate", |seed| {
        Box::pin(stolen_agent_certificate(seed))
    }),
    ("a_thousand_agents", |seed| {
        Box::pin(a_thousand_agents(seed))
    }),
    ("leader_crash", |seed| Box::pin(leader_crash(seed))),
    ("leader_cut_off_from_zookeeper", |seed| {
        Box::pin(leader_cut_off_from_zookeeper(seed))
    }),
    ("zookeeper_quorum_lost", |seed| {
        Box::pin(zookeeper_quorum_lost(seed))
    }),
    ("leadership_flaps", |seed| Box::pin(leadership_flaps(seed))),
    ("memory_limits", |seed| Box::pin(memory_limits(seed))),
];

/// The highly available cluster with its workload running for a while.
async fn highly_available_running(seed: u64) -> SimCluster {
    let mut cluster = highly_available_cluster(seed);
    let first = cluster.between(secs(2), secs(30));
    cluster.run_for(first).await;
    cluster
}

/// Three masters in ZooKeeper; the leader crashes while tasks run: once
/// ZooKeeper expires its session another master leads with a later
/// epoch, agents and frameworks follow it, and the crashed one comes back
/// as a standby. At most one master acts in an epoch throughout.
pub async fn leader_crash(seed: u64) -> Result<Report, Failure> {
    let mut cluster = highly_available_running(seed).await;
    cluster.crash_master();
    let down = cluster.between(secs(1), secs(40));
    cluster.run_for(down).await;
    cluster.restart_master();
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// The leader is cut off from ZooKeeper but not from agents or
/// frameworks, for 1 s to a minute (its session expires after 10 s): it
/// must stop acting before another master leads, then rejoin as a
/// standby; if the cut is short, it leads on.
pub async fn leader_cut_off_from_zookeeper(seed: u64) -> Result<Report, Failure> {
    let mut cluster = highly_available_running(seed).await;
    let leader = cluster.leader_index();
    cluster.zk_partition_master(leader, true);
    let cut = cluster.between(secs(1), secs(60));
    cluster.run_for(cut).await;
    cluster.zk_partition_master(leader, false);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// ZooKeeper loses its quorum for 1 s to 2 min: no master leads
/// meanwhile (tasks keep running on the agents), and leadership returns
/// with the quorum.
pub async fn zookeeper_quorum_lost(seed: u64) -> Result<Report, Failure> {
    let mut cluster = highly_available_running(seed).await;
    cluster.zk_quorum_lost(true);
    let lost = cluster.between(secs(1), secs(120));
    cluster.run_for(lost).await;
    cluster.zk_quorum_lost(false);
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// Leadership changes again and again: three to six times, the leader
/// crashes or is cut off from ZooKeeper, for a random while, and comes
/// back; the cluster must still agree at the end.
pub async fn leadership_flaps(seed: u64) -> Result<Report, Failure> {
    let mut cluster = highly_available_running(seed).await;
    let rounds = 3 + cluster.random().below(4);
    for _ in 0..rounds {
        let leader = cluster.leader_index();
        let crash = cluster.random().below(2) == 0;
        if crash {
            cluster.crash_master_at(leader);
        } else {
            cluster.zk_partition_master(leader, true);
        }
        let away = cluster.between(secs(1), secs(30));
        cluster.run_for(away).await;
        if crash {
            cluster.restart_master_at(leader);
        } else {
            cluster.zk_partition_master(leader, false);
        }
        let between = cluster.between(secs(1), secs(20));
        cluster.run_for(between).await;
    }
    cluster.converge(CONVERGENCE_LIMIT).await;
    cluster.finish()
}

/// How many tasks the `hogs` framework of [`memory_limits`] launches.
pub const HOGS: usize = 6;

/// Beside the standard workload, a checkpointing framework `hogs` runs
/// tasks that take more memory than they asked for: the kernel (the
/// simulated machine) kills each half way through its run. An agent
/// crashes meanwhile and comes back after up to a minute, so some hogs
/// are killed while their agent is down and learnt of from the machine
/// when it recovers. Every hog must end TASK_FAILED with
/// REASON_CONTAINER_LIMITATION_MEMORY, and no other task with that
/// reason.
pub async fn memory_limits(seed: u64) -> Result<Report, Failure> {
    let mut cluster = standard_cluster(seed);
    let hogs = WorkloadSpec {
        seed: seed ^ 3,
        run: (secs(10), secs(60)),
        labels: BTreeMap::from([(super::MEM_MB_LABEL.to_owned(), "512".to_owned())]),
        ..WorkloadSpec::new(HOGS, "cpus:0.5;mem:128", secs(60))
    };
    let mut info = FrameworkInfo::new("hogs", "sim");
    info.checkpoint = true;
    info.failover_timeout = secs(60);
    cluster.add_framework(info, Workload::factory(hogs));
    let first = cluster.between(secs(2), secs(20));
    cluster.run_for(first).await;
    let agent = cluster.random().below(3) as usize;
    cluster.crash_agent(agent);
    let down = cluster.between(secs(1), secs(60));
    cluster.run_for(down).await;
    cluster.restart_agent(agent);
    cluster.converge(CONVERGENCE_LIMIT).await;
    // Until every hog has ended (each is killed half way through a run
    // of at most a minute, once offers let it start).
    let hogs_id = cluster.framework_id(3);
    let ended = |cluster: &SimCluster| {
        cluster.ledger(|ledger| {
            hogs_id
                .as_ref()
                .and_then(|id| ledger.frameworks.get(id))
                .is_some_and(|hogs| {
                    hogs.tasks.len() == HOGS
                        && hogs
                            .tasks
                            .values()
                            .all(|record| record.state.is_some_and(TaskState::is_terminal))
                })
        })
    };
    if !cluster.run_until(CONVERGENCE_LIMIT, ended).await {
        cluster.violation("the hogs never all ended");
    }
    let problems = cluster.ledger(|ledger| {
        let mut problems = Vec::new();
        let mut ended = 0;
        for (framework_id, framework) in &ledger.frameworks {
            let is_hogs = Some(framework_id) == hogs_id.as_ref();
            for (task_id, record) in &framework.tasks {
                let memory = record.reason == Some(Reason::ContainerLimitationMemory);
                if is_hogs {
                    ended += 1;
                    if record.state != Some(TaskState::Failed) || !memory {
                        problems.push(format!(
                            "hog {task_id} ended {:?} ({:?}), not failed for its memory",
                            record.state, record.reason
                        ));
                    }
                } else if memory {
                    problems.push(format!(
                        "{framework_id}/{task_id} failed for memory it did not take"
                    ));
                }
            }
        }
        if ended != HOGS {
            problems.push(format!("{ended} of {HOGS} hogs were heard of"));
        }
        problems
    });
    for problem in problems {
        cluster.violation(problem);
    }
    cluster.finish()
}

/// How many agents [`a_thousand_agents`] runs.
pub const AT_SCALE: usize = 1_000;

/// A thousand agents, the paths a large cluster takes: they all register
/// (and re-register after a master crash, all at once), three frameworks
/// keep a few thousand tasks of seconds to minutes going across them, two
/// agents crash (one with its machine) and come back; the cluster must
/// agree at the end, the master's books checked as it runs.
pub async fn a_thousand_agents(seed: u64) -> Result<Report, Failure> {
    // A pass over the books of a thousand agents after every input would
    // cost twenty times the run: every hundredth input instead.
    let spec = ClusterSpec {
        check_every: 100,
        ..ClusterSpec::new(AT_SCALE, "cpus:4;mem:4096")
    };
    let mut cluster = SimCluster::new(seed, spec);
    for (index, (tasks, checkpoint)) in [(1_500, false), (1_000, true), (500, true)]
        .into_iter()
        .enumerate()
    {
        let spec = WorkloadSpec {
            seed: seed ^ index as u64,
            run: (secs(2), secs(90)),
            ..WorkloadSpec::new(tasks, "cpus:1;mem:256", secs(90))
        };
        let mut info = FrameworkInfo::new(format!("scale-{index}"), "sim");
        info.checkpoint = checkpoint;
        info.failover_timeout = secs(120);
        cluster.add_framework(info, Workload::factory(spec));
    }
    let first = cluster.between(secs(5), secs(30));
    cluster.run_for(first).await;
    let (crashed, lost) = (
        cluster.random().below(AT_SCALE as u64) as usize,
        cluster.random().below(AT_SCALE as u64) as usize,
    );
    cluster.crash_agent(crashed);
    if lost != crashed {
        cluster.crash_machine(lost);
    }
    let down = cluster.between(secs(5), secs(60));
    cluster.run_for(down).await;
    cluster.crash_master();
    let gone = cluster.between(secs(1), secs(20));
    cluster.run_for(gone).await;
    cluster.restart_master();
    cluster.restart_agent(crashed);
    cluster.restart_agent(lost);
    cluster.converge(CONVERGENCE_LIMIT).await;
    // The master brings its views up to date for each snapshot, more of
    // them than one turn redoes after a thousand re-registrations: its
    // snapshots still came, and the last shows every agent back.
    cluster.run_for(secs(3)).await;
    let state = cluster.master_state();
    let active = state.as_ref().map_or(0, |state| {
        state
            .agents
            .iter()
            .filter(|agent| agent.status == strata_api::views::AgentStatus::Active)
            .count()
    });
    if state.as_ref().is_none_or(|state| state.recovering) || active != AT_SCALE {
        cluster.violation(format!(
            "the master's last snapshot shows {active} of {AT_SCALE} agents active"
        ));
    }
    cluster.finish()
}

/// The framework index of `batch`.
pub const BATCH: usize = 0;
/// The framework index of `service`.
pub const SERVICE: usize = 1;

/// How many tasks `batch`, `service` and `records` launch.
pub const WORKLOAD_TASKS: [usize; 3] = [12, 8, 6];

/// The cluster every built-in scenario starts from.
pub fn standard_cluster(seed: u64) -> SimCluster {
    standard_cluster_on(seed, NetworkKind::Frames)
}

/// The standard cluster on the given network.
pub fn standard_cluster_on(seed: u64, network: NetworkKind) -> SimCluster {
    standard_cluster_of(
        seed,
        ClusterSpec {
            network,
            ..ClusterSpec::new(3, "cpus:4;mem:4096")
        },
    )
}

/// The standard cluster's agents and frameworks with three masters
/// electing a leader in a simulated ZooKeeper.
pub fn highly_available_cluster(seed: u64) -> SimCluster {
    standard_cluster_of(
        seed,
        ClusterSpec {
            masters: 3,
            ..ClusterSpec::new(3, "cpus:4;mem:4096")
        },
    )
}

/// The standard workload on a cluster of `spec`.
fn standard_cluster_of(seed: u64, spec: ClusterSpec) -> SimCluster {
    let mut cluster = SimCluster::new(seed, spec);
    let batch = WorkloadSpec {
        seed,
        run: (Duration::from_secs(3), Duration::from_secs(30)),
        ..WorkloadSpec::new(WORKLOAD_TASKS[0], "cpus:1;mem:256", Duration::from_secs(30))
    };
    cluster.add_framework(FrameworkInfo::new("batch", "sim"), Workload::factory(batch));
    let service = WorkloadSpec {
        seed: seed ^ 1,
        run: (Duration::from_secs(10), Duration::from_secs(120)),
        ..WorkloadSpec::new(
            WORKLOAD_TASKS[1],
            "cpus:1;mem:256",
            Duration::from_secs(120),
        )
    };
    let mut info = FrameworkInfo::new("service", "sim");
    info.checkpoint = true;
    info.failover_timeout = Duration::from_secs(60);
    info.capabilities.insert(Capability::PartitionAware);
    cluster.add_framework(info, Workload::factory(service));
    let records = WorkloadSpec {
        seed: seed ^ 2,
        run: (Duration::from_secs(5), Duration::from_secs(60)),
        ..WorkloadSpec::new(WORKLOAD_TASKS[2], "cpus:1;mem:256", Duration::from_secs(60))
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

/// The name on the stolen certificate of [`stolen_agent_certificate`].
pub const STOLEN: &str = "agent-stolen";

/// Ids the attacker makes up (tasks, agents, a framework) start with this.
const FORGED_PREFIX: &str = "stolen-";

/// How many times the attacker sends its messages.
const ATTACK_ROUNDS: u64 = 20;

/// An agent's certificate is stolen: while the workload runs, its holder
/// (a node of its own in 10.3.0.0/16, certificate `agent` named
/// `agent-stolen`) sends every agent, as `master` and as itself, forged
/// registrations with a huge epoch, a task of its own to run, kills of
/// every task launched so far and shutdowns of every framework, and asks
/// the master to (re-)register it under the real agents' ids. The runtime
/// drops what it sends as `master` (the agents' nodes count every such
/// message as an impersonation), the agents ignore what it sends as
/// itself (it is not their master), the master refuses it the ids bound
/// to the real agents' certificates: no agent runs or reports its task,
/// changes its id or leaves the real master, and every task of the
/// workload ends FINISHED.
pub async fn stolen_agent_certificate(seed: u64) -> Result<Report, Failure> {
    let mut cluster = standard_cluster(seed);
    let Some(intruder) = cluster.add_intruder(Role::Agent, STOLEN) else {
        return cluster.finish();
    };
    // Holds the stolen certificate's own id, so the master's answers to
    // its registrations are read.
    let mut answers = match intruder.node().inbox::<ToAgent>(STOLEN, 4096) {
        Ok(inbox) => inbox,
        Err(error) => {
            cluster.violation(format!("no inbox on the intruder: {error}"));
            return cluster.finish();
        }
    };
    let mut attack = Attack::new(intruder, cluster.agent_count());
    let first = cluster.between(secs(1), secs(10));
    cluster.run_for(first).await;
    for round in 0..ATTACK_ROUNDS {
        attack.learn(&cluster);
        attack.strike(&cluster, round);
        let pause = cluster.between(secs(1), secs(5));
        cluster.run_for(pause).await;
        attack.read_answers(&cluster, &mut answers).await;
        attack.inspect(&cluster);
    }
    cluster.converge(CONVERGENCE_LIMIT).await;
    let expected: usize = WORKLOAD_TASKS.iter().sum();
    let ended = cluster
        .run_until(CONVERGENCE_LIMIT, |cluster| {
            workload_ends(cluster).len() == expected
        })
        .await;
    attack.read_answers(&cluster, &mut answers).await;
    attack.inspect(&cluster);
    let ends = workload_ends(&cluster);
    if !ended {
        attack.problem(
            &cluster,
            format!(
                "{} of the workload's {expected} tasks ended within {CONVERGENCE_LIMIT:?}",
                ends.len()
            ),
        );
    }
    for ((framework_id, task_id), state) in ends {
        if state != TaskState::Finished {
            attack.problem(
                &cluster,
                format!("{framework_id}/{task_id} ended {state}, not TASK_FINISHED"),
            );
        }
    }
    attack.check_impersonations(&cluster);
    cluster.finish()
}

/// The workload's tasks that ended, with how, as their frameworks heard.
fn workload_ends(cluster: &SimCluster) -> BTreeMap<(FrameworkId, TaskId), TaskState> {
    cluster.ledger(|ledger| {
        ledger
            .frameworks
            .iter()
            .flat_map(|(framework_id, framework)| {
                framework.launched.iter().filter_map(|task_id| {
                    let state = framework.tasks.get(task_id)?.state?;
                    state
                        .is_terminal()
                        .then(|| ((framework_id.clone(), task_id.clone()), state))
                })
            })
            .collect()
    })
}

/// The attacker of [`stolen_agent_certificate`]: what it sends, and the
/// checks that it achieved nothing.
struct Attack {
    intruder: Intruder,
    /// The ids the real agents registered under, as first seen.
    agent_ids: Vec<Option<AgentId>>,
    /// Messages sent as `master` that the runtime let out.
    sent_as_master: u64,
    /// Problems already recorded (each is recorded once).
    found: BTreeSet<String>,
    /// Ids the master gave the stolen certificate as a new agent.
    admitted: BTreeSet<AgentId>,
}

impl Attack {
    fn new(intruder: Intruder, agents: usize) -> Attack {
        Attack {
            intruder,
            agent_ids: vec![None; agents],
            sent_as_master: 0,
            found: BTreeSet::new(),
            admitted: BTreeSet::new(),
        }
    }

    fn problem(&mut self, cluster: &SimCluster, problem: String) {
        if self.found.insert(problem.clone()) {
            cluster.violation(problem);
        }
    }

    /// Takes note of the ids the agents registered under.
    fn learn(&mut self, cluster: &SimCluster) {
        for (index, known) in self.agent_ids.iter_mut().enumerate() {
            if known.is_none() {
                *known = cluster.agent_id(index);
            }
        }
    }

    /// Sends one round of forged messages: to every agent as `master` and
    /// as the stolen certificate's own id, and to the master as the
    /// stolen certificate claiming an agent's id.
    fn strike(&mut self, cluster: &SimCluster, round: u64) {
        let (frameworks, launched) = cluster.ledger(|ledger| {
            let frameworks: Vec<FrameworkId> = ledger.frameworks.keys().cloned().collect();
            let launched: Vec<(FrameworkId, TaskId)> = ledger
                .frameworks
                .iter()
                .flat_map(|(framework_id, framework)| {
                    framework
                        .launched
                        .iter()
                        .map(|task_id| (framework_id.clone(), task_id.clone()))
                })
                .collect();
            (frameworks, launched)
        });
        for index in 0..cluster.agent_count() {
            let target = cluster.agent(index);
            for sender in [MASTER_ID, STOLEN] {
                for message in self.forgeries(index, round, sender, &frameworks, &launched) {
                    let sent = self.intruder.send_as(sender, &target, message).is_ok();
                    if sent && sender == MASTER_ID {
                        self.sent_as_master += 1;
                    }
                }
            }
        }
        let victim = round as usize % self.agent_ids.len();
        if let Some(agent_id) = self.agent_ids[victim].clone() {
            let info = AgentInfo {
                id: Some(agent_id),
                hostname: format!("agent-{victim}"),
                resources: cluster.spec.agent_resources.clone(),
                attributes: Default::default(),
            };
            let master = cluster.master();
            let claims = [
                ToMaster::ReregisterAgent {
                    info: info.clone(),
                    tasks: Vec::new(),
                },
                ToMaster::RegisterAgent { info },
            ];
            for claim in claims {
                // Refused or not, the master's answer is read later.
                let _ = self.intruder.send_as(STOLEN, &master, claim);
            }
        }
    }

    /// What the attacker sends agent `index` as `sender` in `round`.
    fn forgeries(
        &self,
        index: usize,
        round: u64,
        sender: &str,
        frameworks: &[FrameworkId],
        launched: &[(FrameworkId, TaskId)],
    ) -> Vec<ToAgent> {
        let ping_timeout = Duration::from_secs(86_400);
        let own_id = forged_id::<AgentId>(&format!("{FORGED_PREFIX}S{index}"));
        let agent_id = self.agent_ids[index]
            .clone()
            .unwrap_or_else(|| own_id.clone());
        let mut messages = vec![
            ToAgent::AgentReregistered {
                agent_id: agent_id.clone(),
                ping_timeout,
                epoch: u64::MAX,
            },
            ToAgent::AgentRegistered {
                agent_id: own_id,
                ping_timeout,
                epoch: u64::MAX,
            },
        ];
        // A task under a framework of its own, and one under a real
        // framework's id (whose updates would reach that framework).
        let own_framework = forged_id::<FrameworkId>(&format!("{FORGED_PREFIX}framework"));
        for (which, framework_id) in std::iter::once(own_framework)
            .chain(
                frameworks
                    .get(round as usize % frameworks.len().max(1))
                    .cloned(),
            )
            .enumerate()
        {
            let task_id =
                forged_id::<TaskId>(&format!("{FORGED_PREFIX}{round}-{index}-{sender}-{which}"));
            let mut framework = FrameworkInfo::new("stolen", "root");
            framework.id = Some(framework_id);
            framework.checkpoint = true;
            let task = TaskInfo {
                name: task_id.to_string(),
                task_id,
                agent_id: agent_id.clone(),
                resources: forged_resources(),
                kind: TaskKind::Command(CommandInfo::shell("true")),
                labels: [(RUN_MS_LABEL.to_owned(), "600000".to_owned())].into(),
            };
            messages.push(ToAgent::RunTask {
                framework: Box::new(framework),
                task: Box::new(task),
            });
        }
        messages.extend(
            launched
                .iter()
                .map(|(framework_id, task_id)| ToAgent::KillTask {
                    framework_id: framework_id.clone(),
                    task_id: task_id.clone(),
                }),
        );
        messages.extend(
            frameworks
                .iter()
                .map(|framework_id| ToAgent::ShutdownFramework {
                    framework_id: framework_id.clone(),
                }),
        );
        messages
    }

    /// Reads what the master answered the stolen certificate.
    async fn read_answers(&mut self, cluster: &SimCluster, answers: &mut Inbox<ToAgent>) {
        // A zero timeout still polls the inbox once: what arrived so far.
        while let Some(received) = answers.recv_within(Duration::ZERO).await {
            let Received::Message(from, message) = received else {
                continue;
            };
            match message {
                ToAgent::AgentRegistered { agent_id, .. }
                | ToAgent::AgentReregistered { agent_id, .. } => {
                    if self.agent_ids.contains(&Some(agent_id.clone())) {
                        self.problem(
                            cluster,
                            format!(
                                "{from} gave the stolen certificate {STOLEN:?} the id of a real \
                                 agent, {agent_id}"
                            ),
                        );
                    } else if self.admitted.insert(agent_id.clone()) {
                        cluster.note(format!(
                            "{from} admitted the stolen certificate as a new agent {agent_id}"
                        ));
                    }
                }
                ToAgent::RunTask { task, .. } => cluster.note(format!(
                    "{from} placed {} on the stolen certificate's agent",
                    task.task_id
                )),
                _ => {}
            }
        }
    }

    /// Checks that nothing obeyed the attacker so far.
    fn inspect(&mut self, cluster: &SimCluster) {
        let mut problems = Vec::new();
        let forged = |task_id: &str| task_id.starts_with(FORGED_PREFIX);
        // No agent made an update about a forged task, and none reached a
        // framework.
        cluster.ledger(|ledger| {
            for (framework_id, task_id) in ledger.generated.keys() {
                if forged(task_id.as_str()) {
                    problems.push(format!(
                        "an agent reported {framework_id}/{task_id}, a task of the attacker's"
                    ));
                }
            }
            for (framework_id, framework) in &ledger.frameworks {
                for task_id in framework.tasks.keys() {
                    if forged(task_id.as_str()) {
                        problems.push(format!(
                            "{framework_id} heard of {task_id}, a task of the attacker's"
                        ));
                    }
                }
            }
        });
        // Every agent keeps its id and runs none of the attacker's tasks.
        for index in 0..cluster.agent_count() {
            let Some(state) = cluster.agent_state(index) else {
                continue;
            };
            if let (Some(known), Some(now)) = (&self.agent_ids[index], &state.id)
                && known != now
            {
                problems.push(format!("agent-{index} was {known} and is now {now}"));
            }
            for task in state.tasks.iter().filter(|task| forged(task.id.as_str())) {
                problems.push(format!(
                    "agent-{index} has the attacker's task {}/{} ({})",
                    task.framework_id, task.id, task.state
                ));
            }
        }
        // The master binds no real agent's id to the intruder.
        if let Some(master) = cluster.master_state() {
            let intruder = format!("@{}", self.intruder.addr());
            for agent in &master.agents {
                let real = self
                    .agent_ids
                    .iter()
                    .any(|known| known.as_ref() == Some(&agent.id));
                if real && agent.pid.ends_with(&intruder) {
                    problems.push(format!(
                        "the master has agent {} at the stolen certificate's {}",
                        agent.id, agent.pid
                    ));
                }
            }
            for task in master.tasks.iter().chain(&master.completed_tasks) {
                if forged(task.id.as_str()) {
                    problems.push(format!(
                        "the master has the attacker's task {}/{} ({})",
                        task.framework_id, task.id, task.state
                    ));
                }
            }
        }
        for problem in problems {
            self.problem(cluster, problem);
        }
    }

    /// Every message sent as `master` was dropped by the receiving
    /// agent's runtime as an impersonation (no frame is lost here), and
    /// there were some.
    fn check_impersonations(&mut self, cluster: &SimCluster) {
        let dropped: u64 = (0..cluster.agent_count())
            .filter_map(|index| cluster.agent_metrics(index))
            .map(|metrics| metrics.dropped_impersonation)
            .sum();
        cluster.note(format!(
            "{} messages sent as master to agents, {dropped} dropped as impersonations",
            self.sent_as_master
        ));
        if self.sent_as_master == 0 || dropped != self.sent_as_master {
            let problem = format!(
                "the agents' nodes dropped {dropped} impersonations of the {} messages sent as \
                 master",
                self.sent_as_master
            );
            self.problem(cluster, problem);
        }
    }
}

/// An id the attacker makes up.
fn forged_id<T: TryFrom<String>>(id: &str) -> T {
    T::try_from(id.to_owned()).unwrap_or_else(|_| panic!("{id:?} is a valid id"))
}

/// What the attacker's task asks for.
fn forged_resources() -> Resources {
    "cpus:1;mem:128"
        .parse()
        .unwrap_or_else(|_| unreachable!("valid resources"))
}
