//! Schedulers: the part of a framework that talks to the master.
//!
//! A scheduler is a type with callbacks ([`Scheduler`]); the SDK runs it
//! as a process ([`spawn`]) and handles the master for it: subscribing
//! (repeated until answered, since messages are delivered at most once),
//! re-subscribing with its framework id after losing the master (a
//! failover), acknowledging status updates on delivery (unless asked not
//! to), and reconciling its tasks after every (re)registration: each task
//! it launched or heard of is asked about until the master answers, with
//! backoff, and then every task the master knows; and asking about the
//! tasks it launched and heard nothing of since, at regular looks (a
//! launch lost on its way is answered as lost). The
//! [`SchedulerDriver`] given to every callback accepts, declines, kills,
//! revives and so on; every call is a message, nothing is buffered (the
//! driver remembers only its framework's unfinished tasks).
//!
//! ```no_run
//! use std::time::Duration;
//! use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
//! use strata_protocol::{CommandInfo, FrameworkInfo, Offer, TaskId, TaskInfo, TaskKind, TaskStatus};
//! use strata_runtime::{Node, NodeConfig, TlsMaterial};
//!
//! /// Runs `echo hello` once, then stops.
//! struct Hello {
//!     launched: bool,
//! }
//!
//! impl Scheduler for Hello {
//!     fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
//!         for offer in offers {
//!             let wanted = "cpus:0.1;mem:32".parse().expect("a valid spec");
//!             if self.launched || !offer.resources.contains(&wanted) {
//!                 driver.decline(&offer.id);
//!                 continue;
//!             }
//!             let task = TaskInfo {
//!                 task_id: TaskId::new("hello").expect("a valid id"),
//!                 name: "hello".into(),
//!                 agent_id: offer.agent_id.clone(),
//!                 resources: wanted,
//!                 kind: TaskKind::Command(CommandInfo::shell("echo hello")),
//!                 labels: Default::default(),
//!             };
//!             driver.launch(&offer.id, vec![task]);
//!             self.launched = true;
//!         }
//!     }
//!
//!     fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
//!         println!("{} is {}", status.task_id, status.state);
//!         if status.state.is_terminal() {
//!             driver.stop(false);
//!         }
//!     }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! actix_rt::System::new().block_on(async {
//!     let tls = TlsMaterial::development(std::path::Path::new(".strata/tls"), strata_runtime::Role::Framework, "hello")?;
//!     let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, tls)).await?;
//!     let master = "master@127.0.0.1:5050".parse()?;
//!     let config = SchedulerConfig::new(master, FrameworkInfo::new("hello", "me"));
//!     let pid = scheduler::spawn(&node, "hello", config, || Hello { launched: false })?;
//!     scheduler::wait(&node, &pid).await?;
//!     Ok(())
//! })
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strata_protocol::{
    AgentId, ExecutorId, Filters, FrameworkId, FrameworkInfo, Offer, OfferConstraint, OfferId,
    Operation, ReconcileTask, TaskId, TaskInfo, TaskStatus, ToMaster, ToScheduler,
};
use strata_runtime::{
    Blob, Node, Process, ProcessContext, Received, RestartPolicy, SpawnError, SpawnOptions, Upid,
};
use tracing::{debug, info, warn};

/// What a scheduler does when the master speaks. Only offers and status
/// updates must be handled; the rest default to doing nothing.
#[allow(unused_variables)]
pub trait Scheduler: Sized + 'static {
    /// The scheduler started and is subscribing: a place to set timers
    /// (calls to the master are dropped until it is subscribed).
    fn started(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>) {}

    /// A timer set with [`SchedulerDriver::set_timer`] fired.
    fn timer(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, token: u64) {}

    /// The master registered this framework under `framework_id`.
    fn registered(
        &mut self,
        driver: &mut SchedulerDriver<'_, '_, Self>,
        framework_id: &FrameworkId,
    ) {
    }

    /// The master (a new one, or the same after a break) took this
    /// framework back; offers made before are void.
    fn reregistered(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>) {}

    /// The master is unreachable; the SDK keeps trying to re-subscribe.
    fn disconnected(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>) {}

    /// Resources to accept or decline. Each offer must be answered.
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>);

    /// An offer was withdrawn (its agent left, or it timed out).
    fn offer_rescinded(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offer_id: &OfferId) {}

    /// A task's state; acknowledged by the SDK unless configured otherwise.
    /// May arrive more than once: it carries an update id to tell.
    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus);

    /// Data from one of this framework's executors.
    fn framework_message(
        &mut self,
        driver: &mut SchedulerDriver<'_, '_, Self>,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
        data: Vec<u8>,
    ) {
    }

    /// An agent is gone; its tasks' updates follow.
    fn agent_lost(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, agent_id: &AgentId) {}

    /// One of this framework's executors ended; its tasks' updates follow.
    fn executor_lost(
        &mut self,
        driver: &mut SchedulerDriver<'_, '_, Self>,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
    ) {
    }

    /// The master refused something; the message says what. A refused
    /// subscription (an invalid role, a framework the master removed) is
    /// final: the scheduler stops after this callback.
    fn error(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, message: &str) {
        warn!(message, "the master reported an error");
    }
}

