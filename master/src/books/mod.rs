//! The master's books: the authoritative record of agents, frameworks,
//! offers and tasks, as a pure state machine.
//!
//! [`Books::handle`] takes what happened ([`Input`]: a message, a tick of
//! the clock, a link that broke) and the current time, updates the books
//! and returns what to do as data ([`Command`]: messages to send,
//! processes to link to, events to log). It does no IO, reads no clock and
//! draws no random numbers: ids come from counters under a prefix chosen by
//! the shell, so a simulation replays exactly.
//!
//! Requests are checked against the sender's certificate: its role, the
//! principal it names, and the ACLs in [`Config::authorizer`]
//! (register_frameworks on subscription, run_tasks on launch).
//!
//! Split by concern: `agents` (admission, pings, loss and return),
//! `frameworks` (subscription, disconnection, teardown), `offers`
//! (allocation into offers, accepts, declines, rescinds), `tasks`
//! (status updates, kills, reconciliation), `recovery` (the registry) and
//! `invariants` (what must hold after every input).

mod agents;
mod frameworks;
mod offers;
pub mod operator;
mod recovery;
mod tasks;
pub mod tracked;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use strata_protocol::{
    AgentId, AgentInfo, Filters, FrameworkId, FrameworkInfo, Offer, OfferConstraint, OfferId,
    Resources, Task, TaskId, ToAgent, ToMaster, ToScheduler,
};
use strata_runtime::{PeerIdentity, ProcessName, Role, Upid};

use crate::allocator::{Allocator, HierarchicalAllocator, Policy};
use crate::authorization::Authorizer;
pub use tracked::{Changes, Tracked};

/// How the master judges agents and offers.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an agent has to answer a ping (Mesos: 15 s).
    pub agent_ping_timeout: Duration,
    /// Unanswered pings in a row before an agent is unreachable (Mesos: 5).
    pub max_missed_pongs: u32,
    /// Offers unused for this long are rescinded; never when `None`
    /// (Mesos's default).
    pub offer_timeout: Option<Duration>,
    /// How often the shell should send [`Input::Tick`] (Mesos: 1 s).
    pub allocation_interval: Duration,
    /// Most agents one input allocates: a pass over every agent (each
    /// tick's, or after a framework subscribes or revives) goes on in
    /// [`Input::Continue`]s, so no input holds the master for long, and
    /// messages that arrive meanwhile are handled between slices. 500
    /// agents offered take about 3 ms with their messages at 50,000.
    pub allocation_slice: usize,
    /// Most offers, tasks and agents one input takes from a framework
    /// being removed (its offers go back, its tasks end, its agents shut
    /// it down); the rest go on in [`Input::Continue`]s. 100 tasks with
    /// their messages take about 2 ms at 50,000 agents.
    pub removal_slice: usize,
    /// Most agents one input pings; those due beyond are pinged in the
    /// [`Input::Continue`]s after the tick, before its pass of allocation
    /// (at 50,000 agents a ping interval of 15 s makes about 3,300 a
    /// second).
    pub ping_slice: usize,
    pub policy: Policy,
    /// Most finished tasks remembered per framework for operators.
    pub completed_tasks_kept: usize,
    /// How long a restarted master waits for its agents to re-register
    /// before it takes them as unreachable (Mesos: 10 min).
    pub agent_reregister_timeout: Duration,
    /// Who may register frameworks in which roles and run tasks as which
    /// users; allows everything by default, as Mesos without ACLs does.
    pub authorizer: Authorizer,
    /// Most agents admitted; more are refused. With agent descriptions
    /// of at most `MAX_AGENT_INFO_BYTES` the registry stays readable.
    pub max_agents: usize,
    /// Most agent ids one agent certificate may hold: a stolen one cannot
    /// use up the agents the master admits. Nodes that host many agents
    /// (emulators) share one certificate, hence more than one.
    pub max_agents_per_certificate: usize,
    /// Most frameworks one principal may have at once.
    pub max_frameworks_per_principal: usize,
    /// Most unfinished tasks one framework may have; launches beyond are
    /// answered TASK_ERROR.
    pub max_tasks_per_framework: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            agent_ping_timeout: Duration::from_secs(15),
            max_missed_pongs: 5,
            offer_timeout: None,
            allocation_interval: Duration::from_secs(1),
            allocation_slice: 500,
            removal_slice: 100,
            ping_slice: 1_000,
            policy: Policy::Drf,
            completed_tasks_kept: 1000,
            agent_reregister_timeout: Duration::from_secs(600),
            authorizer: Authorizer::default(),
            max_agents: 50_000,
            max_agents_per_certificate: 1_000,
            max_frameworks_per_principal: 1_000,
            max_tasks_per_framework: 100_000,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Input {
    Received {
        from: Upid,
        /// Who the sender's certificate says it is.
        sender: std::sync::Arc<PeerIdentity>,
        message: ToMaster,
    },
    /// The periodic tick: pings, offer timeouts, failovers, allocation.
    Tick,
    /// The next slice of what is left: the pings due beyond one input's
    /// share, then a framework's removal, then a pass of allocation over
    /// every agent. The shell sends it while [`Books::work_left`] says so.
    Continue,
    /// A linked process exited or its node became unreachable.
    Exited(Upid),
    /// The shell could not send `offers` to the scheduler at `to`: the
    /// send was refused (the send queue to its node full, even while
    /// dialling; its mailbox full or its process unknown on this node;
    /// the message too large; the node shutting down). They never reached
    /// it, so they come back as if declined with the default filters;
    /// held, they would keep their resources from every framework until
    /// this one went. (Offers lost after they were queued come back when
    /// the broken link disconnects the framework.)
    OffersNotSent { to: Upid, offers: Vec<OfferId> },
}

