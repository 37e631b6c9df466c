//! The real transport: QUIC (quinn) with mutual TLS.
//!
//! One connection per peer node, one bidirectional stream per connection:
//! the dialling node opens it, each side writes a [`Hello`] and then its
//! frames on its half, so each direction is one long-lived ordered stream.
//! The node that accepts a connection adopts it for its own sends to that
//! peer, so two nodes normally share one connection; if both dial at once
//! each writes on its own and reads both, and every direction still uses
//! exactly one stream, which keeps it ordered.
//!
//! Each peer has a bounded send queue (frames and bytes) drained by one
//! writer task; a full queue refuses the send. A send does not wake its
//! writer itself: it marks the peer on the transport's doorbell, and one
//! task on QUIC's runtime wakes the writers of every marked peer. So a
//! process that sends to a hundred peers in one callback wakes QUIC's
//! thread once (at the callback's end, see `hold_wakes`), not once a
//! peer. The reader cuts frames with
//! [`FrameDecoder`] and hands them to the node; a malformed frame closes
//! that peer's connection with the reason and nothing else. A dead peer is
//! noticed by QUIC keep-alives and the idle timeout (no TCP-like reset
//! exists); then the queue's contents are dropped and counted, the node is
//! told (links fire), and the next send dials again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, ConnectionError, RecvStream, SendStream, TransportErrorCode, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

use super::{
    Inbound, OutboundFrame, PeerInfo, SendError, SenderCache, Transport, TransportError,
    TransportFuture,
};
use crate::codec::{self, FrameDecoder, Hello};
use crate::metrics::Metrics;
use crate::node::{NodeError, NodeSettings};
use crate::tls::{self, PeerIdentity, QuicTimeouts, TlsMaterial};
use crate::upid::Incarnation;

/// Application close codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_MALFORMED: u32 = 1;
const CLOSE_REPLACED: u32 = 2;

/// TLS alert 120, no_application_protocol, as a QUIC crypto error: what a
/// peer with another protocol version (ALPN) gets.
const NO_APPLICATION_PROTOCOL_ALERT: u8 = 120;

/// Most frames written in one batch.
const WRITE_BATCH_FRAMES: usize = 1024;

/// Bytes gathered before a batch is written. Frames are copied into one
/// contiguous chunk: quinn spends far more per chunk than per byte when a
/// stream's send buffer holds many small chunks.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Largest chunk read from a stream at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Settings of the QUIC transport.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// How long dialling and the hello exchange may take.
    pub connect_timeout: Duration,
    /// A connection silent for this long is dead. With the keep-alive
    /// below, a killed peer is noticed within about this long.
    pub idle_timeout: Duration,
    /// Keep-alive interval on quiet connections; below `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// Most frames queued for one peer; more are refused.
    pub send_queue_frames: usize,
    /// Most bytes queued for one peer, each frame counted with what
    /// holding it costs beside its bytes ([`QUEUED_FRAME_COST_BYTES`]); more
    /// are refused. This is what bounds a slow peer's queue: the frame
    /// count is set high enough that a burst of small messages (status
    /// updates to a framework) is held rather than dropped.
    pub send_queue_bytes: usize,
    /// Protocol version announced in the ALPN. Only tests of version skew
    /// set anything but [`codec::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Whether QUIC runs on a thread of its own (connections, the
    /// endpoint, encryption, reading and cutting frames and decoding
    /// messages into mailboxes) rather than on the thread that binds the
    /// node. The daemons' nodes do: at 50,000 agents quinn alone took a
    /// fifth of the master's thread, and tokio's work for it more. Off by
    /// default, so that tests and simulations on tokio's paused clock
    /// keep one clock.
    pub own_thread: bool,
}

impl Default for QuicConfig {
    fn default() -> QuicConfig {
        QuicConfig {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(1),
            send_queue_frames: 1 << 20,
            send_queue_bytes: 64 << 20,
            protocol_version: codec::PROTOCOL_VERSION,
            own_thread: false,
        }
    }
}

#[derive(Debug, Clone)]
enum DialStatus {
    Pending,
    Up(PeerInfo),
    Failed(TransportError),
}

/// Everything the transport knows about one peer.
struct Slot {
    generation: u64,
    queue: mpsc::Sender<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    /// How its writer is woken; declared after `queue`, so that dropping
    /// the slot closes the queue before it wakes the writer.
    signal: WriterSignal,
    connection: Option<Connection>,
    incarnation: Option<Incarnation>,
    status: Arc<watch::Sender<DialStatus>>,
    /// Frames refused for a full queue since the last warning, and when
    /// that was: a peer that falls behind is named at most once every
    /// [`QUEUE_WARNING_EVERY`], with what was dropped meanwhile, however
    /// its queue fills and drains.
    refused: u64,
    warned_at: Option<Instant>,
}

