//! Framework failover over QUIC: a scheduler that goes away keeps its
//! framework's tasks for the framework's failover timeout; a new scheduler
//! subscribing with the framework's id within it takes them over. After
//! it, the tasks are killed, their resources go to others and the old id
//! is refused. And an agent certificate cannot speak as the master.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_frameworks::scheduler::{self, SchedulerConfig, SchedulerDriver};
use strata_integration::cluster::{
    DEADLINE, Scheduler, fast_master, node, r, start_in_process_agent, start_master, task,
};
use strata_protocol::{FrameworkInfo, Offer, Operation, Reason, TaskState, TaskStatus, ToMaster};
use strata_runtime::{CertificateAuthority, Node, Role, Upid};

fn with_failover(seconds: u64) -> FrameworkInfo {
    FrameworkInfo {
        failover_timeout: Duration::from_secs(seconds),
        ..FrameworkInfo::new("service", "u")
    }
}

/// Subscribes a scheduler on a node of its own and launches one long task
/// on the first offer, taking `resources`; returns once it runs.
async fn launch_long_task(
    ca: &CertificateAuthority,
    master: &Upid,
    info: FrameworkInfo,
    resources: &str,
) -> (Node, Scheduler) {
    let node = node(ca, Role::Framework, "scheduler-1").await;
    let mut scheduler = Scheduler::subscribe(&node, "scheduler", master, info).await;
    let offers = scheduler.offers().await;
    scheduler.send(ToMaster::Accept {
        framework_id: scheduler.id(),
        offer_ids: vec![offers[0].id.clone()],
        operations: vec![Operation::Launch(vec![task(
            "long",
            &offers[0].agent_id,
            resources,
            600_000,
        )])],
        filters: Default::default(),
    });
    while scheduler.update().await.state != TaskState::Running {}
    (node, scheduler)
}

#[test]
fn a_scheduler_replaced_within_the_failover_timeout_keeps_its_tasks() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _agent = start_in_process_agent(&ca, &master, "agent", "cpus:2;mem:1024").await;
        let (first_node, first) =
            launch_long_task(&ca, &master, with_failover(60), "cpus:1;mem:128").await;
        let framework_id = first.id();
        // The scheduler's process goes away without a word.
        drop(first);
        first_node.close(Duration::from_secs(1)).await;
        drop(first_node);

        // The same principal, from another process.
        let second_node = node(&ca, Role::Framework, "scheduler-1").await;
        let info = FrameworkInfo {
            id: Some(framework_id.clone()),
            ..with_failover(60)
        };
        let mut second = Scheduler::subscribe(&second_node, "scheduler", &master, info).await;
        assert_eq!(second.id(), framework_id);
        // The new scheduler is offered what the task leaves free...
        let offers = second.offers().await;
        assert_eq!(offers[0].resources, r("cpus:1;mem:896"));
        // ...and learns that the task still runs.
        second.send(ToMaster::Reconcile {
            framework_id,
            tasks: vec![],
        });
        let status = loop {
            let status = second.update().await;
            if status.reason == Some(Reason::Reconciliation) {
                break status;
            }
        };
        assert_eq!(status.task_id.as_str(), "long");
        assert_eq!(status.state, TaskState::Running);
    });
}

/// Records the master's error and otherwise does nothing.
struct Returning {
    error: Arc<Mutex<Option<String>>>,
}

impl scheduler::Scheduler for Returning {
    fn resource_offers(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, _: Vec<Offer>) {}

    fn status_update(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, _: &TaskStatus) {}

    fn error(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, message: &str) {
        *self.error.lock().unwrap() = Some(message.to_owned());
    }
}

#[test]
fn beyond_the_failover_timeout_tasks_are_killed_and_the_id_refused() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _agent = start_in_process_agent(&ca, &master, "agent", "cpus:2;mem:1024").await;
        // The task takes the whole agent, so another framework is offered
        // nothing while it runs.
        let (first_node, first) =
            launch_long_task(&ca, &master, with_failover(1), "cpus:2;mem:1024").await;
        let framework_id = first.id();
        let others = node(&ca, Role::Framework, "others").await;
        let mut other =
            Scheduler::subscribe(&others, "other", &master, FrameworkInfo::new("other", "u")).await;
        drop(first);
        first_node.close(Duration::from_secs(1)).await;
        drop(first_node);

        // A second after the scheduler went, its task is killed and the
        // whole agent is offered to the other framework.
        let offers = other.offers().await;
        assert_eq!(offers[0].resources, r("cpus:2;mem:1024"));

        // A scheduler coming back under the old id is refused and stops.
        let error = Arc::new(Mutex::new(None));
        let config = SchedulerConfig::new(
            master.clone(),
            FrameworkInfo {
                id: Some(framework_id),
                ..with_failover(1)
            },
        );
        let recorded = error.clone();
        let pid = scheduler::spawn(&others, "returning", config, move || Returning {
            error: recorded.clone(),
        })
        .unwrap();
        tokio::time::timeout(DEADLINE, scheduler::wait(&others, &pid))
            .await
            .expect("a refused scheduler stops")
            .unwrap();
        let message = error.lock().unwrap().clone().unwrap();
        assert!(message.contains("was removed"), "{message}");
    });
}

