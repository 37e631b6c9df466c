//! Custom executors: a framework's own process that runs several of its
//! tasks.
//!
//! The agent starts an executor's command like a task's, in its own
//! sandbox and process group, and tells it through environment variables
//! where to register (`STRATA_AGENT_PID`), who it is (`STRATA_EXECUTOR_ID`,
//! `STRATA_FRAMEWORK_ID`) and where its TLS material is (`STRATA_TLS_DIR`,
//! a copy of the agent's, mode 0600, in the sandbox), and, for executors
//! written with an Apache Mesos library, Mesos's environment
//! (`MESOS_AGENT_ENDPOINT`, `MESOS_FRAMEWORK_ID`, `MESOS_EXECUTOR_ID`,
//! `MESOS_DIRECTORY`, `MESOS_SANDBOX`, `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`,
//! and `MESOS_CHECKPOINT` when the framework checkpoints) for the v1
//! executor API (see [`crate::executor_api`]). Tasks wait until the
//! executor registers (or subscribes), then go to it as `LaunchTask`s
//! (LAUNCH events); it reports their states. An executor that does not register within the registration
//! timeout (1 min) is killed and its tasks fail with
//! EXECUTOR_REGISTRATION_TIMEOUT; one that exits fails its remaining tasks
//! with EXECUTOR_TERMINATED.

use std::collections::{BTreeMap, BTreeSet};

use rustix::process::Signal;
use strata_protocol::{
    ExecutorId, ExecutorInfo, FrameworkId, Reason, TaskId, TaskInfo, TaskState, ToExecutor,
    ToMaster,
};
use strata_runtime::{ProcessContext, Upid};
use tracing::{debug, warn};

use crate::checkpoint::RunCheckpoint;
use crate::command_executor;
use crate::containerizer::{ContainerId, Launch, Recovery};
use crate::process::Agent;

/// How long an executor of a checkpointing framework waits for a
/// restarted agent (Mesos's `--recovery_timeout`).
pub(crate) const EXECUTOR_RECOVERY_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(15 * 60);

/// An executor this agent started.
#[derive(Debug)]
pub(crate) struct ExecutorRun {
    /// Its container, as checkpointed.
    run: RunCheckpoint,
    /// Set once it registered.
    pid: Option<Upid>,
    /// Tasks waiting for it to register.
    queued: Vec<TaskInfo>,
    /// Its tasks that are not terminal (queued ones included).
    tasks: BTreeSet<TaskId>,
    registration_timed_out: bool,
    /// What it was started from (unknown for one an earlier life of the
    /// agent started).
    info: Option<ExecutorInfo>,
}

impl ExecutorRun {
    /// Whether it registered.
    pub(crate) fn registered(&self) -> bool {
        self.pid.is_some()
    }

    /// Its tasks that are not terminal.
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// An executor process that has not registered (yet, or again).
    fn unregistered(run: RunCheckpoint) -> ExecutorRun {
        ExecutorRun {
            run,
            pid: None,
            queued: Vec::new(),
            tasks: BTreeSet::new(),
            registration_timed_out: false,
            info: None,
        }
    }

    fn container(&self) -> &ContainerId {
        &self.run.container
    }
}

/// The agent's executors, by framework and executor id.
pub(crate) type Executors = BTreeMap<(FrameworkId, ExecutorId), ExecutorRun>;

