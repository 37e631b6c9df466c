//! The core driven step by step through a [`Harness`], with its
//! invariants checked after every step: what live tasks hold is what the
//! core counts as allocated and fits the agent's total; each task is in
//! one place (running or finished, never both) and in a state that fits
//! it; an acknowledged update is never sent again; a task that ended is
//! never launched again.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

use strata_protocol::{CommandInfo, Resources};
use strata_runtime::tls::Role;

use super::*;

fn master() -> Upid {
    "master@10.0.0.1:5050"
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

fn agent_pid() -> Upid {
    "agent@10.0.0.2:5051"
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

fn executor_pid() -> Upid {
    "executor-e1@10.0.0.2:40000"
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

fn r(text: &str) -> Resources {
    text.parse().unwrap_or_else(|_| unreachable!())
}

fn framework_id() -> FrameworkId {
    FrameworkId::new("f1").unwrap_or_else(|_| unreachable!())
}

fn agent_id() -> AgentId {
    AgentId::new("a1").unwrap_or_else(|_| unreachable!())
}

fn framework(checkpoint: bool) -> FrameworkInfo {
    FrameworkInfo {
        id: Some(framework_id()),
        checkpoint,
        ..FrameworkInfo::new("fw", "nobody")
    }
}

fn command_task(id: &str, resources: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap_or_else(|_| unreachable!()),
        name: id.to_owned(),
        agent_id: agent_id(),
        resources: r(resources),
        kind: TaskKind::Command(CommandInfo::shell("sleep 1")),
        labels: BTreeMap::new(),
    }
}

fn executor_task(id: &str) -> TaskInfo {
    let executor = ExecutorInfo {
        executor_id: ExecutorId::new("e1").unwrap_or_else(|_| unreachable!()),
        name: "e1".into(),
        command: CommandInfo::shell("./executor"),
        resources: r("cpus:0.1;mem:32"),
    };
    TaskInfo {
        kind: TaskKind::Executor(executor),
        ..command_task(id, "cpus:0.5;mem:64")
    }
}

fn exit(code: i32) -> Result<ExitStatus, String> {
    Ok(ExitStatus::from_raw(code << 8))
}

fn killed_by(signal: i32) -> Result<ExitStatus, String> {
    Ok(ExitStatus::from_raw(signal))
}

/// The core, the time, and what it did, with the invariants checked after
/// every step.
struct Harness {
    core: Core,
    now: Now,
    /// Every update id acknowledged so far.
    acknowledged: BTreeSet<UpdateId>,
    /// Every task that reached a terminal state.
    ended: BTreeSet<(FrameworkId, TaskId)>,
    /// Containers launched, by the task they run (none for executors).
    launched: BTreeMap<ContainerId, Option<TaskId>>,
}

impl Harness {
    fn new(work_dir: Option<&str>) -> Harness {
        let now = Now {
            instant: Instant::now(),
            wall_ms: 1_000,
        };
        let config = CoreConfig {
            master: master(),
            hostname: "a".into(),
            resources: r("cpus:4;mem:4096"),
            attributes: Default::default(),
            seed: 7,
            status_update_retry: Duration::from_secs(10),
            executor_registration_timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(5),
            work_dir: work_dir.map(PathBuf::from),
            sandboxes: true,
            executors: true,
            kill_tasks_on_stop: true,
            follows_detector: false,
        };
        Harness {
            core: Core::new(config, now),
            now,
            acknowledged: BTreeSet::new(),
            ended: BTreeSet::new(),
            launched: BTreeMap::new(),
        }
    }

    /// Started and registered as agent `a1`.
    fn registered() -> Harness {
        let mut harness = Harness::new(Some("/work"));
        harness.step(Input::Start {
            pid: agent_pid(),
            recovered: None,
            containers: BTreeMap::new(),
        });
        harness.master_says(ToAgent::AgentRegistered {
            agent_id: agent_id(),
            ping_timeout: Duration::from_secs(75),
            epoch: 1,
        });
        harness
    }

    fn advance(&mut self, by: Duration) {
        self.now.instant += by;
        self.now.wall_ms += by.as_millis() as u64;
    }

    fn step(&mut self, input: Input) -> Vec<Effect> {
        let effects = self.core.handle(self.now, input);
        self.check(&effects);
        effects
    }

    fn master_says(&mut self, message: ToAgent) -> Vec<Effect> {
        self.step(Input::Message {
            from: master(),
            identity: PeerIdentity::simulated(Some(Role::Master), "master"),
            message: Box::new(message),
        })
    }

    fn executor_says(&mut self, message: ToAgent) -> Vec<Effect> {
        self.step(Input::Message {
            from: executor_pid(),
            identity: PeerIdentity::simulated(Some(Role::Executor), "f1/e1"),
            message: Box::new(message),
        })
    }

    /// Runs `task` and starts its container; the container.
    fn run(&mut self, task: TaskInfo, checkpoint: bool) -> ContainerId {
        let effects = self.master_says(ToAgent::RunTask {
            framework: Box::new(framework(checkpoint)),
            task: Box::new(task),
        });
        let container = launches(&effects)
            .first()
            .map(|(container, _)| container.clone())
            .unwrap_or_else(|| panic!("no launch in {effects:?}"));
        self.step(Input::Launched {
            container: container.clone(),
            result: Ok(RunCheckpoint {
                container: container.clone(),
                group: 100,
                start_ticks: 1,
                sandbox: PathBuf::from("/work/agents/a1/frameworks/f1/executors/t/runs/x"),
                launched: true,
            }),
        });
        container
    }

    /// Acknowledges every update in `effects`, as the framework would.
    fn acknowledge_all(&mut self, effects: &[Effect]) -> Vec<Effect> {
        let mut more = Vec::new();
        for status in updates(effects) {
            if let Some(update_id) = status.update_id {
                self.acknowledged.insert(update_id);
                more.extend(self.master_says(ToAgent::StatusUpdateAcknowledged {
                    framework_id: framework_id(),
                    task_id: status.task_id.clone(),
                    update_id,
                }));
            }
        }
        more
    }

    /// The last status of task `id`, live or finished.
    fn status(&self, id: &str) -> TaskStatus {
        let key = (
            framework_id(),
            TaskId::new(id).unwrap_or_else(|_| unreachable!()),
        );
        self.core
            .tasks
            .get(&key)
            .or_else(|| self.core.finished.get(&key))
            .and_then(|task| task.status.clone())
            .unwrap_or_else(|| panic!("no status of {id}"))
    }

    fn check(&mut self, effects: &[Effect]) {
        let core = &self.core;
        // A task forgotten (its end acknowledged) may be run again under
        // its id; one whose end is still held may not.
        self.ended.retain(|key| core.finished.contains_key(key));
        // What live tasks hold is what is allocated, within the total.
        let mut held = Resources::new();
        for task in core.tasks.values() {
            held.add(&task.info.resources);
        }
        assert_eq!(held, core.allocated, "allocated is what live tasks hold");
        assert!(
            core.config.resources.contains(&core.allocated),
            "{} within {}",
            core.allocated,
            core.config.resources
        );
        // Each task in one place, in a state that fits it.
        for (key, task) in &core.tasks {
            assert!(!core.finished.contains_key(key), "{key:?} twice");
            assert!(
                !task.state.is_terminal(),
                "{key:?} live but {:?}",
                task.state
            );
        }
        for (key, task) in &core.finished {
            assert!(
                task.state.is_terminal(),
                "{key:?} finished but {:?}",
                task.state
            );
            assert!(
                !core.containers.contains_key(key),
                "{key:?} ended with a container"
            );
        }
        for key in core.containers.keys() {
            assert!(core.tasks.contains_key(key), "container of unknown {key:?}");
        }
        // No acknowledged update goes out again.
        for status in updates(effects) {
            if let Some(update_id) = status.update_id {
                assert!(
                    !self.acknowledged.contains(&update_id),
                    "acknowledged update {update_id:?} resent: {status:?}"
                );
            }
            if status.state.is_terminal() {
                self.ended.insert((framework_id(), status.task_id.clone()));
            }
        }
        // No task that ended is launched again.
        for (container, spec) in launches(effects) {
            let task = spec
                .environment
                .get("STRATA_TASK_ID")
                .map(|id| TaskId::new(id).unwrap_or_else(|_| unreachable!()));
            if let Some(task) = &task {
                assert!(
                    !self.ended.contains(&(framework_id(), task.clone())),
                    "{task} launched again after it ended"
                );
            }
            self.launched.insert(container, task);
        }
    }
}

fn updates(effects: &[Effect]) -> Vec<&TaskStatus> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ToMaster(ToMaster::StatusUpdate { status, .. }) => Some(status),
            _ => None,
        })
        .collect()
}

