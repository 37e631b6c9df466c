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

/// Waits up to 30 s for the task in `sandbox` to write its pid (a line
/// `echo $$ > pid` writes) and returns it.
pub fn task_pid(sandbox: &std::path::Path) -> i32 {
    let pid_file = sandbox.join("pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && text.ends_with('\n')
        {
            return text.trim().parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task never wrote its pid"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
