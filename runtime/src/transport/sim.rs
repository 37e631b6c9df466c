//! A simulated network behind the [`Transport`] seam: every node of a
//! cluster in one process, on the runtime's (tokio's) clock, so a paused
//! clock runs a cluster in virtual time.
//!
//! Every random choice (latency, loss, duplication) is drawn from one
//! seeded generator, in the order frames are sent. Per pair of nodes there
//! is one simulated connection: frames go through it in order, each after
//! a latency drawn from the link's range, and a frame is never overtaken
//! by a later one. A link may also lose or duplicate frames with given
//! probabilities (faults above what QUIC would let through, for testing
//! the protocol's own recovery). Partitions are one-way or two-way; like
//! QUIC, a connection across a partition is only declared lost after
//! [`IDLE_TIMEOUT`] without traffic, and a partition healed before that
//! leaves it standing. A node shut down closes its connections at once (a
//! clean close); a crashed node ([`SimNetwork::crash`]) goes silent and is
//! noticed by its peers after the idle timeout.
//!
//! Filters, in the spirit of libprocess's test filters, act on message
//! kinds: lose the next message of a kind from one node to another
//! ([`SimNetwork::drop_next`]), wait until one is sent
//! ([`SimNetwork::await_next`]), or hold a direction's frames back and
//! release them later, in order ([`SimNetwork::hold`],
//! [`SimNetwork::release`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    Inbound, OutboundFrame, PeerInfo, SendError, SenderCache, Transport, TransportError,
    TransportFuture,
};
use crate::metrics::Metrics;
use crate::random::SplitMix;
use crate::tls::PeerIdentity;
use crate::upid::Incarnation;

/// How long a silent connection lives before it is declared lost (as the
/// QUIC transport's default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a link between two nodes behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Each frame's latency is drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// Probability that a frame is lost.
    pub drop: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// The message kinds loss and duplication apply to; all when `None`.
    pub kinds: Option<&'static [&'static str]>,
}

impl Default for LinkConfig {
    /// A LAN: 0.1 to 1 ms, nothing lost or duplicated.
    fn default() -> LinkConfig {
        LinkConfig {
            latency: (Duration::from_micros(100), Duration::from_millis(1)),
            drop: 0.0,
            duplicate: 0.0,
            kinds: None,
        }
    }
}

type Pair = (SocketAddr, SocketAddr);

/// Something that happened on the network, as observers see it.
#[derive(Debug, Clone, Copy)]
pub enum SimEvent<'a> {
    /// A frame was sent: `copies` of it are on their way (0 when it was
    /// lost to a partition, the link's loss or a filter, or held back).
    Frame {
        from: SocketAddr,
        to: SocketAddr,
        kind: &'static str,
        /// The whole frame, length prefix included.
        bytes: &'a Bytes,
        copies: usize,
    },
    /// A frame reached the node at `to` (a duplicate arrives twice).
    Delivered {
        from: SocketAddr,
        to: SocketAddr,
        /// The frame's body, without its length prefix.
        body: &'a Bytes,
    },
    /// A connection between two nodes was made.
    Connected { a: SocketAddr, b: SocketAddr },
    /// A connection between two nodes was lost or closed.
    Disconnected {
        a: SocketAddr,
        b: SocketAddr,
        reason: &'a str,
    },
}

