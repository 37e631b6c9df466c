//! The agent's core: every decision the agent makes, as a state machine
//! that performs no IO.
//!
//! [`Core::handle`] takes the time and one [`Input`] (a message, a
//! container's launch or end, a timer, a usage sample) and returns the
//! [`Effect`]s to carry out: messages to send, containers to launch,
//! signal or forget, checkpoints to write, timers to set. It reads no
//! clock, touches no file or socket and draws no randomness but from its
//! seed, so a test drives it step by step (`core/tests.rs`) and the agent
//! process ([`crate::process`]) is only the shell that carries effects
//! out and feeds back what happened.
//!
//! What it decides: registration with the master and following it
//! (backoff, epochs, silence), frameworks, tasks and their containers,
//! custom executors (queueing tasks until they register, timeouts, exits),
//! status update streams (at least once, in order), what to checkpoint,
//! and what to make of a restart's checkpoints and containers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use strata_protocol::{
    AgentId, AgentInfo, ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, Reason, Resources,
    Source, Task, TaskId, TaskInfo, TaskKind, TaskState, TaskStatus, ToAgent, ToExecutor, ToMaster,
    UpdateId,
};
use strata_runtime::random::SplitMix;
use strata_runtime::{Blob, PeerIdentity, Upid};
use tracing::{debug, error, info, warn};

use crate::checkpoint::{
    self, AgentCheckpoint, ExecutorCheckpoint, FrameworkCheckpoint, RunCheckpoint,
    StreamCheckpoint, TaskCheckpoint,
};
use crate::command_executor;
use crate::containerizer::{ContainerId, LaunchError, Limitation};
use crate::recovery::Recovered;
use crate::status_updates::{Forward, StatusUpdates};
use crate::usage::GroupUsage;

#[cfg(test)]
mod tests;

/// Longest wait between registration attempts.
const MAX_REGISTRATION_BACKOFF: Duration = Duration::from_secs(60);

/// How long an executor of a checkpointing framework waits for a
/// restarted agent (Mesos's `--recovery_timeout`).
pub const EXECUTOR_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the core is told about the agent it decides for.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub master: Upid,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: strata_protocol::Attributes,
    /// Seeds the registration jitter, update ids and container ids.
    pub seed: u64,
    /// First wait before an unacknowledged status update is resent.
    pub status_update_retry: Duration,
    /// How long a custom executor has to register.
    pub executor_registration_timeout: Duration,
    /// Between asking a container to stop and killing it.
    pub kill_grace: Duration,
    /// Where sandboxes and checkpoints are; `None` keeps no checkpoints.
    pub work_dir: Option<PathBuf>,
    /// Whether sandboxes are real directories under the work directory
    /// (shown to operators, relative to the sandbox root).
    pub sandboxes: bool,
    /// Whether the agent can give custom executors credentials (without
    /// them it cannot run custom executors).
    pub executors: bool,
    /// Whether stopping kills every container, or only those of
    /// frameworks that do not checkpoint.
    pub kill_tasks_on_stop: bool,
    /// Whether the leading master is found in ZooKeeper
    /// ([`Input::MasterDetected`]): then a standby's word on who leads,
    /// which may be older, is not taken.
    pub follows_detector: bool,
}

/// The time, as the shell read it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    /// Milliseconds since the Unix epoch, for status timestamps.
    pub wall_ms: u64,
}

/// What became of a container an earlier life of the agent started (see
/// [`crate::containerizer::Recovery`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// It ended while the agent was down, as this says, for the limit it
    /// reached if any.
    Ended(ExitStatus, Option<Limitation>),
    Gone,
}

/// What happens to the agent.
#[derive(Debug)]
pub enum Input {
    /// The agent process started as `pid`, with what its work directory
    /// held and what became of each checkpointed container.
    Start {
        pid: Upid,
        recovered: Option<Box<Recovered>>,
        containers: BTreeMap<ContainerId, RunState>,
    },
    /// A message from `from`, whose certificate says it is `identity`.
    Message {
        from: Upid,
        identity: PeerIdentity,
        message: Box<ToAgent>,
    },
    /// Container `container` started (what to checkpoint of it), or could
    /// not start (why).
    Launched {
        container: ContainerId,
        result: Result<RunCheckpoint, LaunchError>,
    },
    /// Container `container` ended; an error when how is not known.
    Exited {
        container: ContainerId,
        status: Result<ExitStatus, String>,
        /// The limit it reached, if that is why it ended.
        limitation: Option<Limitation>,
    },
    /// What the running containers use now.
    Usage(BTreeMap<ContainerId, GroupUsage>),
    /// A timer set by [`Effect::Timer`] fired.
    Timer(Timer),
    /// Time to check that the master still pings.
    CheckMaster,
    /// Another master leads now (found in ZooKeeper): register with it.
    MasterDetected(Upid),
    /// Time to resend unacknowledged updates that are due.
    ResendUpdates,
    /// The link to `pid` broke, or an HTTP executor's stream went away.
    Lost(Upid),
    /// The agent stops.
    Stop,
}

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The next registration attempt of round `round` (a new master
    /// starts a new round; older rounds' timers do nothing).
    Register { round: u64 },
    /// The grace of a container asked to stop is over: kill it.
    Kill(ContainerId),
    /// An executor's time to register is over.
    ExecutorRegistration {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        container: ContainerId,
    },
}

/// What to launch in a container.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub sandbox: PathBuf,
    pub command: strata_protocol::CommandInfo,
    pub environment: BTreeMap<String, String>,
    /// Whom to run it as (the command's user, else its framework's).
    pub user: String,
    pub outlives_agent: bool,
    pub labels: BTreeMap<String, String>,
    /// For a custom executor: the identity its credentials are issued to
    /// (written into its sandbox before it starts).
    pub executor: Option<(FrameworkId, ExecutorId)>,
    /// What it may use: a task's resources, or a custom executor's with
    /// those of its tasks.
    pub resources: Resources,
}

/// A checkpoint to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Checkpoint {
    /// Which agent the work directory belongs to.
    Latest(AgentId),
    Agent(Box<AgentCheckpoint>),
    Framework(Box<FrameworkCheckpoint>),
    Task(Box<TaskCheckpoint>),
    Stream(Box<StreamCheckpoint>),
    Executor(Box<ExecutorCheckpoint>),
}

/// What the shell carries out.
#[derive(Debug)]
pub enum Effect {
    ToMaster(ToMaster),
    ToExecutor {
        to: Upid,
        message: ToExecutor,
    },
    /// The agent took an executor's update for `task_id` and delivers it
    /// from now on (an HTTP executor is told ACKNOWLEDGED).
    UpdateTaken {
        to: Upid,
        task_id: TaskId,
        update_id: Option<UpdateId>,
    },
    Link(Upid),
    Launch {
        container: ContainerId,
        spec: Box<LaunchSpec>,
    },
    /// Wait for a container taken back after a restart to end.
    Watch(ContainerId),
    Signal {
        container: ContainerId,
        signal: Signal,
    },
    /// A container's end is recorded: kill what is left, forget it.
    Forget(ContainerId),
    /// A custom executor's container may now use `resources` (its own and
    /// its tasks').
    Update {
        container: ContainerId,
        resources: Resources,
    },
    Write {
        path: PathBuf,
        checkpoint: Checkpoint,
    },
    /// Remove a checkpoint file, and its directory once empty when
    /// `prune`.
    Remove {
        path: PathBuf,
        prune: bool,
    },
    RemoveDir(PathBuf),
    Timer {
        after: Duration,
        timer: Timer,
    },
}

/// Where the agent stands with its master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Registering { attempt: u32 },
    Registered,
    Refused,
}