fn states(effects: &[Effect]) -> Vec<TaskState> {
    updates(effects).iter().map(|status| status.state).collect()
}

fn launches(effects: &[Effect]) -> Vec<(ContainerId, &LaunchSpec)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Launch { container, spec } => Some((container.clone(), &**spec)),
            _ => None,
        })
        .collect()
}

fn to_executor(effects: &[Effect]) -> Vec<&ToExecutor> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ToExecutor { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}

fn timers(effects: &[Effect]) -> Vec<(Duration, Timer)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Timer { after, timer } => Some((*after, timer.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn registration_backs_off_until_answered_and_follows_one_master() {
    let mut harness = Harness::new(None);
    let effects = harness.step(Input::Start {
        pid: agent_pid(),
        recovered: None,
        containers: BTreeMap::new(),
    });
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::ToMaster(ToMaster::RegisterAgent { .. })))
    );
    // Each attempt waits at most twice as long as the one before, to a
    // minute.
    let mut ceilings = Vec::new();
    for attempt in 0..10u32 {
        let effects = harness.step(Input::Timer(Timer::Register { round: 0 }));
        let [(wait, Timer::Register { round: 0 })] = timers(&effects)[..] else {
            panic!("one retry timer: {effects:?}");
        };
        let ceiling = Duration::from_secs(1 << (attempt + 1).min(6)).min(MAX_REGISTRATION_BACKOFF);
        assert!(wait <= ceiling, "attempt {attempt}: {wait:?}");
        ceilings.push(wait);
    }
    // Another process claiming to be the master is ignored.
    let impostor: Upid = "scheduler-x@10.0.0.9:1"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    harness.step(Input::Message {
        from: impostor,
        identity: PeerIdentity::simulated(Some(Role::Framework), "x"),
        message: Box::new(ToAgent::AgentRegistered {
            agent_id: agent_id(),
            ping_timeout: Duration::from_secs(75),
            epoch: 9,
        }),
    });
    assert_eq!(harness.core.agent_id, None);
    harness.master_says(ToAgent::AgentRegistered {
        agent_id: agent_id(),
        ping_timeout: Duration::from_secs(75),
        epoch: 2,
    });
    assert_eq!(harness.core.registration, Registration::Registered);
    // Registered: a pending retry sends nothing; an earlier master's
    // registration is ignored.
    assert!(
        harness
            .step(Input::Timer(Timer::Register { round: 0 }))
            .is_empty()
    );
    harness.master_says(ToAgent::AgentRegistered {
        agent_id: AgentId::new("old").unwrap_or_else(|_| unreachable!()),
        ping_timeout: Duration::from_secs(75),
        epoch: 1,
    });
    assert_eq!(harness.core.agent_id, Some(agent_id()));
    // A master silent past its ping timeout has lost the agent.
    harness.advance(Duration::from_secs(80));
    let effects = harness.step(Input::CheckMaster);
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::ToMaster(ToMaster::ReregisterAgent { .. })))
    );
}