/// Something the books want logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    AgentAdmitted {
        agent_id: AgentId,
        pid: Upid,
    },
    AgentReturned {
        agent_id: AgentId,
    },
    AgentUnreachable {
        agent_id: AgentId,
        missed_pongs: u32,
    },
    AgentRefused {
        pid: Upid,
        reason: String,
    },
    FrameworkRegistered {
        framework_id: FrameworkId,
        name: String,
    },
    FrameworkDisconnected {
        framework_id: FrameworkId,
    },
    FrameworkRemoved {
        framework_id: FrameworkId,
        reason: String,
    },
    TaskLaunched {
        framework_id: FrameworkId,
        task_id: TaskId,
        agent_id: AgentId,
    },
    RequestRefused {
        from: Upid,
        reason: String,
    },
    OperatorKill {
        from: Upid,
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// A task reached the state of `status` (logged at debug level; the
    /// operator API streams it).
    TaskUpdated {
        framework_id: FrameworkId,
        status: strata_protocol::TaskStatus,
        /// Who the task runs as (for the view ACLs of who is told).
        user: String,
    },
    /// A known framework's scheduler subscribed again (a failover).
    FrameworkResubscribed {
        framework_id: FrameworkId,
    },
    /// A framework changed its description (UPDATE_FRAMEWORK).
    FrameworkUpdated {
        framework_id: FrameworkId,
    },
    /// An operator marked an agent gone.
    AgentGone {
        from: Upid,
        agent_id: AgentId,
    },
}

/// What to do.
// Commands are made and carried out at once; boxing would only add
// allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    ToAgent(Upid, ToAgent),
    ToScheduler(Upid, ToScheduler),
    /// Link to a process, to hear when it goes away.
    Link(Upid),
    Log(Event),
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Active,
    Unreachable { since: Instant },
}

