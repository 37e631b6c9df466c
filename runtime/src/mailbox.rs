//! A process's mailbox: bounded, ordered, and cheap per message.
//!
//! Messages and the runtime's signals (exits, stop requests) share one
//! queue, so a signal never overtakes a message sent before it. Only
//! messages count against the capacity, and only while queued: the batch
//! the process has taken and is handling does not count, so a process
//! holds at most twice its capacity. A full queue refuses a message
//! at once ([`MailboxSender::try_send`]) or lets a remote reader wait for
//! room ([`MailboxSender::send_waiting`]); signals always enter, and there
//! are at most as many as the links a process made. The room a remote
//! reader waits for is kept for it from remote readers that come later
//! ([`MailboxSender::try_send_remote`]): readers waiting go in when the
//! process next takes its queue, however fast later ones fill the rest
//! (local sends, refused at once when full, are not held back).
//!
//! Why not actix's mailbox or a tokio channel: a send here is one
//! uncontended lock and a push into a ring buffer that is reused, and the
//! receiver takes everything queued in one lock. actix's mailbox allocates
//! an envelope and a queue node per message, and tokio's channel spends
//! several atomic operations on each; both showed in the local send
//! benchmark.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::process::{Delivery, Signal};

/// What a mailbox holds.
pub(crate) enum Item<M> {
    Message(Delivery<M>),
    Signal(Signal),
}

struct Queue<M> {
    items: VecDeque<Item<M>>,
    /// Messages (not signals) in `items`.
    messages: usize,
    /// The receiving task, when it found the queue empty.
    waker: Option<Waker>,
    /// False once the process's actor is gone.
    open: bool,
    /// Remote readers waiting for room ([`MailboxSender::send_waiting`]).
    waiting: usize,
}

struct Shared<M> {
    queue: Mutex<Queue<M>>,
    capacity: usize,
    /// Woken when a full mailbox makes room.
    freed: Notify,
    /// Items the process has taken to handle so far: readers waiting for
    /// room wait while it goes up.
    handled: AtomicU64,
}

impl<M> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, Queue<M>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Why a message did not enter a mailbox; the message is handed back.
pub(crate) enum Refused<M> {
    Full(Delivery<M>),
    Closed(Delivery<M>),
}

/// The sending side; cheap to clone.
pub(crate) struct MailboxSender<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for MailboxSender<M> {
    fn clone(&self) -> MailboxSender<M> {
        MailboxSender {
            shared: self.shared.clone(),
        }
    }
}

/// The receiving side, drained by the process's actor.
pub(crate) struct MailboxReceiver<M> {
    shared: Arc<Shared<M>>,
    /// Items taken from the queue in one lock, handed out one by one.
    taken: VecDeque<Item<M>>,
    /// Items handed out so far (published in [`Shared::handled`]).
    handled: u64,
}

/// Room an empty queue keeps for the next messages; more is given back.
const KEPT_ROOM: usize = 1024;

/// A mailbox queueing at most `capacity` messages.
pub(crate) fn mailbox<M>(capacity: usize) -> (MailboxSender<M>, MailboxReceiver<M>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            messages: 0,
            waker: None,
            open: true,
            waiting: 0,
        }),
        capacity: capacity.max(1),
        freed: Notify::new(),
        handled: AtomicU64::new(0),
    });
    (
        MailboxSender {
            shared: shared.clone(),
        },
        MailboxReceiver {
            shared,
            taken: VecDeque::new(),
            handled: 0,
        },
    )
}

impl<M> MailboxSender<M> {
    /// Queues a message if there is room, at once.
    pub(crate) fn try_send(&self, delivery: Delivery<M>) -> Result<(), Refused<M>> {
        self.push(delivery, Room::Any)
    }

    /// Queues a message from a remote reader, at once, if there is room
    /// besides one place for each reader waiting; refused as full
    /// otherwise, for the reader to wait ([`MailboxSender::send_waiting`]).
    /// Were readers that came later let into any room, a reader woken for
    /// room could find the queue full again each time, until it gave up
    /// and its message was lost, though the process was keeping up.
    pub(crate) fn try_send_remote(&self, delivery: Delivery<M>) -> Result<(), Refused<M>> {
        self.push(delivery, Room::BesidesWaiting)
    }

