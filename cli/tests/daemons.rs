//! `strata master` and `strata agent` as separate OS processes, a
//! scheduler in the test: a command runs on the agent and finishes.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use strata_integration::ChildNode;
use strata_protocol::{
    CommandInfo, Filters, FrameworkInfo, Operation, TaskId, TaskInfo, TaskKind, TaskState,
    ToMaster, ToScheduler,
};
use strata_runtime::{Node, NodeConfig, Received, TlsMaterial};

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

#[test]
fn a_command_runs_on_an_agent_daemon() {
    let work_dir = common::scratch().join(format!("strata-daemons-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let work = work_dir.to_str().unwrap();
    TlsMaterial::development(
        &work_dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )
    .unwrap();
    let master = common::start_master(work);
    let master_address = master.pid.addr().to_string();
    let agent_work = common::agent_work_dir(&work_dir, "agent");
    let _agent = start_agent(
        &master_address,
        &agent_work,
        "cpus:2;mem:512",
        &["--attributes", "rack:r1"],
    );
    actix_rt::System::new().block_on(async {
        let tls = TlsMaterial::development(
            &work_dir.join("tls"),
            strata_runtime::Role::Framework,
            "scheduler",
        )
        .unwrap();
        let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap(), tls))
            .await
            .unwrap();
        let mut inbox = node.inbox::<ToScheduler>("scheduler", 64).unwrap();
        let info = FrameworkInfo::new("test", strata_agent::users::current_user());
        inbox
            .send(
                &master.pid,
                ToMaster::Subscribe {
                    info,
                    constraints: vec![],
                },
            )
            .unwrap();
        let mut framework_id = None;
        let mut finished = None;
        while finished.is_none() {
            let Some(Received::Message(_, message)) =
                inbox.recv_within(Duration::from_secs(30)).await
            else {
                panic!("the master went quiet");
            };
            match message {
                ToScheduler::Subscribed {
                    framework_id: id, ..
                } => framework_id = Some(id),
                ToScheduler::Offers(offers) => {
                    let offer = &offers[0];
                    assert_eq!(offer.resources.cpus().to_string(), "2");
                    assert_eq!(offer.attributes.to_string(), "rack:r1");
                    let task = TaskInfo {
                        task_id: TaskId::new("hello").unwrap(),
                        name: "hello".into(),
                        agent_id: offer.agent_id.clone(),
                        resources: "cpus:0.5;mem:64".parse().unwrap(),
                        kind: TaskKind::Command(CommandInfo::shell(
                            "echo hello from $STRATA_TASK_ID",
                        )),
                        labels: Default::default(),
                    };
                    inbox
                        .send(
                            &master.pid,
                            ToMaster::Accept {
                                framework_id: framework_id.clone().unwrap(),
                                offer_ids: vec![offer.id.clone()],
                                operations: vec![Operation::Launch(vec![task])],
                                filters: Filters::default(),
                            },
                        )
                        .unwrap();
                }
                ToScheduler::Update { status } => {
                    if let (Some(update_id), Some(agent_id)) =
                        (status.update_id, status.agent_id.clone())
                    {
                        let acknowledge = ToMaster::Acknowledge {
                            framework_id: framework_id.clone().unwrap(),
                            agent_id,
                            task_id: status.task_id.clone(),
                            update_id,
                        };
                        inbox.send(&master.pid, acknowledge).unwrap();
                    }
                    if status.state.is_terminal() {
                        finished = Some(status);
                    }
                }
                _ => {}
            }
        }
        let status = finished.unwrap();
        assert_eq!(status.state, TaskState::Finished, "{}", status.message);
    });
    let stdout =
        find_file(&work_dir.join("agent").join("agents"), "stdout").expect("a sandbox with stdout");
    assert_eq!(
        std::fs::read_to_string(stdout).unwrap(),
        "hello from hello\n"
    );
    let _ = std::fs::remove_dir_all(&work_dir);
}

fn start_agent(master: &str, work: &str, resources: &str, extra: &[&str]) -> ChildNode {
    let mut args = vec!["--resources", resources];
    args.extend_from_slice(extra);
    common::start_agent_with(master, work, &args)
}

