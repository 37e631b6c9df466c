//! The agent process: the shell around the agent's core.
//!
//! Every decision (registration with backoff, following the master,
//! tasks, executors, status updates, checkpoints, recovery) is the core's
//! ([`crate::core`]); this process feeds it what happens (messages, the
//! ends of containers, timers, usage samples, the time) and carries out
//! what it returns: it sends messages, asks the containerizer to launch,
//! signal and forget containers, writes checkpoints, sets timers, serves
//! HTTP executors' streams and publishes snapshots for the HTTP
//! endpoints.
//!
//! Tasks and custom executors run in containers (see
//! [`crate::containerizer`]): process groups on this machine
//! ([`Runner::Processes`]), or those of another containerizer in tests
//! and simulation ([`Runner::Containers`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_protocol::{AgentId, ToAgent, ToExecutor};
use strata_runtime::{Process, ProcessContext, Upid};
use tracing::{debug, error};

use crate::containerizer::ContainerEnding;
use crate::containerizer::{ContainerId, Containerizer, Containerizers, Launch, Prepare, Recovery};
use crate::core::{Checkpoint, Core, CoreConfig, Effect, Input, LaunchSpec, Now, RunState};

/// The agent's process id.
pub const AGENT_ID: &str = "agent";

/// How often unacknowledged updates are checked for resending.
const UPDATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the agent checks that its master still pings it.
pub const MASTER_SILENCE_CHECK: Duration = Duration::from_millis(250);

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
    /// How often the agent checks whether the master has been silent
    /// for longer than it allows (ping timeout × missed pings).
    pub master_silence_check: Duration,
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
    /// The leading master as it changes (found in ZooKeeper); without
    /// it the agent follows `master` alone.
    pub leader: Option<tokio::sync::watch::Receiver<Option<Upid>>>,
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
            master_silence_check: MASTER_SILENCE_CHECK,
            executor_credentials: None,
            executor_registration_timeout: Duration::from_secs(60),
            task_launcher: None,
            switch_user: false,
            kill_tasks_on_stop: true,
            disk: Default::default(),
            leader: None,
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
        /// How containers are isolated ([`crate::isolation`]).
        isolation: crate::isolation::Isolation,
        /// How containers with images run; `None` runs none.
        images: Option<crate::image_containers::ImageOptions>,
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

/// The agent.
pub struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) core: Core,
    /// Where tasks and executors run.
    pub(crate) containerizer: Box<dyn Containerizer>,
    /// How containers taken back after a restart end, until the core
    /// watches them.
    recovered: BTreeMap<ContainerId, ContainerEnding>,
    /// Where snapshots for the HTTP endpoints go.
    publisher: Option<crate::http::Publisher>,
    pid: String,
    /// Calls from the v1 executor API, when the agent serves it.
    pub(crate) executor_api: Option<crate::executor_api::ExecutorApiReceiver>,
    /// The streams of HTTP executors.
    pub(crate) http_executors: crate::executor_api::HttpExecutors,
    /// Where checkpoint batches are committed, on a real disk.
    journal: Option<crate::journal::Journal>,
    /// Checkpoint changes not committed yet.
    pending: Vec<crate::journal::Op>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("core", &self.core)
            .field("containerizer", &self.containerizer)
            .finish_non_exhaustive()
    }
}

/// The JSON a checkpoint file holds.
fn checkpoint_json(
    path: &std::path::Path,
    checkpoint: &Checkpoint,
) -> Result<String, crate::checkpoint::CheckpointError> {
    match checkpoint {
        Checkpoint::Latest(agent_id) => Ok(agent_id.as_str().to_owned()),
        Checkpoint::Agent(value) => crate::checkpoint::to_json(path, value),
        Checkpoint::Framework(value) => crate::checkpoint::to_json(path, value),
        Checkpoint::Task(value) => crate::checkpoint::to_json(path, value),
        Checkpoint::Stream(value) => crate::checkpoint::to_json(path, value),
        Checkpoint::Executor(value) => crate::checkpoint::to_json(path, value),
    }
}

