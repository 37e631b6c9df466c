//! The launch suite: `/bin/true` tasks per second from ACCEPT to
//! TASK_FINISHED on one local agent, beside the raw rate of spawning and
//! reaping `/bin/true` on the same machine, in the same run.
//!
//! Both keep at most 64 processes in flight; each figure is the best of
//! three runs, interleaved. Ours goes through everything
//! a task does: the scheduler accepts offers, the master validates and
//! forwards, the agent makes a sandbox with stdout and stderr files and
//! starts the process in its own group, and every status update
//! (STARTING, RUNNING, FINISHED) goes to the scheduler and is
//! acknowledged before the next one is sent.

use std::time::{Duration, Instant};

use anyhow::Context;
use strata_agent::{Agent, AgentConfig, Runner};
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{
    CommandInfo, Filters, FrameworkInfo, Operation, Resources, TaskId, TaskInfo, TaskKind,
    TaskState, ToMaster, ToScheduler,
};
use strata_runtime::{CertificateAuthority, Node, NodeConfig, Received, SpawnOptions};

use crate::report::{Better, Measure, Row, Target};

/// Processes in flight at once, for both.
const IN_FLIGHT: usize = 64;

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let total = ((2000.0 * scale) as usize).max(IN_FLIGHT);
    // Best of three for each: process creation and sandbox files make
    // single runs swing with the machine's disk and scheduler.
    // `strata agent` starts each command through its task launcher (the
    // `strata` binary), so tasks survive agent restarts; measured too when
    // that binary is built beside this one.
    let launcher = crate::recovery::strata_binary().ok();
    // Isolated launches (cgroups, then with namespaces) need the launcher
    // binary, for the container init, and root.
    let isolations: Vec<(&str, Isolating)> = match &launcher {
        Some(_) if rustix::process::geteuid().is_root() => {
            vec![
                ("cgroups", Isolating::Cgroups),
                ("cgroups,namespaces", Isolating::Namespaces),
            ]
        }
        _ => Vec::new(),
    };
    let mut baseline: f64 = 0.0;
    let mut ours: f64 = 0.0;
    let mut launched: f64 = 0.0;
    let mut isolated = vec![0.0f64; isolations.len()];
    for _ in 0..3 {
        baseline = baseline.max(raw_spawns(total)?);
        ours = ours.max(through_strata(total, None, Isolating::Posix)?);
        if let Some(launcher) = &launcher {
            launched = launched.max(through_strata(total, Some(launcher), Isolating::Posix)?);
            for (rate, (_, isolation)) in isolated.iter_mut().zip(&isolations) {
                *rate = rate.max(through_strata(total, Some(launcher), *isolation)?);
            }
        }
    }
    let measure = Measure {
        unit: "tasks/s",
        baseline_name: "spawn and reap /bin/true directly, 64 in flight",
        better: Better::Higher,
        target: Target::Ratio(0.5),
    };
    let mut rows = vec![Row::new(
        format!(
            "launch {total} /bin/true as the agent's children (sandboxes on {})",
            sandbox_root().1
        ),
        measure,
        baseline,
        ours,
    )];
    if launcher.is_some() {
        rows.push(Row::new(
            format!(
                "launch {total} /bin/true through the task launcher (sandboxes on {})",
                sandbox_root().1
            ),
            measure,
            baseline,
            launched,
        ));
    }
    // What isolation costs a task: the same launches, posix against
    // cgroups and against cgroups with namespaces.
    let isolation_measure = Measure {
        unit: "tasks/s",
        baseline_name: "the same through the task launcher, posix isolation",
        better: Better::Higher,
        target: Target::None,
    };
    for ((name, _), rate) in isolations.iter().zip(isolated) {
        rows.push(Row::new(
            format!(
                "launch {total} /bin/true with {name} isolation ({:.2} ms of the machine's time more per task)",
                (1.0 / rate - 1.0 / launched) * 1e3
            ),
            isolation_measure,
            launched,
            rate,
        ));
    }
    Ok(rows)
}

/// Which isolation a launch run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolating {
    Posix,
    Cgroups,
    Namespaces,
}

