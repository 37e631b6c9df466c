//! What the multi-process tests share: a `strata execute` run of two
//! instances that can only overlap on two different agents, and its check.
#![allow(clippy::unwrap_used, dead_code, unused_imports)]

pub mod events;
pub mod isolated;

use std::collections::BTreeSet;

use std::process::Output;
pub use strata_integration::{KillOnDrop, lines_of};

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

/// The standard output of a run, which must have exited 0 (else the
/// assertion shows both outputs).
pub fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Asserts the run exited 0 and its instances finished on two agents.
pub fn assert_one_instance_per_agent(output: &Output) {
    let stdout = succeeded(output);
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

/// The process running in `sandbox`: a task's command is started there
/// (by the task launcher, before the agent reports it RUNNING), so it is
/// the oldest process whose working directory that is. Waits up to 30 s
/// for it to appear.
pub fn task_pid(sandbox: &std::path::Path) -> i32 {
    let sandbox = sandbox.canonicalize().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let oldest = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == sandbox)
            })
            .filter_map(|pid| Some((start_ticks(pid)?, pid)))
            .min();
        if let Some((_, pid)) = oldest {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no process in {}",
            sandbox.display()
        );
        std::thread::yield_now();
    }
}

/// Waits up to 30 s for something to appear at `path` (a file a task
/// writes once it runs).
pub fn wait_for_path(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::yield_now();
    }
}

/// When process `pid` started, in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    // Fields after the command: state is the 3rd field, starttime the 22nd.
    rest.split_whitespace().nth(19)?.parse().ok()
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

/// Waits up to 30 s for a line containing `wanted`; returns it.
pub fn read_until(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(wanted) => return line,
            Ok(line) => seen.push(line),
            Err(error) => panic!(
                "no line with {wanted:?} within 30 s: {error}; the lines read:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// A process group killed when the test ends, however it ends.
pub struct KillGroupOnDrop(pub i32);

impl KillGroupOnDrop {
    /// The group process `pid` belongs to.
    pub fn of(pid: i32) -> KillGroupOnDrop {
        let group = rustix::process::getpgid(rustix::process::Pid::from_raw(pid))
            .map_or(pid, |group| group.as_raw_nonzero().get());
        KillGroupOnDrop(group)
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.0) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// A `strata master` daemon on a free port, allocating every 100 ms.
pub fn start_master(work: &str) -> strata_integration::ChildNode {
    start_master_with(work, "0", &[])
}

/// [`start_master`] on `port`, with more flags.
pub fn start_master_with(work: &str, port: &str, extra: &[&str]) -> strata_integration::ChildNode {
    let mut args = vec![
        "master",
        "--port",
        port,
        "--work-dir",
        work,
        "--allocation-interval",
        "0.1",
    ];
    args.extend_from_slice(extra);
    strata_integration::ChildNode::start_daemon(
        std::path::Path::new(env!("CARGO_BIN_EXE_strata")),
        &args,
    )
    .unwrap()
}

/// A `strata agent` daemon of the master at `master` (HOST:PORT) on a free
/// port in `work`, with more flags.
pub fn start_agent_with(master: &str, work: &str, extra: &[&str]) -> strata_integration::ChildNode {
    let mut args = vec![
        "agent",
        "--master",
        master,
        "--port",
        "0",
        "--work-dir",
        work,
    ];
    args.extend_from_slice(extra);
    strata_integration::ChildNode::start_daemon(
        std::path::Path::new(env!("CARGO_BIN_EXE_strata")),
        &args,
    )
    .unwrap()
}

/// A work directory of its own for agent `name` under `work_dir` (an
/// agent holds its work directory), sharing the development CA in
/// `work_dir/tls` through a symbolic link.
pub fn agent_work_dir(work_dir: &std::path::Path, name: &str) -> String {
    let dir = work_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("tls");
    if !link.exists() {
        std::os::unix::fs::symlink(work_dir.join("tls"), &link).unwrap();
    }
    dir.to_str().unwrap().to_owned()
}

/// Where tests make their directories: not under `/tmp` when `/var/tmp`
/// is there, since a task in namespaces has a `/tmp` of its own and could
/// not reach a test's files under the host's.
pub fn scratch() -> std::path::PathBuf {
    let var_tmp = std::path::Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory for the master and frameworks of test `name`, with
/// a development CA, and a work directory for one agent beside it: the
/// directory, its path as text, and the agent's.
pub fn work_dirs(name: &str) -> (std::path::PathBuf, String, String) {
    let dir = scratch().join(format!("strata-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    strata_runtime::TlsMaterial::development(
        &dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )
    .unwrap();
    let text = dir.to_str().unwrap().to_owned();
    let agent = agent_work_dir(&dir, "agent");
    (dir, text, agent)
}

/// Starts `strata local` with `agents` agents in `work_dir` (its stdout
/// read, its log in `local.log` there); the child and the master's
/// address, HOST:PORT.
pub fn start_local(work_dir: &std::path::Path, agents: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    std::fs::create_dir_all(work_dir).unwrap();
    let log = std::fs::File::create(work_dir.join("local.log")).unwrap();
    let mut local = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["local", "--port", "0", "--agents", agents, "--work-dir"])
        .arg(work_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut master = None;
    let mut lines = BufReader::new(local.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(word) = line
            .split_whitespace()
            .find(|word| word.starts_with("master@"))
        {
            master = Some(word.trim_start_matches("master@").to_owned());
        }
        if line.starts_with("Submit work") {
            break;
        }
    }
    // What it prints later is read (and dropped), so it never writes to
    // a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (local, master.expect("local printed its master"))
}
