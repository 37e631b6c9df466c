//! Processes: the actors users write, and the shell that supervises them.
//!
//! A user implements [`Process`]: a state, a message type, and callbacks
//! for messages, link exits and failed children. The runtime wraps each one
//! in a `ProcessActor`, an actix actor that
//! - delivers messages and timer ticks to the process with the sender's
//!   address and certificate identity,
//! - calls every callback under `catch_unwind`, so a panic is a failure of
//!   that process only (actix alone would let the panic kill the actor
//!   silently and never restart it),
//! - restarts a failed process from its factory under the same id, after a
//!   backoff, within the restart intensity of its [`RestartPolicy`], and
//!   otherwise gives up and reports to the parent,
//! - keeps the process's mailbox bounded (see [`SpawnOptions`]).

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use actix::fut::ActorFuture;
use actix::fut::{ActorFutureExt, wrap_future};
use actix::{Actor, ActorContext, AsyncContext, SpawnHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::codec;
use crate::mailbox::{self, Item, MailboxSender, Refused, Waited};
use crate::metrics::Metrics;
use crate::node::{Entry, Node, RemoteMailbox, SpawnError};
use crate::supervision::{Failure, RestartDecision, RestartPolicy, RestartTracker};
use crate::tls::PeerIdentity;
use crate::transport::{InboundError, Pending, SendError};
use crate::upid::Upid;

/// A message that can travel between processes: local sends move it as
/// is, remote sends encode it with the wire codec.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// A short name of the message's kind, for logs and simulation
    /// filters. Enums should name their variant.
    fn kind(&self) -> &'static str {
        type_name::<Self>()
    }
}

impl Message for String {}
impl Message for Vec<u8> {}
impl Message for u64 {}
impl Message for crate::codec::Blob {}

/// A process: an actor with an address, written by users of the runtime.
///
/// Every callback runs on the process's own actor, one at a time. A panic
/// in any of them is caught and treated as a failure of the process (see
/// the module docs).
pub trait Process: Sized + 'static {
    /// What the process receives.
    type Message: Message;

    /// Runs when the process starts and after every restart.
    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let _ = ctx;
    }

    /// Receives one message.
    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: Self::Message);

    /// A process this one linked to stopped, or its node became
    /// unreachable. As in libprocess this means "state unknown", not
    /// "dead": the linked process may still be running behind a partition.
    /// The link is gone once this is called.
    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        let _ = (ctx, pid);
    }

    /// A child spawned with [`ProcessContext::spawn_child`] failed more
    /// often than its restart policy allows, and its supervisor gave up.
    fn child_gave_up(&mut self, ctx: &mut ProcessContext<'_, Self>, child: Upid, failure: Failure) {
        warn!(pid = %ctx.pid(), child = %child, %failure, "child process gave up");
    }

    /// Runs once when the process stops for good: asked to stop, or the
    /// node shut down. Not after a failure: that instance's state is
    /// already gone.
    fn stopped(&mut self) {}
}

/// Identifies a timer set with [`ProcessContext::send_later`] or
/// [`ProcessContext::send_every`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// What [`ProcessContext::follow`] calls with each new value.
type FollowCallback<P, T> = std::rc::Rc<dyn Fn(&mut P, &mut ProcessContext<'_, P>, T)>;

/// How a process is spawned.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// How failures are handled.
    pub restart: RestartPolicy,
    /// Mailbox capacity; the node's default when `None`. A local send to a
    /// full mailbox fails at once with [`SendError::MailboxFull`]; a remote
    /// message waits for room, a place kept for it once the process takes
    /// its queue (the connection stops reading meanwhile, which slows the
    /// sender through QUIC flow control), and is dropped and counted once
    /// the process has handled nothing for the node's
    /// `remote_mailbox_wait`, or after ten times that in all.
    pub mailbox_capacity: Option<usize>,
}

impl SpawnOptions {
    pub fn restart(mut self, policy: RestartPolicy) -> SpawnOptions {
        self.restart = policy;
        self
    }

    pub fn mailbox_capacity(mut self, capacity: usize) -> SpawnOptions {
        self.mailbox_capacity = Some(capacity);
        self
    }
}

