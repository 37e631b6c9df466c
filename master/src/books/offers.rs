//! Offers: allocations turned into offers, and what frameworks do with
//! them.
//!
//! An accept is checked before anything runs: the offers must exist,
//! belong to the framework and be on one agent; the run_tasks ACLs must
//! let the framework's principal run each task as its user (the command's
//! own, else the framework's); each task must be for that agent, have a
//! fresh id and fit in what is left of the offers. A task that fails is
//! answered TASK_ERROR (invalid or not allowed) or TASK_DROPPED (its
//! offers are gone) with the reason, and the rest of the accept proceeds.
//! What the accept leaves unused returns to the allocator with the
//! accept's filters, as a decline does.

use std::collections::BTreeMap;
use std::time::Instant;

use strata_protocol::offers::{MAX_OFFERS_PER_CALL, MAX_TASKS_PER_ACCEPT};
use strata_protocol::{
    AgentId, Filters, FrameworkId, Offer, OfferId, Operation, Reason, Resources, Task, TaskInfo,
    TaskState, ToAgent, ToScheduler,
};

use super::{AgentStatus, Books, Command, Event, OfferEntry};
use crate::allocator::Allocation;

impl Books {
    /// An agent reports an executor ended: its own resources return.
    pub(super) fn executor_exited(
        &mut self,
        now: Instant,
        from: &strata_runtime::Upid,
        framework_id: FrameworkId,
        executor_id: strata_protocol::ExecutorId,
        out: &mut Vec<Command>,
    ) {
        let Some(agent_id) = self.agents_by_pid.get(&from.name()).cloned() else {
            return;
        };
        let released = self.agents.get_mut(&agent_id).and_then(|agent| {
            agent
                .executors
                .remove(&(framework_id.clone(), executor_id.clone()))
        });
        self.tell_scheduler(
            &framework_id,
            ToScheduler::ExecutorLost {
                agent_id: agent_id.clone(),
                executor_id,
            },
            out,
        );
        if let Some(resources) = released {
            self.allocator
                .recover(&framework_id, &agent_id, &resources, None, now);
            self.allocate_agents(now, &[agent_id], out);
        }
    }

    /// Starts a pass of allocation over every agent (or, while one goes
    /// on, makes it go round every agent again from where it is), and
    /// allocates its first slice.
    pub(super) fn allocate_all(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.allocation_left = self.agents.len();
        self.allocate_slice(now, out);
    }

    /// Allocates the next slice of the pass that goes on, if any: at most
    /// [`super::Config::allocation_slice`] agents after the last one,
    /// round to the first.
    pub(super) fn allocate_slice(&mut self, now: Instant, out: &mut Vec<Command>) {
        let wanted = self
            .allocation_left
            .min(self.config.allocation_slice.max(1))
            .min(self.agents.len());
        if wanted == 0 {
            self.allocation_left = 0;
            return;
        }
        let agents: Vec<AgentId> = if wanted == self.agents.len() {
            // Every agent at once, in order.
            self.agents.keys().cloned().collect()
        } else {
            let from = match &self.allocation_cursor {
                Some(last) => std::ops::Bound::Excluded(last),
                None => std::ops::Bound::Unbounded,
            };
            let after = self
                .agents
                .range::<AgentId, _>((from, std::ops::Bound::Unbounded))
                .map(|(id, _)| id);
            after
                .chain(self.agents.keys())
                .take(wanted)
                .cloned()
                .collect()
        };
        self.allocation_left -= agents.len();
        self.allocation_cursor = agents.last().cloned();
        let allocations = self.allocator.allocate_agents(&agents, now);
        self.make_offers(now, allocations, out);
    }

    pub(super) fn allocate_agents(
        &mut self,
        now: Instant,
        agents: &[AgentId],
        out: &mut Vec<Command>,
    ) {
        let allocations = self.allocator.allocate_agents(agents, now);
        self.make_offers(now, allocations, out);
    }

