//! Operator calls: tearing a framework down and marking an agent gone.

use super::*;
use crate::authorization::{Authorizer, DefaultDecision};

/// An agent with one running task of one framework.
fn cluster(h: &mut Harness) -> (Upid, AgentId, Upid, FrameworkId) {
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let mut info = FrameworkInfo::new("fw", "u");
    info.principal = Some("test-principal".into());
    let (framework_id, out) = h.subscribe(&scheduler, info, vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    h.send(
        &scheduler,
        accept(
            &framework_id,
            &[&offer],
            vec![task("t1", &agent_id, "cpus:1;mem:64")],
            0,
        ),
    );
    (agent, agent_id, scheduler, framework_id)
}

fn refusal(out: &[Command], to: &Upid) -> Option<String> {
    out.iter().find_map(|command| match command {
        Command::ToScheduler(pid, ToScheduler::Error { message }) if pid == to => {
            Some(message.clone())
        }
        _ => None,
    })
}

#[test]
fn an_operator_tears_a_framework_down_as_the_acls_allow() {
    let acls = r#"{"teardown_frameworks": [
        {"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "framework_principals": {"type": "NONE"}}
    ]}"#;
    let mut h = Harness::with(Config {
        authorizer: Authorizer::new(acls.parse().unwrap(), DefaultDecision::Allow),
        ..Config::default()
    });
    let (agent, _, scheduler, framework_id) = cluster(&mut h);
    let teardown = ToMaster::OperatorTeardown {
        framework_id: framework_id.clone(),
    };
    // A framework certificate may not, whatever it names.
    let out = h.send(&scheduler, teardown.clone());
    assert!(refusal(&out, &scheduler).unwrap().contains("operator role"));
    // An operator the ACLs do not allow may not.
    let mallory = pid("operator-mallory@10.0.0.7:1");
    let out = h.send_as(
        &mallory,
        PeerIdentity::simulated(Some(Role::Operator), "mallory"),
        teardown.clone(),
    );
    assert!(
        refusal(&out, &mallory)
            .unwrap()
            .contains("teardown_frameworks rule 2"),
        "{out:?}"
    );
    assert!(h.books.frameworks().contains_key(&framework_id));
    // An unknown framework is refused by name.
    let ops = pid("operator-ops@10.0.0.7:1");
    let as_ops = || PeerIdentity::simulated(Some(Role::Operator), "ops");
    let out = h.send_as(
        &ops,
        as_ops(),
        ToMaster::OperatorTeardown {
            framework_id: FrameworkId::new("m1-F99").unwrap(),
        },
    );
    assert!(refusal(&out, &ops).unwrap().contains("no framework m1-F99"));
    // ops may: the framework goes, its agent shuts it down, its scheduler
    // is told.
    let out = h.send_as(&ops, as_ops(), teardown);
    assert_eq!(refusal(&out, &ops), None);
    assert!(
        refusal(&out, &scheduler)
            .unwrap()
            .contains("torn down by the operator ops")
    );
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::ShutdownFramework { framework_id: id }) if *to == agent && *id == framework_id
    )));
    assert!(!h.books.frameworks().contains_key(&framework_id));
    assert_eq!(h.books.denied(), 2);
    // Its running task ended TASK_KILLED, for the operators' views.
    assert!(out.iter().any(|command| matches!(
        command,
        Command::Log(super::super::Event::TaskUpdated { status, .. })
            if status.state == TaskState::Killed
    )));
    assert_eq!(h.books.ended().get(&TaskState::Killed), Some(&1));
    let removed = h.books.completed_frameworks().back().unwrap();
    assert_eq!(removed.completed.back().unwrap().state, TaskState::Killed);
}

