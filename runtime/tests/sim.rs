//! The simulated network: in-order delivery with latency on a paused
//! clock, partitions noticed after the idle timeout (and not when healed
//! in time), loss and duplication, crashes, and the same trace for the
//! same seed.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::paused_system;
use strata_runtime::transport::sim::{IDLE_TIMEOUT, LinkConfig, SimNetwork};
use strata_runtime::{Inbox, Incarnation, Received, Role};

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 5050))
}

/// Two nodes, A and B, each with an inbox.
fn pair(
    network: &SimNetwork,
) -> (
    strata_runtime::Node,
    Inbox<u64>,
    strata_runtime::Node,
    Inbox<u64>,
) {
    let a = network.node(addr(1), Role::Operator, "a", Incarnation(1));
    let b = network.node(addr(2), Role::Operator, "b", Incarnation(2));
    let a_inbox = a.inbox::<u64>("inbox", 1024).unwrap();
    let b_inbox = b.inbox::<u64>("inbox", 1024).unwrap();
    (a, a_inbox, b, b_inbox)
}

/// A message from A reaches B, then A links to B; B's address.
async fn linked(a_inbox: &mut Inbox<u64>, b_inbox: &mut Inbox<u64>) -> strata_runtime::Upid {
    let b_pid = b_inbox.pid().clone();
    a_inbox.send(&b_pid, 1).unwrap();
    assert!(matches!(
        received(b_inbox, Duration::from_secs(1)).await,
        Some(Received::Message(_, 1))
    ));
    a_inbox.link(&b_pid);
    b_pid
}

async fn received(inbox: &mut Inbox<u64>, within: Duration) -> Option<Received<u64>> {
    inbox.recv_within(within).await
}

/// Sends `count` numbers from A to B and returns what B got, in order,
/// and the virtual time it took.
async fn exchange(link: LinkConfig, seed: u64, count: u64) -> (Vec<u64>, Duration, u64) {
    let network = SimNetwork::new(seed);
    network.set_default_link(link);
    let (_a, a_inbox, _b, mut b_inbox) = pair(&network);
    let started = tokio::time::Instant::now();
    for n in 0..count {
        a_inbox.send(b_inbox.pid(), n).unwrap();
    }
    let mut got = Vec::new();
    while let Some(Received::Message(_, n)) = received(&mut b_inbox, Duration::from_secs(1)).await {
        got.push(n);
    }
    (got, started.elapsed(), network.trace_hash())
}

#[test]
fn frames_arrive_in_order_after_their_latency() {
    paused_system(async {
        let link = LinkConfig {
            latency: (Duration::from_millis(10), Duration::from_millis(20)),
            ..LinkConfig::default()
        };
        let (got, elapsed, _) = exchange(link, 7, 500).await;
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        // The last arrival, then a second of silence.
        assert!(elapsed >= Duration::from_millis(1010), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1021), "{elapsed:?}");
    });
}

#[test]
fn loss_and_duplication_follow_the_seed() {
    paused_system(async {
        let lossy = LinkConfig {
            drop: 0.5,
            ..LinkConfig::default()
        };
        let (got, _, first_trace) = exchange(lossy, 11, 1000).await;
        assert!((350..650).contains(&got.len()), "{}", got.len());
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
        let (again, _, second_trace) = exchange(lossy, 11, 1000).await;
        assert_eq!(got, again, "the same seed loses the same frames");
        assert_eq!(first_trace, second_trace);
        let (other, _, other_trace) = exchange(lossy, 12, 1000).await;
        assert_ne!(got, other);
        assert_ne!(first_trace, other_trace);

        let doubling = LinkConfig {
            duplicate: 1.0,
            ..LinkConfig::default()
        };
        let (got, _, _) = exchange(doubling, 3, 100).await;
        let expected: Vec<u64> = (0..100).flat_map(|n| [n, n]).collect();
        assert_eq!(got, expected);
    });
}

#[test]
fn partitions_are_noticed_after_the_idle_timeout_unless_healed() {
    paused_system(async {
        let network = SimNetwork::new(1);
        let (_a, mut a_inbox, _b, mut b_inbox) = pair(&network);
        let b_pid = linked(&mut a_inbox, &mut b_inbox).await;

        // Healed within the idle timeout: the connection stands; what was
        // sent meanwhile is lost.
        network.partition(addr(1), addr(2));
        a_inbox.send(&b_pid, 2).unwrap();
        assert!(received(&mut a_inbox, IDLE_TIMEOUT / 2).await.is_none());
        network.heal(addr(1), addr(2));
        assert!(
            received(&mut a_inbox, IDLE_TIMEOUT).await.is_none(),
            "no exit"
        );
        a_inbox.send(&b_pid, 3).unwrap();
        assert!(matches!(
            received(&mut b_inbox, Duration::from_secs(1)).await,
            Some(Received::Message(_, 3))
        ));

        // Kept: the link breaks after the idle timeout, not before.
        network.partition(addr(1), addr(2));
        let cut = tokio::time::Instant::now();
        match received(&mut a_inbox, IDLE_TIMEOUT * 2).await {
            Some(Received::Exited(pid)) => assert_eq!(pid.addr(), addr(2)),
            other => panic!("expected the link to break, got {other:?}"),
        }
        let waited = cut.elapsed();
        assert!(
            waited >= IDLE_TIMEOUT && waited < IDLE_TIMEOUT + Duration::from_millis(10),
            "{waited:?}"
        );
    });
}