#[test]
fn a_new_leading_master_is_registered_with_at_once_and_the_old_one_ignored() {
    let mut harness = Harness::registered();
    harness.run(command_task("t1", "cpus:1;mem:64"), true);
    let successor: Upid = "master@10.0.0.2:5050"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let effects = harness.step(Input::MasterDetected(successor.clone()));
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Link(pid) if *pid == successor)),
        "{effects:?}"
    );
    let reregistration = effects.iter().find_map(|effect| match effect {
        Effect::ToMaster(ToMaster::ReregisterAgent { tasks, .. }) => Some(tasks.len()),
        _ => None,
    });
    assert_eq!(reregistration, Some(1), "its running task goes with it");
    assert_eq!(harness.core.config.master, successor);
    // The old master's word counts no more; the new one's does.
    harness.master_says(ToAgent::AgentRegistered {
        agent_id: agent_id(),
        ping_timeout: Duration::from_secs(75),
        epoch: 1,
    });
    assert!(matches!(
        harness.core.registration,
        Registration::Registering { .. }
    ));
    // The earlier round's retry does nothing; the new round's retries.
    assert!(
        harness
            .step(Input::Timer(Timer::Register { round: 0 }))
            .is_empty()
    );
    assert!(
        !harness
            .step(Input::Timer(Timer::Register { round: 1 }))
            .is_empty()
    );
    harness.step(Input::Message {
        from: successor.clone(),
        identity: PeerIdentity::simulated(Some(Role::Master), "master"),
        message: Box::new(ToAgent::AgentRegistered {
            agent_id: agent_id(),
            ping_timeout: Duration::from_secs(75),
            epoch: 2,
        }),
    });
    assert_eq!(harness.core.registration, Registration::Registered);
    // The same master again changes nothing.
    assert!(harness.step(Input::MasterDetected(successor)).is_empty());
}

