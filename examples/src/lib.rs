//! Runnable examples of programs written on Strata; each is a binary of
//! this package, described in `examples/README.md`. This library holds
//! what they share: finding the cluster and running a scheduler to its end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig};
use strata_protocol::{CommandInfo, FrameworkInfo, Resources, TaskId, TaskInfo, TaskKind};
use strata_runtime::upid::parse_socket_addr;
use strata_runtime::{Node, NodeConfig, TlsMaterial, Upid};

/// Where the cluster is: `--master HOST:PORT` (or `STRATA_MASTER`,
/// default 127.0.0.1:5050) and `--work-dir DIR` (or `STRATA_WORK_DIR`,
/// default `./.strata`, where `strata local` keeps its development CA).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub master: SocketAddr,
    pub work_dir: PathBuf,
    /// Arguments left after those two.
    pub rest: Vec<String>,
}

impl Cluster {
    pub fn from_args() -> anyhow::Result<Cluster> {
        let mut master = std::env::var("STRATA_MASTER").unwrap_or_else(|_| "127.0.0.1:5050".into());
        let mut work_dir =
            PathBuf::from(std::env::var("STRATA_WORK_DIR").unwrap_or_else(|_| "./.strata".into()));
        let mut rest = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--master" => master = args.next().context("--master needs HOST:PORT")?,
                "--work-dir" => {
                    work_dir = args.next().context("--work-dir needs a directory")?.into()
                }
                _ => rest.push(arg),
            }
        }
        let master = parse_socket_addr(&master).map_err(|e| anyhow::anyhow!("--master: {e}"))?;
        Ok(Cluster {
            master,
            work_dir,
            rest,
        })
    }

    /// The master's address.
    pub fn master_pid(&self) -> anyhow::Result<Upid> {
        Ok(format!("master@{}", self.master).parse()?)
    }

    /// A node to run schedulers on, trusted by the local cluster.
    pub async fn node(&self, name: &str) -> anyhow::Result<Node> {
        let tls = TlsMaterial::development(
            &self.work_dir.join("tls"),
            strata_runtime::Role::Framework,
            name,
        )?;
        let ip = if self.master.ip().is_loopback() {
            self.master.ip()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        Ok(Node::bind(NodeConfig::new(SocketAddr::new(ip, 0), tls)).await?)
    }
}

/// Runs a scheduler on `node` until it stops, at most `limit`.
pub async fn run_scheduler<S: Scheduler>(
    node: &Node,
    id: &str,
    config: SchedulerConfig,
    limit: Duration,
    factory: impl Fn() -> S + 'static,
) -> anyhow::Result<()> {
    let pid = scheduler::spawn(node, id, config, factory)?;
    tokio::time::timeout(limit, scheduler::wait(node, &pid))
        .await
        .with_context(|| format!("{id} did not finish within {limit:?}"))??;
    Ok(())
}

/// A framework description with a name and the current user.
pub fn framework(name: &str) -> FrameworkInfo {
    FrameworkInfo::new(name, strata_agent::users::current_user())
}

/// A shell command task.
pub fn shell_task(
    id: &str,
    agent: &strata_protocol::AgentId,
    resources: &Resources,
    command: &str,
) -> anyhow::Result<TaskInfo> {
    Ok(TaskInfo {
        task_id: TaskId::new(id)?,
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: resources.clone(),
        kind: TaskKind::Command(CommandInfo::shell(command)),
        labels: Default::default(),
    })
}
