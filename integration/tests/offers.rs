//! The two-level scheduling core over the real runtime: a master, agents
//! and schedulers on separate nodes, talking QUIC on 127.0.0.1. Tasks run
//! in the agent's in-process test executor.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_agent::process::RUN_MS_LABEL;
use strata_agent::{Agent, AgentConfig};
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{
    AgentId, CommandInfo, Filters, FrameworkId, FrameworkInfo, Offer, Operation, Resources, TaskId,
    TaskInfo, TaskKind, TaskState, TaskStatus, ToMaster, ToScheduler,
};
use strata_runtime::{CertificateAuthority, Inbox, Node, NodeConfig, Received, SpawnOptions, Upid};

const DEADLINE: Duration = Duration::from_secs(20);

fn r(text: &str) -> Resources {
    text.parse().unwrap()
}

async fn node(ca: &CertificateAuthority, name: &str) -> Node {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), ca.issue(name).unwrap());
    config.quic.idle_timeout = Duration::from_secs(2);
    config.quic.keep_alive_interval = Duration::from_millis(500);
    Node::bind(config).await.unwrap()
}

fn fast_master() -> Config {
    Config {
        allocation_interval: Duration::from_millis(100),
        agent_ping_timeout: Duration::from_millis(300),
        max_missed_pongs: 2,
        ..Config::default()
    }
}

async fn start_master(ca: &CertificateAuthority, config: Config) -> (Node, Upid) {
    let node = node(ca, "master").await;
    let pid = node
        .spawn(
            MASTER_ID,
            move || Master::new(config.clone(), "m"),
            SpawnOptions::default(),
        )
        .unwrap();
    (node, pid)
}

async fn start_agent(
    ca: &CertificateAuthority,
    master: &Upid,
    name: &str,
    resources: &str,
) -> Node {
    let node = node(ca, name).await;
    let config = AgentConfig {
        master: master.clone(),
        hostname: name.to_owned(),
        resources: r(resources),
        attributes: Default::default(),
        seed: 7,
    };
    node.spawn(
        "agent",
        move || Agent::new(config.clone()),
        SpawnOptions::default(),
    )
    .unwrap();
    node
}

/// A scheduler written as plain async code over an inbox.
struct Scheduler {
    inbox: Inbox<ToScheduler>,
    master: Upid,
    framework_id: Option<FrameworkId>,
}

impl Scheduler {
    async fn subscribe(node: &Node, id: &str, master: &Upid, info: FrameworkInfo) -> Scheduler {
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
            ToScheduler::Subscribed { framework_id } => scheduler.framework_id = Some(framework_id),
            other => panic!("expected Subscribed, got {other:?}"),
        }
        scheduler
    }

    fn id(&self) -> FrameworkId {
        self.framework_id.clone().unwrap()
    }

    async fn next(&mut self) -> ToScheduler {
        match self.inbox.recv_within(DEADLINE).await {
            Some(Received::Message(_, message)) => message,
            Some(Received::Exited(pid)) => panic!("lost {pid}"),
            None => panic!("nothing from the master within {DEADLINE:?}"),
        }
    }

    /// The next offers, skipping (and acknowledging) updates.
    async fn offers(&mut self) -> Vec<Offer> {
        loop {
            match self.next().await {
                ToScheduler::Offers(offers) => return offers,
                ToScheduler::Update { status } => self.acknowledge(&status),
                _ => {}
            }
        }
    }

    /// The next status update, acknowledged.
    async fn update(&mut self) -> TaskStatus {
        loop {
            if let ToScheduler::Update { status } = self.next().await {
                self.acknowledge(&status);
                return status;
            }
        }
    }

    fn acknowledge(&self, status: &TaskStatus) {
        if let (Some(update_id), Some(agent_id)) = (status.update_id, status.agent_id.clone()) {
            self.send(ToMaster::Acknowledge {
                framework_id: self.id(),
                agent_id,
                task_id: status.task_id.clone(),
                update_id,
            });
        }
    }

    fn send(&self, message: ToMaster) {
        self.inbox.send(&self.master, message).unwrap();
    }
}