/// One agent in the books.
#[derive(Debug, Clone)]
pub struct AgentEntry {
    /// Shared with its entry in the registry.
    pub info: std::sync::Arc<AgentInfo>,
    pub pid: Upid,
    /// The name in the certificate that registered this agent id; only
    /// that certificate may re-register it.
    pub certificate_name: String,
    pub status: AgentStatus,
    /// Unanswered pings in a row.
    pub missed_pongs: u32,
    awaiting_pong: bool,
    next_ping_at: Instant,
    ping_sequence: u64,
    /// Tasks on the agent that are not terminal.
    pub tasks: BTreeSet<(FrameworkId, TaskId)>,
    /// Tasks there a kill was asked for that have not ended: the kill is
    /// sent again when the agent re-registers (the first may have gone to
    /// a life of the agent that had just died, as Mesos's master
    /// retries kills of a returning agent).
    pub kills: BTreeSet<(FrameworkId, TaskId)>,
    /// Custom executors running there, with their own resources.
    pub executors: BTreeMap<(FrameworkId, strata_protocol::ExecutorId), Resources>,
    pub offers: BTreeSet<OfferId>,
}

/// One framework in the books.
#[derive(Debug, Clone)]
pub struct FrameworkEntry {
    pub info: FrameworkInfo,
    /// `None` while its scheduler is disconnected.
    pub pid: Option<Upid>,
    /// When a disconnected framework is removed.
    pub failover_deadline: Option<Instant>,
    pub constraints: Vec<OfferConstraint>,
    /// Tasks not yet terminal, and terminal ones until their agent drops
    /// them; see `completed` for history.
    pub tasks: Tracked<TaskId, Task>,
    /// Recently finished tasks, oldest first, at most
    /// [`Config::completed_tasks_kept`].
    pub completed: std::collections::VecDeque<Task>,
    /// How many tasks were ever filed in `completed`: the last of them is
    /// number `filed - 1`.
    pub filed: u64,
    pub offers: BTreeSet<OfferId>,
    /// Each known task's states so far, oldest first (at most
    /// [`HISTORY_KEPT`] per task: the first and the latest).
    pub history: BTreeMap<TaskId, Vec<Transition>>,
    /// Why it is being removed, while its offers go back and its tasks
    /// end a slice at a time; it has no scheduler and is offered nothing
    /// meanwhile.
    pub removing: Option<String>,
}

/// Most state changes remembered per task.
pub const HISTORY_KEPT: usize = 32;

/// One state a task reached, when, and what was said: kept in the
/// books as the views show it.
pub use strata_api::views::Transition;

/// Who `task` of a framework of `framework_user` runs as: its command's
/// user, else its framework's.
pub fn task_user(task: &strata_protocol::TaskInfo, framework_user: &str) -> String {
    match &task.kind {
        strata_protocol::TaskKind::Command(command) => command.user.as_deref(),
        strata_protocol::TaskKind::Executor(executor) => executor.command.user.as_deref(),
    }
    .unwrap_or(framework_user)
    .to_owned()
}

impl FrameworkEntry {
    /// Records that `task_id` reached `state`.
    pub(crate) fn record(&mut self, task_id: &TaskId, transition: Transition) {
        self.tasks.mark(task_id);
        let history = self.history.entry(task_id.clone()).or_default();
        if history.len() >= HISTORY_KEPT {
            history.remove(1);
        }
        history.push(transition);
    }
}

/// What changed for operators' views (see [`Books::take_view_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewChanges {
    pub agents: Changes<AgentId>,
    pub offers: Changes<OfferId>,
    pub frameworks: Changes<FrameworkId>,
    /// The tasks of each framework that changed.
    pub tasks: Vec<(FrameworkId, Changes<TaskId>)>,
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub struct OfferEntry {
    pub offer: Offer,
    pub created_at: Instant,
}

/// The master's books.
/// Most removed framework ids remembered to refuse their return. Apache
/// Mesos remembers 50 completed frameworks by default
/// (`--max_completed_frameworks`); ids are small, so more are kept here.
pub const REMOVED_FRAMEWORKS_KEPT: usize = 1000;

