//! What operators may do beyond killing a task: tear a framework down
//! and mark an agent gone (Apache Mesos's TEARDOWN and MARK_AGENT_GONE
//! operator calls). Both need a certificate (or, over HTTP, a principal)
//! with the operator role, and the ACLs' leave: `teardown_frameworks`,
//! `mark_agents_gone`.

use std::time::Instant;

use strata_protocol::{AgentId, FrameworkId, Reason, TaskState, ToAgent, ToScheduler};
use strata_runtime::Upid;

use super::{Books, Command, Event};

/// Agents marked gone that the books remember (and refuse), oldest
/// forgotten first.
pub const GONE_AGENTS_KEPT: usize = 100_000;

impl Books {
    /// Tears `framework_id` down for the operator `principal`.
    pub(super) fn operator_teardown(
        &mut self,
        now: Instant,
        from: &Upid,
        principal: Option<&str>,
        framework_id: &FrameworkId,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get(framework_id) else {
            return self.refuse_request(
                from,
                format!("there is no framework {framework_id} to tear down"),
                out,
            );
        };
        if let Err(denial) = self
            .config
            .authorizer
            .may_teardown(principal, framework.info.principal.as_deref())
        {
            self.denied += 1;
            let reason = format!(
                "{} may not tear down framework {framework_id}: {denial}",
                principal.unwrap_or("an unauthenticated operator")
            );
            return self.refuse_request(from, reason, out);
        }
        let reason = format!(
            "torn down by the operator {}",
            principal.unwrap_or("(unauthenticated)")
        );
        if let Some(pid) = framework.pid.clone() {
            out.push(Command::ToScheduler(
                pid,
                ToScheduler::Error {
                    message: format!("framework {framework_id} was {reason}"),
                },
            ));
        }
        self.remove_framework(now, framework_id, &reason, out);
    }

    /// Marks `agent_id` gone: its tasks end TASK_GONE_BY_OPERATOR, the
    /// agent is told to stop and forgotten, and its id is never admitted
    /// again.
    pub(super) fn mark_agent_gone(
        &mut self,
        now: Instant,
        from: &Upid,
        principal: Option<&str>,
        agent_id: &AgentId,
        out: &mut Vec<Command>,
    ) {
        if self.gone_agents.contains(agent_id) {
            // Marked already: nothing more to do.
            return;
        }
        let Some(agent) = self.agents.get(agent_id) else {
            return self.refuse_request(from, format!("there is no agent {agent_id}"), out);
        };
        if let Err(denial) = self
            .config
            .authorizer
            .may_mark_agent_gone(principal, agent_id.as_str())
        {
            self.denied += 1;
            let reason = format!(
                "{} may not mark agent {agent_id} gone: {denial}",
                principal.unwrap_or("an unauthenticated operator")
            );
            return self.refuse_request(from, reason, out);
        }
        let active = agent.status == super::AgentStatus::Active;
        let pid = agent.pid.clone();
        let tasks: Vec<_> = agent.tasks.iter().cloned().collect();
        self.rescind_agent_offers(agent_id, out);
        for (framework_id, task_id) in tasks {
            if active {
                out.push(Command::ToAgent(
                    pid.clone(),
                    ToAgent::KillTask {
                        framework_id: framework_id.clone(),
                        task_id: task_id.clone(),
                    },
                ));
            }
            self.set_task_state(
                now,
                &framework_id,
                &task_id,
                TaskState::GoneByOperator,
                Reason::AgentRemovedByOperator,
                "an operator marked its agent gone",
                out,
            );
        }
        if active {
            self.allocator.remove_agent(agent_id);
            out.push(Command::ToAgent(
                pid.clone(),
                ToAgent::RegistrationRefused {
                    reason: format!("agent {agent_id} was marked gone by an operator"),
                },
            ));
        }
        for agents in self.framework_agents.values_mut() {
            agents.remove(agent_id);
        }
        if let Some(agent) = self.agents.remove(agent_id) {
            // Its address may be another agent's by now.
            let pid = agent.pid.name();
            if self.agents_by_pid.get(&pid) == Some(agent_id) {
                self.agents_by_pid.remove(&pid);
            }
            if let Some(count) = self.agents_per_certificate.get_mut(&agent.certificate_name) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.agents_per_certificate.remove(&agent.certificate_name);
                }
            }
        }
        self.recovering_agents.remove(agent_id);
        self.remember_gone(agent_id.clone());
        self.registry_agent_changed(agent_id);
        self.tell_agent_lost(agent_id, out);
        out.push(Command::Log(Event::AgentGone {
            from: from.clone(),
            agent_id: agent_id.clone(),
        }));
    }

    /// Remembers that `agent_id` is gone, forgetting the oldest beyond
    /// [`GONE_AGENTS_KEPT`].
    pub(super) fn remember_gone(&mut self, agent_id: AgentId) {
        if self.gone_agents.insert(agent_id.clone()) {
            self.gone_order.push_back(agent_id);
        }
        while self.gone_order.len() > GONE_AGENTS_KEPT {
            if let Some(forgotten) = self.gone_order.pop_front() {
                self.gone_agents.remove(&forgotten);
            }
        }
    }

    /// Whether an operator marked `agent_id` gone.
    pub fn is_gone(&self, agent_id: &AgentId) -> bool {
        self.gone_agents.contains(agent_id)
    }

    /// Why `agent_id` may not (re-)register, if an operator marked it
    /// gone.
    pub(super) fn gone_reason(&self, agent_id: &AgentId) -> Option<String> {
        self.gone_agents
            .contains(agent_id)
            .then(|| format!("agent {agent_id} was marked gone by an operator"))
    }
}