fn task(id: &str, agent: &AgentId, resources: &str, run_ms: u64) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap(),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: r(resources),
        kind: TaskKind::Command(CommandInfo::shell("true")),
        labels: BTreeMap::from([(RUN_MS_LABEL.to_owned(), run_ms.to_string())]),
    }
}

/// The seeds' walk-through: an agent with `cpus:4;mem:4096`; framework 1
/// is offered all of it and launches ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩; the
/// remaining ⟨1 CPU, 1 GB⟩ is offered to framework 2; when the tasks
/// finish their resources are offered again.
#[test]
fn seed_walkthrough_over_quic() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _agent = start_agent(&ca, &master, "agent-1", "cpus:4;mem:4096").await;
        let schedulers = node(&ca, "schedulers").await;

        let mut fw1 = Scheduler::subscribe(
            &schedulers,
            "scheduler-1",
            &master,
            FrameworkInfo::new("fw1", "alice"),
        )
        .await;
        let offers = fw1.offers().await;
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].resources, r("cpus:4;mem:4096"));
        let agent_id = offers[0].agent_id.clone();
        let mut fw2 = Scheduler::subscribe(
            &schedulers,
            "scheduler-2",
            &master,
            FrameworkInfo::new("fw2", "bob"),
        )
        .await;

        fw1.send(ToMaster::Accept {
            framework_id: fw1.id(),
            offer_ids: vec![offers[0].id.clone()],
            operations: vec![Operation::Launch(vec![
                task("t1", &agent_id, "cpus:2;mem:1024", 1500),
                task("t2", &agent_id, "cpus:1;mem:2048", 1500),
            ])],
            // The rest is refused for a second, so it goes to framework 2;
            // the refusal is over by the time the tasks finish.
            filters: Filters {
                refuse: Duration::from_secs(1),
            },
        });
        let second = fw2.offers().await;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].resources, r("cpus:1;mem:1024"));
        // Framework 2 keeps its offer; framework 1's tasks run and finish.
        let mut states: BTreeMap<String, Vec<TaskState>> = BTreeMap::new();
        while states.values().map(Vec::len).sum::<usize>() < 4 {
            let status = fw1.update().await;
            states
                .entry(status.task_id.to_string())
                .or_default()
                .push(status.state);
        }
        for task in ["t1", "t2"] {
            assert_eq!(
                states[task],
                vec![TaskState::Running, TaskState::Finished],
                "{task}"
            );
        }
        // Their ⟨3 CPU, 3 GB⟩ is offered again.
        let again = fw1.offers().await;
        let mut offered = Resources::new();
        for offer in &again {
            offered.add(&offer.resources);
        }
        assert_eq!(offered, r("cpus:3;mem:3072"));
    });
}

#[test]
fn a_lost_agent_rescinds_its_offers_and_reports_its_tasks() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let agent = start_agent(&ca, &master, "doomed", "cpus:2;mem:2048").await;
        let schedulers = node(&ca, "schedulers").await;
        let mut fw = Scheduler::subscribe(
            &schedulers,
            "scheduler",
            &master,
            FrameworkInfo::new("fw", "u"),
        )
        .await;
        let offers = fw.offers().await;
        let agent_id = offers[0].agent_id.clone();
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offers[0].id.clone()],
            operations: vec![Operation::Launch(vec![TaskInfo {
                labels: BTreeMap::new(),
                ..task("forever", &agent_id, "cpus:1;mem:512", 0)
            }])],
            filters: Filters::default(),
        });
        assert_eq!(fw.update().await.state, TaskState::Running);
        agent.shutdown();
        let mut lost_task = false;
        let mut lost_agent = false;
        while !(lost_task && lost_agent) {
            match fw.next().await {
                ToScheduler::Update { status } => {
                    assert_eq!(status.state, TaskState::Lost);
                    lost_task = true;
                }
                ToScheduler::AgentLost { agent_id: lost } => {
                    assert_eq!(lost, agent_id);
                    lost_agent = true;
                }
                _ => {}
            }
        }
    });
}