    fn push(&self, delivery: Delivery<M>, room: Room) -> Result<(), Refused<M>> {
        let shared = &self.shared;
        let waker = {
            let mut queue = shared.lock();
            if !queue.open {
                return Err(Refused::Closed(delivery));
            }
            let kept = match room {
                Room::Any => 0,
                Room::BesidesWaiting => queue.waiting,
            };
            if queue.messages + kept >= shared.capacity {
                return Err(Refused::Full(delivery));
            }
            queue.messages += 1;
            queue.items.push_back(Item::Message(delivery));
            queue.waker.take()
        };
        wake(waker);
        Ok(())
    }

    /// Queues a message, waiting for room while the process goes on
    /// handling what it took: a place is kept for it from remote readers
    /// that come later, and it goes in once the process takes its queue
    /// (unless local sends fill the room first). It gives up once the
    /// process has handled nothing for `patience`, since a process busy
    /// with a long queue (the master's, in a burst, can take more than a
    /// second to work through) is not one that stopped; and after
    /// [`MOST_PATIENCES`] times `patience` in all, as its connection
    /// reads nothing else meanwhile.
    pub(crate) async fn send_waiting(
        &self,
        mut delivery: Delivery<M>,
        patience: std::time::Duration,
    ) -> Waited {
        // Counted before trying, so a process taking its queue meanwhile
        // keeps it a place.
        let _waiting = Waiting::new(&self.shared);
        let mut handled = self.shared.handled.load(Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let last = later(started, patience.saturating_mul(MOST_PATIENCES));
        let mut deadline = later(started, patience);
        loop {
            let freed = self.shared.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so room made between the try and
            // the wait is not missed.
            freed.as_mut().enable();
            // Any room: the places kept are for the readers waiting.
            match self.push(delivery, Room::Any) {
                Ok(()) => return Waited::In,
                Err(Refused::Closed(_)) => return Waited::Closed,
                Err(Refused::Full(returned)) => delivery = returned,
            }
            if tokio::time::timeout_at(deadline, freed.as_mut())
                .await
                .is_err()
            {
                let now = tokio::time::Instant::now();
                let progress = self.shared.handled.load(Ordering::Relaxed);
                if progress == handled || now >= last {
                    // A last try: room may have come with the deadline.
                    return match self.push(delivery, Room::Any) {
                        Ok(()) => Waited::In,
                        Err(Refused::Closed(_)) => Waited::Closed,
                        Err(Refused::Full(_)) => Waited::GaveUp,
                    };
                }
                handled = progress;
                deadline = later(now, patience).min(last);
            }
        }
    }

    /// Queues a signal; signals are not bounded by the capacity. False if
    /// the process is gone.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        let waker = {
            let mut queue = self.shared.lock();
            if !queue.open {
                return false;
            }
            queue.items.push_back(Item::Signal(signal));
            queue.waker.take()
        };
        wake(waker);
        true
    }
}

/// How a wait for room ended ([`MailboxSender::send_waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The message is queued.
    In,
    /// The process is gone.
    Closed,
    /// The process handled nothing for as long as the reader would wait.
    GaveUp,
}

/// What room a message may take.
#[derive(Clone, Copy)]
enum Room {
    /// Any.
    Any,
    /// Besides a place for each remote reader waiting.
    BesidesWaiting,
}

/// How many times its patience a remote reader waits for room at most,
/// however its process goes on ([`MailboxSender::send_waiting`]).
pub(crate) const MOST_PATIENCES: u32 = 10;

/// `wait` after `at`, or decades after it if that is past what a clock
/// can hold (a patience of `Duration::MAX` means waiting for good).
fn later(at: tokio::time::Instant, wait: std::time::Duration) -> tokio::time::Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// Counts a reader among those waiting for room while it lives.
struct Waiting<'a, M>(&'a Shared<M>);

impl<'a, M> Waiting<'a, M> {
    fn new(shared: &'a Shared<M>) -> Waiting<'a, M> {
        shared.lock().waiting += 1;
        Waiting(shared)
    }
}

impl<M> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.waiting = queue.waiting.saturating_sub(1);
    }
}

