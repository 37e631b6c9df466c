//! Every example runs to completion against a cluster: a master and
//! agents (tasks as real processes) in this test, the example as its own
//! OS process, as a user would run it against `strata local`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_agent::{Agent, AgentConfig, Runner};
use strata_master::{Config, MASTER_ID, Master};
use strata_runtime::{Node, NodeConfig, SpawnOptions, TlsMaterial};

/// Starts a master and agents named agent-1, agent-2, ... with the given
/// resources; returns the master's address and the nodes to keep.
async fn cluster(work_dir: &Path, agents: &[&str]) -> (String, Vec<Node>) {
    let tls_dir = work_dir.join("tls");
    let bind = |role: strata_runtime::Role, name: &str| {
        NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            TlsMaterial::development(&tls_dir, role, name).unwrap(),
        )
    };
    let master_node = Node::bind(bind(strata_runtime::Role::Master, "master"))
        .await
        .unwrap();
    let config = Config {
        allocation_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let master = master_node
        .spawn(
            MASTER_ID,
            move || Master::new(config.clone(), "ex"),
            SpawnOptions::default(),
        )
        .unwrap();
    let mut nodes = vec![master_node];
    for (index, resources) in agents.iter().enumerate() {
        let name = format!("agent-{}", index + 1);
        let mut material =
            TlsMaterial::development(&tls_dir, strata_runtime::Role::Agent, &name).unwrap();
        let credentials = strata_agent::ExecutorCredentials::in_memory(&material).unwrap();
        credentials.trusted_by(&mut material);
        let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap(), material))
            .await
            .unwrap();
        let runner = Runner::Processes {
            work_dir: work_dir.to_owned(),
            kill_grace: Duration::from_secs(1),
            isolation: strata_agent::isolation::Isolation::Posix,
            images: None,
        };
        let mut config = AgentConfig::new(
            master.clone(),
            name.clone(),
            resources.parse().unwrap(),
            Default::default(),
            index as u64,
            runner,
        );
        config.executor_credentials = Some(credentials);
        node.spawn(
            "agent",
            move || Agent::new(config.clone()),
            SpawnOptions::default(),
        )
        .unwrap();
        nodes.push(node);
    }
    (master.addr().to_string(), nodes)
}

/// Runs an example binary to its end; its stdout.
async fn run(binary: &str, master: &str, work_dir: &Path, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(binary)
            .args(["--master", master, "--work-dir"])
            .arg(work_dir)
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{binary} did not finish"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{binary} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn work_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-examples-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_seed_walkthrough_tells_its_story() {
    let dir = work_dir("seed");
    actix_rt::System::new().block_on(async {
        let (master, _nodes) = cluster(&dir, &["cpus:4;mem:4096"]).await;
        let out = run(env!("CARGO_BIN_EXE_seed-walkthrough"), &master, &dir, &[]).await;
        for step in [
            "1. framework 1 is offered cpus:4",
            "2. framework 1 launches",
            "3. framework 2 is offered the remaining cpus:1",
            "4. framework 1 is offered",
        ] {
            assert!(out.contains(step), "missing {step:?} in:\n{out}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_other_examples_run_to_completion() {
    let dir = work_dir("others");
    actix_rt::System::new().block_on(async {
        let (master, _nodes) = cluster(&dir, &["cpus:2;mem:1024"; 3]).await;
        let out = run(env!("CARGO_BIN_EXE_batch"), &master, &dir, &["6"]).await;
        // A job may give up after three failures: every job is accounted for.
        assert!(out.contains(" of 6 jobs finished"), "{out}");
        let out = run(
            env!("CARGO_BIN_EXE_delay-scheduling"),
            &master,
            &dir,
            &["3"],
        )
        .await;
        assert_eq!(
            out.lines().filter(|line| line.contains("ms ")).count(),
            3,
            "{out}"
        );
        let out = run(env!("CARGO_BIN_EXE_service"), &master, &dir, &["3", "3"]).await;
        assert_eq!(
            out.lines()
                .filter(|line| line.contains("instances placed"))
                .count(),
            3,
            "{out}"
        );
        let out = run(env!("CARGO_BIN_EXE_custom-executor"), &master, &dir, &[]).await;
        assert!(out.contains("ran 4 tasks in process"), "{out}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ping_pong_runs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ping-pong"))
        .arg("3")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("3 round trips done"));
}

#[test]
fn the_simulation_example_passes_its_seeds_and_rejects_bad_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--seeds", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("20 seeds passed"), "{stdout}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--seed", "many"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a number"));
}