/// A message on its way into a process's mailbox.
pub(crate) struct Delivery<M> {
    pub(crate) from: Upid,
    /// The sending node's identity; `None` for this node.
    pub(crate) sender: Option<Arc<PeerIdentity>>,
    pub(crate) message: M,
}

/// What the runtime itself tells a process.
pub(crate) enum Signal {
    Exited(Upid),
    ChildGaveUp { child: Upid, failure: Failure },
    Stop,
}

enum Request {
    Stop,
    Fail(String),
}

/// The parts of a process's shell its callbacks can reach.
struct Shell {
    pid: Upid,
    node: Node,
    parent: Option<Upid>,
    serial: u64,
    timers: HashMap<TimerId, SpawnHandle>,
    next_timer: u64,
    request: Option<Request>,
    /// Identity of the node that sent the message being handled; `None`
    /// for this node.
    sender: Option<Arc<PeerIdentity>>,
    /// Mailboxes of local processes this one sent to lately, most recent
    /// first, so a busy sender skips the registry.
    routes: Vec<(Upid, Box<dyn Any>)>,
    /// Local sends not yet added to the node's counter; added after each
    /// callback, so the hot path bumps no shared counter.
    unrecorded_local_sends: u64,
}

/// How many local routes a process keeps.
const ROUTES_KEPT: usize = 8;

impl Shell {
    fn send_local<M: Message>(&mut self, to: &Upid, message: M) -> Result<(), SendError> {
        let cached = self.routes.iter().position(|(pid, _)| pid == to);
        let index = match cached {
            Some(index) => index,
            None => match self.node.local_route::<M>(to) {
                Some(route) => {
                    self.routes.truncate(ROUTES_KEPT - 1);
                    self.routes.insert(0, (to.clone(), Box::new(route)));
                    0
                }
                // Not running, stale or of another type: the node's own
                // path reports and counts why.
                None => return self.node.send_local(&self.pid, to, message),
            },
        };
        let Some(route) = self.routes[index].1.downcast_ref::<MailboxSender<M>>() else {
            return self.node.send_local(&self.pid, to, message);
        };
        let delivery = Delivery {
            from: self.pid.clone(),
            sender: None,
            message,
        };
        match route.try_send(delivery) {
            Ok(()) => {
                self.unrecorded_local_sends += 1;
                Ok(())
            }
            Err(Refused::Full(_)) => {
                Metrics::bump(&self.node.metrics_ref().dropped_mailbox_full);
                Err(SendError::MailboxFull(to.clone()))
            }
            Err(Refused::Closed(delivery)) => {
                // The process stopped; a new one may run under the id.
                self.routes.remove(index);
                self.node.send_local(&self.pid, to, delivery.message)
            }
        }
    }
}

/// What a callback can do: send, link, set timers, spawn children, stop.
pub struct ProcessContext<'a, P: Process> {
    actix: &'a mut actix::Context<ProcessActor<P>>,
    shell: &'a mut Shell,
}

impl<P: Process> std::fmt::Debug for ProcessContext<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessContext")
            .field("pid", &self.shell.pid)
            .finish_non_exhaustive()
    }
}