    fn make_offers(&mut self, now: Instant, allocations: Vec<Allocation>, out: &mut Vec<Command>) {
        let mut batches: BTreeMap<FrameworkId, Vec<Offer>> = BTreeMap::new();
        for allocation in allocations {
            let reachable_framework = self
                .frameworks
                .get(&allocation.framework_id)
                .is_some_and(|framework| framework.pid.is_some());
            let agent = self
                .agents
                .get(&allocation.agent_id)
                .filter(|agent| agent.status == AgentStatus::Active);
            let (Some(agent), true) = (agent, reachable_framework) else {
                // Nobody to offer to, or nothing to offer: give it back.
                self.allocator.recover(
                    &allocation.framework_id,
                    &allocation.agent_id,
                    &allocation.resources,
                    None,
                    now,
                );
                continue;
            };
            let id = Books::next_id(&self.id_prefix, "O", &mut self.next_offer);
            let Ok(offer_id) = OfferId::new(id) else {
                continue;
            };
            let offer = Offer {
                id: offer_id.clone(),
                framework_id: allocation.framework_id.clone(),
                agent_id: allocation.agent_id.clone(),
                hostname: agent.info.hostname.clone(),
                agent_address: agent.pid.addr(),
                resources: allocation.resources,
                attributes: agent.info.attributes.clone(),
            };
            if let Some(agent) = self.agents.get_mut(&allocation.agent_id) {
                agent.offers.insert(offer_id.clone());
            }
            if let Some(framework) = self.frameworks.get_mut(&allocation.framework_id) {
                framework.offers.insert(offer_id.clone());
            }
            self.offers.insert(
                offer_id,
                OfferEntry {
                    offer: offer.clone(),
                    created_at: now,
                },
            );
            batches
                .entry(allocation.framework_id)
                .or_default()
                .push(offer);
        }
        for (framework_id, offers) in batches {
            self.tell_scheduler(&framework_id, ToScheduler::Offers(offers), out);
        }
    }

    /// Removes an offer from the books (not from the allocator).
    pub(super) fn take_offer(&mut self, offer_id: &OfferId) -> Option<Offer> {
        let entry = self.offers.remove(offer_id)?;
        let offer = entry.offer;
        if let Some(agent) = self.agents.get_mut(&offer.agent_id) {
            agent.offers.remove(offer_id);
        }
        if let Some(framework) = self.frameworks.get_mut(&offer.framework_id) {
            framework.offers.remove(offer_id);
        }
        Some(offer)
    }

    /// Withdraws an offer: the framework is told, the resources go back.
    fn rescind(&mut self, now: Instant, offer_id: &OfferId, out: &mut Vec<Command>) {
        let Some(offer) = self.take_offer(offer_id) else {
            return;
        };
        self.allocator.recover(
            &offer.framework_id,
            &offer.agent_id,
            &offer.resources,
            None,
            now,
        );
        self.tell_scheduler(
            &offer.framework_id,
            ToScheduler::OfferRescinded {
                offer_id: offer_id.clone(),
            },
            out,
        );
    }

    pub(super) fn rescind_agent_offers(&mut self, agent_id: &AgentId, out: &mut Vec<Command>) {
        let offers: Vec<OfferId> = self
            .agents
            .get(agent_id)
            .map(|agent| agent.offers.iter().cloned().collect())
            .unwrap_or_default();
        // The agent is leaving the allocator or re-entering it whole, so
        // the resources need not be recovered first; `now` is irrelevant.
        for offer_id in offers {
            if let Some(offer) = self.take_offer(&offer_id) {
                self.tell_scheduler(
                    &offer.framework_id,
                    ToScheduler::OfferRescinded { offer_id },
                    out,
                );
            }
        }
    }

    /// Takes back a framework's offers without telling it: it has
    /// disconnected or subscribed again. Their resources go back to the
    /// allocator in one batch (a framework may hold an offer of every
    /// agent).
    pub(super) fn rescind_framework_offers(&mut self, now: Instant, framework_id: &FrameworkId) {
        let returned = self.take_framework_offers(framework_id);
        self.allocator.recover_all(framework_id, &returned, now);
    }