/// What a queued frame costs beside its bytes (its handle in the queue
/// and its allocation's bookkeeping), counted against
/// [`QuicConfig::send_queue_bytes`].
pub const QUEUED_FRAME_COST_BYTES: usize = 64;

/// Longest a thread of QUIC's own waits, when its node is gone, for its
/// peers to hear that its connections are closed.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Least time between two warnings of one peer's full send queue.
const QUEUE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What a writer task drains.
struct Outbox {
    queue: mpsc::Receiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    signal: Arc<PeerSignal>,
}

/// A slot's hold on its writer's signal. Its writer waits on the signal,
/// not the queue: dropped (after the queue's sender, the slot's field
/// before it), it wakes the writer to find the queue closed once drained
/// and finish its stream.
struct WriterSignal(Arc<PeerSignal>);

impl Drop for WriterSignal {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// How one peer's writer is woken. It waits on `wake` (never on its queue,
/// whose wake would be a system call from the sending thread each time)
/// and drains the queue without waiting.
#[derive(Default)]
struct PeerSignal {
    /// On the doorbell's list since the last time its writer was woken.
    marked: AtomicBool,
    wake: Notify,
}

/// The peers with frames queued since their writers were last woken, and
/// the one wake of QUIC's runtime that has them woken.
#[derive(Default)]
struct Doorbell {
    marked: Mutex<Vec<Arc<PeerSignal>>>,
    /// A wake of the ringer is due or under way.
    rung: AtomicBool,
    ringer: Notify,
    /// The transport is gone: the ringer ends.
    closed: AtomicBool,
}

impl Doorbell {
    /// Notes that `peer` has frames queued; the sender then rings.
    fn mark(&self, peer: &Arc<PeerSignal>) {
        if !peer.marked.swap(true, Ordering::AcqRel) {
            lock(&self.marked).push(peer.clone());
        }
    }

    /// Has the ringer wake every marked peer's writer, unless it is due to.
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.ringer.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ringer.notify_one();
    }

    /// Runs on QUIC's runtime, where waking a writer is a push onto the
    /// runtime's own queue.
    async fn run_ringer(self: Arc<Self>) {
        let mut woken = Vec::new();
        loop {
            self.ringer.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // Cleared before the list is taken: a peer marked after this
            // rings again.
            self.rung.swap(false, Ordering::AcqRel);
            std::mem::swap(&mut *lock(&self.marked), &mut woken);
            for peer in woken.drain(..) {
                // A swap, so that a sender that found it marked (and left
                // the wake to this) is ordered before the wake.
                peer.marked.swap(false, Ordering::AcqRel);
                peer.wake.notify_one();
            }
        }
    }
}

thread_local! {
    /// Callbacks on this thread under way that hold their sends' wakes
    /// ([`hold_wakes`]), and the doorbells to ring when the last ends.
    static HELD_WAKES: RefCell<(usize, Vec<Arc<Doorbell>>)> = const { RefCell::new((0, Vec::new())) };
}

/// Holds the wakes of QUIC's thread for frames sent on this thread until
/// the guard is dropped: a process's callback is run under one, so all it
/// sends wakes QUIC's thread once, at its end, rather than once for each
/// peer while the callback still runs. Guards nest; the outermost rings.
pub(crate) fn hold_wakes() -> WakeHold {
    HELD_WAKES.with(|held| held.borrow_mut().0 += 1);
    WakeHold(std::marker::PhantomData)
}

/// See [`hold_wakes`]. Ends on the thread it was taken on (not `Send`).
pub(crate) struct WakeHold(std::marker::PhantomData<*const ()>);

impl Drop for WakeHold {
    fn drop(&mut self) {
        let due = HELD_WAKES.with(|held| {
            let mut held = held.borrow_mut();
            held.0 -= 1;
            if held.0 == 0 {
                std::mem::take(&mut held.1)
            } else {
                Vec::new()
            }
        });
        for doorbell in due {
            doorbell.ring();
        }
    }
}

/// Rings `doorbell` now, or when this thread's callback ends.
fn ring_or_hold(doorbell: &Arc<Doorbell>) {
    let now = HELD_WAKES.with(|held| {
        let mut held = held.borrow_mut();
        if held.0 == 0 {
            return true;
        }
        if !held.1.iter().any(|due| Arc::ptr_eq(due, doorbell)) {
            held.1.push(doorbell.clone());
        }
        false
    });
    if now {
        doorbell.ring();
    }
}

