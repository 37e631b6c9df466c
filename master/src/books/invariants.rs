//! The books' invariants, checked by tests after every step and by the
//! simulation after every input a master handles
//! ([`Books::check_invariants`]).
//!
//! - On every agent, outstanding offers plus non-terminal tasks plus
//!   running executors never exceed the agent's total, and no resource (a
//!   port, say) is in two of them: subtracting each from the total in turn
//!   must always succeed.
//! - Offers and tasks are indexed consistently: every offer is listed
//!   under its agent and framework, and a framework lists only its own
//!   outstanding offers; every task an agent lists exists and is not
//!   terminal.
//! - An unreachable agent has no outstanding offers; an active one is
//!   in the schedule of pings at the time of its next ping.
//! - Every framework with tasks, kills or executors on an agent has the
//!   agent among those it used, which name only known frameworks and
//!   agents.
//! - The allocator's free resources of an agent are exactly what neither
//!   its tasks and executors hold nor its offers.
//! - A framework being removed is queued for its next slice and has no
//!   scheduler and no failover deadline; the queue names only frameworks
//!   being removed, each once.

use super::{AgentStatus, Books};

pub(crate) fn check(books: &Books) -> Result<(), String> {
    if let Some(wrong) = books.registry_entries_wrong() {
        return Err(wrong);
    }
    for (agent_id, agent) in &books.agents {
        let mut left = agent.info.resources.clone();
        for offer_id in &agent.offers {
            let entry = books
                .offers
                .get(offer_id)
                .ok_or_else(|| format!("agent {agent_id} lists unknown offer {offer_id}"))?;
            if &entry.offer.agent_id != agent_id {
                return Err(format!("offer {offer_id} is listed under the wrong agent"));
            }
            left = left.checked_sub(&entry.offer.resources).ok_or_else(|| {
                format!(
                    "agent {agent_id}: offer {offer_id} ({}) exceeds what is left ({left})",
                    entry.offer.resources
                )
            })?;
        }
        for (framework_id, task_id) in &agent.tasks {
            let task = books
                .frameworks
                .get(framework_id)
                .and_then(|framework| framework.tasks.get(task_id))
                .ok_or_else(|| {
                    format!("agent {agent_id} lists unknown task {framework_id}/{task_id}")
                })?;
            if task.state.is_terminal() {
                return Err(format!("agent {agent_id} lists terminal task {task_id}"));
            }
            left = left.checked_sub(&task.info.resources).ok_or_else(|| {
                format!(
                    "agent {agent_id}: task {task_id} ({}) exceeds what is left ({left})",
                    task.info.resources
                )
            })?;
        }
        for ((framework_id, executor_id), resources) in &agent.executors {
            left = left.checked_sub(resources).ok_or_else(|| {
                format!("agent {agent_id}: executor {framework_id}/{executor_id} ({resources}) exceeds what is left ({left})")
            })?;
        }
        if let Some(free) = books.allocator.free(agent_id)
            && free != left
        {
            return Err(format!(
                "agent {agent_id}: the allocator has {free} free, the books leave {left}"
            ));
        }
        let held = agent
            .tasks
            .iter()
            .chain(&agent.kills)
            .map(|(framework_id, _)| framework_id)
            .chain(agent.executors.keys().map(|(framework_id, _)| framework_id));
        for framework_id in held {
            if !books
                .framework_agents
                .get(framework_id)
                .is_some_and(|agents| agents.contains(agent_id))
            {
                return Err(format!(
                    "agent {agent_id} holds something of {framework_id}, which does not list it among the agents it used"
                ));
            }
        }
        if agent.status == AgentStatus::Active
            && !books
                .pings
                .contains(&(agent.next_ping_at, agent_id.clone()))
        {
            return Err(format!(
                "active agent {agent_id} is not in the schedule of pings"
            ));
        }
        if matches!(agent.status, AgentStatus::Unreachable { .. }) && !agent.offers.is_empty() {
            return Err(format!(
                "unreachable agent {agent_id} has outstanding offers"
            ));
        }
    }
    for (offer_id, entry) in &books.offers {
        let listed_by_agent = books
            .agents
            .get(&entry.offer.agent_id)
            .is_some_and(|agent| agent.offers.contains(offer_id));
        let listed_by_framework = books
            .frameworks
            .get(&entry.offer.framework_id)
            .is_some_and(|framework| framework.offers.contains(offer_id));
        if !listed_by_agent || !listed_by_framework {
            return Err(format!(
                "offer {offer_id} is not indexed under its agent and framework"
            ));
        }
    }
    for (framework_id, framework) in books.frameworks.iter() {
        if let Some(offer_id) = framework.offers.iter().find(|offer_id| {
            books
                .offers
                .get(offer_id)
                .is_none_or(|entry| &entry.offer.framework_id != framework_id)
        }) {
            return Err(format!(
                "framework {framework_id} lists offer {offer_id}, not an outstanding offer of its own"
            ));
        }
    }
    for (framework_id, agents) in &books.framework_agents {
        if !books.frameworks.contains_key(framework_id) {
            return Err(format!(
                "removed framework {framework_id} still lists agents it used"
            ));
        }
        if let Some(agent_id) = agents.iter().find(|id| !books.agents.contains_key(id)) {
            return Err(format!(
                "framework {framework_id} lists unknown agent {agent_id} as used"
            ));
        }
    }
    for framework_id in &books.removing {
        if books
            .removing
            .iter()
            .filter(|id| *id == framework_id)
            .count()
            > 1
        {
            return Err(format!(
                "framework {framework_id} is queued for removal twice"
            ));
        }
    }
    for (framework_id, framework) in &books.frameworks {
        let queued = books.removing.contains(framework_id);
        if framework.removing.is_some() != queued {
            return Err(format!(
                "framework {framework_id}: being removed is {}, queued for removal is {queued}",
                framework.removing.is_some()
            ));
        }
        if framework.removing.is_some()
            && (framework.pid.is_some() || framework.failover_deadline.is_some())
        {
            return Err(format!(
                "framework {framework_id} being removed still has a scheduler or a failover deadline"
            ));
        }
        for (task_id, task) in &framework.tasks {
            if task.state.is_terminal() {
                return Err(format!(
                    "terminal task {framework_id}/{task_id} is still active"
                ));
            }
        }
    }
    if let Some(framework_id) = books
        .removing
        .iter()
        .find(|id| !books.frameworks.contains_key(id))
    {
        return Err(format!(
            "framework {framework_id} is queued for removal but unknown"
        ));
    }
    Ok(())
}

impl Books {
    /// Checks the invariants above; the first violation found, if any.
    pub fn check_invariants(&self) -> Result<(), String> {
        check(self)
    }
}
