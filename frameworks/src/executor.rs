//! Custom executors: a framework's own process that runs its tasks.
//!
//! An agent starts the executor's command with its address and the
//! executor's identity in the environment. The executor registers back,
//! receives tasks, and reports their states. With this module an executor
//! is a type with a few callbacks:
//!
//! ```no_run
//! use std::time::Duration;
//! use strata_frameworks::executor::{self, Executor, ExecutorDriver};
//! use strata_protocol::{TaskId, TaskInfo, TaskState};
//!
//! /// Runs each task for a second.
//! struct OneSecond;
//!
//! impl Executor for OneSecond {
//!     fn launch_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task: TaskInfo) {
//!         driver.update(&task.task_id, TaskState::Running, "started");
//!         let id = task.task_id.clone();
//!         driver.after(Duration::from_secs(1), move |_, driver| {
//!             driver.update(&id, TaskState::Finished, "done")
//!         });
//!     }
//!
//!     fn kill_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task_id: TaskId) {
//!         driver.update(&task_id, TaskState::Killed, "killed");
//!     }
//! }
//!
//! fn main() -> Result<(), executor::ExecutorError> {
//!     executor::run(|| OneSecond)
//! }
//! ```
//!
//! Several tasks may run in one executor at once. Updates are delivered
//! at least once by the agent: the executor sends each once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use strata_protocol::{
    AgentId, ExecutorId, FrameworkId, Source, TaskId, TaskInfo, TaskState, TaskStatus, ToAgent,
    ToExecutor,
};
use strata_runtime::{
    Node, NodeConfig, Process, ProcessContext, Received, RestartPolicy, SpawnOptions, TlsMaterial,
    Upid,
};
use tracing::{info, warn};

/// What an executor does when the agent speaks.
pub trait Executor: Sized + 'static {
    /// The agent accepted this executor; tasks follow.
    fn registered(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, agent_id: &AgentId) {
        let _ = (driver, agent_id);
    }

    /// Run this task; report its states with [`ExecutorDriver::update`].
    fn launch_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task: TaskInfo);

    /// Kill this task and report it KILLED.
    fn kill_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task_id: TaskId);

    /// Data from the framework's scheduler (delivered at most once).
    fn framework_message(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, data: Vec<u8>) {
        let _ = (driver, data);
    }

    /// Kill every task and exit (the default exits at once).
    fn shutdown(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>) {
        driver.exit();
    }
}

/// What an executor can do from its callbacks.
pub struct ExecutorDriver<'a, 'b, E: Executor> {
    ctx: &'a mut ProcessContext<'b, ExecutorProcess<E>>,
    identity: &'a Identity,
    latest: &'a mut BTreeMap<TaskId, TaskStatus>,
}

impl<E: Executor> std::fmt::Debug for ExecutorDriver<'_, '_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorDriver")
            .field("executor_id", &self.identity.executor_id)
            .finish_non_exhaustive()
    }
}

impl<E: Executor> ExecutorDriver<'_, '_, E> {
    /// Reports a task's state to the agent, which delivers it to the
    /// framework at least once.
    pub fn update(&mut self, task_id: &TaskId, state: TaskState, message: &str) {
        let status = TaskStatus {
            task_id: task_id.clone(),
            state,
            source: Source::Executor,
            reason: None,
            message: message.to_owned(),
            agent_id: None,
            executor_id: Some(self.identity.executor_id.clone()),
            update_id: None,
            timestamp_ms: 0,
            sandbox: None,
        };
        remember(self.latest, &status);
        send_status(self.ctx, self.identity, status);
    }

    /// Sends data to the framework's scheduler (at most once).
    pub fn send_framework_message(&mut self, data: Vec<u8>) {
        let message = ToAgent::FrameworkMessage {
            framework_id: self.identity.framework_id.clone(),
            executor_id: self.identity.executor_id.clone(),
            data: strata_runtime::Blob(data),
        };
        if let Err(error) = self.ctx.send(&self.identity.agent, message) {
            warn!(cause = %error, "framework message not sent to the agent");
        }
    }

    /// Runs `call` on the executor after `delay`.
    pub fn after(
        &mut self,
        delay: Duration,
        call: impl FnOnce(&mut E, &mut ExecutorDriver<'_, '_, E>) + 'static,
    ) {
        self.ctx.run_later(delay, move |process, ctx| {
            process.with_driver(ctx, call);
        });
    }

    /// Ends the executor: [`run`] returns.
    pub fn exit(&mut self) {
        self.ctx.stop();
    }

    /// This executor's id.
    pub fn executor_id(&self) -> &ExecutorId {
        &self.identity.executor_id
    }
}