struct Shared {
    endpoint: quinn::Endpoint,
    /// The runtime QUIC runs on (the one the node was bound in, or its
    /// own): sends may come from any thread, and the tasks they start
    /// belong there.
    runtime: tokio::runtime::Handle,
    local_addr: SocketAddr,
    hello: Bytes,
    config: QuicConfig,
    max_frame_bytes: usize,
    metrics: Arc<Metrics>,
    inbound: OnceLock<Arc<dyn Inbound>>,
    peers: Mutex<HashMap<SocketAddr, Slot>>,
    doorbell: Arc<Doorbell>,
    next_generation: AtomicU64,
    closing: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.doorbell.close();
    }
}

/// The QUIC transport. Cheap to clone.
#[derive(Clone)]
pub struct QuicTransport {
    shared: Arc<Shared>,
    /// The thread QUIC runs on, if it has one of its own: it stops once
    /// every handle is gone.
    _thread: Option<Arc<OwnThread>>,
}

/// A tokio runtime for QUIC alone, on a thread of its own once started.
/// Dropped before it is (a bind that failed, a thread that could not be
/// started), it is shut down without waiting, which may be done inside
/// another runtime.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn new() -> std::io::Result<OwnRuntime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("quic")
            .build()
            .map(|runtime| OwnRuntime(Some(runtime)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }

    /// Runs the runtime on a new thread until the handle returned is
    /// dropped; then it closes `endpoint`, telling peers now rather than
    /// at their idle timeout, and waits for that at most
    /// [`CLOSE_WAIT`]. If the thread cannot be started the runtime is
    /// shut down where it is.
    fn start(self, endpoint: quinn::Endpoint) -> std::io::Result<OwnThread> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("quic".into())
            .spawn(move || {
                let mut own = self;
                let Some(runtime) = own.0.take() else {
                    return;
                };
                runtime.block_on(async {
                    let _ = stopped.await;
                    endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"node gone");
                    let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
                });
            })?;
        Ok(OwnThread { _stop: stop })
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What stops QUIC's own thread when dropped.
struct OwnThread {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a handshake or a connection failed, in words an operator can act on.
fn describe(addr: SocketAddr, error: &ConnectionError, version: u32) -> TransportError {
    let code = match error {
        ConnectionError::TransportError(error) => Some(error.code),
        ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        _ => None,
    };
    if code == Some(TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL_ALERT)) {
        return TransportError::VersionMismatch {
            addr,
            ours: version,
        };
    }
    match error {
        ConnectionError::TimedOut => TransportError::Unreachable {
            addr,
            reason: "no answer (timed out)".into(),
        },
        ConnectionError::TransportError(_) | ConnectionError::ConnectionClosed(_) => {
            TransportError::Handshake {
                addr,
                reason: error.to_string(),
            }
        }
        _ => TransportError::Unreachable {
            addr,
            reason: error.to_string(),
        },
    }
}

fn peer_identity(connection: &Connection) -> Option<PeerIdentity> {
    let any = connection.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(PeerIdentity::from_certificate)
}

/// The address an accepted peer is known by: the one it announced, which
/// must be the one its packets come from (a node dials from the socket it
/// listens on). Otherwise any certificate holder could announce another
/// node's address, have replies for that node sent to itself and send
/// under that node's name. A peer listening on a wildcard address is
/// known by where it connects from.
fn proven_listen_address(
    announced: SocketAddr,
    remote: SocketAddr,
) -> Result<SocketAddr, TransportError> {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let (announced_c, remote_c) = (canonical(announced), canonical(remote));
    if announced_c == remote_c {
        return Ok(remote_c);
    }
    if announced.ip().is_unspecified() && announced.port() == remote.port() {
        return Ok(remote_c);
    }
    Err(TransportError::Handshake {
        addr: remote,
        reason: format!(
            "the peer announces listen address {announced} but connects from {remote}; \
             a node must dial from the address it listens on"
        ),
    })
}

/// Reads the peer's hello; frames after it stay in `decoder`.
async fn read_hello(
    addr: SocketAddr,
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Hello, TransportError> {
    let protocol = |reason: String| TransportError::Protocol { addr, reason };
    loop {
        if let Some(frame) = decoder.next_frame().map_err(|e| protocol(e.to_string()))? {
            return codec::decode_hello(&frame).map_err(|e| protocol(e.to_string()));
        }
        match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Err(protocol("stream ended before the hello".into())),
            Err(error) => {
                return Err(TransportError::Unreachable {
                    addr,
                    reason: error.to_string(),
                });
            }
        }
    }
}