/// An agent's certificate (say, stolen from a compromised node) cannot
/// speak as the master: the runtime drops what it sends under the
/// master's name, the agent ignores what it sends under its own, the
/// master will not let it take the real agent's id, and the agent goes on
/// serving its master.
#[test]
fn an_agent_certificate_cannot_speak_as_the_master() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let agent = start_in_process_agent(&ca, &master, "agent-1", "cpus:2;mem:1024").await;
        let agent_pid = agent.pid("agent").unwrap();
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut framework = Scheduler::subscribe(
            &schedulers,
            "scheduler",
            &master,
            FrameworkInfo::new("fw", "u"),
        )
        .await;
        let offers = framework.offers().await;
        let agent_id = offers[0].agent_id.clone();

        let attacker = node(&ca, Role::Agent, "agent-stolen").await;
        let mut as_master = attacker
            .inbox::<strata_protocol::ToAgent>("master", 16)
            .unwrap();
        let mut as_itself = attacker
            .inbox::<strata_protocol::ToAgent>("agent", 16)
            .unwrap();
        let takeover = strata_protocol::ToAgent::AgentReregistered {
            agent_id: strata_protocol::AgentId::new("evil").unwrap(),
            ping_timeout: Duration::from_secs(3600),
            epoch: u64::MAX,
        };
        let shutdown = strata_protocol::ToAgent::ShutdownFramework {
            framework_id: framework.id(),
        };
        for inbox in [&as_master, &as_itself] {
            inbox.send(&agent_pid, takeover.clone()).unwrap();
            inbox.send(&agent_pid, shutdown.clone()).unwrap();
        }
        // It claims the real agent's id at the master.
        let claim = ToMaster::ReregisterAgent {
            info: strata_protocol::AgentInfo {
                id: Some(agent_id.clone()),
                hostname: "stolen".into(),
                resources: r("cpus:64;mem:65536"),
                attributes: Default::default(),
            },
            tasks: vec![],
        };
        as_itself.send(&master, claim).unwrap();
        let answer = as_itself.message_within(DEADLINE).await;
        assert!(
            matches!(&answer, Some((_, strata_protocol::ToAgent::RegistrationRefused { reason }))
                if reason.contains("agent-1")),
            "{answer:?}"
        );

        // The framework still runs its task on the real agent to its end.
        framework.send(ToMaster::Accept {
            framework_id: framework.id(),
            offer_ids: vec![offers[0].id.clone()],
            operations: vec![Operation::Launch(vec![task(
                "after",
                &agent_id,
                "cpus:1;mem:128",
                200,
            )])],
            filters: Default::default(),
        });
        loop {
            let status = framework.update().await;
            assert!(
                matches!(
                    status.state,
                    TaskState::Starting | TaskState::Running | TaskState::Finished
                ),
                "{status:?}"
            );
            if status.state == TaskState::Finished {
                break;
            }
        }
        assert!(agent.metrics().dropped_impersonation >= 2);
        assert!(
            as_master
                .message_within(Duration::from_millis(100))
                .await
                .is_none()
        );
    });
}

/// A registry write that fails holds back what depends on it: a new
/// framework hears it is subscribed only once the master has it on disk.
#[test]
fn nothing_is_acknowledged_before_the_registry_has_it() {
    let work_dir =
        std::env::temp_dir().join(format!("strata-registry-hold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master_node = node(&ca, Role::Master, "master").await;
        let dir = work_dir.clone();
        let master = master_node
            .spawn(
                strata_master::MASTER_ID,
                move || strata_master::Master::durable(fast_master(), "m", &dir),
                strata_runtime::SpawnOptions::default(),
            )
            .unwrap();
        // The registry's directory turns into a file: writes fail.
        let registry_dir = strata_master::registry::path(&work_dir)
            .parent()
            .unwrap()
            .to_owned();
        let deadline = std::time::Instant::now() + DEADLINE;
        while !registry_dir.is_dir() {
            assert!(
                std::time::Instant::now() < deadline,
                "the master never wrote its registry"
            );
            tokio::task::yield_now().await;
        }
        let away = registry_dir.with_extension("away");
        std::fs::rename(&registry_dir, &away).unwrap();
        std::fs::write(&registry_dir, b"not a directory").unwrap();

        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut inbox = schedulers
            .inbox::<strata_protocol::ToScheduler>("scheduler", 16)
            .unwrap();
        let subscribe = ToMaster::Subscribe {
            info: FrameworkInfo::new("held", "u"),
            constraints: vec![],
        };
        inbox.send(&master, subscribe).unwrap();
        let early = inbox.message_within(Duration::from_millis(700)).await;
        assert!(
            early.is_none(),
            "answered before the registry had it: {early:?}"
        );

        std::fs::remove_file(&registry_dir).unwrap();
        std::fs::rename(&away, &registry_dir).unwrap();
        let answer = inbox.message_within(DEADLINE).await;
        assert!(
            matches!(
                answer,
                Some((_, strata_protocol::ToScheduler::Subscribed { .. }))
            ),
            "{answer:?}"
        );
        let registry = strata_master::registry::load(
            &strata_runtime::durable::Disk::real(),
            &strata_master::registry::path(&work_dir),
        )
        .unwrap()
        .unwrap();
        assert_eq!(registry.frameworks.len(), 1);
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}
