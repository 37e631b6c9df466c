//! A node: one per OS process, one UDP address, any number of processes.
//!
//! The node keeps the registry of its processes by id, routes each send
//! (same node: straight into the target's mailbox without serialising;
//! another node: encoded and handed to the [`Transport`]), and keeps the
//! links between processes so that a stopped process or a lost peer node
//! turns into `exited` callbacks.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::codec::{self, EnvelopeHeader};
use crate::inbox::{Inbox, InboxProcess};
use crate::mailbox::MailboxSender;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::process::{self, Message, Process, Signal, SpawnOptions};
use crate::supervision::{Failure, RestartPolicy};
use crate::tls::{PeerIdentity, TlsMaterial};
use crate::transport::quic::{QuicConfig, QuicTransport};
use crate::transport::{
    Inbound, InboundError, OutboundFrame, PeerInfo, Pending, SendError, Sender, SenderCache,
    Transport, TransportError,
};
use crate::upid::{Incarnation, Upid, UpidParseError};

/// How many recent give-ups a node remembers for operators.
const FAILURES_KEPT: usize = 64;

/// Settings of a node that do not depend on its transport.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// This life's incarnation; a fresh random one when `None`.
    pub incarnation: Option<Incarnation>,
    /// Default mailbox capacity of processes spawned here.
    pub mailbox_capacity: usize,
    /// How long a message from a peer waits for room in a full mailbox
    /// while the process handles nothing, before it is dropped (it waits
    /// on while the process works through its queue, up to ten times
    /// this in all). The connection reads nothing else meanwhile.
    pub remote_mailbox_wait: Duration,
    /// Largest frame sent or accepted, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        NodeSettings {
            incarnation: None,
            mailbox_capacity: 4096,
            remote_mailbox_wait: Duration::from_secs(1),
            max_frame_bytes: codec::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Everything needed to start a node on QUIC.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where to listen. Port 0 picks a free port; the node's addresses use
    /// the port actually bound. The IP must be a concrete address, since
    /// peers reach this node's processes at it.
    pub listen: SocketAddr,
    pub tls: TlsMaterial,
    pub settings: NodeSettings,
    pub quic: QuicConfig,
}