#[test]
fn a_standby_sends_the_agent_to_the_leader_and_back_once_it_is_lost() {
    let mut harness = Harness::new(Some("/work"));
    harness.step(Input::Start {
        pid: agent_pid(),
        recovered: None,
        containers: BTreeMap::new(),
    });
    let leader: Upid = "master@10.0.0.3:5050"
        .parse()
        .unwrap_or_else(|_| unreachable!());
    let not_leader = ToAgent::NotLeader {
        leader: Some(leader.to_string()),
    };
    // Only a master's certificate may send the agent elsewhere.
    harness.step(Input::Message {
        from: master(),
        identity: PeerIdentity::simulated(Some(Role::Framework), "master"),
        message: Box::new(not_leader.clone()),
    });
    assert_eq!(harness.core.config.master, master());
    harness.master_says(not_leader);
    assert_eq!(harness.core.config.master, leader);
    // The next attempt, at its time, goes to the leader.
    let effects = harness.step(Input::Timer(Timer::Register { round: 0 }));
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Link(pid) if *pid == leader))
    );
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::ToMaster(ToMaster::RegisterAgent { .. })))
    );
    harness.step(Input::Message {
        from: leader.clone(),
        identity: PeerIdentity::simulated(Some(Role::Master), "master"),
        message: Box::new(ToAgent::AgentRegistered {
            agent_id: agent_id(),
            ping_timeout: Duration::from_secs(75),
            epoch: 4,
        }),
    });
    assert_eq!(harness.core.registration, Registration::Registered);
    // The leader is lost: the agent asks the configured master again.
    let effects = harness.step(Input::Lost(leader));
    assert_eq!(harness.core.config.master, master());
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Link(pid) if *pid == master()))
    );
    // A standby that knows no leader changes nothing.
    assert!(
        harness
            .master_says(ToAgent::NotLeader { leader: None })
            .is_empty()
    );
}