/// A function told of every [`SimEvent`].
pub type Observer = Arc<dyn Fn(&SimEvent<'_>) + Send + Sync>;

struct SimNode {
    inbound: Option<Arc<dyn Inbound>>,
    incarnation: Incarnation,
    identity: Arc<PeerIdentity>,
    /// False once shut down or crashed.
    up: bool,
}

/// One direction of a simulated connection: frames queued for delivery.
struct Direction {
    queue: mpsc::UnboundedSender<(tokio::time::Instant, Bytes)>,
    last_delivery: tokio::time::Instant,
}

#[derive(Default)]
struct NetState {
    random: Option<SplitMix>,
    nodes: HashMap<SocketAddr, SimNode>,
    default_link: LinkConfig,
    links: HashMap<Pair, LinkConfig>,
    /// Frames from the first node to the second are lost.
    cut: HashSet<Pair>,
    /// Open connections, keyed by the lower address first, with a serial
    /// that changes on every new connection.
    connections: BTreeMap<Pair, u64>,
    directions: HashMap<Pair, Direction>,
    next_serial: u64,
    /// A running hash of what happened, for determinism checks.
    trace: u64,
    /// Filters: the next frame of a kind on a direction is lost ...
    drop_next: Vec<(Pair, &'static str)>,
    /// ... or reported when sent ...
    await_next: Vec<(Pair, &'static str, tokio::sync::oneshot::Sender<()>)>,
    /// ... and directions whose frames are held back until released.
    held: HashMap<Pair, Vec<Bytes>>,
    observer: Option<Observer>,
}

impl NetState {
    fn random(&mut self) -> &mut SplitMix {
        self.random.get_or_insert_with(|| SplitMix::new(0))
    }

    fn note(&mut self, event: u64) {
        self.trace = (self.trace ^ event).wrapping_mul(0x0100_0000_01b3);
    }

    fn peer_info(&self, addr: SocketAddr) -> Option<PeerInfo> {
        let node = self.nodes.get(&addr)?;
        Some(PeerInfo {
            addr,
            incarnation: node.incarnation,
            identity: node.identity.clone(),
        })
    }

    /// Queues `copies` of a frame on the connection from `from` to `to`,
    /// after a latency drawn for it, never before an earlier frame.
    fn enqueue(&mut self, from: SocketAddr, to: SocketAddr, frame: Bytes, copies: usize) {
        let (low, high) = self.link(from, to).latency;
        let spread = high.saturating_sub(low).as_nanos() as u64;
        let latency = low + Duration::from_nanos(self.random().below(spread.saturating_add(1)));
        self.note(frame.len() as u64 ^ ((latency.as_nanos() as u64) << 16));
        let Some(direction) = self.directions.get_mut(&(from, to)) else {
            return;
        };
        let when = (tokio::time::Instant::now() + latency).max(direction.last_delivery);
        direction.last_delivery = when;
        for _ in 0..copies {
            let _ = direction.queue.send((when, frame.clone()));
        }
    }

    /// Applies the filters to a frame about to go from `from` to `to`;
    /// true if it goes on.
    fn filter(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        kind: &'static str,
        frame: &Bytes,
    ) -> bool {
        let pair = (from, to);
        let mut index = 0;
        while index < self.await_next.len() {
            if self.await_next[index].0 == pair && self.await_next[index].1 == kind {
                let (_, _, waiter) = self.await_next.swap_remove(index);
                let _ = waiter.send(());
            } else {
                index += 1;
            }
        }
        if let Some(position) = self
            .drop_next
            .iter()
            .position(|(filtered, filtered_kind)| *filtered == pair && *filtered_kind == kind)
        {
            self.drop_next.remove(position);
            self.note(0x4452_4f50);
            return false;
        }
        if let Some(held) = self.held.get_mut(&pair) {
            held.push(frame.clone());
            return false;
        }
        true
    }

    fn link(&self, from: SocketAddr, to: SocketAddr) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }
}

fn key(a: SocketAddr, b: SocketAddr) -> Pair {
    if a <= b { (a, b) } else { (b, a) }
}

/// The simulated network all simulated nodes share.
#[derive(Clone, Default)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNetwork").finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<NetState>) -> MutexGuard<'_, NetState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimNetwork {
    /// A network whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> SimNetwork {
        let network = SimNetwork::default();
        lock(&network.state).random = Some(SplitMix::new(seed));
        network
    }

    /// Tells `observer` of everything that happens from now on (one
    /// observer; a second replaces the first). It is called outside the
    /// network's lock but must not block.
    pub fn observe(&self, observer: impl Fn(&SimEvent<'_>) + Send + Sync + 'static) {
        lock(&self.state).observer = Some(Arc::new(observer));
    }

    fn tell(&self, event: &SimEvent<'_>) {
        let observer = lock(&self.state).observer.clone();
        if let Some(observer) = observer {
            observer(event);
        }
    }

    /// A transport for a node at `addr` named `name`, with the identity a
    /// certificate for `role` would give it. A node that was at
    /// `addr` before (a crashed one being restarted) loses its
    /// connections first, as a QUIC peer would on the restarted node's
    /// stateless reset.
    pub fn transport(
        &self,
        addr: SocketAddr,
        role: crate::Role,
        name: &str,
        incarnation: Incarnation,
    ) -> Arc<SimTransport> {
        let identity = Arc::new(PeerIdentity::simulated(Some(role), name));
        let stale: Vec<Pair> = lock(&self.state)
            .connections
            .keys()
            .filter(|(a, b)| *a == addr || *b == addr)
            .copied()
            .collect();
        for (a, b) in stale {
            self.disconnect(a, b, "the peer restarted");
        }
        lock(&self.state).nodes.insert(
            addr,
            SimNode {
                inbound: None,
                incarnation,
                identity: identity.clone(),
                up: true,
            },
        );
        Arc::new(SimTransport {
            network: self.clone(),
            addr,
            incarnation,
            identity,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// A node at `addr` on this network, with a certificate for `role`.
    pub fn node(
        &self,
        addr: SocketAddr,
        role: crate::Role,
        name: &str,
        incarnation: Incarnation,
    ) -> crate::Node {
        let transport = self.transport(addr, role, name, incarnation);
        let metrics = transport.metrics.clone();
        let identity = transport.identity.clone();
        crate::Node::with_transport(
            transport,
            metrics,
            identity,
            crate::NodeSettings {
                incarnation: Some(incarnation),
                ..crate::NodeSettings::default()
            },
        )
    }

    /// How every link behaves unless [`SimNetwork::set_link`] says
    /// otherwise.
    pub fn set_default_link(&self, link: LinkConfig) {
        lock(&self.state).default_link = link;
    }

    /// Every link back to [`LinkConfig::default`].
    pub fn reset_links(&self) {
        let mut state = lock(&self.state);
        state.links.clear();
        state.default_link = LinkConfig::default();
    }

    /// How frames from `from` to `to` travel.
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        lock(&self.state).links.insert((from, to), link);
    }

    /// Frames from `from` to `to` are lost from now on.
    pub fn partition_one_way(&self, from: SocketAddr, to: SocketAddr) {
        let serial = {
            let mut state = lock(&self.state);
            state.cut.insert((from, to));
            state.note(0x5041_5254);
            state.connections.get(&key(from, to)).copied()
        };
        if let Some(serial) = serial {
            self.expire_after_idle(from, to, serial);
        }
    }

    /// No frames between `a` and `b`, either way.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Frames between `a` and `b` flow again.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = lock(&self.state);
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
        state.note(0x4845_414c);
    }

    /// Every partition healed.
    pub fn heal_all(&self) {
        let mut state = lock(&self.state);
        state.cut.clear();
        state.note(0x4845_414c);
    }

    /// The node at `addr` stops as if its process died: it sends and
    /// receives nothing more, and its peers notice after the idle timeout.
    pub fn crash(&self, addr: SocketAddr) {
        let pairs: Vec<(Pair, u64)> = {
            let mut state = lock(&self.state);
            if let Some(node) = state.nodes.get_mut(&addr) {
                node.up = false;
                node.inbound = None;
            }
            state.note(0x4352_4153);
            state
                .connections
                .iter()
                .filter(|((a, b), _)| *a == addr || *b == addr)
                .map(|(pair, serial)| (*pair, *serial))
                .collect()
        };
        for ((a, b), serial) in pairs {
            self.expire_after_idle(a, b, serial);
        }
    }

    /// Loses the next frame of message kind `kind` (a message's
    /// [`crate::Message::kind`]) sent from `from` to `to`.
    pub fn drop_next(&self, from: SocketAddr, to: SocketAddr, kind: &'static str) {
        lock(&self.state).drop_next.push(((from, to), kind));
    }

    /// Resolves when the next frame of kind `kind` is sent from `from` to
    /// `to` (whether or not it arrives).
    pub fn await_next(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        kind: &'static str,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        lock(&self.state)
            .await_next
            .push(((from, to), kind, sender));
        async move {
            let _ = receiver.await;
        }
    }

    /// Holds back every frame from `from` to `to` (the connection stays
    /// up) until [`SimNetwork::release`].
    pub fn hold(&self, from: SocketAddr, to: SocketAddr) {
        lock(&self.state).held.entry((from, to)).or_default();
    }

    /// Sends what was held from `from` to `to`, in order, and lets later
    /// frames through.
    pub fn release(&self, from: SocketAddr, to: SocketAddr) {
        let mut state = lock(&self.state);
        let Some(frames) = state.held.remove(&(from, to)) else {
            return;
        };
        for frame in frames {
            state.enqueue(from, to, frame, 1);
        }
    }

    /// A hash of everything that happened on the network so far: equal
    /// for two runs of the same seed and scenario.
    pub fn trace_hash(&self) -> u64 {
        lock(&self.state).trace
    }

    /// Declares the connection `serial` between `a` and `b` lost after the
    /// idle timeout, unless traffic can flow again by then.
    fn expire_after_idle(&self, a: SocketAddr, b: SocketAddr, serial: u64) {
        let network = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_TIMEOUT).await;
            let still_dead = {
                let state = lock(&network.state);
                let up = |addr| state.nodes.get(&addr).is_some_and(|node| node.up);
                let same = state.connections.get(&key(a, b)) == Some(&serial);
                same && (state.cut.contains(&(a, b))
                    || state.cut.contains(&(b, a))
                    || !up(a)
                    || !up(b))
            };
            if still_dead {
                network.disconnect(a, b, "idle timeout: the peer went silent");
            }
        });
    }

    /// Ends the connection between `a` and `b`; both sides hear of it.
    fn disconnect(&self, a: SocketAddr, b: SocketAddr, reason: &str) {
        let (sides, removed) = {
            let mut state = lock(&self.state);
            let removed = state.connections.remove(&key(a, b)).is_some();
            state.directions.remove(&(a, b));
            state.directions.remove(&(b, a));
            state.note(0x444f_574e);
            let side = |at: SocketAddr, peer: SocketAddr| {
                let node = state.nodes.get(&at)?;
                let inbound = node.inbound.clone()?;
                let incarnation = state.nodes.get(&peer).map(|node| node.incarnation);
                Some((inbound, peer, incarnation))
            };
            (vec![side(a, b), side(b, a)], removed)
        };
        if removed {
            self.tell(&SimEvent::Disconnected { a, b, reason });
            for (inbound, peer, incarnation) in sides.into_iter().flatten() {
                inbound.peer_down(peer, incarnation, reason);
            }
        }
    }

    /// Opens the connection between `from` and `to` if both are up and
    /// nothing cuts it; returns the receiving side's peer info.
    fn connect_pair(&self, from: SocketAddr, to: SocketAddr) -> Result<PeerInfo, String> {
        let (ups, info) = {
            let mut state = lock(&self.state);
            let up = |addr| {
                state
                    .nodes
                    .get(&addr)
                    .is_some_and(|node| node.up && node.inbound.is_some())
            };
            if !up(from) {
                return Err("this node is down".into());
            }
            if !up(to) {
                return Err("nothing answers there".into());
            }
            if state.cut.contains(&(from, to)) || state.cut.contains(&(to, from)) {
                return Err("the handshake timed out (partitioned)".into());
            }
            let info = state.peer_info(to).ok_or("unknown node")?;
            if state.connections.contains_key(&key(from, to)) {
                return Ok(info);
            }
            state.next_serial += 1;
            let serial = state.next_serial;
            state.connections.insert(key(from, to), serial);
            state.note(0x434f_4e4e ^ serial);
            let mut ups = Vec::new();
            for (at, peer) in [(from, to), (to, from)] {
                let (sender, receiver) = mpsc::unbounded_channel();
                state.directions.insert(
                    (at, peer),
                    Direction {
                        queue: sender,
                        last_delivery: tokio::time::Instant::now(),
                    },
                );
                let target = state.nodes.get(&peer).and_then(|node| node.inbound.clone());
                let sender_info = state.peer_info(at);
                if let (Some(target), Some(sender_info)) = (target, sender_info) {
                    ups.push((target.clone(), sender_info.clone()));
                    tokio::spawn(deliver(
                        self.clone(),
                        target,
                        sender_info,
                        peer,
                        serial,
                        receiver,
                    ));
                }
            }
            (ups, info)
        };
        if !ups.is_empty() {
            self.tell(&SimEvent::Connected { a: from, b: to });
        }
        for (inbound, peer) in ups {
            inbound.peer_up(&peer);
        }
        Ok(info)
    }
}