/// How a scheduler meets its master.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub master: Upid,
    pub info: FrameworkInfo,
    /// Standing filters: the master offers only agents passing all.
    pub constraints: Vec<OfferConstraint>,
    /// Acknowledge status updates as they are delivered (the default);
    /// when false, call [`SchedulerDriver::acknowledge`].
    pub implicit_acknowledgements: bool,
    /// How often an unanswered subscription is repeated.
    pub resubscribe_interval: Duration,
    /// After a (re)registration the driver asks the master for the state
    /// of every task it knows; tasks not answered within this are asked
    /// again, the wait doubling up to [`MAX_RECONCILE_BACKOFF`].
    pub reconcile_backoff: Duration,
    /// How often the driver looks for tasks it launched and has heard
    /// nothing of since. A task still unheard of at the next look (so
    /// after one to two of these) is asked about, and again at each look
    /// until the master answers (at most 10,000 tasks a look, the rest
    /// at the next): a launch the master never received (messages are
    /// delivered at most once: a full send queue refuses them, and a
    /// master that handles nothing for a while drops what waits for its
    /// full mailbox) is then answered as lost rather than waited on
    /// forever.
    pub unheard_launch_check: Duration,
    /// The leading master as it changes (found in ZooKeeper); without
    /// it the scheduler follows `master` alone.
    pub leader: Option<tokio::sync::watch::Receiver<Option<Upid>>>,
}

/// The longest wait between two reconciliations of unanswered tasks.
pub const MAX_RECONCILE_BACKOFF: Duration = Duration::from_secs(60);

/// Most tasks named in one reconciliation message.
const RECONCILE_CHUNK: usize = 10_000;

impl SchedulerConfig {
    pub fn new(master: Upid, info: FrameworkInfo) -> SchedulerConfig {
        SchedulerConfig {
            master,
            info,
            constraints: Vec::new(),
            implicit_acknowledgements: true,
            resubscribe_interval: Duration::from_secs(2),
            reconcile_backoff: Duration::from_secs(1),
            unheard_launch_check: Duration::from_secs(10),
            leader: None,
        }
    }
}

/// The driver's own state, beside the scheduler's.
#[derive(Debug)]
struct State {
    config: SchedulerConfig,
    framework_id: Option<FrameworkId>,
    subscribed: bool,
    /// Tasks launched or reported and not yet terminal, with their agents.
    tasks: BTreeMap<TaskId, Option<AgentId>>,
    /// Tasks of the current reconciliation not answered yet.
    unanswered: BTreeSet<TaskId>,
    /// Tasks launched and not heard of since: those launched since the
    /// last look for them, and those already unheard of then (see
    /// [`SchedulerConfig::unheard_launch_check`]).
    unheard: [BTreeSet<TaskId>; 2],
    /// Bumped by every reconciliation, so older retries stand down.
    reconciliation: u64,
    /// The master followed: older masters' messages are ignored.
    master_epoch: strata_protocol::MasterEpoch,
    /// The master configured, and whether the scheduler talks to another
    /// because that one said it leads (losing it, it asks again).
    configured_master: Upid,
    redirected: bool,
}

impl State {
    fn new(config: SchedulerConfig) -> State {
        State {
            configured_master: config.master.clone(),
            redirected: false,
            config,
            framework_id: None,
            subscribed: false,
            tasks: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            unheard: Default::default(),
            reconciliation: 0,
            master_epoch: Default::default(),
        }
    }

    /// Keeps the driver's view of a task in step with what it hears.
    fn track(&mut self, status: &TaskStatus) {
        self.unanswered.remove(&status.task_id);
        for unheard in &mut self.unheard {
            unheard.remove(&status.task_id);
        }
        if status.state.is_terminal() {
            self.tasks.remove(&status.task_id);
        } else {
            self.tasks
                .insert(status.task_id.clone(), status.agent_id.clone());
        }
    }
}

