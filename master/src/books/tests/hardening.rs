//! Values from peers that must not break the books: durations that would
//! overflow the clock, ids reused after a restart, descriptions too large
//! for the registry, and frameworks or tasks without bound.

use super::*;

fn subscribed_id(out: &[Command]) -> Option<FrameworkId> {
    out.iter().find_map(|command| match command {
        Command::ToScheduler(_, ToScheduler::Subscribed { framework_id, .. }) => {
            Some(framework_id.clone())
        }
        _ => None,
    })
}

fn error_to(out: &[Command]) -> Option<String> {
    out.iter().find_map(|command| match command {
        Command::ToScheduler(_, ToScheduler::Error { message }) => Some(message.clone()),
        _ => None,
    })
}

#[test]
fn a_failover_timeout_of_u64_max_seconds_neither_overflows_nor_crash_loops() {
    let mut h = Harness::new();
    let scheduler = pid("s@10.0.0.9:4000");
    let info = FrameworkInfo {
        failover_timeout: Duration::from_secs(u64::MAX),
        ..FrameworkInfo::new("forever", "u")
    };
    let (framework_id, _) = h.subscribe(&scheduler, info, vec![]);
    // Its scheduler goes away: the deadline is computed, capped.
    h.books.handle(h.now, Input::Exited(scheduler.clone()));
    h.check();
    assert!(
        h.books.frameworks()[&framework_id]
            .failover_deadline
            .is_some()
    );
    h.advance(3600);
    assert!(h.books.frameworks().contains_key(&framework_id));
    // A master restarted from its registry takes it back, and again.
    let mut registry = h.books.registry();
    // As an older registry might hold it, uncapped.
    registry.frameworks[0].failover_timeout = Duration::from_secs(u64::MAX);
    for epoch in 2..4 {
        let mut restarted = Harness::new();
        restarted
            .books
            .recover(restarted.now, registry.clone(), epoch);
        restarted.advance(1);
        assert!(restarted.books.frameworks().contains_key(&framework_id));
        registry = restarted.books.registry();
    }
}

#[test]
fn a_restarted_master_never_hands_out_a_recovered_id() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let first_agent = h.register_agent(&agent, "cpus:1;mem:64", "");
    let (first_framework, _) = h.subscribe(
        &pid("s@10.0.0.9:4000"),
        FrameworkInfo::new("f", "u"),
        vec![],
    );
    // The same id prefix as before: only the counters tell ids apart.
    let mut restarted = Harness::new();
    restarted
        .books
        .recover(restarted.now, h.books.registry(), 2);
    let second_agent = restarted.register_agent(&pid("agent@10.0.0.2:5051"), "cpus:1;mem:64", "");
    assert_ne!(second_agent, first_agent);
    let out = restarted.send(
        &pid("s@10.0.0.10:4000"),
        ToMaster::Subscribe {
            info: FrameworkInfo::new("g", "u"),
            constraints: vec![],
        },
    );
    let second_framework = subscribed_id(&out).expect("subscribed");
    assert_ne!(second_framework, first_framework);
    // And a registry without counters (an older one) still never
    // collides: recovered ids are skipped.
    let mut old = h.books.registry();
    old.agents_admitted = 0;
    old.frameworks_created = 0;
    let mut restarted = Harness::new();
    restarted.books.recover(restarted.now, old, 2);
    let third_agent = restarted.register_agent(&pid("agent@10.0.0.3:5051"), "cpus:1;mem:64", "");
    assert_ne!(third_agent, first_agent);
}

#[test]
fn what_the_registry_could_not_read_back_is_refused() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let info = AgentInfo {
        id: None,
        hostname: "h".repeat(5000),
        resources: r("cpus:1;mem:64"),
        attributes: Default::default(),
    };
    let identity = PeerIdentity::simulated(Some(Role::Agent), "big");
    let out = h.send_as(&agent, identity, ToMaster::RegisterAgent { info });
    assert!(
        out.iter().any(|command| matches!(command,
            Command::ToAgent(_, ToAgent::RegistrationRefused { reason }) if reason.contains("at most 4096"))),
        "{out:?}"
    );
    assert!(h.books.agents().is_empty());
    let out = h.send(
        &pid("s@10.0.0.9:4000"),
        ToMaster::Subscribe {
            info: FrameworkInfo::new("n".repeat(5000), "u"),
            constraints: vec![],
        },
    );
    assert!(error_to(&out).is_some_and(|message| message.contains("at most 4096")));
    assert!(h.books.frameworks().is_empty());
}

