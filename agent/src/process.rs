//! The agent process: registration, pings, tasks and status updates.
//!
//! The agent registers with its master, retrying with jittered
//! exponential backoff (a random wait in [0, 1 s·2ⁿ], capped at a
//! minute, as Mesos's agents do), and re-registers under the same id with
//! the tasks it runs whenever it loses the master. It answers pings, runs
//! the tasks the master sends, and reports every state change through the
//! status update streams, resending until acknowledged. It obeys only its
//! master: messages from anyone else are dropped.
//!
//! Tasks and custom executors run in containers (see
//! [`crate::containerizer`]): process groups on this machine
//! ([`Runner::Processes`]), or those of another containerizer in tests
//! and simulation ([`Runner::Containers`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::Signal;

use strata_protocol::{
    AgentId, AgentInfo, FrameworkId, FrameworkInfo, Reason, Source, Task, TaskId, TaskInfo,
    TaskKind, TaskState, TaskStatus, ToAgent, ToMaster, UpdateId,
};
use strata_runtime::random::SplitMix;
use strata_runtime::{Process, ProcessContext, Upid};
use tracing::{debug, error, info, warn};

use crate::checkpoint::RunCheckpoint;
use crate::command_executor;
use crate::containerizer::{ContainerId, Containerizer, Containerizers, Launch};
use crate::status_updates::{Forward, StatusUpdates};

/// The agent's process id.
pub const AGENT_ID: &str = "agent";

/// Longest wait between registration attempts.
const MAX_REGISTRATION_BACKOFF: Duration = Duration::from_secs(60);

/// How often unacknowledged updates are checked for resending.
const UPDATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the agent checks that its master still pings it.
const MASTER_SILENCE_CHECK: Duration = Duration::from_millis(250);

/// What an agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub master: Upid,
    pub hostname: String,
    pub resources: strata_protocol::Resources,
    pub attributes: strata_protocol::Attributes,
    /// Seeds the agent's jitter and update ids.
    pub seed: u64,
    pub runner: Runner,
    /// First wait before an unacknowledged status update is resent
    /// (Mesos: 10 s; it doubles up to 10 min).
    pub status_update_retry: Duration,
    /// How often task usage is sampled and memory limits checked.
    pub usage_interval: Duration,
    /// What custom executors get their own certificates from; without
    /// it the agent cannot run custom executors. The agent's node must
    /// trust them ([`crate::ExecutorCredentials::trusted_by`]).
    pub executor_credentials: Option<crate::ExecutorCredentials>,
    /// How long a custom executor has to register (Mesos: 1 min).
    pub executor_registration_timeout: Duration,
    /// The task launcher program (the `strata` binary, run as
    /// `strata task-launcher`); with it, tasks are the launcher's children,
    /// so they survive an agent restart and their ends are still known
    /// (see [`crate::launcher`]). Without it tasks are the agent's own
    /// children.
    pub task_launcher: Option<PathBuf>,
    /// Whether tasks run as their framework's user (when the agent is
    /// root); otherwise as the agent's own user (`--switch-user=false`).
    pub switch_user: bool,
    /// Whether stopping the agent kills every task; when false only the
    /// tasks of frameworks that do not checkpoint are killed, and the rest
    /// keep running for the restarted agent to recover.
    pub kill_tasks_on_stop: bool,
    /// Where its checkpoints are written (the real disk but in
    /// simulations).
    pub disk: strata_runtime::durable::Disk,
}

impl AgentConfig {
    /// A configuration with Mesos's defaults for the timings.
    pub fn new(
        master: Upid,
        hostname: String,
        resources: strata_protocol::Resources,
        attributes: strata_protocol::Attributes,
        seed: u64,
        runner: Runner,
    ) -> AgentConfig {
        AgentConfig {
            master,
            hostname,
            resources,
            attributes,
            seed,
            runner,
            status_update_retry: crate::status_updates::FIRST_RETRY,
            usage_interval: Duration::from_secs(1),
            executor_credentials: None,
            executor_registration_timeout: Duration::from_secs(60),
            task_launcher: None,
            switch_user: false,
            kill_tasks_on_stop: true,
            disk: Default::default(),
        }
    }
}

