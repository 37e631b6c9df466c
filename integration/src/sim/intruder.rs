//! Intruders: nodes on a simulated cluster's network that run none of
//! Strata's processes, only a certificate (a stolen one, say), from which
//! a scenario sends raw protocol messages under process ids of its
//! choosing. They show that what a certificate does not allow is refused
//! by the runtime (ids its role does not own) or by the processes (an
//! agent obeys only its master, the master binds agent ids to
//! certificates), whatever a peer claims to be.

use std::net::SocketAddr;

use strata_runtime::{Message, Node, SendError, Upid};

/// A node of the cluster's network driven by the scenario itself; see
/// [`crate::sim::SimCluster::add_intruder`].
#[derive(Debug, Clone)]
pub struct Intruder {
    name: String,
    node: Node,
}

impl Intruder {
    pub(crate) fn new(name: String, node: Node) -> Intruder {
        Intruder { name, node }
    }

    /// The name its certificate gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// Its node, for inboxes that read the answers it gets
    /// ([`Node::inbox`]) and for its counters.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The address process `id` has on the intruder's node.
    ///
    /// # Panics
    ///
    /// If `id` is no valid process id (a mistake in the scenario).
    pub fn pid(&self, id: &str) -> Upid {
        self.node
            .pid(id)
            .unwrap_or_else(|error| panic!("{id:?} is no process id: {error}"))
    }

    /// Sends `message` to `to` as process `id` of the intruder's node. The
    /// node need not host a process under `id`: the receiver sees only the
    /// id (and the certificate), and answers to an id no inbox holds are
    /// dropped here.
    ///
    /// # Panics
    ///
    /// If `id` is no valid process id (a mistake in the scenario).
    pub fn send_as<M: Message>(&self, id: &str, to: &Upid, message: M) -> Result<(), SendError> {
        self.node.send(&self.pid(id), to, message)
    }
}
