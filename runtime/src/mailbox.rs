//! A process's mailbox: bounded, ordered, and cheap per message.
//!
//! Messages and the runtime's signals (exits, stop requests) share one
//! queue, so a signal never overtakes a message sent before it. Only
//! messages count against the capacity: a full mailbox refuses a message
//! at once ([`MailboxSender::try_send`]) or lets a remote reader wait for
//! room ([`MailboxSender::send_waiting`]); signals always enter, and there
//! are at most as many as the links a process made.
//!
//! The queue is tokio's unbounded channel, which stores messages in
//! reusable blocks of slots, so a message costs no allocation of its own
//! (actix's mailbox allocates an envelope and a queue node for each). The
//! bound is an atomic counter beside it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{Notify, mpsc};

use crate::process::{Delivery, Signal};

/// What a mailbox holds.
pub(crate) enum Item<M> {
    Message(Delivery<M>),
    Signal(Signal),
}

struct Room {
    queued: AtomicUsize,
    capacity: usize,
    freed: Notify,
}

/// Why a message did not enter a mailbox; the message is handed back.
pub(crate) enum Refused<M> {
    Full(Delivery<M>),
    Closed(Delivery<M>),
}

/// The sending side; cheap to clone.
pub(crate) struct MailboxSender<M> {
    queue: mpsc::UnboundedSender<Item<M>>,
    room: Arc<Room>,
}

impl<M> Clone for MailboxSender<M> {
    fn clone(&self) -> MailboxSender<M> {
        MailboxSender {
            queue: self.queue.clone(),
            room: self.room.clone(),
        }
    }
}

/// The receiving side, a stream the process's actor drains.
pub(crate) struct MailboxStream<M> {
    queue: mpsc::UnboundedReceiver<Item<M>>,
    room: Arc<Room>,
}

/// A mailbox holding at most `capacity` messages.
pub(crate) fn mailbox<M>(capacity: usize) -> (MailboxSender<M>, MailboxStream<M>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let room = Arc::new(Room {
        queued: AtomicUsize::new(0),
        capacity: capacity.max(1),
        freed: Notify::new(),
    });
    (
        MailboxSender {
            queue: sender,
            room: room.clone(),
        },
        MailboxStream {
            queue: receiver,
            room,
        },
    )
}

impl<M> MailboxSender<M> {
    /// Queues a message if there is room, at once.
    pub(crate) fn try_send(&self, delivery: Delivery<M>) -> Result<(), Refused<M>> {
        let room = &self.room;
        if room.queued.fetch_add(1, Ordering::AcqRel) >= room.capacity {
            room.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(delivery));
        }
        self.queue.send(Item::Message(delivery)).map_err(|error| {
            room.queued.fetch_sub(1, Ordering::AcqRel);
            match error.0 {
                Item::Message(delivery) => Refused::Closed(delivery),
                Item::Signal(_) => unreachable!("a message was sent"),
            }
        })
    }

    /// Queues a message, waiting for room as long as the caller lets this
    /// future run. `false` if the mailbox closed.
    pub(crate) async fn send_waiting(&self, mut delivery: Delivery<M>) -> bool {
        loop {
            let freed = self.room.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so room made between the try and
            // the wait is not missed.
            freed.as_mut().enable();
            match self.try_send(delivery) {
                Ok(()) => return true,
                Err(Refused::Closed(_)) => return false,
                Err(Refused::Full(returned)) => delivery = returned,
            }
            freed.await;
        }
    }

    /// Queues a signal; signals are not bounded by the capacity.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        self.queue.send(Item::Signal(signal)).is_ok()
    }
}

impl<M> futures_core::Stream for MailboxStream<M> {
    type Item = Item<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<M>>> {
        let polled = self.queue.poll_recv(cx);
        if let Poll::Ready(Some(Item::Message(_))) = &polled {
            let before = self.room.queued.fetch_sub(1, Ordering::AcqRel);
            if before >= self.room.capacity {
                // It was full: someone may be waiting for this room.
                self.room.freed.notify_waiters();
            }
        }
        polled
    }
}