impl<M> MailboxReceiver<M> {
    /// The next item, or `Pending` with the task registered for a wake-up.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item<M>> {
        if self.taken.is_empty() {
            // The emptied queue becomes the one senders fill: what a burst
            // grew it to is given back, or every burst's peak would stay
            // resident for the process's life.
            if self.taken.capacity() > KEPT_ROOM {
                self.taken.shrink_to(KEPT_ROOM);
            }
            let let_in = {
                let mut queue = self.shared.lock();
                if queue.items.is_empty() {
                    match &queue.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => queue.waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut queue.items, &mut self.taken);
                std::mem::replace(&mut queue.messages, 0) >= self.shared.capacity
                    || queue.waiting > 0
            };
            if let_in {
                // Readers may be waiting for the room just made.
                self.shared.freed.notify_waiters();
            }
        }
        match self.taken.pop_front() {
            Some(item) => {
                self.handled += 1;
                self.shared.handled.store(self.handled, Ordering::Relaxed);
                Poll::Ready(item)
            }
            None => Poll::Pending,
        }
    }
}

impl<M> Drop for MailboxReceiver<M> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.open = false;
        queue.items.clear();
        queue.waker = None;
        drop(queue);
        // Waiters learn the mailbox closed when they try again.
        self.shared.freed.notify_waiters();
    }
}

impl<M> Unpin for MailboxReceiver<M> {}

