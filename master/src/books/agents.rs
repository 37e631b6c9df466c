//! Agents: admission, pings, loss and return.
//!
//! An agent is pinged every `agent_ping_timeout`; after
//! `max_missed_pongs` unanswered pings in a row it is unreachable: its
//! offers are rescinded, its tasks are reported UNREACHABLE to
//! partition-aware frameworks and LOST to the others, and every framework
//! hears that the agent is lost. An agent that comes back re-registers
//! with its tasks and they are reconciled: tasks a framework was told are
//! LOST are killed rather than resurrected.

use std::collections::BTreeMap;
use std::time::Instant;

use strata_protocol::{
    AgentId, AgentInfo, FrameworkId, Reason, Resources, Source, Task, TaskState, ToAgent,
    ToScheduler,
};
use strata_runtime::Upid;

use super::{AgentEntry, AgentStatus, Books, Command, Event};

/// When an agent that just (re-)registered is pinged first: somewhere in
/// the ping interval, spread by its address, so that agents registered in
/// one wave (a cluster started, a master failed over) are not pinged in
/// one wave forever after, every ping interval: at 50,000 agents such a
/// wave was 20,000 pings in one tick (90 ms of the master). Every ping
/// after keeps the agent's phase. The pongs an agent may miss are counted
/// from its first ping, each ping given a whole interval, so a silent
/// agent is unreachable between ping timeout × pongs it may miss (75 s by
/// default, Mesos's figure, whose master pings at once) and one interval
/// more (the 90 s it was when every first ping came a whole interval
/// late).
fn first_ping_after(pid: &Upid, interval: std::time::Duration) -> std::time::Duration {
    // FNV-1a over the address: stable, and spread for the sequential
    // names and ports agents have.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pid.to_string().bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
    // In (0, 1] of the interval: never at once.
    interval.mul_f64(1.0 - fraction)
}

impl Books {
    pub(super) fn agent_entry(
        &self,
        now: Instant,
        info: impl Into<std::sync::Arc<AgentInfo>>,
        pid: Upid,
        certificate_name: &str,
    ) -> AgentEntry {
        let first_ping = first_ping_after(&pid, self.config.agent_ping_timeout);
        AgentEntry {
            info: info.into(),
            pid,
            certificate_name: certificate_name.to_owned(),
            status: AgentStatus::Active,
            missed_pongs: 0,
            awaiting_pong: false,
            next_ping_at: now + first_ping,
            ping_sequence: 0,
            tasks: Default::default(),
            kills: Default::default(),
            executors: Default::default(),
            offers: Default::default(),
        }
    }

    pub(super) fn refuse_agent(&self, pid: Upid, reason: String, out: &mut Vec<Command>) {
        out.push(Command::Log(Event::AgentRefused {
            pid: pid.clone(),
            reason: reason.clone(),
        }));
        out.push(Command::ToAgent(
            pid,
            ToAgent::RegistrationRefused { reason },
        ));
    }

