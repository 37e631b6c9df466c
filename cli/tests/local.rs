//! `strata local` and `strata execute`, both as real processes: exit 0 for
//! `true`, 1 for `false`, 2 for what cannot be placed; `strata logs` right
//! after `strata execute` finds the task; `local` stops cleanly on
//! SIGTERM and its running tasks die with it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

#[test]
fn execute_against_local_returns_the_documented_exit_codes() {
    let work_dir = common::scratch().join(format!("strata-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let (mut local, master) = common::start_local(&work_dir, "2");
    // A second cluster on the same work directory is refused.
    let second = Command::new(STRATA)
        .args(["local", "--port", "0", "--work-dir"])
        .arg(&work_dir)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let refusal = String::from_utf8_lossy(&second.stderr);
    assert!(refusal.contains("uses the work directory"), "{refusal}");
    let execute = |name: &str, command: &str, extra: &[&str]| {
        Command::new(STRATA)
            .args([
                "execute",
                "--master",
                &master,
                "--name",
                name,
                "--command",
                command,
                "--work-dir",
            ])
            .arg(&work_dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = execute("ok", "true", &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.contains("ok TASK_RUNNING") && stdout.contains("ok TASK_FINISHED"),
        "{stdout}"
    );

    let failed = execute("bad", "false", &[]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("TASK_FAILED"));

    let huge = execute(
        "huge",
        "true",
        &["--resources", "cpus:1000", "--timeout", "2"],
    );
    assert_eq!(huge.status.code(), Some(2));
    let explanation = String::from_utf8_lossy(&huge.stderr);
    assert!(
        explanation.contains("cpus:1000") && explanation.contains("largest offer"),
        "{explanation}"
    );

    // Read your writes: what `strata execute` printed (TASK_FINISHED) is
    // in what the master answers next, so `strata logs` at once finds the
    // task and its output, every time.
    let rounds: usize = std::env::var("STRATA_READ_YOUR_WRITES_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(200);
    for round in 0..rounds {
        let name = format!("ryw-{round}");
        let ran = execute(&name, &format!("echo said {round}"), &[]);
        assert_eq!(ran.status.code(), Some(0), "round {round}");
        assert!(String::from_utf8_lossy(&ran.stdout).contains("TASK_FINISHED"));
        let logs = Command::new(STRATA)
            .args(["logs", "--master", &master, &name])
            .output()
            .unwrap();
        assert_eq!(
            (
                logs.status.code(),
                String::from_utf8_lossy(&logs.stdout).into_owned()
            ),
            (Some(0), format!("said {round}\n")),
            "round {round}: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
    }

    // A task still running when `local` is told to stop dies with it.
    let mut long = Command::new(STRATA)
        .args([
            "execute",
            "--master",
            &master,
            "--name",
            "long",
            "--command",
            "exec sleep 1000",
            "--work-dir",
        ])
        .arg(&work_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sandbox = BufReader::new(long.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find_map(|line| {
            line.split_once(" running in ")
                .map(|(_, sandbox)| std::path::PathBuf::from(sandbox))
        })
        .expect("the long task runs");
    let task_pid = common::task_pid(&sandbox);
    assert!(common::alive(task_pid), "the task runs before the stop");

    let pid = rustix::process::Pid::from_raw(local.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = local.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        common::exits_within(task_pid, std::time::Duration::from_secs(10)),
        "the task outlived `strata local`"
    );
    let _ = long.kill();
    let _ = long.wait();
    let _ = std::fs::remove_dir_all(&work_dir);
}
