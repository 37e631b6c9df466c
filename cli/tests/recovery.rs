//! Agent recovery with real processes: `strata master`, `strata agent`
//! and `strata execute` as OS processes, tasks as real shells.
//!
//! Each task makes a FIFO in its sandbox and blocks reading it, so it runs
//! until the test writes a line to it: no timing guesses.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A task that runs until a line is written to `gate` in its sandbox.
const GATED: &str = "mkfifo gate && read line < gate";

struct Agent {
    process: common::KillOnDrop,
    logs: Receiver<String>,
    _output: Receiver<String>,
}

fn start_agent(master: &str, work: &str, resources: &str) -> Agent {
    let mut child = Command::new(STRATA)
        .args(["agent", "--master", master, "--port", "0"])
        .args(["--work-dir", work, "--resources", resources])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = common::lines_of(child.stderr.take().unwrap());
    let output = common::lines_of(child.stdout.take().unwrap());
    Agent {
        process: common::KillOnDrop(child),
        logs,
        _output: output,
    }
}

fn execute(
    master: &str,
    work: &str,
    name: &str,
    extra: &[&str],
) -> (common::KillOnDrop, Receiver<String>, Receiver<String>) {
    let mut child = Command::new(STRATA)
        .args([
            "execute",
            "--master",
            master,
            "--name",
            name,
            "--command",
            GATED,
        ])
        .args([
            "--resources",
            "cpus:0.1;mem:32",
            "--work-dir",
            work,
            "--timeout",
            "60",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::lines_of(child.stdout.take().unwrap());
    let errors = common::lines_of(child.stderr.take().unwrap());
    (common::KillOnDrop(child), lines, errors)
}

/// The sandbox a TASK_RUNNING line names.
fn sandbox_of(running: &str) -> PathBuf {
    let (_, path) = running.split_once("running in ").unwrap();
    PathBuf::from(path.trim())
}

/// Lets a gated task finish: writes a line to its FIFO once it reads it.
fn release(sandbox: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let gate = sandbox.join("gate");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Non-blocking: opening fails until the task has the FIFO open.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&gate)
        {
            Ok(mut fifo) => {
                fifo.write_all(b"go\n").unwrap();
                return;
            }
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot open {}: {error}",
                    gate.display()
                );
                std::thread::yield_now();
            }
        }
    }
}

fn kill(pid: i32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).unwrap(), signal).unwrap();
}

/// Reads lines until the framework exits (killing it after a minute of
/// silence); returns them and its exit code.
fn rest_of(
    framework: &mut common::KillOnDrop,
    lines: &Receiver<String>,
) -> (Vec<String>, Option<i32>) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = framework.0.kill();
                break;
            }
        }
    }
    (seen, framework.0.wait().unwrap().code())
}