#[test]
fn a_task_runs_to_its_end_and_its_updates_go_once_each_in_order() {
    let mut harness = Harness::registered();
    let effects = harness.master_says(ToAgent::RunTask {
        framework: Box::new(framework(false)),
        task: Box::new(command_task("t1", "cpus:1;mem:128")),
    });
    assert_eq!(states(&effects), vec![TaskState::Starting]);
    let starting = effects;
    let (container, spec) = launches(&starting)[0].clone();
    assert!(
        spec.sandbox
            .ends_with(format!("executors/t1/runs/{container}"))
    );
    assert_eq!(spec.user, "nobody");
    assert!(!spec.outlives_agent);
    // RUNNING waits for STARTING's acknowledgement.
    let effects = harness.step(Input::Launched {
        container: container.clone(),
        result: Ok(RunCheckpoint {
            container: container.clone(),
            group: 7,
            start_ticks: 1,
            sandbox: "/work/agents/a1/x".into(),
            launched: false,
        }),
    });
    assert!(states(&effects).is_empty());
    assert_eq!(harness.core.allocated, r("cpus:1;mem:128"));
    // Unacknowledged, STARTING is resent as it was.
    harness.advance(Duration::from_secs(11));
    let resent = harness.step(Input::ResendUpdates);
    assert_eq!(updates(&resent), updates(&starting));
    let effects = harness.acknowledge_all(&starting);
    assert_eq!(states(&effects), vec![TaskState::Running]);
    assert_eq!(
        updates(&effects)[0].sandbox.as_deref(),
        Some("x"),
        "the sandbox, relative to the agent's"
    );
    harness.acknowledge_all(&effects);
    let effects = harness.step(Input::Exited {
        container: container.clone(),
        status: exit(0),
        limitation: None,
    });
    assert_eq!(states(&effects), vec![TaskState::Finished]);
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::Forget(forgotten) if *forgotten == container))
    );
    assert!(harness.core.allocated.is_empty());
    assert!(harness.core.finished.contains_key(&(
        framework_id(),
        TaskId::new("t1").unwrap_or_else(|_| unreachable!())
    )));
    harness.acknowledge_all(&effects);
    assert!(harness.core.finished.is_empty());
    // Nothing more to resend.
    harness.advance(Duration::from_secs(700));
    assert!(updates(&harness.step(Input::ResendUpdates)).is_empty());
    // The same task again is a new launch only once it is forgotten.
    harness.run(command_task("t1", "cpus:1;mem:128"), false);
}

#[test]
fn kills_launch_failures_and_memory_limits_end_tasks_saying_why() {
    let mut harness = Harness::registered();
    let container = harness.run(command_task("k", "cpus:1;mem:64"), false);
    let effects = harness.master_says(ToAgent::KillTask {
        framework_id: framework_id(),
        task_id: TaskId::new("k").unwrap_or_else(|_| unreachable!()),
    });
    assert!(effects.iter().any(|effect| matches!(
        effect,
        Effect::Signal {
            signal: Signal::TERM,
            ..
        }
    )));
    assert_eq!(
        timers(&effects),
        vec![(Duration::from_secs(5), Timer::Kill(container.clone()))]
    );
    harness.step(Input::Exited {
        container,
        status: killed_by(15),
        limitation: None,
    });
    assert_eq!(harness.status("k").state, TaskState::Killed);

    // A command that cannot start fails the task.
    let effects = harness.master_says(ToAgent::RunTask {
        framework: Box::new(framework(false)),
        task: Box::new(command_task("bad", "cpus:1;mem:64")),
    });
    let (container, _) = launches(&effects)[0].clone();
    harness.step(Input::Launched {
        container,
        result: Err(String::from("no such user").into()),
    });
    let status = harness.status("bad");
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.reason, Some(Reason::CommandExecutorFailed));
    assert_eq!(status.message, "no such user");

    // A task over its memory is killed and fails saying so.
    let container = harness.run(command_task("big", "cpus:1;mem:64"), false);
    let mut usage = BTreeMap::new();
    usage.insert(
        container.clone(),
        GroupUsage {
            cpu_seconds: 1.0,
            rss_bytes: 100 << 20,
            processes: 1,
            kernel: None,
        },
    );
    killed_for_memory(
        &mut harness,
        "big",
        usage,
        "Memory limit exceeded: Requested: 64MB Maximum Used: 100MB",
    );

    // With cgroups the kernel kills: the container's end says so.
    let container = harness.run(command_task("oom", "cpus:1;mem:64"), false);
    let oom = Limitation::Memory {
        limit_bytes: 64 << 20,
        peak_bytes: 64 << 20,
    };
    harness.step(Input::Exited {
        container,
        status: killed_by(9),
        limitation: Some(oom),
    });
    let status = harness.status("oom");
    assert_eq!(
        (status.state, status.reason),
        (TaskState::Failed, Some(Reason::ContainerLimitationMemory))
    );
    assert_eq!(
        status.message,
        "Memory limit exceeded: Requested: 64MB Maximum Used: 64MB"
    );

    // A process of it the kernel killed, its first one alive: the whole
    // container is stopped, and the kernel's sample is trusted over the
    // resident memory it shows.
    let container = harness.run(command_task("child", "cpus:1;mem:64"), false);
    let sample = |oom_kills| GroupUsage {
        cpu_seconds: 1.0,
        rss_bytes: 1 << 20,
        processes: 2,
        kernel: Some(crate::usage::KernelUsage {
            throttled_seconds: 0.0,
            memory_bytes: 60 << 20,
            memory_peak_bytes: 64 << 20,
            memory_limit_bytes: Some(64 << 20),
            oom_kills,
        }),
    };
    let effects = harness.step(Input::Usage(BTreeMap::from([(
        container.clone(),
        sample(0),
    )])));
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Effect::Signal { .. }))
    );
    killed_for_memory(
        &mut harness,
        "child",
        BTreeMap::from([(container, sample(1))]),
        "Memory limit exceeded: Requested: 64MB Maximum Used: 64MB",
    );
}