/// A task's container.
#[derive(Debug, Clone)]
pub struct TaskContainer {
    pub container: ContainerId,
    /// What is checkpointed of it, once it started.
    pub run: Option<RunCheckpoint>,
    pub kill_requested: bool,
    /// Why the agent killed it for exceeding a limit, if it did.
    pub limit_exceeded: Option<String>,
}

/// An executor this agent started.
#[derive(Debug, Clone)]
pub struct ExecutorRun {
    pub container: ContainerId,
    /// What is checkpointed of it, once it started.
    pub run: Option<RunCheckpoint>,
    /// Set once it registered.
    pub pid: Option<Upid>,
    /// Tasks waiting for it to register.
    pub queued: Vec<TaskInfo>,
    /// Its tasks that are not terminal (queued ones included).
    pub tasks: BTreeSet<TaskId>,
    pub registration_timed_out: bool,
    /// What it was started from (unknown for one an earlier life of the
    /// agent started).
    pub info: Option<ExecutorInfo>,
}

impl ExecutorRun {
    fn new(container: ContainerId, run: Option<RunCheckpoint>) -> ExecutorRun {
        ExecutorRun {
            container,
            run,
            pid: None,
            queued: Vec::new(),
            tasks: BTreeSet::new(),
            registration_timed_out: false,
            info: None,
        }
    }

    /// Whether it registered.
    pub fn registered(&self) -> bool {
        self.pid.is_some()
    }
}

type TaskKey = (FrameworkId, TaskId);
type ExecutorKey = (FrameworkId, ExecutorId);

/// The agent's state and decisions; see the [module documentation](self).
#[derive(Debug)]
pub struct Core {
    pub config: CoreConfig,
    pub pid: Option<Upid>,
    pub agent_id: Option<AgentId>,
    pub registration: Registration,
    pub frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    pub tasks: BTreeMap<TaskKey, Task>,
    /// Terminal tasks whose last updates are not acknowledged yet; they
    /// are reported on re-registration so the master waits for them.
    pub finished: BTreeMap<TaskKey, Task>,
    pub updates: StatusUpdates,
    pub containers: BTreeMap<TaskKey, TaskContainer>,
    /// Resources of the tasks that are not terminal.
    pub allocated: Resources,
    /// The latest usage sample of each running task.
    pub usage: BTreeMap<TaskKey, GroupUsage>,
    pub executors: BTreeMap<ExecutorKey, ExecutorRun>,
    random: SplitMix,
    /// The longest the master may stay silent, as it said when it
    /// registered this agent.
    master_ping_limit: Option<Duration>,
    /// The master followed: older masters' messages are ignored.
    master_epoch: strata_protocol::MasterEpoch,
    /// Which round of registration attempts is current.
    registration_round: u64,
    /// The master this agent was configured with, and whether it now
    /// talks to another because that one said so (a standby naming the
    /// leader): losing the leader it was sent to, it goes back to ask.
    configured_master: Upid,
    redirected: bool,
    last_ping: Option<Instant>,
    effects: Vec<Effect>,
    now: Now,
}

impl Core {
    /// A core that has not started, at `now`.
    pub fn new(config: CoreConfig, now: Now) -> Core {
        let configured_master = config.master.clone();
        let updates = StatusUpdates::with_retries(
            config.status_update_retry,
            crate::status_updates::LAST_RETRY,
        );
        Core {
            random: SplitMix::new(config.seed),
            config,
            pid: None,
            agent_id: None,
            registration: Registration::Registering { attempt: 0 },
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            finished: BTreeMap::new(),
            updates,
            containers: BTreeMap::new(),
            allocated: Resources::new(),
            usage: BTreeMap::new(),
            executors: BTreeMap::new(),
            master_ping_limit: None,
            master_epoch: Default::default(),
            registration_round: 0,
            configured_master,
            redirected: false,
            last_ping: None,
            effects: Vec::new(),
            now,
        }
    }