#[test]
fn an_agent_marked_gone_ends_its_tasks_and_never_comes_back() {
    let mut h = Harness::new();
    let (agent, agent_id, scheduler, _) = cluster(&mut h);
    let operator = pid("operator@10.0.0.7:1");
    let out = h.send(
        &operator,
        ToMaster::OperatorMarkAgentGone {
            agent_id: AgentId::new("m1-S99").unwrap(),
        },
    );
    assert!(
        refusal(&out, &operator)
            .unwrap()
            .contains("no agent m1-S99")
    );
    // Only operators may.
    let out = h.send(
        &scheduler,
        ToMaster::OperatorMarkAgentGone {
            agent_id: agent_id.clone(),
        },
    );
    assert!(refusal(&out, &scheduler).is_some());
    assert!(h.books.agents().contains_key(&agent_id));

    let out = h.send(
        &operator,
        ToMaster::OperatorMarkAgentGone {
            agent_id: agent_id.clone(),
        },
    );
    let updates = updates_to(&out, &scheduler);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].state, TaskState::GoneByOperator);
    assert_eq!(
        updates[0].reason,
        Some(strata_protocol::Reason::AgentRemovedByOperator)
    );
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::KillTask { .. }) if *to == agent
    )));
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::RegistrationRefused { .. }) if *to == agent
    )));
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToScheduler(to, ToScheduler::AgentLost { .. }) if *to == scheduler
    )));
    assert!(!h.books.agents().contains_key(&agent_id));
    assert_eq!(h.books.ended().get(&TaskState::GoneByOperator), Some(&1));
    // Marking it again changes nothing.
    let again = h.send(
        &operator,
        ToMaster::OperatorMarkAgentGone {
            agent_id: agent_id.clone(),
        },
    );
    assert!(again.is_empty(), "{again:?}");

    // It may not come back under its id, here or after a restart.
    let identity = || PeerIdentity::simulated(Some(Role::Agent), &agent.to_string());
    let back = ToMaster::ReregisterAgent {
        info: returning_agent(&agent_id, "cpus:4;mem:4096"),
        tasks: vec![],
    };
    let out = h.send_as(&agent, identity(), back.clone());
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(_, ToAgent::RegistrationRefused { reason }) if reason.contains("marked gone")
    )));
    let registry = h.books.registry();
    assert_eq!(registry.gone_agents, vec![agent_id.clone()]);
    let mut restarted = Harness::new();
    restarted
        .books
        .recover(restarted.now, registry, h.books.master_epoch() + 1);
    let out = restarted.send_as(&agent, identity(), back);
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(_, ToAgent::RegistrationRefused { reason }) if reason.contains("marked gone")
    )));
    // As a new agent (its work directory wiped), it gets a new id.
    let fresh = h.register_agent(&agent, "cpus:4;mem:4096", "");
    assert_ne!(fresh, agent_id);
}

#[test]
fn marking_agents_gone_follows_the_acls() {
    let acls = r#"{"mark_agents_gone": [
        {"principals": {"values": ["ops"]}, "agents": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "agents": {"type": "NONE"}}
    ]}"#;
    let mut h = Harness::with(Config {
        authorizer: Authorizer::new(acls.parse().unwrap(), DefaultDecision::Allow),
        ..Config::default()
    });
    let (_, agent_id, _, _) = cluster(&mut h);
    let gone = ToMaster::OperatorMarkAgentGone {
        agent_id: agent_id.clone(),
    };
    let dashboard = pid("operator-dashboard@10.0.0.7:1");
    let out = h.send_as(
        &dashboard,
        PeerIdentity::simulated(Some(Role::Operator), "dashboard"),
        gone.clone(),
    );
    assert!(
        refusal(&out, &dashboard)
            .unwrap()
            .contains("mark_agents_gone rule 2"),
        "{out:?}"
    );
    assert!(h.books.agents().contains_key(&agent_id));
    let ops = pid("operator-ops@10.0.0.7:1");
    let out = h.send_as(
        &ops,
        PeerIdentity::simulated(Some(Role::Operator), "ops"),
        gone,
    );
    assert_eq!(refusal(&out, &ops), None);
    assert!(!h.books.agents().contains_key(&agent_id));
}