/// What a scheduler can ask of the master.
pub struct SchedulerDriver<'a, 'b, S: Scheduler> {
    ctx: &'a mut ProcessContext<'b, SchedulerProcess<S>>,
    state: &'a mut State,
}

impl<S: Scheduler> std::fmt::Debug for SchedulerDriver<'_, '_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerDriver")
            .field("framework_id", &self.state.framework_id)
            .finish_non_exhaustive()
    }
}

impl<S: Scheduler> SchedulerDriver<'_, '_, S> {
    /// This framework's id, once registered.
    pub fn framework_id(&self) -> Option<&FrameworkId> {
        self.state.framework_id.as_ref()
    }

    /// Whether the master has this framework now (calls are sent only
    /// then).
    pub fn subscribed(&self) -> bool {
        self.state.subscribed
    }

    /// Calls [`Scheduler::timer`] with `token` after `after` (delay
    /// scheduling, deadlines).
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        self.ctx.run_later(after, move |process, ctx| {
            process.with_driver(ctx, |scheduler, driver| scheduler.timer(driver, token))
        });
    }

    fn call(&mut self, make: impl FnOnce(FrameworkId) -> ToMaster) {
        let framework_id = match &self.state.framework_id {
            Some(framework_id) if self.state.subscribed => framework_id.clone(),
            // The master does not know this scheduler now; at most once,
            // so the call is dropped and the protocol recovers.
            _ => {
                debug!("call while not subscribed dropped");
                return;
            }
        };
        let master = self.state.config.master.clone();
        if let Err(error) = self.ctx.send(&master, make(framework_id)) {
            // At most once: the protocol recovers (offers are rescinded or
            // re-made, tasks reconciled).
            debug!(cause = %error, "call to the master not sent");
        }
    }

    /// Uses offers (all on one agent): runs the operations; what is left is
    /// declined with `filters`.
    pub fn accept(
        &mut self,
        offer_ids: Vec<OfferId>,
        operations: Vec<Operation>,
        filters: Filters,
    ) {
        for operation in &operations {
            match operation {
                Operation::Launch(tasks) => {
                    for task in tasks {
                        self.state
                            .tasks
                            .insert(task.task_id.clone(), Some(task.agent_id.clone()));
                        self.state.unheard[0].insert(task.task_id.clone());
                    }
                }
            }
        }
        self.call(|framework_id| ToMaster::Accept {
            framework_id,
            offer_ids,
            operations,
            filters,
        });
    }

    /// Launches tasks on one offer, declining the rest with default filters.
    pub fn launch(&mut self, offer_id: &OfferId, tasks: Vec<TaskInfo>) {
        self.accept(
            vec![offer_id.clone()],
            vec![Operation::Launch(tasks)],
            Filters::default(),
        );
    }

    /// Declines an offer with default filters (5 s).
    pub fn decline(&mut self, offer_id: &OfferId) {
        self.decline_with(offer_id, Filters::default());
    }

    /// Declines an offer, refusing its agent for `filters.refuse`.
    pub fn decline_with(&mut self, offer_id: &OfferId, filters: Filters) {
        let offer_ids = vec![offer_id.clone()];
        self.call(|framework_id| ToMaster::Decline {
            framework_id,
            offer_ids,
            filters,
        });
    }

    /// Offers again, and forget earlier declines.
    pub fn revive(&mut self) {
        self.call(|framework_id| ToMaster::Revive { framework_id });
    }

    /// No offers until revived.
    pub fn suppress(&mut self) {
        self.call(|framework_id| ToMaster::Suppress { framework_id });
    }

    /// Replaces the standing filters.
    pub fn set_constraints(&mut self, constraints: Vec<OfferConstraint>) {
        self.state.config.constraints = constraints.clone();
        self.call(|framework_id| ToMaster::SetConstraints {
            framework_id,
            constraints,
        });
    }

    pub fn kill(&mut self, task_id: &TaskId) {
        let task_id = task_id.clone();
        self.call(|framework_id| ToMaster::Kill {
            framework_id,
            task_id,
        });
    }

    /// Acknowledges a status update (needed only without implicit
    /// acknowledgements; updates without an update id need none).
    pub fn acknowledge(&mut self, status: &TaskStatus) {
        let (Some(update_id), Some(agent_id)) = (status.update_id, status.agent_id.clone()) else {
            return;
        };
        let task_id = status.task_id.clone();
        self.call(|framework_id| ToMaster::Acknowledge {
            framework_id,
            agent_id,
            task_id,
            update_id,
        });
    }

    /// Asks for these tasks' states (all non-terminal ones if empty);
    /// answers arrive as status updates with reason RECONCILIATION.
    pub fn reconcile(&mut self, tasks: Vec<ReconcileTask>) {
        self.call(|framework_id| ToMaster::Reconcile {
            framework_id,
            tasks,
        });
    }

    /// Sends data to one of this framework's executors (at most once).
    pub fn send_framework_message(
        &mut self,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
        data: Vec<u8>,
    ) {
        let (agent_id, executor_id) = (agent_id.clone(), executor_id.clone());
        self.call(|framework_id| ToMaster::FrameworkMessage {
            framework_id,
            agent_id,
            executor_id,
            data: Blob(data),
        });
    }

    /// Shuts down one of this framework's executors on `agent_id`: its
    /// tasks end TASK_KILLED, then it is stopped.
    pub fn shutdown_executor(&mut self, agent_id: &AgentId, executor_id: &ExecutorId) {
        let (agent_id, executor_id) = (agent_id.clone(), executor_id.clone());
        self.call(|framework_id| ToMaster::ShutdownExecutor {
            framework_id,
            agent_id,
            executor_id,
        });
    }

    /// Changes this framework's name, failover timeout and capabilities
    /// in place (its user, principal, roles and checkpointing stay; the
    /// master refuses a change to them with an error). Later
    /// subscriptions (after a reconnection) use the new description.
    pub fn update_framework(&mut self, info: FrameworkInfo) {
        let mut kept = self.state.config.info.clone();
        kept.name = info.name;
        kept.failover_timeout = info.failover_timeout;
        kept.capabilities = info.capabilities;
        self.state.config.info = kept.clone();
        self.call(|framework_id| ToMaster::UpdateFramework {
            framework_id,
            info: kept,
        });
    }

    /// Stops the scheduler. With `failover`, the master keeps the
    /// framework and its tasks for its failover timeout, for another
    /// scheduler to take over; without, the framework is torn down.
    pub fn stop(&mut self, failover: bool) {
        if !failover {
            self.call(|framework_id| ToMaster::Teardown { framework_id });
        }
        self.ctx.stop();
    }
}

