//! `strata ping`: is a node reachable, and do we trust each other?
//!
//! Connects exactly as cluster nodes do (QUIC, mutual TLS, the protocol
//! version in the ALPN) and reports the peer's certificate name, its
//! incarnation and how long the handshake took, or why it failed: no
//! answer, a certificate from another CA, another protocol version.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strata_runtime::upid::parse_socket_addr;
use strata_runtime::{Node, NodeConfig};

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The node's address, HOST:PORT (IPv6 as `[::1]:5050`).
    #[arg(value_parser = parse_address)]
    pub address: SocketAddr,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    parse_socket_addr(text).map_err(|e| e.to_string())
}

/// The local address a client node should bind to reach `peer`: loopback
/// for a loopback peer, otherwise the address the route to it uses.
pub fn local_ip_towards(peer: SocketAddr) -> anyhow::Result<std::net::IpAddr> {
    if peer.ip().is_loopback() {
        return Ok(if peer.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let probe = std::net::UdpSocket::bind(if peer.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

pub fn run(args: PingArgs) -> anyhow::Result<()> {
    let material = args
        .tls
        .material(strata_runtime::Role::Operator, "strata-cli")?;
    let local_ip = local_ip_towards(args.address)?;
    actix_rt::System::new().block_on(async move {
        let mut config = NodeConfig::new(SocketAddr::new(local_ip, 0), material);
        config.quic.connect_timeout = Duration::from_secs(args.timeout);
        let node = Node::bind(config).await?;
        let started = Instant::now();
        // The error names the address and the cause.
        let peer = node.connect(args.address).await?;
        let handshake = started.elapsed();
        println!(
            "{}: node {:?}, incarnation {}, handshake {:.1} ms",
            args.address,
            peer.identity.name,
            peer.incarnation,
            handshake.as_secs_f64() * 1e3
        );
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