#[test]
fn frameworks_per_principal_and_tasks_per_framework_are_bounded() {
    let mut h = Harness::with(Config {
        max_frameworks_per_principal: 2,
        max_tasks_per_framework: 2,
        ..Config::default()
    });
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:8;mem:4096", "");
    let mut ids = Vec::new();
    for index in 0..3 {
        let scheduler = pid(&format!("s@10.0.0.9:{}", 4000 + index));
        let out = h.send(
            &scheduler,
            ToMaster::Subscribe {
                info: FrameworkInfo::new("f", "u"),
                constraints: vec![],
            },
        );
        match index {
            2 => assert!(
                error_to(&out).is_some_and(|message| message.contains("2 frameworks")),
                "{out:?}"
            ),
            _ => ids.push((scheduler, subscribed_id(&out).expect("subscribed"), out)),
        }
    }
    let (scheduler, framework_id, out) = ids.remove(0);
    let offer = offers_to(&out, &scheduler).remove(0);
    let tasks = (0..3)
        .map(|n| task(&format!("t{n}"), &agent_id, "cpus:1;mem:64"))
        .collect();
    let out = h.send(&scheduler, accept(&framework_id, &[&offer], tasks, 0));
    let refused: Vec<TaskStatus> = updates_to(&out, &scheduler)
        .into_iter()
        .filter(|status| status.state == TaskState::Error)
        .collect();
    assert_eq!(refused.len(), 1, "{out:?}");
    assert!(
        refused[0].message.contains("2 tasks"),
        "{}",
        refused[0].message
    );
    assert_eq!(h.books.frameworks()[&framework_id].tasks.len(), 2);
}

#[test]
fn standing_filters_are_bounded_when_changed_too() {
    let mut h = Harness::new();
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, _) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    let many = (0..65)
        .map(|index| OfferConstraint::AttributeEquals {
            name: format!("a{index}"),
            value: strata_protocol::AttributeValue::parse("x"),
        })
        .collect();
    let out = h.send(
        &scheduler,
        ToMaster::SetConstraints {
            framework_id: framework_id.clone(),
            constraints: many,
        },
    );
    assert!(error_to(&out).is_some_and(|message| message.contains("at most 64")));
    assert!(h.books.frameworks()[&framework_id].constraints.is_empty());
}

/// Found by fuzzing the books (`fuzz/`, target `master_books`): an agent
/// coming back with two tasks that give one resource different kinds
/// made the master add a scalar to a set while checking what the tasks
/// hold.
#[test]
fn an_agent_whose_tasks_disagree_on_a_resource_kind_is_refused() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let framework_id = FrameworkId::new("m-F1").unwrap();
    let task =
        |id: &str, resources: &str| running_task(&framework_id, task(id, &agent_id, resources));
    let info = returning_agent(&agent_id, "cpus:4;mem:4096");
    let out = h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info,
            tasks: vec![task("a", "gpus2:1"), task("b", "gpus2:{x}")],
        },
    );
    h.check();
    let refusal = out.iter().find_map(|command| match command {
        Command::ToAgent(to, ToAgent::RegistrationRefused { reason }) if to == &agent => {
            Some(reason.clone())
        }
        _ => None,
    });
    let refusal = refusal.unwrap_or_else(|| panic!("not refused: {out:?}"));
    assert!(
        refusal.contains("task b") && refusal.contains("scalar and set"),
        "{refusal}"
    );
}

/// Found by fuzzing the books (`fuzz/`, target `master_books`): an agent
/// came back reporting a task the master knew as running, now ended and
/// with other resources than it was launched with; the allocator was
/// charged the reported resources, which the agent did not have, and
/// lost track of what was free.
#[test]
fn a_returning_agent_is_charged_what_the_books_hold_for_its_tasks() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("s@10.0.0.9:4000");
    let (framework_id, _) = h.subscribe(&scheduler, FrameworkInfo::new("f", "u"), vec![]);
    // The agent comes back with a task the master adopts.
    let adopted = running_task(&framework_id, task("t", &agent_id, "cpus:1"));
    let info = returning_agent(&agent_id, "cpus:4;mem:4096");
    h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info: info.clone(),
            tasks: vec![adopted],
        },
    );
    h.check();
    // Again, reporting it ended, holding what the agent does not have.
    let mut ended = running_task(&framework_id, task("t", &agent_id, "gpus:3"));
    ended.state = TaskState::Failed;
    h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info,
            tasks: vec![ended],
        },
    );
    h.check();
    // An agent that comes back with less than its known tasks hold is
    // refused.
    let still = running_task(&framework_id, task("t", &agent_id, "cpus:1"));
    let out = h.send(
        &agent,
        ToMaster::ReregisterAgent {
            info: returning_agent(&agent_id, "mem:4096"),
            tasks: vec![still],
        },
    );
    h.check();
    assert!(
        out.iter().any(|command| matches!(
            command,
            Command::ToAgent(_, ToAgent::RegistrationRefused { reason }) if reason.contains("must offer at least")
        )),
        "{out:?}"
    );
}