/// kill -9 the agent while checkpointed tasks run: they keep running; an
/// agent restarted with less than they hold refuses to start; one task
/// killed while the agent is down is reported FAILED with how it died;
/// the restarted agent re-attaches to the other, which later finishes and
/// is reported FINISHED, each update once.
#[test]
fn a_killed_agent_comes_back_to_its_running_tasks() {
    let (dir, work, agent_work) = common::work_dirs("recovery");
    let master = common::start_master(&work);
    let address = master.pid.addr().to_string();
    let mut agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    let (mut framework, lines, _errors) = execute(
        &address,
        &work,
        "kept",
        &["--checkpoint", "--instances", "2"],
    );
    let first = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    let second = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    let (survivor, victim) = (common::task_pid(&first), common::task_pid(&second));
    let _groups = (
        common::KillGroupOnDrop::of(survivor),
        common::KillGroupOnDrop::of(victim),
    );

    agent.process.0.kill().unwrap();
    agent.process.0.wait().unwrap();
    assert!(
        common::alive(survivor) && common::alive(victim),
        "tasks outlive a SIGKILLed agent"
    );

    let shrunk = Command::new(STRATA)
        .args([
            "agent",
            "--master",
            &address,
            "--port",
            "0",
            "--work-dir",
            &agent_work,
        ])
        .args(["--resources", "cpus:0.1;mem:256"])
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&shrunk.stderr);
    assert_eq!(shrunk.status.code(), Some(1), "{error}");
    assert!(error.contains("tasks hold cpus:0.2"), "{error}");

    // Its launcher, which outlives the agent, learns how it died.
    kill(victim, rustix::process::Signal::KILL);
    assert!(common::exits_within(victim, Duration::from_secs(30)));

    let agent = start_agent(&address, &agent_work, "cpus:2;mem:512");
    common::read_until(&agent.logs, "re-attached to a running task");
    common::read_until(&agent.logs, "registered with the master");
    release(&first);
    let (rest, code) = rest_of(&mut framework, &lines);
    let text = rest.join("\n");
    assert_eq!(code, Some(1), "one task failed:\n{text}");
    let finished = containing(&rest, "TASK_FINISHED");
    assert_eq!(finished.len(), 1, "{text}");
    assert!(
        finished[0].ends_with("exited with status 0"),
        "observed live:\n{text}"
    );
    let failed = containing(&rest, "TASK_FAILED");
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("killed by signal 9 while the agent was down"),
        "{text}"
    );
    assert!(!text.contains("TASK_LOST"), "{text}");
    drop((agent, master));
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM stops the agent daemon: a checkpointing framework's task keeps
/// running and the restarted agent finishes it; a task of a framework
/// that does not checkpoint dies with the agent. SIGKILL likewise ends
/// such a task (its monitor sees the agent go).
#[test]
fn only_tasks_of_checkpointing_frameworks_outlive_their_agent() {
    let (dir, work, agent_work) = common::work_dirs("recovery-term");
    let master = common::start_master(&work);
    let address = master.pid.addr().to_string();
    let mut agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    let (mut kept, kept_lines, _kept_errors) = execute(&address, &work, "kept", &["--checkpoint"]);
    let (_dropped, dropped_lines, _dropped_errors) = execute(&address, &work, "dropped", &[]);
    let kept_sandbox = sandbox_of(&common::read_until(&kept_lines, "TASK_RUNNING"));
    let dropped_shell = common::task_pid(&sandbox_of(&common::read_until(
        &dropped_lines,
        "TASK_RUNNING",
    )));
    let kept_shell = common::task_pid(&kept_sandbox);
    let _groups = (
        common::KillGroupOnDrop::of(kept_shell),
        common::KillGroupOnDrop::of(dropped_shell),
    );

    kill(agent.process.0.id() as i32, rustix::process::Signal::TERM);
    assert!(agent.process.0.wait().unwrap().success());
    assert!(common::exits_within(dropped_shell, Duration::from_secs(30)));
    assert!(common::alive(kept_shell));

    let mut agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    common::read_until(&agent.logs, "re-attached to a running task");
    let (_late, late_lines, _late_errors) = execute(&address, &work, "late", &[]);
    let late_shell = common::task_pid(&sandbox_of(&common::read_until(
        &late_lines,
        "TASK_RUNNING",
    )));
    let _late_group = common::KillGroupOnDrop::of(late_shell);
    agent.process.0.kill().unwrap();
    assert!(common::exits_within(late_shell, Duration::from_secs(30)));
    assert!(common::alive(kept_shell));

    let _agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    release(&kept_sandbox);
    let (rest, code) = rest_of(&mut kept, &kept_lines);
    assert_eq!(code, Some(0), "{}", rest.join("\n"));
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pid of the task launcher of agent work directory `work`.
fn launcher_of(work: &str) -> i32 {
    let work = std::fs::canonicalize(work).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let parts: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
                parts.contains(&b"task-launcher".as_slice())
                    && parts.contains(&work.as_os_str().as_encoded_bytes())
            })
        })
        .expect("a task launcher runs")
}

/// kill -9 the task launcher while a task runs: the agent loses track of
/// the task, kills it and reports it FAILED; the next task starts a new
/// launcher and runs to its end.
#[test]
fn a_killed_launcher_fails_its_tasks_and_is_replaced() {
    let (dir, work, agent_work) = common::work_dirs("launcher-killed");
    let master = common::start_master(&work);
    let address = master.pid.addr().to_string();
    let _agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    let (mut first, first_lines, _first_errors) = execute(&address, &work, "first", &[]);
    let shell = common::task_pid(&sandbox_of(&common::read_until(
        &first_lines,
        "TASK_RUNNING",
    )));
    let _group = common::KillGroupOnDrop::of(shell);
    kill(launcher_of(&agent_work), rustix::process::Signal::KILL);
    let (rest, code) = rest_of(&mut first, &first_lines);
    assert_eq!(code, Some(1), "{}", rest.join("\n"));
    assert!(
        rest.iter()
            .any(|line| line.contains("TASK_FAILED") && line.contains("lost track")),
        "{}",
        rest.join("\n")
    );
    assert!(common::exits_within(shell, Duration::from_secs(30)));

    let (mut second, second_lines, _second_errors) = execute(&address, &work, "second", &[]);
    let sandbox = sandbox_of(&common::read_until(&second_lines, "TASK_RUNNING"));
    release(&sandbox);
    let (rest, code) = rest_of(&mut second, &second_lines);
    assert_eq!(code, Some(0), "{}", rest.join("\n"));
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
}

