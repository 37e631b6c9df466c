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

#[test]
fn a_framework_runs_across_three_hosts_in_network_namespaces() {
    let tag = (std::process::id() % 100_000).to_string();
    let names: Vec<String> = ["m", "a1", "a2"]
        .iter()
        .map(|host| format!("strata-{host}-{tag}"))
        .collect();
    let namespaces = match Namespaces::create(&names) {
        Ok(namespaces) => namespaces,
        Err(reason) => {
            eprintln!("skipped: network namespaces are not permitted here ({reason})");
            return;
        }
    };
    let (master_ns, first_ns, second_ns) = (&names[0], &names[1], &names[2]);
    let first_ip = link(master_ns, first_ns, 1, &tag).unwrap();
    let second_ip = link(master_ns, second_ns, 2, &tag).unwrap();

    let work_dir = std::env::temp_dir().join(format!("strata-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let work = work_dir.to_str().unwrap();
    TlsMaterial::development(&work_dir.join("tls"), "bootstrap").unwrap();
    let master = start_in(
        master_ns,
        &[
            "master",
            "--ip",
            "10.77.1.1",
            "--port",
            "0",
            "--work-dir",
            work,
            "--allocation-interval",
            "0.1",
        ],
    );
    let master_address = master.pid.addr().to_string();
    let agent = |namespace: &str, address: &str| {
        start_in(
            namespace,
            &[
                "agent",
                "--master",
                &master_address,
                "--ip",
                address,
                "--port",
                "0",
                "--work-dir",
                work,
                "--resources",
                "cpus:1;mem:256",
            ],
        )
    };
    let first = agent(first_ns, &first_ip);
    let second = agent(second_ns, &second_ip);
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