impl NodeConfig {
    pub fn new(listen: SocketAddr, tls: TlsMaterial) -> NodeConfig {
        NodeConfig {
            listen,
            tls,
            settings: NodeSettings::default(),
            quic: QuicConfig::default(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid node configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Why a process could not be spawned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    InvalidId(#[from] UpidParseError),
    #[error("a process {0} is already running")]
    AlreadyRunning(Upid),
    #[error("process factory panicked: {0}")]
    FactoryPanicked(String),
    #[error("processes are spawned from a thread running an actix system (or arbiter)")]
    OutsideSystem,
}

/// Hands a remote payload to a process's mailbox, decoding it into the
/// message type that process receives.
pub(crate) trait RemoteMailbox: Send + Sync {
    fn deliver(
        &self,
        from: Upid,
        sender: Option<Arc<PeerIdentity>>,
        payload: &[u8],
        wait: Duration,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Pending>, InboundError>;
}

/// One registered process.
pub(crate) struct Entry {
    /// Tells this registration from a later one under the same id.
    pub(crate) serial: u64,
    pub(crate) pid: Upid,
    /// A `Recipient<Delivery<M>>` for the process's message type `M`.
    pub(crate) local: Box<dyn Any + Send + Sync>,
    pub(crate) remote: Box<dyn RemoteMailbox>,
    pub(crate) signals: Box<dyn SignalSink>,
}

/// Where the runtime's signals for one process go.
pub(crate) trait SignalSink: Send + Sync {
    /// False if the process is gone.
    fn signal(&self, signal: Signal) -> bool;
}

impl<M: Send> SignalSink for MailboxSender<M> {
    fn signal(&self, signal: Signal) -> bool {
        MailboxSender::signal(self, signal)
    }
}

/// Who is linked to whom. Targets are keyed by name (incarnation
/// ignored); each link remembers the address as the linker gave it, which
/// is what its `exited` callback receives.
#[derive(Default)]
struct Links {
    by_target: HashMap<Upid, Vec<(Arc<str>, Upid)>>,
    by_peer: HashMap<SocketAddr, BTreeSet<Upid>>,
    by_linker: HashMap<Arc<str>, BTreeSet<Upid>>,
}

impl Links {
    fn add(&mut self, linker: &Arc<str>, target: &Upid, local_addr: SocketAddr) {
        let key = target.with_incarnation(Incarnation::ANY);
        let linkers = self.by_target.entry(key.clone()).or_default();
        linkers.retain(|(id, _)| id != linker);
        // Nearly every target has one linker: room for one, not four.
        linkers.reserve_exact(1);
        linkers.push((linker.clone(), target.clone()));
        self.by_linker
            .entry(linker.clone())
            .or_default()
            .insert(key.clone());
        if target.addr() != local_addr {
            self.by_peer.entry(target.addr()).or_default().insert(key);
        }
    }

    fn remove(&mut self, linker: &str, target: &Upid) {
        let key = target.with_incarnation(Incarnation::ANY);
        if let Some(linkers) = self.by_target.get_mut(&key) {
            linkers.retain(|(id, _)| &**id != linker);
            if linkers.is_empty() {
                self.by_target.remove(&key);
                if let Some(targets) = self.by_peer.get_mut(&key.addr()) {
                    targets.remove(&key);
                    if targets.is_empty() {
                        self.by_peer.remove(&key.addr());
                    }
                }
            }
        }
        if let Some(targets) = self.by_linker.get_mut(linker) {
            targets.remove(&key);
            if targets.is_empty() {
                self.by_linker.remove(linker);
            }
        }
    }

    /// Removes every link to `target` and returns (linker, target as linked).
    fn take_target(&mut self, target: &Upid) -> Vec<(Arc<str>, Upid)> {
        let key = target.with_incarnation(Incarnation::ANY);
        let linkers = self.by_target.remove(&key).unwrap_or_default();
        for (linker, _) in &linkers {
            if let Some(targets) = self.by_linker.get_mut(linker) {
                targets.remove(&key);
                if targets.is_empty() {
                    self.by_linker.remove(linker);
                }
            }
        }
        if let Some(targets) = self.by_peer.get_mut(&key.addr()) {
            targets.remove(&key);
            if targets.is_empty() {
                self.by_peer.remove(&key.addr());
            }
        }
        linkers
    }

    /// Removes every link to a process on the node at `addr`.
    fn take_peer(&mut self, addr: SocketAddr) -> Vec<(Arc<str>, Upid)> {
        let targets = self.by_peer.remove(&addr).unwrap_or_default();
        targets
            .iter()
            .flat_map(|target| self.take_target(target))
            .collect()
    }

    /// Forgets the links `linker` made (it stopped).
    fn drop_linker(&mut self, linker: &str) {
        let targets = self.by_linker.remove(linker).unwrap_or_default();
        for target in targets {
            self.remove(linker, &target);
        }
    }
}

struct NodeCore {
    addr: SocketAddr,
    incarnation: Incarnation,
    identity: Arc<PeerIdentity>,
    settings: NodeSettings,
    registry: RwLock<HashMap<Arc<str>, Entry>>,
    links: Mutex<Links>,
    /// The incarnation each connected peer announced.
    peers: Mutex<HashMap<SocketAddr, Incarnation>>,
    failures: Mutex<VecDeque<(Upid, Failure)>>,
    metrics: Arc<Metrics>,
    next_serial: AtomicU64,
}

/// Locks a mutex, recovering the data if a panic elsewhere poisoned it:
/// every critical section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NodeCore {
    fn registry(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Entry>> {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn signal(&self, to_id: &str, signal: Signal) {
        if let Some(entry) = self.registry().get(to_id) {
            // Signals skip the mailbox bound: there are at most as many as
            // the links a process made, and losing an exit would leave a
            // process waiting on a peer that is gone.
            entry.signals.signal(signal);
        }
    }

    fn fire_exits(&self, exits: Vec<(Arc<str>, Upid)>) {
        for (linker, target) in exits {
            self.signal(&linker, Signal::Exited(target));
        }
    }
}

impl Inbound for NodeCore {
    fn deliver(
        &self,
        peer: &PeerInfo,
        senders: &mut SenderCache,
        body: Bytes,
    ) -> Result<Option<Pending>, InboundError> {
        let (header, payload) = codec::decode_envelope(&body)?;
        let from = match senders
            .get(peer, header.from)
            .map_err(|e| InboundError::InvalidSender(e.to_string()))?
        {
            Sender::Allowed(from) => from,
            Sender::Refused { first } => {
                Metrics::bump(&self.metrics.dropped_impersonation);
                if first {
                    warn!(
                        peer = %peer.addr,
                        identity = %peer.identity,
                        sender = header.from,
                        to = %header.to,
                        "dropping messages sent under a process id the peer's certificate does not allow"
                    );
                }
                return Ok(None);
            }
        };
        if !header.to_incarnation.admits(self.incarnation) {
            Metrics::bump(&self.metrics.dropped_stale_incarnation);
            debug!(from = %from, to = %header.to, "dropped message for an earlier incarnation");
            return Ok(None);
        }
        let registry = self.registry();
        let Some(entry) = registry.get(header.to) else {
            Metrics::bump(&self.metrics.dropped_unknown_process);
            debug!(from = %from, to = %header.to, "dropped message for unknown process");
            return Ok(None);
        };
        entry.remote.deliver(
            from,
            Some(peer.identity.clone()),
            payload,
            self.settings.remote_mailbox_wait,
            &self.metrics,
        )
    }

    fn peer_up(&self, peer: &PeerInfo) {
        let previous = lock(&self.peers).insert(peer.addr, peer.incarnation);
        if let Some(previous) = previous.filter(|previous| *previous != peer.incarnation) {
            info!(peer = %peer.addr, old = %previous, new = %peer.incarnation, "peer node restarted");
            let exits = lock(&self.links).take_peer(peer.addr);
            self.fire_exits(exits);
        }
    }

    fn peer_down(&self, addr: SocketAddr, incarnation: Option<Incarnation>, reason: &str) {
        {
            let mut peers = lock(&self.peers);
            match (incarnation, peers.get(&addr)) {
                // A connection of an earlier life closing late: its links
                // already fired when the new life connected.
                (Some(lost), Some(current)) if lost != *current => return,
                _ => {
                    peers.remove(&addr);
                }
            }
        }
        let exits = lock(&self.links).take_peer(addr);
        if !exits.is_empty() {
            info!(peer = %addr, reason, links = exits.len(), "peer node lost; notifying linked processes");
        }
        self.fire_exits(exits);
    }
}

/// A handle to this process's node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    core: Arc<NodeCore>,
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.core.addr)
            .field("incarnation", &self.core.incarnation)
            .finish_non_exhaustive()
    }
}

fn random_incarnation() -> Incarnation {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let random = ring::rand::SystemRandom::new();
    // The system source failing is not recoverable in any useful way; fall
    // back to the clock, which still differs between restarts.
    if random.fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1);
        bytes = nanos.to_le_bytes();
    }
    Incarnation(u64::from_le_bytes(bytes).max(1))
}

impl Node {
    /// Starts a node on QUIC. Must run inside an actix system.
    pub async fn bind(config: NodeConfig) -> Result<Node, NodeError> {
        Node::start_quic(config, None, None)
    }