/// How a connection's reading ended.
enum ReadEnd {
    Lost(String),
    Malformed(String),
    Finished,
}

/// A connection that completed its handshake.
struct Established {
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    peer: PeerInfo,
}

impl QuicTransport {
    /// Binds the UDP socket, or runs on `socket` (a simulated one) when
    /// given. Must run inside a tokio runtime.
    pub(crate) fn bind(
        listen: SocketAddr,
        socket: Option<Arc<dyn quinn::AsyncUdpSocket>>,
        tls: &TlsMaterial,
        config: QuicConfig,
        settings: &NodeSettings,
        incarnation: Incarnation,
    ) -> Result<QuicTransport, NodeError> {
        if listen.ip().is_unspecified() {
            return Err(NodeError::InvalidConfig(format!(
                "listen address {listen} is unspecified; give the address peers reach this node at"
            )));
        }
        if config.keep_alive_interval >= config.idle_timeout {
            return Err(NodeError::InvalidConfig(format!(
                "keep-alive interval ({:?}) must be shorter than the idle timeout ({:?})",
                config.keep_alive_interval, config.idle_timeout
            )));
        }
        if config.send_queue_frames == 0 || config.send_queue_bytes <= QUEUED_FRAME_COST_BYTES {
            return Err(NodeError::InvalidConfig(format!(
                "send queue limits must be positive, and the bytes more than the {QUEUED_FRAME_COST_BYTES} counted for each frame"
            )));
        }
        let own = match config.own_thread {
            true => Some(OwnRuntime::new().map_err(|source| NodeError::Bind {
                addr: listen,
                source,
            })?),
            false => None,
        };
        let runtime = match own.as_ref().and_then(OwnRuntime::handle) {
            Some(runtime) => runtime.clone(),
            None => tokio::runtime::Handle::try_current().map_err(|_| {
                NodeError::InvalidConfig(
                    "a node must be bound inside a tokio runtime (an actix system)".into(),
                )
            })?,
        };
        // quinn starts the endpoint's task on the runtime it is made in.
        let entered = runtime.enter();
        let timeouts = QuicTimeouts {
            idle_timeout: config.idle_timeout,
            keep_alive_interval: config.keep_alive_interval,
        };
        let (server, client) = tls::quic_configs(tls, config.protocol_version, &timeouts)?;
        let endpoint = match socket {
            None => quinn::Endpoint::server(server, listen),
            Some(socket) => quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                Some(server),
                socket,
                Arc::new(quinn::TokioRuntime),
            ),
        };
        let mut endpoint = endpoint.map_err(|source| NodeError::Bind {
            addr: listen,
            source,
        })?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
            addr: listen,
            source,
        })?;
        drop(entered);
        let hello = codec::hello_frame(&Hello {
            listen: local_addr,
            incarnation,
        })
        .map_err(|e| NodeError::InvalidConfig(e.to_string()))?;
        let doorbell = Arc::new(Doorbell::default());
        runtime.spawn(doorbell.clone().run_ringer());
        let thread = match own {
            Some(own) => Some(Arc::new(own.start(endpoint.clone()).map_err(|source| {
                NodeError::Bind {
                    addr: listen,
                    source,
                }
            })?)),
            None => None,
        };
        Ok(QuicTransport {
            _thread: thread,
            shared: Arc::new(Shared {
                endpoint,
                runtime,
                local_addr,
                hello,
                config,
                max_frame_bytes: settings.max_frame_bytes,
                metrics: Arc::new(Metrics::default()),
                inbound: OnceLock::new(),
                peers: Mutex::new(HashMap::new()),
                doorbell,
                next_generation: AtomicU64::new(1),
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// The counters this transport writes to, shared with its node.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }
}

impl Shared {
    fn inbound(&self) -> Option<&Arc<dyn Inbound>> {
        self.inbound.get()
    }

    /// Counts a frame dropped for `addr`'s full send queue.
    fn refuse(&self, slot: &mut Slot, addr: SocketAddr) -> SendError {
        Metrics::bump(&self.metrics.dropped_send_queue_full);
        slot.refused += 1;
        let now = Instant::now();
        if slot
            .warned_at
            .is_none_or(|then| now.duration_since(then) >= QUEUE_WARNING_EVERY)
        {
            warn!(
                peer = %addr,
                dropped = slot.refused,
                frames = self.config.send_queue_frames,
                bytes = self.config.send_queue_bytes,
                "dropping messages to a peer that does not keep up (or is not connected yet): its send queue is full; dropped counts those since the last such warning"
            );
            slot.refused = 0;
            slot.warned_at = Some(now);
        }
        SendError::QueueFull(addr)
    }

    fn new_slot(&self, status: DialStatus) -> (Slot, Outbox) {
        let (sender, receiver) = mpsc::channel(self.config.send_queue_frames);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let signal = Arc::new(PeerSignal::default());
        let slot = Slot {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            queue: sender,
            queued_bytes: queued_bytes.clone(),
            signal: WriterSignal(signal.clone()),
            connection: None,
            incarnation: None,
            status: Arc::new(watch::channel(status).0),
            refused: 0,
            warned_at: None,
        };
        let outbox = Outbox {
            queue: receiver,
            queued_bytes,
            signal,
        };
        (slot, outbox)
    }

    /// A slot for `addr` whose connection is being dialled. Called with the
    /// peers lock held.
    fn dial(self: &Arc<Self>, addr: SocketAddr) -> Slot {
        let (slot, outbox) = self.new_slot(DialStatus::Pending);
        let shared = self.clone();
        let generation = slot.generation;
        let status = slot.status.clone();
        self.runtime
            .spawn(async move { shared.dial_and_run(addr, generation, outbox, status).await });
        slot
    }

    async fn handshake_out(&self, addr: SocketAddr) -> Result<Established, TransportError> {
        let version = self.config.protocol_version;
        let connecting = self.endpoint.connect(addr, tls::SERVER_NAME).map_err(|e| {
            TransportError::Unreachable {
                addr,
                reason: e.to_string(),
            }
        })?;
        let connection = connecting.await.map_err(|e| describe(addr, &e, version))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| describe(addr, &e, version))?;
        send.write_all(&self.hello)
            .await
            .map_err(|e| TransportError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
        let mut decoder = FrameDecoder::new(self.max_frame_bytes);
        let hello = read_hello(addr, &mut recv, &mut decoder).await?;
        if hello.listen != addr {
            debug!(peer = %addr, announced = %hello.listen, "peer announces another listen address");
        }
        let identity = peer_identity(&connection).ok_or_else(|| TransportError::Handshake {
            addr,
            reason: "peer presented no certificate".into(),
        })?;
        Ok(Established {
            connection,
            send,
            recv,
            decoder,
            peer: PeerInfo {
                addr,
                incarnation: hello.incarnation,
                identity: Arc::new(identity),
            },
        })
    }

    async fn dial_and_run(
        self: Arc<Self>,
        addr: SocketAddr,
        generation: u64,
        outbox: Outbox,
        status: Arc<watch::Sender<DialStatus>>,
    ) {
        let outcome = tokio::time::timeout(self.config.connect_timeout, self.handshake_out(addr))
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Unreachable {
                    addr,
                    reason: format!("no handshake within {:?}", self.config.connect_timeout),
                })
            });
        match outcome {
            Ok(established) => {
                Metrics::bump(&self.metrics.connections_opened);
                let current = {
                    let mut peers = lock(&self.peers);
                    match peers.get_mut(&addr) {
                        Some(slot) if slot.generation == generation => {
                            slot.connection = Some(established.connection.clone());
                            slot.incarnation = Some(established.peer.incarnation);
                            true
                        }
                        _ => false,
                    }
                };
                status.send_replace(DialStatus::Up(established.peer.clone()));
                debug!(peer = %addr, identity = %established.peer.identity, "connected");
                if let Some(inbound) = self.inbound() {
                    inbound.peer_up(&established.peer);
                }
                let generation = current.then_some(generation);
                self.run(established, Some(outbox), generation).await;
            }
            Err(error) => {
                if matches!(
                    error,
                    TransportError::VersionMismatch { .. }
                        | TransportError::Handshake { .. }
                        | TransportError::Protocol { .. }
                ) {
                    Metrics::bump(&self.metrics.handshake_failures);
                }
                if !self.closing.load(Ordering::Relaxed) {
                    warn!(peer = %addr, cause = %error, "cannot connect to peer");
                }
                status.send_replace(DialStatus::Failed(error.clone()));
                self.end_slot(addr, generation);
                drop(outbox);
                if let Some(inbound) = self.inbound() {
                    inbound.peer_down(addr, None, &error.to_string());
                }
            }
        }
    }

    async fn handshake_in(&self, incoming: quinn::Incoming) -> Result<Established, TransportError> {
        let remote = incoming.remote_address();
        let version = self.config.protocol_version;
        let connection = incoming.await.map_err(|e| describe(remote, &e, version))?;
        let (mut send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| describe(remote, &e, version))?;
        let mut decoder = FrameDecoder::new(self.max_frame_bytes);
        let hello = read_hello(remote, &mut recv, &mut decoder).await?;
        send.write_all(&self.hello)
            .await
            .map_err(|e| TransportError::Unreachable {
                addr: remote,
                reason: e.to_string(),
            })?;
        let identity = peer_identity(&connection).ok_or_else(|| TransportError::Handshake {
            addr: remote,
            reason: "peer presented no certificate".into(),
        })?;
        let addr = proven_listen_address(hello.listen, remote)?;
        Ok(Established {
            connection,
            send,
            recv,
            decoder,
            peer: PeerInfo {
                addr,
                incarnation: hello.incarnation,
                identity: Arc::new(identity),
            },
        })
    }

    async fn accept(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let outcome =
            tokio::time::timeout(self.config.connect_timeout, self.handshake_in(incoming))
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Unreachable {
                        addr: remote,
                        reason: "no hello in time".into(),
                    })
                });
        let established = match outcome {
            Ok(established) => established,
            Err(error) => {
                Metrics::bump(&self.metrics.handshake_failures);
                if !self.closing.load(Ordering::Relaxed) {
                    warn!(peer = %remote, cause = %error, "refused connection");
                }
                return;
            }
        };
        Metrics::bump(&self.metrics.connections_accepted);
        let peer = established.peer.clone();
        // Adopt the connection for our own sends unless we already have
        // one to this peer's current life.
        let adopted = {
            let mut peers = lock(&self.peers);
            let replace = match peers.get(&peer.addr) {
                None => true,
                Some(slot) => match slot.incarnation {
                    Some(known) if known != peer.incarnation => {
                        if let Some(old) = &slot.connection {
                            old.close(VarInt::from_u32(CLOSE_REPLACED), b"peer restarted");
                        }
                        true
                    }
                    _ => false,
                },
            };
            replace.then(|| {
                let (mut slot, outbox) = self.new_slot(DialStatus::Up(peer.clone()));
                slot.connection = Some(established.connection.clone());
                slot.incarnation = Some(peer.incarnation);
                let generation = slot.generation;
                peers.insert(peer.addr, slot);
                (outbox, generation)
            })
        };
        debug!(peer = %peer.addr, identity = %peer.identity, adopted = adopted.is_some(), "accepted connection");
        if let Some(inbound) = self.inbound() {
            inbound.peer_up(&peer);
        }
        match adopted {
            Some((outbox, generation)) => {
                self.run(established, Some(outbox), Some(generation)).await
            }
            None => self.run(established, None, None).await,
        }
    }

    /// Serves an established connection until it ends. `generation` is the
    /// slot it serves as the peer's active connection, if it does.
    async fn run(
        self: Arc<Self>,
        established: Established,
        outbox: Option<Outbox>,
        generation: Option<u64>,
    ) {
        let Established {
            connection,
            mut send,
            mut recv,
            mut decoder,
            peer,
        } = established;
        let writer = match outbox {
            Some(outbox) => Some(self.runtime.spawn(self.clone().write_loop(send, outbox))),
            None => {
                // A duplicate connection: the peer reads our half of it for
                // nothing; close it so it does not wait.
                let _ = send.finish();
                None
            }
        };
        let end = self.read_loop(&mut recv, &mut decoder, &peer).await;
        if let Some(writer) = writer {
            writer.abort();
        }
        let closing = self.closing.load(Ordering::Relaxed);
        let reason = match end {
            ReadEnd::Malformed(reason) => {
                Metrics::bump(&self.metrics.decode_errors);
                warn!(peer = %peer.addr, identity = %peer.identity, cause = %reason, "closing connection: malformed frame");
                let mut close_reason = reason.clone().into_bytes();
                close_reason.truncate(128);
                connection.close(VarInt::from_u32(CLOSE_MALFORMED), &close_reason);
                format!("malformed frame: {reason}")
            }
            ReadEnd::Lost(reason) => reason,
            ReadEnd::Finished => {
                connection.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"stream finished");
                "peer finished its stream".to_owned()
            }
        };
        if !closing {
            Metrics::bump(&self.metrics.connections_lost);
            info!(peer = %peer.addr, reason = %reason, "connection ended");
        }
        if let Some(generation) = generation {
            self.end_slot(peer.addr, generation);
            if let Some(inbound) = self.inbound() {
                inbound.peer_down(peer.addr, Some(peer.incarnation), &reason);
            }
        }
    }

    /// Removes the slot of `addr` if it is still `generation`, counting the
    /// frames still queued in it as dropped.
    fn end_slot(&self, addr: SocketAddr, generation: u64) {
        let mut peers = lock(&self.peers);
        if let Entry::Occupied(entry) = peers.entry(addr)
            && entry.get().generation == generation
        {
            let slot = entry.remove();
            let queued = slot.queue.max_capacity() - slot.queue.capacity();
            Metrics::add(&self.metrics.dropped_unreachable, queued as u64);
        }
    }

    async fn write_loop(self: Arc<Self>, mut send: SendStream, mut outbox: Outbox) {
        // A frame taken from the queue that did not fit the last batch.
        let mut carried: Option<Bytes> = None;
        loop {
            let first = match carried.take() {
                Some(frame) => frame,
                None => match outbox.queue.try_recv() {
                    Ok(frame) => frame,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        outbox.signal.wake.notified().await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                },
            };
            let (chunk, frames) = gather(first, &mut outbox.queue, &mut carried);
            let bytes = chunk.len();
            outbox
                .queued_bytes
                .fetch_sub(bytes + frames * QUEUED_FRAME_COST_BYTES, Ordering::Relaxed);
            if let Err(error) = send.write_chunk(chunk).await {
                Metrics::add(&self.metrics.dropped_unreachable, frames as u64);
                debug!(cause = %error, "write failed");
                return;
            }
            Metrics::add(&self.metrics.bytes_sent, bytes as u64);
        }
        let _ = send.finish();
    }

    async fn read_loop(
        &self,
        recv: &mut RecvStream,
        decoder: &mut FrameDecoder,
        peer: &PeerInfo,
    ) -> ReadEnd {
        let Some(inbound) = self.inbound().cloned() else {
            return ReadEnd::Lost("transport not started".into());
        };
        let mut senders = SenderCache::default();
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => match inbound.deliver(peer, &mut senders, frame) {
                        Ok(None) => {}
                        Ok(Some(pending)) => pending.await,
                        Err(error) => return ReadEnd::Malformed(error.to_string()),
                    },
                    Ok(None) => break,
                    Err(error) => return ReadEnd::Malformed(error.to_string()),
                }
            }
            match recv.read_chunk(READ_CHUNK_BYTES, true).await {
                Ok(Some(chunk)) => {
                    Metrics::add(&self.metrics.bytes_received, chunk.bytes.len() as u64);
                    decoder.push(&chunk.bytes);
                }
                Ok(None) => {
                    return match decoder.finish() {
                        Ok(()) => ReadEnd::Finished,
                        Err(error) => ReadEnd::Malformed(error.to_string()),
                    };
                }
                Err(error) => return ReadEnd::Lost(error.to_string()),
            }
        }
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.closing.load(Ordering::Relaxed) {
                incoming.refuse();
                continue;
            }
            self.runtime.spawn(self.clone().accept(incoming));
        }
    }
}