/// The time now, as the core takes it.
fn clock() -> Now {
    Now {
        instant: tokio::time::Instant::now().into_std(),
        wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0),
    }
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        let containerizer: Box<dyn Containerizer> = match &config.runner {
            Runner::Processes {
                work_dir,
                isolation,
                images,
                ..
            } => {
                let images = match images {
                    None => Err("it was started without an image store".to_owned()),
                    Some(options) => crate::image_containers::ImageContainers::open(
                        work_dir, options,
                    )
                    .map(std::sync::Arc::new)
                    .inspect_err(|reason| {
                        tracing::warn!(%reason, "tasks with images cannot run on this agent");
                    }),
                };
                let containerizer = crate::containerizer::ProcessContainerizer::new(
                    work_dir,
                    config.task_launcher.clone(),
                )
                .with_images(images);
                Box::new(match isolation {
                    crate::isolation::Isolation::Posix => containerizer,
                    crate::isolation::Isolation::Cgroups(isolation) => {
                        containerizer.isolated(isolation.clone())
                    }
                })
            }
            Runner::Containers { containerizers, .. } => containerizers.make(),
        };
        let core = Core::new(
            CoreConfig {
                master: config.master.clone(),
                hostname: config.hostname.clone(),
                resources: config.resources.clone(),
                attributes: config.attributes.clone(),
                seed: config.seed,
                status_update_retry: config.status_update_retry,
                executor_registration_timeout: config.executor_registration_timeout,
                kill_grace: config.runner.kill_grace(),
                work_dir: config.runner.work_dir().map(std::path::Path::to_owned),
                sandboxes: matches!(config.runner, Runner::Processes { .. }),
                executors: config.executor_credentials.is_some(),
                kill_tasks_on_stop: config.kill_tasks_on_stop,
                follows_detector: config.leader.is_some(),
            },
            clock(),
        );
        let journal = match config.runner.work_dir() {
            Some(work_dir) if !config.disk.is_simulated() => {
                Some(crate::journal::Journal::new(work_dir))
            }
            _ => None,
        };
        Agent {
            config,
            core,
            containerizer,
            recovered: BTreeMap::new(),
            publisher: None,
            pid: String::new(),
            executor_api: None,
            http_executors: Default::default(),
            journal,
            pending: Vec::new(),
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

    /// The id the master gave this agent, once registered.
    pub fn agent_id(&self) -> Option<&AgentId> {
        self.core.agent_id.as_ref()
    }

    /// Total, allocated and free resources.
    pub fn resources(&self) -> ResourceAccount {
        ResourceAccount {
            total: self.config.resources.clone(),
            allocated: self.core.allocated.clone(),
            free: self.core.free(),
        }
    }

    fn publish(&self) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let core = &self.core;
        let tasks = core
            .tasks
            .iter()
            .map(|(key, task)| strata_api::views::AgentTask {
                id: key.1.clone(),
                name: task.info.name.clone(),
                framework_id: key.0.clone(),
                state: task.state,
                resources: task.info.resources.clone(),
                sandbox: core.relative_sandbox(key),
                usage: core.usage.get(key).map(|usage| strata_api::views::Usage {
                    cpus_time_secs: usage.cpu_seconds,
                    mem_rss_bytes: usage.rss_bytes,
                    processes: usage.processes,
                    cpus_throttled_time_secs: usage.kernel.map(|kernel| kernel.throttled_seconds),
                    mem_total_bytes: usage.kernel.map(|kernel| kernel.memory_bytes),
                    mem_peak_bytes: usage.kernel.map(|kernel| kernel.memory_peak_bytes),
                    mem_oom_kills: usage.kernel.map(|kernel| kernel.oom_kills),
                }),
            })
            .collect();
        let executors = core
            .executors
            .iter()
            .map(
                |((framework_id, executor_id), run)| strata_api::views::Executor {
                    framework_id: framework_id.clone(),
                    executor_id: executor_id.clone(),
                    registered: run.registered(),
                    tasks: run.tasks.len(),
                },
            )
            .collect();
        let state = crate::http::State {
            pid: self.pid.clone(),
            id: core.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            master: self.core.config.master.to_string(),
            registered: core.registration == crate::core::Registration::Registered,
            total: self.config.resources.clone(),
            allocated: core.allocated.clone(),
            attributes: self.config.attributes.clone(),
            sandbox_root: core.sandbox_root(),
            tasks,
            executors,
            unacknowledged_updates: core.updates.unacknowledged(),
            snapshot_time_ms: clock().wall_ms,
        };
        publisher.send_replace(Some(std::sync::Arc::new(state)));
    }

    /// Hands `input` to the core and carries out what it decides; whether
    /// it took an executor's update.
    pub(crate) fn step(&mut self, ctx: &mut ProcessContext<'_, Self>, input: Input) -> bool {
        let registration = self.core.registration;
        let effects = self.core.handle(clock(), input);
        let changed = self.core.registration != registration;
        let taken = self.apply(ctx, effects);
        // Operators see a registration at once (once it is checkpointed),
        // not at the next snapshot.
        if changed {
            self.publish();
        }
        taken
    }

    fn apply(&mut self, ctx: &mut ProcessContext<'_, Self>, effects: Vec<Effect>) -> bool {
        let mut taken = false;
        let mut next = Vec::new();
        for effect in effects {
            // Checkpoint changes are batched; whatever leaves the agent
            // waits for the batch before it to be committed.
            if !matches!(
                effect,
                Effect::Write { .. } | Effect::Remove { .. } | Effect::RemoveDir(_)
            ) {
                self.commit();
            }
            match effect {
                Effect::ToMaster(message) => {
                    let master = self.core.config.master.clone();
                    if let Err(error) = ctx.send(&master, message) {
                        debug!(master = %master, cause = %error, "message to the master not sent");
                    }
                }
                Effect::ToExecutor { to, message } => self.tell_executor(ctx, &to, message),
                Effect::UpdateTaken {
                    to,
                    task_id,
                    update_id,
                } => {
                    taken = true;
                    // The agent holds the update now and delivers it to
                    // the framework at least once.
                    if let Some(update_id) = update_id
                        && self.http_executors.serves(&to)
                    {
                        let acknowledged =
                            strata_api::executor::Event::acknowledged(&task_id, update_id);
                        if !self.http_executors.send(&to, &acknowledged) {
                            self.http_executors.forget(&to);
                            next.push(Input::Lost(to));
                        }
                    }
                }
                Effect::Link(pid) => {
                    // An HTTP executor's stream going away stands for its
                    // link.
                    if !crate::executor_api::HttpExecutors::owns(ctx.pid(), &pid) {
                        ctx.link(&pid);
                    }
                }
                Effect::Launch { container, spec } => self.launch(ctx, container, *spec),
                Effect::Watch(container) => {
                    if let Some(ending) = self.recovered.remove(&container) {
                        self.wait_for(ctx, container, ending);
                    }
                }
                Effect::Signal { container, signal } => {
                    self.containerizer.signal(&container, signal)
                }
                Effect::Forget(container) => self.containerizer.forget(&container),
                Effect::Update {
                    container,
                    resources,
                } => self.containerizer.update(&container, &resources),
                Effect::Write { path, checkpoint } => match checkpoint_json(&path, &checkpoint) {
                    Ok(contents) => self
                        .pending
                        .push(crate::journal::Op::Write { path, contents }),
                    Err(error) => error!(cause = %error, "checkpoint failed"),
                },
                Effect::Remove { path, prune } => self
                    .pending
                    .push(crate::journal::Op::Remove { path, prune }),
                Effect::RemoveDir(path) => {
                    self.pending.push(crate::journal::Op::RemoveDir { path })
                }
                Effect::Timer { after, timer } => {
                    ctx.run_later(after, move |agent, ctx| {
                        agent.step(ctx, Input::Timer(timer));
                    });
                }
            }
        }
        self.commit();
        for input in next {
            taken |= self.step(ctx, input);
        }
        taken
    }

    /// Commits the pending checkpoint changes: one batch in the journal
    /// on a real disk, each change on its own on a simulated one (whose
    /// writes are durable when done). A failure is logged: what it was
    /// for still happens, but would not survive a restart.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.pending);
        if let Some(journal) = &mut self.journal {
            match journal.commit(&ops) {
                Ok(()) => return,
                // The journal could not take the batch: each change is
                // written durably on its own instead.
                Err(error) => {
                    error!(cause = %error, "the checkpoint journal failed; writing each checkpoint on its own")
                }
            }
        }
        let disk = &self.config.disk;
        for op in ops {
            let done = match &op {
                crate::journal::Op::Write { path, contents } => {
                    crate::checkpoint::write(disk, path, contents.as_bytes())
                }
                crate::journal::Op::Remove { path, prune: true } => {
                    crate::checkpoint::remove_task_file(disk, path)
                }
                crate::journal::Op::Remove { path, prune: false } => {
                    crate::checkpoint::remove(disk, path)
                }
                crate::journal::Op::RemoveDir { path } => {
                    disk.remove_dir_all(path).map_err(|source| {
                        crate::checkpoint::CheckpointError::Write {
                            path: path.clone(),
                            source,
                        }
                    })
                }
            };
            if let Err(error) = done {
                error!(cause = %error, "checkpoint not written; it would not survive a restart");
            }
        }
    }

    /// A message from `from`, whose certificate (or HTTP executor stream)
    /// says it is `identity`; whether the agent took an executor's update
    /// it carries.
    pub(crate) fn message_from(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        from: Upid,
        identity: strata_runtime::PeerIdentity,
        message: ToAgent,
    ) -> bool {
        self.step(
            ctx,
            Input::Message {
                from,
                identity,
                message: Box::new(message),
            },
        )
    }

    /// Reports container `container`'s end to the core when it comes.
    fn wait_for(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        container: ContainerId,
        ending: ContainerEnding,
    ) {
        ctx.spawn_future(ending, move |agent, ctx, exit| {
            agent.step(
                ctx,
                Input::Exited {
                    container,
                    status: exit.status,
                    limitation: exit.limitation,
                },
            );
        });
    }

    /// Launches `spec` in container `container` (a custom executor's
    /// credentials written into its sandbox first); the core hears how
    /// it went when the launch is done, away from this thread.
    fn launch(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        container: ContainerId,
        spec: LaunchSpec,
    ) {
        let prepare = match &spec.executor {
            None => None,
            Some((framework_id, executor_id)) => {
                let credentials = self.config.executor_credentials.clone();
                let (framework_id, executor_id) = (framework_id.clone(), executor_id.clone());
                Some(Prepare(Box::new(move |sandbox: &std::path::Path| {
                    let credentials =
                        credentials.ok_or("this agent has no credentials to give executors")?;
                    credentials
                        .issue(&framework_id, &executor_id)
                        .and_then(|material| {
                            material.save(&sandbox.join(crate::http::CREDENTIALS_DIR))
                        })
                        .map_err(|e| format!("cannot give the executor its certificate: {e}"))
                })))
            }
        };
        let launching = self.containerizer.launch(
            &container,
            Launch {
                sandbox: spec.sandbox,
                command: spec.command,
                environment: spec.environment,
                user: self.config.switch_user.then_some(spec.user),
                prepare,
                outlives_agent: spec.outlives_agent,
                labels: spec.labels,
                executor: spec.executor.is_some(),
                resources: spec.resources,
            },
        );
        ctx.spawn_future(launching, move |agent, ctx, launched| {
            let result = launched.map(|launched| {
                agent.wait_for(ctx, container.clone(), launched.ending);
                launched.run
            });
            agent.step(ctx, Input::Launched { container, result });
        });
    }

    /// Reads this agent's checkpoints and takes back their containers:
    /// what the core starts from. An error refuses to start.
    fn recover(
        &mut self,
    ) -> Result<
        (
            Option<crate::recovery::Recovered>,
            BTreeMap<ContainerId, RunState>,
        ),
        crate::recovery::RecoveryError,
    > {
        let mut containers = BTreeMap::new();
        let Some(work_dir) = self.config.runner.work_dir() else {
            return Ok((None, containers));
        };
        let Some(recovered) = crate::recovery::read(&self.config.disk, work_dir)? else {
            return Ok((None, containers));
        };
        recovered.check(&self.config.resources)?;
        let runs: Vec<_> =
            recovered
                .frameworks
                .iter()
                .flat_map(|framework| {
                    framework
                        .executors
                        .iter()
                        .map(crate::checkpoint::ExecutorCheckpoint::run)
                        .chain(framework.tasks.iter().filter_map(|task| {
                            Some(task.checkpoint.as_ref()?.run.clone()?.named())
                        }))
                })
                .collect();
        for run in runs {
            let state = match self.containerizer.recover(&run) {
                Recovery::Running(ending) => {
                    self.recovered.insert(run.container.clone(), ending);
                    RunState::Running
                }
                Recovery::Ended(status, limitation) => RunState::Ended(status, limitation),
                Recovery::Gone => RunState::Gone,
            };
            containers.insert(run.container, state);
        }
        Ok((Some(recovered), containers))
    }

    /// Sends `message` to the executor at `to`: over the network, or as
    /// an event on its stream when it subscribed over HTTP.
    fn tell_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        to: &Upid,
        message: ToExecutor,
    ) {
        use strata_api::executor::Event;
        if self.http_executors.serves(to) {
            let event = match &message {
                ToExecutor::ExecutorRegistered {
                    agent_id,
                    framework_id,
                    executor_id,
                } => self.subscribed(agent_id, framework_id, executor_id),
                other => Event::from_protocol(other),
            };
            if let Some(event) = event
                && !self.http_executors.send(to, &event)
            {
                let pid = to.clone();
                ctx.run_later(Duration::ZERO, move |agent, ctx| {
                    agent.http_executor_gone(ctx, &pid)
                });
            }
            return;
        }
        if crate::executor_api::HttpExecutors::owns(ctx.pid(), to) {
            // A stream that is gone: nothing to send to.
            return;
        }
        if let Err(error) = ctx.send(to, message) {
            debug!(to = %to, cause = %error, "message to an executor not sent");
        }
    }

    /// The SUBSCRIBED event of an HTTP executor: its ExecutorInfo (from a
    /// task it was launched for), its framework's and this agent's.
    fn subscribed(
        &self,
        agent_id: &AgentId,
        framework_id: &strata_protocol::FrameworkId,
        executor_id: &strata_protocol::ExecutorId,
    ) -> Option<strata_api::executor::Event> {
        let executor = self.core.executor_info(framework_id, executor_id)?;
        let framework = self.core.frameworks.get(framework_id)?;
        Some(strata_api::executor::Event::subscribed(
            &executor,
            framework,
            agent_id,
            &self.core.info(),
            framework_id,
        ))
    }

    /// An HTTP executor's stream is gone: as an executor whose link
    /// broke, it is killed and its tasks fail.
    pub(crate) fn http_executor_gone(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: &Upid) {
        self.http_executors.forget(pid);
        self.step(ctx, Input::Lost(pid.clone()));
    }
}

