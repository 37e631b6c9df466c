//! Strata's actor runtime.
//!
//! Every master, agent, scheduler and executor is a process (an actor)
//! with an address of the form `id@ip:port` ([`Upid`]). Processes exchange
//! messages with [`ProcessContext::send`]: within a node the message moves
//! into the target's mailbox as is; between nodes it is encoded by
//! [`codec`] and carried over mutually authenticated QUIC
//! ([`transport::quic`]). Between any two processes delivery is ordered
//! and at most once, libprocess's contract.
//!
//! A node is one per OS process; it binds one UDP address and hosts any
//! number of processes ([`Node::spawn`]), each supervised: a panic or a
//! failure restarts it from its factory under the same id, within a
//! restart intensity ([`RestartPolicy`]). Links ([`ProcessContext::link`])
//! turn a stopped process or an unreachable node into an `exited`
//! callback. Timers run on tokio's clock, so tests pause time instead of
//! sleeping.
//!
//! Only this crate knows QUIC, TLS and bincode; the network sits behind
//! [`transport::Transport`] so a simulated network can replace it.
//!
//! ```no_run
//! use strata_runtime::{Node, NodeConfig, Process, ProcessContext, SpawnOptions, TlsMaterial, Upid};
//!
//! struct Echo;
//!
//! impl Process for Echo {
//!     type Message = String;
//!
//!     fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, text: String) {
//!         // Reply to whoever sent it; a send error says why it was dropped.
//!         let _ = ctx.send(&from, text);
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! actix_rt::System::new().block_on(async {
//!     let tls = TlsMaterial::development(std::path::Path::new(".strata/tls"), strata_runtime::Role::Framework, "example")?;
//!     let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, tls)).await?;
//!     let echo = node.spawn("echo", || Echo, SpawnOptions::default())?;
//!     let mut inbox = node.inbox::<String>("client", 16)?;
//!     inbox.send(&echo, "hello".to_string())?;
//!     let reply = inbox.message_within(std::time::Duration::from_secs(1)).await;
//!     assert_eq!(reply.map(|(_, text)| text).as_deref(), Some("hello"));
//!     Ok(())
//! })
//! # }
//! ```

pub mod codec;
pub mod durable;
pub mod http;
pub mod http_auth;
pub mod inbox;
mod mailbox;
#[cfg(feature = "mimalloc")]
pub mod memory;
pub mod metrics;
pub mod node;
pub mod process;
pub mod random;
pub mod supervision;
pub mod tls;
pub mod transport;
pub mod upid;

pub use codec::Blob;
pub use inbox::{Inbox, Received};
pub use metrics::MetricsSnapshot;
pub use node::{Node, NodeConfig, NodeError, NodeSettings, SpawnError};
pub use process::{Message, Process, ProcessContext, SpawnOptions, TimerId};
pub use supervision::{Failure, RestartPolicy};
pub use tls::{CertificateAuthority, PeerIdentity, Role, TlsMaterial};
pub use transport::quic::QuicConfig;
pub use transport::{PeerInfo, SendError, TransportError};
pub use upid::{Incarnation, ProcessName, Upid, UpidParseError};
