//! The runtime between OS processes: real QUIC on 127.0.0.1, the peer a
//! separate process sharing the development CA through a directory.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_integration::ChildNode;
use strata_runtime::{Node, NodeConfig, Received, TlsMaterial};

const PEER: &str = env!("CARGO_BIN_EXE_strata-test-peer");

fn tls_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-it-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn local_node(dir: &Path) -> Node {
    let tls =
        TlsMaterial::development(dir, strata_runtime::Role::Framework, "test-driver").unwrap();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), tls);
    // The idle timeout in force is the smaller of both sides': a killed
    // peer is noticed within about two seconds.
    config.quic.idle_timeout = Duration::from_secs(2);
    config.quic.keep_alive_interval = Duration::from_millis(500);
    Node::bind(config).await.unwrap()
}

#[test]
fn two_processes_exchange_ten_thousand_messages_in_order() {
    let dir = tls_dir("order");
    let tls_path = dir.to_str().unwrap().to_owned();
    // The driver makes the CA first so both processes share it.
    TlsMaterial::development(&dir, strata_runtime::Role::Operator, "bootstrap").unwrap();
    let peer = ChildNode::start(Path::new(PEER), &[&tls_path]).unwrap();
    actix_rt::System::new().block_on(async {
        let node = local_node(&dir).await;
        let mut inbox = node.inbox::<u64>("driver", 16_384).unwrap();
        for sequence in 0..10_000u64 {
            inbox.send(&peer.pid, sequence).unwrap();
        }
        for expected in 0..10_000u64 {
            let received = inbox.message_within(Duration::from_secs(20)).await;
            assert_eq!(received.map(|(_, n)| n), Some(expected));
        }
        let metrics = node.metrics();
        assert_eq!(metrics.messages_received_remote, 10_000);
        assert_eq!(metrics.decode_errors, 0);
    });
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exited_arrives_when_the_peer_process_is_killed() {
    let dir = tls_dir("kill");
    let tls_path = dir.to_str().unwrap().to_owned();
    TlsMaterial::development(&dir, strata_runtime::Role::Operator, "bootstrap").unwrap();
    let mut peer = ChildNode::start(Path::new(PEER), &[&tls_path]).unwrap();
    actix_rt::System::new().block_on(async {
        let node = local_node(&dir).await;
        let mut inbox = node.inbox::<u64>("watcher", 16).unwrap();
        inbox.link(&peer.pid);
        inbox.send(&peer.pid, 7).unwrap();
        assert!(matches!(
            inbox.recv_within(Duration::from_secs(10)).await,
            Some(Received::Message(_, 7))
        ));
        peer.kill().unwrap();
        let killed_at = Instant::now();
        let event = inbox.recv_within(Duration::from_secs(15)).await;
        assert_eq!(event, Some(Received::Exited(peer.pid.clone())));
        let noticed_after = killed_at.elapsed();
        assert!(noticed_after < Duration::from_secs(15), "{noticed_after:?}");
        assert_eq!(node.metrics().connections_lost, 1);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_peer_is_reached_again_and_its_old_life_is_refused() {
    let dir = tls_dir("restart");
    let tls_path = dir.to_str().unwrap().to_owned();
    TlsMaterial::development(&dir, strata_runtime::Role::Operator, "bootstrap").unwrap();
    // A port the restarted peer can bind again.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut first = ChildNode::start(Path::new(PEER), &[&tls_path, &port]).unwrap();
    actix_rt::System::new().block_on(async {
        let node = local_node(&dir).await;
        let mut inbox = node.inbox::<u64>("driver", 16).unwrap();
        inbox.link(&first.pid);
        inbox.send(&first.pid, 1).unwrap();
        let Some(Received::Message(old_life, 1)) = inbox.recv_within(Duration::from_secs(10)).await
        else {
            panic!("no answer from the first peer");
        };
        first.kill().unwrap();
        assert_eq!(
            inbox.recv_within(Duration::from_secs(15)).await,
            Some(Received::Exited(first.pid.clone()))
        );

        let second = ChildNode::start(Path::new(PEER), &[&tls_path, &port]).unwrap();
        assert_eq!(second.pid, first.pid, "same address, as typed");
        // Addressed to the first life: refused by the second. Then one
        // for whichever life is current. Delivery is ordered, so had the
        // first been delivered its answer would come first.
        inbox.send(&old_life, 100).unwrap();
        inbox.send(&second.pid, 200).unwrap();
        let Some(Received::Message(new_life, answer)) =
            inbox.recv_within(Duration::from_secs(10)).await
        else {
            panic!("no answer from the restarted peer");
        };
        assert_eq!(answer, 200);
        assert!(new_life.same_name(&old_life));
        assert_ne!(new_life.incarnation(), old_life.incarnation());
        drop(second);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