    /// Starts a node on QUIC over `socket` instead of a UDP socket of the
    /// operating system: the simulation runs the real transport over a
    /// [`crate::transport::sim_udp::SimUdpNetwork`] this way. `observer`,
    /// if given, sees every frame the node sends and receives. Must run
    /// inside an actix system.
    pub fn bind_on_socket(
        config: NodeConfig,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        observer: Option<crate::transport::sim::Observer>,
    ) -> Result<Node, NodeError> {
        Node::start_quic(config, Some(socket), observer)
    }

    fn start_quic(
        config: NodeConfig,
        socket: Option<Arc<dyn quinn::AsyncUdpSocket>>,
        observer: Option<crate::transport::sim::Observer>,
    ) -> Result<Node, NodeError> {
        let NodeConfig {
            listen,
            tls,
            settings,
            quic,
        } = config;
        if settings.max_frame_bytes > codec::MAX_FRAME_BYTES_LIMIT || settings.max_frame_bytes < 64
        {
            return Err(NodeError::InvalidConfig(format!(
                "max_frame_bytes must be between 64 and {}, not {}",
                codec::MAX_FRAME_BYTES_LIMIT,
                settings.max_frame_bytes
            )));
        }
        let incarnation = settings.incarnation.unwrap_or_else(random_incarnation);
        let identity = Arc::new(tls.identity());
        let transport = QuicTransport::bind(listen, socket, &tls, quic, &settings, incarnation)?;
        let metrics = transport.metrics();
        let transport: Arc<dyn Transport> = match observer {
            Some(observer) => Arc::new(crate::transport::tap::Tap::new(
                Arc::new(transport),
                observer,
            )),
            None => Arc::new(transport),
        };
        Ok(Node::with_transport(
            transport,
            metrics,
            identity,
            NodeSettings {
                incarnation: Some(incarnation),
                ..settings
            },
        ))
    }

