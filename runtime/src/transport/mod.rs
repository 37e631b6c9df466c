//! The seam between a node and the network.
//!
//! A node hands complete frames to a [`Transport`] and receives frames,
//! peer arrivals and peer losses through [`Inbound`]. QUIC
//! ([`quic::QuicTransport`]) is the real one; a simulated in-memory network
//! implements the same trait so the whole cluster can run on one thread
//! under a paused clock without touching anything above this module.
//!
//! The contract every transport keeps, libprocess's:
//! - frames from one node to another arrive in the order they were sent,
//!   at most once: a frame may be lost when a connection breaks, but a
//!   later frame never overtakes an earlier one;
//! - a lost peer is reported once through [`Inbound::peer_down`] and the
//!   next send to it starts a new connection;
//! - nothing queues without limit: [`Transport::send`] refuses a frame
//!   rather than letting a slow or dead peer grow a queue.

pub mod quic;
pub mod sim;
pub mod sim_udp;
pub mod tap;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::CodecError;
use crate::tls::PeerIdentity;
use crate::upid::{Incarnation, Upid};

/// A future the transport awaits before reading further from a peer.
pub type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A future returned by a transport.
pub type TransportFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A peer node as the handshake established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The address the peer listens on and names its processes by.
    pub addr: SocketAddr,
    /// The peer's current incarnation.
    pub incarnation: Incarnation,
    /// Who the peer's certificate says it is.
    pub identity: Arc<PeerIdentity>,
}

/// One encoded message on its way out.
#[derive(Debug, Clone)]
pub struct OutboundFrame {
    pub to: Upid,
    pub from: Upid,
    /// The message's kind, for transports that filter by it (simulation).
    pub kind: &'static str,
    /// The whole frame, length prefix included.
    pub bytes: Bytes,
}

/// Why a message could not be sent. Sends never block: each of these is
/// returned at once and the message is dropped (and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no process {0} on this node")]
    UnknownProcess(Upid),
    #[error("{0} is addressed to an earlier incarnation of this node")]
    StaleIncarnation(Upid),
    #[error("mailbox of {0} is full")]
    MailboxFull(Upid),
    #[error("{to} does not receive messages of type {kind}")]
    WrongType { to: Upid, kind: &'static str },
    #[error("send queue to {0} is full")]
    QueueFull(SocketAddr),
    #[error("message too large: {0}")]
    TooLarge(CodecError),
    #[error("node is shutting down")]
    ShutDown,
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error(
        "{addr} does not speak our protocol version {ours} (ALPN strata/{ours}); upgrade one side"
    )]
    VersionMismatch { addr: SocketAddr, ours: u32 },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    #[error("{addr} broke the protocol: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("node is shutting down")]
    ShutDown,
}

/// Why an inbound frame was refused; the connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("invalid sender id: {0}")]
    InvalidSender(String),
}

/// Addresses of a peer's processes already parsed and checked on one
/// connection, so a busy connection does not check and allocate the
/// sender's address for every frame. Bounded: emptied when full.
#[derive(Debug, Default)]
pub struct SenderCache {
    /// `None`: the peer's certificate may not send under that id.
    senders: std::collections::HashMap<Box<str>, Option<Upid>>,
    /// Whether a refusal was reported on this connection already.
    refused: bool,
}

/// Who sent a frame, as far as its connection's certificate allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A process on the peer's node that its certificate may send as.
    Allowed(Upid),
    /// An id the peer's certificate may not use; `first` on the first
    /// such frame on this connection (log it once, whatever the ids).
    Refused { first: bool },
}

impl SenderCache {
    /// Most distinct senders remembered per connection.
    pub const CAPACITY: usize = 1024;

    /// The address of process `id` on `peer`, parsed and checked once:
    /// always on the peer's own node (the address its connection proved),
    /// and refused when the peer's certificate may not send under `id`
    /// ([`PeerIdentity::may_send_as`]).
    pub fn get(&mut self, peer: &PeerInfo, id: &str) -> Result<Sender, crate::UpidParseError> {
        if let Some(known) = self.senders.get(id) {
            return Ok(match known {
                Some(upid) => Sender::Allowed(upid.clone()),
                None => Sender::Refused { first: false },
            });
        }
        let upid = Upid::new(id, peer.addr, peer.incarnation)?;
        let checked = peer.identity.may_send_as(id).then_some(upid);
        if self.senders.len() >= Self::CAPACITY {
            self.senders.clear();
        }
        self.senders.insert(id.into(), checked.clone());
        Ok(match checked {
            Some(upid) => Sender::Allowed(upid),
            None => Sender::Refused {
                first: !std::mem::replace(&mut self.refused, true),
            },
        })
    }
}

/// What a transport tells its node.
pub trait Inbound: Send + Sync + 'static {
    /// A frame body (without length prefix) from `peer`. `Ok(Some(f))`
    /// asks the transport to await `f` before reading more from that peer
    /// (the target's mailbox is full); an error closes the connection.
    /// `senders` belongs to the connection the frame came on.
    fn deliver(
        &self,
        peer: &PeerInfo,
        senders: &mut SenderCache,
        body: Bytes,
    ) -> Result<Option<Pending>, InboundError>;

    /// A connection to `peer` completed its handshake.
    fn peer_up(&self, peer: &PeerInfo);

    /// The connection to the node at `addr` is gone (or could not be made).
    /// `incarnation` is the one the lost connection had, if it got that far.
    fn peer_down(&self, addr: SocketAddr, incarnation: Option<Incarnation>, reason: &str);
}

/// A node's network side.
pub trait Transport: Send + Sync + 'static {
    /// The address this node listens on; processes are named by it.
    fn local_addr(&self) -> SocketAddr;

    /// Starts receiving: from now on frames and peer events go to `inbound`.
    fn start(&self, inbound: Arc<dyn Inbound>);

    /// Queues a frame for `frame.to`'s node, connecting if needed. Never
    /// blocks; a full queue refuses the frame.
    fn send(&self, frame: OutboundFrame) -> Result<(), SendError>;

    /// Makes sure a connection to `peer` exists or is being made, so that
    /// its loss will be reported (links rely on this).
    fn watch(&self, peer: SocketAddr);

    /// Connects to `peer` now, reporting why if that fails.
    fn connect(&self, peer: SocketAddr) -> TransportFuture<Result<PeerInfo, TransportError>>;

    /// Closes every connection; later sends fail with [`SendError::ShutDown`].
    fn shutdown(&self);

    /// Resolves once, after a shutdown, the closing of every connection
    /// has been sent to its peer.
    fn closed(&self) -> TransportFuture<()>;
}