    pub(super) fn register_agent(
        &mut self,
        now: Instant,
        pid: Upid,
        certificate_name: &str,
        mut info: AgentInfo,
        out: &mut Vec<Command>,
    ) {
        if info.resources.is_empty() {
            return self.refuse_agent(pid, "the agent offers no resources".into(), out);
        }
        if let Some(reason) = strata_protocol::limits::too_large(
            "agent description",
            &info,
            strata_protocol::limits::MAX_AGENT_INFO_BYTES,
        ) {
            return self.refuse_agent(pid, reason, out);
        }
        if let Some(reason) = info.id.as_ref().and_then(|id| self.gone_reason(id)) {
            return self.refuse_agent(pid, reason, out);
        }
        // A registration naming an agent id claims it: only that agent's
        // certificate may.
        if let Some(agent_id) = &info.id
            && let Some(reason) = self.bound_elsewhere(agent_id, certificate_name)
        {
            self.denied += 1;
            return self.refuse_agent(pid, reason, out);
        }
        // A retried registration from an agent already admitted: answer
        // again with the same id.
        if let Some(agent_id) = self.agents_by_pid.get(&pid.name()).cloned() {
            if let Some(reason) = self.bound_elsewhere(&agent_id, certificate_name) {
                self.denied += 1;
                return self.refuse_agent(pid, reason, out);
            }
            let ping_timeout = self.agent_ping_limit();
            out.push(Command::ToAgent(
                pid,
                ToAgent::AgentRegistered {
                    agent_id,
                    ping_timeout,
                    epoch: self.master_epoch(),
                },
            ));
            return;
        }
        if self.agents.len() >= self.config.max_agents {
            let reason = format!(
                "the master admits at most {} agents and has that many",
                self.config.max_agents
            );
            return self.refuse_agent(pid, reason, out);
        }
        let held = self
            .agents_per_certificate
            .get(certificate_name)
            .copied()
            .unwrap_or(0);
        if held >= self.config.max_agents_per_certificate {
            self.denied += 1;
            let reason = format!(
                "the agent certificate {certificate_name:?} holds {held} agent ids already, the most one certificate may"
            );
            return self.refuse_agent(pid, reason, out);
        }
        let agent_id = loop {
            let id = Books::next_id(&self.id_prefix, "S", &mut self.next_agent);
            let Ok(agent_id) = AgentId::new(id) else {
                return self.refuse_agent(pid, "cannot make an agent id".into(), out);
            };
            // Ids of agents recovered from the registry are never reused,
            // whatever prefix this master runs with.
            if !self.agents.contains_key(&agent_id) {
                break agent_id;
            }
        };
        info.id = Some(agent_id.clone());
        self.admit(
            now,
            agent_id.clone(),
            pid.clone(),
            certificate_name,
            info,
            &[],
            out,
        );
        out.push(Command::Log(Event::AgentAdmitted {
            agent_id: agent_id.clone(),
            pid: pid.clone(),
        }));
        out.push(Command::ToAgent(
            pid,
            ToAgent::AgentRegistered {
                agent_id: agent_id.clone(),
                ping_timeout: self.agent_ping_limit(),
                epoch: self.master_epoch(),
            },
        ));
        self.allocate_agents(now, &[agent_id], out);
    }

