//! The two-level scheduling core over the real runtime: a master, agents
//! and schedulers on separate nodes, talking QUIC on 127.0.0.1. Tasks run
//! in the agent's in-process test executor.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_agent::AgentConfig;
use strata_integration::cluster::{
    Scheduler, fast_master, node, r, start_agent_with, start_in_process_agent, start_master, task,
};
use strata_protocol::{
    Filters, FrameworkInfo, Operation, Resources, TaskInfo, TaskState, ToMaster, ToScheduler,
};
use strata_runtime::{CertificateAuthority, Role};

/// The seeds' walk-through: an agent with `cpus:4;mem:4096`; framework 1
/// is offered all of it and launches ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩; the
/// remaining ⟨1 CPU, 1 GB⟩ is offered to framework 2; when the tasks
/// finish their resources are offered again.
#[test]
fn seed_walkthrough_over_quic() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _agent = start_in_process_agent(&ca, &master, "agent-1", "cpus:4;mem:4096")
        .await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;

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
        // Framework 2 declines for an hour; framework 1's tasks run and
        // finish.
        fw2.send(ToMaster::Decline {
            framework_id: fw2.id(),
            offer_ids: vec![second[0].id.clone()],
            filters: Filters {
                refuse: Duration::from_secs(3600),
            },
        });
        // What the tasks free is offered again, to one framework or the
        // other: framework 2's refusal holds back only what it declined.
        let mut states: BTreeMap<String, Vec<TaskState>> = BTreeMap::new();
        let mut offered = Resources::new();
        while states.values().map(Vec::len).sum::<usize>() < 6
            || !offered.contains(&r("cpus:3;mem:3072"))
        {
            tokio::select! {
                message = fw1.next() => match message {
                    ToScheduler::Update { status } => {
                        fw1.acknowledge(&status);
                        states.entry(status.task_id.to_string()).or_default().push(status.state);
                    }
                    ToScheduler::Offers(offers) => offers.iter().for_each(|offer| offered.add(&offer.resources)),
                    _ => {}
                },
                message = fw2.next() => {
                    if let ToScheduler::Offers(offers) = message {
                        offers.iter().for_each(|offer| offered.add(&offer.resources));
                    }
                }
            }
        }
        for task in ["t1", "t2"] {
            assert_eq!(
                states[task],
                vec![TaskState::Starting, TaskState::Running, TaskState::Finished],
                "{task}"
            );
        }
        // Nothing was offered twice: in all, at most the agent.
        assert!(r("cpus:4;mem:4096").contains(&offered), "{offered}");
    });
}

#[test]
fn a_lost_agent_rescinds_its_offers_and_reports_its_tasks() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let agent = start_in_process_agent(&ca, &master, "doomed", "cpus:2;mem:2048").await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
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
        assert_eq!(fw.update().await.state, TaskState::Starting);
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

/// Status updates are delivered at least once and in order per task: an
/// update the framework does not acknowledge is resent (same update id),
/// and the task's next update waits behind it.
#[test]
fn unacknowledged_updates_are_resent_and_hold_back_the_next() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let mut config = AgentConfig::new(
            master.clone(),
            "agent".into(),
            r("cpus:1;mem:512"),
            Default::default(),
            3,
            strata_integration::containers::in_process(),
        );
        config.status_update_retry = Duration::from_millis(200);
        let _agent = start_agent_with(&ca, "agent", config).await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut fw = Scheduler::subscribe(
            &schedulers,
            "scheduler",
            &master,
            FrameworkInfo::new("fw", "u"),
        )
        .await;
        let offer = fw.offers().await.remove(0);
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(vec![task(
                "t",
                &offer.agent_id,
                "cpus:0.5;mem:64",
                50,
            )])],
            filters: Filters::default(),
        });
        // Withhold the acknowledgement of RUNNING: it comes again, with
        // the same update id, and FINISHED (due after 50 ms) does not.
        let starting = fw.update().await;
        assert_eq!(starting.state, TaskState::Starting);
        let mut running = Vec::new();
        while running.len() < 3 {
            if let ToScheduler::Update { status } = fw.next().await {
                assert_eq!(
                    status.state,
                    TaskState::Running,
                    "nothing overtakes an unacknowledged update"
                );
                running.push(status);
            }
        }
        assert!(
            running
                .iter()
                .all(|status| status.update_id == running[0].update_id)
        );
        fw.acknowledge(&running[0]);
        // Now FINISHED follows; acknowledged, nothing more comes for it.
        loop {
            if let ToScheduler::Update { status } = fw.next().await {
                if status.state == TaskState::Running {
                    continue; // a resend already on its way
                }
                assert_eq!(status.state, TaskState::Finished);
                fw.acknowledge(&status);
                break;
            }
        }
    });
}

/// Offers the master's node refuses to send (here: larger than what it
/// may queue for the framework's node) never reach the framework, and
/// the master does not keep them outstanding: they come back as a
/// decline would, instead of holding the agent's resources until the
/// framework goes.
#[test]
fn offers_the_master_could_not_send_are_not_kept() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let mut config = strata_runtime::NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            ca.issue(Role::Master, "master").unwrap(),
        );
        // Room for the small messages (registration, subscription, pings),
        // not for an offer that carries the agent's long attributes.
        config.quic.send_queue_bytes = 2048;
        let master_node = strata_runtime::Node::bind(config).await.unwrap();
        let (publisher, snapshots) = strata_master::state::channel();
        let master = master_node
            .spawn(
                strata_master::MASTER_ID,
                move || {
                    strata_master::Master::new(fast_master(), "m").publishing(publisher.clone())
                },
                strata_runtime::SpawnOptions::default(),
            )
            .unwrap();
        let attributes = format!("notes:{}", "x".repeat(3000)).parse().unwrap();
        let agent_config = AgentConfig::new(
            master.clone(),
            "talkative".into(),
            r("cpus:2;mem:1024"),
            attributes,
            7,
            strata_integration::containers::in_process(),
        );
        let _agent = start_agent_with(&ca, "talkative", agent_config).await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let _fw = Scheduler::subscribe(
            &schedulers,
            "scheduler",
            &master,
            FrameworkInfo::new("fw", "u"),
        )
        .await;
        // Snapshots taken by the master after each request: they carry its
        // node's counters, so the first refused offer shows in them.
        let fresh = |snapshots: strata_master::state::Snapshots| async move {
            tokio::task::spawn_blocking(move || snapshots.fresh(Duration::from_secs(5)))
                .await
                .unwrap()
                .unwrap()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fresh(snapshots.clone())
            .await
            .messages
            .dropped_send_queue_full
            == 0
        {
            assert!(std::time::Instant::now() < deadline, "no offer was refused");
        }
        // Refused offers come back at once, and the agent is kept from
        // the framework for the default 5 s: within the next 3 s a
        // snapshot shows no offer, and none after it shows one again.
        let window = std::time::Instant::now() + Duration::from_secs(3);
        let mut given_back = false;
        while std::time::Instant::now() < window {
            let state = fresh(snapshots.clone()).await;
            assert_eq!(state.agents.len(), 1);
            if state.offers.is_empty() {
                given_back = true;
            } else {
                assert!(!given_back, "offered again within the refusal");
            }
        }
        assert!(given_back, "the offer stayed outstanding");
    });
}
