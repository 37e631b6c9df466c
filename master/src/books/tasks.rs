//! Tasks: status updates, kills, acknowledgements and reconciliation.
//!
//! Status updates travel agent → master → framework, acknowledgements
//! framework → master → agent. The master forwards every update it gets,
//! duplicates included (the framework deduplicates by update id and must
//! acknowledge each, or the agent keeps resending), but its books only
//! follow legal transitions, so a late duplicate never moves a task back.
//! A task that reaches a terminal state gives its resources back.

use std::time::Instant;

use strata_protocol::{
    AgentId, FrameworkId, Reason, ReconcileTask, Source, Task, TaskId, TaskInfo, TaskState,
    TaskStatus, ToAgent, ToScheduler, UpdateId,
};
use strata_runtime::Upid;

use super::{AgentStatus, Books, Command, Event};

/// Most tasks one reconciliation may name; the rest are ignored.
const MAX_RECONCILE_TASKS: usize = 100_000;

impl Books {
    pub(super) fn status_update(
        &mut self,
        now: Instant,
        from: &Upid,
        framework_id: FrameworkId,
        status: TaskStatus,
        out: &mut Vec<Command>,
    ) {
        // Only an admitted agent reports statuses, and only for its tasks.
        let Some(agent_id) = self.agents_by_pid.get(&from.name()).cloned() else {
            return;
        };
        let task_id = status.task_id.clone();
        let placed = self
            .frameworks
            .get(&framework_id)
            .and_then(|framework| framework.tasks.get(&task_id))
            .map(|task| task.info.agent_id == agent_id);
        // An agent speaks only of its own tasks: one of another agent's
        // goes no further, and what it forwards names the sender's id.
        if placed == Some(false) {
            return;
        }
        let known = placed == Some(true);
        let mut status = status;
        status.agent_id = Some(agent_id.clone());
        if known {
            self.apply_status(now, &framework_id, &task_id, status.clone(), out);
            // Freed resources are offered at once, not at the next tick.
            if status.state.is_terminal() {
                self.allocate_agents(now, std::slice::from_ref(&agent_id), out);
            }
        } else if let Some(ended) = self.ended_as(&framework_id, &task_id)
            && ended != status.state
        {
            // The master told the framework this task ended otherwise
            // (LOST when its agent was unreachable, say): a task never
            // leaves a terminal state, so the update goes no further. It is
            // acknowledged here, or the agent would resend it for ever.
            if let Some(update_id) = status.update_id {
                self.acknowledge(&framework_id, agent_id, task_id, update_id, out);
            }
            return;
        }
        // With nobody to tell now, the agent resends until acknowledged.
        if let Some(pid) = self
            .frameworks
            .get(&framework_id)
            .and_then(|framework| framework.pid.clone())
        {
            out.push(Command::ToScheduler(pid, ToScheduler::Update { status }));
        }
    }

