//! A simulated UDP network under the real QUIC transport: datagrams
//! between sockets in one process, each delivered after a latency drawn
//! from a seeded generator on the runtime's (tokio's) clock, with loss,
//! partitions and crashed hosts. quinn runs on it through its abstract
//! socket ([`quinn::AsyncUdpSocket`]) and reads time from the same clock,
//! so on a paused clock the real connection code (handshakes, keep-alives,
//! idle timeouts, reconnects) runs in virtual time.
//!
//! Unlike [`super::sim`], which replaces the transport, this tier keeps
//! QUIC and TLS whole; their own randomness (TLS key shares) is not drawn
//! from the seed, so two runs agree on what happens, not byte for byte.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::random::SplitMix;

/// Datagrams waiting at one socket, beyond which more are dropped (as a
/// kernel's receive buffer would).
const INBOX_DATAGRAMS: usize = 4096;

struct NetState {
    random: SplitMix,
    latency: (Duration, Duration),
    loss: f64,
    /// Datagrams from the first host to the second are lost.
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// The live socket at each address.
    sockets: HashMap<SocketAddr, Arc<Inbox>>,
}

#[derive(Default)]
struct Inbox {
    datagrams: Mutex<VecDeque<(SocketAddr, Vec<u8>)>>,
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inbox {
    fn push(&self, from: SocketAddr, datagram: Vec<u8>) {
        {
            let mut datagrams = lock(&self.datagrams);
            if datagrams.len() >= INBOX_DATAGRAMS {
                return;
            }
            datagrams.push_back((from, datagram));
        }
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

/// The simulated UDP network; cloning shares it.
#[derive(Clone)]
pub struct SimUdpNetwork {
    state: Arc<Mutex<NetState>>,
}

impl fmt::Debug for SimUdpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUdpNetwork").finish_non_exhaustive()
    }
}

impl SimUdpNetwork {
    /// A network whose latencies and losses derive from `seed`: 0.1 to
    /// 1 ms per datagram, none lost.
    pub fn new(seed: u64) -> SimUdpNetwork {
        SimUdpNetwork {
            state: Arc::new(Mutex::new(NetState {
                random: SplitMix::new(seed),
                latency: (Duration::from_micros(100), Duration::from_millis(1)),
                loss: 0.0,
                cut: HashSet::new(),
                sockets: HashMap::new(),
            })),
        }
    }

    /// A socket bound at `addr`; one bound there before (a crashed host's)
    /// receives nothing more.
    pub fn bind(&self, addr: SocketAddr) -> Arc<SimUdpSocket> {
        let inbox = Arc::new(Inbox::default());
        lock(&self.state).sockets.insert(addr, inbox.clone());
        Arc::new(SimUdpSocket {
            network: self.clone(),
            addr,
            inbox,
        })
    }

    /// The host at `addr` goes silent: what it sends and what is sent to
    /// it is lost until a socket is bound there again.
    pub fn crash(&self, addr: SocketAddr) {
        lock(&self.state).sockets.remove(&addr);
    }

    /// Each datagram's latency is drawn uniformly from `low..=high`.
    pub fn set_latency(&self, low: Duration, high: Duration) {
        lock(&self.state).latency = (low, high.max(low));
    }

    /// The probability that a datagram is lost.
    pub fn set_loss(&self, probability: f64) {
        lock(&self.state).loss = probability;
    }

    /// No datagrams between `a` and `b`, either way.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = lock(&self.state);
        state.cut.insert((a, b));
        state.cut.insert((b, a));
    }

    /// Datagrams flow between `a` and `b` again.
    pub fn heal(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = lock(&self.state);
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
    }

    /// Every partition healed, nothing lost.
    pub fn heal_all(&self) {
        let mut state = lock(&self.state);
        state.cut.clear();
        state.loss = 0.0;
    }

    /// Sends one datagram from `from` (if its socket is the live one).
    fn send(&self, from: SocketAddr, sender: &Arc<Inbox>, to: SocketAddr, datagram: &[u8]) {
        let (target, latency) = {
            let mut state = lock(&self.state);
            let live = state
                .sockets
                .get(&from)
                .is_some_and(|live| Arc::ptr_eq(live, sender));
            let (low, high) = state.latency;
            let spread = high.saturating_sub(low).as_nanos() as u64;
            let latency = low + Duration::from_nanos(state.random.below(spread.saturating_add(1)));
            let lost =
                state.loss > 0.0 && (state.random.next_u64() as f64 / u64::MAX as f64) < state.loss;
            if !live || lost || state.cut.contains(&(from, to)) {
                return;
            }
            (state.sockets.get(&to).cloned(), latency)
        };
        let Some(target) = target else {
            return;
        };
        let datagram = datagram.to_vec();
        let network = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            // A host that crashed meanwhile gets nothing.
            let still = lock(&network.state)
                .sockets
                .get(&to)
                .is_some_and(|live| Arc::ptr_eq(live, &target));
            if still {
                target.push(from, datagram);
            }
        });
    }
}

/// One host's UDP socket on a [`SimUdpNetwork`].
pub struct SimUdpSocket {
    network: SimUdpNetwork,
    addr: SocketAddr,
    inbox: Arc<Inbox>,
}

impl fmt::Debug for SimUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUdpSocket")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Sending never waits: the simulated network takes every datagram.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(size) {
            self.network
                .send(self.addr, &self.inbox, transmit.destination, datagram);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let next = lock(&self.inbox.datagrams).pop_front();
        match next {
            Some((from, datagram)) => {
                let len = datagram.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram[..len]);
                *slot = RecvMeta {
                    addr: from,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
            None => {
                *lock(&self.inbox.waker) = Some(cx.waker().clone());
                // A datagram may have come between the check and storing
                // the waker.
                if lock(&self.inbox.datagrams).is_empty() {
                    Poll::Pending
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
