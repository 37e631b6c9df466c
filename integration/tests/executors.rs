//! Custom executors as real processes: the agent starts the executor,
//! which registers back over QUIC, runs several tasks and reports them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_agent::{AgentConfig, Runner};
use strata_integration::cluster::{
    Scheduler, fast_master, node, r, start_agent_with, start_master,
};
use strata_protocol::{
    CommandInfo, ExecutorId, ExecutorInfo, Filters, FrameworkInfo, Operation, Reason, TaskId,
    TaskInfo, TaskKind, TaskState, TaskStatus, ToMaster,
};
use strata_runtime::{CertificateAuthority, Role};

const EXECUTOR: &str = env!("CARGO_BIN_EXE_strata-test-executor");

fn executor(id: &str, command: CommandInfo) -> ExecutorInfo {
    ExecutorInfo {
        executor_id: ExecutorId::new(id).unwrap(),
        name: id.to_owned(),
        command,
        resources: Default::default(),
    }
}

fn binary(path: &str) -> CommandInfo {
    CommandInfo {
        shell: false,
        value: path.to_owned(),
        arguments: vec![path.to_owned()],
        ..CommandInfo::default()
    }
}

/// An agent running processes under `work_dir`, with TLS material for
/// its executors; with `images`, in cgroups and able to run images from
/// `work_dir`.
fn agent_config(
    ca: &CertificateAuthority,
    master: &strata_runtime::Upid,
    work_dir: &std::path::Path,
    images: bool,
) -> AgentConfig {
    let (isolation, images) = if images {
        let (isolation, _) =
            strata_agent::isolation::choose(&strata_agent::isolation::IsolationOptions {
                requested: Some("cgroups".parse().unwrap()),
                cgroups_root: format!("strata-test-executors-{}", std::process::id()),
                cfs: false,
                pids_max: None,
                program: None,
                work_dir: work_dir.to_owned(),
            })
            .unwrap();
        let images = strata_agent::image_containers::ImageOptions {
            image_dirs: vec![work_dir.to_owned()],
            ..Default::default()
        };
        (isolation, Some(images))
    } else {
        (strata_agent::isolation::Isolation::Posix, None)
    };
    let runner = Runner::Processes {
        work_dir: work_dir.to_owned(),
        kill_grace: Duration::from_secs(1),
        isolation,
        images,
    };
    let mut config = AgentConfig::new(
        master.clone(),
        "agent".into(),
        r("cpus:4;mem:1024"),
        Default::default(),
        9,
        runner,
    );
    let cluster = ca.issue(Role::Agent, "agent").unwrap();
    config.executor_credentials =
        Some(strata_agent::ExecutorCredentials::in_memory(&cluster).unwrap());
    config
}

/// The work directory of test `test`'s agent.
fn work_dir_of(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("strata-executors-{test}-{}", std::process::id()))
}

/// Runs `tasks` on one agent and returns each task's statuses.
fn run_tasks(
    test: &str,
    registration_timeout: Duration,
    make: impl Fn(&strata_protocol::AgentId) -> Vec<TaskInfo>,
) -> (BTreeMap<String, Vec<TaskStatus>>, std::path::PathBuf) {
    let work_dir = work_dir_of(test);
    let _ = std::fs::remove_dir_all(&work_dir);
    run_tasks_in(test, registration_timeout, false, make)
}

