//! The committed seed corpus of every target runs through its target:
//! `cargo test` here is a quick regression run without libFuzzer. The
//! ignored `write_seeds` makes the binary and JSON seeds from real
//! values (`cargo test -- --ignored write_seeds`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use strata_fuzz::TARGETS;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_seed_passes_its_target() {
    for (name, target) in TARGETS {
        let dir = corpus(name);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            seeds += 1;
        }
        assert!(seeds > 0, "no seeds for {name}");
    }
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    use strata_protocol::*;
    use strata_runtime::codec;

    let agent_id = AgentId::new("m1-S1").unwrap();
    let framework_id = FrameworkId::new("m1-F1").unwrap();
    let resources: Resources = "cpus:2;mem:1024;ports:[31000-31010]".parse().unwrap();
    let info = AgentInfo {
        id: Some(agent_id.clone()),
        hostname: "node-1".into(),
        resources: resources.clone(),
        attributes: "rack:r1;zone:a".parse().unwrap(),
    };
    let mut framework = FrameworkInfo::new("fw", "nobody");
    framework.id = Some(framework_id.clone());
    framework.principal = Some("ops".into());
    let task_info = TaskInfo {
        task_id: TaskId::new("t1").unwrap(),
        name: "t1".into(),
        agent_id: agent_id.clone(),
        resources: "cpus:1;mem:64".parse().unwrap(),
        kind: TaskKind::Command(CommandInfo::shell("echo hello")),
        labels: Default::default(),
    };
    let status = TaskStatus {
        task_id: TaskId::new("t1").unwrap(),
        state: TaskState::Running,
        source: Source::Executor,
        reason: None,
        message: "running".into(),
        agent_id: Some(agent_id.clone()),
        executor_id: None,
        update_id: Some(UpdateId(7)),
        timestamp_ms: 1,
        sandbox: None,
    };
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "register",
            codec::encode(&ToMaster::RegisterAgent { info: info.clone() }).unwrap(),
        ),
        (
            "subscribe",
            codec::encode(&ToMaster::Subscribe {
                info: framework.clone(),
                constraints: vec![OfferConstraint::MinimumFree("mem:32768".parse().unwrap())],
            })
            .unwrap(),
        ),
        (
            "update",
            codec::encode(&ToMaster::StatusUpdate {
                framework_id: framework_id.clone(),
                status: status.clone(),
            })
            .unwrap(),
        ),
        (
            "run-task",
            codec::encode(&ToAgent::RunTask {
                framework: Box::new(framework.clone()),
                task: Box::new(task_info.clone()),
            })
            .unwrap(),
        ),
        (
            "launch",
            codec::encode(&ToExecutor::LaunchTask {
                task: task_info.clone(),
            })
            .unwrap(),
        ),
        (
            "subscribed",
            codec::encode(&ToScheduler::Update {
                status: status.clone(),
            })
            .unwrap(),
        ),
    ];
    for (name, bytes) in &messages {
        write_seed("messages", name, bytes);
    }
    let hello = codec::hello_frame(&codec::Hello {
        listen: "127.0.0.1:4000".parse().unwrap(),
        incarnation: strata_runtime::Incarnation(42),
    })
    .unwrap();
    let mut stream = hello.to_vec();
    stream.extend_from_slice(
        &codec::envelope_frame(
            &codec::EnvelopeHeader {
                to: "master",
                from: "scheduler-1",
                to_incarnation: strata_runtime::Incarnation::ANY,
            },
            &ToMaster::Subscribe {
                info: framework.clone(),
                constraints: vec![],
            },
            codec::DEFAULT_MAX_FRAME_BYTES,
        )
        .unwrap(),
    );
    write_seed("frames", "hello-subscribe", &stream);

    let registry = strata_master::registry::Registry {
        epoch: 3,
        agents: vec![std::sync::Arc::new(strata_master::registry::RegisteredAgent {
            info: std::sync::Arc::new(info.clone()),
            pid: "agent@127.0.0.1:5051".parse().unwrap(),
            certificate_name: "node-1".into(),
            unreachable: false,
        })],
        frameworks: vec![framework.clone()],
        removed_frameworks: vec![FrameworkId::new("m0-F9").unwrap()],
        agents_admitted: 1,
        frameworks_created: 1,
        ..strata_master::registry::Registry::empty()
    };
    write_seed(
        "registry",
        "one-of-each",
        &serde_json::to_vec(&registry).unwrap(),
    );

    use strata_agent::checkpoint::*;
    let task = Task {
        info: task_info.clone(),
        framework_id: framework_id.clone(),
        state: TaskState::Running,
        status: Some(status.clone()),
    };
    let checkpoints: Vec<(u8, &str, Vec<u8>)> = vec![
        (
            0,
            "agent",
            serde_json::to_vec(&AgentCheckpoint {
                version: FORMAT_VERSION,
                info: info.clone(),
            })
            .unwrap(),
        ),
        (
            1,
            "framework",
            serde_json::to_vec(&FrameworkCheckpoint {
                version: FORMAT_VERSION,
                info: framework.clone(),
            })
            .unwrap(),
        ),
        (
            2,
            "task",
            serde_json::to_vec(&TaskCheckpoint {
                version: FORMAT_VERSION,
                task,
                run: Some(RunCheckpoint {
                    container: strata_agent::containerizer::ContainerId::new("run-1"),
                    group: 4242,
                    start_ticks: 99,
                    sandbox: "/tmp/sandbox".into(),
                    launched: true,
                }),
            })
            .unwrap(),
        ),
        (
            3,
            "executor",
            serde_json::to_vec(&ExecutorCheckpoint {
                version: FORMAT_VERSION,
                executor_id: ExecutorId::new("e1").unwrap(),
                group: 4243,
                start_ticks: 100,
                pid: Some("executor-e1@127.0.0.1:40000".parse().unwrap()),
                launched: true,
                container: strata_agent::containerizer::ContainerId::new("executor-e1"),
                sandbox: "/tmp/sandbox-e1".into(),
            })
            .unwrap(),
        ),
        (
            4,
            "stream",
            serde_json::to_vec(&StreamCheckpoint {
                version: FORMAT_VERSION,
                framework_id: framework_id.clone(),
                task_id: TaskId::new("t1").unwrap(),
                pending: vec![status.clone()],
            })
            .unwrap(),
        ),
    ];
    for (kind, name, bytes) in checkpoints {
        let mut seed = vec![kind];
        seed.extend_from_slice(&bytes);
        write_seed("checkpoints", name, &seed);
    }

    use strata_agent::launcher::{FromLauncher, Launch, ToLauncher};
    let launch = ToLauncher::Launch(Box::new(Launch {
        argv: vec![b"/bin/sh".to_vec(), b"-c".to_vec(), b"true".to_vec()],
        environment: vec![(b"PATH".to_vec(), b"/bin".to_vec())],
        directory: "/tmp/sandbox".into(),
        stdout: "/tmp/sandbox/stdout".into(),
        stderr: "/tmp/sandbox/stderr".into(),
        dies_with_agent: true,
        run_as: None,
        confinement: Default::default(),
    }));
    let mut frames = Vec::new();
    for message in [
        codec::message_frame(
            &ToLauncher::Requests {
                secret: vec![7; 32],
            },
            1 << 20,
        )
        .unwrap(),
        codec::message_frame(&launch, 1 << 20).unwrap(),
        codec::message_frame(&FromLauncher::Launched { pid: 4242 }, 1 << 20).unwrap(),
    ] {
        frames.extend_from_slice(&message);
    }
    write_seed("launcher", "requests-launch", &frames);

    // The structure-aware targets read any bytes as choices; seeds of a
    // few shapes start them off (libFuzzer grows its own corpus).
    let counting: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let mut stepping = Vec::new();
    for step in 0..64u8 {
        stepping.extend_from_slice(&[step % 10, step, 1, 0, 0x40, step.wrapping_mul(37)]);
    }
    for target in ["message_values", "resource_values", "master_books"] {
        write_seed(target, "zeros", &[0; 256]);
        write_seed(target, "counting", &counting);
        write_seed(target, "stepping", &stepping);
    }
}