/// A usage sample makes the agent kill task `name`'s container for its
/// memory; its end then fails it with the memory reason and `message`.
fn killed_for_memory(
    harness: &mut Harness,
    name: &str,
    usage: BTreeMap<ContainerId, GroupUsage>,
    message: &str,
) {
    let container = usage.keys().next().cloned().unwrap_or_default();
    let effects = harness.step(Input::Usage(usage));
    assert!(effects.iter().any(|effect| matches!(
        effect,
        Effect::Signal { signal: Signal::KILL, container: signalled } if *signalled == container
    )));
    harness.step(Input::Exited {
        container,
        status: killed_by(9),
        limitation: None,
    });
    let status = harness.status(name);
    assert_eq!(status.reason, Some(Reason::ContainerLimitationMemory));
    assert_eq!(status.message, message);
}

#[test]
fn a_custom_executor_gets_its_tasks_once_it_registers_and_fails_them_when_it_ends() {
    let mut harness = Harness::registered();
    let effects = harness.master_says(ToAgent::RunTask {
        framework: Box::new(framework(true)),
        task: Box::new(executor_task("x1")),
    });
    let (container, spec) = launches(&effects)[0].clone();
    assert_eq!(
        spec.executor,
        Some((
            framework_id(),
            ExecutorId::new("e1").unwrap_or_else(|_| unreachable!())
        ))
    );
    assert_eq!(spec.environment["MESOS_EXECUTOR_ID"], "e1");
    assert_eq!(
        spec.environment["STRATA_AGENT_PID"],
        agent_pid().to_string()
    );
    assert_eq!(spec.environment["MESOS_CHECKPOINT"], "1");
    let effects = harness.step(Input::Launched {
        container: container.clone(),
        result: Ok(RunCheckpoint {
            container: container.clone(),
            group: 9,
            start_ticks: 1,
            sandbox: "/s".into(),
            launched: true,
        }),
    });
    assert!(
        timers(&effects)
            .iter()
            .any(|(after, timer)| *after == Duration::from_secs(60)
                && matches!(timer, Timer::ExecutorRegistration { .. }))
    );
    // Its container may use its own resources and its tasks'.
    let limits = |effects: &[Effect]| {
        effects.iter().find_map(|effect| match effect {
            Effect::Update {
                container: updated,
                resources,
            } if *updated == container => Some(resources.clone()),
            _ => None,
        })
    };
    assert_eq!(spec.resources, r("cpus:0.1;mem:32"));
    assert_eq!(limits(&effects), Some(r("cpus:0.6;mem:96")));
    // A second task waits with the first.
    let effects = harness.master_says(ToAgent::RunTask {
        framework: Box::new(framework(true)),
        task: Box::new(executor_task("x2")),
    });
    assert_eq!(limits(&effects), Some(r("cpus:1.1;mem:160")));
    // Someone else's certificate cannot register it.
    let effects = harness.step(Input::Message {
        from: executor_pid(),
        identity: PeerIdentity::simulated(Some(Role::Executor), "f1/other"),
        message: Box::new(ToAgent::RegisterExecutor {
            framework_id: framework_id(),
            executor_id: ExecutorId::new("e1").unwrap_or_else(|_| unreachable!()),
        }),
    });
    assert!(to_executor(&effects).is_empty());
    let effects = harness.executor_says(ToAgent::RegisterExecutor {
        framework_id: framework_id(),
        executor_id: ExecutorId::new("e1").unwrap_or_else(|_| unreachable!()),
    });
    let told = to_executor(&effects);
    assert!(matches!(told[0], ToExecutor::ExecutorRegistered { .. }));
    assert_eq!(
        told.len(),
        3,
        "registered, then both queued tasks: {told:?}"
    );
    // Its updates are the agent's to deliver.
    let running = TaskStatus {
        task_id: TaskId::new("x1").unwrap_or_else(|_| unreachable!()),
        state: TaskState::Running,
        source: Source::Executor,
        reason: None,
        message: String::new(),
        agent_id: Some(agent_id()),
        executor_id: None,
        update_id: Some(UpdateId(5)),
        timestamp_ms: 1,
        sandbox: None,
    };
    let effects = harness.executor_says(ToAgent::ExecutorStatus {
        framework_id: framework_id(),
        executor_id: ExecutorId::new("e1").unwrap_or_else(|_| unreachable!()),
        status: running,
    });
    // Taken only once checkpointed: the HTTP executor stops resending
    // when told.
    let taken = effects
        .iter()
        .position(|effect| matches!(effect, Effect::UpdateTaken { .. }))
        .unwrap_or_else(|| panic!("not taken: {effects:?}"));
    let written = effects
        .iter()
        .rposition(|effect| matches!(effect, Effect::Write { .. }))
        .unwrap_or_else(|| panic!("not checkpointed: {effects:?}"));
    assert!(written < taken, "{effects:?}");
    // It ends: its tasks fail, the master frees its resources.
    let effects = harness.step(Input::Exited {
        container,
        status: exit(1),
        limitation: None,
    });
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Effect::ToMaster(ToMaster::ExecutorExited { .. })))
    );
    assert!(harness.core.executors.is_empty());
    assert!(harness.core.tasks.is_empty());
    for task in harness.core.finished.values() {
        let status = task.status.clone().unwrap_or_else(|| unreachable!());
        assert_eq!(status.state, TaskState::Failed);
        assert_eq!(status.reason, Some(Reason::ExecutorTerminated));
    }
}

