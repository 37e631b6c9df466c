//! Tasks as real OS processes: an agent runs commands in sandboxes and
//! reports how they ended; kills reach the whole process group and
//! nothing a task started outlives it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_agent::{AgentConfig, Runner};
use strata_integration::cluster::{
    Scheduler, command_task, fast_master, node, r, start_agent, start_agent_with, start_master,
};
use strata_protocol::{
    CommandInfo, Filters, FrameworkInfo, Operation, Reason, TaskState, TaskStatus, ToMaster,
};
use strata_runtime::{CertificateAuthority, Role};

/// Whether any process is still in process group `group`.
fn group_alive(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
    })
}

/// Waits (with a deadline) for a group to be gone.
fn wait_group_gone(group: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !group_alive(group) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

fn sandbox_of(status: &TaskStatus) -> PathBuf {
    PathBuf::from(status.message.strip_prefix("running in ").unwrap())
}

fn read_pid(sandbox: &Path, file: &str) -> i32 {
    std::fs::read_to_string(sandbox.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A fresh work directory for test `name` and tasks as processes there,
/// killed 2 s after they are asked to stop.
fn processes_in(name: &str) -> (PathBuf, Runner) {
    let work_dir = std::env::temp_dir().join(format!("strata-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let runner = Runner::Processes {
        work_dir: work_dir.clone(),
        kill_grace: Duration::from_secs(2),
        isolation: strata_agent::isolation::Isolation::Posix,
        images: None,
    };
    (work_dir, runner)
}

#[test]
fn commands_run_as_processes_and_end_as_they_should() {
    let (work_dir, runner) = processes_in("tasks");
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _agent = start_agent(&ca, &master, "agent-1", "cpus:8;mem:8192", runner).await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut fw = Scheduler::subscribe(
            &schedulers,
            "scheduler",
            &master,
            FrameworkInfo::new("fw", "u"),
        )
        .await;
        let offer = fw.offers().await.remove(0);
        let agent = offer.agent_id.clone();
        let missing = CommandInfo {
            shell: false,
            value: "/nonexistent/strata-test-binary".into(),
            ..CommandInfo::default()
        };
        let tasks = vec![
            command_task(
                "echo",
                &agent,
                "cpus:0.1;mem:32",
                CommandInfo::shell("echo hi"),
            ),
            command_task(
                "exit-3",
                &agent,
                "cpus:0.1;mem:32",
                CommandInfo::shell("exit 3"),
            ),
            command_task("missing", &agent, "cpus:0.1;mem:32", missing),
            command_task(
                "leaves-a-child",
                &agent,
                "cpus:0.1;mem:32",
                CommandInfo::shell("sleep 1000 & echo $! > child; echo $$ > pid"),
            ),
            command_task(
                "sleeper",
                &agent,
                "cpus:0.1;mem:32",
                CommandInfo::shell("echo $$ > pid; exec sleep 1000"),
            ),
        ];
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(tasks)],
            filters: Filters::default(),
        });
        let mut history: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
        let mut kill_sent = false;
        let done = |history: &BTreeMap<String, Vec<TaskStatus>>| {
            history.len() == 5
                && history.values().all(|statuses| {
                    statuses
                        .last()
                        .is_some_and(|status| status.state.is_terminal())
                })
        };
        while !done(&history) {
            let status = fw.update().await;
            let name = status.task_id.to_string();
            if name == "sleeper" && status.state == TaskState::Running && !kill_sent {
                // Kill once the shell has written its pid: a kill before
                // that would leave the test nothing to check.
                let pid_file = sandbox_of(&status).join("pid");
                let deadline = Instant::now() + Duration::from_secs(10);
                // Written whole: `echo` makes the file, then writes.
                let written = |path: &Path| {
                    std::fs::read_to_string(path).is_ok_and(|text| text.ends_with('\n'))
                };
                while !written(&pid_file) && Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
                fw.send(ToMaster::Kill {
                    framework_id: fw.id(),
                    task_id: status.task_id.clone(),
                });
                kill_sent = true;
            }
            history.entry(name).or_default().push(status);
        }
        let states = |name: &str| {
            history[name]
                .iter()
                .map(|status| status.state)
                .collect::<Vec<_>>()
        };
        let last = |name: &str| history[name].last().unwrap().clone();

        assert_eq!(
            states("echo"),
            vec![TaskState::Starting, TaskState::Running, TaskState::Finished]
        );
        let sandbox = sandbox_of(&history["echo"][1]);
        assert!(sandbox.starts_with(&work_dir), "{}", sandbox.display());
        assert_eq!(
            std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
            "hi\n"
        );

        assert_eq!(last("exit-3").state, TaskState::Failed);
        assert_eq!(last("exit-3").message, "exited with status 3");

        assert_eq!(last("missing").state, TaskState::Failed);
        assert_eq!(last("missing").reason, Some(Reason::CommandExecutorFailed));
        assert!(
            last("missing").message.contains("cannot start"),
            "{}",
            last("missing").message
        );

        // The task exited at once, leaving a sleeping child in its group:
        // the child is killed too.
        assert_eq!(last("leaves-a-child").state, TaskState::Finished);
        let child_sandbox = sandbox_of(&history["leaves-a-child"][1]);
        let group = read_pid(&child_sandbox, "pid");
        assert!(wait_group_gone(group), "the task's child survived it");

        assert_eq!(last("sleeper").state, TaskState::Killed);
        let sleeper_sandbox = sandbox_of(&history["sleeper"][1]);
        let group = read_pid(&sleeper_sandbox, "pid");
        assert!(wait_group_gone(group), "the killed task's group survived");
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}

#[test]
fn a_task_over_its_memory_fails_with_the_memory_reason() {
    let work_dir = std::env::temp_dir().join(format!("strata-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let runner = Runner::Processes {
            work_dir: work_dir.clone(),
            kill_grace: Duration::from_secs(1),
            isolation: strata_agent::isolation::Isolation::Posix,
            images: None,
        };
        let mut config = AgentConfig::new(
            master.clone(),
            "agent".into(),
            r("cpus:1;mem:1024"),
            Default::default(),
            5,
            runner,
        );
        config.usage_interval = Duration::from_millis(100);
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
        // dd fills a 300 MB buffer and then blocks writing to a pipe nobody reads.
        let hog = CommandInfo::shell("dd if=/dev/zero bs=300M count=1 2>/dev/null | sleep 60");
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(vec![command_task(
                "hog",
                &offer.agent_id,
                "cpus:0.5;mem:64",
                hog,
            )])],
            filters: Filters::default(),
        });
        let last = loop {
            let status = fw.update().await;
            if status.state.is_terminal() {
                break status;
            }
        };
        assert_eq!(last.state, TaskState::Failed, "{}", last.message);
        assert_eq!(last.reason, Some(Reason::ContainerLimitationMemory));
        assert!(last.message.contains("Requested: 64MB"), "{}", last.message);
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}