/// [`run_tasks`] in `work_dir_of(test)` as it is, with an agent that
/// runs images when `images`.
fn run_tasks_in(
    test: &str,
    registration_timeout: Duration,
    images: bool,
    make: impl Fn(&strata_protocol::AgentId) -> Vec<TaskInfo>,
) -> (BTreeMap<String, Vec<TaskStatus>>, std::path::PathBuf) {
    let work_dir = work_dir_of(test);
    let statuses = actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let mut config = agent_config(&ca, &master, &work_dir, images);
        config.executor_registration_timeout = registration_timeout;
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
        let tasks = make(&offer.agent_id);
        let count = tasks.len();
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(tasks)],
            filters: Filters::default(),
        });
        let mut statuses: BTreeMap<String, Vec<TaskStatus>> = BTreeMap::new();
        let finished = |statuses: &BTreeMap<String, Vec<TaskStatus>>| {
            statuses.len() == count
                && statuses
                    .values()
                    .all(|s| s.last().is_some_and(|last| last.state.is_terminal()))
        };
        while !finished(&statuses) {
            let status = fw.update().await;
            statuses
                .entry(status.task_id.to_string())
                .or_default()
                .push(status);
        }
        statuses
    });
    (statuses, work_dir)
}

fn task(id: &str, agent: &strata_protocol::AgentId, executor: ExecutorInfo) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id).unwrap(),
        name: id.to_owned(),
        agent_id: agent.clone(),
        resources: r("cpus:0.5;mem:32"),
        kind: TaskKind::Executor(executor),
        labels: BTreeMap::new(),
    }
}

#[test]
fn one_custom_executor_runs_three_tasks() {
    let (statuses, work_dir) = run_tasks("three", Duration::from_secs(60), |agent| {
        (1..=3)
            .map(|n| task(&format!("t{n}"), agent, executor("e1", binary(EXECUTOR))))
            .collect()
    });
    for n in 1..=3 {
        let states: Vec<TaskState> = statuses[&format!("t{n}")].iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Running, TaskState::Finished],
            "t{n}"
        );
    }
    // One executor process served all three: one run of e1.
    let runs: Vec<_> = walk(&work_dir)
        .into_iter()
        .filter(|path| path.ends_with("runs") && path.parent().is_some_and(|p| p.ends_with("e1")))
        .collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(std::fs::read_dir(&runs[0]).unwrap().count(), 1);
    // The executor held a certificate of its own, never the agent's key:
    // an executor identity named after its framework and itself, from an
    // authority only its agent trusts.
    let tls_dirs: Vec<_> = walk(&work_dir)
        .into_iter()
        .filter(|path| path.ends_with(".tls"))
        .collect();
    assert_eq!(tls_dirs.len(), 1);
    let material = strata_runtime::TlsMaterial::load(&tls_dirs[0]).unwrap();
    let identity = material.identity();
    assert_eq!(identity.role, Some(Role::Executor));
    assert!(identity.name.ends_with("/e1"), "{identity}");
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// A custom executor in an image (the test executor and the libraries
/// it needs, over busybox), run by runc: it reaches its agent over the
/// host's network with the credentials the agent left in its sandbox
/// (at /mnt/mesos/sandbox in the container), and runs its tasks.
#[test]
fn a_custom_executor_runs_in_an_image() {
    let root = rustix::process::geteuid().is_root();
    let runc = strata_agent::oci::OciRuntime::find(Some("runc"), std::path::Path::new("/")).is_ok();
    if !(root && runc && std::path::Path::new("/bin/busybox").is_file()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the image test as root, with runc and busybox-static"
        );
        eprintln!("skipped: images need root, runc and busybox-static");
        return;
    }
    let work_dir = work_dir_of("image");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir).unwrap();
    let layout = work_dir.join("layout");
    let built = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../cli/tests/images/make_image.py"
        ))
        .arg(&layout)
        .args(["--with-binary", EXECUTOR])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let name = std::path::Path::new(EXECUTOR)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let command = CommandInfo {
        container: Some(strata_protocol::ContainerInfo {
            image: Some(layout.to_str().unwrap().to_owned()),
            ..Default::default()
        }),
        ..binary(&format!("/bin/{name}"))
    };
    let (statuses, work_dir) = run_tasks_in("image", Duration::from_secs(60), true, |agent| {
        (1..=2)
            .map(|n| task(&format!("t{n}"), agent, executor("boxed", command.clone())))
            .collect()
    });
    for n in 1..=2 {
        let states: Vec<TaskState> = statuses[&format!("t{n}")].iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Running, TaskState::Finished],
            "t{n}: {:?}",
            statuses[&format!("t{n}")]
        );
    }
    // The agent stopped with the test: the executor's container is gone,
    // and with it its bundle and root filesystem.
    let bundles = std::fs::read_dir(work_dir.join("containers"))
        .unwrap()
        .count();
    assert_eq!(bundles, 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(work_dir.to_str().unwrap()), "{mounts}");
    // The cgroups the agent and the runtime made under this test's root.
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        remove_empty_tree(
            &hierarchy
                .path()
                .join(format!("strata-test-executors-{}", std::process::id())),
        );
    }
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// Removes the empty directories at and below `dir`, deepest first.
fn remove_empty_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[test]
fn an_executor_that_exits_fails_its_tasks() {
    let (statuses, work_dir) = run_tasks("exits", Duration::from_secs(60), |agent| {
        vec![task(
            "orphan",
            agent,
            executor("quitter", CommandInfo::shell("exit 0")),
        )]
    });
    let last = statuses["orphan"].last().unwrap();
    assert_eq!(last.state, TaskState::Failed);
    assert_eq!(last.reason, Some(Reason::ExecutorTerminated));
    let _ = std::fs::remove_dir_all(&work_dir);
}