    /// Starts a node on any transport (the simulated network uses this).
    /// The transport counts its traffic into `metrics`, which the node
    /// shares.
    pub fn with_transport(
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        identity: Arc<PeerIdentity>,
        settings: NodeSettings,
    ) -> Node {
        let incarnation = settings.incarnation.unwrap_or_else(random_incarnation);
        let core = Arc::new(NodeCore {
            addr: transport.local_addr(),
            incarnation,
            identity,
            settings,
            registry: RwLock::new(HashMap::new()),
            links: Mutex::new(Links::default()),
            peers: Mutex::new(HashMap::new()),
            failures: Mutex::new(VecDeque::new()),
            metrics,
            next_serial: AtomicU64::new(1),
        });
        transport.start(core.clone());
        info!(addr = %core.addr, incarnation = %core.incarnation, identity = %core.identity, "node started");
        Node { core, transport }
    }

    /// The address this node's processes are named by.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr
    }

    /// This life of the node.
    pub fn incarnation(&self) -> Incarnation {
        self.core.incarnation
    }

    /// This node's certificate identity.
    pub fn identity(&self) -> Arc<PeerIdentity> {
        self.core.identity.clone()
    }

    /// The address process `id` has (or would have) on this node.
    pub fn pid(&self, id: &str) -> Result<Upid, UpidParseError> {
        Upid::new(id, self.core.addr, self.core.incarnation)
    }

    /// Spawns a top-level process under `id`. `factory` builds its state,
    /// now and after every restart. Must run inside an actix system.
    pub fn spawn<P: Process>(
        &self,
        id: &str,
        factory: impl Fn() -> P + 'static,
        options: SpawnOptions,
    ) -> Result<Upid, SpawnError> {
        process::spawn(self, id, Box::new(factory), options, None)
    }

