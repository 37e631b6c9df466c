//! Tasks isolated in cgroups and namespaces, on this machine's real
//! cgroups: `strata agent --isolation cgroups[,namespaces]` under a
//! cgroups root of each test's own. They need root (CI runs as root and
//! must run them); elsewhere they say so and pass.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::isolated::{Isolated, STRATA, get, may_isolate, sandbox_of, until};

/// A task that takes more memory than its mem is killed by the kernel
/// and fails for it, with Mesos's reason and the limit in its message;
/// one that stays within its limit runs in a /tmp of its own, sees only
/// its own processes, and nothing of either is left after.
#[test]
fn a_task_over_its_memory_fails_for_it_and_nothing_is_left() {
    if !may_isolate("memory") {
        return;
    }
    let cluster = Isolated::start("memory", "cgroups,namespaces", "cpus:2;mem:1024");
    let (_hog, lines) = cluster.execute(
        "hog",
        "cpus:0.5;mem:32",
        "python3 -c 'x = bytearray(256 << 20); print(len(x))'",
        &[],
    );
    let failed = common::read_until(&lines, "TASK_FAILED");
    assert!(
        failed.contains("reason=REASON_CONTAINER_LIMITATION_MEMORY")
            && failed.contains("Memory limit exceeded: Requested: 32MB"),
        "{failed}"
    );

    let (_inside, lines) = cluster.execute(
        "inside",
        "cpus:0.5;mem:64",
        "echo mine > /tmp/file; echo tmp: $(ls /tmp); echo processes: $(ls /proc | grep -c '^[0-9]'); echo init environment: $(tr '\\0' '\\n' < /proc/1/environ | grep -c .); echo task: $STRATA_TASK_ID; cat /proc/self/cgroup",
        &[],
    );
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    common::read_until(&lines, "TASK_FINISHED");
    let output = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    let line = |label: &str| {
        output
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {output}"))
            .trim()
            .to_owned()
    };
    assert_eq!(line("tmp:"), "file", "its /tmp is its own: {output}");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("tmp/file")).unwrap(),
        "mine\n",
        "in its sandbox"
    );
    let processes: u32 = line("processes:").parse().unwrap();
    // The init runs as root: the task's environment (which could name a
    // library for the loader) is the command's alone.
    assert_eq!(line("init environment:"), "0", "{output}");
    assert_eq!(line("task:"), "inside", "{output}");
    assert!(
        processes <= 5,
        "it sees its own processes only: {processes}"
    );
    assert!(
        output.contains(&format!("memory:/{}/", cluster.cgroups_root)),
        "in its cgroup: {output}"
    );
    cluster.assert_no_cgroup_left();
}