    /// Files an ended task in its framework's recent history, forgetting
    /// the oldest beyond [`super::Config::completed_tasks_kept`].
    pub(super) fn file_completed(&mut self, framework_id: &FrameworkId, task: Task) {
        let kept = self.config.completed_tasks_kept;
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            if framework.completed.len() >= kept
                && let Some(forgotten) = framework.completed.pop_front()
            {
                // A task of the same id may still run: its view changes.
                framework.tasks.mark(&forgotten.info.task_id);
                framework.history.remove(&forgotten.info.task_id);
            }
            framework.completed.push_back(task);
            framework.filed += 1;
        }
    }

    /// The terminal state the master itself declared for a task of the
    /// framework's recent history (LOST for an unreachable agent's, say),
    /// which the framework was told; `None` if the task ended otherwise
    /// (its end then still travels the agent's update stream).
    fn ended_as(&self, framework_id: &FrameworkId, task_id: &TaskId) -> Option<TaskState> {
        self.frameworks
            .get(framework_id)?
            .completed
            .iter()
            .rev()
            .find(|task| task.info.task_id == *task_id)
            .filter(|task| {
                task.status
                    .as_ref()
                    .is_some_and(|status| status.source == Source::Master)
            })
            .map(|task| task.state)
    }

    /// Moves a task to `status` if that is a legal transition; a terminal
    /// state frees its resources and files the task under completed.
    fn apply_status(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        status: TaskStatus,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = framework.tasks.get_mut(task_id) else {
            return;
        };
        if !task.state.can_become(status.state) {
            return;
        }
        let transition = super::Transition {
            state: status.state,
            timestamp_ms: status.timestamp_ms,
            message: status.message.clone(),
        };
        let mut status = status;
        if status.sandbox.is_none() {
            // Told once (when it started), known from then on.
            status.sandbox = task.status.as_ref().and_then(|last| last.sandbox.clone());
        }
        task.state = status.state;
        out.push(Command::Log(Event::TaskUpdated {
            framework_id: framework_id.clone(),
            status: status.clone(),
            user: super::task_user(&task.info, &framework.info.user),
        }));
        task.status = Some(status);
        let state = task.state;
        framework.record(task_id, transition);
        if !state.is_terminal() {
            return;
        }
        *self.ended.entry(state).or_default() += 1;
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let Some(task) = framework.tasks.remove(task_id) else {
            return;
        };
        let agent_id = task.info.agent_id.clone();
        let resources = task.info.resources.clone();
        self.file_completed(framework_id, task);
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            let key = (framework_id.clone(), task_id.clone());
            agent.tasks.remove(&key);
            agent.kills.remove(&key);
        }
        self.allocator
            .recover(framework_id, &agent_id, &resources, None, now);
    }

    /// Sets a task's state on the master's own authority and tells the
    /// framework (agent loss, reconciliation after a return).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_task_state(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: Reason,
        message: &str,
        out: &mut Vec<Command>,
    ) {
        let now_ms = self.wall_ms(now);
        let Some(status) = self
            .frameworks
            .get(framework_id)
            .and_then(|framework| framework.tasks.get(task_id))
            .map(|task| Books::master_status(task, state, reason, message, now_ms))
        else {
            return;
        };
        self.apply_status(now, framework_id, task_id, status.clone(), out);
        self.tell_scheduler(framework_id, ToScheduler::Update { status }, out);
    }

    /// Answers a task that never launched (invalid, or its offers gone).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_task(
        &self,
        now: Instant,
        framework_id: &FrameworkId,
        task: &TaskInfo,
        state: TaskState,
        reason: Reason,
        message: &str,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        let Some(pid) = framework.pid.clone() else {
            return;
        };
        // A launch refused under the id of a task that exists (a repeated
        // or duplicated accept, say) is not news about that task, which
        // must not seem to end: the scheduler hears of it as an error.
        if framework.tasks.contains_key(&task.task_id)
            || framework
                .completed
                .iter()
                .any(|done| done.info.task_id == task.task_id)
        {
            let message = format!(
                "a launch of {} was refused ({reason:?}: {message}), and a task with that id \
                 exists, which goes on",
                task.task_id
            );
            out.push(Command::ToScheduler(pid, ToScheduler::Error { message }));
            return;
        }
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            state,
            source: Source::Master,
            reason: Some(reason),
            message: message.to_owned(),
            agent_id: Some(task.agent_id.clone()),
            executor_id: None,
            update_id: None,
            timestamp_ms: self.wall_ms(now),
            sandbox: None,
        };
        out.push(Command::ToScheduler(pid, ToScheduler::Update { status }));
    }

    pub(super) fn kill(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        task_id: TaskId,
        out: &mut Vec<Command>,
    ) {
        let agent_id = self
            .frameworks
            .get(framework_id)
            .and_then(|framework| framework.tasks.get(&task_id))
            .filter(|task| !task.state.is_terminal())
            .map(|task| task.info.agent_id.clone());
        let Some(agent_id) = agent_id else {
            self.answer_unknown(now, framework_id, &task_id, None, Reason::TaskUnknown, out);
            return;
        };
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return;
        };
        // Kept until the task ends, and sent again when the agent
        // re-registers: an agent that is unreachable gets it then (its
        // framework knows the task as UNREACHABLE or LOST meanwhile), one
        // that died a moment ago gets it in its next life.
        agent.kills.insert((framework_id.clone(), task_id.clone()));
        if agent.status == AgentStatus::Active {
            out.push(Command::ToAgent(
                agent.pid.clone(),
                ToAgent::KillTask {
                    framework_id: framework_id.clone(),
                    task_id,
                },
            ));
        }
    }

    /// Tells a framework a task is not known: UNKNOWN if it is
    /// partition-aware, LOST otherwise.
    fn answer_unknown(
        &self,
        now: Instant,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        agent_id: Option<AgentId>,
        reason: Reason,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        let Some(pid) = framework.pid.clone() else {
            return;
        };
        let state = if framework.info.is_partition_aware() {
            TaskState::Unknown
        } else {
            TaskState::Lost
        };
        let status = TaskStatus {
            task_id: task_id.clone(),
            state,
            source: Source::Master,
            reason: Some(reason),
            message: "the master does not know this task".into(),
            agent_id,
            executor_id: None,
            update_id: None,
            timestamp_ms: self.wall_ms(now),
            sandbox: None,
        };
        out.push(Command::ToScheduler(pid, ToScheduler::Update { status }));
    }

    pub(super) fn acknowledge(
        &mut self,
        framework_id: &FrameworkId,
        agent_id: AgentId,
        task_id: TaskId,
        update_id: UpdateId,
        out: &mut Vec<Command>,
    ) {
        if let Some(agent) = self.agents.get(&agent_id) {
            out.push(Command::ToAgent(
                agent.pid.clone(),
                ToAgent::StatusUpdateAcknowledged {
                    framework_id: framework_id.clone(),
                    task_id,
                    update_id,
                },
            ));
        }
    }

    /// Answers with each named task's latest state (reason
    /// RECONCILIATION), or every non-terminal task's when none is named.
    pub(super) fn reconcile(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        pid: &Upid,
        tasks: Vec<ReconcileTask>,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        let wall_ms = self.wall_ms(now);
        let restate = |task: &Task| {
            let mut status = Books::master_status(
                task,
                task.state,
                Reason::Reconciliation,
                "reconciliation",
                wall_ms,
            );
            if let Some(last) = &task.status {
                status.message = last.message.clone();
            }
            status
        };
        if tasks.is_empty() {
            for task in framework
                .tasks
                .values()
                .filter(|task| !task.state.is_terminal())
            {
                out.push(Command::ToScheduler(
                    pid.clone(),
                    ToScheduler::Update {
                        status: restate(task),
                    },
                ));
            }
            return;
        }
        let mut unknown = Vec::new();
        for asked in tasks.into_iter().take(MAX_RECONCILE_TASKS) {
            let known = framework.tasks.get(&asked.task_id).or_else(|| {
                framework
                    .completed
                    .iter()
                    .rev()
                    .find(|task| task.info.task_id == asked.task_id)
            });
            match known {
                Some(task) => out.push(Command::ToScheduler(
                    pid.clone(),
                    ToScheduler::Update {
                        status: restate(task),
                    },
                )),
                None => unknown.push(asked),
            }
        }
        // Agents of the previous master may still bring these back: no
        // answer yet, the scheduler asks again.
        if self.recovering() {
            return;
        }
        for asked in unknown {
            self.answer_unknown(
                now,
                framework_id,
                &asked.task_id,
                asked.agent_id,
                Reason::Reconciliation,
                out,
            );
        }
    }
}