/// One write's worth of frames starting with `first`: `first` itself when
/// it is alone in the queue or large (no copy), otherwise the frames
/// waiting behind it copied into one chunk of up to [`WRITE_BATCH_BYTES`].
/// A frame that would overflow the chunk is left in `carried`.
fn gather(
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
    carried: &mut Option<Bytes>,
) -> (Bytes, usize) {
    if first.len() >= WRITE_BATCH_BYTES {
        return (first, 1);
    }
    let Ok(second) = queue.try_recv() else {
        return (first, 1);
    };
    let mut batch = bytes::BytesMut::with_capacity(WRITE_BATCH_BYTES);
    batch.extend_from_slice(&first);
    let mut frames = 1;
    let mut next = Some(second);
    while let Some(frame) = next.take() {
        if batch.len() + frame.len() > WRITE_BATCH_BYTES {
            *carried = Some(frame);
            break;
        }
        batch.extend_from_slice(&frame);
        frames += 1;
        if frames < WRITE_BATCH_FRAMES {
            next = queue.try_recv().ok();
        }
    }
    (batch.freeze(), frames)
}

impl Transport for QuicTransport {
    fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    fn start(&self, inbound: Arc<dyn Inbound>) {
        if self.shared.inbound.set(inbound).is_ok() {
            self.shared.runtime.spawn(self.shared.clone().accept_loop());
        }
    }