    /// Handles `input` at `now`; what to carry out, in order.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Start {
                pid,
                recovered,
                containers,
            } => self.start(pid, recovered.map(|recovered| *recovered), &containers),
            Input::Message {
                from,
                identity,
                message,
            } => self.message(from, &identity, *message),
            Input::Launched { container, result } => self.launched(&container, result),
            Input::Exited {
                container,
                status,
                limitation,
            } => self.exited(&container, status, limitation),
            Input::Usage(usage) => self.sampled(usage),
            Input::Timer(timer) => self.timer(timer),
            Input::CheckMaster => self.check_master(),
            Input::MasterDetected(master) => self.master_detected(master),
            Input::ResendUpdates => {
                if self.registration == Registration::Registered {
                    for forward in self.updates.due(now.instant) {
                        self.forward(forward);
                    }
                }
            }
            Input::Lost(pid) => self.lost(&pid),
            Input::Stop => self.stop(),
        }
        std::mem::take(&mut self.effects)
    }

    fn now(&self) -> Now {
        self.now
    }

    fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn send_master(&mut self, message: ToMaster) {
        self.emit(Effect::ToMaster(message));
    }

    /// What live tasks leave of the agent's resources.
    pub fn free(&self) -> Resources {
        self.config
            .resources
            .checked_sub(&self.allocated)
            .unwrap_or_default()
    }

    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            resources: self.config.resources.clone(),
            attributes: self.config.attributes.clone(),
        }
    }

    /// Whether a framework asked agents to checkpoint its tasks.
    pub fn checkpointing(&self, framework_id: &FrameworkId) -> bool {
        self.frameworks
            .get(framework_id)
            .is_some_and(|framework| framework.checkpoint)
    }

    /// The sandbox root, `<work>/agents/<agent>`, when sandboxes are real.
    pub fn sandbox_root(&self) -> Option<PathBuf> {
        if !self.config.sandboxes {
            return None;
        }
        let work_dir = self.config.work_dir.as_ref()?;
        Some(
            work_dir
                .join("agents")
                .join(self.agent_id.as_ref()?.as_str()),
        )
    }

    /// Task `key`'s sandbox relative to the sandbox root, once it has
    /// one.
    pub fn relative_sandbox(&self, key: &TaskKey) -> Option<String> {
        let run = self.containers.get(key)?.run.as_ref()?;
        let relative = run.sandbox.strip_prefix(self.sandbox_root()?).ok()?;
        relative.to_str().map(str::to_owned)
    }

    /// The work directory and agent id, when this agent keeps checkpoints.
    fn checkpoint_root(&self) -> Option<(PathBuf, AgentId)> {
        Some((self.config.work_dir.clone()?, self.agent_id.clone()?))
    }

    fn new_container_id(&mut self) -> ContainerId {
        ContainerId::new(format!("{:016x}", self.random.next_u64()))
    }

    fn sandbox(
        &self,
        agent_id: &AgentId,
        framework_id: &FrameworkId,
        executor: &str,
        container: &ContainerId,
    ) -> PathBuf {
        let work_dir = self.config.work_dir.as_deref().unwrap_or(Path::new(""));
        command_executor::sandbox_path(
            work_dir,
            agent_id,
            framework_id,
            executor,
            container.as_str(),
        )
    }

    // ---- starting, recovering, registering -------------------------------

    fn start(
        &mut self,
        pid: Upid,
        recovered: Option<Recovered>,
        containers: &BTreeMap<ContainerId, RunState>,
    ) {
        self.pid = Some(pid);
        self.last_ping = Some(self.now().instant);
        self.emit(Effect::Link(self.config.master.clone()));
        if let Some(recovered) = recovered {
            self.recover(recovered, containers);
        }
        self.register();
    }

    fn recover(&mut self, recovered: Recovered, containers: &BTreeMap<ContainerId, RunState>) {
        info!(
            agent_id = %recovered.agent_id,
            frameworks = recovered.frameworks.len(),
            "recovering from checkpoints"
        );
        self.agent_id = Some(recovered.agent_id.clone());
        let state_of = |run: &RunCheckpoint| {
            containers
                .get(&run.container)
                .copied()
                .unwrap_or(RunState::Gone)
        };
        for framework in recovered.frameworks {
            let Some(framework_id) = framework.info.id.clone() else {
                continue;
            };
            self.frameworks.insert(framework_id.clone(), framework.info);
            // Executors first: their tasks wait for them.
            for executor in &framework.executors {
                let run = executor.run();
                if !self.adopt_executor(&framework_id, executor, state_of(&run))
                    && let Some((work_dir, agent_id)) = self.checkpoint_root()
                {
                    let path = checkpoint::executor_path(
                        &work_dir,
                        &agent_id,
                        &framework_id,
                        &executor.executor_id,
                    );
                    self.emit(Effect::Remove { path, prune: false });
                }
            }
            for task in framework.tasks {
                let state = task
                    .checkpoint
                    .as_ref()
                    .and_then(|checkpoint| checkpoint.run.clone())
                    .map(|run| state_of(&run.named()));
                self.recover_task(&framework_id, task, state);
            }
        }
    }

    /// Takes back an executor an earlier life of this agent started, if
    /// it still runs: it is asked to register again, and its tasks wait
    /// for it. False if it is gone.
    fn adopt_executor(
        &mut self,
        framework_id: &FrameworkId,
        checkpoint: &ExecutorCheckpoint,
        state: RunState,
    ) -> bool {
        let run = checkpoint.run();
        match state {
            RunState::Running => {}
            // Ended while the agent was down: its tasks are reported so.
            RunState::Ended(..) => {
                self.emit(Effect::Forget(run.container));
                return false;
            }
            RunState::Gone => return false,
        }
        let Some(pid) = checkpoint.pid.clone() else {
            // It never registered, so nothing can reach it: stopped.
            self.emit(Effect::Forget(run.container));
            return false;
        };
        let key = (framework_id.clone(), checkpoint.executor_id.clone());
        let container = run.container.clone();
        self.executors
            .insert(key.clone(), ExecutorRun::new(container.clone(), Some(run)));
        self.emit(Effect::Watch(container.clone()));
        self.emit(Effect::ToExecutor {
            to: pid,
            message: ToExecutor::Reconnect,
        });
        self.expect_registration(key, container);
        true
    }

    fn recover_task(
        &mut self,
        framework_id: &FrameworkId,
        recovered: crate::recovery::RecoveredTask,
        run_state: Option<RunState>,
    ) {
        let state = recovered.state();
        for status in &recovered.pending {
            self.updates
                .push(self.now().instant, framework_id, status.clone());
        }
        let Some(checkpoint) = recovered.checkpoint else {
            return;
        };
        let key = (framework_id.clone(), recovered.task_id.clone());
        let mut task = checkpoint.task;
        if let (Some(state), Some(last)) = (state, recovered.pending.last())
            && state == last.state
        {
            task.state = state;
            task.status = Some(last.clone());
        }
        if task.state.is_terminal() {
            // Its container, if taken back, is no one's now.
            if let (Some(run), Some(RunState::Running | RunState::Ended(..))) =
                (&checkpoint.run, run_state)
            {
                self.emit(Effect::Forget(run.clone().named().container));
            }
            self.finished.insert(key, task);
            return;
        }
        let task_id = recovered.task_id;
        let executor = match &task.info.kind {
            TaskKind::Executor(executor) => Some(executor.executor_id.clone()),
            TaskKind::Command(_) => None,
        };
        self.allocated.add(&task.info.resources);
        self.tasks.insert(key.clone(), task);
        if let Some(executor_id) = &executor
            && let Some(run) = self
                .executors
                .get_mut(&(framework_id.clone(), executor_id.clone()))
        {
            run.tasks.insert(task_id);
            return;
        }
        let Some(run) = checkpoint.run.map(RunCheckpoint::named) else {
            let (state, reason, message) = match executor {
                Some(_) => (
                    TaskState::Failed,
                    Reason::ExecutorTerminated,
                    "its executor did not survive the agent's restart",
                ),
                None => (
                    TaskState::Lost,
                    Reason::AgentRestarted,
                    "the agent restarted before the task's process started",
                ),
            };
            self.report_with(framework_id, &task_id, state, Some(reason), message);
            return;
        };
        match run_state.unwrap_or(RunState::Gone) {
            RunState::Running => {
                info!(task_id = %task_id, container = %run.container, "re-attached to a running task");
                let container = run.container.clone();
                self.containers.insert(
                    key,
                    TaskContainer {
                        container: container.clone(),
                        run: Some(run),
                        kill_requested: false,
                        limit_exceeded: None,
                    },
                );
                self.emit(Effect::Watch(container));
            }
            RunState::Ended(_, Some(limitation)) => {
                let message = format!("{} while the agent was down", limitation.message());
                self.report_with(
                    framework_id,
                    &task_id,
                    TaskState::Failed,
                    Some(Reason::ContainerLimitationMemory),
                    &message,
                );
                self.emit(Effect::Forget(run.container));
            }
            RunState::Ended(status, None) => {
                let (state, how) = command_executor::outcome(Ok(status), false);
                let message = format!("{how} while the agent was down");
                self.report(framework_id, &task_id, state, &message);
                self.emit(Effect::Forget(run.container));
            }
            RunState::Gone => self.report_with(
                framework_id,
                &task_id,
                TaskState::Failed,
                Some(Reason::ExecutorTerminated),
                "the task's process ended while the agent was down, and how is not known",
            ),
        }
    }

    /// Sends a (re-)registration and sets the next attempt in case no
    /// answer comes.
    fn register(&mut self) {
        let Registration::Registering { attempt } = self.registration else {
            return;
        };
        let message = match &self.agent_id {
            None => ToMaster::RegisterAgent { info: self.info() },
            Some(_) => ToMaster::ReregisterAgent {
                info: self.info(),
                tasks: self
                    .tasks
                    .values()
                    .chain(self.finished.values())
                    .cloned()
                    .collect(),
            },
        };
        self.emit(Effect::Link(self.config.master.clone()));
        self.send_master(message);
        let ceiling = Duration::from_secs(1)
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_REGISTRATION_BACKOFF);
        let wait = Duration::from_millis(self.random.below(ceiling.as_millis() as u64 + 1));
        self.registration = Registration::Registering {
            attempt: attempt.saturating_add(1),
        };
        self.emit(Effect::Timer {
            after: wait,
            timer: Timer::Register {
                round: self.registration_round,
            },
        });
    }

    /// Another master leads: the agent registers with it at once (in a
    /// new round of attempts), and takes messages from it alone.
    fn master_detected(&mut self, master: Upid) {
        if master.same_name(&self.config.master) {
            return;
        }
        info!(old = %self.config.master, new = %master, "another master leads; registering with it");
        self.config.master = master;
        self.redirected = false;
        if self.registration == Registration::Refused {
            return;
        }
        self.registration_round += 1;
        self.registration = Registration::Registering { attempt: 0 };
        self.register();
    }

    /// A master that stopped pinging has lost this agent (a partition it
    /// may not even see from here, with the connection still up): it has
    /// marked the agent unreachable, so the agent registers again.
    fn check_master(&mut self) {
        let (Some(limit), Some(last_ping)) = (self.master_ping_limit, self.last_ping) else {
            return;
        };
        if self.registration != Registration::Registered
            || self.now().instant.saturating_duration_since(last_ping) <= limit
        {
            return;
        }
        warn!(
            master = %self.config.master,
            silent_for = ?limit,
            "no ping from the master; registering again"
        );
        self.registration = Registration::Registering { attempt: 0 };
        self.register();
    }

    fn registered(&mut self, agent_id: AgentId) {
        if self
            .agent_id
            .as_ref()
            .is_some_and(|known| known != &agent_id)
        {
            warn!(old = ?self.agent_id, new = %agent_id, "master gave this agent a new id");
        }
        info!(agent_id = %agent_id, master = %self.config.master, "registered with the master");
        self.agent_id = Some(agent_id);
        self.checkpoint_agent();
        self.registration = Registration::Registered;
        for forward in self.updates.heads(self.now().instant) {
            self.forward(forward);
        }
    }

    fn lost(&mut self, pid: &Upid) {
        if self.executor_lost(pid) {
            return;
        }
        if !pid.same_name(&self.config.master) || self.registration == Registration::Refused {
            return;
        }
        // While registering, attempts go on with their backoff; each links
        // to the master again, so a failed one is reported here and
        // ignored rather than retried at once.
        if matches!(self.registration, Registration::Registering { .. }) {
            return;
        }
        warn!(master = %pid, "lost the master; re-registering");
        if self.redirected {
            // Sent here by the configured master: ask it again who leads.
            self.config.master = self.configured_master.clone();
            self.redirected = false;
        }
        self.registration = Registration::Registering { attempt: 0 };
        self.register();
    }

    /// The agent stops: containers of frameworks that do not checkpoint
    /// stop with it; the others too unless it keeps them for its restart.
    fn stop(&mut self) {
        let doomed: Vec<ContainerId> = self
            .containers
            .iter()
            .map(|((framework_id, _), container)| (framework_id, &container.container))
            .chain(
                self.executors
                    .iter()
                    .map(|((framework_id, _), run)| (framework_id, &run.container)),
            )
            .filter(|(framework_id, _)| {
                self.config.kill_tasks_on_stop || !self.checkpointing(framework_id)
            })
            .map(|(_, container)| container.clone())
            .collect();
        for container in doomed {
            self.emit(Effect::Signal {
                container,
                signal: Signal::KILL,
            });
        }
    }

    // ---- messages ---------------------------------------------------------

    fn message(&mut self, from: Upid, identity: &PeerIdentity, message: ToAgent) {
        // Executors speak for themselves; everything else must come from
        // the master.
        let message = match message {
            ToAgent::RegisterExecutor {
                framework_id,
                executor_id,
            } => {
                self.executor_message(from, identity, framework_id, executor_id, None);
                return;
            }
            ToAgent::ExecutorStatus {
                framework_id,
                executor_id,
                status,
            } => {
                self.executor_message(from, identity, framework_id, executor_id, Some(status));
                return;
            }
            ToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => return self.relay_framework_message(from, framework_id, executor_id, data),
            other => other,
        };
        let answer = matches!(
            message,
            ToAgent::AgentRegistered { .. }
                | ToAgent::AgentReregistered { .. }
                | ToAgent::RegistrationRefused { .. }
                | ToAgent::NotLeader { .. }
        );
        match self.master_epoch.check(&self.config.master, &from, answer) {
            Ok(()) => {}
            Err(strata_protocol::NotFromMaster::Stranger) => {
                warn!(from = %from, kind = strata_runtime::Message::kind(&message), "message not from the master dropped");
                return;
            }
            Err(strata_protocol::NotFromMaster::Earlier) => {
                debug!(from = %from, "message from an earlier master ignored");
                return;
            }
        }
        match message {
            ToAgent::AgentRegistered {
                agent_id,
                ping_timeout,
                epoch,
            }
            | ToAgent::AgentReregistered {
                agent_id,
                ping_timeout,
                epoch,
            } => {
                if !self.master_epoch.registered(epoch, &from) {
                    warn!(from = %from, epoch, "registration by an earlier master ignored");
                    return;
                }
                self.master_ping_limit = Some(ping_timeout);
                self.last_ping = Some(self.now().instant);
                self.registered(agent_id)
            }
            ToAgent::RegistrationRefused { reason } => {
                error!(reason = %reason, "the master refused this agent");
                self.registration = Registration::Refused;
            }
            ToAgent::Ping { sequence } => {
                self.last_ping = Some(self.now().instant);
                self.send_master(ToMaster::Pong { sequence })
            }
            ToAgent::RunTask { framework, task } => self.run_task(*framework, *task),
            ToAgent::KillTask {
                framework_id,
                task_id,
            } => self.kill_task(&framework_id, &task_id),
            ToAgent::StatusUpdateAcknowledged {
                framework_id,
                task_id,
                update_id,
            } => self.acknowledged(&framework_id, &task_id, update_id),
            ToAgent::ShutdownFramework { framework_id } => self.shutdown_framework(&framework_id),
            ToAgent::ShutdownExecutor {
                framework_id,
                executor_id,
            } => self.shutdown_executor(&framework_id, &executor_id),
            ToAgent::NotLeader { leader } => self.not_leader(identity, leader.as_deref()),
            // Routed above.
            ToAgent::RegisterExecutor { .. }
            | ToAgent::ExecutorStatus { .. }
            | ToAgent::FrameworkMessage { .. } => {}
        }
    }

    /// The master this agent registers with does not lead: it registers
    /// with the one that master names (a master's certificate is needed
    /// to send it elsewhere).
    fn not_leader(&mut self, identity: &PeerIdentity, leader: Option<&str>) {
        if self.config.follows_detector {
            debug!("a master does not lead; the leader comes from ZooKeeper");
            return;
        }
        if !identity.is(strata_runtime::tls::Role::Master) {
            warn!(from = %identity, "a not-leader answer from a non-master dropped");
            return;
        }
        match leader.map(str::parse::<Upid>) {
            // The next attempt, at its time, goes there (two standbys
            // naming each other must not make the agent spin).
            Some(Ok(leader)) if !leader.same_name(&self.config.master) => {
                info!(old = %self.config.master, new = %leader, "the master does not lead; registering with the one it names");
                self.config.master = leader;
                self.redirected = !self.config.master.same_name(&self.configured_master);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => warn!("the master named a leader that is not an address"),
            None => debug!("the master does not lead and knows no leader; trying again"),
        }
    }

    fn acknowledged(&mut self, framework_id: &FrameworkId, task_id: &TaskId, update_id: UpdateId) {
        let next = self
            .updates
            .acknowledge(self.now().instant, framework_id, task_id, update_id);
        self.checkpoint_stream(framework_id, task_id);
        let key = (framework_id.clone(), task_id.clone());
        if next.is_none() && self.updates.pending(framework_id, task_id).is_empty() {
            self.finished.remove(&key);
            self.checkpoint_task(framework_id, task_id);
        }
        if let Some(next) = next {
            self.forward(next);
        }
    }

    // ---- tasks ------------------------------------------------------------

    fn run_task(&mut self, framework: FrameworkInfo, info: TaskInfo) {
        let Some(framework_id) = framework.id.clone() else {
            return;
        };
        if Some(&info.agent_id) != self.agent_id.as_ref() {
            warn!(task_id = %info.task_id, "task for another agent ignored");
            return;
        }
        let key = (framework_id.clone(), info.task_id.clone());
        if self.tasks.contains_key(&key) || self.finished.contains_key(&key) {
            return;
        }
        // Nothing is taken that a restart could not read back from its
        // checkpoint (the master checks the same before it sends).
        let too_large = strata_protocol::limits::too_large(
            "task description",
            &info,
            strata_protocol::limits::MAX_TASK_INFO_BYTES,
        )
        .or_else(|| {
            strata_protocol::limits::too_large(
                "framework description",
                &framework,
                strata_protocol::limits::MAX_FRAMEWORK_INFO_BYTES,
            )
        });
        if let Some(reason) = too_large {
            warn!(task_id = %info.task_id, %reason, "task refused");
            return;
        }
        self.frameworks.insert(framework_id.clone(), framework);
        self.checkpoint_framework(&framework_id);
        if !self.free().contains(&info.resources) {
            // The master should never over-commit; say so if it did.
            warn!(task_id = %info.task_id, "task exceeds the agent's free resources");
        }
        self.allocated.add(&info.resources);
        self.tasks.insert(
            key,
            Task {
                info: info.clone(),
                framework_id: framework_id.clone(),
                state: TaskState::Staging,
                status: None,
            },
        );
        match &info.kind {
            TaskKind::Command(command) => {
                let command = command.clone();
                self.launch_command(&framework_id, &info, command);
            }
            TaskKind::Executor(executor) => {
                let executor = executor.clone();
                self.run_on_executor(&framework_id, info, &executor);
            }
        }
    }

    /// Whom `command` of `framework_id` runs as: its own user, else its
    /// framework's.
    fn user_of(
        &self,
        framework_id: &FrameworkId,
        command: &strata_protocol::CommandInfo,
    ) -> String {
        command
            .user
            .clone()
            .or_else(|| {
                self.frameworks
                    .get(framework_id)
                    .map(|framework| framework.user.clone())
            })
            .unwrap_or_default()
    }

    fn launch_command(
        &mut self,
        framework_id: &FrameworkId,
        info: &TaskInfo,
        command: strata_protocol::CommandInfo,
    ) {
        let Some(agent_id) = self.agent_id.clone() else {
            return;
        };
        let task_id = info.task_id.clone();
        self.report(framework_id, &task_id, TaskState::Starting, "");
        let container = self.new_container_id();
        let sandbox = self.sandbox(
            &agent_id,
            framework_id,
            &command_executor::executor_name(&task_id),
            &container,
        );
        let environment = BTreeMap::from([
            ("STRATA_TASK_ID".to_owned(), task_id.to_string()),
            ("STRATA_FRAMEWORK_ID".to_owned(), framework_id.to_string()),
            ("STRATA_AGENT_ID".to_owned(), agent_id.to_string()),
        ]);
        let spec = LaunchSpec {
            sandbox,
            user: self.user_of(framework_id, &command),
            command,
            environment,
            outlives_agent: self.checkpointing(framework_id),
            labels: info.labels.clone(),
            executor: None,
            resources: info.resources.clone(),
        };
        self.containers.insert(
            (framework_id.clone(), task_id),
            TaskContainer {
                container: container.clone(),
                run: None,
                kill_requested: false,
                limit_exceeded: None,
            },
        );
        self.emit(Effect::Launch {
            container,
            spec: Box::new(spec),
        });
    }

    /// The task whose container is `container`.
    fn task_of(&self, container: &ContainerId) -> Option<TaskKey> {
        self.containers
            .iter()
            .find(|(_, task)| &task.container == container)
            .map(|(key, _)| key.clone())
    }

    /// The executor whose container is `container`.
    fn executor_of(&self, container: &ContainerId) -> Option<ExecutorKey> {
        self.executors
            .iter()
            .find(|(_, run)| &run.container == container)
            .map(|(key, _)| key.clone())
    }

    fn launched(&mut self, container: &ContainerId, result: Result<RunCheckpoint, LaunchError>) {
        if let Some(key) = self.task_of(container) {
            match result {
                Err(error) => {
                    self.containers.remove(&key);
                    let reason = if error.preparation {
                        Reason::ContainerPreparationFailed
                    } else {
                        Reason::CommandExecutorFailed
                    };
                    self.report_with(
                        &key.0,
                        &key.1,
                        TaskState::Failed,
                        Some(reason),
                        &error.message,
                    );
                }
                Ok(run) => {
                    let message = format!("running in {}", run.sandbox.display());
                    let kill_requested = match self.containers.get_mut(&key) {
                        Some(task) => {
                            task.run = Some(run);
                            task.kill_requested
                        }
                        None => false,
                    };
                    self.report(&key.0, &key.1, TaskState::Running, &message);
                    if kill_requested {
                        self.stop_container(container.clone());
                    }
                }
            }
            return;
        }
        if let Some(key) = self.executor_of(container) {
            match result {
                Err(error) => {
                    let Some(run) = self.executors.remove(&key) else {
                        return;
                    };
                    let reason = if error.preparation {
                        Reason::ContainerPreparationFailed
                    } else {
                        Reason::ExecutorTerminated
                    };
                    for task_id in run.tasks {
                        self.report_with(
                            &key.0,
                            &task_id,
                            TaskState::Failed,
                            Some(reason),
                            &error.message,
                        );
                    }
                }
                Ok(run) => {
                    if let Some(executor) = self.executors.get_mut(&key) {
                        executor.run = Some(run);
                    }
                    self.update_executor_limits(&key);
                    self.checkpoint_executor(&key);
                    self.expect_registration(key, container.clone());
                }
            }
            return;
        }
        // Launched for a task or executor that is gone meanwhile.
        if result.is_ok() {
            self.emit(Effect::Signal {
                container: container.clone(),
                signal: Signal::KILL,
            });
        }
    }

    fn exited(
        &mut self,
        container: &ContainerId,
        status: Result<ExitStatus, String>,
        limitation: Option<Limitation>,
    ) {
        if let Some(key) = self.task_of(container) {
            self.task_exited(key, status, limitation);
        } else if let Some(key) = self.executor_of(container) {
            self.executor_exited(key, status, limitation);
        }
        // Its end is recorded (or no longer anyone's to report).
        self.emit(Effect::Forget(container.clone()));
    }

    fn task_exited(
        &mut self,
        key: TaskKey,
        status: Result<ExitStatus, String>,
        limitation: Option<Limitation>,
    ) {
        // Nothing the task started outlives it: its parent killed its
        // group before reaping it, and the shell kills what is left of
        // one whose end is unknown when it forgets it.
        let Some(task) = self.containers.remove(&key) else {
            return;
        };
        self.usage.remove(&key);
        // The kernel's word on the limit first, else the agent's sample.
        if let Some(message) = limitation
            .map(|limitation| limitation.message())
            .or(task.limit_exceeded)
        {
            self.report_with(
                &key.0,
                &key.1,
                TaskState::Failed,
                Some(Reason::ContainerLimitationMemory),
                &message,
            );
        } else {
            let status = status.map_err(std::io::Error::other);
            let (state, message) = command_executor::outcome(status, task.kill_requested);
            self.report(&key.0, &key.1, state, &message);
        }
    }

    /// Asks a container to stop: SIGTERM now, SIGKILL after the grace.
    fn stop_container(&mut self, container: ContainerId) {
        self.emit(Effect::Signal {
            container: container.clone(),
            signal: Signal::TERM,
        });
        self.emit(Effect::Timer {
            after: self.config.kill_grace,
            timer: Timer::Kill(container),
        });
    }

    fn kill_task(&mut self, framework_id: &FrameworkId, task_id: &TaskId) {
        if self.kill_executor_task(framework_id, task_id) {
            return;
        }
        let key = (framework_id.clone(), task_id.clone());
        let Some(task) = self.containers.get_mut(&key) else {
            self.report(
                framework_id,
                task_id,
                TaskState::Killed,
                "killed at the framework's request",
            );
            return;
        };
        // Its exit reports KILLED; one still launching is stopped once it
        // has started.
        task.kill_requested = true;
        if task.run.is_some() {
            let container = task.container.clone();
            self.stop_container(container);
        }
    }

    fn timer(&mut self, timer: Timer) {
        match timer {
            Timer::Register { round } if round == self.registration_round => self.register(),
            Timer::Register { .. } => {}
            // A container that has ended since is forgotten: the signal
            // reaches nothing.
            Timer::Kill(container) => self.emit(Effect::Signal {
                container,
                signal: Signal::KILL,
            }),
            Timer::ExecutorRegistration {
                framework_id,
                executor_id,
                container,
            } => {
                if let Some(run) = self.executors.get_mut(&(framework_id, executor_id.clone()))
                    && run.pid.is_none()
                    && run.container == container
                {
                    warn!(executor_id = %executor_id, "executor did not register in time; killing it");
                    run.registration_timed_out = true;
                    self.emit(Effect::Signal {
                        container,
                        signal: Signal::KILL,
                    });
                }
            }
        }
    }

    /// Records usage; kills a task over its memory, or one the kernel
    /// killed a process of for its memory.
    fn sampled(&mut self, usage: BTreeMap<ContainerId, GroupUsage>) {
        self.usage.clear();
        let mut over = Vec::new();
        for (key, task) in &mut self.containers {
            let Some(sample) = usage.get(&task.container) else {
                continue;
            };
            self.usage.insert(key.clone(), *sample);
            let mem_mb = self
                .tasks
                .get(key)
                .map_or(0, |task| task.info.resources.mem_mb().floor());
            if task.limit_exceeded.is_some() {
                continue;
            }
            let exceeded = match &sample.kernel {
                // The kernel enforces the limit: a process it killed for
                // memory stops the whole container, as in Mesos.
                Some(kernel) => (kernel.oom_kills > 0).then(|| {
                    Limitation::Memory {
                        limit_bytes: kernel.memory_limit_bytes.unwrap_or(0),
                        peak_bytes: kernel.memory_peak_bytes.max(kernel.memory_bytes),
                    }
                    .message()
                }),
                None => crate::usage::over_memory_limit(sample.rss_bytes, mem_mb).then(|| {
                    Limitation::Memory {
                        limit_bytes: mem_mb.saturating_mul(1 << 20),
                        peak_bytes: sample.rss_bytes,
                    }
                    .message()
                }),
            };
            if let Some(message) = exceeded {
                task.limit_exceeded = Some(message);
                over.push(task.container.clone());
            }
        }
        for container in over {
            self.emit(Effect::Signal {
                container,
                signal: Signal::KILL,
            });
        }
    }

    fn shutdown_framework(&mut self, framework_id: &FrameworkId) {
        let keys: Vec<TaskKey> = self
            .tasks
            .keys()
            .filter(|(owner, _)| owner == framework_id)
            .cloned()
            .collect();
        for key in keys {
            // Its end, when it comes, is no one's to report.
            if let Some(task) = self.containers.remove(&key) {
                self.emit(Effect::Signal {
                    container: task.container,
                    signal: Signal::KILL,
                });
            }
            if let Some(task) = self.tasks.remove(&key) {
                self.allocated = self
                    .allocated
                    .checked_sub(&task.info.resources)
                    .unwrap_or_default();
            }
        }
        self.finished.retain(|(owner, _), _| owner != framework_id);
        self.shutdown_executors(framework_id, None);
        self.frameworks.remove(framework_id);
        self.updates.remove_framework(framework_id);
        if let Some((work_dir, agent_id)) = self.checkpoint_root() {
            self.emit(Effect::RemoveDir(checkpoint::framework_dir(
                &work_dir,
                &agent_id,
                framework_id,
            )));
        }
    }

    // ---- status updates ---------------------------------------------------

    fn forward(&mut self, forward: Forward) {
        self.send_master(ToMaster::StatusUpdate {
            framework_id: forward.framework_id,
            status: forward.status,
        });
    }

    /// Records a state change of a task and reports it (at least once).
    pub fn report(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        message: &str,
    ) {
        self.report_with(framework_id, task_id, state, None, message);
    }

    fn report_with(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: Option<Reason>,
        message: &str,
    ) {
        let key = (framework_id.clone(), task_id.clone());
        let sandbox = self.relative_sandbox(&key);
        let update_id = UpdateId(self.random.next_u128());
        let now = self.now();
        let Some(task) = self.tasks.get_mut(&key) else {
            return;
        };
        if !task.state.can_become(state) {
            return;
        }
        let status = TaskStatus {
            task_id: task_id.clone(),
            state,
            source: Source::Executor,
            reason,
            message: message.to_owned(),
            agent_id: self.agent_id.clone(),
            executor_id: None,
            update_id: Some(update_id),
            timestamp_ms: now.wall_ms,
            sandbox,
        };
        task.state = state;
        task.status = Some(status.clone());
        if state.is_terminal() {
            self.allocated = self
                .allocated
                .checked_sub(&task.info.resources)
                .unwrap_or_default();
            // The agent forgets a finished task once the framework has
            // acknowledged its last update.
            if let Some(task) = self.tasks.remove(&key) {
                self.finished.insert(key.clone(), task);
            }
        }
        let send_now = self.updates.push(now.instant, framework_id, status);
        self.checkpoint_stream(framework_id, task_id);
        self.checkpoint_task(framework_id, task_id);
        if let (Some(forward), Registration::Registered) = (send_now, self.registration) {
            self.forward(forward);
        }
    }

    // ---- checkpoints ------------------------------------------------------

    fn write(&mut self, path: PathBuf, checkpoint: Checkpoint) {
        self.emit(Effect::Write { path, checkpoint });
    }

    /// Records which agent this work directory belongs to, and its info.
    fn checkpoint_agent(&mut self) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        let agent = AgentCheckpoint {
            version: checkpoint::FORMAT_VERSION,
            info: self.info(),
        };
        self.write(
            checkpoint::agent_path(&work_dir, &agent_id),
            Checkpoint::Agent(Box::new(agent)),
        );
        self.write(
            checkpoint::latest_path(&work_dir),
            Checkpoint::Latest(agent_id),
        );
    }

    fn checkpoint_framework(&mut self, framework_id: &FrameworkId) {
        let (Some((work_dir, agent_id)), Some(info)) =
            (self.checkpoint_root(), self.frameworks.get(framework_id))
        else {
            return;
        };
        if !info.checkpoint {
            return;
        }
        let framework = FrameworkCheckpoint {
            version: checkpoint::FORMAT_VERSION,
            info: info.clone(),
        };
        self.write(
            checkpoint::framework_dir(&work_dir, &agent_id, framework_id).join("framework.json"),
            Checkpoint::Framework(Box::new(framework)),
        );
    }

    /// Saves a task's unacknowledged updates, for frameworks that asked
    /// agents to checkpoint.
    fn checkpoint_stream(&mut self, framework_id: &FrameworkId, task_id: &TaskId) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        if !self.checkpointing(framework_id) {
            return;
        }
        let path = checkpoint::stream_path(&work_dir, &agent_id, framework_id, task_id);
        let pending = self.updates.pending(framework_id, task_id);
        if pending.is_empty() {
            self.emit(Effect::Remove { path, prune: true });
            return;
        }
        let stream = StreamCheckpoint {
            version: checkpoint::FORMAT_VERSION,
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            pending,
        };
        self.write(path, Checkpoint::Stream(Box::new(stream)));
    }

    /// Saves a task's state and container, or removes them once it is
    /// acknowledged terminal.
    fn checkpoint_task(&mut self, framework_id: &FrameworkId, task_id: &TaskId) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        if !self.checkpointing(framework_id) {
            return;
        }
        let path =
            checkpoint::task_dir(&work_dir, &agent_id, framework_id, task_id).join("task.json");
        let key = (framework_id.clone(), task_id.clone());
        match self.tasks.get(&key).or_else(|| self.finished.get(&key)) {
            None => self.emit(Effect::Remove { path, prune: true }),
            Some(task) => {
                let checkpoint = TaskCheckpoint {
                    version: checkpoint::FORMAT_VERSION,
                    task: task.clone(),
                    run: self
                        .containers
                        .get(&key)
                        .and_then(|container| container.run.clone()),
                };
                self.write(path, Checkpoint::Task(Box::new(checkpoint)));
            }
        }
    }

    /// Saves an executor's container and address, for frameworks that
    /// checkpoint.
    fn checkpoint_executor(&mut self, key: &ExecutorKey) {
        let (Some((work_dir, agent_id)), Some(executor)) =
            (self.checkpoint_root(), self.executors.get(key))
        else {
            return;
        };
        let Some(run) = &executor.run else {
            return;
        };
        if !self.checkpointing(&key.0) {
            return;
        }
        let checkpoint = ExecutorCheckpoint {
            version: checkpoint::FORMAT_VERSION,
            executor_id: key.1.clone(),
            group: run.group,
            start_ticks: run.start_ticks,
            pid: executor.pid.clone(),
            launched: run.launched,
            container: run.container.clone(),
            sandbox: run.sandbox.clone(),
        };
        self.write(
            checkpoint::executor_path(&work_dir, &agent_id, &key.0, &key.1),
            Checkpoint::Executor(Box::new(checkpoint)),
        );
    }

    fn forget_executor_checkpoint(&mut self, key: &ExecutorKey) {
        if let Some((work_dir, agent_id)) = self.checkpoint_root() {
            let path = checkpoint::executor_path(&work_dir, &agent_id, &key.0, &key.1);
            self.emit(Effect::Remove { path, prune: false });
        }
    }

    // ---- custom executors -------------------------------------------------

    /// Hands a task to its framework's executor, starting it if needed.
    fn run_on_executor(
        &mut self,
        framework_id: &FrameworkId,
        task: TaskInfo,
        executor: &ExecutorInfo,
    ) {
        let key = (framework_id.clone(), executor.executor_id.clone());
        if !self.executors.contains_key(&key)
            && let Err(reason) = self.start_executor(framework_id, executor)
        {
            self.report_with(
                framework_id,
                &task.task_id,
                TaskState::Failed,
                Some(Reason::ExecutorTerminated),
                &reason,
            );
            return;
        }
        let Some(run) = self.executors.get_mut(&key) else {
            return;
        };
        run.tasks.insert(task.task_id.clone());
        match run.pid.clone() {
            Some(pid) => self.emit(Effect::ToExecutor {
                to: pid,
                message: ToExecutor::LaunchTask { task },
            }),
            None => run.queued.push(task),
        }
        self.update_executor_limits(&key);
    }

    /// Tells the containerizer what executor `key`'s container may use
    /// now: its own resources and its live tasks'. Only for a container
    /// that has started (its launch gets the latest when it has).
    fn update_executor_limits(&mut self, key: &ExecutorKey) {
        let Some(run) = self.executors.get(key) else {
            return;
        };
        let (Some(_), Some(info)) = (&run.run, &run.info) else {
            return;
        };
        let mut resources = info.resources.clone();
        for task_id in &run.tasks {
            if let Some(task) = self.tasks.get(&(key.0.clone(), task_id.clone())) {
                resources.add(&task.info.resources);
            }
        }
        self.emit(Effect::Update {
            container: run.container.clone(),
            resources,
        });
    }

    fn start_executor(
        &mut self,
        framework_id: &FrameworkId,
        executor: &ExecutorInfo,
    ) -> Result<(), String> {
        let agent_id = self.agent_id.clone().ok_or("the agent is not registered")?;
        if !self.config.executors {
            return Err("this agent has no credentials to give executors".into());
        }
        let pid = self.pid.clone().ok_or("the agent has not started")?;
        let container = self.new_container_id();
        let sandbox = self.sandbox(
            &agent_id,
            framework_id,
            executor.executor_id.as_str(),
            &container,
        );
        let tls_dir = sandbox.join(crate::http::CREDENTIALS_DIR);
        let mut environment = BTreeMap::from([
            ("STRATA_AGENT_PID".to_owned(), pid.to_string()),
            ("STRATA_AGENT_ID".to_owned(), agent_id.to_string()),
            ("STRATA_FRAMEWORK_ID".to_owned(), framework_id.to_string()),
            (
                "STRATA_EXECUTOR_ID".to_owned(),
                executor.executor_id.to_string(),
            ),
            ("STRATA_TLS_DIR".to_owned(), tls_dir.display().to_string()),
        ]);
        // Apache Mesos's environment, for executors written with a Mesos
        // library against the v1 executor API (on the agent's HTTP
        // port, the same as its node's). MESOS_CHECKPOINT is only set
        // when it is true: libraries read any value as true.
        let sandbox_text = sandbox.display().to_string();
        environment.extend([
            ("MESOS_AGENT_ENDPOINT".to_owned(), pid.addr().to_string()),
            ("MESOS_FRAMEWORK_ID".to_owned(), framework_id.to_string()),
            (
                "MESOS_EXECUTOR_ID".to_owned(),
                executor.executor_id.to_string(),
            ),
            ("MESOS_DIRECTORY".to_owned(), sandbox_text.clone()),
            ("MESOS_SANDBOX".to_owned(), sandbox_text),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".to_owned(),
                format!("{}ms", self.config.kill_grace.as_millis()),
            ),
        ]);
        if self.checkpointing(framework_id) {
            environment.insert("MESOS_CHECKPOINT".to_owned(), "1".to_owned());
            // It outlives this agent, waiting to be reconnected.
            environment.insert("STRATA_CHECKPOINT".to_owned(), "1".to_owned());
            environment.insert(
                "STRATA_RECOVERY_TIMEOUT".to_owned(),
                EXECUTOR_RECOVERY_TIMEOUT.as_secs().to_string(),
            );
        }
        let spec = LaunchSpec {
            sandbox,
            user: self.user_of(framework_id, &executor.command),
            command: executor.command.clone(),
            environment,
            outlives_agent: self.checkpointing(framework_id),
            labels: BTreeMap::new(),
            executor: Some((framework_id.clone(), executor.executor_id.clone())),
            // Its tasks' are added as they come.
            resources: executor.resources.clone(),
        };
        let key = (framework_id.clone(), executor.executor_id.clone());
        let mut run = ExecutorRun::new(container.clone(), None);
        run.info = Some(executor.clone());
        self.executors.insert(key, run);
        self.emit(Effect::Launch {
            container,
            spec: Box::new(spec),
        });
        Ok(())
    }

    /// Kills an executor that does not register in time.
    fn expect_registration(&mut self, key: ExecutorKey, container: ContainerId) {
        self.emit(Effect::Timer {
            after: self.config.executor_registration_timeout,
            timer: Timer::ExecutorRegistration {
                framework_id: key.0,
                executor_id: key.1,
                container,
            },
        });
    }

    /// `RegisterExecutor` and `ExecutorStatus`, from executor processes.
    fn executor_message(
        &mut self,
        from: Upid,
        identity: &PeerIdentity,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        status: Option<TaskStatus>,
    ) {
        if !crate::credentials::is_executor(identity, &framework_id, &executor_id) {
            warn!(
                from = %from,
                identity = %identity,
                executor_id = %executor_id,
                "executor message under another identity than the one issued to that executor dropped"
            );
            return;
        }
        let key = (framework_id.clone(), executor_id.clone());
        let Some(agent_id) = self.agent_id.clone() else {
            return;
        };
        let Some(run) = self.executors.get_mut(&key) else {
            warn!(from = %from, executor_id = %executor_id, "message from an executor this agent did not start");
            return;
        };
        match status {
            None => {
                if run.pid.as_ref().is_some_and(|pid| !pid.same_name(&from)) {
                    warn!(from = %from, executor_id = %executor_id, "a second process registered for an executor");
                    return;
                }
                run.pid = Some(from.clone());
                let queued = std::mem::take(&mut run.queued);
                self.checkpoint_executor(&key);
                self.emit(Effect::Link(from.clone()));
                self.emit(Effect::ToExecutor {
                    to: from.clone(),
                    message: ToExecutor::ExecutorRegistered {
                        agent_id,
                        framework_id,
                        executor_id,
                    },
                });
                for task in queued {
                    self.emit(Effect::ToExecutor {
                        to: from.clone(),
                        message: ToExecutor::LaunchTask { task },
                    });
                }
            }
            Some(status) => {
                let own_task = run.tasks.contains(&status.task_id);
                let registered_sender = run.pid.as_ref().is_some_and(|pid| pid.same_name(&from));
                if !own_task || !registered_sender {
                    warn!(from = %from, task_id = %status.task_id, "status for a task this executor does not run");
                    return;
                }
                if status.state.is_terminal() {
                    run.tasks.remove(&status.task_id);
                }
                let taken = Effect::UpdateTaken {
                    to: from,
                    task_id: status.task_id.clone(),
                    update_id: status.update_id,
                };
                // An executor reconnected after an agent restart resends
                // its tasks' latest states; one already recorded is no news.
                let recorded = self
                    .tasks
                    .get(&(framework_id.clone(), status.task_id.clone()))
                    .and_then(|task| task.status.as_ref());
                if !recorded.is_some_and(|known| {
                    known.state == status.state && known.message == status.message
                }) {
                    self.report_with(
                        &framework_id,
                        &status.task_id,
                        status.state,
                        status.reason,
                        &status.message,
                    );
                }
                // Taken once it is recorded (checkpointed first).
                self.emit(taken);
                if status.state.is_terminal() {
                    self.update_executor_limits(&key);
                }
            }
        }
    }

    /// Framework messages: from the master for an executor, or from an
    /// executor for its scheduler. Delivered at most once, as in Mesos.
    fn relay_framework_message(
        &mut self,
        from: Upid,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Blob,
    ) {
        let key = (framework_id.clone(), executor_id.clone());
        let Some(executor) = self.executors.get(&key).and_then(|run| run.pid.clone()) else {
            debug!(executor_id = %executor_id, "framework message for an executor not running here dropped");
            return;
        };
        if from.same_name(&self.config.master) {
            self.emit(Effect::ToExecutor {
                to: executor,
                message: ToExecutor::FrameworkMessage { data },
            });
        } else if from.same_name(&executor) {
            self.send_master(ToMaster::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            });
        }
    }

    fn executor_exited(
        &mut self,
        key: ExecutorKey,
        status: Result<ExitStatus, String>,
        limitation: Option<Limitation>,
    ) {
        let Some(run) = self.executors.remove(&key) else {
            return;
        };
        self.forget_executor_checkpoint(&key);
        self.send_master(ToMaster::ExecutorExited {
            framework_id: key.0.clone(),
            executor_id: key.1.clone(),
        });
        let (reason, message) = if let Some(limitation) = limitation {
            (Reason::ContainerLimitationMemory, limitation.message())
        } else if run.registration_timed_out {
            (
                Reason::ExecutorRegistrationTimeout,
                "the executor did not register in time".to_owned(),
            )
        } else {
            let (_, how) = command_executor::outcome(status.map_err(std::io::Error::other), false);
            (
                Reason::ExecutorTerminated,
                format!("the executor ended: {how}"),
            )
        };
        debug!(executor_id = %key.1, tasks = run.tasks.len(), "executor ended");
        for task_id in run.tasks {
            self.report_with(&key.0, &task_id, TaskState::Failed, Some(reason), &message);
        }
    }

    /// Kills a task an executor runs; false if no executor runs it.
    fn kill_executor_task(&mut self, framework_id: &FrameworkId, task_id: &TaskId) -> bool {
        let Some((key, run)) = self
            .executors
            .iter_mut()
            .find(|((owner, _), run)| owner == framework_id && run.tasks.contains(task_id))
        else {
            return false;
        };
        if let Some(pid) = run.pid.clone() {
            self.emit(Effect::ToExecutor {
                to: pid,
                message: ToExecutor::KillTask {
                    task_id: task_id.clone(),
                },
            });
            return true;
        }
        run.queued.retain(|task| &task.task_id != task_id);
        run.tasks.remove(task_id);
        let key = key.clone();
        self.update_executor_limits(&key);
        self.report(
            framework_id,
            task_id,
            TaskState::Killed,
            "killed before its executor registered",
        );
        true
    }

    /// Shuts down one executor at its framework's request: its tasks that
    /// have not ended are killed (TASK_KILLED), then it is asked to stop
    /// and killed after the grace period.
    fn shutdown_executor(&mut self, framework_id: &FrameworkId, executor_id: &ExecutorId) {
        let key = (framework_id.clone(), executor_id.clone());
        let Some(run) = self.executors.get(&key) else {
            return;
        };
        let tasks: Vec<TaskId> = run.tasks.iter().cloned().collect();
        for task_id in tasks {
            self.report_with(
                framework_id,
                &task_id,
                TaskState::Killed,
                Some(Reason::ExecutorTerminated),
                "its executor was shut down by its framework",
            );
        }
        self.shutdown_executors(framework_id, Some(executor_id));
    }

    /// Asks a framework's executors (or only `only`) to shut down,
    /// killing them after the grace period.
    fn shutdown_executors(&mut self, framework_id: &FrameworkId, only: Option<&ExecutorId>) {
        let keys: Vec<ExecutorKey> = self
            .executors
            .keys()
            .filter(|(owner, executor)| {
                owner == framework_id && only.is_none_or(|only| only == executor)
            })
            .cloned()
            .collect();
        for key in keys {
            let Some(run) = self.executors.remove(&key) else {
                continue;
            };
            if let Some(pid) = &run.pid {
                self.emit(Effect::ToExecutor {
                    to: pid.clone(),
                    message: ToExecutor::Shutdown,
                });
            }
            // A restarted agent does not take it back.
            self.forget_executor_checkpoint(&key);
            self.send_master(ToMaster::ExecutorExited {
                framework_id: key.0.clone(),
                executor_id: key.1.clone(),
            });
            self.emit(Effect::Timer {
                after: self.config.kill_grace,
                timer: Timer::Kill(run.container),
            });
        }
    }

    /// An executor's process went away (its link broke, or its HTTP
    /// stream): kill what is left of it; its exit then fails its tasks.
    fn executor_lost(&mut self, pid: &Upid) -> bool {
        let lost = self
            .executors
            .values()
            .find(|run| run.pid.as_ref().is_some_and(|known| known.same_name(pid)))
            .map(|run| run.container.clone());
        match lost {
            Some(container) => {
                self.emit(Effect::Signal {
                    container,
                    signal: Signal::KILL,
                });
                true
            }
            None => false,
        }
    }

    /// The executor `run` of `framework_id` was started from, or the one a
    /// task of its names (for one an earlier life of the agent started).
    pub fn executor_info(
        &self,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
    ) -> Option<ExecutorInfo> {
        let started = self
            .executors
            .get(&(framework_id.clone(), executor_id.clone()))
            .and_then(|run| run.info.clone());
        started.or_else(|| {
            self.tasks
                .iter()
                .filter(|((owner, _), _)| owner == framework_id)
                .find_map(|(_, task)| match &task.info.kind {
                    TaskKind::Executor(executor) if executor.executor_id == *executor_id => {
                        Some(executor.clone())
                    }
                    _ => None,
                })
        })
    }
}