impl<M> std::fmt::Debug for MailboxReceiver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxReceiver")
            .field("taken", &self.taken.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn delivery(message: u32) -> Delivery<u32> {
        Delivery {
            from: "reader@127.0.0.1:1".parse().expect("a pid"),
            sender: None,
            message,
        }
    }

    /// The message the process takes next, if any.
    fn next(receiver: &mut MailboxReceiver<u32>) -> Option<u32> {
        match receiver.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Item::Message(delivery)) => Some(delivery.message),
            _ => None,
        }
    }

    /// How long the tests' readers wait while the process handles nothing.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

    /// The room a reader waits for is kept for it: a reader that came
    /// since takes the rest, not its place; more readers waiting than the
    /// mailbox holds all go in; one that stopped waiting holds no place.
    #[tokio::test(start_paused = true)]
    async fn a_place_is_kept_for_a_reader_waiting_for_room() {
        let (sender, mut receiver) = mailbox::<u32>(2);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sender.try_send_remote(delivery(1)).is_ok());
        assert!(sender.try_send_remote(delivery(2)).is_ok());
        let mut waiter = std::pin::pin!(sender.send_waiting(delivery(3), PATIENCE));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        // The process takes its queue: room for two, one kept.
        assert_eq!(next(&mut receiver), Some(1));
        assert!(sender.try_send_remote(delivery(4)).is_ok());
        assert!(matches!(
            sender.try_send_remote(delivery(5)),
            Err(Refused::Full(_))
        ));
        assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Waited::In));
        let taken: Vec<_> = std::iter::from_fn(|| next(&mut receiver)).collect();
        assert_eq!(taken, [2, 4, 3]);
        // More readers waiting than the mailbox holds go in, a take each.
        assert!(sender.try_send_remote(delivery(11)).is_ok());
        assert!(sender.try_send_remote(delivery(12)).is_ok());
        let mut waiters: Vec<_> = (13..=15)
            .map(|message| Box::pin(sender.send_waiting(delivery(message), PATIENCE)))
            .collect();
        for waiter in &mut waiters {
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
        }
        let mut taken = Vec::new();
        for _ in 0..10 {
            taken.extend(next(&mut receiver));
            waiters.retain_mut(|waiter| waiter.as_mut().poll(&mut cx).is_pending());
        }
        assert!(waiters.is_empty(), "{} still waiting", waiters.len());
        taken.extend(std::iter::from_fn(|| next(&mut receiver)));
        taken.sort();
        assert_eq!(taken, [11, 12, 13, 14, 15]);
        // A reader that gave up waiting is no longer counted.
        assert!(sender.try_send_remote(delivery(6)).is_ok());
        assert!(sender.try_send_remote(delivery(7)).is_ok());
        let mut gave_up = Box::pin(sender.send_waiting(delivery(8), PATIENCE));
        assert!(gave_up.as_mut().poll(&mut cx).is_pending());
        drop(gave_up);
        assert_eq!(next(&mut receiver), Some(6));
        assert!(sender.try_send_remote(delivery(9)).is_ok());
        assert!(sender.try_send_remote(delivery(10)).is_ok());
    }

    /// A reader waits for room while the process goes on handling what
    /// it took, however long that takes, and gives up once the process has
    /// handled nothing for its patience.
    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_while_the_process_handles_messages() {
        let (sender, mut receiver) = mailbox::<u32>(2);
        let mut cx = Context::from_waker(Waker::noop());
        for message in 1..=2 {
            assert!(sender.try_send_remote(delivery(message)).is_ok());
        }
        // The process takes both; the queue fills again behind them.
        assert_eq!(next(&mut receiver), Some(1));
        for message in 3..=4 {
            assert!(sender.try_send_remote(delivery(message)).is_ok());
        }
        let mut waiter = std::pin::pin!(sender.send_waiting(delivery(5), PATIENCE));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        // Twice its patience in all, but the process handled one between.
        tokio::time::advance(PATIENCE * 3 / 4).await;
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        assert_eq!(next(&mut receiver), Some(2));
        tokio::time::advance(PATIENCE * 3 / 4).await;
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(PATIENCE * 3 / 4).await;
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        // The process takes its queue: the waiter goes in.
        assert_eq!(next(&mut receiver), Some(3));
        assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Waited::In));
        // Now the process handles nothing: after its patience, it gives up.
        assert!(sender.try_send_remote(delivery(6)).is_ok());
        let mut stuck = std::pin::pin!(sender.send_waiting(delivery(7), PATIENCE));
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(PATIENCE * 3 / 4).await;
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(PATIENCE / 2).await;
        assert_eq!(stuck.as_mut().poll(&mut cx), Poll::Ready(Waited::GaveUp));
        // A patience past what the clock holds waits, and does not panic.
        let mut forever =
            std::pin::pin!(sender.send_waiting(delivery(8), std::time::Duration::MAX));
        assert!(forever.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(PATIENCE * 100).await;
        assert!(forever.as_mut().poll(&mut cx).is_pending());
    }

    /// However the process goes on, a reader waits at most
    /// [`MOST_PATIENCES`] times its patience.
    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_at_most_so_many_patiences() {
        let (sender, mut receiver) = mailbox::<u32>(20);
        let mut cx = Context::from_waker(Waker::noop());
        for message in 0..20 {
            assert!(sender.try_send_remote(delivery(message)).is_ok());
        }
        assert_eq!(next(&mut receiver), Some(0));
        for message in 20..40 {
            assert!(sender.try_send_remote(delivery(message)).is_ok());
        }
        let mut waiter = std::pin::pin!(sender.send_waiting(delivery(40), PATIENCE));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        // The process handles one message every three quarters of its
        // patience and never takes its queue.
        let step = PATIENCE * 3 / 4;
        let mut waited = std::time::Duration::ZERO;
        while waited + step < PATIENCE * MOST_PATIENCES {
            tokio::time::advance(step).await;
            waited += step;
            assert!(next(&mut receiver).is_some());
            assert!(waiter.as_mut().poll(&mut cx).is_pending(), "{waited:?}");
        }
        tokio::time::advance(step).await;
        assert!(next(&mut receiver).is_some());
        assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(Waited::GaveUp));
    }

    /// A burst grows both queues; once drained they give the room back.
    #[test]
    fn drained_queues_give_a_burst_s_room_back() {
        let (sender, mut receiver) = mailbox::<()>(10);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..2 {
            for _ in 0..20 * KEPT_ROOM {
                assert!(sender.signal(Signal::Stop));
            }
            let mut handed = 0;
            while let Poll::Ready(item) = receiver.poll_next(&mut cx) {
                assert!(matches!(item, Item::Signal(Signal::Stop)));
                handed += 1;
            }
            assert_eq!(handed, 20 * KEPT_ROOM);
        }
        assert!(receiver.taken.capacity() <= KEPT_ROOM);
        assert!(receiver.shared.lock().items.capacity() <= KEPT_ROOM);
        // What is queued keeps its order through the shrinking.
        for _ in 0..3 {
            assert!(sender.signal(Signal::Stop));
        }
        for _ in 0..3 {
            assert!(receiver.poll_next(&mut cx).is_ready());
        }
        assert!(receiver.poll_next(&mut cx).is_pending());
    }
}
