//! Who may do what: roles, agent ids bound to certificates, framework
//! ids bound to principals.

use super::*;

fn as_role(role: Role, name: &str) -> PeerIdentity {
    PeerIdentity::simulated(Some(role), name)
}

fn refusal_to_agent(out: &[Command]) -> Option<String> {
    out.iter().find_map(|command| match command {
        Command::ToAgent(_, ToAgent::RegistrationRefused { reason }) => Some(reason.clone()),
        _ => None,
    })
}

fn error_to_scheduler(out: &[Command]) -> Option<String> {
    out.iter().find_map(|command| match command {
        Command::ToScheduler(_, ToScheduler::Error { message }) => Some(message.clone()),
        _ => None,
    })
}

fn agent_info(id: Option<&AgentId>) -> AgentInfo {
    AgentInfo {
        id: id.cloned(),
        hostname: "h".into(),
        resources: r("cpus:2;mem:1024"),
        attributes: Default::default(),
    }
}

#[test]
fn only_agent_certificates_register_agents() {
    let mut h = Harness::new();
    let impostor = pid("agent@10.0.0.66:5051");
    for role in [
        Role::Framework,
        Role::Operator,
        Role::Executor,
        Role::Master,
    ] {
        let out = h.send_as(
            &impostor,
            as_role(role, "x"),
            ToMaster::RegisterAgent {
                info: agent_info(None),
            },
        );
        let reason = refusal_to_agent(&out).expect("refused");
        assert!(reason.contains("agent role"), "{reason}");
    }
    assert!(h.books.agents().is_empty());
    assert_eq!(h.books.denied(), 4);
}

#[test]
fn an_agent_id_is_bound_to_the_certificate_that_registered_it() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let out = h.send_as(
        &agent,
        as_role(Role::Agent, "node-1"),
        ToMaster::RegisterAgent {
            info: agent_info(None),
        },
    );
    let agent_id = out
        .iter()
        .find_map(|command| match command {
            Command::ToAgent(_, ToAgent::AgentRegistered { agent_id, .. }) => {
                Some(agent_id.clone())
            }
            _ => None,
        })
        .expect("registered");
    // Another agent certificate claims that id from elsewhere.
    let thief = pid("agent@10.0.0.2:5051");
    let out = h.send_as(
        &thief,
        as_role(Role::Agent, "node-2"),
        ToMaster::ReregisterAgent {
            info: agent_info(Some(&agent_id)),
            tasks: vec![],
        },
    );
    let reason = refusal_to_agent(&out).expect("refused");
    assert!(reason.contains("node-1"), "{reason}");
    assert_eq!(h.books.agents()[&agent_id].pid, agent);
    // Or in a first registration naming it.
    let out = h.send_as(
        &thief,
        as_role(Role::Agent, "node-2"),
        ToMaster::RegisterAgent {
            info: agent_info(Some(&agent_id)),
        },
    );
    assert!(refusal_to_agent(&out).is_some_and(|reason| reason.contains("node-1")));
    assert_eq!(h.books.agents().len(), 1);
    // The registry keeps the binding for a restarted master.
    let registry = h.books.registry();
    assert_eq!(registry.agents[0].certificate_name, "node-1");
    let mut restarted = Harness::new();
    restarted.books.recover(restarted.now, registry, 2);
    let out = restarted.send_as(
        &thief,
        as_role(Role::Agent, "node-2"),
        ToMaster::ReregisterAgent {
            info: agent_info(Some(&agent_id)),
            tasks: vec![],
        },
    );
    assert!(refusal_to_agent(&out).is_some());
    // Its own certificate, restarted on another port, takes it back.
    let moved = pid("agent@10.0.0.1:5052");
    let out = restarted.send_as(
        &moved,
        as_role(Role::Agent, "node-1"),
        ToMaster::ReregisterAgent {
            info: agent_info(Some(&agent_id)),
            tasks: vec![],
        },
    );
    assert!(refusal_to_agent(&out).is_none(), "{out:?}");
    assert_eq!(restarted.books.agents()[&agent_id].pid, moved);
}

