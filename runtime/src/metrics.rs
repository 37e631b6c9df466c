//! Counters kept by a node: what it sent, received, dropped and why.
//!
//! Plain relaxed atomics, cheap enough to bump on every message. They are
//! read as a [`MetricsSnapshot`]; the master exports them on `/metrics`
//! and in `/state`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A node's live counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
        }

        /// The counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct MetricsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }

        impl MetricsSnapshot {
            /// `(name, value)` for every counter, in declaration order.
            pub fn entries(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

counters! {
    /// Messages delivered to a process on the same node.
    messages_sent_local,
    /// Messages queued for a process on another node.
    messages_sent_remote,
    /// Messages received from other nodes and delivered.
    messages_received_remote,
    /// Messages for a process id this node does not host.
    dropped_unknown_process,
    /// Messages addressed to an earlier incarnation of this node.
    dropped_stale_incarnation,
    /// Messages a peer sent under a process id its certificate's role may
    /// not use (an agent sending as `master@`, say).
    dropped_impersonation,
    /// Messages whose target's mailbox was full (after the wait allowed for remote ones).
    dropped_mailbox_full,
    /// Messages refused because the peer's send queue was full.
    dropped_send_queue_full,
    /// Queued messages lost because the peer could not be reached or the connection broke.
    dropped_unreachable,
    /// Local messages whose type was not the one the target process receives.
    dropped_wrong_type,
    /// Messages not sent because they encoded to more than the frame cap.
    dropped_too_large,
    /// Frame bytes written to peers.
    bytes_sent,
    /// Frame bytes read from peers.
    bytes_received,
    /// Connections this node dialled successfully.
    connections_opened,
    /// Connections accepted from peers.
    connections_accepted,
    /// Connections that ended other than by this node's shutdown.
    connections_lost,
    /// Handshakes that failed: wrong CA, wrong protocol version, bad hello.
    handshake_failures,
    /// Frames that could not be decoded; each closed its connection.
    decode_errors,
    /// Processes restarted by their supervisor.
    restarts,
    /// Processes whose supervisor gave up after too many restarts.
    restarts_exhausted,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }
}