/// Delivers one direction's frames in order, each at its time, for as
/// long as connection `serial` stands.
async fn deliver(
    network: SimNetwork,
    target: Arc<dyn Inbound>,
    sender: PeerInfo,
    at: SocketAddr,
    serial: u64,
    mut frames: mpsc::UnboundedReceiver<(tokio::time::Instant, Bytes)>,
) {
    let mut senders = SenderCache::default();
    while let Some((when, frame)) = frames.recv().await {
        tokio::time::sleep_until(when).await;
        let alive = {
            let state = lock(&network.state);
            state.nodes.get(&at).is_some_and(|node| node.up)
                && state.connections.get(&key(sender.addr, at)) == Some(&serial)
        };
        if !alive {
            return;
        }
        let body = frame.slice(4.min(frame.len())..);
        network.tell(&SimEvent::Delivered {
            from: sender.addr,
            to: at,
            body: &body,
        });
        match target.deliver(&sender, &mut senders, body) {
            Ok(None) => {}
            Ok(Some(pending)) => pending.await,
            Err(error) => {
                network.disconnect(sender.addr, at, &error.to_string());
                return;
            }
        }
    }
}

/// One node's side of the simulated network.
pub struct SimTransport {
    network: SimNetwork,
    addr: SocketAddr,
    /// A transport of an earlier incarnation at the same address does
    /// nothing once a restarted node replaced it.
    incarnation: Incarnation,
    identity: Arc<PeerIdentity>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Transport for SimTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn start(&self, inbound: Arc<dyn Inbound>) {
        if let Some(node) = lock(&self.network.state)
            .nodes
            .get_mut(&self.addr)
            .filter(|node| node.incarnation == self.incarnation)
        {
            node.inbound = Some(inbound);
            node.up = true;
        }
    }