    /// Records an agent as active and gives its resources to the allocator,
    /// `used` already taken by running tasks.
    /// Why a certificate named `certificate_name` may not take
    /// `agent_id`, if it may not: the id is bound to another one.
    fn bound_elsewhere(&self, agent_id: &AgentId, certificate_name: &str) -> Option<String> {
        let bound = &self.agents.get(agent_id)?.certificate_name;
        (!bound.is_empty() && bound != certificate_name).then(|| {
            format!(
                "agent {agent_id} belongs to the agent certificate {bound:?}, not {certificate_name:?}; an agent re-registers only with its own certificate's name"
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        now: Instant,
        agent_id: AgentId,
        pid: Upid,
        certificate_name: &str,
        info: AgentInfo,
        used: &[(FrameworkId, Resources)],
        out: &mut Vec<Command>,
    ) {
        self.allocator.add_agent(
            agent_id.clone(),
            info.resources.clone(),
            info.attributes.clone(),
            used,
        );
        let previous = self.agents.get(&agent_id).map(|entry| {
            (
                entry.tasks.clone(),
                entry.kills.clone(),
                entry.executors.clone(),
            )
        });
        let mut entry = self.agent_entry(now, info, pid.clone(), certificate_name);
        self.pings.insert((entry.next_ping_at, agent_id.clone()));
        if let Some((tasks, kills, executors)) = previous {
            entry.tasks = tasks;
            entry.kills = kills;
            entry.executors = executors;
        }
        match self.agents.insert(agent_id.clone(), entry) {
            Some(old) => {
                self.agents_by_pid.remove(&old.pid.name());
            }
            None => {
                *self
                    .agents_per_certificate
                    .entry(certificate_name.to_owned())
                    .or_default() += 1;
            }
        }
        self.agent_recovered(&agent_id);
        self.registry_agent_changed(&agent_id);
        self.agents_by_pid.insert(pid.name(), agent_id);
        out.push(Command::Link(pid));
    }

    pub(super) fn reregister_agent(
        &mut self,
        now: Instant,
        pid: Upid,
        certificate_name: &str,
        info: AgentInfo,
        reported: Vec<Task>,
        out: &mut Vec<Command>,
    ) {
        let Some(agent_id) = info.id.clone() else {
            return self.refuse_agent(pid, "re-registration without an agent id".into(), out);
        };
        if let Some(reason) = self.gone_reason(&agent_id) {
            return self.refuse_agent(pid, reason, out);
        }
        if let Some(reason) = self.bound_elsewhere(&agent_id, certificate_name) {
            self.denied += 1;
            return self.refuse_agent(pid, reason, out);
        }
        if info.resources.is_empty() {
            return self.refuse_agent(pid, "the agent offers no resources".into(), out);
        }
        if let Some(reason) = strata_protocol::limits::too_large(
            "agent description",
            &info,
            strata_protocol::limits::MAX_AGENT_INFO_BYTES,
        ) {
            return self.refuse_agent(pid, reason, out);
        }
        if !self.agents.contains_key(&agent_id) && self.agents.len() >= self.config.max_agents {
            let reason = format!(
                "the master admits at most {} agents and has that many",
                self.config.max_agents
            );
            return self.refuse_agent(pid, reason, out);
        }
        // An agent restarted with less than its tasks and executors hold
        // cannot take them back. What they hold is what the books charge
        // for them: a task the master knows keeps the resources it was
        // launched with, whatever the agent reports.
        let mut held = Resources::new();
        for task in &reported {
            if let Some(resources) = self.charged_on_return(&agent_id, task)
                && let Err(error) = held.try_add(&resources)
            {
                let reason = format!("task {} holds {error}", task.info.task_id);
                return self.refuse_agent(pid, reason, out);
            }
        }
        if let Some(entry) = self.agents.get(&agent_id) {
            for ((_, executor_id), resources) in &entry.executors {
                if let Err(error) = held.try_add(resources) {
                    let reason = format!("executor {executor_id} holds {error}");
                    return self.refuse_agent(pid, reason, out);
                }
            }
        }
        if !info.resources.contains(&held) {
            let reason = format!(
                "the agent offers {} but its tasks hold {held}; it must offer at least that",
                info.resources
            );
            return self.refuse_agent(pid, reason, out);
        }
        // Offers of the agent's earlier connection no longer stand.
        self.rescind_agent_offers(&agent_id, out);
        // What the agent is told about its tasks follows its answer, which
        // it must see first to take this master's messages.
        let mut followups = Vec::new();
        let mut used: BTreeMap<FrameworkId, Resources> = BTreeMap::new();
        let mut running = std::collections::BTreeSet::new();
        for task in reported {
            let key = (task.framework_id.clone(), task.info.task_id.clone());
            if self.reconcile_reported_task(now, &agent_id, &pid, task, &mut followups) {
                // Charged as the books hold the task (adopted ones as
                // reported, and checked above).
                if let Some(resources) = self
                    .frameworks
                    .get(&key.0)
                    .and_then(|framework| framework.tasks.get(&key.1))
                    .map(|known| known.info.resources.clone())
                {
                    used.entry(key.0.clone()).or_default().add(&resources);
                }
                running.insert(key);
            }
        }
        // Tasks the master placed there that the agent no longer has.
        let vanished: Vec<(FrameworkId, strata_protocol::TaskId)> = self
            .agents
            .get(&agent_id)
            .map(|entry| entry.tasks.difference(&running).cloned().collect())
            .unwrap_or_default();
        for (framework_id, task_id) in vanished {
            self.set_task_state(
                now,
                &framework_id,
                &task_id,
                TaskState::Lost,
                Reason::AgentRestarted,
                "the agent came back without this task",
                out,
            );
        }
        // Executors the master placed there are taken to run still; an
        // agent that comes back reports their exits as they happen.
        if let Some(entry) = self.agents.get(&agent_id) {
            for ((framework_id, _), resources) in &entry.executors {
                used.entry(framework_id.clone()).or_default().add(resources);
            }
        }
        let used: Vec<(FrameworkId, Resources)> = used.into_iter().collect();
        self.admit(
            now,
            agent_id.clone(),
            pid.clone(),
            certificate_name,
            info,
            &used,
            out,
        );
        for (framework_id, _) in &running {
            self.framework_agents
                .entry(framework_id.clone())
                .or_default()
                .insert(agent_id.clone());
        }
        if let Some(entry) = self.agents.get_mut(&agent_id) {
            entry.kills.retain(|key| running.contains(key));
            entry.tasks = running;
        }
        // Kills asked for while it was away (or on its way back) go to it
        // again, after its answer.
        let kills: Vec<(FrameworkId, strata_protocol::TaskId)> = self
            .agents
            .get(&agent_id)
            .map(|entry| entry.kills.iter().cloned().collect())
            .unwrap_or_default();
        for (framework_id, task_id) in kills {
            followups.push(Command::ToAgent(
                pid.clone(),
                ToAgent::KillTask {
                    framework_id,
                    task_id,
                },
            ));
        }
        out.push(Command::Log(Event::AgentReturned {
            agent_id: agent_id.clone(),
        }));
        out.push(Command::ToAgent(
            pid,
            ToAgent::AgentReregistered {
                agent_id: agent_id.clone(),
                ping_timeout: self.agent_ping_limit(),
                epoch: self.master_epoch(),
            },
        ));
        out.append(&mut followups);
        self.allocate_agents(now, &[agent_id], out);
    }

    /// Decides about one task a returning agent reports; true if it keeps
    /// running there.
    fn reconcile_reported_task(
        &mut self,
        now: Instant,
        agent_id: &AgentId,
        pid: &Upid,
        task: Task,
        out: &mut Vec<Command>,
    ) -> bool {
        let framework_id = task.framework_id.clone();
        let task_id = task.info.task_id.clone();
        // An agent reports only its own tasks: one placed on another
        // agent (or claiming to be) is not taken from it.
        let placed_elsewhere = self
            .frameworks
            .get(&framework_id)
            .and_then(|framework| framework.tasks.get(&task_id))
            .is_some_and(|known| known.info.agent_id != *agent_id);
        if placed_elsewhere || task.info.agent_id != *agent_id {
            return false;
        }
        // A task that reached a terminal state has moved to the
        // framework's history; it counts as known there too.
        let known_state = self.frameworks.get(&framework_id).and_then(|framework| {
            framework
                .tasks
                .get(&task_id)
                .or_else(|| {
                    framework
                        .completed
                        .iter()
                        .rev()
                        .find(|done| done.info.task_id == task_id)
                })
                .map(|known| known.state)
        });
        let framework_known = self.frameworks.contains_key(&framework_id);
        // A framework being removed whose books no longer hold this task
        // as running (its slices ended it, or forgot it): as for one this
        // master does not know, its agent shuts it down. One still held
        // is kept, and ended by a slice still to come.
        if self
            .frameworks
            .get(&framework_id)
            .is_some_and(|framework| framework.removing.is_some())
            && known_state.is_none_or(|state| state.is_terminal())
        {
            out.push(Command::ToAgent(
                pid.clone(),
                ToAgent::ShutdownFramework { framework_id },
            ));
            return false;
        }
        // An agent back after it was given up (not one of a restarted
        // master's agents coming back in time): a framework that is not
        // partition-aware has been (or will be, when it asks) told its
        // tasks this master does not know are LOST. So they are: filed
        // as lost, killed if they run, their updates going no further.
        if known_state.is_none()
            && framework_known
            && self.given_up(agent_id)
            && !self.partition_aware(&framework_id)
        {
            if !task.state.is_terminal() {
                out.push(Command::ToAgent(
                    pid.clone(),
                    ToAgent::KillTask {
                        framework_id: framework_id.clone(),
                        task_id,
                    },
                ));
            }
            let wall_ms = self.wall_ms(now);
            let status = Books::master_status(
                &task,
                TaskState::Lost,
                Reason::AgentRemoved,
                "its agent came back after it was given up",
                wall_ms,
            );
            let mut lost = task;
            lost.state = TaskState::Lost;
            lost.status = Some(status);
            self.file_completed(&framework_id, lost);
            return false;
        }
        if task.state.is_terminal() {
            if known_state.is_none() && framework_known {
                // A task this master never saw (it restarted since) that
                // ended with its update unacknowledged: filed as ended, so
                // reconciliation answers its real end and its update
                // still reaches the framework.
                self.file_completed(&framework_id, task);
                return false;
            }
            // It ended while the agent was away; its terminal update is on
            // its way and frees its resources then.
            return known_state.is_some_and(|state| !state.is_terminal());
        }
        match known_state {
            // The framework was told the task is gone: it must not come
            // back to life. Kill it.
            Some(state) if state.is_terminal() => {
                out.push(Command::ToAgent(
                    pid.clone(),
                    ToAgent::KillTask {
                        framework_id,
                        task_id,
                    },
                ));
                false
            }
            _ if !framework_known => {
                // A framework this master does not know (removed, or the
                // master restarted without it): its tasks stop.
                out.push(Command::ToAgent(
                    pid.clone(),
                    ToAgent::ShutdownFramework { framework_id },
                ));
                false
            }
            Some(previous) => {
                if previous == TaskState::Unreachable || previous != task.state {
                    self.set_task_state(
                        now,
                        &framework_id,
                        &task_id,
                        task.state,
                        Reason::Reconciliation,
                        "the agent came back",
                        out,
                    );
                }
                true
            }
            None => {
                // Known framework, unknown task: adopt what the agent runs.
                if let Some(framework) = self.frameworks.get_mut(&framework_id) {
                    let mut adopted = task;
                    adopted.info.agent_id = agent_id.clone();
                    framework.tasks.insert(task_id, adopted);
                }
                true
            }
        }
    }

    /// What the books will charge an agent that comes back for a task it
    /// reports: a task the master knows as running there keeps its own
    /// resources; one it does not know is adopted as reported if it runs.
    fn charged_on_return(&self, agent_id: &AgentId, task: &Task) -> Option<Resources> {
        let known = self
            .frameworks
            .get(&task.framework_id)
            .and_then(|framework| framework.tasks.get(&task.info.task_id));
        match known {
            Some(known) if known.info.agent_id == *agent_id && !known.state.is_terminal() => {
                Some(known.info.resources.clone())
            }
            Some(_) => None,
            None if !task.state.is_terminal() => Some(task.info.resources.clone()),
            None => None,
        }
    }

    /// Whether an agent is unreachable and no longer waited for.
    fn given_up(&self, agent_id: &AgentId) -> bool {
        self.agents
            .get(agent_id)
            .is_some_and(|agent| matches!(agent.status, AgentStatus::Unreachable { .. }))
            && !self.recovering_agents.contains(agent_id)
    }

    fn partition_aware(&self, framework_id: &FrameworkId) -> bool {
        self.frameworks.get(framework_id).is_some_and(|framework| {
            framework
                .info
                .capabilities
                .contains(&strata_protocol::Capability::PartitionAware)
        })
    }

    pub(super) fn pong(&mut self, from: &Upid, sequence: u64) {
        let Some(agent_id) = self.agents_by_pid.get(&from.name()) else {
            return;
        };
        if let Some(agent) = self.agents.get_mut_unseen(agent_id)
            && agent.ping_sequence == sequence
        {
            agent.awaiting_pong = false;
            agent.missed_pongs = 0;
        }
    }

    pub(super) fn ping_agents(&mut self, now: Instant, out: &mut Vec<Command>) {
        let mut due = Vec::new();
        while let Some((at, _)) = self.pings.first()
            && *at <= now
            && due.len() < self.config.ping_slice.max(1)
        {
            due.extend(self.pings.pop_first());
        }
        // What is pinged now is due again an interval later, never now.
        self.pings_left = self.pings.first().is_some_and(|(at, _)| *at <= now);
        let mut lost = Vec::new();
        for (at, agent_id) in due {
            // Pings change nothing operators see.
            let Some(agent) = self
                .agents
                .get_mut_unseen(&agent_id)
                .filter(|agent| agent.status == AgentStatus::Active && agent.next_ping_at == at)
            else {
                // Stale: the agent went, is unreachable, or registered
                // again since.
                continue;
            };
            if agent.awaiting_pong {
                agent.missed_pongs += 1;
            }
            if agent.missed_pongs >= self.config.max_missed_pongs {
                lost.push((agent_id, agent.missed_pongs));
                continue;
            }
            agent.ping_sequence += 1;
            agent.awaiting_pong = true;
            agent.next_ping_at = now + self.config.agent_ping_timeout;
            self.pings.insert((agent.next_ping_at, agent_id.clone()));
            out.push(Command::ToAgent(
                agent.pid.clone(),
                ToAgent::Ping {
                    sequence: agent.ping_sequence,
                },
            ));
        }
        for (agent_id, missed_pongs) in lost {
            self.mark_unreachable(now, &agent_id, missed_pongs, out);
        }
    }

    /// How long an agent may stay silent before it is unreachable: the
    /// ping timeout times the pongs it may miss (Mesos: 15 s x 5).
    fn agent_ping_limit(&self) -> std::time::Duration {
        self.config
            .agent_ping_timeout
            .saturating_mul(self.config.max_missed_pongs)
    }

    pub(super) fn mark_unreachable(
        &mut self,
        now: Instant,
        agent_id: &AgentId,
        missed_pongs: u32,
        out: &mut Vec<Command>,
    ) {
        self.rescind_agent_offers(agent_id, out);
        self.allocator.remove_agent(agent_id);
        self.registry_agent_changed(agent_id);
        let tasks: Vec<(FrameworkId, strata_protocol::TaskId)> = match self.agents.get_mut(agent_id)
        {
            Some(agent) => {
                agent.status = AgentStatus::Unreachable { since: now };
                agent.awaiting_pong = false;
                agent.tasks.iter().cloned().collect()
            }
            None => return,
        };
        for (framework_id, task_id) in tasks {
            let partition_aware = self
                .frameworks
                .get(&framework_id)
                .is_some_and(|framework| framework.info.is_partition_aware());
            let state = if partition_aware {
                TaskState::Unreachable
            } else {
                TaskState::Lost
            };
            self.set_task_state(
                now,
                &framework_id,
                &task_id,
                state,
                Reason::AgentUnreachable,
                "the agent is unreachable",
                out,
            );
        }
        out.push(Command::Log(Event::AgentUnreachable {
            agent_id: agent_id.clone(),
            missed_pongs,
        }));
        self.tell_agent_lost(agent_id, out);
    }

    /// Tells every connected scheduler that `agent_id` is lost.
    pub(super) fn tell_agent_lost(&self, agent_id: &AgentId, out: &mut Vec<Command>) {
        for framework in self.frameworks.values() {
            if let Some(pid) = &framework.pid {
                out.push(Command::ToScheduler(
                    pid.clone(),
                    ToScheduler::AgentLost {
                        agent_id: agent_id.clone(),
                    },
                ));
            }
        }
    }

    /// A status the master itself reports (source MASTER, nothing to
    /// acknowledge).
    pub(super) fn master_status(
        task: &Task,
        state: TaskState,
        reason: Reason,
        message: &str,
        now_ms: u64,
    ) -> strata_protocol::TaskStatus {
        strata_protocol::TaskStatus {
            task_id: task.info.task_id.clone(),
            state,
            source: Source::Master,
            reason: Some(reason),
            message: message.to_owned(),
            agent_id: Some(task.info.agent_id.clone()),
            executor_id: None,
            update_id: None,
            timestamp_ms: now_ms,
            sandbox: task.status.as_ref().and_then(|last| last.sandbox.clone()),
        }
    }
}