#[test]
fn a_framework_belongs_to_its_principal() {
    let mut h = Harness::new();
    let alice = pid("scheduler-a@10.0.0.9:4000");
    let out = h.send_as(
        &alice,
        as_role(Role::Framework, "alice"),
        ToMaster::Subscribe {
            info: FrameworkInfo::new("fw", "u"),
            constraints: vec![],
        },
    );
    let framework_id = out
        .iter()
        .find_map(|command| match command {
            Command::ToScheduler(_, ToScheduler::Subscribed { framework_id, .. }) => {
                Some(framework_id.clone())
            }
            _ => None,
        })
        .expect("subscribed");
    assert_eq!(
        h.books.frameworks()[&framework_id]
            .info
            .principal
            .as_deref(),
        Some("alice")
    );
    // Mallory read the id from /state and subscribes with it.
    let mallory = pid("scheduler-m@10.0.0.10:4000");
    let mut info = FrameworkInfo::new("fw", "u");
    info.id = Some(framework_id.clone());
    let out = h.send_as(
        &mallory,
        as_role(Role::Framework, "mallory"),
        ToMaster::Subscribe {
            info: info.clone(),
            constraints: vec![],
        },
    );
    let message = error_to_scheduler(&out).expect("refused");
    assert!(
        message.contains("alice") && message.contains("mallory"),
        "{message}"
    );
    assert_eq!(
        h.books.frameworks()[&framework_id].pid.as_ref(),
        Some(&alice)
    );
    // Naming alice as the principal does not help either.
    info.principal = Some("alice".into());
    let out = h.send_as(
        &mallory,
        as_role(Role::Framework, "mallory"),
        ToMaster::Subscribe {
            info: info.clone(),
            constraints: vec![],
        },
    );
    let message = error_to_scheduler(&out).expect("refused");
    assert!(message.contains("certificate"), "{message}");
    // Alice's own failover from elsewhere is accepted.
    let alice_again = pid("scheduler-a@10.0.0.11:4000");
    let out = h.send_as(
        &alice_again,
        as_role(Role::Framework, "alice"),
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    assert!(error_to_scheduler(&out).is_none_or(|message| message.contains("took over")));
    assert_eq!(
        h.books.frameworks()[&framework_id].pid.as_ref(),
        Some(&alice_again)
    );
    assert_eq!(h.books.denied(), 2);
}

#[test]
fn only_operators_kill_other_frameworks_tasks() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("fw", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let launched = task("t1", &agent_id, "cpus:1;mem:128");
    h.send(
        &scheduler,
        accept(&framework_id, &[&offer], vec![launched.clone()], 5),
    );
    let kill = ToMaster::OperatorKill {
        framework_id: framework_id.clone(),
        task_id: launched.task_id.clone(),
    };
    let other = pid("scheduler-2@10.0.0.10:4000");
    let out = h.send_as(&other, as_role(Role::Framework, "other"), kill.clone());
    assert!(error_to_scheduler(&out).is_some_and(|message| message.contains("operator role")));
    assert!(
        !out.iter()
            .any(|command| matches!(command, Command::ToAgent(_, ToAgent::KillTask { .. })))
    );
    let operator = pid("operator@10.0.0.12:4000");
    let out = h.send_as(&operator, as_role(Role::Operator, "ops"), kill);
    assert!(
        out.iter()
            .any(|command| matches!(command, Command::ToAgent(_, ToAgent::KillTask { .. })))
    );
}

/// One agent cannot speak for another's tasks: a task placed on agent B
/// that agent A reports (and then drops) stays B's and running, and A's
/// updates about it go nowhere.
#[test]
fn an_agent_speaks_only_of_its_own_tasks() {
    let mut h = Harness::new();
    let (a, b) = (pid("agent@10.0.0.1:5051"), pid("agent@10.0.0.2:5051"));
    let a_id = h.register_agent(&a, "cpus:1;mem:128", "");
    let b_id = h.register_agent(&b, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("fw", "u"), vec![]);
    let offer = offers_to(&out, &scheduler)
        .into_iter()
        .find(|offer| offer.agent_id == b_id)
        .unwrap();
    let launched = task("on-b", &b_id, "cpus:1;mem:128");
    h.send(
        &scheduler,
        accept(&framework_id, &[&offer], vec![launched.clone()], 0),
    );
    let stolen = Task {
        info: launched.clone(),
        framework_id: framework_id.clone(),
        state: TaskState::Running,
        status: None,
    };
    let reregister = |tasks: Vec<Task>| ToMaster::ReregisterAgent {
        info: AgentInfo {
            id: Some(a_id.clone()),
            hostname: "h".into(),
            resources: r("cpus:1;mem:128"),
            attributes: Default::default(),
        },
        tasks,
    };
    h.send(&a, reregister(vec![stolen]));
    let out = h.send(&a, reregister(vec![]));
    assert!(updates_to(&out, &scheduler).is_empty(), "{out:?}");
    let kept = &h.books.frameworks()[&framework_id].tasks[&launched.task_id];
    assert_eq!(
        (kept.info.agent_id.clone(), kept.state),
        (b_id.clone(), TaskState::Staging)
    );
    // Nor does A's word about it reach the framework.
    let lie = TaskStatus {
        task_id: launched.task_id.clone(),
        state: TaskState::Failed,
        source: Source::Executor,
        reason: None,
        message: "lies".into(),
        agent_id: Some(b_id.clone()),
        executor_id: None,
        update_id: Some(UpdateId(9)),
        timestamp_ms: 0,
        sandbox: None,
    };
    let out = h.send(
        &a,
        ToMaster::StatusUpdate {
            framework_id: framework_id.clone(),
            status: lie,
        },
    );
    assert!(updates_to(&out, &scheduler).is_empty(), "{out:?}");
    assert!(
        !h.books.frameworks()[&framework_id].tasks[&launched.task_id]
            .state
            .is_terminal()
    );
}

#[test]
fn one_agent_certificate_holds_a_bounded_number_of_agent_ids() {
    let mut h = Harness::with(Config {
        max_agents_per_certificate: 2,
        ..Config::default()
    });
    let refusals: Vec<bool> = (0..3)
        .map(|index| {
            let out = h.send_as(
                &pid(&format!("agent-{index}@10.0.0.66:5051")),
                as_role(Role::Agent, "stolen"),
                ToMaster::RegisterAgent {
                    info: agent_info(None),
                },
            );
            refusal_to_agent(&out).is_some_and(|reason| reason.contains("holds 2 agent ids"))
        })
        .collect();
    assert_eq!(refusals, [false, false, true]);
    assert_eq!(h.books.agents().len(), 2);
}

/// A master with a registry knows every framework it issued: an id it
/// does not know is nobody's to take.
#[test]
fn a_durable_master_refuses_framework_ids_it_never_issued() {
    let mut h = Harness::new();
    h.books
        .recover(h.now, crate::registry::Registry::empty(), 1);
    let mut info = FrameworkInfo::new("fw", "u");
    info.id = Some(FrameworkId::new("forgotten-F7").unwrap());
    let out = h.send(
        &pid("scheduler-1@10.0.0.9:4000"),
        ToMaster::Subscribe {
            info,
            constraints: vec![],
        },
    );
    assert!(error_to_scheduler(&out).is_some_and(|message| message.contains("not known")));
    assert!(h.books.frameworks().is_empty());
}