/// The process hosting a [`Scheduler`].
#[derive(Debug)]
pub struct SchedulerProcess<S> {
    scheduler: S,
    state: State,
}

impl<S: Scheduler> SchedulerProcess<S> {
    fn with_driver(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        call: impl FnOnce(&mut S, &mut SchedulerDriver<'_, '_, S>),
    ) {
        let mut driver = SchedulerDriver {
            ctx,
            state: &mut self.state,
        };
        call(&mut self.scheduler, &mut driver);
    }

    /// Asks for the state of every task the driver knows, then of every
    /// task the master knows (which finds tasks the driver never heard
    /// of), and asks again for the unanswered ones with backoff.
    fn start_reconciliation(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.state.reconciliation += 1;
        self.state.unanswered = self.state.tasks.keys().cloned().collect();
        self.reconcile_unanswered(ctx);
        self.with_driver(ctx, |_, driver| driver.reconcile(Vec::new()));
        let backoff = self.state.config.reconcile_backoff;
        self.retry_reconciliation(ctx, self.state.reconciliation, backoff);
    }

    fn reconcile_unanswered(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let unanswered = self.state.unanswered.clone();
        self.ask_about(ctx, &unanswered);
    }

    /// Asks the master for the states of `tasks`.
    fn ask_about(&mut self, ctx: &mut ProcessContext<'_, Self>, tasks: &BTreeSet<TaskId>) {
        let asked: Vec<ReconcileTask> = tasks
            .iter()
            .map(|task_id| ReconcileTask {
                task_id: task_id.clone(),
                agent_id: self.state.tasks.get(task_id).cloned().flatten(),
            })
            .collect();
        self.with_driver(ctx, |_, driver| {
            for chunk in asked.chunks(RECONCILE_CHUNK) {
                driver.reconcile(chunk.to_vec());
            }
        });
    }

