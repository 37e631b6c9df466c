//! The registry's side of the books: what is persisted, and how a
//! restarted master takes it back.
//!
//! Every change to what the registry holds (an agent admitted or lost, a
//! framework subscribed or removed) bumps a counter the shell watches to
//! know when to write [`Books::registry`]. A restarted master calls
//! [`Books::recover`]: its agents wait, unreachable, for up to
//! `agent_reregister_timeout` to re-register (Mesos's
//! `--agent_reregister_timeout`); those that do not are then recorded as
//! unreachable. Its frameworks wait, disconnected, for their schedulers
//! to subscribe again, for at least as long. While agents may still come
//! back, reconciliation leaves tasks the master does not know unanswered
//! (the scheduler asks again) rather than calling them lost.

use std::time::Instant;

use super::{AgentStatus, Books, Command, Event, FrameworkEntry};
use crate::registry::{RegisteredAgent, Registry};

impl Books {
    /// The epoch this master's messages carry.
    pub fn master_epoch(&self) -> u64 {
        self.master_epoch
    }

    /// Counts changes to what [`Books::registry`] returns.
    pub fn registry_changes(&self) -> u64 {
        self.registry_changes
    }

    pub(super) fn registry_changed(&mut self) {
        self.registry_changes += 1;
    }

    /// What the registry holds of `agent_id` changed (it was admitted,
    /// lost, recovered or removed).
    pub(super) fn registry_agent_changed(&mut self, agent_id: &strata_protocol::AgentId) {
        self.registry_entry_stale(agent_id);
        self.registry_changed();
    }

    /// `agent_id`'s entry is to be redone at the next write.
    fn registry_entry_stale(&mut self, agent_id: &strata_protocol::AgentId) {
        if self.registered_kept {
            self.registered_stale.insert(agent_id.clone());
        }
    }

    /// `agent_id`'s entry in the registry, worked out from the books.
    fn registry_entry(&self, agent_id: &strata_protocol::AgentId) -> Option<RegisteredAgent> {
        let agent = self.agents.get(agent_id)?;
        Some(RegisteredAgent {
            info: agent.info.clone(),
            pid: agent.pid.clone(),
            certificate_name: agent.certificate_name.clone(),
            unreachable: matches!(agent.status, AgentStatus::Unreachable { .. })
                && !self.recovering_agents.contains(agent_id),
        })
    }

    /// The agents' entries kept for the registry differ from the books'
    /// (a change to an agent that did not say so): checked with the
    /// other invariants.
    pub(super) fn registry_entries_wrong(&self) -> Option<String> {
        if !self.registered_kept {
            return None;
        }
        if let Some(gone) = self.registered.keys().find(|agent_id| {
            !self.agents.contains_key(*agent_id) && !self.registered_stale.contains(*agent_id)
        }) {
            return Some(format!(
                "the registry keeps an entry of agent {gone}, which the books do not hold"
            ));
        }
        for agent_id in self.agents.keys() {
            if self.registered_stale.contains(agent_id) {
                continue;
            }
            let kept = self.registered.get(agent_id).map(|kept| kept.as_ref());
            if kept != self.registry_entry(agent_id).as_ref() {
                return Some(format!(
                    "the registry's entry of agent {agent_id} is not what the books say"
                ));
            }
        }
        None
    }

    /// Whether agents of the previous master may still re-register.
    pub fn recovering(&self) -> bool {
        !self.recovering_agents.is_empty()
    }

    /// What must survive a restart, now: the agents' entries that
    /// changed since the last call are redone, the others shared.
    pub fn registry(&mut self) -> Registry {
        if !self.registered_kept {
            self.registered_kept = true;
            self.registered_stale = self.agents.keys().cloned().collect();
        }
        for agent_id in std::mem::take(&mut self.registered_stale) {
            match self.registry_entry(&agent_id) {
                Some(entry) => {
                    self.registered.insert(agent_id, std::sync::Arc::new(entry));
                }
                None => {
                    self.registered.remove(&agent_id);
                }
            }
        }
        let mut registry = Registry::empty();
        registry.epoch = self.master_epoch;
        registry.agents = self.registered.values().cloned().collect();
        // One being removed is removed for a master that takes over: its
        // agents are told to shut it down when they re-register.
        registry.frameworks = self
            .frameworks
            .values()
            .filter(|framework| framework.removing.is_none())
            .map(|framework| framework.info.clone())
            .collect();
        registry.removed_frameworks = self.removed_frameworks.iter().cloned().collect();
        registry.agents_admitted = self.next_agent;
        registry.frameworks_created = self.next_framework;
        registry.gone_agents = self.gone_order.iter().cloned().collect();
        registry
    }

    /// Takes back a previous master's registry, as master epoch `epoch`.
    pub fn recover(&mut self, now: Instant, registry: Registry, epoch: u64) {
        self.master_epoch = epoch;
        self.knows_every_framework = true;
        self.next_agent = self.next_agent.max(registry.agents_admitted);
        self.next_framework = self.next_framework.max(registry.frameworks_created);
        let wait = self.config.agent_reregister_timeout;
        for agent_id in registry.gone_agents {
            self.remember_gone(agent_id);
        }
        for agent in registry.agents {
            let agent = std::sync::Arc::unwrap_or_clone(agent);
            let Some(agent_id) = agent.info.id.clone() else {
                continue;
            };
            let mut entry =
                self.agent_entry(now, agent.info, agent.pid.clone(), &agent.certificate_name);
            entry.status = AgentStatus::Unreachable { since: now };
            if !agent.unreachable {
                self.recovering_agents.insert(agent_id.clone());
            }
            self.registry_entry_stale(&agent_id);
            self.agents_by_pid
                .insert(agent.pid.name(), agent_id.clone());
            *self
                .agents_per_certificate
                .entry(agent.certificate_name.clone())
                .or_default() += 1;
            self.agents.insert(agent_id, entry);
        }
        if self.recovering() {
            self.recovery_deadline = Some(now + wait);
        }
        for info in registry.frameworks {
            let Some(framework_id) = info.id.clone() else {
                continue;
            };
            self.allocator
                .add_framework(framework_id.clone(), info.role().to_owned());
            self.allocator.suppress(&framework_id);
            let deadline =
                strata_protocol::frameworks::deadline(now, info.failover_timeout().max(wait));
            self.frameworks.insert(
                framework_id,
                FrameworkEntry {
                    info,
                    pid: None,
                    failover_deadline: Some(deadline),
                    constraints: Vec::new(),
                    tasks: Default::default(),
                    completed: Default::default(),
                    history: Default::default(),
                    filed: 0,
                    offers: Default::default(),
                    removing: None,
                },
            );
        }
        self.removed_frameworks = registry.removed_frameworks.into_iter().collect();
        while self.removed_frameworks.len() > super::REMOVED_FRAMEWORKS_KEPT {
            self.removed_frameworks.pop_front();
        }
    }

    /// An agent of the previous master came back.
    pub(super) fn agent_recovered(&mut self, agent_id: &strata_protocol::AgentId) {
        if self.recovering_agents.remove(agent_id) && !self.recovering() {
            self.recovery_deadline = None;
        }
    }

    /// Agents that did not come back in time are unreachable from now on.
    pub(super) fn end_recovery(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.recovery_deadline.is_none_or(|deadline| deadline > now) {
            return;
        }
        self.recovery_deadline = None;
        for agent_id in std::mem::take(&mut self.recovering_agents) {
            self.registry_entry_stale(&agent_id);
            out.push(Command::Log(Event::AgentUnreachable {
                agent_id,
                missed_pongs: 0,
            }));
        }
        self.registry_changed();
    }
}