impl Isolating {
    /// The agent's isolation for `work_dir`, the container init being
    /// `launcher`.
    pub(crate) fn isolation(
        self,
        work_dir: &std::path::Path,
        launcher: Option<&std::path::Path>,
    ) -> anyhow::Result<strata_agent::isolation::Isolation> {
        use strata_agent::isolation::{IsolationFlags, IsolationOptions, choose};
        let requested = match self {
            Isolating::Posix => return Ok(strata_agent::isolation::Isolation::Posix),
            Isolating::Cgroups => "cgroups",
            Isolating::Namespaces => "cgroups,namespaces",
        };
        let requested: IsolationFlags = requested.parse().map_err(anyhow::Error::msg)?;
        let (isolation, _) = choose(&IsolationOptions {
            requested: Some(requested),
            cgroups_root: format!("strata-bench-{}", std::process::id()),
            cfs: false,
            pids_max: None,
            program: launcher.map(std::path::Path::to_owned),
            work_dir: work_dir.to_owned(),
        })
        .map_err(anyhow::Error::msg)?;
        Ok(isolation)
    }
}

fn raw_spawns(total: usize) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let start = Instant::now();
        let mut running = tokio::task::JoinSet::new();
        let mut launched = 0;
        let mut reaped = 0;
        while reaped < total {
            while running.len() < IN_FLIGHT && launched < total {
                let mut child = tokio::process::Command::new("/bin/true").spawn()?;
                running.spawn(async move { child.wait().await });
                launched += 1;
            }
            if let Some(done) = running.join_next().await {
                done??;
                reaped += 1;
            }
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    })
}

/// Where sandboxes go: tmpfs when there is one. On ext4, creating and
/// deleting thousands of sandbox directories run after run makes the
/// inode allocator scan ever longer (it avoids recently deleted inodes),
/// which measures the filesystem rather than the launch path.
pub(crate) fn sandbox_root() -> (std::path::PathBuf, &'static str) {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|meta| !meta.permissions().readonly()) {
        (shm.to_owned(), "tmpfs")
    } else {
        (std::env::temp_dir(), "temp dir")
    }
}

/// An agent of `master` with [`IN_FLIGHT`] cpus running tasks as
/// processes in `work_dir`, through `launcher` when given.
pub(crate) fn agent_config(
    master: strata_runtime::Upid,
    work_dir: &std::path::Path,
    launcher: Option<&std::path::Path>,
    isolation: strata_agent::isolation::Isolation,
) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig {
        master,
        hostname: "bench".into(),
        resources: format!("cpus:{IN_FLIGHT};mem:{}", IN_FLIGHT * 32).parse()?,
        attributes: Default::default(),
        seed: 1,
        runner: Runner::Processes {
            work_dir: work_dir.to_owned(),
            kill_grace: Duration::from_secs(1),
            isolation,
            images: None,
        },
        status_update_retry: strata_agent::status_updates::FIRST_RETRY,
        usage_interval: std::time::Duration::from_secs(1),
        master_silence_check: strata_agent::MASTER_SILENCE_CHECK,
        executor_credentials: None,
        executor_registration_timeout: std::time::Duration::from_secs(60),
        task_launcher: launcher.map(std::path::Path::to_owned),
        switch_user: false,
        kill_tasks_on_stop: true,
        disk: Default::default(),
        leader: None,
    })
}