/// An agent's resources: everything, what its tasks hold, what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAccount {
    pub total: strata_protocol::Resources,
    pub allocated: strata_protocol::Resources,
    pub free: strata_protocol::Resources,
}

/// Mesos's default grace between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// How tasks run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// As process groups on this machine
    /// ([`crate::containerizer::ProcessContainerizer`]), with sandboxes
    /// and checkpoints under `work_dir`.
    Processes {
        work_dir: PathBuf,
        kill_grace: Duration,
    },
    /// In the containers of another containerizer (tests, the failure
    /// simulation), with checkpoints in `work_dir` when given, and no
    /// kill grace.
    Containers {
        containerizers: Containerizers,
        work_dir: Option<PathBuf>,
    },
}

impl Runner {
    /// Where sandboxes and checkpoints are.
    pub fn work_dir(&self) -> Option<&std::path::Path> {
        match self {
            Runner::Processes { work_dir, .. } => Some(work_dir),
            Runner::Containers { work_dir, .. } => work_dir.as_deref(),
        }
    }

    /// Between asking a task to stop and killing it.
    pub fn kill_grace(&self) -> Duration {
        match self {
            Runner::Processes { kill_grace, .. } => *kill_grace,
            Runner::Containers { .. } => Duration::ZERO,
        }
    }
}

/// A task's container.
#[derive(Debug, Clone)]
pub(crate) struct TaskProcess {
    /// What is checkpointed of it (its container id among it).
    pub(crate) run: RunCheckpoint,
    pub(crate) kill_requested: bool,
    /// Why the agent killed it for exceeding a limit, if it did.
    pub(crate) limit_exceeded: Option<String>,
}

impl TaskProcess {
    pub(crate) fn new(run: RunCheckpoint) -> TaskProcess {
        TaskProcess {
            run,
            kill_requested: false,
            limit_exceeded: None,
        }
    }

    pub(crate) fn container(&self) -> &ContainerId {
        &self.run.container
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    Registering { attempt: u32 },
    Registered,
    Refused,
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) agent_id: Option<AgentId>,
    pub(crate) registration: Registration,
    pub(crate) frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    pub(crate) tasks: BTreeMap<(FrameworkId, TaskId), Task>,
    /// Terminal tasks whose last updates are not acknowledged yet; they
    /// are reported on re-registration so the master waits for them.
    pub(crate) finished: BTreeMap<(FrameworkId, TaskId), Task>,
    pub(crate) updates: StatusUpdates,
    /// Where tasks and executors run.
    pub(crate) containerizer: Box<dyn Containerizer>,
    pub(crate) processes: BTreeMap<(FrameworkId, TaskId), TaskProcess>,
    /// Resources of the tasks that are not terminal.
    pub(crate) allocated: strata_protocol::Resources,
    /// The latest usage sample of each running task process.
    pub(crate) usage: BTreeMap<(FrameworkId, TaskId), crate::usage::GroupUsage>,
    pub(crate) executors: crate::executors::Executors,
    pub(crate) random: SplitMix,
    /// The longest the master may stay silent, as it said when it
    /// registered this agent, and when it last pinged.
    pub(crate) master_ping_limit: Option<Duration>,
    /// The master followed: older masters' messages are ignored.
    pub(crate) master_epoch: strata_protocol::MasterEpoch,
    /// Where snapshots for the HTTP endpoints go.
    pub(crate) publisher: Option<crate::http::Publisher>,
    pub(crate) pid: String,
    pub(crate) last_ping: Instant,
    /// Calls from the v1 executor API, when the agent serves it.
    pub(crate) executor_api: Option<crate::executor_api::ExecutorApiReceiver>,
    /// The streams of HTTP executors.
    pub(crate) http_executors: crate::executor_api::HttpExecutors,
}

pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        let random = SplitMix::new(config.seed);
        let updates = StatusUpdates::with_retries(
            config.status_update_retry,
            crate::status_updates::LAST_RETRY,
        );
        let containerizer: Box<dyn Containerizer> = match &config.runner {
            Runner::Processes { work_dir, .. } => {
                Box::new(crate::containerizer::ProcessContainerizer::new(
                    work_dir,
                    config.task_launcher.clone(),
                ))
            }
            Runner::Containers { containerizers, .. } => containerizers.make(),
        };
        Agent {
            config,
            agent_id: None,
            registration: Registration::Registering { attempt: 0 },
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            finished: BTreeMap::new(),
            updates,
            containerizer,
            processes: BTreeMap::new(),
            allocated: strata_protocol::Resources::new(),
            usage: BTreeMap::new(),
            executors: BTreeMap::new(),
            random,
            master_ping_limit: None,
            master_epoch: Default::default(),
            publisher: None,
            pid: String::new(),
            last_ping: now(),
            executor_api: None,
            http_executors: Default::default(),
        }
    }

    /// Serves the v1 executor API's calls that arrive on `api` (see
    /// [`crate::executor_api`]).
    pub fn serving_executor_api(mut self, api: crate::executor_api::ExecutorApiReceiver) -> Agent {
        self.executor_api = Some(api);
        self
    }

    /// Publishes a snapshot every usage interval, for the HTTP endpoints
    /// ([`crate::http::routes`]).
    pub fn publishing(mut self, publisher: crate::http::Publisher) -> Agent {
        self.publisher = Some(publisher);
        self
    }

    /// The sandbox root: `<work>/agents/<agent>`.
    fn sandbox_root(&self) -> Option<PathBuf> {
        match (&self.config.runner, &self.agent_id) {
            (Runner::Processes { work_dir, .. }, Some(agent_id)) => {
                Some(work_dir.join("agents").join(agent_id.as_str()))
            }
            _ => None,
        }
    }

    /// Task `key`'s sandbox relative to the sandbox root, once it has
    /// one.
    fn relative_sandbox(&self, key: &(FrameworkId, TaskId)) -> Option<String> {
        let process = self.processes.get(key)?;
        let relative = process
            .run
            .sandbox
            .strip_prefix(self.sandbox_root()?)
            .ok()?;
        relative.to_str().map(str::to_owned)
    }

    fn publish(&self) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let tasks = self
            .tasks
            .iter()
            .map(|(key, task)| strata_api::views::AgentTask {
                id: key.1.clone(),
                name: task.info.name.clone(),
                framework_id: key.0.clone(),
                state: task.state,
                resources: task.info.resources.clone(),
                sandbox: self.relative_sandbox(key),
                usage: self.usage.get(key).map(|usage| strata_api::views::Usage {
                    cpus_time_secs: usage.cpu_seconds,
                    mem_rss_bytes: usage.rss_bytes,
                    processes: usage.processes,
                }),
            })
            .collect();
        let executors = self
            .executors
            .iter()
            .map(
                |((framework_id, executor_id), run)| strata_api::views::Executor {
                    framework_id: framework_id.clone(),
                    executor_id: executor_id.clone(),
                    registered: run.registered(),
                    tasks: run.task_count(),
                },
            )
            .collect();
        let state = crate::http::State {
            pid: self.pid.clone(),
            id: self.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            master: self.config.master.to_string(),
            registered: self.registration == Registration::Registered,
            total: self.config.resources.clone(),
            allocated: self.allocated.clone(),
            attributes: self.config.attributes.clone(),
            sandbox_root: self.sandbox_root(),
            tasks,
            executors,
            unacknowledged_updates: self.updates.unacknowledged(),
            snapshot_time_ms: wall_ms(),
        };
        publisher.send_replace(Some(std::sync::Arc::new(state)));
    }

    /// The id the master gave this agent, once registered.
    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    pub(crate) fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub(crate) fn executors(&self) -> &crate::executors::Executors {
        &self.executors
    }

    pub(crate) fn executors_mut(&mut self) -> &mut crate::executors::Executors {
        &mut self.executors
    }

    /// Total, allocated and free resources.
    pub fn resources(&self) -> ResourceAccount {
        ResourceAccount {
            total: self.config.resources.clone(),
            allocated: self.allocated.clone(),
            free: self
                .config
                .resources
                .checked_sub(&self.allocated)
                .unwrap_or_default(),
        }
    }

    /// The latest usage of each running task process.
    pub fn usage(&self) -> &BTreeMap<(FrameworkId, TaskId), crate::usage::GroupUsage> {
        &self.usage
    }

    /// Samples the task processes; kills any over its memory.
    fn sample_usage(&mut self) {
        let sampled = self.containerizer.usage();
        self.usage.clear();
        for (key, process) in &mut self.processes {
            let Some(usage) = sampled.get(process.container()) else {
                continue;
            };
            self.usage.insert(key.clone(), *usage);
            let mem_mb = self
                .tasks
                .get(key)
                .map_or(0, |task| task.info.resources.mem_mb().floor());
            if process.limit_exceeded.is_none()
                && crate::usage::over_memory_limit(usage.rss_bytes, mem_mb)
            {
                process.limit_exceeded = Some(format!(
                    "memory limit exceeded: {} MB used of {mem_mb} MB",
                    usage.rss_bytes / (1024 * 1024)
                ));
                self.containerizer
                    .signal(&process.run.container, Signal::KILL);
            }
        }
    }

    fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            resources: self.config.resources.clone(),
            attributes: self.config.attributes.clone(),
        }
    }

    fn to_master(&self, ctx: &mut ProcessContext<'_, Self>, message: ToMaster) {
        let master = self.config.master.clone();
        if let Err(error) = ctx.send(&master, message) {
            debug!(master = %master, cause = %error, "message to the master not sent");
        }
    }

    /// Sends a (re-)registration and schedules the next attempt in case
    /// no answer comes.
    fn register(&mut self, ctx: &mut ProcessContext<'_, Self>) {
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
        ctx.link(&self.config.master.clone());
        self.to_master(ctx, message);
        let ceiling = Duration::from_secs(1)
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_REGISTRATION_BACKOFF);
        let wait = Duration::from_millis(self.random.below(ceiling.as_millis() as u64 + 1));
        self.registration = Registration::Registering {
            attempt: attempt.saturating_add(1),
        };
        ctx.run_later(wait, |agent, ctx| agent.register(ctx));
    }

    /// A master that stopped pinging has lost this agent (a partition it
    /// may not even see from here, with the connection still up): it has
    /// marked the agent unreachable, so the agent registers again.
    fn check_master_silence(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(limit) = self.master_ping_limit else {
            return;
        };
        if self.registration != Registration::Registered
            || now().saturating_duration_since(self.last_ping) <= limit
        {
            return;
        }
        warn!(
            master = %self.config.master,
            silent_for = ?limit,
            "no ping from the master; registering again"
        );
        self.registration = Registration::Registering { attempt: 0 };
        self.register(ctx);
    }

    fn registered(&mut self, ctx: &mut ProcessContext<'_, Self>, agent_id: AgentId) {
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
        self.publish();
        self.registration = Registration::Registered;
        for forward in self.updates.heads(now()) {
            self.forward(ctx, forward);
        }
    }

    /// Whether a framework asked agents to checkpoint its tasks.
    pub(crate) fn checkpointing(&self, framework_id: &FrameworkId) -> bool {
        self.frameworks
            .get(framework_id)
            .is_some_and(|framework| framework.checkpoint)
    }

    /// The work directory and agent id, when this agent keeps checkpoints.
    pub(crate) fn checkpoint_root(&self) -> Option<(&std::path::Path, &AgentId)> {
        Some((self.config.runner.work_dir()?, self.agent_id.as_ref()?))
    }

    /// Records which agent this work directory belongs to, and its info.
    fn checkpoint_agent(&self) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        let agent = crate::checkpoint::AgentCheckpoint {
            version: crate::checkpoint::FORMAT_VERSION,
            info: self.info(),
        };
        let written = crate::checkpoint::save(
            &self.config.disk,
            &crate::checkpoint::agent_path(work_dir, agent_id),
            &agent,
        )
        .and_then(|()| {
            let latest = crate::checkpoint::latest_path(work_dir);
            self.config
                .disk
                .write_atomically(&latest, agent_id.as_str().as_bytes())
                .map_err(|source| crate::checkpoint::CheckpointError::Write {
                    path: latest,
                    source,
                })
        });
        if let Err(error) = written {
            error!(cause = %error, "agent checkpoint failed; a restart would register anew");
        }
    }

    fn checkpoint_framework(&self, framework_id: &FrameworkId) {
        let (Some((work_dir, agent_id)), Some(info)) =
            (self.checkpoint_root(), self.frameworks.get(framework_id))
        else {
            return;
        };
        if !info.checkpoint {
            return;
        }
        let path = crate::checkpoint::framework_dir(work_dir, agent_id, framework_id)
            .join("framework.json");
        let framework = crate::checkpoint::FrameworkCheckpoint {
            version: crate::checkpoint::FORMAT_VERSION,
            info: info.clone(),
        };
        if let Err(error) = crate::checkpoint::save(&self.config.disk, &path, &framework) {
            error!(cause = %error, "framework checkpoint failed");
        }
    }

    /// Saves a task's unacknowledged updates, for frameworks that asked
    /// agents to checkpoint. A failed write is logged: the update is still
    /// delivered, but would not survive an agent restart.
    fn checkpoint_stream(&self, framework_id: &FrameworkId, task_id: &TaskId) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        if !self.checkpointing(framework_id) {
            return;
        }
        let path = crate::checkpoint::stream_path(work_dir, agent_id, framework_id, task_id);
        let pending = self.updates.pending(framework_id, task_id);
        if let Err(error) = crate::checkpoint::save_stream(
            &self.config.disk,
            &path,
            framework_id,
            task_id,
            &pending,
        ) {
            error!(cause = %error, "status update checkpoint failed");
        }
    }

    /// Saves a task's state and process, or removes them once it is
    /// terminal.
    fn checkpoint_task(&self, framework_id: &FrameworkId, task_id: &TaskId) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        if !self.checkpointing(framework_id) {
            return;
        }
        let path = crate::checkpoint::task_dir(work_dir, agent_id, framework_id, task_id)
            .join("task.json");
        let key = (framework_id.clone(), task_id.clone());
        let written = match self.tasks.get(&key).or_else(|| self.finished.get(&key)) {
            None => crate::checkpoint::remove_task_file(&self.config.disk, &path),
            Some(task) => {
                let run = self.processes.get(&key).map(|process| process.run.clone());
                let checkpoint = crate::checkpoint::TaskCheckpoint {
                    version: crate::checkpoint::FORMAT_VERSION,
                    task: task.clone(),
                    run,
                };
                crate::checkpoint::save(&self.config.disk, &path, &checkpoint)
            }
        };
        if let Err(error) = written {
            error!(cause = %error, "task checkpoint failed");
        }
    }

    /// Removes a framework's checkpoints (it was shut down).
    fn forget_framework_checkpoints(&self, framework_id: &FrameworkId) {
        let Some((work_dir, agent_id)) = self.checkpoint_root() else {
            return;
        };
        let dir = crate::checkpoint::framework_dir(work_dir, agent_id, framework_id);
        if let Err(error) = self.config.disk.remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %dir.display(), cause = %error, "cannot remove a framework's checkpoints");
        }
    }

    fn forward(&self, ctx: &mut ProcessContext<'_, Self>, forward: Forward) {
        self.to_master(
            ctx,
            ToMaster::StatusUpdate {
                framework_id: forward.framework_id,
                status: forward.status,
            },
        );
    }

    /// Records a state change of a task and reports it (at least once).
    pub(crate) fn report(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        message: &str,
    ) {
        self.report_with(ctx, framework_id, task_id, state, None, message);
    }

    pub(crate) fn report_with(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: Option<Reason>,
        message: &str,
    ) {
        let key = (framework_id.clone(), task_id.clone());
        let sandbox = self.relative_sandbox(&key);
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
            update_id: Some(UpdateId(self.random.next_u128())),
            timestamp_ms: wall_ms(),
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
        let send_now = self.updates.push(now(), framework_id, status);
        self.checkpoint_stream(framework_id, task_id);
        self.checkpoint_task(framework_id, task_id);
        if let (Some(forward), Registration::Registered) = (send_now, self.registration) {
            self.forward(ctx, forward);
        }
    }

    fn run_task(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework: FrameworkInfo,
        info: TaskInfo,
    ) {
        let Some(framework_id) = framework.id.clone() else {
            return;
        };
        if Some(&info.agent_id) != self.agent_id.as_ref() {
            warn!(task_id = %info.task_id, "task for another agent ignored");
            return;
        }
        let key = (framework_id.clone(), info.task_id.clone());
        if self.tasks.contains_key(&key) {
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
        if !self.resources().free.contains(&info.resources) {
            // The master should never over-commit; say so if it did.
            warn!(task_id = %info.task_id, "task exceeds the agent's free resources");
        }
        self.allocated.add(&info.resources);
        self.tasks.insert(
            key.clone(),
            Task {
                info: info.clone(),
                framework_id: framework_id.clone(),
                state: TaskState::Staging,
                status: None,
            },
        );
        self.start_process(ctx, &framework_id, &info);
    }

    /// Whom `command` of `framework_id` runs as: its own user, else its
    /// framework's; `None` for the agent's own user.
    pub(crate) fn run_as(
        &self,
        framework_id: &FrameworkId,
        command: &strata_protocol::CommandInfo,
    ) -> Result<Option<crate::users::RunAs>, String> {
        let user = command
            .user
            .clone()
            .or_else(|| {
                self.frameworks
                    .get(framework_id)
                    .map(|framework| framework.user.clone())
            })
            .unwrap_or_default();
        crate::users::run_as(&user, self.config.switch_user)
    }

    /// The sandbox of one run of `executor` (a task's command executor is
    /// named after the task), under the work directory.
    pub(crate) fn sandbox(
        &self,
        agent_id: &AgentId,
        framework_id: &FrameworkId,
        executor: &str,
        run: &ContainerId,
    ) -> PathBuf {
        let work_dir = self
            .config
            .runner
            .work_dir()
            .unwrap_or(std::path::Path::new(""));
        command_executor::sandbox_path(work_dir, agent_id, framework_id, executor, run.as_str())
    }

    /// A new container id: unique on this agent across its lives.
    pub(crate) fn new_container_id(&mut self) -> ContainerId {
        ContainerId::new(format!("{:016x}", self.random.next_u64()))
    }

    /// Starts a task's command in a container and waits for it to end.
    fn start_process(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        info: &TaskInfo,
    ) {
        let task_id = info.task_id.clone();
        let command = match &info.kind {
            TaskKind::Command(command) => command,
            TaskKind::Executor(executor) => {
                self.run_on_executor(ctx, framework_id, info.clone(), executor);
                return;
            }
        };
        let Some(agent_id) = self.agent_id.clone() else {
            return;
        };
        self.report(ctx, framework_id, &task_id, TaskState::Starting, "");
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
        let outlives_agent = self.checkpointing(framework_id);
        let started = self.run_as(framework_id, command).and_then(|run_as| {
            self.containerizer.launch(
                &container,
                Launch {
                    sandbox,
                    command: command.clone(),
                    environment,
                    run_as,
                    outlives_agent,
                    labels: info.labels.clone(),
                },
            )
        });
        match started {
            Err(reason) => self.report_with(
                ctx,
                framework_id,
                &task_id,
                TaskState::Failed,
                Some(Reason::CommandExecutorFailed),
                &reason,
            ),
            Ok(launched) => {
                let key = (framework_id.clone(), task_id.clone());
                let message = format!("running in {}", launched.run.sandbox.display());
                self.processes
                    .insert(key.clone(), TaskProcess::new(launched.run));
                self.report(ctx, framework_id, &task_id, TaskState::Running, &message);
                self.wait_for(ctx, key, container, launched.ending);
            }
        }
    }

    /// Reports task `key` when its container ends.
    pub(crate) fn wait_for(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        key: (FrameworkId, TaskId),
        container: ContainerId,
        ending: command_executor::Ending,
    ) {
        ctx.spawn_future(ending, move |agent, ctx, status| {
            agent.process_exited(ctx, key, container, status)
        });
    }

    pub(crate) fn process_exited(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        key: (FrameworkId, TaskId),
        container: ContainerId,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        // Nothing the task started outlives it: its parent killed its
        // group before reaping it, and the containerizer kills what is
        // left of one whose end is unknown.
        let process = self
            .processes
            .remove(&key)
            .filter(|process| process.container() == &container);
        self.usage.remove(&key);
        if let Some(message) = process
            .as_ref()
            .and_then(|process| process.limit_exceeded.clone())
        {
            self.report_with(
                ctx,
                &key.0,
                &key.1,
                TaskState::Failed,
                Some(Reason::ContainerLimitationMemory),
                &message,
            );
        } else if process.is_some() {
            let kill_requested = process
                .as_ref()
                .is_some_and(|process| process.kill_requested);
            let (state, message) = command_executor::outcome(status, kill_requested);
            self.report(ctx, &key.0, &key.1, state, &message);
        }
        // Its end is recorded (or no longer anyone's to report).
        self.containerizer.forget(&container);
    }

    fn kill_task(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) {
        if self.kill_executor_task(ctx, framework_id, task_id) {
            return;
        }
        let key = (framework_id.clone(), task_id.clone());
        let grace = self.config.runner.kill_grace();
        let Some(process) = self.processes.get_mut(&key) else {
            self.report(
                ctx,
                framework_id,
                task_id,
                TaskState::Killed,
                "killed at the framework's request",
            );
            return;
        };
        // SIGTERM now, SIGKILL after the grace period if it is still
        // there; its exit reports KILLED.
        process.kill_requested = true;
        let container = process.container().clone();
        self.containerizer.signal(&container, Signal::TERM);
        ctx.run_later(grace, move |agent, _| {
            if agent
                .processes
                .get(&key)
                .is_some_and(|process| process.container() == &container)
            {
                agent.containerizer.signal(&container, Signal::KILL);
            }
        });
    }

    fn shutdown_framework(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
    ) {
        let keys: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .keys()
            .filter(|(owner, _)| owner == framework_id)
            .cloned()
            .collect();
        for key in keys {
            // Its end, when it comes, is no one's to report.
            if let Some(process) = self.processes.remove(&key) {
                self.containerizer.signal(process.container(), Signal::KILL);
            }
            self.tasks.remove(&key);
        }
        self.finished.retain(|(owner, _), _| owner != framework_id);
        self.shutdown_executors(ctx, framework_id, None);
        self.frameworks.remove(framework_id);
        self.updates.remove_framework(framework_id);
        self.forget_framework_checkpoints(framework_id);
    }
}

