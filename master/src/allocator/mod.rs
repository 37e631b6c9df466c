//! The allocator: which framework is offered which agent's free resources.
//!
//! It sits behind the [`Allocator`] trait, the seeds' "modular
//! architecture that makes it easy to add new allocation modules". The
//! master tells it what happens (agents and frameworks come and go,
//! resources are returned, frameworks decline, suppress and revive) and
//! asks it to [`Allocator::allocate`]; it answers with [`Allocation`]s,
//! which the master turns into offers.
//!
//! An allocator is a pure state machine: it does no IO, reads no clock
//! (`now` is an argument) and iterates in a deterministic order, so a
//! simulation replays exactly.
//!
//! [`HierarchicalAllocator`] implements two policies: weighted DRF across
//! roles and then across frameworks within a role (Mesos's default), and
//! strict priority.

mod hierarchical;

use std::time::{Duration, Instant};

use strata_protocol::{AgentId, Attributes, FrameworkId, OfferConstraint, Resources};

pub use hierarchical::HierarchicalAllocator;

/// Resources of one agent handed to one framework.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
}

/// How frameworks are ordered when an agent's resources are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Weighted dominant resource fairness: the role, then the framework,
    /// with the lowest dominant share (divided by the role's weight) goes
    /// first.
    #[default]
    Drf,
    /// Roles by weight, highest first; within a role, frameworks in the
    /// order they registered. A lower role is offered only what no higher
    /// one takes.
    StrictPriority,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Drf => "drf",
            Policy::StrictPriority => "priority",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Policy, String> {
        match text {
            "drf" => Ok(Policy::Drf),
            "priority" | "strict-priority" => Ok(Policy::StrictPriority),
            other => Err(format!(
                "unknown allocation policy {other:?}; use \"drf\" or \"priority\""
            )),
        }
    }
}

/// The smallest offer worth sending (Mesos: 0.01 cpus or 32 MB of memory).
pub fn worth_offering(resources: &Resources) -> bool {
    use strata_protocol::Scalar;
    resources.cpus() >= Scalar::from_millis(10) || resources.mem_mb() >= Scalar::whole(32)
}

/// What the master tells an allocator, and what it asks of it.
pub trait Allocator {
    /// An agent joined with `total` resources, of which `used` are already
    /// in use by tasks (an agent re-registering with running tasks).
    fn add_agent(
        &mut self,
        agent: AgentId,
        total: Resources,
        attributes: Attributes,
        used: &[(FrameworkId, Resources)],
    );

    /// An agent left; whatever was allocated on it is forgotten.
    fn remove_agent(&mut self, agent: &AgentId);

    /// A framework registered in `role`.
    fn add_framework(&mut self, framework: FrameworkId, role: String);

    /// A framework went away; its allocations are returned.
    fn remove_framework(&mut self, framework: &FrameworkId);

    /// Resources allocated to `framework` on `agent` come back (declined,
    /// left unused by an accept, or freed by an ended task). With
    /// `refuse`, that agent is not offered to that framework again before
    /// `now + refuse`.
    fn recover(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Instant,
    );

    /// Everything in `returned` (agent by agent) comes back from
    /// `framework` at once, with no refusal: its offers were voided when
    /// its scheduler went or subscribed again. The same as a `recover` of
    /// each, which is what it does unless an allocator does better.
    fn recover_all(
        &mut self,
        framework: &FrameworkId,
        returned: &[(AgentId, Resources)],
        now: Instant,
    ) {
        for (agent, resources) in returned {
            self.recover(framework, agent, resources, None, now);
        }
    }

    /// The framework wants no offers until it revives.
    fn suppress(&mut self, framework: &FrameworkId);

    /// The framework wants offers again; its refusals are forgotten.
    fn revive(&mut self, framework: &FrameworkId);

    /// The framework's standing filters: only agents passing all of them
    /// are offered to it.
    fn set_constraints(&mut self, framework: &FrameworkId, constraints: Vec<OfferConstraint>);

    /// A role's weight (default 1).
    fn set_weight(&mut self, role: &str, weight: f64);

    /// Hands out the free resources of every agent.
    fn allocate(&mut self, now: Instant) -> Vec<Allocation>;

    /// Hands out the free resources of these agents only (after an event
    /// that concerns them).
    fn allocate_agents(&mut self, agents: &[AgentId], now: Instant) -> Vec<Allocation>;

    /// Free (unallocated) resources of an agent.
    fn free(&self, agent: &AgentId) -> Option<Resources>;

    /// What is allocated to a framework (offered or in use), all agents.
    fn allocated(&self, framework: &FrameworkId) -> Option<Resources>;
}