impl<P: Process> ProcessContext<'_, P> {
    /// This process's address.
    pub fn pid(&self) -> &Upid {
        &self.shell.pid
    }

    /// The node this process runs on.
    pub fn node(&self) -> &Node {
        &self.shell.node
    }

    /// Sends `message` to `to`, locally or over the network. Ordered and
    /// at most once per pair of processes; an error says why it was
    /// dropped at once (a message lost later in the network is not seen).
    pub fn send<M: Message>(&mut self, to: &Upid, message: M) -> Result<(), SendError> {
        if to.addr() == self.shell.node.addr() {
            return self.shell.send_local(to, message);
        }
        self.shell.node.send(&self.shell.pid, to, message)
    }

    /// The certificate identity of the node that sent the message being
    /// handled (this node's own for local messages and timers).
    pub fn sender_identity(&self) -> &PeerIdentity {
        match &self.shell.sender {
            Some(identity) => identity,
            None => self.shell.node.identity_ref(),
        }
    }

    /// [`Self::sender_identity`], shared.
    pub fn sender(&self) -> std::sync::Arc<PeerIdentity> {
        match &self.shell.sender {
            Some(identity) => identity.clone(),
            None => self.shell.node.identity(),
        }
    }

    /// Links this process to `pid`: [`Process::exited`] runs when `pid`
    /// stops (local) or its node becomes unreachable (remote).
    pub fn link(&self, pid: &Upid) {
        self.shell.node.link(&self.shell.pid, pid);
    }

    /// Removes a link made with [`ProcessContext::link`].
    pub fn unlink(&self, pid: &Upid) {
        self.shell.node.unlink(&self.shell.pid, pid);
    }

    fn next_timer_id(&mut self) -> TimerId {
        self.shell.next_timer += 1;
        TimerId(self.shell.next_timer)
    }

    /// Delivers `message` to this process after `delay`, on tokio's clock
    /// (so tests can pause and advance time).
    pub fn send_later(&mut self, delay: Duration, message: P::Message) -> TimerId {
        let id = self.next_timer_id();
        let handle = self.actix.run_later(delay, move |actor, ctx| {
            actor.shell.timers.remove(&id);
            let me = actor.shell.pid.clone();
            actor.shell.sender = None;
            actor.invoke(ctx, move |process, pctx| process.handle(pctx, me, message));
        });
        self.shell.timers.insert(id, handle);
        id
    }

    /// Delivers `make()` to this process every `interval` until cancelled.
    pub fn send_every(
        &mut self,
        interval: Duration,
        mut make: impl FnMut() -> P::Message + 'static,
    ) -> TimerId {
        let id = self.next_timer_id();
        let handle = self.actix.run_interval(interval, move |actor, ctx| {
            let me = actor.shell.pid.clone();
            actor.shell.sender = None;
            actor.invoke(ctx, |process, pctx| {
                let message = make();
                process.handle(pctx, me, message);
            });
        });
        self.shell.timers.insert(id, handle);
        id
    }

    /// Runs `call` on this process after `delay`, on tokio's clock: for
    /// work that is not a message (a retry, a deadline).
    pub fn run_later(
        &mut self,
        delay: Duration,
        call: impl FnOnce(&mut P, &mut ProcessContext<'_, P>) + 'static,
    ) -> TimerId {
        let id = self.next_timer_id();
        let handle = self.actix.run_later(delay, move |actor, ctx| {
            actor.shell.timers.remove(&id);
            actor.shell.sender = None;
            actor.invoke(ctx, call);
        });
        self.shell.timers.insert(id, handle);
        id
    }

    /// Runs `call` on this process every `interval` until cancelled: for
    /// periodic work (a tick, a ping round).
    pub fn run_every(
        &mut self,
        interval: Duration,
        mut call: impl FnMut(&mut P, &mut ProcessContext<'_, P>) + 'static,
    ) -> TimerId {
        let id = self.next_timer_id();
        let handle = self.actix.run_interval(interval, move |actor, ctx| {
            actor.shell.sender = None;
            actor.invoke(ctx, |process, pctx| call(process, pctx));
        });
        self.shell.timers.insert(id, handle);
        id
    }

    /// Runs `future` on this process's thread and hands its output to
    /// `then` on this process, like a message: for waiting on something
    /// (a child process, a file) without blocking the mailbox. Cancelled,
    /// like timers, if the process fails and restarts.
    pub fn spawn_future<F, T>(
        &mut self,
        future: F,
        then: impl FnOnce(&mut P, &mut ProcessContext<'_, P>, T) + 'static,
    ) -> TimerId
    where
        F: std::future::Future<Output = T> + 'static,
        T: 'static,
    {
        let id = self.next_timer_id();
        let handle = self
            .actix
            .spawn(
                wrap_future::<_, ProcessActor<P>>(future).map(move |output, actor, ctx| {
                    actor.shell.timers.remove(&id);
                    actor.shell.sender = None;
                    actor.invoke(ctx, move |process, pctx| then(process, pctx, output));
                }),
            );
        self.shell.timers.insert(id, handle);
        id
    }

    /// Calls `changed` with every new value `receiver` sees (not the one
    /// it holds now), on this process, until its sender is gone: for
    /// following something that changes outside the process (the leading
    /// master). Stops, like timers, if the process fails and restarts.
    pub fn follow<T: Clone + 'static>(
        &mut self,
        receiver: tokio::sync::watch::Receiver<T>,
        changed: impl Fn(&mut P, &mut ProcessContext<'_, P>, T) + 'static,
    ) {
        self.follow_with(receiver, std::rc::Rc::new(changed));
    }

    fn follow_with<T: Clone + 'static>(
        &mut self,
        mut receiver: tokio::sync::watch::Receiver<T>,
        changed: FollowCallback<P, T>,
    ) {
        self.spawn_future(
            async move {
                let open = receiver.changed().await.is_ok();
                let now = receiver.borrow_and_update().clone();
                (open, now, receiver)
            },
            move |process, ctx, (open, now, receiver)| {
                if open {
                    changed(process, ctx, now);
                    ctx.follow_with(receiver, changed);
                }
            },
        );
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match self.shell.timers.remove(&id) {
            Some(handle) => self.actix.cancel_future(handle),
            None => false,
        }
    }

    /// Spawns a process supervised by this one: if its supervisor gives
    /// up, [`Process::child_gave_up`] runs here.
    pub fn spawn_child<C: Process>(
        &self,
        id: &str,
        factory: impl Fn() -> C + 'static,
        options: SpawnOptions,
    ) -> Result<Upid, SpawnError> {
        spawn(
            &self.shell.node,
            id,
            Box::new(factory),
            options,
            Some(self.shell.pid.clone()),
        )
    }

    /// Stops this process for good once the current callback returns.
    pub fn stop(&mut self) {
        self.shell.request = Some(Request::Stop);
    }

    /// Fails this process once the current callback returns: its
    /// supervisor restarts it or gives up, as after a panic.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.shell.request = Some(Request::Fail(reason.into()));
    }
}

