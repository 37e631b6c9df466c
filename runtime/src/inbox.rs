//! Inboxes: processes read from ordinary async code.
//!
//! Clients such as the command line and tests want to send a request and
//! await the answer without writing an actor. An [`Inbox`] is a process
//! like any other (it has an address, it can link), whose messages and
//! exits are read with [`Inbox::recv`]. Dropping the inbox stops its
//! process.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use crate::node::Node;
use crate::process::{Message, Process, ProcessContext};
use crate::transport::SendError;
use crate::upid::Upid;

/// What an inbox receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<M> {
    /// A message and its sender.
    Message(Upid, M),
    /// A linked process exited (or its node became unreachable).
    Exited(Upid),
}

pub(crate) struct InboxProcess<M> {
    sender: mpsc::Sender<Received<M>>,
}

impl<M> InboxProcess<M> {
    pub(crate) fn new(sender: mpsc::Sender<Received<M>>) -> InboxProcess<M> {
        InboxProcess { sender }
    }

    fn forward(&mut self, ctx: &mut ProcessContext<'_, Self>, item: Received<M>)
    where
        M: Message,
    {
        match self.sender.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                debug!(pid = %ctx.pid(), "inbox full; message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }
}

impl<M: Message> Process for InboxProcess<M> {
    type Message = M;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: M) {
        self.forward(ctx, Received::Message(from, message));
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        self.forward(ctx, Received::Exited(pid));
    }
}

/// A process whose messages are awaited from async code.
#[derive(Debug)]
pub struct Inbox<M> {
    node: Node,
    pid: Upid,
    receiver: mpsc::Receiver<Received<M>>,
}

impl<M: Message> Inbox<M> {
    pub(crate) fn new(node: Node, pid: Upid, receiver: mpsc::Receiver<Received<M>>) -> Inbox<M> {
        Inbox {
            node,
            pid,
            receiver,
        }
    }

    /// The inbox's address.
    pub fn pid(&self) -> &Upid {
        &self.pid
    }

    /// Sends from this inbox's address.
    pub fn send<T: Message>(&self, to: &Upid, message: T) -> Result<(), SendError> {
        self.node.send(&self.pid, to, message)
    }

    /// Links this inbox to `pid`: an exit arrives as [`Received::Exited`].
    pub fn link(&self, pid: &Upid) {
        self.node.link(&self.pid, pid);
    }

    /// The next message or exit; `None` once the inbox's process stopped.
    pub async fn recv(&mut self) -> Option<Received<M>> {
        self.receiver.recv().await
    }

    /// The next message or exit, or `None` if none arrives within
    /// `deadline` (on tokio's clock).
    pub async fn recv_within(&mut self, deadline: Duration) -> Option<Received<M>> {
        tokio::time::timeout(deadline, self.receiver.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message, skipping exits, within `deadline`.
    pub async fn message_within(&mut self, deadline: Duration) -> Option<(Upid, M)> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(until, self.receiver.recv()).await {
                Ok(Some(Received::Message(from, message))) => return Some((from, message)),
                Ok(Some(Received::Exited(_))) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl<M> Drop for Inbox<M> {
    fn drop(&mut self) {
        self.node.stop(&self.pid);
    }
}