pub struct Books {
    config: Config,
    /// Prefix of every id this master hands out.
    id_prefix: String,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    allocator: Box<dyn Allocator>,
    agents: Tracked<AgentId, AgentEntry>,
    /// Agent ids by process name (the address, incarnation left out).
    agents_by_pid: BTreeMap<ProcessName, AgentId>,
    /// When each active agent is pinged next: the tick takes those that
    /// are due without a pass over every agent. An entry whose agent is
    /// gone, not active or due at another time is stale, and is dropped
    /// when it comes due (within one ping interval).
    pings: BTreeSet<(Instant, AgentId)>,
    /// Whether more pings were due than the last input sent.
    pings_left: bool,
    /// The agents where each framework may have tasks, kills or
    /// executors (those it launched tasks on, or that came back with its
    /// tasks): a teardown visits them rather than every agent. A
    /// superset; a framework's entry goes with it.
    framework_agents: BTreeMap<FrameworkId, BTreeSet<AgentId>>,
    frameworks: Tracked<FrameworkId, FrameworkEntry>,
    frameworks_by_pid: BTreeMap<ProcessName, FrameworkId>,
    /// Frameworks this master removed, most recent last, so one cannot
    /// come back under its old id (at most [`REMOVED_FRAMEWORKS_KEPT`]).
    removed_frameworks: std::collections::VecDeque<FrameworkId>,
    /// Frameworks being removed beyond the input that began it, first
    /// begun first: the next slice goes to the first.
    removing: std::collections::VecDeque<FrameworkId>,
    /// Agents an operator marked gone (never admitted again), and the
    /// order they were marked in.
    gone_agents: BTreeSet<AgentId>,
    gone_order: std::collections::VecDeque<AgentId>,
    offers: Tracked<OfferId, OfferEntry>,
    /// An instant and the wall-clock time then, in milliseconds since the
    /// Unix epoch, so statuses carry wall-clock timestamps without the
    /// books reading a clock.
    clock_anchor: Option<(Instant, u64)>,
    /// This master's epoch, higher than any earlier master's.
    master_epoch: u64,
    /// Bumped whenever what the registry holds changes.
    registry_changes: u64,
    /// Each agent's registry entry as last written, and the agents whose
    /// entry may have changed since: a write of the registry redoes
    /// those alone and shares the rest (at 50,000 agents, copying every
    /// entry for each write took the master tens of milliseconds).
    /// Kept once the registry is first asked for (a master without one
    /// keeps nothing).
    registered: BTreeMap<AgentId, std::sync::Arc<crate::registry::RegisteredAgent>>,
    registered_stale: BTreeSet<AgentId>,
    registered_kept: bool,
    /// Agents of the previous master that have not re-registered yet, and
    /// until when they may.
    recovering_agents: BTreeSet<AgentId>,
    recovery_deadline: Option<Instant>,
    /// How many tasks ended in each terminal state, for metrics.
    ended: BTreeMap<strata_protocol::TaskState, u64>,
    /// Requests refused because the sender's identity may not make them.
    denied: u64,
    /// How many agent ids each agent certificate name holds.
    agents_per_certificate: BTreeMap<String, usize>,
    /// Whether every framework this master (or its predecessors) issued
    /// and did not remove is in the books: true once a registry was
    /// recovered; a master without one accepts ids it does not know.
    knows_every_framework: bool,
    /// Where the allocation of every agent is: the last agent allocated,
    /// and how many agents the pass has yet to visit (none: no pass).
    allocation_cursor: Option<AgentId>,
    allocation_left: usize,
    /// Frameworks removed lately, most recent last, with their ended
    /// tasks, for operators (at most [`COMPLETED_FRAMEWORKS_KEPT`]).
    completed_frameworks: std::collections::VecDeque<FrameworkEntry>,
}

/// Most removed frameworks kept for operators to see (Apache Mesos's
/// `--max_completed_frameworks` default).
pub const COMPLETED_FRAMEWORKS_KEPT: usize = 50;

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Books")
            .field("agents", &self.agents.len())
            .field("frameworks", &self.frameworks.len())
            .field("offers", &self.offers.len())
            .finish_non_exhaustive()
    }
}

