//! Peers that must be refused: another CA, another protocol version, and
//! raw QUIC peers with valid certificates sending hostile bytes. After
//! each, the node must still serve a good peer.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DEADLINE, Echo, node, system};
use strata_runtime::codec::{self, Hello, PROTOCOL_VERSION};
use strata_runtime::tls::{self, QuicTimeouts};
use strata_runtime::{CertificateAuthority, Incarnation, Node, SpawnOptions, TransportError, Upid};

/// Checks that `node` still answers a well-behaved peer's echo.
async fn still_serves(ca: &CertificateAuthority, node: &Node) {
    let echo = if node.is_running("echo") {
        node.pid("echo").unwrap()
    } else {
        node.spawn("echo", || Echo, SpawnOptions::default())
            .unwrap()
    };
    let good = common::node(ca, "good-peer").await;
    let mut inbox = good.inbox::<String>("client", 4).unwrap();
    inbox.send(&echo, "are you there".to_string()).unwrap();
    let reply = inbox.message_within(DEADLINE).await;
    assert_eq!(
        reply.map(|(_, text)| text).as_deref(),
        Some("are you there")
    );
    good.shutdown();
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let impostor_ca = CertificateAuthority::generate("impostor").unwrap();
        let master = node(&ca, "master").await;
        let impostor = node(&impostor_ca, "impostor").await;
        let result = impostor.connect(master.addr()).await;
        assert!(
            matches!(result, Err(TransportError::Handshake { .. })),
            "{result:?}"
        );
        // And the other way round: the master does not trust the impostor.
        let result = master.connect(impostor.addr()).await;
        assert!(
            matches!(result, Err(TransportError::Handshake { .. })),
            "{result:?}"
        );
        assert!(master.metrics().handshake_failures >= 2);
        still_serves(&ca, &master).await;
    });
}

#[test]
fn a_peer_speaking_another_protocol_version_is_refused_on_both_sides() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        let mut config = common::config(&ca, "future-agent");
        config.quic.protocol_version = PROTOCOL_VERSION + 1;
        let future = Node::bind(config).await.unwrap();
        let result = future.connect(master.addr()).await;
        assert_eq!(
            result,
            Err(TransportError::VersionMismatch {
                addr: master.addr(),
                ours: PROTOCOL_VERSION + 1
            })
        );
        assert!(result.unwrap_err().to_string().contains("protocol version"));
        assert_eq!(future.metrics().handshake_failures, 1);
        // The master refused it too, and says so in its counters. Its
        // handshake task may still be finishing: let it run.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while master.metrics().handshake_failures == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "master never counted the refusal"
            );
            tokio::task::yield_now().await;
        }
        still_serves(&ca, &master).await;
    });
}

/// A raw QUIC peer with a valid certificate: it speaks TLS and QUIC
/// correctly and then writes whatever the test wants.
async fn raw_peer(ca: &CertificateAuthority, target: SocketAddr) -> RawPeer {
    let material = ca
        .issue(strata_runtime::Role::Framework, "raw-peer")
        .unwrap();
    let timeouts = QuicTimeouts {
        idle_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
    };
    let (_, client) = tls::quic_configs(&material, PROTOCOL_VERSION, &timeouts).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let connection = endpoint
        .connect(target, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    RawPeer {
        endpoint,
        connection,
        send,
        _recv: recv,
    }
}

/// A raw peer's parts. The receive half is kept: dropping it would tell
/// the node to stop sending, failing the node's hello.
struct RawPeer {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

fn hello_from(endpoint: &quinn::Endpoint) -> bytes::Bytes {
    codec::hello_frame(&Hello {
        listen: endpoint.local_addr().unwrap(),
        incarnation: Incarnation(42),
    })
    .unwrap()
}

/// Sends `bytes` (after a valid hello if `with_hello`) and waits for the
/// node to close the connection.
async fn hostile(
    ca: &CertificateAuthority,
    node: &Node,
    with_hello: bool,
    bytes: &[u8],
    finish: bool,
) {
    let RawPeer {
        endpoint,
        connection,
        mut send,
        _recv,
    } = raw_peer(ca, node.addr()).await;
    if with_hello {
        send.write_all(&hello_from(&endpoint)).await.unwrap();
    }
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let closed = tokio::time::timeout(DEADLINE, connection.closed()).await;
    assert!(closed.is_ok(), "the node kept a hostile connection open");
    endpoint.close(0u32.into(), b"done");
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[test]
fn garbage_instead_of_a_hello_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        hostile(
            &ca,
            &master,
            false,
            b"GET / HTTP/1.1\r\nHost: strata\r\n\r\n",
            false,
        )
        .await;
        assert!(master.metrics().handshake_failures >= 1);
        still_serves(&ca, &master).await;
    });
}

#[test]
fn a_garbage_frame_closes_only_that_connection() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        master
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        hostile(&ca, &master, true, &frame(&[0xFF; 40]), false).await;
        assert_eq!(master.metrics().decode_errors, 1);
        still_serves(&ca, &master).await;
    });
}

#[test]
fn a_truncated_frame_closes_only_that_connection() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        // Announces 100 bytes, sends 10, then ends the stream.
        let mut bytes = 100u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        hostile(&ca, &master, true, &bytes, true).await;
        assert_eq!(master.metrics().decode_errors, 1);
        still_serves(&ca, &master).await;
    });
}