#[test]
fn a_restart_takes_back_running_containers_and_reports_the_rest() {
    let mut harness = Harness::new(Some("/work"));
    let task = |id: &str, group: i32| {
        let info = command_task(id, "cpus:1;mem:64");
        crate::recovery::RecoveredTask {
            task_id: info.task_id.clone(),
            checkpoint: Some(TaskCheckpoint {
                version: checkpoint::FORMAT_VERSION,
                task: Task {
                    info,
                    framework_id: framework_id(),
                    state: TaskState::Running,
                    status: None,
                },
                run: Some(RunCheckpoint {
                    container: ContainerId::new(id),
                    group,
                    start_ticks: 1,
                    sandbox: format!("/work/agents/a1/runs/{id}").into(),
                    launched: true,
                }),
            }),
            pending: Vec::new(),
        }
    };
    let recovered = Recovered {
        agent_id: agent_id(),
        info: harness.core.info(),
        frameworks: vec![crate::recovery::RecoveredFramework {
            info: framework(true),
            tasks: vec![task("alive", 1), task("ended", 2), task("gone", 3)],
            executors: Vec::new(),
        }],
    };
    let containers = BTreeMap::from([
        (ContainerId::new("alive"), RunState::Running),
        (
            ContainerId::new("ended"),
            RunState::Ended(ExitStatus::from_raw(0), None),
        ),
    ]);
    let effects = harness.step(Input::Start {
        pid: agent_pid(),
        recovered: Some(Box::new(recovered)),
        containers,
    });
    assert!(
        effects.iter().any(
            |effect| matches!(effect, Effect::Watch(container) if container.as_str() == "alive")
        )
    );
    assert!(effects.iter().any(
        |effect| matches!(effect, Effect::Forget(container) if container.as_str() == "ended")
    ));
    let tasks = effects
        .iter()
        .find_map(|effect| match effect {
            Effect::ToMaster(ToMaster::ReregisterAgent { tasks, .. }) => Some(tasks.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("re-registers: {effects:?}"));
    assert_eq!(tasks.len(), 3, "the live task and the two that ended");
    let ended = |id: &str| harness.status(id);
    assert_eq!(ended("ended").state, TaskState::Finished);
    assert!(ended("ended").message.ends_with("while the agent was down"));
    assert_eq!(ended("gone").reason, Some(Reason::ExecutorTerminated));
    assert_eq!(harness.core.allocated, r("cpus:1;mem:64"));
}

#[test]
fn a_framework_shut_down_leaves_nothing_behind() {
    let mut harness = Harness::registered();
    harness.run(command_task("a", "cpus:1;mem:64"), true);
    harness.run(command_task("b", "cpus:1;mem:64"), true);
    let effects = harness.master_says(ToAgent::ShutdownFramework {
        framework_id: framework_id(),
    });
    let killed = effects
        .iter()
        .filter(|effect| {
            matches!(
                effect,
                Effect::Signal {
                    signal: Signal::KILL,
                    ..
                }
            )
        })
        .count();
    assert_eq!(killed, 2);
    assert!(
        effects.iter().any(
            |effect| matches!(effect, Effect::RemoveDir(dir) if dir.ends_with("frameworks/f1"))
        )
    );
    assert!(harness.core.tasks.is_empty());
    assert!(harness.core.allocated.is_empty());
    assert_eq!(harness.core.updates.unacknowledged(), 0);
}

/// Random walks over what can happen to an agent, the invariants checked
/// after every step.
#[test]
fn random_walks_keep_the_invariants() {
    for seed in 0..200u64 {
        let mut random = SplitMix::new(seed);
        let mut harness = Harness::registered();
        let mut sent: Vec<TaskStatus> = Vec::new();
        let mut next_task = 0;
        for _ in 0..200 {
            let running: Vec<ContainerId> = harness
                .core
                .containers
                .values()
                .map(|task| task.container.clone())
                .collect();
            let effects = match random.below(7) {
                0 | 1 => {
                    next_task += 1;
                    let id = format!("t{next_task}");
                    if harness.core.free().contains(&r("cpus:1;mem:64")) {
                        let checkpoint = random.below(2) == 0;
                        let container = harness.run(command_task(&id, "cpus:1;mem:64"), checkpoint);
                        vec![Effect::Watch(container)]
                    } else {
                        Vec::new()
                    }
                }
                2 if !running.is_empty() => {
                    let container = running[random.below(running.len() as u64) as usize].clone();
                    let status = if random.below(2) == 0 {
                        exit(0)
                    } else {
                        killed_by(9)
                    };
                    let limitation = (random.below(4) == 0).then_some(Limitation::Memory {
                        limit_bytes: 64 << 20,
                        peak_bytes: 64 << 20,
                    });
                    harness.step(Input::Exited {
                        container,
                        status,
                        limitation,
                    })
                }
                3 if !harness.core.tasks.is_empty() => {
                    let keys: Vec<_> = harness.core.tasks.keys().cloned().collect();
                    let key = keys[random.below(keys.len() as u64) as usize].clone();
                    harness.master_says(ToAgent::KillTask {
                        framework_id: key.0,
                        task_id: key.1,
                    })
                }
                4 if !sent.is_empty() => {
                    // Acknowledgements arrive late, twice, or for old updates.
                    let status = sent[random.below(sent.len() as u64) as usize].clone();
                    let effects = vec![Effect::ToMaster(ToMaster::StatusUpdate {
                        framework_id: framework_id(),
                        status,
                    })];
                    harness.acknowledge_all(&effects)
                }
                5 => {
                    harness.advance(Duration::from_secs(random.below(30)));
                    harness.step(Input::ResendUpdates)
                }
                _ => {
                    harness.advance(Duration::from_secs(1));
                    harness.master_says(ToAgent::Ping { sequence: 1 })
                }
            };
            sent.extend(updates(&effects).into_iter().cloned());
        }
    }
}
