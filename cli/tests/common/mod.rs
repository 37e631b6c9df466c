//! What the multi-process tests share: a `strata execute` run of two
//! instances that can only overlap on two different agents, and its check.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeSet;
use std::process::Output;

/// Arguments for `strata execute`: two instances of one cpu each, running
/// for two seconds. Against agents of one cpu each they can only run at
/// once on two different agents.
pub fn two_overlapping_instances(master: &str, work: &str) -> Vec<String> {
    [
        "execute",
        "--master",
        master,
        "--name",
        "spread",
        "--command",
        "sleep 2",
        "--instances",
        "2",
        "--resources",
        "cpus:1;mem:64",
        "--work-dir",
        work,
        "--timeout",
        "30",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

/// Asserts the run exited 0 and its instances finished on two agents.
pub fn assert_one_instance_per_agent(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let agents: BTreeSet<&str> = stdout
        .lines()
        .filter(|line| line.contains("TASK_FINISHED"))
        .filter_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("agent="))
        })
        .collect();
    assert_eq!(agents.len(), 2, "one instance per agent: {stdout}");
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// The process running in `sandbox`: a task's process is started there,
/// so once its agent reports it RUNNING, it is the one whose working
/// directory that is.
pub fn task_pid(sandbox: &std::path::Path) -> i32 {
    let sandbox = sandbox.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == sandbox))
        .expect("a process in the task's sandbox")
}

/// Whether process `pid` ends within `limit`: a pidfd becomes readable
/// when its process exits, so this waits for the event, not for time.
pub fn exits_within(pid: i32, limit: std::time::Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return true;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        // Gone already (reaped).
        return true;
    };
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let timeout = Timespec::try_from(limit).unwrap();
    poll(&mut fds, Some(&timeout)).unwrap() == 1
}
