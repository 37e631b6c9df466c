//! The recovery suite: how long restarts take.
//!
//! Agent recovery runs the real binaries: `strata master`, `strata agent`
//! and `strata execute` starting 100 checkpointed `sleep` tasks. The agent
//! is killed with SIGKILL and started again; the time is from starting it
//! to its log saying it registered with the master, all 100 tasks
//! re-attached. The baseline is the same agent's first start (no tasks)
//! in the same run.
//!
//! Master recovery runs in this process: a durable master and 1,000
//! emulated agents (actors that register, answer pings and re-register
//! the way agents do: at a random moment within 1 s·2ⁿ of losing the
//! master, n = attempts so far), ten to a node, so the master serves 100
//! QUIC connections. The master's node is closed and a new master is
//! started on the same port and work directory; the time is from its
//! start to the last agent re-registered. Beside it is Apache Mesos's
//! published master fail-over recovery time, 4–8 s (its high-availability
//! documentation; the midpoint is the baseline).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{AgentId, AgentInfo, ToAgent, ToMaster};
use strata_runtime::random::SplitMix;
use strata_runtime::{
    CertificateAuthority, Node, NodeConfig, Process, ProcessContext, SpawnOptions, TlsMaterial,
    Upid,
};

use strata_integration::{KillOnDrop, lines_of};

use crate::report::{Better, Measure, Row, Target};

const TASKS: usize = 100;
const AGENTS: usize = 1000;
const AGENTS_PER_NODE: usize = 10;

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let tasks = ((TASKS as f64 * scale) as usize).max(1);
    let agents = ((AGENTS as f64 * scale) as usize).max(AGENTS_PER_NODE);
    let (fresh, recovered) = agent_recovery(tasks)?;
    let agent_row = Row::new(
        format!("agent restart to re-registered, {tasks} tasks re-attached"),
        Measure {
            unit: "ms",
            baseline_name: "the same agent's first start, no tasks (same run)",
            better: Better::Lower,
            target: Target::None,
        },
        fresh,
        recovered,
    );
    let master_ms = master_recovery(agents)?;
    let master_row = Row::new(
        format!("master restart to all {agents} agents re-registered"),
        Measure {
            unit: "ms",
            baseline_name: "Apache Mesos master fail-over recovery, 4-8 s (published; midpoint)",
            better: Better::Lower,
            target: Target::Ratio(1.0),
        },
        6000.0,
        master_ms,
    );
    Ok(vec![agent_row, master_row])
}

/// The `strata` binary beside this one.
pub(crate) fn strata_binary() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let strata = here.with_file_name("strata");
    if !strata.is_file() {
        bail!(
            "{} is missing; build it first: cargo build --release -p strata",
            strata.display()
        );
    }
    Ok(strata)
}

/// Waits up to a minute for a line containing `wanted`; counts the lines
/// before it that contain `counted`.
fn read_until(
    lines: &std::sync::mpsc::Receiver<String>,
    wanted: &str,
    counted: &str,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .with_context(|| format!("no line with {wanted:?} within a minute"))?;
        if line.contains(counted) {
            count += 1;
        }
        if line.contains(wanted) {
            return Ok(count);
        }
    }
}