impl Agent {
    /// Hands a task to its framework's executor, starting it if needed.
    pub(crate) fn run_on_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        task: TaskInfo,
        executor: &ExecutorInfo,
    ) {
        let key = (framework_id.clone(), executor.executor_id.clone());
        if !self.executors().contains_key(&key)
            && let Err(reason) = self.start_executor(ctx, framework_id, executor)
        {
            self.report_with(
                ctx,
                framework_id,
                &task.task_id,
                TaskState::Failed,
                Some(Reason::ExecutorTerminated),
                &reason,
            );
            return;
        }
        let Some(run) = self.executors_mut().get_mut(&key) else {
            return;
        };
        run.tasks.insert(task.task_id.clone());
        match run.pid.clone() {
            Some(pid) => self.tell_executor(ctx, &pid, ToExecutor::LaunchTask { task }),
            None => run.queued.push(task),
        }
    }

    fn start_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        executor: &ExecutorInfo,
    ) -> Result<(), String> {
        let agent_id = self
            .agent_id()
            .cloned()
            .ok_or("the agent is not registered")?;
        let credentials = self
            .config()
            .executor_credentials
            .clone()
            .ok_or("this agent has no credentials to give executors")?;
        let container = self.new_container_id();
        let sandbox = self.sandbox(
            &agent_id,
            framework_id,
            executor.executor_id.as_str(),
            &container,
        );
        let tls_dir = sandbox.join(crate::http::CREDENTIALS_DIR);
        credentials
            .issue(framework_id, &executor.executor_id)
            .and_then(|material| material.save(&tls_dir))
            .map_err(|e| format!("cannot give the executor its certificate: {e}"))?;
        let mut environment = BTreeMap::from([
            ("STRATA_AGENT_PID".to_owned(), ctx.pid().to_string()),
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
        let grace = self.config().runner.kill_grace();
        let sandbox_text = sandbox.display().to_string();
        environment.extend([
            (
                "MESOS_AGENT_ENDPOINT".to_owned(),
                ctx.pid().addr().to_string(),
            ),
            ("MESOS_FRAMEWORK_ID".to_owned(), framework_id.to_string()),
            (
                "MESOS_EXECUTOR_ID".to_owned(),
                executor.executor_id.to_string(),
            ),
            ("MESOS_DIRECTORY".to_owned(), sandbox_text.clone()),
            ("MESOS_SANDBOX".to_owned(), sandbox_text),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".to_owned(),
                format!("{}ms", grace.as_millis()),
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
        let run_as = self.run_as(framework_id, &executor.command)?;
        let outlives_agent = self.checkpointing(framework_id);
        let launched = self.containerizer.launch(
            &container,
            Launch {
                sandbox,
                command: executor.command.clone(),
                environment,
                run_as,
                outlives_agent,
                labels: BTreeMap::new(),
            },
        )?;
        let key = (framework_id.clone(), executor.executor_id.clone());
        let mut run = ExecutorRun::unregistered(launched.run);
        run.info = Some(executor.clone());
        self.executors_mut().insert(key.clone(), run);
        self.checkpoint_executor(&key);
        self.wait_for_executor(ctx, key.clone(), container.clone(), launched.ending);
        self.expect_registration(ctx, key, container);
        Ok(())
    }

    /// Ends executor `key`'s run in `container` when it ends.
    fn wait_for_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        key: (FrameworkId, ExecutorId),
        container: ContainerId,
        ending: command_executor::Ending,
    ) {
        ctx.spawn_future(ending, move |agent, ctx, status| {
            agent.executor_exited(ctx, key, container, status)
        });
    }

    /// Kills an executor that does not register in time.
    fn expect_registration(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        key: (FrameworkId, ExecutorId),
        container: ContainerId,
    ) {
        let timeout = self.config().executor_registration_timeout;
        ctx.run_later(timeout, move |agent, _| {
            if let Some(run) = agent.executors_mut().get_mut(&key)
                && run.pid.is_none()
                && run.container() == &container
            {
                warn!(executor_id = %key.1, "executor did not register in time; killing it");
                run.registration_timed_out = true;
                agent.containerizer.signal(&container, Signal::KILL);
            }
        });
    }

    /// Takes back an executor an earlier life of this agent started, if
    /// it still runs: it is asked to register again, and its tasks wait
    /// for it. False if it is gone.
    pub(crate) fn adopt_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        checkpoint: &crate::checkpoint::ExecutorCheckpoint,
    ) -> bool {
        let run = checkpoint.run();
        let ending = match self.containerizer.recover(&run) {
            Recovery::Running(ending) => ending,
            // Ended while the agent was down: its tasks are reported so.
            Recovery::Ended(_) => {
                self.containerizer.forget(&run.container);
                return false;
            }
            Recovery::Gone => return false,
        };
        let Some(pid) = checkpoint.pid.clone() else {
            // It never registered, so nothing can reach it: stopped.
            self.containerizer.forget(&run.container);
            return false;
        };
        let key = (framework_id.clone(), checkpoint.executor_id.clone());
        let container = run.container.clone();
        self.executors_mut()
            .insert(key.clone(), ExecutorRun::unregistered(run));
        self.tell_executor(ctx, &pid, ToExecutor::Reconnect);
        self.wait_for_executor(ctx, key.clone(), container.clone(), ending);
        self.expect_registration(ctx, key, container);
        true
    }

    /// A recovered task of a recovered executor waits for it again; false
    /// if that executor is gone.
    pub(crate) fn adopt_executor_task(
        &mut self,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
        task_id: &TaskId,
    ) -> bool {
        match self
            .executors_mut()
            .get_mut(&(framework_id.clone(), executor_id.clone()))
        {
            Some(run) => {
                run.tasks.insert(task_id.clone());
                true
            }
            None => false,
        }
    }

    /// Saves an executor's process and address, for frameworks that
    /// checkpoint.
    fn checkpoint_executor(&self, key: &(FrameworkId, ExecutorId)) {
        let (Some((work_dir, agent_id)), Some(run)) =
            (self.checkpoint_root(), self.executors().get(key))
        else {
            return;
        };
        if !self.checkpointing(&key.0) {
            return;
        }
        let checkpoint = crate::checkpoint::ExecutorCheckpoint {
            version: crate::checkpoint::FORMAT_VERSION,
            executor_id: key.1.clone(),
            group: run.run.group,
            start_ticks: run.run.start_ticks,
            pid: run.pid.clone(),
            launched: run.run.launched,
            container: run.run.container.clone(),
            sandbox: run.run.sandbox.clone(),
        };
        let path = crate::checkpoint::executor_path(work_dir, agent_id, &key.0, &key.1);
        if let Err(error) = crate::checkpoint::save(&self.config().disk, &path, &checkpoint) {
            tracing::error!(cause = %error, "executor checkpoint failed");
        }
    }

    fn forget_executor_checkpoint(&self, key: &(FrameworkId, ExecutorId)) {
        if let Some((work_dir, agent_id)) = self.checkpoint_root() {
            let path = crate::checkpoint::executor_path(work_dir, agent_id, &key.0, &key.1);
            if let Err(error) = crate::checkpoint::remove(&self.config().disk, &path) {
                warn!(cause = %error, "cannot remove an executor checkpoint");
            }
        }
    }

    /// `RegisterExecutor` and `ExecutorStatus`, from executor processes;
    /// whether the agent took it (an update taken is the agent's to
    /// deliver).
    pub(crate) fn executor_message(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        from: Upid,
        identity: &strata_runtime::PeerIdentity,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        status: Option<strata_protocol::TaskStatus>,
    ) -> bool {
        if !crate::credentials::is_executor(identity, &framework_id, &executor_id) {
            warn!(
                from = %from,
                identity = %identity,
                executor_id = %executor_id,
                "executor message under another identity than the one issued to that executor dropped"
            );
            return false;
        }
        let key = (framework_id.clone(), executor_id.clone());
        let Some(agent_id) = self.agent_id().cloned() else {
            return false;
        };
        let Some(run) = self.executors_mut().get_mut(&key) else {
            warn!(from = %from, executor_id = %executor_id, "message from an executor this agent did not start");
            return false;
        };
        match status {
            None => {
                if run.pid.as_ref().is_some_and(|pid| !pid.same_name(&from)) {
                    warn!(from = %from, executor_id = %executor_id, "a second process registered for an executor");
                    return false;
                }
                run.pid = Some(from.clone());
                let queued = std::mem::take(&mut run.queued);
                self.checkpoint_executor(&key);
                // An HTTP executor's stream going away stands for its link.
                if !crate::executor_api::HttpExecutors::owns(ctx.pid(), &from) {
                    ctx.link(&from);
                }
                self.tell_executor(
                    ctx,
                    &from,
                    ToExecutor::ExecutorRegistered {
                        agent_id,
                        framework_id,
                        executor_id,
                    },
                );
                for task in queued {
                    self.tell_executor(ctx, &from, ToExecutor::LaunchTask { task });
                }
            }
            Some(status) => {
                let own_task = run.tasks.contains(&status.task_id);
                let registered_sender = run.pid.as_ref().is_some_and(|pid| pid.same_name(&from));
                if !own_task || !registered_sender {
                    warn!(from = %from, task_id = %status.task_id, "status for a task this executor does not run");
                    return false;
                }
                if status.state.is_terminal() {
                    run.tasks.remove(&status.task_id);
                }
                // An executor reconnected after an agent restart resends
                // its tasks' latest states; one already recorded is no news.
                let recorded = self
                    .tasks
                    .get(&(framework_id.clone(), status.task_id.clone()))
                    .and_then(|task| task.status.as_ref());
                if recorded.is_some_and(|known| {
                    known.state == status.state && known.message == status.message
                }) {
                    return true;
                }
                self.report_with(
                    ctx,
                    &framework_id,
                    &status.task_id,
                    status.state,
                    status.reason,
                    &status.message,
                );
            }
        }
        true
    }

    /// Framework messages: from the master for an executor, or from an
    /// executor for its scheduler. Delivered at most once, as in Mesos.
    pub(crate) fn relay_framework_message(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        from: Upid,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: strata_runtime::Blob,
    ) {
        let master = self.config().master.clone();
        let key = (framework_id.clone(), executor_id.clone());
        let Some(executor) = self.executors().get(&key).and_then(|run| run.pid.clone()) else {
            debug!(executor_id = %executor_id, "framework message for an executor not running here dropped");
            return;
        };
        if from.same_name(&master) {
            self.tell_executor(ctx, &executor, ToExecutor::FrameworkMessage { data });
        } else if from.same_name(&executor) {
            let message = ToMaster::ExecutorMessage {
                framework_id,
                executor_id,
                data,
            };
            if let Err(error) = ctx.send(&master, message) {
                debug!(cause = %error, "executor message not sent to the master");
            }
        }
    }

    /// Tells the master an executor's own resources are free again.
    fn report_executor_exited(
        &self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    ) {
        let master = self.config().master.clone();
        let message = ToMaster::ExecutorExited {
            framework_id,
            executor_id,
        };
        if let Err(error) = ctx.send(&master, message) {
            debug!(cause = %error, "executor exit not reported to the master");
        }
    }

    fn executor_exited(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        key: (FrameworkId, ExecutorId),
        container: ContainerId,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        let ours = self
            .executors()
            .get(&key)
            .is_some_and(|run| run.container() == &container);
        if !ours {
            // Shut down already (its tasks were reported then), or
            // replaced by a newer run of the same executor: what is left
            // of this one is its checkpoint, unless a newer run has one,
            // and its container.
            if !self.executors().contains_key(&key) {
                self.forget_executor_checkpoint(&key);
            }
            self.containerizer.forget(&container);
            return;
        }
        let Some(run) = self.executors_mut().remove(&key) else {
            return;
        };
        self.forget_executor_checkpoint(&key);
        self.report_executor_exited(ctx, key.0.clone(), key.1.clone());
        let (reason, message) = if run.registration_timed_out {
            (
                Reason::ExecutorRegistrationTimeout,
                "the executor did not register in time".to_owned(),
            )
        } else {
            let (_, how) = command_executor::outcome(status, false);
            (
                Reason::ExecutorTerminated,
                format!("the executor ended: {how}"),
            )
        };
        debug!(executor_id = %key.1, tasks = run.tasks.len(), "executor ended");
        // The container is forgotten once the updates are recorded.
        for task_id in run.tasks {
            self.report_with(
                ctx,
                &key.0,
                &task_id,
                TaskState::Failed,
                Some(reason),
                &message,
            );
        }
        self.containerizer.forget(&container);
    }

    /// Kills a task an executor runs; false if no executor runs it.
    pub(crate) fn kill_executor_task(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) -> bool {
        let Some((_, run)) = self
            .executors_mut()
            .iter_mut()
            .find(|((owner, _), run)| owner == framework_id && run.tasks.contains(task_id))
        else {
            return false;
        };
        if let Some(pid) = run.pid.clone() {
            self.tell_executor(
                ctx,
                &pid,
                ToExecutor::KillTask {
                    task_id: task_id.clone(),
                },
            );
            return true;
        }
        run.queued.retain(|task| &task.task_id != task_id);
        run.tasks.remove(task_id);
        self.report(
            ctx,
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
    pub(crate) fn shutdown_executor(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
    ) {
        let key = (framework_id.clone(), executor_id.clone());
        let Some(run) = self.executors().get(&key) else {
            return;
        };
        let tasks: Vec<TaskId> = run.tasks.iter().cloned().collect();
        for task_id in tasks {
            self.report_with(
                ctx,
                framework_id,
                &task_id,
                TaskState::Killed,
                Some(Reason::ExecutorTerminated),
                "its executor was shut down by its framework",
            );
        }
        self.shutdown_executors(ctx, framework_id, Some(executor_id));
    }

    /// Asks a framework's executors (or only `only`) to shut down,
    /// killing them after the grace period.
    pub(crate) fn shutdown_executors(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        framework_id: &FrameworkId,
        only: Option<&ExecutorId>,
    ) {
        let grace = self.config().runner.kill_grace();
        let keys: Vec<_> = self
            .executors()
            .keys()
            .filter(|(owner, executor)| {
                owner == framework_id && only.is_none_or(|only| only == executor)
            })
            .cloned()
            .collect();
        for key in keys {
            let Some(run) = self.executors_mut().remove(&key) else {
                continue;
            };
            if let Some(pid) = &run.pid {
                self.tell_executor(ctx, pid, ToExecutor::Shutdown);
            }
            self.report_executor_exited(ctx, key.0.clone(), key.1.clone());
            let container = run.container().clone();
            ctx.run_later(grace, move |agent, _| {
                agent.containerizer.signal(&container, Signal::KILL)
            });
        }
    }

    /// The containers of all executors, with their frameworks.
    pub(crate) fn executor_containers(&self) -> impl Iterator<Item = (&FrameworkId, &ContainerId)> {
        self.executors()
            .iter()
            .map(|((framework_id, _), run)| (framework_id, run.container()))
    }

    /// An executor's process went away (its link broke): kill what is
    /// left of it; its exit then fails its tasks.
    pub(crate) fn executor_lost(&mut self, pid: &Upid) -> bool {
        let lost = self
            .executors()
            .values()
            .find(|run| run.pid.as_ref().is_some_and(|known| known.same_name(pid)))
            .map(|run| run.container().clone());
        match lost {
            Some(container) => {
                self.containerizer.signal(&container, Signal::KILL);
                true
            }
            None => false,
        }
    }
}

impl Agent {
    /// Sends `message` to the executor at `to`: over the network, or as
    /// an event on its stream when it subscribed over HTTP.
    pub(crate) fn tell_executor(
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
                ctx.run_later(std::time::Duration::ZERO, move |agent, _| {
                    agent.http_executor_gone(&pid)
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
        agent_id: &strata_protocol::AgentId,
        framework_id: &FrameworkId,
        executor_id: &ExecutorId,
    ) -> Option<strata_api::executor::Event> {
        let started = self
            .executors()
            .get(&(framework_id.clone(), executor_id.clone()))
            .and_then(|run| run.info.clone());
        let executor = started.or_else(|| {
            self.tasks
                .iter()
                .filter(|((owner, _), _)| owner == framework_id)
                .find_map(|(_, task)| match &task.info.kind {
                    strata_protocol::TaskKind::Executor(executor)
                        if executor.executor_id == *executor_id =>
                    {
                        Some(executor.clone())
                    }
                    _ => None,
                })
        })?;
        let framework = self.frameworks.get(framework_id)?;
        let agent = strata_protocol::AgentInfo {
            id: Some(agent_id.clone()),
            hostname: self.config().hostname.clone(),
            resources: self.config().resources.clone(),
            attributes: self.config().attributes.clone(),
        };
        Some(strata_api::executor::Event::subscribed(
            &executor,
            framework,
            agent_id,
            &agent,
            framework_id,
        ))
    }

    /// An HTTP executor's stream is gone: as an executor whose link
    /// broke, it is killed and its tasks fail.
    pub(crate) fn http_executor_gone(&mut self, pid: &Upid) {
        self.http_executors.forget(pid);
        self.executor_lost(pid);
    }

    /// Takes the next call of the v1 executor API, then waits for more.
    pub(crate) fn take_executor_calls(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(api) = self.executor_api.clone() else {
            return;
        };
        ctx.spawn_future(async move { api.next().await }, |agent, ctx, call| {
            let Some(call) = call else {
                return;
            };
            agent.executor_call(ctx, call);
            agent.take_executor_calls(ctx);
        });
    }

    fn executor_call(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        call: crate::executor_api::ExecutorCall,
    ) {
        use crate::executor_api::ExecutorCall;
        match call {
            ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                events,
                answer,
            } => {
                let key = (framework_id.clone(), executor_id.clone());
                let agent = ctx.pid().clone();
                // Only an executor that has not registered (over QUIC or
                // HTTP): nobody takes over one that runs.
                let refusal = match self.executors().get(&key) {
                    None => Some(format!(
                        "no executor {executor_id} of framework {framework_id} was started by this agent"
                    )),
                    Some(run) if run.registered() => {
                        Some(format!("executor {executor_id} is registered already"))
                    }
                    Some(_) => None,
                };
                if let Some(reason) = refusal {
                    let _ = answer.try_send(Err(reason));
                    return;
                }
                let Some((pid, stream_id, identity)) = self.http_executors.open(
                    &agent,
                    framework_id.clone(),
                    executor_id.clone(),
                    events,
                ) else {
                    let _ = answer.try_send(Err("no stream for the executor".into()));
                    return;
                };
                if answer.try_send(Ok(stream_id)).is_err() {
                    // The client gave up waiting.
                    self.http_executors.forget(&pid);
                    return;
                }
                self.executor_message(ctx, pid, &identity, framework_id, executor_id, None);
            }
            ExecutorCall::Call {
                framework_id,
                executor_id,
                stream_id,
                message,
                answer,
            } => {
                let (pid, identity) =
                    match self
                        .http_executors
                        .of(&framework_id, &executor_id, &stream_id)
                    {
                        Ok(found) => found,
                        Err(reason) => {
                            let _ = answer.try_send(Err(reason));
                            return;
                        }
                    };
                match message {
                    strata_protocol::ToAgent::ExecutorStatus { status, .. } => {
                        let (task_id, update_id) = (status.task_id.clone(), status.update_id);
                        let taken = self.executor_message(
                            ctx,
                            pid.clone(),
                            &identity,
                            framework_id,
                            executor_id.clone(),
                            Some(status),
                        );
                        if !taken {
                            let _ = answer.try_send(Err(format!(
                                "executor {executor_id} does not run task {task_id}"
                            )));
                            return;
                        }
                        let _ = answer.try_send(Ok(()));
                        // The agent holds the update now and delivers it
                        // to the framework at least once.
                        if let Some(update_id) = update_id {
                            let acknowledged =
                                strata_api::executor::Event::acknowledged(&task_id, update_id);
                            if !self.http_executors.send(&pid, &acknowledged) {
                                self.http_executor_gone(&pid);
                            }
                        }
                    }
                    strata_protocol::ToAgent::FrameworkMessage { data, .. } => {
                        let _ = answer.try_send(Ok(()));
                        self.relay_framework_message(ctx, pid, framework_id, executor_id, data)
                    }
                    _ => {
                        let _ = answer.try_send(Err("not an executor's call".into()));
                    }
                }
            }
        }
    }
}