    /// Takes a framework's offers out of the books, not out of the
    /// allocator: what they held, agent by agent.
    pub(super) fn take_framework_offers(
        &mut self,
        framework_id: &FrameworkId,
    ) -> Vec<(AgentId, Resources)> {
        // The framework's own list goes at once, not offer by offer (and
        // a framework without offers is not marked changed).
        if self
            .frameworks
            .get(framework_id)
            .is_none_or(|framework| framework.offers.is_empty())
        {
            return Vec::new();
        }
        let offers = match self.frameworks.get_mut(framework_id) {
            Some(framework) => std::mem::take(&mut framework.offers),
            None => return Vec::new(),
        };
        let mut returned = Vec::with_capacity(offers.len());
        for offer_id in &offers {
            let Some(entry) = self.offers.remove(offer_id) else {
                continue;
            };
            if let Some(agent) = self.agents.get_mut(&entry.offer.agent_id) {
                agent.offers.remove(offer_id);
            }
            returned.push((entry.offer.agent_id, entry.offer.resources));
        }
        returned
    }

    pub(super) fn expire_offers(&mut self, now: Instant, out: &mut Vec<Command>) {
        let Some(timeout) = self.config.offer_timeout else {
            return;
        };
        let expired: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, entry)| entry.created_at + timeout <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for offer_id in expired {
            self.rescind(now, &offer_id, out);
        }
    }

    pub(super) fn decline(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        offer_ids: Vec<OfferId>,
        filters: Filters,
        out: &mut Vec<Command>,
    ) {
        let offer_ids = offer_ids.into_iter().take(MAX_OFFERS_PER_CALL).collect();
        self.give_back(now, framework_id, offer_ids, filters.refuse(), out);
    }

    /// Takes `offer_ids` (those that are the framework's) back from it,
    /// with a refusal of `refuse`, and offers their agents to the others.
    pub(super) fn give_back(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        offer_ids: Vec<OfferId>,
        refuse: std::time::Duration,
        out: &mut Vec<Command>,
    ) {
        let mut agents = Vec::new();
        for offer_id in offer_ids {
            let owned = self
                .offers
                .get(&offer_id)
                .is_some_and(|entry| &entry.offer.framework_id == framework_id);
            if !owned {
                continue;
            }
            if let Some(offer) = self.take_offer(&offer_id) {
                self.allocator.recover(
                    framework_id,
                    &offer.agent_id,
                    &offer.resources,
                    Some(refuse),
                    now,
                );
                agents.push(offer.agent_id);
            }
        }
        // Another framework may want what was declined.
        self.allocate_agents(now, &agents, out);
    }

    pub(super) fn accept(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        offer_ids: Vec<OfferId>,
        operations: Vec<Operation>,
        filters: Filters,
        out: &mut Vec<Command>,
    ) {
        let tasks: Vec<TaskInfo> = operations
            .into_iter()
            .flat_map(|operation| match operation {
                Operation::Launch(tasks) => tasks,
            })
            .collect();
        // Take the offers that are valid; note why the accept cannot use
        // them if some are not.
        let mut offers = Vec::new();
        let mut problem = None;
        for offer_id in offer_ids.iter().take(MAX_OFFERS_PER_CALL) {
            match self.offers.get(offer_id) {
                Some(entry) if &entry.offer.framework_id == framework_id => {
                    offers.push(entry.offer.clone())
                }
                Some(_) => problem = Some(format!("offer {offer_id} belongs to another framework")),
                None => problem = Some(format!("offer {offer_id} is no longer valid")),
            }
        }
        if offers.is_empty() && problem.is_none() {
            problem = Some("the accept names no offers".into());
        }
        let agent_id = offers.first().map(|offer| offer.agent_id.clone());
        if offers
            .iter()
            .any(|offer| Some(&offer.agent_id) != agent_id.as_ref())
        {
            problem = Some("the offers are on different agents".into());
        }
        if tasks.len() > MAX_TASKS_PER_ACCEPT {
            problem = Some(format!("at most {MAX_TASKS_PER_ACCEPT} tasks per accept"));
        }
        for offer in &offers {
            self.take_offer(&offer.id);
        }
        let (Some(agent_id), None) = (agent_id.clone(), problem.clone()) else {
            // Nothing launches: tasks are dropped, valid offers go back.
            let reason = problem.unwrap_or_default();
            for task in &tasks {
                self.answer_task(
                    now,
                    framework_id,
                    task,
                    TaskState::Dropped,
                    Reason::InvalidOffers,
                    &reason,
                    out,
                );
            }
            let agents: Vec<AgentId> = offers.iter().map(|offer| offer.agent_id.clone()).collect();
            for offer in offers {
                self.allocator.recover(
                    framework_id,
                    &offer.agent_id,
                    &offer.resources,
                    Some(filters.refuse()),
                    now,
                );
            }
            self.allocate_agents(now, &agents, out);
            return;
        };
        let mut remaining = Resources::new();
        for offer in &offers {
            remaining.add(&offer.resources);
        }
        let mut seen = std::collections::BTreeSet::new();
        for task in tasks {
            if let Some(reason) = self.oversized(framework_id, &task) {
                self.answer_task(
                    now,
                    framework_id,
                    &task,
                    TaskState::Error,
                    Reason::TaskInvalid,
                    &reason,
                    out,
                );
                continue;
            }
            if let Err(reason) = self.authorize_run(framework_id, &task) {
                self.denied += 1;
                self.answer_task(
                    now,
                    framework_id,
                    &task,
                    TaskState::Error,
                    Reason::TaskUnauthorized,
                    &reason,
                    out,
                );
                continue;
            }
            // A task that starts a new executor also needs the executor's
            // own resources; later tasks of that executor do not.
            let executor = self.new_executor(framework_id, &agent_id, &task);
            let mut needs = task.resources.clone();
            if let Some((_, executor_resources)) = &executor {
                needs.add(executor_resources);
            }
            match self.check_task(framework_id, &agent_id, &task, &needs, &remaining, &seen) {
                Err(reason) => self.answer_task(
                    now,
                    framework_id,
                    &task,
                    TaskState::Error,
                    Reason::TaskInvalid,
                    &reason,
                    out,
                ),
                Ok(()) => {
                    remaining = remaining.checked_sub(&needs).unwrap_or_default();
                    seen.insert(task.task_id.clone());
                    if let (Some((executor_id, resources)), Some(agent)) =
                        (executor, self.agents.get_mut(&agent_id))
                    {
                        agent
                            .executors
                            .insert((framework_id.clone(), executor_id), resources);
                    }
                    self.launch(now, framework_id, &agent_id, task, out);
                }
            }
        }
        if !remaining.is_empty() {
            self.allocator.recover(
                framework_id,
                &agent_id,
                &remaining,
                Some(filters.refuse()),
                now,
            );
        }
        self.allocate_agents(now, &[agent_id], out);
    }

    /// Why `task` may not be kept, if it may not: too large to checkpoint,
    /// or one more than its framework may have unfinished.
    fn oversized(&self, framework_id: &FrameworkId, task: &TaskInfo) -> Option<String> {
        if let Some(reason) = strata_protocol::limits::too_large(
            "task description",
            task,
            strata_protocol::limits::MAX_TASK_INFO_BYTES,
        ) {
            return Some(reason);
        }
        if let Some(Err(reason)) = task.kind.container().map(|container| container.validate()) {
            return Some(format!("invalid container: {reason}"));
        }
        // The books keep a task until its end is acknowledged: that is
        // what the bound counts, at no cost per launch.
        let kept = self.frameworks.get(framework_id)?.tasks.len();
        (kept >= self.config.max_tasks_per_framework).then(|| {
            format!(
                "the framework has {kept} tasks not yet ended and acknowledged, the most the master allows one framework"
            )
        })
    }

    /// Whether the framework's principal may run `task` as the user the
    /// agent will run it as (its command's own, else the framework's), by
    /// the run_tasks ACLs; a refusal names the rule.
    fn authorize_run(&self, framework_id: &FrameworkId, task: &TaskInfo) -> Result<(), String> {
        let Some(framework) = self.frameworks.get(framework_id) else {
            // Nothing launches for a framework the books do not know.
            return Ok(());
        };
        let command = match &task.kind {
            strata_protocol::TaskKind::Command(command) => command,
            strata_protocol::TaskKind::Executor(executor) => &executor.command,
        };
        let user = command.user.as_deref().unwrap_or(&framework.info.user);
        let principal = framework.info.principal.as_deref();
        self.config
            .authorizer
            .may_run_as(principal, user)
            .map_err(|denial| {
                let who = match principal {
                    Some(principal) => format!("principal {principal:?}"),
                    None => "a framework without a principal".to_owned(),
                };
                format!("{who} may not run tasks as user {user:?}: {denial}")
            })
    }

    /// The executor a task would start on the agent, with its resources,
    /// if the task names one the agent does not run yet.
    fn new_executor(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        task: &TaskInfo,
    ) -> Option<(strata_protocol::ExecutorId, Resources)> {
        let strata_protocol::TaskKind::Executor(info) = &task.kind else {
            return None;
        };
        let running = self.agents.get(agent_id).is_some_and(|agent| {
            agent
                .executors
                .contains_key(&(framework_id.clone(), info.executor_id.clone()))
        });
        (!running).then(|| (info.executor_id.clone(), info.resources.clone()))
    }

    fn check_task(
        &self,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        task: &TaskInfo,
        needs: &Resources,
        remaining: &Resources,
        seen: &std::collections::BTreeSet<strata_protocol::TaskId>,
    ) -> Result<(), String> {
        if &task.agent_id != agent_id {
            return Err(format!(
                "task is for agent {} but the offers are on {agent_id}",
                task.agent_id
            ));
        }
        if task.resources.is_empty() {
            return Err("task asks for no resources".into());
        }
        let active = self
            .frameworks
            .get(framework_id)
            .and_then(|framework| framework.tasks.get(&task.task_id))
            .is_some_and(|existing| !existing.state.is_terminal());
        if active || seen.contains(&task.task_id) {
            return Err(format!("task id {} is already in use", task.task_id));
        }
        if !remaining.contains(needs) {
            return Err(format!(
                "task needs {needs} but the offers have {remaining} left"
            ));
        }
        Ok(())
    }

    fn launch(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        agent_id: &AgentId,
        info: TaskInfo,
        out: &mut Vec<Command>,
    ) {
        let timestamp_ms = self.wall_ms(now);
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let task = Task {
            info: info.clone(),
            framework_id: framework_id.clone(),
            state: TaskState::Staging,
            status: None,
        };
        framework.tasks.insert(info.task_id.clone(), task);
        framework.record(
            &info.task_id,
            super::Transition {
                state: TaskState::Staging,
                timestamp_ms,
                message: String::new(),
            },
        );
        let framework_info = framework.info.clone();
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        agent
            .tasks
            .insert((framework_id.clone(), info.task_id.clone()));
        self.framework_agents
            .entry(framework_id.clone())
            .or_default()
            .insert(agent_id.clone());
        out.push(Command::Log(Event::TaskLaunched {
            framework_id: framework_id.clone(),
            task_id: info.task_id.clone(),
            agent_id: agent_id.clone(),
        }));
        out.push(Command::ToAgent(
            agent.pid.clone(),
            ToAgent::RunTask {
                framework: Box::new(framework_info),
                task: Box::new(info),
            },
        ));
    }
}
