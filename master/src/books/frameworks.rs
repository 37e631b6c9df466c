//! Frameworks: subscription, disconnection, failover and removal.
//!
//! A scheduler subscribes without an id (a new framework) or with the id
//! the master gave it (a failover), under the principal of its
//! certificate, in roles the register_frameworks ACLs allow that principal
//! (checked on every subscription, failovers included). Every later call
//! must come from the process that subscribed, for its own framework. A
//! scheduler that disconnects keeps its tasks for its `failover_timeout`
//! (zero: removed at once, Mesos's default); meanwhile it is offered
//! nothing.

use std::time::Instant;

use strata_protocol::{
    FrameworkId, FrameworkInfo, OfferConstraint, OfferId, TaskId, ToAgent, ToMaster, ToScheduler,
};
use strata_runtime::Upid;

use super::{Books, Command, Event, FrameworkEntry};

/// Most standing filters one framework may set.
pub(super) const MAX_CONSTRAINTS: usize = 64;

fn valid_role(role: &str) -> bool {
    role == strata_protocol::UNRESERVED
        || (!role.is_empty()
            && role.len() <= 128
            && !role.starts_with('.')
            && role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
}

/// A framework's description as the books keep it: in the default role
/// when it names none, its failover timeout within the master's bound;
/// refused when it is too large to keep.
fn prepared(mut info: FrameworkInfo) -> Result<FrameworkInfo, String> {
    if info.roles.is_empty() {
        info.roles.push(strata_protocol::UNRESERVED.to_owned());
    }
    info.failover_timeout = info.failover_timeout();
    match strata_protocol::limits::too_large(
        "framework description",
        &info,
        strata_protocol::limits::MAX_FRAMEWORK_INFO_BYTES,
    ) {
        Some(reason) => Err(reason),
        None => Ok(info),
    }
}

impl Books {
    pub(super) fn subscribe(
        &mut self,
        now: Instant,
        pid: Upid,
        principal: &str,
        info: FrameworkInfo,
        constraints: Vec<OfferConstraint>,
        out: &mut Vec<Command>,
    ) {
        let mut info = match prepared(info) {
            Ok(info) => info,
            Err(reason) => return self.refuse_request(&pid, reason, out),
        };
        let known = info
            .id
            .as_ref()
            .is_some_and(|id| self.frameworks.contains_key(id));
        if !known {
            let owned = self
                .frameworks
                .values()
                .filter(|framework| {
                    framework.removing.is_none()
                        && framework.info.principal.as_deref() == Some(principal)
                })
                .count();
            if owned >= self.config.max_frameworks_per_principal {
                let reason = format!(
                    "principal {principal:?} has {owned} frameworks, the most the master allows one principal"
                );
                return self.refuse_request(&pid, reason, out);
            }
        }
        // The principal is the certificate's; one named in the info must
        // agree, and a framework id belongs to the principal that made it.
        match &info.principal {
            Some(named) if named != principal => {
                self.denied += 1;
                let reason = format!(
                    "the framework names principal {named:?} but its certificate is for principal {principal:?}"
                );
                return self.refuse_request(&pid, reason, out);
            }
            _ => info.principal = Some(principal.to_owned()),
        }
        if let Some(owner) = info
            .id
            .as_ref()
            .and_then(|id| self.frameworks.get(id))
            .and_then(|framework| framework.info.principal.as_deref())
            .filter(|owner| *owner != principal)
        {
            self.denied += 1;
            let reason = format!(
                "framework {} belongs to principal {owner:?}; principal {principal:?} may not take it over",
                info.id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            return self.refuse_request(&pid, reason, out);
        }
        let refusal = if let Some(role) = info.roles.iter().find(|role| !valid_role(role)) {
            Some(format!("invalid role {role:?}"))
        } else if constraints.len() > MAX_CONSTRAINTS {
            Some(format!(
                "at most {MAX_CONSTRAINTS} standing filters are allowed"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.refuse_request(&pid, reason, out);
            return;
        }
        if let Err(reason) = self.authorize_roles(principal, &info.roles) {
            self.denied += 1;
            return self.refuse_request(&pid, reason, out);
        }
        let framework_id = match info.id.clone() {
            Some(id)
                if self.removed_frameworks.contains(&id)
                    || self
                        .frameworks
                        .get(&id)
                        .is_some_and(|framework| framework.removing.is_some()) =>
            {
                let reason = format!("framework {id} was removed; subscribe as a new framework");
                return self.refuse_request(&pid, reason, out);
            }
            // A master with a registry knows every framework it did not
            // remove: an id it does not know was never issued, or was
            // removed long enough ago to be forgotten, and is nobody's
            // to take.
            Some(id) if self.knows_every_framework && !self.frameworks.contains_key(&id) => {
                self.denied += 1;
                let reason = format!(
                    "framework {id} is not known to this master; subscribe as a new framework"
                );
                return self.refuse_request(&pid, reason, out);
            }
            Some(id) => id,
            None => loop {
                let id = Books::next_id(&self.id_prefix, "F", &mut self.next_framework);
                match FrameworkId::new(id) {
                    Ok(id)
                        if self.frameworks.contains_key(&id)
                            || self.removed_frameworks.contains(&id) => {}
                    Ok(id) => break id,
                    Err(error) => return self.refuse_request(&pid, error.to_string(), out),
                }
            },
        };
        info.id = Some(framework_id.clone());
        match self.frameworks.get_mut(&framework_id) {
            Some(framework) => {
                // A failover: the new scheduler takes over. Its role stays
                // the one the allocator knows.
                if let Some(old) = framework.pid.replace(pid.clone()) {
                    self.frameworks_by_pid.remove(&old.name());
                    if !old.same_name(&pid) {
                        out.push(Command::ToScheduler(
                            old,
                            ToScheduler::Error {
                                message: "another scheduler took over this framework".into(),
                            },
                        ));
                    }
                }
                framework.failover_deadline = None;
                framework.info.principal = info.principal.clone();
                framework.constraints = constraints.clone();
                framework.info.failover_timeout = info.failover_timeout;
                framework.info.capabilities = info.capabilities.clone();
                // Offers made to the previous scheduler are void: their
                // resources go back to be offered to this one.
                self.rescind_framework_offers(now, &framework_id);
                self.allocator.set_constraints(&framework_id, constraints);
                self.allocator.revive(&framework_id);
                out.push(Command::Log(Event::FrameworkResubscribed {
                    framework_id: framework_id.clone(),
                }));
            }
            None => {
                self.allocator
                    .add_framework(framework_id.clone(), info.role().to_owned());
                self.allocator
                    .set_constraints(&framework_id, constraints.clone());
                out.push(Command::Log(Event::FrameworkRegistered {
                    framework_id: framework_id.clone(),
                    name: info.name.clone(),
                }));
                self.frameworks.insert(
                    framework_id.clone(),
                    FrameworkEntry {
                        info,
                        pid: Some(pid.clone()),
                        failover_deadline: None,
                        constraints,
                        tasks: Default::default(),
                        completed: Default::default(),
                        history: Default::default(),
                        filed: 0,
                        offers: Default::default(),
                        removing: None,
                    },
                );
            }
        }
        self.frameworks_by_pid
            .insert(pid.name(), framework_id.clone());
        self.registry_changed();
        out.push(Command::Link(pid.clone()));
        out.push(Command::ToScheduler(
            pid,
            ToScheduler::Subscribed {
                framework_id,
                epoch: self.master_epoch(),
            },
        ));
        self.allocate_all(now, out);
    }

    /// Whether `principal` may register a framework in every one of
    /// `roles` (the register_frameworks ACLs); a refusal names the rule.
    fn authorize_roles(&self, principal: &str, roles: &[String]) -> Result<(), String> {
        roles.iter().try_for_each(|role| {
            self.config
                .authorizer
                .may_register(Some(principal), role)
                .map_err(|denial| {
                    format!(
                        "principal {principal:?} may not register a framework in role {role:?}: {denial}"
                    )
                })
        })
    }

    pub(super) fn refuse_request(&self, pid: &Upid, reason: String, out: &mut Vec<Command>) {
        out.push(Command::Log(Event::RequestRefused {
            from: pid.clone(),
            reason: reason.clone(),
        }));
        out.push(Command::ToScheduler(
            pid.clone(),
            ToScheduler::Error { message: reason },
        ));
    }

    /// The framework a scheduler call is for, if it comes from that
    /// framework's current scheduler.
    pub(super) fn framework_of(
        &self,
        from: &Upid,
        message: &ToMaster,
        out: &mut Vec<Command>,
    ) -> Option<FrameworkId> {
        let claimed = match message {
            ToMaster::Accept { framework_id, .. }
            | ToMaster::Decline { framework_id, .. }
            | ToMaster::Revive { framework_id }
            | ToMaster::Suppress { framework_id }
            | ToMaster::SetConstraints { framework_id, .. }
            | ToMaster::Kill { framework_id, .. }
            | ToMaster::Acknowledge { framework_id, .. }
            | ToMaster::Reconcile { framework_id, .. }
            | ToMaster::Teardown { framework_id }
            | ToMaster::FrameworkMessage { framework_id, .. }
            | ToMaster::ShutdownExecutor { framework_id, .. }
            | ToMaster::UpdateFramework { framework_id, .. } => framework_id,
            _ => return None,
        };
        let current = self
            .frameworks
            .get(claimed)
            .and_then(|framework| framework.pid.as_ref())
            .is_some_and(|pid| pid.same_name(from));
        if current {
            Some(claimed.clone())
        } else {
            self.refuse_request(
                from,
                format!("framework {claimed} is not subscribed from this scheduler"),
                out,
            );
            None
        }
    }

    pub(super) fn disconnect_framework(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        let timeout = framework.info.failover_timeout;
        if let Some(pid) = framework.pid.take() {
            self.frameworks_by_pid.remove(&pid.name());
        }
        if timeout.is_zero() {
            self.remove_framework(now, framework_id, "its scheduler disconnected", out);
            return;
        }
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.failover_deadline = Some(strata_protocol::frameworks::deadline(now, timeout));
        }
        out.push(Command::Log(Event::FrameworkDisconnected {
            framework_id: framework_id.clone(),
        }));
        self.allocator.suppress(framework_id);
        self.rescind_framework_offers(now, framework_id);
    }

    pub(super) fn expire_failovers(&mut self, now: Instant, out: &mut Vec<Command>) {
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, framework)| {
                framework
                    .failover_deadline
                    .is_some_and(|deadline| deadline <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for framework_id in expired {
            self.remove_framework(now, &framework_id, "its failover timeout passed", out);
        }
    }

    /// Changes a framework's description in place: its name, failover
    /// timeout and capabilities. Who it is (user, principal), its roles
    /// and whether it checkpoints are fixed; a change to those is refused
    /// naming it.
    pub(super) fn update_framework(
        &mut self,
        from: &Upid,
        framework_id: &FrameworkId,
        info: FrameworkInfo,
        out: &mut Vec<Command>,
    ) {
        let info = match prepared(info) {
            Ok(info) => info,
            Err(reason) => return self.refuse_request(from, reason, out),
        };
        let Some(framework) = self.frameworks.get(framework_id) else {
            return;
        };
        let current = &framework.info;
        let refusal = if info.id.as_ref().is_some_and(|id| id != framework_id) {
            Some("framework_info.id names another framework".to_owned())
        } else if info.user != current.user {
            Some("a framework's user cannot change".to_owned())
        } else if info.principal.is_some() && info.principal != current.principal {
            Some("a framework's principal cannot change".to_owned())
        } else if info.checkpoint != current.checkpoint {
            Some("whether a framework checkpoints cannot change".to_owned())
        } else if info.roles != current.roles {
            Some(
                "changing a framework's roles is not supported; tear it down and subscribe again"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.refuse_request(from, format!("UPDATE_FRAMEWORK refused: {reason}"), out);
        }
        if let Some(framework) = self.frameworks.get_mut(framework_id) {
            framework.info.name = info.name;
            framework.info.failover_timeout = info.failover_timeout;
            framework.info.capabilities = info.capabilities;
        }
        self.registry_changed();
        out.push(Command::Log(Event::FrameworkUpdated {
            framework_id: framework_id.clone(),
        }));
    }

    /// Removes a framework: at once it gets no more offers, its scheduler
    /// is no longer its (whatever it sends is refused) and it cannot
    /// subscribe again; then its offers go back, its tasks end KILLED and
    /// the agents it used are told to shut it down, at most
    /// [`super::Config::removal_slice`] offers, tasks and agents an input (the
    /// first slice now, the rest in [`Input::Continue`]s), so that a
    /// framework with tens of thousands of tasks does not hold the master;
    /// last, it is filed among the completed frameworks.
    ///
    /// [`Input::Continue`]: super::Input::Continue
    pub(super) fn remove_framework(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        reason: &str,
        out: &mut Vec<Command>,
    ) {
        let Some(framework) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if framework.removing.is_some() {
            return;
        }
        framework.removing = Some(reason.to_owned());
        framework.failover_deadline = None;
        if let Some(pid) = framework.pid.take() {
            self.frameworks_by_pid.remove(&pid.name());
        }
        self.allocator.suppress(framework_id);
        if self.removed_frameworks.len() == super::REMOVED_FRAMEWORKS_KEPT {
            self.removed_frameworks.pop_front();
        }
        self.removed_frameworks.push_back(framework_id.clone());
        self.registry_changed();
        if !self.remove_slice(now, framework_id, out) {
            self.removing.push_back(framework_id.clone());
        }
    }

    /// The next slice of the removals under way: the first framework
    /// being removed goes on.
    pub(super) fn continue_removals(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Some(framework_id) = self.removing.front().cloned()
            && self.remove_slice(now, &framework_id, out)
        {
            self.removing.pop_front();
        }
    }

    /// Goes on removing a framework for at most
    /// [`super::Config::removal_slice`] of its offers, its tasks and the
    /// agents it used; whether it is gone.
    fn remove_slice(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(reason) = self
            .frameworks
            .get(framework_id)
            .and_then(|framework| framework.removing.clone())
        else {
            return true;
        };
        let message = format!("its framework was removed: {reason}");
        let slice = self.config.removal_slice.max(1);
        let mut budget = slice;
        // Its offers go back first, without telling it (nothing it sends
        // is taken any more), in one batch for the allocator.
        let offers: Vec<OfferId> = self
            .frameworks
            .get(framework_id)
            .map(|framework| framework.offers.iter().take(budget).cloned().collect())
            .unwrap_or_default();
        budget -= offers.len();
        let returned: Vec<_> = offers
            .iter()
            .filter_map(|offer_id| self.take_offer(offer_id))
            .map(|offer| (offer.agent_id, offer.resources))
            .collect();
        self.allocator.recover_all(framework_id, &returned, now);
        // The agents it used, one by one: its tasks there end KILLED, its
        // executors' and tasks' resources come back, and the agent shuts
        // it down.
        while budget > 0 {
            let Some(agent_id) = self
                .framework_agents
                .get_mut(framework_id)
                .and_then(|agents| agents.pop_first())
            else {
                break;
            };
            let Some(agent) = self.agents.get(&agent_id) else {
                budget -= 1;
                continue;
            };
            let pid = agent.pid.clone();
            let mut tasks: Vec<TaskId> = agent
                .tasks
                .iter()
                .filter(|(owner, _)| owner == framework_id)
                .map(|(_, task_id)| task_id.clone())
                .collect();
            let executors: Vec<_> = agent
                .executors
                .keys()
                .filter(|(owner, _)| owner == framework_id)
                .cloned()
                .collect();
            // An agent holding more of its tasks than this input has left
            // starts the next slice instead; one holding more than a whole
            // slice comes back in the next for the rest (and is told again
            // then, which it takes as it took the first).
            let more = tasks.len() > budget;
            if more && budget < slice {
                if let Some(agents) = self.framework_agents.get_mut(framework_id) {
                    agents.insert(agent_id);
                }
                return false;
            }
            if !tasks.is_empty() || !executors.is_empty() {
                out.push(Command::ToAgent(
                    pid,
                    ToAgent::ShutdownFramework {
                        framework_id: framework_id.clone(),
                    },
                ));
            }
            tasks.truncate(budget);
            // An agent costs a task's share, or its tasks theirs.
            budget -= tasks.len().max(1);
            self.kill_all(now, framework_id, tasks, &message, out);
            if more {
                if let Some(agents) = self.framework_agents.get_mut(framework_id) {
                    agents.insert(agent_id);
                }
                return false;
            }
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.kills.retain(|(owner, _)| owner != framework_id);
                for key in executors {
                    if let Some(resources) = agent.executors.remove(&key) {
                        self.allocator
                            .recover(framework_id, &agent_id, &resources, None, now);
                    }
                }
            }
        }
        if budget == 0 {
            return false;
        }
        self.framework_agents.remove(framework_id);
        // Tasks on no agent it used (none, as the books are kept) end the
        // same way.
        let left: Vec<TaskId> = self
            .frameworks
            .get(framework_id)
            .map(|framework| framework.tasks.keys().take(budget).cloned().collect())
            .unwrap_or_default();
        if !left.is_empty() {
            let before = self.frameworks.get(framework_id).map(|f| f.tasks.len());
            self.kill_all(now, framework_id, left, &message, out);
            // Every state short of an end can become KILLED, so this
            // always makes progress; were a task ever stuck, the framework
            // would be filed all the same rather than never.
            if self.frameworks.get(framework_id).map(|f| f.tasks.len()) != before {
                return false;
            }
        }
        self.file_removed(framework_id, reason, out);
        true
    }

    /// Ends tasks of a framework being removed KILLED (as Mesos reports
    /// them; their agents kill them), freeing what they held.
    fn kill_all(
        &mut self,
        now: Instant,
        framework_id: &FrameworkId,
        tasks: Vec<TaskId>,
        message: &str,
        out: &mut Vec<Command>,
    ) {
        for task_id in tasks {
            self.set_task_state(
                now,
                framework_id,
                &task_id,
                strata_protocol::TaskState::Killed,
                strata_protocol::Reason::FrameworkRemoved,
                message,
                out,
            );
        }
    }

    /// Files a framework whose tasks all ended among the completed ones,
    /// kept a while for operators: what it ran and how that ended.
    fn file_removed(&mut self, framework_id: &FrameworkId, reason: String, out: &mut Vec<Command>) {
        let Some(mut kept) = self.frameworks.remove(framework_id) else {
            return;
        };
        // The registry left it out when its removal began.
        self.allocator.remove_framework(framework_id);
        kept.tasks.clear();
        kept.offers.clear();
        let ended: std::collections::BTreeSet<_> = kept
            .completed
            .iter()
            .map(|task| task.info.task_id.clone())
            .collect();
        kept.history.retain(|task_id, _| ended.contains(task_id));
        if self.completed_frameworks.len() == super::COMPLETED_FRAMEWORKS_KEPT {
            self.completed_frameworks.pop_front();
        }
        self.completed_frameworks.push_back(kept);
        out.push(Command::Log(Event::FrameworkRemoved {
            framework_id: framework_id.clone(),
            reason,
        }));
    }
}
