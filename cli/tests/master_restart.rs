//! `strata master` as a real daemon: killed with SIGKILL and started again
//! on the same port, its agents re-register under the ids they had.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strata_agent::{Agent, AgentConfig};
use strata_protocol::{FrameworkInfo, ToMaster, ToScheduler};
use strata_runtime::{Node, NodeConfig, Received, SpawnOptions, TlsMaterial, Upid};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata master` child process, killed on drop.
struct MasterProcess {
    child: Child,
    pid: Upid,
}

impl MasterProcess {
    fn start(work_dir: &Path, port: u16) -> MasterProcess {
        let mut child = Command::new(STRATA)
            .args([
                "master",
                "--port",
                &port.to_string(),
                "--allocation-interval",
                "0.1",
            ])
            .args(["--agent-ping-timeout", "1", "--work-dir"])
            .arg(work_dir)
            .stdout(Stdio::piped())
            // Why it did not start, if it did not.
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "master listening at master@127.0.0.1:PORT (allocation policy drf)"
        let address = line
            .split_whitespace()
            .find(|word| word.starts_with("master@"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        MasterProcess {
            child,
            pid: address.parse().unwrap(),
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn node(tls_dir: &Path, role: strata_runtime::Role, name: &str) -> Node {
    let mut config = NodeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        TlsMaterial::development(tls_dir, role, name).unwrap(),
    );
    config.quic.idle_timeout = Duration::from_secs(2);
    config.quic.keep_alive_interval = Duration::from_millis(500);
    Node::bind(config).await.unwrap()
}

/// Subscribes a new scheduler and returns the agent id of its first offer.
/// Like any scheduler it repeats its subscription until answered: a
/// message sent on a connection to a master that just died is lost.
async fn first_offer_agent(node: &Node, id: &str, master: &Upid) -> strata_protocol::AgentId {
    let mut inbox = node.inbox::<ToScheduler>(id, 64).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut subscribed = false;
    while tokio::time::Instant::now() < deadline {
        if !subscribed {
            let info = FrameworkInfo::new(id, "test");
            let _ = inbox.send(
                master,
                ToMaster::Subscribe {
                    info,
                    constraints: vec![],
                },
            );
        }
        match inbox.recv_within(Duration::from_secs(1)).await {
            Some(Received::Message(_, ToScheduler::Offers(offers))) => {
                return offers[0].agent_id.clone();
            }
            Some(Received::Message(_, ToScheduler::Subscribed { .. })) => subscribed = true,
            _ => {}
        }
    }
    panic!("no offer within a minute");
}

#[test]
fn agents_re_register_with_a_restarted_master_under_the_same_id() {
    let work_dir =
        std::env::temp_dir().join(format!("strata-master-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let tls_dir = work_dir.join("tls");
    // The CA exists before any process reads it.
    TlsMaterial::development(&tls_dir, strata_runtime::Role::Operator, "bootstrap").unwrap();
    // A port free for both QUIC (UDP) and HTTP (TCP), as the master binds
    // both.
    let port = loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let mut first = MasterProcess::start(&work_dir, port);
    let master = first.pid.clone();
    actix_rt::System::new().block_on(async {
        let agent_node = node(&tls_dir, strata_runtime::Role::Agent, "agent-1").await;
        let config = AgentConfig::new(
            master.clone(),
            "agent-1".into(),
            "cpus:2;mem:1024".parse().unwrap(),
            Default::default(),
            1,
            strata_integration::containers::in_process(),
        );
        agent_node
            .spawn(
                "agent",
                move || Agent::new(config.clone()),
                SpawnOptions::default(),
            )
            .unwrap();
        let schedulers = node(&tls_dir, strata_runtime::Role::Framework, "schedulers").await;
        let before = first_offer_agent(&schedulers, "scheduler-1", &master).await;

        first.kill();
        let second = MasterProcess::start(&work_dir, port);
        assert!(second.pid.same_name(&master));
        let after = first_offer_agent(&schedulers, "scheduler-2", &second.pid).await;
        assert_eq!(after, before, "the agent kept its id");
    });
    let _ = std::fs::remove_dir_all(&work_dir);
}
