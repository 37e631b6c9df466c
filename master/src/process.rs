//! The master process: the shell around the books.
//!
//! It turns what the runtime delivers (messages, link exits, its own
//! periodic tick) into [`Input`]s for the [`Books`] and carries out the
//! [`Command`]s they return: sends, links and log lines. Nothing else
//! happens here.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_protocol::ToMaster;
use strata_runtime::{Process, ProcessContext, Upid};
use tracing::{debug, info, warn};

use crate::books::{Books, Command, Config, Event, Input};

/// The master's process id.
pub const MASTER_ID: &str = "master";

/// The master: books, allocator, and the loop that drives them.
#[derive(Debug)]
pub struct Master {
    books: Books,
}

impl Master {
    /// A master whose ids start with `id_prefix` (the shell passes the
    /// node's incarnation, so ids differ across restarts).
    pub fn new(config: Config, id_prefix: &str) -> Master {
        Master {
            books: Books::new(config, id_prefix),
        }
    }

    /// The books, for operators' views and tests.
    pub fn books(&self) -> &Books {
        &self.books
    }

    fn apply(&mut self, ctx: &mut ProcessContext<'_, Self>, input: Input) {
        let now = now();
        for command in self.books.handle(now, input) {
            match command {
                Command::ToAgent(pid, message) => send(ctx, &pid, message),
                Command::ToScheduler(pid, message) => send(ctx, &pid, message),
                Command::Link(pid) => ctx.link(&pid),
                Command::Log(event) => log(&event),
            }
        }
    }
}

/// The runtime's clock (tokio's, so paused tests and simulation drive it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn send<M: strata_runtime::Message>(ctx: &mut ProcessContext<'_, Master>, to: &Upid, message: M) {
    let kind = message.kind();
    if let Err(error) = ctx.send(to, message) {
        // Delivery is at most once: the protocol recovers (agents resend
        // updates, schedulers reconcile, offers are rescinded or expire).
        debug!(to = %to, kind, cause = %error, "message not sent");
    }
}

fn log(event: &Event) {
    match event {
        Event::AgentAdmitted { agent_id, pid } => {
            info!(agent_id = %agent_id, pid = %pid, "agent admitted")
        }
        Event::AgentReturned { agent_id } => info!(agent_id = %agent_id, "agent re-registered"),
        Event::AgentUnreachable {
            agent_id,
            missed_pongs,
        } => {
            warn!(agent_id = %agent_id, missed_pongs, "agent unreachable")
        }
        Event::AgentRefused { pid, reason } => warn!(pid = %pid, reason = %reason, "agent refused"),
        Event::FrameworkRegistered { framework_id, name } => {
            info!(framework_id = %framework_id, name = %name, "framework registered")
        }
        Event::FrameworkDisconnected { framework_id } => {
            info!(framework_id = %framework_id, "framework disconnected; waiting for failover")
        }
        Event::FrameworkRemoved {
            framework_id,
            reason,
        } => {
            info!(framework_id = %framework_id, reason = %reason, "framework removed")
        }
        Event::TaskLaunched {
            framework_id,
            task_id,
            agent_id,
        } => {
            debug!(framework_id = %framework_id, task_id = %task_id, agent_id = %agent_id, "task launched")
        }
        Event::RequestRefused { from, reason } => {
            warn!(from = %from, reason = %reason, "request refused")
        }
    }
}

impl Process for Master {
    type Message = ToMaster;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0);
        self.books.set_clock(now(), wall_ms);
        let interval = self
            .books
            .config()
            .allocation_interval
            .max(Duration::from_millis(10));
        ctx.run_every(interval, |master, ctx| master.apply(ctx, Input::Tick));
        info!(pid = %ctx.pid(), "master started");
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToMaster) {
        self.apply(ctx, Input::Received { from, message });
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        self.apply(ctx, Input::Exited(pid));
    }
}
