//! Highly available masters over a real three-server ZooKeeper ensemble
//! (Debian's package, which `.ci/run` installs; the test runs the servers
//! itself on loopback ports): three `strata master` processes, two agents
//! and a running `strata execute`, all given `zk://`. The leader is killed
//! with SIGKILL, another one is stopped past its session timeout and
//! resumed, then ZooKeeper loses one server and then its quorum; through
//! all of it the tasks keep running and their updates reach the framework.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use strata_integration::{ChildNode, KillOnDrop, lines_of};
use strata_zk::server::LocalEnsemble;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// The longest any step may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A ZooKeeper session timeout the ensemble grants (its tick is 500 ms).
const SESSION_TIMEOUT: &str = "3s";

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// What master `index` answers `/state` with: its status, and the
/// epoch when it leads.
fn state_of(masters: &[ChildNode], index: usize) -> (u16, Option<u64>) {
    let url = format!("http://{}/state", masters[index].pid.addr());
    match http().get(&url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let epoch = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|state| state["epoch"].as_u64());
            (status, epoch)
        }
        Err(_) => (0, None),
    }
}

/// Waits for a master other than those in `not` to lead with both agents
/// registered; its index and epoch.
fn leader(masters: &[ChildNode], not: &[usize]) -> (usize, u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for index in (0..masters.len()).filter(|index| !not.contains(index)) {
            if let (200, Some(epoch)) = state_of(masters, index)
                && registered_agents(masters, index) == 2
            {
                return (index, epoch);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no master led within {DEADLINE:?}"
        );
        std::thread::yield_now();
    }
}

/// How many agents master `index` has registered and active.
fn registered_agents(masters: &[ChildNode], index: usize) -> usize {
    let url = format!("http://{}/state", masters[index].pid.addr());
    let Ok(mut response) = http().get(&url).call() else {
        return 0;
    };
    let body = response.body_mut().read_to_string().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|state| {
            state["agents"].as_array().map(|agents| {
                agents
                    .iter()
                    .filter(|agent| agent["status"] == "active")
                    .count()
            })
        })
        .unwrap_or(0)
}

/// Starts `strata execute` of `command` with `--master master` (through
/// ZooKeeper, or a master's address); its child and its output lines.
fn execute(
    master: &str,
    work: &str,
    name: &str,
    command: &str,
) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(STRATA)
        .args([
            "execute",
            "--master",
            master,
            "--name",
            name,
            "--command",
            command,
        ])
        .args([
            "--checkpoint",
            "--failover-timeout",
            "120",
            "--timeout",
            "120",
        ])
        .args(["--resources", "cpus:0.1;mem:16", "--work-dir", work])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    // Its notes (subscribed, lost the master) go to stderr: into the same
    // stream of lines.
    let errors = lines_of(child.stderr.take().unwrap());
    let (sender, merged) = std::sync::mpsc::channel();
    for source in [lines, errors] {
        let sender = sender.clone();
        std::thread::spawn(move || {
            for line in source {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (KillOnDrop(child), merged)
}

/// Waits for `child` to exit; its exit code.
fn exit_code(child: &mut KillOnDrop) -> Option<i32> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "strata execute did not end");
        common::exits_within(child.0.id() as i32, Duration::from_millis(200));
    }
}