    fn send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Relaxed) {
            return Err(SendError::ShutDown);
        }
        let addr = frame.to.addr();
        let cost = frame.bytes.len() + QUEUED_FRAME_COST_BYTES;
        let mut peers = lock(&shared.peers);
        let slot = peers.entry(addr).or_insert_with(|| shared.dial(addr));
        if slot.queued_bytes.load(Ordering::Relaxed) + cost > shared.config.send_queue_bytes {
            return Err(shared.refuse(slot, addr));
        }
        let mut bytes = frame.bytes;
        for _ in 0..2 {
            match slot.queue.try_send(bytes) {
                Ok(()) => {
                    slot.queued_bytes.fetch_add(cost, Ordering::Relaxed);
                    shared.doorbell.mark(&slot.signal.0);
                    drop(peers);
                    ring_or_hold(&shared.doorbell);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(shared.refuse(slot, addr));
                }
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    // The connection ended and its slot is about to go:
                    // start the next connection now.
                    *slot = shared.dial(addr);
                    bytes = returned;
                }
            }
        }
        Metrics::bump(&shared.metrics.dropped_unreachable);
        Err(SendError::QueueFull(addr))
    }

    fn watch(&self, peer: SocketAddr) {
        if self.shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let shared = &self.shared;
        lock(&shared.peers)
            .entry(peer)
            .or_insert_with(|| shared.dial(peer));
    }

    fn connect(&self, peer: SocketAddr) -> TransportFuture<Result<PeerInfo, TransportError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            if shared.closing.load(Ordering::Relaxed) {
                return Err(TransportError::ShutDown);
            }
            let mut status = lock(&shared.peers)
                .entry(peer)
                .or_insert_with(|| shared.dial(peer))
                .status
                .subscribe();
            loop {
                match &*status.borrow_and_update() {
                    DialStatus::Up(info) => return Ok(info.clone()),
                    DialStatus::Failed(error) => return Err(error.clone()),
                    DialStatus::Pending => {}
                }
                if status.changed().await.is_err() {
                    // The slot is gone; its last word says why.
                    return match &*status.borrow() {
                        DialStatus::Up(info) => Ok(info.clone()),
                        DialStatus::Failed(error) => Err(error.clone()),
                        DialStatus::Pending => Err(TransportError::Unreachable {
                            addr: peer,
                            reason: "connection ended during the handshake".into(),
                        }),
                    };
                }
            }
        })
    }

    fn closed(&self) -> TransportFuture<()> {
        let endpoint = self.shared.endpoint.clone();
        Box::pin(async move { endpoint.wait_idle().await })
    }

    fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"node shutting down");
        lock(&self.shared.peers).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_wake_rings_once_when_the_outermost_hold_ends() {
        let doorbell = Arc::new(Doorbell::default());
        let outer = hold_wakes();
        let inner = hold_wakes();
        ring_or_hold(&doorbell);
        ring_or_hold(&doorbell);
        assert!(!doorbell.rung.load(Ordering::Acquire), "rung while held");
        drop(inner);
        assert!(
            !doorbell.rung.load(Ordering::Acquire),
            "rung by an inner hold"
        );
        drop(outer);
        assert!(doorbell.rung.load(Ordering::Acquire), "not rung at the end");
        HELD_WAKES.with(|held| assert!(held.borrow().1.is_empty()));
    }

    #[test]
    fn an_unheld_wake_rings_at_once() {
        let doorbell = Arc::new(Doorbell::default());
        ring_or_hold(&doorbell);
        assert!(doorbell.rung.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn the_ringer_wakes_each_marked_writer_once_and_clears_its_mark() {
        let doorbell = Arc::new(Doorbell::default());
        let ringer = tokio::spawn(doorbell.clone().run_ringer());
        let peers: Vec<Arc<PeerSignal>> = (0..3).map(|_| Arc::default()).collect();
        for peer in &peers {
            doorbell.mark(peer);
            doorbell.mark(peer);
        }
        assert_eq!(lock(&doorbell.marked).len(), 3, "a peer is listed once");
        doorbell.ring();
        let woken = async {
            for peer in &peers {
                peer.wake.notified().await;
                assert!(!peer.marked.load(Ordering::Acquire));
                // Woken once: no wake is left stored for later.
                let again = std::pin::pin!(peer.wake.notified());
                assert!(!again.enable(), "woken twice");
            }
        };
        tokio::time::timeout(Duration::from_secs(60), woken)
            .await
            .expect("every marked writer is woken");
        assert!(!doorbell.rung.load(Ordering::Acquire));
        doorbell.close();
        tokio::time::timeout(Duration::from_secs(60), ringer)
            .await
            .expect("the ringer ends when closed")
            .expect("the ringer ran");
    }
}