#[test]
fn an_executor_that_never_registers_times_out() {
    let (statuses, work_dir) = run_tasks("timeout", Duration::from_millis(300), |agent| {
        vec![task(
            "waiting",
            agent,
            executor("silent", CommandInfo::shell("sleep 100")),
        )]
    });
    let last = statuses["waiting"].last().unwrap();
    assert_eq!(last.state, TaskState::Failed);
    assert_eq!(last.reason, Some(Reason::ExecutorRegistrationTimeout));
    let _ = std::fs::remove_dir_all(&work_dir);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.push(path.clone());
                found.extend(walk(&path));
            }
        }
    }
    found
}

#[test]
fn framework_messages_reach_the_executor_and_come_back() {
    let work_dir =
        std::env::temp_dir().join(format!("strata-executors-messages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        let config = agent_config(&ca, &master, &work_dir, false);
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
        let mut long = task("long", &offer.agent_id, executor("e1", binary(EXECUTOR)));
        long.labels
            .insert("strata.test/run-ms".into(), "60000".into());
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(vec![long])],
            filters: Filters::default(),
        });
        assert_eq!(fw.update().await.state, TaskState::Running);
        fw.send(ToMaster::FrameworkMessage {
            framework_id: fw.id(),
            agent_id: offer.agent_id.clone(),
            executor_id: ExecutorId::new("e1").unwrap(),
            data: strata_runtime::Blob(b"hello".to_vec()),
        });
        loop {
            if let strata_protocol::ToScheduler::FrameworkMessage {
                data, executor_id, ..
            } = fw.next().await
            {
                assert_eq!(executor_id.as_str(), "e1");
                assert_eq!(data.0, b"olleh");
                break;
            }
        }
        fw.send(ToMaster::Kill {
            framework_id: fw.id(),
            task_id: TaskId::new("long").unwrap(),
        });
        assert_eq!(fw.update().await.state, TaskState::Killed);
        // Tearing the framework down shuts its executor down.
        let framework_id = fw.id();
        assert!(executor_alive(&framework_id));
        fw.send(ToMaster::Teardown {
            framework_id: framework_id.clone(),
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while executor_alive(&framework_id) && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(
            !executor_alive(&framework_id),
            "the executor outlived its framework"
        );
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// Whether a live process runs with this framework's id in its
/// environment (executors get it from their agent).
fn executor_alive(framework_id: &strata_protocol::FrameworkId) -> bool {
    let marker = format!("STRATA_FRAMEWORK_ID={framework_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        !zombie
            && std::fs::read(entry.path().join("environ")).is_ok_and(|environ| {
                environ
                    .split(|byte| *byte == 0)
                    .any(|var| var == marker.as_bytes())
            })
    })
}

/// A checkpointing framework's executor outlives its agent: the agent is
/// stopped and started again on the same work directory, reconnects the
/// executor, which registers again (resending what the agent may have
/// missed), and its task runs on to FINISHED, never failed.
#[test]
fn a_restarted_agent_reconnects_a_checkpointing_frameworks_executor() {
    reconnects_executor(None);
}

/// The same with the executor started by the agent's task launcher, which
/// outlives the agent and tells the restarted agent how the executor
/// ends.
#[test]
fn a_restarted_agent_reconnects_an_executor_its_launcher_started() {
    reconnects_executor(Some(env!("CARGO_BIN_EXE_strata-test-launcher")));
}

fn reconnects_executor(launcher: Option<&str>) {
    let work_dir = std::env::temp_dir().join(format!(
        "strata-executors-reconnect-{}-{}",
        launcher.is_some(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work_dir);
    let states = actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let patient = strata_master::Config {
            allocation_interval: Duration::from_millis(100),
            ..strata_master::Config::default()
        };
        // Ids of its own, so other tests' executors are not taken for its.
        let prefix = if launcher.is_some() {
            "relaunch"
        } else {
            "reconnect"
        };
        let master_node = node(&ca, Role::Master, "master").await;
        let master = master_node
            .spawn(
                strata_master::MASTER_ID,
                move || strata_master::Master::new(patient.clone(), prefix),
                strata_runtime::SpawnOptions::default(),
            )
            .unwrap();
        let mut config = agent_config(&ca, &master, &work_dir, false);
        config.kill_tasks_on_stop = false;
        config.task_launcher = launcher.map(std::path::PathBuf::from);
        let agent = start_agent_with(&ca, "agent", config.clone()).await;
        let schedulers = node(&ca, Role::Framework, "schedulers").await;
        let mut info = FrameworkInfo::new("fw", "u");
        info.checkpoint = true;
        let mut fw = Scheduler::subscribe(&schedulers, "scheduler", &master, info).await;
        let offer = fw.offers().await.remove(0);
        let mut launched = task("kept", &offer.agent_id, executor("e1", binary(EXECUTOR)));
        launched
            .labels
            .insert("strata.test/run-ms".into(), "1500".into());
        fw.send(ToMaster::Accept {
            framework_id: fw.id(),
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation::Launch(vec![launched])],
            filters: Filters::default(),
        });
        // Updates are delivered at least once: a resent one has the same
        // id and counts once.
        let mut seen = std::collections::BTreeSet::new();
        let mut states = Vec::new();
        let mut record = |status: TaskStatus, states: &mut Vec<TaskState>| {
            if seen.insert(status.update_id) {
                states.push(status.state);
            }
        };
        record(fw.update().await, &mut states);
        assert_eq!(states, vec![TaskState::Running]);
        agent.close(Duration::from_secs(1)).await;
        drop(agent);
        let _agent = start_agent_with(&ca, "agent", config).await;
        while !states.last().is_some_and(|state| state.is_terminal()) {
            record(fw.update().await, &mut states);
        }
        // Its executor goes with its framework.
        let framework_id = fw.id();
        fw.send(ToMaster::Teardown {
            framework_id: framework_id.clone(),
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while executor_alive(&framework_id) && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(
            !executor_alive(&framework_id),
            "the executor outlived its framework"
        );
        states
    });
    assert_eq!(states, vec![TaskState::Running, TaskState::Finished]);
    assert_eq!(
        work_dir.join("task-launcher.log").exists(),
        launcher.is_some(),
        "the executor's parent"
    );
    let _ = std::fs::remove_dir_all(&work_dir);
}