#[test]
fn a_crashed_node_goes_silent_and_is_noticed() {
    paused_system(async {
        let network = SimNetwork::new(5);
        let (_a, mut a_inbox, _b, mut b_inbox) = pair(&network);
        let b_pid = linked(&mut a_inbox, &mut b_inbox).await;
        network.crash(addr(2));
        a_inbox.send(&b_pid, 2).unwrap();
        match received(&mut a_inbox, IDLE_TIMEOUT * 2).await {
            Some(Received::Exited(pid)) => assert_eq!(pid.addr(), addr(2)),
            other => panic!("expected the link to break, got {other:?}"),
        }
        assert!(
            received(&mut b_inbox, Duration::from_secs(1))
                .await
                .is_none(),
            "a crashed node hears nothing"
        );
    });
}

#[test]
fn a_node_restarted_at_the_same_address_replaces_the_crashed_one() {
    paused_system(async {
        let network = SimNetwork::new(6);
        let (_a, mut a_inbox, b, mut b_inbox) = pair(&network);
        let b_pid = linked(&mut a_inbox, &mut b_inbox).await;
        // B crashes with a frame from A on its way, then a new B starts
        // at once on the same address, before A's idle timeout.
        a_inbox.send(&b_pid, 2).unwrap();
        network.crash(addr(2));
        b.shutdown();
        let b = network.node(addr(2), Role::Operator, "b", Incarnation(3));
        let mut new_inbox = b.inbox::<u64>("inbox", 1024).unwrap();
        // A hears at once that the old B is gone (the restarted node's
        // reset), and the frame in flight went with it.
        match received(&mut a_inbox, Duration::from_millis(10)).await {
            Some(Received::Exited(pid)) => assert_eq!(pid.incarnation(), Incarnation(2)),
            other => panic!("expected the old B's loss, got {other:?}"),
        }
        assert!(
            received(&mut new_inbox, Duration::from_secs(1))
                .await
                .is_none()
        );
        // The new B is reachable; the old one's transport does nothing.
        a_inbox.send(new_inbox.pid(), 3).unwrap();
        assert!(matches!(
            received(&mut new_inbox, Duration::from_secs(1)).await,
            Some(Received::Message(_, 3))
        ));
        assert!(
            received(&mut b_inbox, Duration::from_secs(1))
                .await
                .is_none()
        );
    });
}

#[test]
fn filters_drop_await_and_hold_messages_by_kind() {
    paused_system(async {
        let network = SimNetwork::new(9);
        let (_a, a_inbox, _b, mut b_inbox) = pair(&network);
        let b_pid = b_inbox.pid().clone();
        let kind = std::any::type_name::<u64>();

        // The next u64 from A to B is lost; the one after arrives.
        network.drop_next(addr(1), addr(2), kind);
        let sent = network.await_next(addr(1), addr(2), kind);
        a_inbox.send(&b_pid, 1).unwrap();
        sent.await;
        a_inbox.send(&b_pid, 2).unwrap();
        assert!(matches!(
            received(&mut b_inbox, Duration::from_secs(1)).await,
            Some(Received::Message(_, 2))
        ));

        // Held frames wait, then arrive in order when released.
        network.hold(addr(1), addr(2));
        for n in 3..6 {
            a_inbox.send(&b_pid, n).unwrap();
        }
        assert!(
            received(&mut b_inbox, Duration::from_secs(10))
                .await
                .is_none()
        );
        network.release(addr(1), addr(2));
        a_inbox.send(&b_pid, 6).unwrap();
        let mut got = Vec::new();
        while let Some(Received::Message(_, n)) =
            received(&mut b_inbox, Duration::from_secs(1)).await
        {
            got.push(n);
        }
        assert_eq!(got, [3, 4, 5, 6]);
    });
}

/// Two real QUIC nodes over the simulated UDP network on a paused clock:
/// the handshake, a partition noticed at the idle timeout, and a new
/// connection once it heals.
#[test]
fn real_quic_runs_over_simulated_udp_in_virtual_time() {
    use strata_runtime::transport::sim_udp::SimUdpNetwork;
    use strata_runtime::{CertificateAuthority, Node};

    paused_system(async {
        let ca = CertificateAuthority::generate("sim-udp").unwrap();
        let udp = SimUdpNetwork::new(4);
        let node = |last: u8, name: &str| {
            let mut config = common::config(&ca, name);
            config.listen = addr(last);
            Node::bind_on_socket(config, udp.bind(addr(last)), None).unwrap()
        };
        let a = node(1, "a");
        let b = node(2, "b");
        let mut a_inbox = a.inbox::<u64>("inbox", 64).unwrap();
        let mut b_inbox = b.inbox::<u64>("inbox", 64).unwrap();
        let started = tokio::time::Instant::now();
        let b_pid = linked(&mut a_inbox, &mut b_inbox).await;

        udp.partition(addr(1), addr(2));
        let cut_at = tokio::time::Instant::now();
        match received(&mut a_inbox, Duration::from_secs(30)).await {
            Some(Received::Exited(pid)) => assert_eq!(pid.addr(), addr(2)),
            other => panic!("expected the link to break, got {other:?}"),
        }
        let noticed = cut_at.elapsed();
        // The nodes' idle timeout is 2 s (common::config).
        assert!(
            noticed >= Duration::from_secs(2) && noticed < Duration::from_secs(4),
            "{noticed:?}"
        );

        udp.heal(addr(1), addr(2));
        a_inbox.send(&b_pid, 7).unwrap();
        match received(&mut b_inbox, Duration::from_secs(10)).await {
            Some(Received::Message(_, 7)) => {}
            other => panic!("expected 7 over a new connection, got {other:?}"),
        }
        // All of it in virtual time.
        assert!(started.elapsed() < Duration::from_secs(20));
    });
}