/// Most task statuses remembered for resending after an agent restart;
/// beyond it terminal ones are forgotten.
const REMEMBERED_STATUSES: usize = 10_000;

fn remember(latest: &mut BTreeMap<TaskId, TaskStatus>, status: &TaskStatus) {
    latest.insert(status.task_id.clone(), status.clone());
    if latest.len() > REMEMBERED_STATUSES {
        latest.retain(|_, status| !status.state.is_terminal());
    }
}

fn send_status<E: Executor>(
    ctx: &mut ProcessContext<'_, ExecutorProcess<E>>,
    identity: &Identity,
    status: TaskStatus,
) {
    let message = ToAgent::ExecutorStatus {
        framework_id: identity.framework_id.clone(),
        executor_id: identity.executor_id.clone(),
        status,
    };
    if let Err(error) = ctx.send(&identity.agent, message) {
        warn!(cause = %error, "status update not sent to the agent");
    }
}

/// Who this executor is and whom it answers to.
#[derive(Debug, Clone)]
struct Identity {
    agent: Upid,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    /// Whether the framework checkpoints: then the executor outlives its
    /// agent for up to `recovery_timeout`, waiting to be reconnected.
    checkpoint: bool,
    recovery_timeout: Duration,
}

/// The process hosting an [`Executor`].
#[derive(Debug)]
pub struct ExecutorProcess<E> {
    executor: E,
    identity: Identity,
    /// Each task's latest status, resent to a restarted agent (an update
    /// sent while it was down is lost).
    latest: BTreeMap<TaskId, TaskStatus>,
    registered: bool,
    /// Bumped on every loss of the agent, so a stale wait stands down.
    losses: u64,
}

impl<E: Executor> ExecutorProcess<E> {
    /// A restarted agent recovered this executor: register with it.
    fn reconnect(&mut self, ctx: &mut ProcessContext<'_, Self>, agent: Upid) {
        if agent.id() != self.identity.agent.id() {
            warn!(from = %agent, "reconnect from a process that is no agent dropped");
            return;
        }
        info!(agent = %agent, "reconnecting to the restarted agent");
        self.losses += 1;
        self.identity.agent = agent.clone();
        ctx.link(&agent);
        let register = ToAgent::RegisterExecutor {
            framework_id: self.identity.framework_id.clone(),
            executor_id: self.identity.executor_id.clone(),
        };
        if let Err(error) = ctx.send(&agent, register) {
            warn!(cause = %error, "cannot register with the restarted agent");
        }
    }

    fn with_driver(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        call: impl FnOnce(&mut E, &mut ExecutorDriver<'_, '_, E>),
    ) {
        let identity = self.identity.clone();
        let mut driver = ExecutorDriver {
            ctx,
            identity: &identity,
            latest: &mut self.latest,
        };
        call(&mut self.executor, &mut driver);
    }
}

impl<E: Executor> Process for ExecutorProcess<E> {
    type Message = ToExecutor;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let agent = self.identity.agent.clone();
        ctx.link(&agent);
        let register = ToAgent::RegisterExecutor {
            framework_id: self.identity.framework_id.clone(),
            executor_id: self.identity.executor_id.clone(),
        };
        if let Err(error) = ctx.send(&agent, register) {
            warn!(cause = %error, "cannot register with the agent");
            ctx.stop();
        }
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToExecutor) {
        if matches!(message, ToExecutor::Reconnect) && self.identity.checkpoint {
            return self.reconnect(ctx, from);
        }
        if !from.same_name(&self.identity.agent) {
            warn!(from = %from, "message not from this executor's agent dropped");
            return;
        }
        match message {
            ToExecutor::ExecutorRegistered { agent_id, .. } => {
                if std::mem::replace(&mut self.registered, true) {
                    // Registered again with a restarted agent: it may have
                    // missed updates sent while it was down.
                    let identity = self.identity.clone();
                    for status in self.latest.values().cloned().collect::<Vec<_>>() {
                        send_status(ctx, &identity, status);
                    }
                    return;
                }
                self.with_driver(ctx, |executor, driver| {
                    executor.registered(driver, &agent_id)
                })
            }
            ToExecutor::LaunchTask { task } => {
                self.with_driver(ctx, |executor, driver| executor.launch_task(driver, task))
            }
            ToExecutor::KillTask { task_id } => {
                self.with_driver(ctx, |executor, driver| executor.kill_task(driver, task_id))
            }
            ToExecutor::Shutdown => {
                self.with_driver(ctx, |executor, driver| executor.shutdown(driver))
            }
            ToExecutor::FrameworkMessage { data } => self.with_driver(ctx, |executor, driver| {
                executor.framework_message(driver, data.0)
            }),
            ToExecutor::Reconnect => {}
        }
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        if !pid.same_name(&self.identity.agent) {
            return;
        }
        // Without its agent an executor has nobody to report to, unless
        // the agent checkpoints it and will reconnect after a restart.
        if !self.identity.checkpoint {
            warn!(agent = %pid, "lost the agent; exiting");
            ctx.stop();
            return;
        }
        self.losses += 1;
        let loss = self.losses;
        let wait = self.identity.recovery_timeout;
        warn!(agent = %pid, ?wait, "lost the agent; waiting for it to come back");
        ctx.run_later(wait, move |process, ctx| {
            // Neither reconnected nor lost again since.
            if process.losses == loss {
                warn!("the agent did not come back; exiting");
                ctx.stop();
            }
        });
    }
}