impl Books {
    /// Empty books; every id handed out starts with `id_prefix` (the
    /// shell uses the master's incarnation, so ids never repeat across
    /// restarts).
    pub fn new(config: Config, id_prefix: impl Into<String>) -> Books {
        let allocator = Box::new(HierarchicalAllocator::new(config.policy));
        Books::with_allocator(config, id_prefix, allocator)
    }

    /// Books with another allocator.
    pub fn with_allocator(
        config: Config,
        id_prefix: impl Into<String>,
        allocator: Box<dyn Allocator>,
    ) -> Books {
        Books {
            config,
            id_prefix: id_prefix.into(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            allocator,
            agents: Tracked::default(),
            agents_by_pid: BTreeMap::new(),
            frameworks: Tracked::default(),
            frameworks_by_pid: BTreeMap::new(),
            removed_frameworks: std::collections::VecDeque::new(),
            removing: std::collections::VecDeque::new(),
            gone_agents: BTreeSet::new(),
            gone_order: std::collections::VecDeque::new(),
            offers: Tracked::default(),
            clock_anchor: None,
            master_epoch: 0,
            registry_changes: 0,
            recovering_agents: BTreeSet::new(),
            registered: BTreeMap::new(),
            registered_stale: BTreeSet::new(),
            registered_kept: false,
            pings: BTreeSet::new(),
            pings_left: false,
            framework_agents: BTreeMap::new(),
            recovery_deadline: None,
            ended: BTreeMap::new(),
            denied: 0,
            agents_per_certificate: BTreeMap::new(),
            knows_every_framework: false,
            allocation_cursor: None,
            allocation_left: 0,
            completed_frameworks: std::collections::VecDeque::new(),
        }
    }

    /// Anchors wall-clock timestamps: at `instant` it was `wall_ms`.
    pub fn set_clock(&mut self, instant: Instant, wall_ms: u64) {
        self.clock_anchor = Some((instant, wall_ms));
    }

    /// Milliseconds since the Unix epoch at `now` (zero until anchored).
    fn wall_ms(&self, now: Instant) -> u64 {
        match self.clock_anchor {
            Some((instant, wall_ms)) => {
                wall_ms + now.saturating_duration_since(instant).as_millis() as u64
            }
            None => 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ACLs the books enforce (register_frameworks, run_tasks), for
    /// views to decide who sees what by the same rules.
    pub fn authorizer(&self) -> &Authorizer {
        &self.config.authorizer
    }

    pub fn agents(&self) -> &BTreeMap<AgentId, AgentEntry> {
        &self.agents
    }

    pub fn frameworks(&self) -> &BTreeMap<FrameworkId, FrameworkEntry> {
        &self.frameworks
    }

    pub fn offers(&self) -> &BTreeMap<OfferId, OfferEntry> {
        &self.offers
    }

    /// Frameworks removed lately, with their ended tasks.
    pub fn completed_frameworks(&self) -> &std::collections::VecDeque<FrameworkEntry> {
        &self.completed_frameworks
    }

    /// What changed for operators' views since the last call: agents,
    /// offers and frameworks by key, and for each framework that changed,
    /// its tasks (a framework no longer in the books, current or
    /// completed, has all its tasks changed).
    pub fn take_view_changes(&mut self) -> ViewChanges {
        let agents = self.agents.take_changes();
        let offers = self.offers.take_changes();
        let frameworks = self.frameworks.take_changes();
        let mut tasks = Vec::new();
        let changed: Vec<FrameworkId> = match &frameworks {
            Changes::All => self
                .frameworks
                .keys()
                .cloned()
                .chain(
                    self.completed_frameworks
                        .iter()
                        .filter_map(|framework| framework.info.id.clone()),
                )
                .collect(),
            Changes::Keys(keys) => keys.iter().cloned().collect(),
        };
        for framework_id in changed {
            let entry = match self.frameworks.get_mut_unseen(&framework_id) {
                Some(entry) => Some(entry),
                None => self
                    .completed_frameworks
                    .iter_mut()
                    .find(|entry| entry.info.id.as_ref() == Some(&framework_id)),
            };
            let changes = entry.map_or(Changes::All, |entry| entry.tasks.take_changes());
            // With every framework changed the views start anew: every
            // task of each is listed again.
            let changes = match frameworks {
                Changes::All => Changes::All,
                Changes::Keys(_) => changes,
            };
            tasks.push((framework_id, changes));
        }
        ViewChanges {
            agents,
            offers,
            frameworks,
            tasks,
        }
    }

    /// The prefix of every id these books hand out: the master's id.
    pub fn id_prefix(&self) -> &str {
        &self.id_prefix
    }

    /// How many tasks ended in each terminal state since this master
    /// started.
    pub fn ended(&self) -> &BTreeMap<strata_protocol::TaskState, u64> {
        &self.ended
    }

    /// Requests refused since this master started because the sender's
    /// identity was not allowed to make them (wrong role, another
    /// principal's framework, another certificate's agent id, an ACL).
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Milliseconds since the Unix epoch at `now`, by the clock the shell
    /// anchored.
    pub fn wall_clock_ms(&self, now: Instant) -> u64 {
        self.wall_ms(now)
    }

    /// Whether a pass of allocation over every agent goes on.
    pub fn allocating(&self) -> bool {
        self.allocation_left > 0
    }

    /// Whether pings are due beyond what the last input sent, a framework
    /// is being removed, or a pass of allocation goes on: the shell then
    /// sends [`Input::Continue`] until none is left.
    pub fn work_left(&self) -> bool {
        self.pings_left || !self.removing.is_empty() || self.allocating()
    }

    /// Free (neither offered nor used) resources of an agent.
    pub fn free(&self, agent_id: &AgentId) -> Option<Resources> {
        self.allocator.free(agent_id)
    }

    /// Applies one input at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Received {
                from,
                sender,
                message,
            } => self.received(now, from, &sender, message, &mut out),
            Input::Tick => self.tick(now, &mut out),
            Input::Continue if self.pings_left => self.ping_agents(now, &mut out),
            Input::Continue if !self.removing.is_empty() => self.continue_removals(now, &mut out),
            Input::Continue => self.allocate_slice(now, &mut out),
            Input::Exited(pid) => self.exited(now, &pid, &mut out),
            Input::OffersNotSent { to, offers } => {
                if let Some(framework_id) = self.frameworks_by_pid.get(&to.name()).cloned() {
                    self.give_back(
                        now,
                        &framework_id,
                        offers,
                        Filters::default().refuse(),
                        &mut out,
                    );
                }
            }
        }
        out
    }