/// The actix actor that hosts and supervises one [`Process`].
pub(crate) struct ProcessActor<P: Process> {
    process: Option<Box<P>>,
    factory: Box<dyn Fn() -> P>,
    shell: Shell,
    restarts: RestartTracker,
    span: tracing::Span,
}

impl<P: Process> std::fmt::Debug for ProcessActor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessActor")
            .field("pid", &self.shell.pid)
            .field("running", &self.process.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Process> ProcessActor<P> {
    fn metrics(&self) -> &Metrics {
        self.shell.node.metrics_ref()
    }

    /// Runs one callback with panics caught, then acts on a panic or on a
    /// stop or fail the callback requested.
    fn invoke(
        &mut self,
        ctx: &mut actix::Context<Self>,
        call: impl FnOnce(&mut P, &mut ProcessContext<'_, P>),
    ) {
        let Some(process) = self.process.as_deref_mut() else {
            return;
        };
        let span = self.span.clone();
        let _entered = span.enter();
        let shell = &mut self.shell;
        // What the callback sends wakes QUIC's thread once, as it ends.
        let held = crate::transport::quic::hold_wakes();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut pctx = ProcessContext { actix: ctx, shell };
            call(process, &mut pctx);
        }));
        drop(held);
        if self.shell.unrecorded_local_sends > 0 {
            let sends = std::mem::take(&mut self.shell.unrecorded_local_sends);
            Metrics::add(&self.metrics().messages_sent_local, sends);
        }
        match outcome {
            Err(payload) => self.fail_now(ctx, Failure::from_panic(&*payload)),
            Ok(()) => match self.shell.request.take() {
                Some(Request::Stop) => ctx.stop(),
                Some(Request::Fail(reason)) => self.fail_now(ctx, Failure::Failed(reason)),
                None => {}
            },
        }
    }

    fn cancel_timers(&mut self, ctx: &mut actix::Context<Self>) {
        for (_, handle) in self.shell.timers.drain() {
            ctx.cancel_future(handle);
        }
    }

    fn fail_now(&mut self, ctx: &mut actix::Context<Self>, failure: Failure) {
        // The failed state is dropped; its destructor must not take the
        // shell down with it.
        let failed = self.process.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(failed)));
        self.cancel_timers(ctx);
        self.shell.request = None;
        let pid = self.shell.pid.clone();
        let now = tokio::time::Instant::now().into_std();
        match self.restarts.on_failure(now) {
            RestartDecision::RestartAfter(backoff) => {
                warn!(pid = %pid, %failure, backoff_ms = backoff.as_millis() as u64, "process failed; restarting");
                // `wait` holds the mailbox until the restart: messages
                // queue (bounded) instead of reaching a process that is
                // not there.
                ctx.wait(
                    wrap_future::<_, Self>(tokio::time::sleep(backoff))
                        .map(|(), actor, ctx| actor.restart(ctx)),
                );
            }
            RestartDecision::GiveUp { restarts } => {
                Metrics::bump(&self.metrics().restarts_exhausted);
                error!(pid = %pid, %failure, restarts, "process failed too often; supervisor gives up");
                self.shell.node.record_failure(&pid, &failure);
                if let Some(parent) = &self.shell.parent {
                    self.shell.node.signal(
                        parent,
                        Signal::ChildGaveUp {
                            child: pid,
                            failure,
                        },
                    );
                }
                ctx.stop();
            }
        }
    }

    fn restart(&mut self, ctx: &mut actix::Context<Self>) {
        Metrics::bump(&self.metrics().restarts);
        info!(pid = %self.shell.pid, "process restarted");
        match catch_unwind(AssertUnwindSafe(|| (self.factory)())) {
            Ok(process) => {
                self.process = Some(Box::new(process));
                self.invoke(ctx, |process, pctx| process.started(pctx));
            }
            Err(payload) => self.fail_now(ctx, Failure::from_panic(&*payload)),
        }
    }
}