#[test]
fn execute_spreads_instances_over_agent_daemons() {
    let work_dir = common::scratch().join(format!("strata-spread-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let work = work_dir.to_str().unwrap();
    TlsMaterial::development(
        &work_dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )
    .unwrap();
    let master = common::start_master(work);
    let master_address = master.pid.addr().to_string();
    let first_work = common::agent_work_dir(&work_dir, "agent-1");
    let second_work = common::agent_work_dir(&work_dir, "agent-2");
    let _first = start_agent(&master_address, &first_work, "cpus:1;mem:256", &[]);
    let _second = start_agent(&master_address, &second_work, "cpus:1;mem:256", &[]);
    let output = std::process::Command::new(STRATA)
        .args(common::two_overlapping_instances(&master_address, work))
        .output()
        .unwrap();
    common::assert_one_instance_per_agent(&output);
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// `strata execute` whose master dies and does not come back gives up
/// after its --timeout, saying so, with exit code 1.
#[test]
fn execute_gives_up_on_a_master_that_does_not_come_back() {
    let (work_dir, work, agent_work) = common::work_dirs("execute-master-gone");
    let mut master = common::start_master(&work);
    let master_address = master.pid.addr().to_string();
    let _agent = start_agent(&master_address, &agent_work, "cpus:1;mem:256", &[]);
    let mut execute = std::process::Command::new(STRATA)
        .args(["execute", "--master", &master_address, "--name", "long"])
        .args([
            "--command",
            "sleep 60",
            "--timeout",
            "2",
            "--work-dir",
            &work,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::lines_of(execute.stdout.take().unwrap());
    common::read_until(&lines, "TASK_RUNNING");
    master.kill().unwrap();
    let status = execute.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut execute.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost the master"), "{stderr}");
    assert!(stderr.contains("did not come back within 2 s"), "{stderr}");
    let _ = std::fs::remove_dir_all(&work_dir);
}

fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|file| file == name) {
            return Some(path);
        }
    }
    None
}

#[test]
fn bad_flags_are_refused_with_the_bad_part_named() {
    for (args, expected) in [
        (&["agent", "--resources", "cpus:lots"][..], "cpus:lots"),
        (&["agent", "--attributes", "rack"][..], "rack"),
        (&["agent", "--master", "localhost:5050"][..], "localhost"),
        (&["master", "--allocation-policy", "fair"][..], "fair"),
        (&["master", "--log-format", "yaml"][..], "yaml"),
    ] {
        let output = std::process::Command::new(STRATA)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn daemons_can_log_json_lines() {
    use std::io::{BufRead, BufReader};
    let work_dir = common::scratch().join(format!("strata-json-logs-{}", std::process::id()));
    let mut master = std::process::Command::new(STRATA)
        .args([
            "master",
            "--port",
            "0",
            "--log-format",
            "json",
            "--work-dir",
        ])
        .arg(&work_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(master.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = master.kill();
    let _ = master.wait();
    let _ = std::fs::remove_dir_all(&work_dir);
    let line = line.trim();
    assert!(
        line.starts_with('{')
            && line.ends_with('}')
            && line.contains(r#""level":"INFO""#)
            && line.contains(r#""fields":{"message":"#),
        "{line}"
    );
}

/// A master process that gives up (here: its registry cannot be written)
/// takes its daemon down with an error, rather than leaving a daemon that
/// serves without a master.
#[test]
fn a_daemon_whose_master_gives_up_exits_with_an_error() {
    let work_dir = common::scratch().join(format!("strata-gives-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    // The temporary file of the registry's first write (the process's
    // first ticket for it, `durable::WriteTicket`) is a directory: the
    // write that recovery makes fails.
    let registry = strata_master::registry::path(&work_dir);
    let mut aside = registry.clone().into_os_string();
    aside.push(".tmp.1");
    std::fs::create_dir_all(&aside).unwrap();
    let mut daemon = std::process::Command::new(STRATA)
        .args(["master", "--port", "0", "--work-dir"])
        .arg(&work_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its exit is awaited on a thread of its own, with a deadline.
    let pid = daemon.id();
    let mut stderr_pipe = daemon.stderr.take().unwrap();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(daemon.wait());
    });
    let Ok(status) = exit.recv_timeout(Duration::from_secs(30)) else {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        panic!("the daemon kept running without its master");
    };
    let status = status.unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("master gave up"), "{stderr}");
    let _ = std::fs::remove_dir_all(&work_dir);
}