fn through_strata(
    total: usize,
    launcher: Option<&std::path::Path>,
    isolation: Isolating,
) -> anyhow::Result<f64> {
    let work_dir = sandbox_root()
        .0
        .join(format!("strata-bench-launch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)?;
    let isolation = isolation.isolation(&work_dir, launcher)?;
    let ca = CertificateAuthority::generate("strata-bench")?;
    let rate = actix_rt::System::new().block_on(launch_all(
        &ca,
        &work_dir,
        total,
        launcher,
        isolation.clone(),
    ));
    // The agent removed each container's cgroup; its own subtree and the
    // bench's root go too.
    if let strata_agent::isolation::Isolation::Cgroups(cgroups) = &isolation {
        let _ = cgroups.layout.remove_root();
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    rate
}

/// A master, one agent and a scheduler's inbox on loopback, in the
/// bench's process; the scheduler's subscription sent.
pub(crate) struct Cluster {
    pub master_node: Node,
    pub agent_node: Node,
    pub scheduler_node: Node,
    pub master: strata_runtime::Upid,
    pub inbox: strata_runtime::Inbox<ToScheduler>,
}

impl Cluster {
    /// Starts the cluster, the agent as `agent` makes it for the master.
    pub(crate) async fn start(
        ca: &CertificateAuthority,
        agent: impl FnOnce(strata_runtime::Upid) -> anyhow::Result<AgentConfig>,
    ) -> anyhow::Result<Cluster> {
        let bind = |role: strata_runtime::Role, name: &str| -> anyhow::Result<NodeConfig> {
            Ok(NodeConfig::new(
                "127.0.0.1:0".parse()?,
                ca.issue(role, name)?,
            ))
        };
        let master_node = Node::bind(bind(strata_runtime::Role::Master, "master")?).await?;
        let master = master_node.spawn(
            MASTER_ID,
            || Master::new(Config::default(), "bench"),
            SpawnOptions::default(),
        )?;
        let agent_node = Node::bind(bind(strata_runtime::Role::Agent, "agent")?).await?;
        let agent = agent(master.clone())?;
        agent_node.spawn(
            "agent",
            move || Agent::new(agent.clone()),
            SpawnOptions::default(),
        )?;
        let scheduler_node =
            Node::bind(bind(strata_runtime::Role::Framework, "scheduler")?).await?;
        let inbox = scheduler_node.inbox::<ToScheduler>("scheduler", 65_536)?;
        inbox
            .send(
                &master,
                ToMaster::Subscribe {
                    info: FrameworkInfo::new("bench", "bench"),
                    constraints: vec![],
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Cluster {
            master_node,
            agent_node,
            scheduler_node,
            master,
            inbox,
        })
    }
}

async fn launch_all(
    ca: &CertificateAuthority,
    work_dir: &std::path::Path,
    total: usize,
    launcher: Option<&std::path::Path>,
    isolation: strata_agent::isolation::Isolation,
) -> anyhow::Result<f64> {
    let Cluster {
        master_node,
        agent_node,
        scheduler_node,
        master,
        mut inbox,
    } = Cluster::start(ca, |master| {
        agent_config(master, work_dir, launcher, isolation)
    })
    .await?;
    let need: Resources = "cpus:1;mem:32".parse()?;
    let mut framework_id = None;
    let mut launched = 0;
    let mut finished = 0;
    let mut start = None;
    while finished < total {
        let Some(Received::Message(_, message)) = inbox.recv_within(Duration::from_secs(60)).await
        else {
            anyhow::bail!("the cluster went quiet after {finished} of {total} tasks");
        };
        match message {
            ToScheduler::Subscribed {
                framework_id: id, ..
            } => framework_id = Some(id),
            ToScheduler::Offers(offers) => {
                let framework_id = framework_id.clone().context("offers before subscription")?;
                for offer in offers {
                    let mut left = offer.resources.clone();
                    let mut tasks = Vec::new();
                    while launched < total {
                        let Some(rest) = left.checked_sub(&need) else {
                            break;
                        };
                        left = rest;
                        launched += 1;
                        tasks.push(TaskInfo {
                            task_id: TaskId::new(format!("true-{launched}"))?,
                            name: "true".into(),
                            agent_id: offer.agent_id.clone(),
                            resources: need.clone(),
                            kind: TaskKind::Command(CommandInfo {
                                shell: false,
                                value: "/bin/true".into(),
                                ..CommandInfo::default()
                            }),
                            labels: Default::default(),
                        });
                    }
                    start.get_or_insert_with(Instant::now);
                    let accept = ToMaster::Accept {
                        framework_id: framework_id.clone(),
                        offer_ids: vec![offer.id],
                        operations: vec![Operation::Launch(tasks)],
                        filters: Filters {
                            refuse: Duration::ZERO,
                        },
                    };
                    inbox
                        .send(&master, accept)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            ToScheduler::Update { status } => {
                if let (Some(update_id), Some(agent_id), Some(framework_id)) = (
                    status.update_id,
                    status.agent_id.clone(),
                    framework_id.clone(),
                ) {
                    let acknowledge = ToMaster::Acknowledge {
                        framework_id,
                        agent_id,
                        task_id: status.task_id.clone(),
                        update_id,
                    };
                    inbox
                        .send(&master, acknowledge)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                match status.state {
                    TaskState::Finished => finished += 1,
                    state if state.is_terminal() => {
                        anyhow::bail!("{} ended {state}: {}", status.task_id, status.message)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let elapsed = start.context("nothing launched")?.elapsed();
    for node in [&scheduler_node, &agent_node, &master_node] {
        node.close(Duration::from_secs(1)).await;
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}