    fn send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        let to = frame.to.addr();
        if !lock(&self.network.state)
            .nodes
            .get(&self.addr)
            .is_some_and(|node| node.up && node.incarnation == self.incarnation)
        {
            return Err(SendError::ShutDown);
        }
        if !lock(&self.network.state)
            .connections
            .contains_key(&key(self.addr, to))
            && let Err(reason) = self.network.connect_pair(self.addr, to)
        {
            Metrics::bump(&self.metrics.dropped_unreachable);
            self.report_unreachable(to, reason);
            return Ok(());
        }
        let copies = {
            let mut state = lock(&self.network.state);
            let link = state.link(self.addr, to);
            let cut = state.cut.contains(&(self.addr, to));
            let applies = link.kinds.is_none_or(|kinds| kinds.contains(&frame.kind));
            let random = state.random();
            let lost = cut || (chance(random, link.drop) && applies);
            let copies = if chance(random, link.duplicate) && applies {
                2
            } else {
                1
            };
            state.note(u64::from(lost) << 63 | copies);
            if lost || !state.filter(self.addr, to, frame.kind, &frame.bytes) {
                0
            } else {
                Metrics::add(&self.metrics.bytes_sent, frame.bytes.len() as u64);
                state.enqueue(self.addr, to, frame.bytes.clone(), copies as usize);
                copies as usize
            }
        };
        self.network.tell(&SimEvent::Frame {
            from: self.addr,
            to,
            kind: frame.kind,
            bytes: &frame.bytes,
            copies,
        });
        Ok(())
    }

    fn watch(&self, peer: SocketAddr) {
        if !lock(&self.network.state)
            .connections
            .contains_key(&key(self.addr, peer))
            && let Err(reason) = self.network.connect_pair(self.addr, peer)
        {
            self.report_unreachable(peer, reason);
        }
    }

    fn connect(&self, peer: SocketAddr) -> TransportFuture<Result<PeerInfo, TransportError>> {
        let result = self
            .network
            .connect_pair(self.addr, peer)
            .map_err(|reason| TransportError::Unreachable { addr: peer, reason });
        Box::pin(async move { result })
    }

    fn shutdown(&self) {
        let peers: Vec<SocketAddr> = {
            let mut state = lock(&self.network.state);
            match state.nodes.get_mut(&self.addr) {
                // A crashed node closes nothing: its peers find out at
                // their idle timeout.
                Some(node)
                    if node.up
                        && node.inbound.is_some()
                        && node.incarnation == self.incarnation =>
                {
                    node.up = false
                }
                _ => return,
            }
            state
                .connections
                .keys()
                .filter_map(|(a, b)| {
                    if *a == self.addr {
                        Some(*b)
                    } else if *b == self.addr {
                        Some(*a)
                    } else {
                        None
                    }
                })
                .collect()
        };
        // A clean close: the peers hear of it at once.
        for peer in peers {
            self.network
                .disconnect(self.addr, peer, "the peer closed the connection");
        }
        if let Some(node) = lock(&self.network.state).nodes.get_mut(&self.addr) {
            node.inbound = None;
        }
    }

    fn closed(&self) -> TransportFuture<()> {
        Box::pin(async {})
    }
}

impl SimTransport {
    /// A connection attempt failed: the node hears its peer is down, a
    /// little later (as a failed handshake would tell it).
    fn report_unreachable(&self, peer: SocketAddr, reason: String) {
        let inbound = lock(&self.network.state)
            .nodes
            .get(&self.addr)
            .and_then(|node| node.inbound.clone());
        if let Some(inbound) = inbound {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                inbound.peer_down(peer, None, &reason);
            });
        }
    }
}

fn chance(random: &mut SplitMix, probability: f64) -> bool {
    probability > 0.0 && (random.next_u64() as f64 / u64::MAX as f64) < probability
}