/// kill -9 the master while two frameworks' tasks run, and start it again
/// on the same port and work directory: it recovers its registry, the
/// agent re-registers with the tasks, both frameworks subscribe again
/// with their ids, and every task runs on to FINISHED; none is killed or
/// lost.
#[test]
fn a_killed_master_comes_back_and_nothing_is_lost() {
    let (dir, work, agent_work) = common::work_dirs("master-recovery");
    let patience = ["--agent-reregister-timeout", "60"];
    let mut master = common::start_master_with(&work, "0", &patience);
    let address = master.pid.addr().to_string();
    let port = master.pid.addr().port().to_string();
    let agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    common::read_until(&agent.logs, "registered with the master");
    let (mut alpha, alpha_lines, _alpha_errors) =
        execute(&address, &work, "alpha", &["--instances", "2"]);
    let (mut beta, beta_lines, _beta_errors) = execute(&address, &work, "beta", &["--checkpoint"]);
    let sandboxes = [
        sandbox_of(&common::read_until(&alpha_lines, "TASK_RUNNING")),
        sandbox_of(&common::read_until(&alpha_lines, "TASK_RUNNING")),
        sandbox_of(&common::read_until(&beta_lines, "TASK_RUNNING")),
    ];
    let pids = sandboxes
        .each_ref()
        .map(|sandbox| common::task_pid(sandbox));
    let _groups = pids.map(common::KillGroupOnDrop::of);

    master.kill().unwrap();
    let _master = common::start_master_with(&work, &port, &patience);
    common::read_until(&agent.logs, "registered with the master");
    assert!(pids.iter().all(|pid| common::alive(*pid)), "no task died");
    for sandbox in &sandboxes {
        release(sandbox);
    }
    for (framework, lines, tasks) in [(&mut alpha, &alpha_lines, 2), (&mut beta, &beta_lines, 1)] {
        let (rest, code) = rest_of(framework, lines);
        let text = rest.join("\n");
        assert_eq!(code, Some(0), "{text}");
        assert_eq!(containing(&rest, "TASK_FINISHED").len(), tasks, "{text}");
        assert!(
            !text.contains("TASK_LOST") && !text.contains("TASK_KILLED"),
            "{text}"
        );
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lines that contain `text`.
fn containing<'a>(lines: &'a [String], text: &str) -> Vec<&'a String> {
    lines.iter().filter(|line| line.contains(text)).collect()
}

/// The framework id a `strata execute` announces on stderr.
fn framework_id_of(errors: &Receiver<String>) -> String {
    let line = common::read_until(errors, "subscribed as framework");
    line.rsplit(' ').next().unwrap().to_owned()
}

/// A scheduler process killed and replaced: within its failover timeout
/// the replacement (`strata execute --framework-id`) takes the framework
/// over, learns its tasks by reconciliation and follows them to FINISHED;
/// beyond it the tasks are killed and the id is refused.
#[test]
fn a_replaced_scheduler_keeps_its_tasks_only_within_its_failover_timeout() {
    let (dir, work, agent_work) = common::work_dirs("failover");
    let master = common::start_master(&work);
    let address = master.pid.addr().to_string();
    let agent = start_agent(&address, &agent_work, "cpus:1;mem:256");
    common::read_until(&agent.logs, "registered with the master");
    let takeover = |name: &str, id: &str| {
        let mut child = Command::new(STRATA)
            .args(["execute", "--master", &address, "--name", name])
            .args([
                "--instances",
                "2",
                "--framework-id",
                id,
                "--work-dir",
                &work,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = common::lines_of(child.stdout.take().unwrap());
        let errors = common::lines_of(child.stderr.take().unwrap());
        (common::KillOnDrop(child), lines, errors)
    };

    // Within the failover timeout.
    let within = ["--instances", "2", "--failover-timeout", "60"];
    let (mut first, lines, errors) = execute(&address, &work, "kept", &within);
    let id = framework_id_of(&errors);
    let sandboxes = [
        sandbox_of(&common::read_until(&lines, "TASK_RUNNING")),
        sandbox_of(&common::read_until(&lines, "TASK_RUNNING")),
    ];
    let _groups = sandboxes
        .each_ref()
        .map(|sandbox| common::KillGroupOnDrop::of(common::task_pid(sandbox)));
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (mut second, second_lines, _second_errors) = takeover("kept", &id);
    // It knows its tasks again before they end.
    common::read_until(&second_lines, "TASK_RUNNING");
    common::read_until(&second_lines, "TASK_RUNNING");
    for sandbox in &sandboxes {
        release(sandbox);
    }
    let (rest, code) = rest_of(&mut second, &second_lines);
    let text = rest.join("\n");
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(containing(&rest, "TASK_FINISHED").len(), 2, "{text}");

    // Beyond it.
    let beyond = ["--instances", "2", "--failover-timeout", "0.5"];
    let (mut third, lines, errors) = execute(&address, &work, "dropped", &beyond);
    let id = framework_id_of(&errors);
    let pids = [
        common::task_pid(&sandbox_of(&common::read_until(&lines, "TASK_RUNNING"))),
        common::task_pid(&sandbox_of(&common::read_until(&lines, "TASK_RUNNING"))),
    ];
    let _groups = pids.map(common::KillGroupOnDrop::of);
    third.0.kill().unwrap();
    third.0.wait().unwrap();
    for pid in pids {
        assert!(
            common::exits_within(pid, Duration::from_secs(30)),
            "killed after the timeout"
        );
    }
    let (mut fourth, _lines, fourth_errors) = takeover("dropped", &id);
    let refused = common::read_until(&fourth_errors, "refused");
    assert!(refused.contains("was removed"), "{refused}");
    assert_eq!(fourth.0.wait().unwrap().code(), Some(1));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