    /// An [`Inbox`]: a process whose messages are read with `recv().await`
    /// from ordinary async code (clients, tests).
    pub fn inbox<M: Message>(&self, id: &str, capacity: usize) -> Result<Inbox<M>, SpawnError> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        let pid = self.spawn(
            id,
            move || InboxProcess::new(sender.clone()),
            SpawnOptions::default()
                .restart(RestartPolicy::never())
                .mailbox_capacity(capacity),
        )?;
        Ok(Inbox::new(self.clone(), pid, receiver))
    }

    /// Sends `message` from `from` to `to`; see [`crate::ProcessContext::send`].
    pub fn send<M: Message>(&self, from: &Upid, to: &Upid, message: M) -> Result<(), SendError> {
        if to.addr() == self.core.addr {
            return self.send_local(from, to, message);
        }
        let header = EnvelopeHeader {
            to: to.id(),
            from: from.id(),
            to_incarnation: to.incarnation(),
        };
        let kind = message.kind();
        let bytes = codec::envelope_frame(&header, &message, self.core.settings.max_frame_bytes)
            .map_err(|error| {
                Metrics::bump(&self.core.metrics.dropped_too_large);
                SendError::TooLarge(error)
            })?;
        self.transport.send(OutboundFrame {
            to: to.clone(),
            from: from.clone(),
            kind,
            bytes,
        })?;
        Metrics::bump(&self.core.metrics.messages_sent_remote);
        Ok(())
    }

    pub(crate) fn send_local<M: Message>(
        &self,
        from: &Upid,
        to: &Upid,
        message: M,
    ) -> Result<(), SendError> {
        let metrics = &self.core.metrics;
        let result = if !to.incarnation().admits(self.core.incarnation) {
            Err(SendError::StaleIncarnation(to.clone()))
        } else {
            match self.core.registry().get(to.id()) {
                Some(entry) => process::deliver_local(entry, from, message),
                None => Err(SendError::UnknownProcess(to.clone())),
            }
        };
        match &result {
            Ok(()) => Metrics::bump(&metrics.messages_sent_local),
            Err(SendError::StaleIncarnation(_)) => {
                Metrics::bump(&metrics.dropped_stale_incarnation)
            }
            Err(SendError::UnknownProcess(_)) => {
                debug!(from = %from, to = %to, "dropped message for unknown process");
                Metrics::bump(&metrics.dropped_unknown_process)
            }
            Err(SendError::MailboxFull(_)) => Metrics::bump(&metrics.dropped_mailbox_full),
            Err(SendError::WrongType { .. }) => Metrics::bump(&metrics.dropped_wrong_type),
            Err(_) => {}
        }
        result
    }

    /// The mailbox of local process `to` if it receives `M`, for callers
    /// that send to it often and keep it.
    pub(crate) fn local_route<M: Message>(&self, to: &Upid) -> Option<MailboxSender<M>> {
        if !to.incarnation().admits(self.core.incarnation) {
            return None;
        }
        self.core
            .registry()
            .get(to.id())?
            .local
            .downcast_ref::<MailboxSender<M>>()
            .cloned()
    }

    pub(crate) fn identity_ref(&self) -> &PeerIdentity {
        &self.core.identity
    }

    /// Links `linker` (a process on this node) to `target`; see
    /// [`crate::ProcessContext::link`]. Linking to a local process that is
    /// not running reports its exit at once.
    pub fn link(&self, linker: &Upid, target: &Upid) {
        if target.addr() == self.core.addr {
            let running = target.incarnation().admits(self.core.incarnation)
                && self.core.registry().contains_key(target.id());
            if !running {
                self.core
                    .signal(linker.id(), Signal::Exited(target.clone()));
                return;
            }
        }
        lock(&self.core.links).add(linker.id_shared(), target, self.core.addr);
        if target.addr() != self.core.addr {
            self.transport.watch(target.addr());
        }
    }

    /// Removes a link.
    pub fn unlink(&self, linker: &Upid, target: &Upid) {
        lock(&self.core.links).remove(linker.id(), target);
    }

    /// Asks a local process to stop.
    pub fn stop(&self, pid: &Upid) {
        self.core.signal(pid.id(), Signal::Stop);
    }

    /// Connects to the node at `peer` now, or says why it cannot.
    pub async fn connect(&self, peer: SocketAddr) -> Result<PeerInfo, TransportError> {
        self.transport.connect(peer).await
    }

    /// The node's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.core.metrics.snapshot()
    }

    pub(crate) fn metrics_ref(&self) -> &Metrics {
        &self.core.metrics
    }

    /// Processes whose supervisor gave up recently, oldest first.
    pub fn failures(&self) -> Vec<(Upid, Failure)> {
        lock(&self.core.failures).iter().cloned().collect()
    }

    /// The processes running here, sorted.
    pub fn processes(&self) -> Vec<Upid> {
        let mut pids: Vec<Upid> = self
            .core
            .registry()
            .values()
            .map(|entry| entry.pid.clone())
            .collect();
        pids.sort();
        pids
    }

    /// Whether a process `id` runs here.
    pub fn is_running(&self, id: &str) -> bool {
        self.core.registry().contains_key(id)
    }

    /// Shuts down and waits (at most `limit`) until peers have been told
    /// the connections are closed, so they learn of it at once rather than
    /// at their idle timeout. Call it before a program exits.
    pub async fn close(&self, limit: std::time::Duration) {
        self.shutdown();
        // Let stopping processes run their last callbacks first.
        tokio::task::yield_now().await;
        let _ = tokio::time::timeout(limit, self.transport.closed()).await;
    }

    /// Stops every process and closes every connection.
    pub fn shutdown(&self) {
        let pids = self.processes();
        for pid in &pids {
            self.stop(pid);
        }
        self.transport.shutdown();
    }

    pub(crate) fn default_mailbox_capacity(&self) -> usize {
        self.core.settings.mailbox_capacity
    }

    pub(crate) fn signal(&self, to: &Upid, signal: Signal) {
        if to.addr() == self.core.addr {
            self.core.signal(to.id(), signal);
        }
    }

    pub(crate) fn record_failure(&self, pid: &Upid, failure: &Failure) {
        let mut failures = lock(&self.core.failures);
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back((pid.clone(), failure.clone()));
    }

    /// Registers a process: `make` builds the entry given its serial. Holds
    /// the registry lock only around the check and the insert.
    pub(crate) fn register(
        &self,
        pid: &Upid,
        make: impl FnOnce(u64) -> Entry,
    ) -> Result<(), SpawnError> {
        let mut registry = self
            .core
            .registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if registry.contains_key(pid.id()) {
            return Err(SpawnError::AlreadyRunning(pid.clone()));
        }
        let serial = self.core.next_serial.fetch_add(1, Ordering::Relaxed);
        registry.insert(pid.id_shared().clone(), make(serial));
        Ok(())
    }

    /// Removes a stopped process (if `serial` is still the registered
    /// one), tells the processes linked to it, and forgets its own links.
    pub(crate) fn deregister(&self, pid: &Upid, serial: u64) {
        let removed = {
            let mut registry = self
                .core
                .registry
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match registry.get(pid.id()) {
                Some(entry) if entry.serial == serial => registry.remove(pid.id()),
                _ => None,
            }
        };
        if removed.is_none() {
            return;
        }
        let exits = {
            let mut links = lock(&self.core.links);
            links.drop_linker(pid.id());
            links.take_target(pid)
        };
        self.core.fire_exits(exits);
    }
}