impl<P: Process> Actor for ProcessActor<P> {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Polled for the first time while its runtime is being torn
        // down (a command that failed after spawning it): nothing can
        // start now, and timers would panic without a reactor.
        if tokio::runtime::Handle::try_current().is_err() {
            ctx.stop();
            return;
        }
        self.invoke(ctx, |process, pctx| process.started(pctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(process) = self.process.as_deref_mut() {
            let _entered = self.span.enter();
            if catch_unwind(AssertUnwindSafe(|| process.stopped())).is_err() {
                warn!(pid = %self.shell.pid, "process panicked while stopping");
            }
        }
        self.shell
            .node
            .deregister(&self.shell.pid, self.shell.serial);
    }
}

/// Most mailbox items handled in one turn before the actor yields to
/// others on its thread.
const ITEMS_PER_TURN: usize = 256;

/// Drains a process's mailbox into its actor. Like actix's stream driver
/// but handling up to [`ITEMS_PER_TURN`] items a turn instead of 16, which
/// matters when a process receives bursts; and like it, it handles nothing
/// while the actor waits (a restart backoff).
struct MailboxDriver<M> {
    receiver: mailbox::MailboxReceiver<M>,
}

impl<P: Process> ActorFuture<ProcessActor<P>> for MailboxDriver<P::Message> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        actor: &mut ProcessActor<P>,
        ctx: &mut actix::Context<ProcessActor<P>>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        let this = self.get_mut();
        for _ in 0..ITEMS_PER_TURN {
            if ctx.waiting() {
                // The context polls its items again once the wait ends.
                return Poll::Pending;
            }
            match this.receiver.poll_next(task) {
                Poll::Ready(item) => actor.receive(item, ctx),
                Poll::Pending => return Poll::Pending,
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<P: Process> ProcessActor<P> {
    fn receive(&mut self, item: Item<P::Message>, ctx: &mut actix::Context<Self>) {
        match item {
            Item::Message(delivery) => {
                self.shell.sender = delivery.sender;
                let from = delivery.from;
                let message = delivery.message;
                self.invoke(ctx, move |process, pctx| {
                    process.handle(pctx, from, message)
                });
            }
            Item::Signal(Signal::Exited(pid)) => {
                self.invoke(ctx, move |process, pctx| process.exited(pctx, pid))
            }
            Item::Signal(Signal::ChildGaveUp { child, failure }) => self
                .invoke(ctx, move |process, pctx| {
                    process.child_gave_up(pctx, child, failure)
                }),
            Item::Signal(Signal::Stop) => ctx.stop(),
        }
    }
}

/// Decodes remote payloads into one process's message type.
struct TypedRemote<M: Message> {
    mailbox: MailboxSender<M>,
}

impl<M: Message> RemoteMailbox for TypedRemote<M> {
    fn deliver(
        &self,
        from: Upid,
        sender: Option<Arc<PeerIdentity>>,
        payload: &[u8],
        wait: Duration,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Pending>, InboundError> {
        let message: M = codec::decode("message", payload)?;
        let delivery = Delivery {
            from,
            sender,
            message,
        };
        match self.mailbox.try_send_remote(delivery) {
            Ok(()) => {
                Metrics::bump(&metrics.messages_received_remote);
                Ok(None)
            }
            Err(Refused::Full(delivery)) => {
                let mailbox = self.mailbox.clone();
                let metrics = metrics.clone();
                Ok(Some(Box::pin(async move {
                    match mailbox.send_waiting(delivery, wait).await {
                        Waited::In => Metrics::bump(&metrics.messages_received_remote),
                        Waited::Closed => Metrics::bump(&metrics.dropped_unknown_process),
                        Waited::GaveUp => Metrics::bump(&metrics.dropped_mailbox_full),
                    }
                })))
            }
            Err(Refused::Closed(_)) => {
                Metrics::bump(&metrics.dropped_unknown_process);
                Ok(None)
            }
        }
    }
}

/// Tries a local delivery into a mailbox registered for `M`.
pub(crate) fn deliver_local<M: Message>(
    entry: &Entry,
    from: &Upid,
    message: M,
) -> Result<(), SendError> {
    let Some(mailbox) = entry.local.downcast_ref::<MailboxSender<M>>() else {
        return Err(SendError::WrongType {
            to: entry.pid.clone(),
            kind: type_name::<M>(),
        });
    };
    let delivery = Delivery {
        from: from.clone(),
        sender: None,
        message,
    };
    mailbox.try_send(delivery).map_err(|refused| match refused {
        Refused::Full(_) => SendError::MailboxFull(entry.pid.clone()),
        Refused::Closed(_) => SendError::UnknownProcess(entry.pid.clone()),
    })
}

/// Starts a process under `id` on `node`. Must run inside an actix system.
pub(crate) fn spawn<P: Process>(
    node: &Node,
    id: &str,
    factory: Box<dyn Fn() -> P>,
    options: SpawnOptions,
    parent: Option<Upid>,
) -> Result<Upid, SpawnError> {
    let pid = node.pid(id).map_err(SpawnError::InvalidId)?;
    // The actor runs on the calling thread's arbiter; without one actix
    // would panic.
    if actix_rt::Arbiter::try_current().is_none() {
        return Err(SpawnError::OutsideSystem);
    }
    // The first instance is built before any lock is taken: the factory is
    // user code and may itself use the node.
    let first = catch_unwind(AssertUnwindSafe(&factory)).map_err(|payload| {
        SpawnError::FactoryPanicked(Failure::from_panic(&*payload).to_string())
    })?;
    let capacity = options
        .mailbox_capacity
        .unwrap_or_else(|| node.default_mailbox_capacity())
        .max(1);
    node.register(&pid, |serial| {
        let actor = ProcessActor {
            process: Some(Box::new(first)),
            factory,
            shell: Shell {
                pid: pid.clone(),
                node: node.clone(),
                parent,
                serial,
                timers: HashMap::new(),
                next_timer: 0,
                request: None,
                sender: None,
                routes: Vec::new(),
                unrecorded_local_sends: 0,
            },
            restarts: RestartTracker::new(options.restart),
            span: tracing::info_span!("process", pid = %pid),
        };
        let (sender, receiver) = mailbox::mailbox::<P::Message>(capacity);
        ProcessActor::create(move |ctx| {
            ctx.spawn(MailboxDriver { receiver });
            actor
        });
        Entry {
            serial,
            pid: pid.clone(),
            local: Box::new(sender.clone()),
            remote: Box::new(TypedRemote {
                mailbox: sender.clone(),
            }),
            signals: Box::new(sender),
        }
    })?;
    Ok(pid)
}