#[test]
fn checkpointing_frameworks_have_their_update_streams_on_disk() {
    use strata_agent::checkpoint::{load_stream, stream_path};
    let work_dir =
        std::env::temp_dir().join(format!("strata-checkpointing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let runner = Runner::Processes {
            work_dir: work_dir.clone(),
            kill_grace: Duration::from_secs(1),
            isolation: strata_agent::isolation::Isolation::Posix,
            images: None,
        };
        let _agent = start_agent(&ca, &master, "agent", "cpus:1;mem:256", runner).await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut info = FrameworkInfo::new("fw", "u");
        info.checkpoint = true;
        let mut fw = Scheduler::subscribe(&schedulers, "scheduler", &master, info).await;
        let offer = fw.offers().await.remove(0);
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(vec![command_task(
                "t",
                &offer.agent_id,
                "cpus:0.5;mem:64",
                CommandInfo::shell("true"),
            )])],
            filters: Filters::default(),
        });
        // STARTING arrives and is not acknowledged yet: it is on disk.
        let starting = loop {
            if let strata_protocol::ToScheduler::Update { status } = fw.next().await {
                break status;
            }
        };
        assert_eq!(starting.state, TaskState::Starting);
        let path = stream_path(&work_dir, &offer.agent_id, &fw.id(), &starting.task_id);
        let saved = load_stream(&strata_runtime::durable::Disk::real(), &path).unwrap();
        assert_eq!(
            saved.pending.first().map(|status| status.update_id),
            Some(starting.update_id)
        );
        // Acknowledge everything: the stream empties and its file goes.
        fw.acknowledge(&starting);
        while fw.update().await.state != TaskState::Finished {}
        let deadline = Instant::now() + Duration::from_secs(10);
        while path.exists() && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(!path.exists(), "an acknowledged stream stays on disk");
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// What a framework heard of one task: state, reason and source of each
/// update.
type Updates = Vec<(TaskState, Option<Reason>, String)>;

