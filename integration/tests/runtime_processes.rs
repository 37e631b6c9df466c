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
    let tls = TlsMaterial::development(dir, "test-driver").unwrap();
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
    TlsMaterial::development(&dir, "bootstrap").unwrap();
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
    TlsMaterial::development(&dir, "bootstrap").unwrap();
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