/// Why an executor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("{0} is not set: run executors through a Strata agent")]
    MissingEnvironment(&'static str),
    #[error("{name} is invalid: {reason}")]
    InvalidEnvironment { name: &'static str, reason: String },
    #[error(transparent)]
    Tls(#[from] strata_runtime::tls::TlsError),
    #[error(transparent)]
    Node(#[from] strata_runtime::NodeError),
    #[error(transparent)]
    Spawn(#[from] strata_runtime::SpawnError),
}

fn environment(name: &'static str) -> Result<String, ExecutorError> {
    std::env::var(name).map_err(|_| ExecutorError::MissingEnvironment(name))
}

fn parsed<T>(
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ExecutorError> {
    let text = environment(name)?;
    parse(&text).map_err(|reason| ExecutorError::InvalidEnvironment { name, reason })
}

/// How long an executor of a checkpointing framework waits for its agent
/// to come back (Mesos's `--recovery_timeout`: 15 min).
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs an executor until it exits or loses its agent. Reads what the
/// agent put in the environment: `STRATA_AGENT_PID`, `STRATA_FRAMEWORK_ID`,
/// `STRATA_EXECUTOR_ID` and `STRATA_TLS_DIR`; for frameworks that
/// checkpoint, `STRATA_CHECKPOINT=1` and `STRATA_RECOVERY_TIMEOUT`
/// (seconds): the executor then outlives its agent for that long, and a
/// restarted agent that recovers it reconnects it.
pub fn run<E: Executor>(factory: impl Fn() -> E + 'static) -> Result<(), ExecutorError> {
    let agent: Upid = parsed("STRATA_AGENT_PID", |text| {
        text.parse().map_err(|e| format!("{e}"))
    })?;
    let framework_id: FrameworkId = parsed("STRATA_FRAMEWORK_ID", |text| {
        text.parse().map_err(|e| format!("{e}"))
    })?;
    let executor_id: ExecutorId = parsed("STRATA_EXECUTOR_ID", |text| {
        text.parse().map_err(|e| format!("{e}"))
    })?;
    let tls_dir = PathBuf::from(environment("STRATA_TLS_DIR")?);
    let checkpoint = std::env::var("STRATA_CHECKPOINT").is_ok_and(|value| value == "1");
    let recovery_timeout = match std::env::var("STRATA_RECOVERY_TIMEOUT") {
        Err(_) => DEFAULT_RECOVERY_TIMEOUT,
        Ok(_) => parsed("STRATA_RECOVERY_TIMEOUT", |text| {
            text.parse::<f64>()
                .ok()
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .ok_or_else(|| format!("{text:?} is not a number of seconds"))
        })?,
    };
    let tls = TlsMaterial::load(&tls_dir)?;
    actix_rt::System::new().block_on(async move {
        // On the agent's host, at the address it reaches.
        let node = Node::bind(NodeConfig::new(SocketAddr::new(agent.addr().ip(), 0), tls)).await?;
        let identity = Identity {
            agent,
            framework_id,
            executor_id: executor_id.clone(),
            checkpoint,
            recovery_timeout,
        };
        let pid = node.spawn(
            &format!(
                "executor-{}",
                executor_id
                    .as_str()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            ),
            move || ExecutorProcess {
                executor: factory(),
                identity: identity.clone(),
                latest: BTreeMap::new(),
                registered: false,
                losses: 0,
            },
            SpawnOptions::default().restart(RestartPolicy::never()),
        )?;
        let mut watcher = node.inbox::<u64>("executor-watcher", 1)?;
        watcher.link(&pid);
        while let Some(event) = watcher.recv().await {
            if matches!(event, Received::Exited(_)) {
                break;
            }
        }
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