impl Process for Agent {
    type Message = ToAgent;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.pid = ctx.pid().to_string();
        if let Some(leader) = self.config.leader.clone() {
            ctx.follow(leader, |agent, ctx, leader| {
                if let Some(master) = leader {
                    agent.step(ctx, Input::MasterDetected(master));
                }
            });
        }
        if self.publisher.is_some() {
            ctx.run_every(self.config.usage_interval, |agent, _| agent.publish());
        }
        // Checkpoints, the launcher's secret and keys are the agent's
        // alone: tasks running as other users must not read them.
        if let Runner::Processes { work_dir, .. } = &self.config.runner
            && let Err(error) = crate::users::make_private(&work_dir.join("meta"))
        {
            error!(cause = %error, "cannot make the agent's meta directory private; not registering");
            self.core.registration = crate::core::Registration::Refused;
            return;
        }
        // Committed checkpoint batches whose files a crash lost come back
        // first.
        if let Some(journal) = &mut self.journal
            && let Err(error) = journal.replay()
        {
            error!(cause = %error, "cannot replay the checkpoint journal; not registering");
            self.core.registration = crate::core::Registration::Refused;
            return;
        }
        let (recovered, containers) = match self.recover() {
            Ok(found) => {
                // Only once every checkpointed container was taken back.
                self.containerizer.recovered();
                found
            }
            Err(error) => {
                error!(cause = %error, "cannot recover this agent's checkpoints; not registering");
                self.core.registration = crate::core::Registration::Refused;
                return;
            }
        };
        let pid = ctx.pid().clone();
        self.step(
            ctx,
            Input::Start {
                pid,
                recovered: recovered.map(Box::new),
                containers,
            },
        );
        // Taken back containers the core did not keep were forgotten.
        self.recovered.clear();
        ctx.run_every(self.config.usage_interval, |agent, ctx| {
            ctx.spawn_future(agent.containerizer.usage(), |agent, ctx, usage| {
                agent.step(ctx, Input::Usage(usage));
            });
        });
        let silence_check = self
            .config
            .master_silence_check
            .max(Duration::from_millis(10));
        ctx.run_every(silence_check, |agent, ctx| {
            agent.step(ctx, Input::CheckMaster);
        });
        if self.executor_api.is_some() {
            self.take_executor_calls(ctx);
            let heartbeat =
                Duration::from_secs_f64(strata_api::scheduler::HEARTBEAT_INTERVAL_SECONDS);
            ctx.run_every(heartbeat, |agent, ctx| {
                for pid in agent.http_executors.heartbeat() {
                    agent.http_executor_gone(ctx, &pid);
                }
            });
        }
        ctx.run_every(
            UPDATE_CHECK_INTERVAL.min(self.config.status_update_retry),
            |agent, ctx| {
                agent.step(ctx, Input::ResendUpdates);
            },
        );
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToAgent) {
        let identity = ctx.sender_identity().clone();
        self.message_from(ctx, from, identity, message);
    }

    /// The agent stops: tasks of frameworks that do not checkpoint stop
    /// with it; the others too unless it keeps them for its restart.
    fn stopped(&mut self) {
        let mut doomed = Vec::new();
        for effect in self.core.handle(clock(), Input::Stop) {
            if let Effect::Signal { container, signal } = effect {
                if signal == rustix::process::Signal::KILL {
                    doomed.push(container);
                } else {
                    self.containerizer.signal(&container, signal);
                }
            }
        }
        self.containerizer.stop_with_agent(&doomed);
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        self.step(ctx, Input::Lost(pid));
    }
}