/// With CFS on, a busy task of 0.5 cpus gets at most about half a core,
/// by the kernel's accounting of its cgroup over 5 s; the agent reports
/// that accounting and the throttling in `/monitor/statistics`.
#[test]
fn cfs_holds_a_busy_task_to_its_cpus() {
    if !may_isolate("cfs") {
        return;
    }
    let cluster = Isolated::start("cfs", "cgroups,namespaces", "cpus:2;mem:1024");
    let (_busy, lines) = cluster.execute("busy", "cpus:0.5;mem:64", "while :; do :; done", &[]);
    common::read_until(&lines, "TASK_RUNNING");
    let container = until("the container's cgroup", || cluster.containers().pop());
    // cpuacct is its own hierarchy or shares cpu's.
    let cpuacct = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .map(|name| Path::new("/sys/fs/cgroup").join(name))
        .find(|path| path.join("cpuacct.usage").exists())
        .unwrap();
    let usage_file = cpuacct
        .join(
            container
                .strip_prefix(cluster.memory_root().parent().unwrap())
                .unwrap(),
        )
        .join("cpuacct.usage");
    let used = || -> u64 {
        std::fs::read_to_string(&usage_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (start, before) = (Instant::now(), used());
    // A measurement, not a wait for an event: 5 s of the kernel's
    // accounting.
    std::thread::sleep(Duration::from_secs(5));
    let (share, elapsed) = (
        (used() - before) as f64 / 1e9,
        start.elapsed().as_secs_f64(),
    );
    let cores = share / elapsed;
    assert!(cores <= 0.55, "{cores:.3} of a core under a 0.5 cpu quota");
    assert!(cores > 0.05, "{cores:.3}: the task did not run");
    // The agent's statistics are the kernel's.
    let statistics = until("the task to be throttled", || {
        let (status, body) = get(&cluster.agent_http(), "/monitor/statistics");
        assert_eq!(status, 200);
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        let statistics = rows[0]["statistics"].clone();
        let throttled = statistics["cpus_throttled_time_secs"].as_f64();
        throttled
            .is_some_and(|secs| secs > 0.0)
            .then_some(statistics)
    });
    assert!(statistics["cpus_time_secs"].as_f64().unwrap() > 0.0);
    assert!(statistics["mem_total_bytes"].as_u64().is_some());
    assert_eq!(statistics["mem_oom_kills"], 0);
    let (status, metrics) = get(&cluster.agent_http(), "/metrics/snapshot");
    assert_eq!(status, 200);
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert!(
        metrics["slave/tasks_cpus_throttled_time_secs"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{metrics}"
    );
}

/// A fork bomb stops at the pids limit (64 processes), the agent keeps
/// serving, and a task that left its session (setsid) dies with its
/// container when the task is killed: here without namespaces, so the
/// cgroup alone holds them.
#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_an_escaped_daemon_dies_with_its_task() {
    if !may_isolate("pids") {
        return;
    }
    let cluster = Isolated::start("pids", "cgroups", "cpus:2;mem:1024");
    let bomb = "import os, time\n\
        forked = 0\n\
        try:\n    \
            while True:\n        \
                if os.fork() == 0:\n            \
                    time.sleep(120)\n            \
                    os._exit(0)\n        \
                forked += 1\n\
        except OSError as error:\n    \
            print('stopped after', forked, error.errno)\n";
    std::fs::write(cluster.dir.join("bomb.py"), bomb).unwrap();
    let command = format!("python3 {}", cluster.dir.join("bomb.py").display());
    let (_bomb, lines) = cluster.execute("bomb", "cpus:0.5;mem:256", &command, &[]);
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    common::read_until(&lines, "TASK_FINISHED");
    let output = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    let forked: u32 = output
        .split_whitespace()
        .nth(2)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{output}"));
    assert!(forked < 64, "{output}");
    assert!(output.trim().ends_with(" 11"), "EAGAIN: {output}");
    assert_eq!(get(&cluster.agent_http(), "/health").0, 200);

    // A daemon in a session of its own, then the task is killed.
    let (_daemon, lines) = cluster.execute(
        "daemon",
        "cpus:0.5;mem:64",
        "setsid sleep 300 & echo started; exec sleep 300",
        &[],
    );
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    let daemon = daemon_in(&sandbox);
    let killed = Command::new(STRATA)
        .args(["kill", "daemon", "--master", &cluster.address])
        .args(["--work-dir", &cluster.work])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    common::read_until(&lines, "TASK_KILLED");
    assert!(
        common::exits_within(daemon, Duration::from_secs(30)),
        "the daemon outlived its container"
    );
    cluster.assert_no_cgroup_left();
}

/// kill -9 of an agent whose framework does not checkpoint, never
/// started again: its task launcher kills the task, then what is left in
/// its container's cgroup (a daemon that left the task's session), and
/// removes the cgroup.
#[test]
fn an_agent_killed_for_good_takes_its_containers_along() {
    if !may_isolate("orphans") {
        return;
    }
    let mut cluster = Isolated::start("orphans", "cgroups", "cpus:2;mem:1024");
    let (_daemon, lines) = cluster.execute(
        "daemon",
        "cpus:0.5;mem:64",
        "setsid sleep 300 & echo started; exec sleep 300",
        &[],
    );
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    let daemon = daemon_in(&sandbox);
    assert_eq!(cluster.containers().len(), 1);
    let mut agent = cluster.agent.take().unwrap();
    agent.kill().unwrap();
    drop(agent);
    assert!(
        common::exits_within(daemon, Duration::from_secs(30)),
        "the daemon outlived its agent"
    );
    cluster.assert_no_cgroup_left();
}

/// The process in a session of its own that runs in `sandbox`, once the
/// task wrote its first line.
fn daemon_in(sandbox: &Path) -> i32 {
    common::wait_for_path(&sandbox.join("stdout"));
    until("the daemon to start", || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == sandbox)
                    && session_of(*pid) == Some(*pid)
            })
    })
}

