//! Scheduler calls beyond launching and killing: shutting down an
//! executor and changing a framework's description in place.

use super::*;

#[test]
fn a_framework_shuts_down_its_executor_on_an_agent() {
    let mut h = Harness::new();
    let agent = pid("agent@10.0.0.1:5051");
    let agent_id = h.register_agent(&agent, "cpus:4;mem:4096", "");
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, out) = h.subscribe(&scheduler, FrameworkInfo::new("fw", "u"), vec![]);
    let offer = offers_to(&out, &scheduler).remove(0);
    let mut launched = task("t1", &agent_id, "cpus:1;mem:64");
    let executor_id = strata_protocol::ExecutorId::new("ex").unwrap();
    launched.kind = TaskKind::Executor(strata_protocol::ExecutorInfo {
        executor_id: executor_id.clone(),
        name: "ex".into(),
        command: CommandInfo::shell("./executor"),
        resources: r("cpus:0.1;mem:32"),
    });
    h.send(
        &scheduler,
        accept(&framework_id, &[&offer], vec![launched], 0),
    );
    let shutdown = |executor_id: &strata_protocol::ExecutorId, agent_id: &AgentId| {
        ToMaster::ShutdownExecutor {
            framework_id: framework_id.clone(),
            agent_id: agent_id.clone(),
            executor_id: executor_id.clone(),
        }
    };
    let out = h.send(&scheduler, shutdown(&executor_id, &agent_id));
    assert!(out.iter().any(|command| matches!(
        command,
        Command::ToAgent(to, ToAgent::ShutdownExecutor { executor_id: id, .. })
            if *to == agent && *id == executor_id
    )));
    // An executor the agent does not run, or another framework's call:
    // nothing reaches the agent.
    let other = strata_protocol::ExecutorId::new("other").unwrap();
    let out = h.send(&scheduler, shutdown(&other, &agent_id));
    assert!(
        !out.iter()
            .any(|command| matches!(command, Command::ToAgent(..)))
    );
    let intruder = pid("scheduler-2@10.0.0.8:4000");
    let out = h.send(&intruder, shutdown(&executor_id, &agent_id));
    assert!(
        !out.iter()
            .any(|command| matches!(command, Command::ToAgent(..)))
    );
}

#[test]
fn a_framework_changes_its_description_in_place() {
    let mut h = Harness::new();
    let scheduler = pid("scheduler-1@10.0.0.9:4000");
    let (framework_id, _) = h.subscribe(&scheduler, FrameworkInfo::new("fw", "u"), vec![]);
    let update = |info: FrameworkInfo| ToMaster::UpdateFramework {
        framework_id: framework_id.clone(),
        info,
    };
    let mut renamed = FrameworkInfo::new("renamed", "u");
    renamed.failover_timeout = Duration::from_secs(120);
    renamed
        .capabilities
        .insert(strata_protocol::Capability::PartitionAware);
    let out = h.send(&scheduler, update(renamed));
    assert!(
        !out.iter()
            .any(|command| matches!(command, Command::ToScheduler(_, ToScheduler::Error { .. })))
    );
    let info = &h.books.frameworks()[&framework_id].info;
    assert_eq!(info.name, "renamed");
    assert_eq!(info.failover_timeout, Duration::from_secs(120));
    assert!(info.is_partition_aware());
    // Who it is and where it runs do not change this way.
    for (changed, why) in [
        (FrameworkInfo::new("fw", "someone-else"), "user"),
        (
            {
                let mut info = FrameworkInfo::new("fw", "u");
                info.roles = vec!["other".into()];
                info
            },
            "roles",
        ),
        (
            {
                let mut info = FrameworkInfo::new("fw", "u");
                info.checkpoint = true;
                info
            },
            "checkpoints",
        ),
    ] {
        let out = h.send(&scheduler, update(changed));
        let refusal = out.iter().find_map(|command| match command {
            Command::ToScheduler(_, ToScheduler::Error { message }) => Some(message.clone()),
            _ => None,
        });
        assert!(
            refusal
                .as_deref()
                .is_some_and(|message| message.contains(why)),
            "{why}: {refusal:?}"
        );
    }
    assert_eq!(h.books.frameworks()[&framework_id].info.user, "u");
}