impl Process for Agent {
    type Message = ToAgent;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let master = self.config.master.clone();
        ctx.link(&master);
        self.pid = ctx.pid().to_string();
        if self.publisher.is_some() {
            ctx.run_every(self.config.usage_interval, |agent, _| agent.publish());
        }
        // Checkpoints, the launcher's secret and keys are the agent's
        // alone: tasks running as other users must not read them.
        if let Runner::Processes { work_dir, .. } = &self.config.runner
            && let Err(error) = crate::users::make_private(&work_dir.join("meta"))
        {
            error!(cause = %error, "cannot make the agent's meta directory private; not registering");
            self.registration = Registration::Refused;
            return;
        }
        if let Err(error) = self.recover(ctx) {
            error!(cause = %error, "cannot recover this agent's checkpoints; not registering");
            self.registration = Registration::Refused;
            return;
        }
        self.register(ctx);
        ctx.run_every(self.config.usage_interval, |agent, _| agent.sample_usage());
        ctx.run_every(MASTER_SILENCE_CHECK, |agent, ctx| {
            agent.check_master_silence(ctx)
        });
        if self.executor_api.is_some() {
            self.take_executor_calls(ctx);
            let heartbeat =
                Duration::from_secs_f64(strata_api::scheduler::HEARTBEAT_INTERVAL_SECONDS);
            ctx.run_every(heartbeat, |agent, _| {
                for pid in agent.http_executors.heartbeat() {
                    agent.http_executor_gone(&pid);
                }
            });
        }
        ctx.run_every(
            UPDATE_CHECK_INTERVAL.min(self.config.status_update_retry),
            |agent, ctx| {
                if agent.registration == Registration::Registered {
                    for forward in agent.updates.due(now()) {
                        agent.forward(ctx, forward);
                    }
                }
            },
        );
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToAgent) {
        // Executors speak for themselves; everything else must come from
        // the master.
        let executor_said = match message {
            ToAgent::RegisterExecutor {
                framework_id,
                executor_id,
            } => Ok((framework_id, executor_id, None)),
            ToAgent::ExecutorStatus {
                framework_id,
                executor_id,
                status,
            } => Ok((framework_id, executor_id, Some(status))),
            other => Err(other),
        };
        let message = match executor_said {
            Ok((framework_id, executor_id, status)) => {
                let identity = ctx.sender_identity().clone();
                self.executor_message(ctx, from, &identity, framework_id, executor_id, status);
                return;
            }
            Err(message) => message,
        };
        let message = match message {
            ToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => return self.relay_framework_message(ctx, from, framework_id, executor_id, data),
            other => other,
        };
        if !from.same_name(&self.config.master) {
            warn!(from = %from, kind = strata_runtime::Message::kind(&message), "message not from the master dropped");
            return;
        }
        let answer = matches!(
            message,
            ToAgent::AgentRegistered { .. }
                | ToAgent::AgentReregistered { .. }
                | ToAgent::RegistrationRefused { .. }
        );
        if !answer && !self.master_epoch.admits(&from) {
            debug!(from = %from, "message from an earlier master ignored");
            return;
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
                self.last_ping = now();
                self.registered(ctx, agent_id)
            }
            ToAgent::RegistrationRefused { reason } => {
                error!(reason = %reason, "the master refused this agent");
                self.registration = Registration::Refused;
            }
            ToAgent::Ping { sequence } => {
                self.last_ping = now();
                self.to_master(ctx, ToMaster::Pong { sequence })
            }
            ToAgent::RunTask { framework, task } => self.run_task(ctx, framework, task),
            ToAgent::KillTask {
                framework_id,
                task_id,
            } => self.kill_task(ctx, &framework_id, &task_id),
            ToAgent::StatusUpdateAcknowledged {
                framework_id,
                task_id,
                update_id,
            } => {
                let next = self
                    .updates
                    .acknowledge(now(), &framework_id, &task_id, update_id);
                self.checkpoint_stream(&framework_id, &task_id);
                let key = (framework_id.clone(), task_id.clone());
                if next.is_none() && self.updates.pending(&framework_id, &task_id).is_empty() {
                    self.finished.remove(&key);
                    self.checkpoint_task(&framework_id, &task_id);
                }
                if let Some(next) = next {
                    self.forward(ctx, next);
                }
            }
            ToAgent::ShutdownFramework { framework_id } => {
                self.shutdown_framework(ctx, &framework_id)
            }
            ToAgent::ShutdownExecutor {
                framework_id,
                executor_id,
            } => self.shutdown_executor(ctx, &framework_id, &executor_id),
            // Routed above.
            ToAgent::RegisterExecutor { .. }
            | ToAgent::ExecutorStatus { .. }
            | ToAgent::FrameworkMessage { .. } => {}
        }
    }

    /// The agent stops: tasks of frameworks that do not checkpoint stop
    /// with it; the others too unless it keeps them for its restart.
    fn stopped(&mut self) {
        let doomed: Vec<ContainerId> = self
            .processes
            .iter()
            .map(|((framework_id, _), process)| (framework_id, process.container()))
            .chain(self.executor_containers())
            .filter(|(framework_id, _)| {
                self.config.kill_tasks_on_stop || !self.checkpointing(framework_id)
            })
            .map(|(_, container)| container.clone())
            .collect();
        for container in doomed {
            self.containerizer.signal(&container, Signal::KILL);
        }
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        if self.executor_lost(&pid) {
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
        self.registration = Registration::Registering { attempt: 0 };
        self.register(ctx);
    }
}
