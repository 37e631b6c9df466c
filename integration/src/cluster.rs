//! An in-process cluster for tests: a master, agents and schedulers on
//! separate nodes in one OS process, talking QUIC on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::containers::RUN_MS_LABEL;
use strata_agent::{Agent, AgentConfig, Runner};
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{
    AgentId, CommandInfo, FrameworkId, FrameworkInfo, Offer, Resources, TaskId, TaskInfo, TaskKind,
    TaskStatus, ToMaster, ToScheduler,
};
use strata_runtime::{
    CertificateAuthority, Inbox, Node, NodeConfig, Received, Role, SpawnOptions, Upid,
};

/// How long a test waits for the master to say something.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Parses resources.
pub fn r(text: &str) -> Resources {
    text.parse().unwrap()
}

/// A node on 127.0.0.1 with quick failure detection.
pub async fn node(ca: &CertificateAuthority, role: Role, name: &str) -> Node {
    let mut config = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ca.issue(role, name).unwrap(),
    );
    config.quic.idle_timeout = Duration::from_secs(2);
    config.quic.keep_alive_interval = Duration::from_millis(500);
    Node::bind(config).await.unwrap()
}

/// A master configuration with short intervals, for tests.
pub fn fast_master() -> Config {
    Config {
        allocation_interval: Duration::from_millis(100),
        agent_ping_timeout: Duration::from_millis(300),
        max_missed_pongs: 2,
        ..Config::default()
    }
}

/// Starts a master on its own node.
pub async fn start_master(ca: &CertificateAuthority, config: Config) -> (Node, Upid) {
    let node = node(ca, Role::Master, "master").await;
    let pid = node
        .spawn(
            MASTER_ID,
            move || Master::new(config.clone(), "m"),
            SpawnOptions::default(),
        )
        .unwrap();
    (node, pid)
}

/// Starts an agent on its own node.
pub async fn start_agent(
    ca: &CertificateAuthority,
    master: &Upid,
    name: &str,
    resources: &str,
    runner: Runner,
) -> Node {
    let config = AgentConfig::new(
        master.clone(),
        name.to_owned(),
        r(resources),
        Default::default(),
        7,
        runner,
    );
    start_agent_with(ca, name, config).await
}

/// Starts an agent whose tasks run inside it, on a simulated machine of
/// its own ([`crate::containers::in_process`]).
pub async fn start_in_process_agent(
    ca: &CertificateAuthority,
    master: &Upid,
    name: &str,
    resources: &str,
) -> Node {
    start_agent(ca, master, name, resources, crate::containers::in_process()).await
}

/// Starts an agent with a configuration of the test's own.
pub async fn start_agent_with(ca: &CertificateAuthority, name: &str, config: AgentConfig) -> Node {
    let mut material = ca.issue(Role::Agent, name).unwrap();
    if let Some(credentials) = &config.executor_credentials {
        credentials.trusted_by(&mut material);
    }
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), material);
    node_config.quic.idle_timeout = Duration::from_secs(2);
    node_config.quic.keep_alive_interval = Duration::from_millis(500);
    let node = Node::bind(node_config).await.unwrap();
    node.spawn(
        "agent",
        move || Agent::new(config.clone()),
        SpawnOptions::default(),
    )
    .unwrap();
    node
}

/// A scheduler written as plain async code over an inbox.
#[derive(Debug)]
pub struct Scheduler {
    inbox: Inbox<ToScheduler>,
    master: Upid,
    framework_id: Option<FrameworkId>,
}

impl Scheduler {
    pub async fn subscribe(node: &Node, id: &str, master: &Upid, info: FrameworkInfo) -> Scheduler {
        let inbox = node.inbox::<ToScheduler>(id, 1024).unwrap();
        inbox.link(master);
        inbox
            .send(
                master,
                ToMaster::Subscribe {
                    info,
                    constraints: vec![],
                },
            )
            .unwrap();
        let mut scheduler = Scheduler {
            inbox,
            master: master.clone(),
            framework_id: None,
        };
        match scheduler.next().await {
            ToScheduler::Subscribed { framework_id, .. } => {
                scheduler.framework_id = Some(framework_id)
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
        scheduler
    }

    pub fn id(&self) -> FrameworkId {
        self.framework_id.clone().unwrap()
    }

    pub async fn next(&mut self) -> ToScheduler {
        match self.inbox.recv_within(DEADLINE).await {
            Some(Received::Message(_, message)) => message,
            Some(Received::Exited(pid)) => panic!("lost {pid}"),
            None => panic!("nothing from the master within {DEADLINE:?}"),
        }
    }

    /// The next offers, skipping (and acknowledging) updates.
    pub async fn offers(&mut self) -> Vec<Offer> {
        loop {
            match self.next().await {
                ToScheduler::Offers(offers) => return offers,
                ToScheduler::Update { status } => self.acknowledge(&status),
                _ => {}
            }
        }
    }

    /// The next status update, acknowledged.
    pub async fn update(&mut self) -> TaskStatus {
        loop {
            if let ToScheduler::Update { status } = self.next().await {
                self.acknowledge(&status);
                return status;
            }
        }
    }

    pub fn acknowledge(&self, status: &TaskStatus) {
        if let (Some(update_id), Some(agent_id)) = (status.update_id, status.agent_id.clone()) {
            self.send(ToMaster::Acknowledge {
                framework_id: self.id(),
                agent_id,
                task_id: status.task_id.clone(),
                update_id,
            });
        }
    }

    pub fn send(&self, message: ToMaster) {
        self.inbox.send(&self.master, message).unwrap();
    }
}

/// A framework `fw` of user `u`, subscribed as process `scheduler` on a
/// node of its own (kept alive by the caller).
pub async fn framework(ca: &CertificateAuthority, master: &Upid) -> (Node, Scheduler) {
    let node = node(ca, Role::Framework, "schedulers").await;
    let scheduler =
        Scheduler::subscribe(&node, "scheduler", master, FrameworkInfo::new("fw", "u")).await;
    (node, scheduler)
}

/// A test-executor task that runs for `run_ms`.
pub fn task(id: &str, agent: &AgentId, resources: &str, run_ms: u64) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap(),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: r(resources),
        kind: TaskKind::Command(CommandInfo::shell("true")),
        labels: BTreeMap::from([(RUN_MS_LABEL.to_owned(), run_ms.to_string())]),
    }
}

/// A command task.
pub fn command_task(id: &str, agent: &AgentId, resources: &str, command: CommandInfo) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap(),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: r(resources),
        kind: TaskKind::Command(command),
        labels: BTreeMap::new(),
    }
}