    fn retry_reconciliation(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        reconciliation: u64,
        delay: Duration,
    ) {
        ctx.run_later(delay, move |process, ctx| {
            let state = &process.state;
            if state.reconciliation != reconciliation
                || !state.subscribed
                || state.unanswered.is_empty()
            {
                return;
            }
            debug!(
                tasks = state.unanswered.len(),
                "reconciling unanswered tasks again"
            );
            process.reconcile_unanswered(ctx);
            let next = (delay * 2).min(MAX_RECONCILE_BACKOFF);
            process.retry_reconciliation(ctx, reconciliation, next);
        });
    }

    /// Asks about the tasks launched and unheard of since the last look
    /// (the answer may be that the master never heard of them either);
    /// the rest are looked at next time.
    fn check_unheard_launches(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let [recent, older] = &mut self.state.unheard;
        let mut asked = std::mem::replace(older, std::mem::take(recent));
        // At most one message's worth a look: the rest wait for the next,
        // so a master that is slow to answer is not asked ever more.
        if let Some(first_left) = asked.iter().nth(RECONCILE_CHUNK).cloned() {
            older.append(&mut asked.split_off(&first_left));
        }
        // While not subscribed, the reconciliation that follows
        // subscribing asks about every task.
        if asked.is_empty() || !self.state.subscribed {
            return;
        }
        debug!(
            tasks = asked.len(),
            "asking about launched tasks not heard of since"
        );
        self.ask_about(ctx, &asked);
        self.state.unheard[1].extend(asked);
    }

    /// Another master leads: it is subscribed with at once.
    fn follow_leader(&mut self, ctx: &mut ProcessContext<'_, Self>, master: Upid) {
        if master.same_name(&self.state.config.master) {
            return;
        }
        info!(old = %self.state.config.master, new = %master, "another master leads; subscribing with it");
        self.state.config.master = master;
        self.state.redirected = false;
        if self.state.subscribed {
            self.state.subscribed = false;
            self.with_driver(ctx, |scheduler, driver| scheduler.disconnected(driver));
        }
        self.subscribe(ctx);
    }

    fn subscribe(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        if self.state.subscribed {
            return;
        }
        let mut info = self.state.config.info.clone();
        // After the first registration, a subscription is a failover.
        info.id = self.state.framework_id.clone().or(info.id);
        let message = ToMaster::Subscribe {
            info,
            constraints: self.state.config.constraints.clone(),
        };
        let master = self.state.config.master.clone();
        ctx.link(&master);
        if let Err(error) = ctx.send(&master, message) {
            debug!(cause = %error, "subscription not sent; retrying");
        }
    }
}