/// An emulated agent (the emulator's: the real agent on a simulated
/// machine and disk) says to its master what a real agent says, for a
/// task that finishes and one that is killed: the same code, not a
/// look-alike.
#[test]
fn an_emulated_agent_says_what_a_real_agent_says() {
    let (work_dir, runner) = processes_in("emulated");
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let _real = start_agent(&ca, &master, "real", "cpus:2;mem:1024", runner).await;
        let _emulated =
            strata_integration::emulator::emulate(&ca, &master, "emulated", 1, "cpus:2;mem:1024")
                .await
                .unwrap();
        let (_schedulers, mut fw) = strata_integration::cluster::framework(&ca, &master).await;
        // One offer from each agent; on each, a task that finishes and one
        // that runs until killed.
        let mut agents = BTreeMap::new();
        while agents.len() < 2 {
            for offer in fw.offers().await {
                let prefix = if offer.hostname == "real" {
                    "real"
                } else {
                    "emulated"
                };
                let finishes = if prefix == "real" {
                    command_task(
                        &format!("{prefix}-finishes"),
                        &offer.agent_id,
                        "cpus:0.5;mem:64",
                        CommandInfo::shell("true"),
                    )
                } else {
                    strata_integration::cluster::task(
                        &format!("{prefix}-finishes"),
                        &offer.agent_id,
                        "cpus:0.5;mem:64",
                        50,
                    )
                };
                let killed = command_task(
                    &format!("{prefix}-killed"),
                    &offer.agent_id,
                    "cpus:0.5;mem:64",
                    CommandInfo::shell("exec sleep 60"),
                );
                fw.send(ToMaster::Accept {
                    framework_id: fw.id(),
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![Operation::Launch(vec![finishes, killed])],
                    filters: Filters::default(),
                });
                agents.insert(prefix, offer.agent_id.clone());
            }
        }
        let mut seen: BTreeMap<String, Updates> = BTreeMap::new();
        let ended = |seen: &BTreeMap<String, Updates>| {
            seen.values()
                .filter(|states| states.last().is_some_and(|(state, ..)| state.is_terminal()))
                .count()
        };
        let mut killing = 0;
        while ended(&seen) < 4 {
            let status = fw.update().await;
            assert!(
                status.update_id.is_some() && status.agent_id.is_some(),
                "{status:?}"
            );
            let task = status.task_id.to_string();
            if task.ends_with("-killed") && status.state == TaskState::Running {
                killing += 1;
                fw.send(ToMaster::Kill {
                    framework_id: fw.id(),
                    task_id: status.task_id.clone(),
                });
            }
            seen.entry(task).or_default().push((
                status.state,
                status.reason,
                format!("{:?}", status.source),
            ));
        }
        assert_eq!(killing, 2);
        for kind in ["finishes", "killed"] {
            let (real, emulated) = (
                &seen[&format!("real-{kind}")],
                &seen[&format!("emulated-{kind}")],
            );
            assert_eq!(real, emulated, "{kind}");
        }
        let states: Vec<TaskState> = seen["real-killed"]
            .iter()
            .map(|(state, ..)| *state)
            .collect();
        assert_eq!(
            states,
            vec![TaskState::Starting, TaskState::Running, TaskState::Killed]
        );
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}