#[test]
fn an_oversized_length_prefix_closes_only_that_connection() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        hostile(&ca, &master, true, &u32::MAX.to_le_bytes(), false).await;
        assert_eq!(master.metrics().decode_errors, 1);
        still_serves(&ca, &master).await;
    });
}

/// The case that aborts a process with bincode's default configuration:
/// nine bytes claiming a 1 TiB string, here as the envelope's first field.
#[test]
fn a_frame_claiming_a_terabyte_string_closes_only_that_connection() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        master
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let one_tib_string = [0xFD, 0, 0, 0, 0, 0, 1, 0, 0];
        hostile(&ca, &master, true, &frame(&one_tib_string), false).await;
        assert_eq!(master.metrics().decode_errors, 1);
        // The same claim inside a well-formed envelope's payload.
        let header = codec::EnvelopeHeader {
            to: "echo",
            from: "raw",
            to_incarnation: Incarnation::ANY,
        };
        let mut body = codec::encode(&header).unwrap();
        body.extend_from_slice(&one_tib_string);
        hostile(&ca, &master, true, &frame(&body), false).await;
        assert_eq!(master.metrics().decode_errors, 2);
        still_serves(&ca, &master).await;
    });
}

#[test]
fn a_valid_raw_peer_is_served() {
    // The counterpart of the hostile cases: the same raw peer with a
    // correct envelope is delivered, so the cases above fail for their
    // bytes and not for the harness.
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let master = node(&ca, "master").await;
        let mut inbox = master.inbox::<String>("target", 4).unwrap();
        // Every part is bound: dropping the connection handle would close it.
        let RawPeer {
            endpoint,
            connection: _connection,
            mut send,
            _recv,
        } = raw_peer(&ca, master.addr()).await;
        send.write_all(&hello_from(&endpoint)).await.unwrap();
        let header = codec::EnvelopeHeader {
            to: "target",
            from: "raw",
            to_incarnation: Incarnation::ANY,
        };
        let frame = codec::envelope_frame(&header, &"well formed".to_string(), 1 << 20).unwrap();
        send.write_all(&frame).await.unwrap();
        let (from, text) = inbox.message_within(DEADLINE).await.unwrap();
        assert_eq!(text, "well formed");
        let expected: Upid = format!("raw@{}", endpoint.local_addr().unwrap())
            .parse()
            .unwrap();
        assert!(from.same_name(&expected));
        assert_eq!(from.incarnation(), Incarnation(42));
    });
}

/// A node whose certificate is for `role`.
async fn node_as(ca: &CertificateAuthority, role: strata_runtime::Role, name: &str) -> Node {
    let mut config = common::config(ca, name);
    config.tls = ca.issue(role, name).unwrap();
    Node::bind(config).await.unwrap()
}

#[test]
fn a_peer_cannot_send_under_an_id_its_certificate_does_not_allow() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let target = node(&ca, "target").await;
        let echo = target
            .spawn("echo", || Echo, SpawnOptions::default())
            .unwrap();
        let agent = node_as(&ca, strata_runtime::Role::Agent, "agent-7").await;
        let mut as_master = agent.inbox::<String>("master", 4).unwrap();
        let mut as_operator = agent.inbox::<String>("operator-1", 4).unwrap();
        let mut as_itself = agent.inbox::<String>("agent", 4).unwrap();
        as_master
            .send(&echo, "I am the master".to_string())
            .unwrap();
        as_operator
            .send(&echo, "kill everything".to_string())
            .unwrap();
        as_master.send(&echo, "really".to_string()).unwrap();
        as_itself.send(&echo, "hello".to_string()).unwrap();
        // Frames on one connection arrive in order: once the agent's own
        // message is answered, the others were refused.
        let reply = as_itself.message_within(DEADLINE).await;
        assert_eq!(reply.map(|(_, text)| text).as_deref(), Some("hello"));
        assert_eq!(target.metrics().dropped_impersonation, 3);
        assert!(
            as_master
                .message_within(Duration::from_millis(200))
                .await
                .is_none()
        );
        assert!(
            as_operator
                .message_within(Duration::from_millis(200))
                .await
                .is_none()
        );
        // The connection stays up for what the certificate allows.
        assert_eq!(target.metrics().decode_errors, 0);
        still_serves(&ca, &target).await;
    });
}

#[test]
fn a_peer_announcing_another_nodes_address_is_refused() {
    system(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let target = node(&ca, "target").await;
        let master = node_as(&ca, strata_runtime::Role::Master, "master").await;
        let RawPeer {
            endpoint,
            connection,
            mut send,
            _recv,
        } = raw_peer(&ca, target.addr()).await;
        // It claims to be the node at the master's address.
        let hello = codec::hello_frame(&Hello {
            listen: master.addr(),
            incarnation: Incarnation(42),
        })
        .unwrap();
        send.write_all(&hello).await.unwrap();
        let closed = tokio::time::timeout(DEADLINE, connection.closed()).await;
        assert!(
            closed.is_ok(),
            "the node kept the connection of a peer lying about its address"
        );
        endpoint.close(0u32.into(), b"done");
        assert!(target.metrics().handshake_failures >= 1);
        still_serves(&ca, &target).await;
    });
}