    fn received(
        &mut self,
        now: Instant,
        from: Upid,
        sender: &PeerIdentity,
        message: ToMaster,
        out: &mut Vec<Command>,
    ) {
        match message {
            ToMaster::RegisterAgent { .. } | ToMaster::ReregisterAgent { .. }
                if !sender.is(Role::Agent) =>
            {
                self.denied += 1;
                let reason = format!(
                    "{sender} may not register an agent: that needs a certificate with the agent role"
                );
                self.refuse_agent(from, reason, out)
            }
            ToMaster::RegisterAgent { info } => {
                self.register_agent(now, from, &sender.name, info, out)
            }
            ToMaster::ReregisterAgent { info, tasks } => {
                self.reregister_agent(now, from, &sender.name, info, tasks, out)
            }
            ToMaster::Subscribe { .. } if !sender.is(Role::Framework) => {
                self.denied += 1;
                let reason = format!(
                    "{sender} may not subscribe a framework: that needs a certificate with the framework role, named after the framework's principal"
                );
                self.refuse_request(&from, reason, out)
            }
            ToMaster::OperatorTeardown { .. } | ToMaster::OperatorMarkAgentGone { .. }
                if !sender.is(Role::Operator) =>
            {
                self.denied += 1;
                let reason = format!(
                    "{sender} may not tear down frameworks or mark agents gone: that needs the operator role"
                );
                self.refuse_request(&from, reason, out)
            }
            ToMaster::OperatorTeardown { framework_id } => {
                let principal = (!sender.name.is_empty()).then_some(sender.name.as_str());
                self.operator_teardown(now, &from, principal, &framework_id, out)
            }
            ToMaster::OperatorMarkAgentGone { agent_id } => {
                let principal = (!sender.name.is_empty()).then_some(sender.name.as_str());
                self.mark_agent_gone(now, &from, principal, &agent_id, out)
            }
            ToMaster::OperatorKill { .. } if !sender.is(Role::Operator) => {
                self.denied += 1;
                let reason = format!(
                    "{sender} may not kill other frameworks' tasks: that needs a certificate with the operator role"
                );
                self.refuse_request(&from, reason, out)
            }
            ToMaster::Pong { sequence } => self.pong(&from, sequence),
            ToMaster::StatusUpdate {
                framework_id,
                status,
            } => self.status_update(now, &from, framework_id, status, out),
            ToMaster::Subscribe { info, constraints } => {
                self.subscribe(now, from, &sender.name, info, constraints, out)
            }
            ToMaster::ExecutorExited {
                framework_id,
                executor_id,
            } => self.executor_exited(now, &from, framework_id, executor_id, out),
            ToMaster::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            } => self.executor_message(&from, framework_id, executor_id, data, out),
            ToMaster::OperatorKill {
                framework_id,
                task_id,
            } => {
                // Unknown or finished tasks are left alone: the operator
                // sees the outcome in /state.
                let running = self
                    .frameworks
                    .get(&framework_id)
                    .and_then(|framework| framework.tasks.get(&task_id))
                    .is_some_and(|task| !task.state.is_terminal());
                if running {
                    out.push(Command::Log(Event::OperatorKill {
                        from: from.clone(),
                        framework_id: framework_id.clone(),
                        task_id: task_id.clone(),
                    }));
                    self.kill(now, &framework_id, task_id, out);
                }
            }
            other => {
                // Everything else comes from a subscribed scheduler, for
                // its own framework only.
                let Some(framework_id) = self.framework_of(&from, &other, out) else {
                    return;
                };
                self.scheduler_call(now, &from, framework_id, other, out);
            }
        }
    }

    fn scheduler_call(
        &mut self,
        now: Instant,
        from: &Upid,
        framework_id: FrameworkId,
        message: ToMaster,
        out: &mut Vec<Command>,
    ) {
        match message {
            ToMaster::Accept {
                offer_ids,
                operations,
                filters,
                ..
            } => self.accept(now, &framework_id, offer_ids, operations, filters, out),
            ToMaster::Decline {
                offer_ids, filters, ..
            } => self.decline(now, &framework_id, offer_ids, filters, out),
            ToMaster::Revive { .. } => {
                self.allocator.revive(&framework_id);
                self.allocate_all(now, out);
            }
            ToMaster::Suppress { .. } => self.allocator.suppress(&framework_id),
            ToMaster::SetConstraints { constraints, .. }
                if constraints.len() > frameworks::MAX_CONSTRAINTS =>
            {
                let reason = format!(
                    "at most {} standing filters are allowed",
                    frameworks::MAX_CONSTRAINTS
                );
                self.refuse_request(from, reason, out);
            }
            ToMaster::SetConstraints { constraints, .. } => {
                self.allocator
                    .set_constraints(&framework_id, constraints.clone());
                if let Some(framework) = self.frameworks.get_mut(&framework_id) {
                    framework.constraints = constraints;
                }
                self.allocate_all(now, out);
            }
            ToMaster::Kill { task_id, .. } => self.kill(now, &framework_id, task_id, out),
            ToMaster::Acknowledge {
                agent_id,
                task_id,
                update_id,
                ..
            } => self.acknowledge(&framework_id, agent_id, task_id, update_id, out),
            ToMaster::Reconcile { tasks, .. } => {
                self.reconcile(now, &framework_id, from, tasks, out)
            }
            ToMaster::Teardown { .. } => {
                self.remove_framework(now, &framework_id, "torn down by its scheduler", out)
            }
            ToMaster::ShutdownExecutor {
                agent_id,
                executor_id,
                ..
            } => {
                // An executor the agent does not run (any more) is left
                // alone, as Mesos does.
                if let Some(agent) = self.agents.get(&agent_id)
                    && agent.status == AgentStatus::Active
                    && agent
                        .executors
                        .contains_key(&(framework_id.clone(), executor_id.clone()))
                {
                    out.push(Command::ToAgent(
                        agent.pid.clone(),
                        ToAgent::ShutdownExecutor {
                            framework_id,
                            executor_id,
                        },
                    ));
                }
            }
            ToMaster::UpdateFramework { info, .. } => {
                self.update_framework(from, &framework_id, info, out)
            }
            ToMaster::FrameworkMessage {
                agent_id,
                executor_id,
                data,
                ..
            } => {
                if let Some(agent) = self.agents.get(&agent_id)
                    && agent.status == AgentStatus::Active
                {
                    out.push(Command::ToAgent(
                        agent.pid.clone(),
                        ToAgent::FrameworkMessage {
                            framework_id,
                            executor_id,
                            data,
                        },
                    ));
                }
            }
            ToMaster::RegisterAgent { .. }
            | ToMaster::ReregisterAgent { .. }
            | ToMaster::Pong { .. }
            | ToMaster::StatusUpdate { .. }
            | ToMaster::Subscribe { .. }
            | ToMaster::ExecutorExited { .. }
            | ToMaster::ExecutorMessage { .. }
            | ToMaster::OperatorKill { .. }
            | ToMaster::OperatorTeardown { .. }
            | ToMaster::OperatorMarkAgentGone { .. } => {}
        }
    }

    /// Data from an executor, forwarded to its scheduler (at most once).
    fn executor_message(
        &self,
        from: &Upid,
        framework_id: FrameworkId,
        executor_id: strata_protocol::ExecutorId,
        data: strata_runtime::Blob,
        out: &mut Vec<Command>,
    ) {
        let Some(agent_id) = self.agents_by_pid.get(&from.name()).cloned() else {
            return;
        };
        self.tell_scheduler(
            &framework_id,
            ToScheduler::FrameworkMessage {
                agent_id,
                executor_id,
                data,
            },
            out,
        );
    }

    /// Sends `message` to the framework's scheduler if one is connected.
    fn tell_scheduler(
        &self,
        framework_id: &FrameworkId,
        message: ToScheduler,
        out: &mut Vec<Command>,
    ) {
        if let Some(pid) = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.pid.clone())
        {
            out.push(Command::ToScheduler(pid, message));
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.ping_agents(now, out);
        self.end_recovery(now, out);
        self.expire_offers(now, out);
        self.expire_failovers(now, out);
        // A pass still going on (slower than a tick) goes on; it is not
        // started again, so it ends. A new pass's slices, its first
        // included, come in `Input::Continue`s: at tens of thousands of
        // agents a second's pings are input enough.
        if !self.allocating() {
            self.allocation_left = self.agents.len();
        }
    }

    fn exited(&mut self, now: Instant, pid: &Upid, out: &mut Vec<Command>) {
        if let Some(framework_id) = self.frameworks_by_pid.get(&pid.name()).cloned() {
            self.disconnect_framework(now, &framework_id, out);
        }
        // An agent's broken link means "state unknown": pings decide.
    }

    fn next_id(prefix: &str, kind: &str, counter: &mut u64) -> String {
        *counter += 1;
        format!("{prefix}-{kind}{counter}")
    }
}

/// Invariants the property tests and the simulation check after every
/// step.
pub(crate) mod invariants;

#[cfg(test)]
mod tests;
