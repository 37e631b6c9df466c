//! Three hosts on one machine: the master and two agents each in a
//! network namespace of their own, joined by veth pairs, and a framework
//! (`strata execute`, beside the master) running one task on each agent.
//!
//! ```text
//!   agent 1 (10.77.1.2) ── veth ── master (10.77.1.1, 10.77.2.1) ── veth ── agent 2 (10.77.2.2)
//! ```
//!
//! Creating namespaces needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN); where
//! the sandbox forbids it the test says why and passes without running.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use strata_integration::ChildNode;
use strata_runtime::TlsMaterial;

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// Namespaces created by this test, deleted (with their veths) on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Result<Namespaces, String> {
        let mut created = Namespaces(Vec::new());
        for name in names {
            ip(&["netns", "add", name])?;
            created.0.push(name.clone());
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(created)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Namespaces `strata-<host>-<tag>` for each host, or `None` (with the
/// reason logged) where the sandbox does not permit them.
fn namespaces_or_skip(hosts: &[&str], tag: &str) -> Option<(Namespaces, Vec<String>)> {
    let names: Vec<String> = hosts
        .iter()
        .map(|host| format!("strata-{host}-{tag}"))
        .collect();
    match Namespaces::create(&names) {
        Ok(namespaces) => Some((namespaces, names)),
        Err(reason) => {
            eprintln!("skipped: network namespaces are not permitted here ({reason})");
            None
        }
    }
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Joins `master` and `agent` by a veth pair on subnet 10.77.`subnet`.0/24:
/// the master is .1, the agent .2 and routes everything through the master.
fn link(master: &str, agent: &str, subnet: u8, tag: &str) -> Result<String, String> {
    let (master_end, agent_end) = (format!("vm{subnet}{tag}"), format!("va{subnet}{tag}"));
    ip(&[
        "link",
        "add",
        &master_end,
        "netns",
        master,
        "type",
        "veth",
        "peer",
        "name",
        &agent_end,
        "netns",
        agent,
    ])?;
    let master_ip = format!("10.77.{subnet}.1");
    let agent_ip = format!("10.77.{subnet}.2");
    ip(&[
        "-n",
        master,
        "addr",
        "add",
        &format!("{master_ip}/24"),
        "dev",
        &master_end,
    ])?;
    ip(&["-n", master, "link", "set", &master_end, "up"])?;
    ip(&[
        "-n",
        agent,
        "addr",
        "add",
        &format!("{agent_ip}/24"),
        "dev",
        &agent_end,
    ])?;
    ip(&["-n", agent, "link", "set", &agent_end, "up"])?;
    ip(&["-n", agent, "route", "add", "default", "via", &master_ip])?;
    Ok(agent_ip)
}

fn in_namespace(namespace: &str, args: &[&str]) -> Vec<String> {
    ["netns", "exec", namespace, STRATA]
        .iter()
        .chain(args)
        .map(|arg| arg.to_string())
        .collect()
}

fn start_in(namespace: &str, args: &[&str]) -> ChildNode {
    let args = in_namespace(namespace, args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChildNode::start_daemon(Path::new("ip"), &args).unwrap()
}

/// Starts `strata master` in `namespace` on `ip`, with `extra` flags.
fn start_master_in(namespace: &str, ip: &str, work: &str, extra: &[&str]) -> ChildNode {
    let mut args = vec![
        "master",
        "--ip",
        ip,
        "--port",
        "0",
        "--work-dir",
        work,
        "--allocation-interval",
        "0.1",
    ];
    args.extend_from_slice(extra);
    start_in(namespace, &args)
}

/// Starts `strata agent` in `namespace` on `ip`, with one cpu.
fn start_agent_in(namespace: &str, master: &str, ip: &str, work: &str) -> ChildNode {
    start_in(
        namespace,
        &[
            "agent",
            "--master",
            master,
            "--ip",
            ip,
            "--port",
            "0",
            "--work-dir",
            work,
            "--resources",
            "cpus:1;mem:256",
        ],
    )
}

#[test]
fn a_framework_runs_across_three_hosts_in_network_namespaces() {
    let tag = (std::process::id() % 100_000).to_string();
    let Some((namespaces, names)) = namespaces_or_skip(&["m", "a1", "a2"], &tag) else {
        return;
    };
    let (master_ns, first_ns, second_ns) = (&names[0], &names[1], &names[2]);
    let first_ip = link(master_ns, first_ns, 1, &tag).unwrap();
    let second_ip = link(master_ns, second_ns, 2, &tag).unwrap();

    let work_dir = common::scratch().join(format!("strata-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let work = work_dir.to_str().unwrap();
    TlsMaterial::development(
        &work_dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )
    .unwrap();
    let master = start_master_in(master_ns, "10.77.1.1", work, &[]);
    let master_address = master.pid.addr().to_string();
    let first_work = common::agent_work_dir(&work_dir, "agent-1");
    let second_work = common::agent_work_dir(&work_dir, "agent-2");
    let first = start_agent_in(first_ns, &master_address, &first_ip, &first_work);
    let second = start_agent_in(second_ns, &master_address, &second_ip, &second_work);
    assert_eq!(first.pid.addr().ip().to_string(), first_ip);
    assert_eq!(second.pid.addr().ip().to_string(), second_ip);

    let execute = common::two_overlapping_instances(&master_address, work);
    let execute: Vec<&str> = execute.iter().map(String::as_str).collect();
    let output = Command::new("ip")
        .args(in_namespace(master_ns, &execute))
        .output()
        .unwrap();
    common::assert_one_instance_per_agent(&output);

    drop((first, second, master));
    drop(namespaces);
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// The lines a child prints, read on a thread so waiting has a deadline.
/// A partition between the master and an agent that keeps running: the
/// master gives up on the agent and tells a partition-aware framework its
/// task is UNREACHABLE; when the link heals, the agent (which noticed the
/// master's pings stopped) registers again and the task, never killed, is
/// RUNNING again.
#[test]
fn a_partitioned_agent_returns_with_its_task_for_a_partition_aware_framework() {
    use std::process::Stdio;

    let tag = format!("p{}", std::process::id() % 100_000);
    let Some((namespaces, names)) = namespaces_or_skip(&["pm", "pa"], &tag) else {
        return;
    };
    let (master_ns, agent_ns) = (&names[0], &names[1]);
    let agent_ip = link(master_ns, agent_ns, 3, &tag).unwrap();
    let work_dir = common::scratch().join(format!("strata-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let work = work_dir.to_str().unwrap();
    TlsMaterial::development(
        &work_dir.join("tls"),
        strata_runtime::Role::Operator,
        "bootstrap",
    )
    .unwrap();
    let master = start_master_in(
        master_ns,
        "10.77.3.1",
        work,
        &[
            "--agent-ping-timeout",
            "0.2",
            "--max-agent-ping-timeouts",
            "3",
        ],
    );
    let master_address = master.pid.addr().to_string();
    let agent_work = common::agent_work_dir(&work_dir, "agent");
    let agent = start_agent_in(agent_ns, &master_address, &agent_ip, &agent_work);
    let execute = in_namespace(
        master_ns,
        &[
            "execute",
            "--master",
            &master_address,
            "--name",
            "part",
            "--command",
            "exec sleep 1000",
            "--resources",
            "cpus:1;mem:64",
            "--partition-aware",
            "--work-dir",
            work,
        ],
    );
    let mut framework = Command::new("ip")
        .args(&execute)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(framework.stdout.take().unwrap());
    let framework_guard = common::KillOnDrop(framework);
    let running = common::read_until(&lines, "part TASK_RUNNING");
    let sandbox = std::path::PathBuf::from(running.split_once(" running in ").unwrap().1);
    let task_pid = common::task_pid(&sandbox);
    // The daemons are killed outright at the end, so the task's group (it
    // leads it) is killed here, on success or failure.
    let task_group = common::KillGroupOnDrop::of(task_pid);

    // Cut the link; the agent and its task keep running.
    let agent_end = format!("va3{tag}");
    ip(&["-n", agent_ns, "link", "set", &agent_end, "down"]).unwrap();
    common::read_until(&lines, "part TASK_UNREACHABLE");
    assert!(common::alive(task_pid), "a partition does not kill tasks");
    ip(&["-n", agent_ns, "link", "set", &agent_end, "up"]).unwrap();
    let back = common::read_until(&lines, "part TASK_RUNNING");
    assert!(back.contains("came back"), "{back}");
    assert!(
        common::alive(task_pid),
        "the task still runs after the heal"
    );

    drop(task_group);
    drop(framework_guard);
    drop((agent, master));
    drop(namespaces);
    let _ = std::fs::remove_dir_all(&work_dir);
}