impl<S: Scheduler> Process for SchedulerProcess<S> {
    type Message = ToScheduler;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.with_driver(ctx, |scheduler, driver| scheduler.started(driver));
        if let Some(leader) = self.state.config.leader.clone() {
            ctx.follow(leader, |process, ctx, leader| {
                if let Some(master) = leader {
                    process.follow_leader(ctx, master);
                }
            });
        }
        self.subscribe(ctx);
        ctx.run_every(self.state.config.resubscribe_interval, |process, ctx| {
            process.subscribe(ctx)
        });
        ctx.run_every(self.state.config.unheard_launch_check, |process, ctx| {
            process.check_unheard_launches(ctx)
        });
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToScheduler) {
        let answer = matches!(
            message,
            ToScheduler::Subscribed { .. }
                | ToScheduler::Error { .. }
                | ToScheduler::NotLeader { .. }
        );
        let master = &self.state.config.master;
        match self.state.master_epoch.check(master, &from, answer) {
            Ok(()) => {}
            Err(strata_protocol::NotFromMaster::Stranger) => {
                warn!(from = %from, "message not from the master dropped");
                return;
            }
            Err(strata_protocol::NotFromMaster::Earlier) => {
                debug!(from = %from, "message from an earlier master ignored");
                return;
            }
        }
        match message {
            ToScheduler::NotLeader { leader } => {
                // The master named does not lead: subscribe with the one
                // it names (only a master's certificate may say so), unless
                // the leader comes from ZooKeeper, which knows better.
                if self.state.config.leader.is_some() {
                    debug!("a master does not lead; the leader comes from ZooKeeper");
                    return;
                }
                if !ctx.sender_identity().is(strata_runtime::tls::Role::Master) {
                    warn!(from = %from, "a not-leader answer from a non-master dropped");
                    return;
                }
                match leader.as_deref().map(str::parse::<Upid>) {
                    // The next subscription, at its time, goes there (two
                    // standbys naming each other must not make it spin).
                    Some(Ok(leader)) if !leader.same_name(&self.state.config.master) => {
                        info!(old = %self.state.config.master, new = %leader, "the master does not lead; subscribing with the one it names");
                        self.state.config.master = leader;
                        self.state.redirected = !self
                            .state
                            .config
                            .master
                            .same_name(&self.state.configured_master);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => warn!("the master named a leader that is not an address"),
                    None => debug!("the master does not lead and knows no leader; trying again"),
                }
            }
            ToScheduler::Subscribed {
                framework_id,
                epoch,
            } => {
                if !self.state.master_epoch.registered(epoch, &from) {
                    warn!(from = %from, epoch, "subscription from an earlier master ignored");
                    return;
                }
                if self.state.subscribed {
                    return;
                }
                let first = self.state.framework_id.is_none();
                self.state.subscribed = true;
                self.state.framework_id = Some(framework_id.clone());
                info!(framework_id = %framework_id, "subscribed");
                self.with_driver(ctx, |scheduler, driver| {
                    if first {
                        scheduler.registered(driver, &framework_id);
                    } else {
                        scheduler.reregistered(driver);
                    }
                });
                self.start_reconciliation(ctx);
            }
            ToScheduler::Offers(offers) => self.with_driver(ctx, |scheduler, driver| {
                scheduler.resource_offers(driver, offers)
            }),
            ToScheduler::OfferRescinded { offer_id } => self
                .with_driver(ctx, |scheduler, driver| {
                    scheduler.offer_rescinded(driver, &offer_id)
                }),
            ToScheduler::Update { status } => {
                self.state.track(&status);
                let implicit = self.state.config.implicit_acknowledgements;
                self.with_driver(ctx, |scheduler, driver| {
                    // Acknowledged on delivery, before the callback, so a
                    // scheduler that stops in it has acknowledged already.
                    if implicit {
                        driver.acknowledge(&status);
                    }
                    scheduler.status_update(driver, &status);
                });
            }
            ToScheduler::AgentLost { agent_id } => self.with_driver(ctx, |scheduler, driver| {
                scheduler.agent_lost(driver, &agent_id)
            }),
            ToScheduler::FrameworkMessage {
                agent_id,
                executor_id,
                data,
            } => self.with_driver(ctx, |scheduler, driver| {
                scheduler.framework_message(driver, &agent_id, &executor_id, data.0)
            }),
            ToScheduler::ExecutorLost {
                agent_id,
                executor_id,
            } => self.with_driver(ctx, |scheduler, driver| {
                scheduler.executor_lost(driver, &agent_id, &executor_id)
            }),
            ToScheduler::Error { message } => {
                self.with_driver(ctx, |scheduler, driver| scheduler.error(driver, &message));
                // Calls are only sent while subscribed, so an error now
                // answers the subscription itself.
                if !self.state.subscribed {
                    warn!(message, "the master refused the subscription; stopping");
                    ctx.stop();
                }
            }
        }
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        if !pid.same_name(&self.state.config.master) {
            return;
        }
        // Until subscribed again, each attempt links anew (and a failed
        // one is reported here again): it is not news.
        if !self.state.subscribed {
            return;
        }
        warn!(master = %pid, "lost the master; re-subscribing");
        if self.state.redirected {
            // Sent there by the configured master: ask it again.
            self.state.config.master = self.state.configured_master.clone();
            self.state.redirected = false;
        }
        self.state.subscribed = false;
        self.with_driver(ctx, |scheduler, driver| scheduler.disconnected(driver));
        self.subscribe(ctx);
    }
}

/// Starts a scheduler as process `id` on `node`.
pub fn spawn<S: Scheduler>(
    node: &Node,
    id: &str,
    config: SchedulerConfig,
    factory: impl Fn() -> S + 'static,
) -> Result<Upid, SpawnError> {
    node.spawn(
        id,
        move || SchedulerProcess {
            scheduler: factory(),
            state: State::new(config.clone()),
        },
        // A scheduler that fails is reported, not silently restarted with
        // an empty state.
        SpawnOptions::default().restart(RestartPolicy::never()),
    )
}

/// Waits until the scheduler `pid` on `node` stops.
pub async fn wait(node: &Node, pid: &Upid) -> Result<(), SpawnError> {
    let mut watcher = node.inbox::<u64>(&format!("{}-watcher", pid.id()), 1)?;
    watcher.link(pid);
    while let Some(event) = watcher.recv().await {
        if matches!(event, Received::Exited(_)) {
            break;
        }
    }
    Ok(())
}