fn signal(process: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(process as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[test]
fn masters_fail_over_through_zookeeper_and_tasks_run_on() {
    let (dir, work, _) = common::work_dirs("ha");
    let mut ensemble = LocalEnsemble::start(&dir.join("zookeeper"), 3).unwrap();
    let zk = ensemble.url("/strata/ha-test");
    let mut masters: Vec<ChildNode> = (0..3)
        .map(|index| {
            let home = common::agent_work_dir(&dir, &format!("master-{index}"));
            let flags = ["--zk", zk.as_str(), "--zk-session-timeout", SESSION_TIMEOUT];
            common::start_master_with(&home, "0", &flags)
        })
        .collect();
    let _agents: Vec<ChildNode> = (0..2)
        .map(|index| {
            let home = common::agent_work_dir(&dir, &format!("agent-{index}"));
            common::start_agent_with(&zk, &home, &["--resources", "cpus:2;mem:256"])
        })
        .collect();
    let (first, first_epoch) = leader(&masters, &[]);
    // Standbys redirect to the leader, as Mesos's do.
    let standby = (first + 1) % 3;
    let answer = http()
        .get(&format!("http://{}/state", masters[standby].pid.addr()))
        .call()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    let location = answer.headers().get("location").unwrap().to_str().unwrap();
    assert_eq!(location, format!("//{}/state", masters[first].pid.addr()));

    // 1. The leader is killed while a task runs: another leads, the agents
    // and the framework follow it, and the task finishes with its updates
    // delivered.
    let marker = dir.join("first-task-ran");
    let command = format!("touch {}; sleep 4", marker.display());
    let (mut run, lines) = execute(&zk, &work, "through-failover", &command);
    common::read_until(&lines, "TASK_RUNNING");
    masters[first].kill().unwrap();
    let (second, second_epoch) = leader(&masters, &[first]);
    assert!(
        second_epoch > first_epoch,
        "{second_epoch} after {first_epoch}"
    );
    common::read_until(&lines, "TASK_FINISHED");
    assert_eq!(exit_code(&mut run), Some(0));
    assert!(marker.exists());

    // 2. The new leader is stopped past its session timeout: the third
    // leads; resumed, the stopped one does not lead again (it rejoins as a
    // standby and redirects).
    let stopped = masters[second].process_id();
    signal(stopped, rustix::process::Signal::STOP);
    let (third, third_epoch) = leader(&masters, &[first, second]);
    assert!(third_epoch > second_epoch);
    signal(stopped, rustix::process::Signal::CONT);
    let deadline = Instant::now() + DEADLINE;
    while state_of(&masters, second).0 != 307 {
        assert!(
            Instant::now() < deadline,
            "the resumed master never stood by"
        );
        std::thread::yield_now();
    }
    assert_eq!(state_of(&masters, third), (200, Some(third_epoch)));

    // 3. One ZooKeeper server of three is lost: nothing changes.
    ensemble.kill_server(0);
    let (run_code, _) = {
        let (mut run, lines) = execute(&zk, &work, "one-server-lost", "true");
        common::read_until(&lines, "TASK_FINISHED");
        (exit_code(&mut run), lines)
    };
    assert_eq!(run_code, Some(0));
    assert_eq!(state_of(&masters, third), (200, Some(third_epoch)));
    // A framework given a standby's address is sent to the leader.
    let standby = masters[second].pid.addr().to_string();
    let (mut run, lines) = execute(&standby, &work, "through-a-standby", "true");
    common::read_until(&lines, "TASK_FINISHED");
    assert_eq!(exit_code(&mut run), Some(0));

    // 4. The quorum is lost: no master leads, the running task keeps
    // running; the quorum back, a master leads and the task's end reaches
    // its framework.
    let release = dir.join("release");
    let command = format!("while [ ! -e {} ]; do sleep 0.1; done", release.display());
    let (mut run, lines) = execute(&zk, &work, "through-quorum-loss", &command);
    let running = common::read_until(&lines, "TASK_RUNNING");
    let sandbox = running.rsplit("running in ").next().unwrap().trim();
    let task = common::task_pid(std::path::Path::new(sandbox));
    ensemble.kill_server(1);
    let deadline = Instant::now() + DEADLINE;
    while (0..3).any(|index| state_of(&masters, index).0 == 200) {
        assert!(
            Instant::now() < deadline,
            "a master still leads without a quorum"
        );
        std::thread::yield_now();
    }
    assert!(common::alive(task), "the task ended with the quorum");
    ensemble.start_server(0).unwrap();
    ensemble.start_server(1).unwrap();
    // The same master may lead on (its session outlived the quorum's
    // loss), or another with a later epoch.
    let (_, back_epoch) = leader(&masters, &[first]);
    assert!(back_epoch >= third_epoch);
    assert!(common::alive(task));
    std::fs::write(&release, b"").unwrap();
    common::read_until(&lines, "TASK_FINISHED");
    assert_eq!(exit_code(&mut run), Some(0));
    drop(masters);
    drop(ensemble);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strata_local_runs_three_masters_over_a_zookeeper_it_starts() {
    use std::io::{BufRead, BufReader};
    let dir = common::scratch().join(format!("strata-local-ha-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("local.log")).unwrap();
    let mut local = std::process::Command::new(STRATA)
        .args(["local", "--masters", "3", "--port", "0", "--work-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = local.stdout.take().unwrap();
    let local = KillOnDrop(local);
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Submit work");
        printed.push(line);
        if done {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let masters = printed
        .iter()
        .filter(|line| line.trim_start().starts_with("master "))
        .count();
    assert_eq!(masters, 3, "{printed:#?}");
    let zk = printed
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("zk://"))
        })
        .unwrap_or_else(|| panic!("no ZooKeeper address in {printed:#?}"))
        .to_owned();
    let work = dir.to_str().unwrap();
    let run = std::process::Command::new(STRATA)
        .args([
            "execute",
            "--master",
            &zk,
            "--name",
            "hello",
            "--command",
            "true",
        ])
        .args(["--work-dir", work, "--timeout", "60"])
        .output()
        .unwrap();
    let out = common::succeeded(&run);
    assert!(out.contains("TASK_FINISHED"), "{out}");
    let tasks = std::process::Command::new(STRATA)
        .args(["tasks", "--master", &zk])
        .output()
        .unwrap();
    assert!(common::succeeded(&tasks).contains("hello"));
    drop(local);
    let _ = std::fs::remove_dir_all(&dir);
}