/// The session a process is in, from /proc (a process that is exiting
/// may have none: then `None`).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state, ppid, pgrp, session.
    let (_, fields) = stat.rsplit_once(')')?;
    fields
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
        .filter(|sid| *sid > 0)
}

/// With network/none a task has loopback and nothing else: it reaches
/// what it listens on itself, not the master on the host's loopback.
#[test]
fn network_none_leaves_a_task_only_its_own_loopback() {
    if !may_isolate("network") {
        return;
    }
    let cluster = Isolated::start(
        "network",
        "cgroups,namespaces,network/none",
        "cpus:2;mem:1024",
    );
    let port = cluster.address.rsplit(':').next().unwrap().to_owned();
    let script = format!(
        "import socket\n\
         own = socket.socket()\n\
         own.bind(('127.0.0.1', 0))\n\
         own.listen()\n\
         socket.create_connection(own.getsockname(), timeout=5)\n\
         print('own loopback: yes')\n\
         try:\n    \
             socket.create_connection(('127.0.0.1', {port}), timeout=5)\n    \
             print('host: reached')\n\
         except OSError as error:\n    \
             print('host: refused', error.errno)\n\
         print('interfaces:', sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))\n"
    );
    std::fs::write(cluster.dir.join("network.py"), script).unwrap();
    let command = format!("python3 {}", cluster.dir.join("network.py").display());
    let (_task, lines) = cluster.execute("network", "cpus:0.5;mem:64", &command, &[]);
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    common::read_until(&lines, "TASK_FINISHED");
    let output = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    assert!(output.contains("own loopback: yes"), "{output}");
    assert!(output.contains("host: refused"), "{output}");
    assert!(output.contains("interfaces: ['lo']"), "{output}");
    cluster.assert_no_cgroup_left();
}

/// kill -9 of the agent while a checkpointed task runs in its container
/// and one is gated: the restarted agent re-attaches to the first through
/// its cgroup (and kills it as a whole); the second, which took more
/// memory than its limit while the agent was down, is reported FAILED
/// for its memory; no cgroup is left.
#[test]
fn a_restarted_agent_re_attaches_to_its_containers() {
    if !may_isolate("restart") {
        return;
    }
    let mut cluster = Isolated::start("restart", "cgroups,namespaces", "cpus:2;mem:1024");
    let (_runner, running_lines) = cluster.execute(
        "runner",
        "cpus:0.5;mem:64",
        "exec sleep 600",
        &["--checkpoint"],
    );
    common::read_until(&running_lines, "TASK_RUNNING");
    let gate = cluster.dir.join("go");
    let hog = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; python3 -c 'x = bytearray(256 << 20)'",
        gate.display()
    );
    let (_hog, hog_lines) = cluster.execute("hog", "cpus:0.5;mem:32", &hog, &["--checkpoint"]);
    let hog_sandbox = sandbox_of(&common::read_until(&hog_lines, "TASK_RUNNING"));
    let hog_pid = common::task_pid(&hog_sandbox);
    let mut agent = cluster.agent.take().unwrap();
    agent.kill().unwrap();
    drop(agent);
    // While the agent is down, the hog takes too much and is killed.
    std::fs::write(&gate, "").unwrap();
    assert!(common::exits_within(hog_pid, Duration::from_secs(30)));
    // A cgroup the agent does not know, with a process in it, in its
    // subtree: cleaned up when it comes back.
    let subtree = cluster.containers()[0].parent().unwrap().to_owned();
    let stray = subtree.join("stray");
    std::fs::create_dir(&stray).unwrap();
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(stray.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    cluster.start_agent();
    sleeper.wait().unwrap();
    until("the stray cgroup to go", || (!stray.exists()).then_some(()));
    let failed = common::read_until(&hog_lines, "TASK_FAILED");
    assert!(
        failed.contains("reason=REASON_CONTAINER_LIMITATION_MEMORY")
            && failed.contains("while the agent was down"),
        "{failed}"
    );
    // The runner is still watched: its kill goes through its cgroup.
    let killed = Command::new(STRATA)
        .args(["kill", "runner", "--master", &cluster.address])
        .args(["--work-dir", &cluster.work])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    common::read_until(&running_lines, "TASK_KILLED");
    cluster.assert_no_cgroup_left();
}
