//! A transport that shows an observer every frame its node sends and
//! every frame it receives, around any other transport: the simulation
//! watches nodes on real QUIC this way, where the wire is encrypted.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::sim::{Observer, SimEvent};
use super::{
    Inbound, InboundError, OutboundFrame, PeerInfo, Pending, SendError, SenderCache, Transport,
    TransportError, TransportFuture,
};
use crate::upid::Incarnation;

/// `inner`, observed.
pub struct Tap {
    inner: Arc<dyn Transport>,
    observer: Observer,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("addr", &self.inner.local_addr())
            .finish_non_exhaustive()
    }
}

impl Tap {
    pub fn new(inner: Arc<dyn Transport>, observer: Observer) -> Tap {
        Tap { inner, observer }
    }
}

/// The node's side, observed.
struct TapInbound {
    inner: Arc<dyn Inbound>,
    observer: Observer,
    local: SocketAddr,
}

impl Inbound for TapInbound {
    fn deliver(
        &self,
        peer: &PeerInfo,
        senders: &mut SenderCache,
        body: Bytes,
    ) -> Result<Option<Pending>, InboundError> {
        (self.observer)(&SimEvent::Delivered {
            from: peer.addr,
            to: self.local,
            body: &body,
        });
        self.inner.deliver(peer, senders, body)
    }

    fn peer_up(&self, peer: &PeerInfo) {
        (self.observer)(&SimEvent::Connected {
            a: self.local,
            b: peer.addr,
        });
        self.inner.peer_up(peer);
    }

    fn peer_down(&self, addr: SocketAddr, incarnation: Option<Incarnation>, reason: &str) {
        (self.observer)(&SimEvent::Disconnected {
            a: self.local,
            b: addr,
            reason,
        });
        self.inner.peer_down(addr, incarnation, reason);
    }
}

impl Transport for Tap {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn start(&self, inbound: Arc<dyn Inbound>) {
        self.inner.start(Arc::new(TapInbound {
            inner: inbound,
            observer: self.observer.clone(),
            local: self.inner.local_addr(),
        }));
    }

    fn send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        let from = self.inner.local_addr();
        let to = frame.to.addr();
        let kind = frame.kind;
        let bytes = frame.bytes.clone();
        let result = self.inner.send(frame);
        (self.observer)(&SimEvent::Frame {
            from,
            to,
            kind,
            bytes: &bytes,
            copies: usize::from(result.is_ok()),
        });
        result
    }

    fn watch(&self, peer: SocketAddr) {
        self.inner.watch(peer);
    }

    fn connect(&self, peer: SocketAddr) -> TransportFuture<Result<PeerInfo, TransportError>> {
        self.inner.connect(peer)
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }

    fn closed(&self) -> TransportFuture<()> {
        self.inner.closed()
    }
}