fn start_agent(
    strata: &Path,
    master: &str,
    work: &Path,
) -> anyhow::Result<(KillOnDrop, std::sync::mpsc::Receiver<String>)> {
    let mut child = Command::new(strata)
        .args(["agent", "--master", master, "--port", "0", "--work-dir"])
        .arg(work)
        .args(["--resources", "cpus:64;mem:65536"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let logs = lines_of(child.stderr.take().context("no stderr")?);
    Ok((KillOnDrop(child), logs))
}

/// Kills every process group whose leader works under `dir` (the tasks,
/// in their sandboxes; checkpointed tasks outlive their agent by design).
fn kill_tasks_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
    {
        let in_dir =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if in_dir
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
            && let Ok(group) = rustix::process::getpgid(Some(pid))
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// Milliseconds for a fresh agent to register, and for the same agent,
/// killed with `tasks` checkpointed tasks running, to come back.
fn agent_recovery(tasks: usize) -> anyhow::Result<(f64, f64)> {
    let strata = strata_binary()?;
    let dir = std::env::temp_dir().join(format!("strata-bench-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TlsMaterial::development(
        &dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )?;
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    std::os::unix::fs::symlink(dir.join("tls"), agent_dir.join("tls"))?;
    let result = (|| {
        let master = strata_integration::ChildNode::start_daemon(
            &strata,
            &[
                "master",
                "--port",
                "0",
                "--allocation-interval",
                "0.1",
                "--work-dir",
                dir.to_str().context("path")?,
            ],
        )?;
        let address = master.pid.addr().to_string();
        let started = Instant::now();
        let (mut agent, logs) = start_agent(&strata, &address, &agent_dir)?;
        read_until(&logs, "registered with the master", "")?;
        let fresh = started.elapsed().as_secs_f64() * 1000.0;
        let mut execute = Command::new(&strata)
            .args([
                "execute",
                "--master",
                &address,
                "--name",
                "sleeper",
                "--checkpoint",
            ])
            .args(["--command", "sleep 100000", "--resources", "cpus:0.1;mem:8"])
            .args([
                "--instances",
                &tasks.to_string(),
                "--timeout",
                "120",
                "--work-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let output = lines_of(execute.stdout.take().context("no stdout")?);
        let _execute = KillOnDrop(execute);
        for _ in 0..tasks {
            read_until(&output, "TASK_RUNNING", "")?;
        }
        agent.0.kill()?;
        agent.0.wait()?;
        let restarted = Instant::now();
        let (_agent, logs) = start_agent(&strata, &address, &agent_dir)?;
        let attached = read_until(&logs, "registered with the master", "re-attached")?;
        let recovered = restarted.elapsed().as_secs_f64() * 1000.0;
        if attached != tasks {
            bail!("the agent re-attached to {attached} of {tasks} tasks");
        }
        drop(master);
        Ok((fresh, recovered))
    })();
    kill_tasks_under(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// An emulated agent: registers, answers pings, re-registers after
/// losing the master with an agent's backoff, and counts re-registrations.
#[derive(Debug)]
struct EmulatedAgent {
    master: Upid,
    info: AgentInfo,
    random: SplitMix,
    attempt: u32,
    registered: bool,
    reregistered: Arc<AtomicUsize>,
    admitted: Arc<AtomicUsize>,
}

impl EmulatedAgent {
    fn register(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        if self.registered {
            return;
        }
        let message = match &self.info.id {
            None => ToMaster::RegisterAgent {
                info: self.info.clone(),
            },
            Some(_) => ToMaster::ReregisterAgent {
                info: self.info.clone(),
                tasks: Vec::new(),
            },
        };
        let master = self.master.clone();
        let _ = ctx.send(&master, message);
        let ceiling = 1000u64 << self.attempt.min(6);
        self.attempt += 1;
        let wait = Duration::from_millis(self.random.below(ceiling + 1));
        ctx.run_later(wait, |agent, ctx| agent.register(ctx));
    }
}

impl Process for EmulatedAgent {
    type Message = ToAgent;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let master = self.master.clone();
        ctx.link(&master);
        self.register(ctx);
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, _from: Upid, message: ToAgent) {
        match message {
            ToAgent::AgentRegistered { agent_id, .. } => {
                if !self.registered {
                    self.admitted.fetch_add(1, Ordering::SeqCst);
                }
                self.registered = true;
                self.info.id = Some(agent_id);
            }
            ToAgent::AgentReregistered { agent_id, .. } => {
                if !self.registered {
                    self.reregistered.fetch_add(1, Ordering::SeqCst);
                }
                self.registered = true;
                self.info.id = Some(agent_id);
            }
            ToAgent::Ping { sequence } => {
                let master = self.master.clone();
                let _ = ctx.send(&master, ToMaster::Pong { sequence });
            }
            _ => {}
        }
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        if pid.same_name(&self.master) {
            self.registered = false;
            self.attempt = 0;
            ctx.link(&pid);
            // As an agent does: first try at a random moment within 1 s.
            let wait = Duration::from_millis(self.random.below(1001));
            ctx.run_later(wait, |agent, ctx| agent.register(ctx));
        }
    }
}

async fn wait_for(count: &AtomicUsize, target: usize, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::SeqCst) < target {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{what}: {} of {target} within 5 min",
                count.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Milliseconds from a master's restart to all `agents` re-registered.
fn master_recovery(agents: usize) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("strata-bench-master-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = CertificateAuthority::generate("strata-bench")?;
    let result = actix_rt::System::new().block_on(async {
        let master_tls = ca.issue(strata_runtime::Role::Master, "master")?;
        let first = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, master_tls.clone())).await?;
        let address = first.addr();
        let work = dir.clone();
        let master = first.spawn(
            MASTER_ID,
            move || Master::durable(Config::default(), "bench1", &work),
            SpawnOptions::default(),
        )?;
        let master = master.with_incarnation(strata_runtime::Incarnation::ANY);
        let admitted = Arc::new(AtomicUsize::new(0));
        let reregistered = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for node_index in 0..agents.div_ceil(AGENTS_PER_NODE) {
            let node = Node::bind(NodeConfig::new(
                "127.0.0.1:0".parse()?,
                ca.issue(strata_runtime::Role::Agent, &format!("agents-{node_index}"))?,
            ))
            .await?;
            for slot in 0..AGENTS_PER_NODE.min(agents - node_index * AGENTS_PER_NODE) {
                let index = node_index * AGENTS_PER_NODE + slot;
                let (master, admitted, reregistered) =
                    (master.clone(), admitted.clone(), reregistered.clone());
                node.spawn(
                    &format!("agent-{index}"),
                    move || EmulatedAgent {
                        master: master.clone(),
                        info: AgentInfo {
                            id: None::<AgentId>,
                            hostname: format!("host-{index}"),
                            resources: "cpus:8;mem:32768".parse().unwrap_or_default(),
                            attributes: Default::default(),
                        },
                        random: SplitMix::new(index as u64 + 1),
                        attempt: 0,
                        registered: false,
                        reregistered: reregistered.clone(),
                        admitted: admitted.clone(),
                    },
                    SpawnOptions::default(),
                )?;
            }
            nodes.push(node);
        }
        wait_for(&admitted, agents, "agents admitted").await?;
        first.close(Duration::from_secs(2)).await;
        drop(first);
        // The closed node's socket is released once its last task ends.
        let bind_deadline = Instant::now() + Duration::from_secs(10);
        let second = loop {
            match Node::bind(NodeConfig::new(address, master_tls.clone())).await {
                Ok(node) => break node,
                Err(error) if Instant::now() < bind_deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let started = Instant::now();
        let work = dir.clone();
        second.spawn(
            MASTER_ID,
            move || Master::durable(Config::default(), "bench2", &work),
            SpawnOptions::default(),
        )?;
        wait_for(&reregistered, agents, "agents re-registered").await?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        for node in nodes {
            node.close(Duration::from_millis(100)).await;
        }
        second.close(Duration::from_millis(100)).await;
        anyhow::Ok(elapsed)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
