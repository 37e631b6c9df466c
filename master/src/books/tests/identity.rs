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
