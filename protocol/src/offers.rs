//! Offers, declines and the standing filters frameworks set.
//!
//! A standing filter ([`OfferConstraint`]) is the seeds' "a framework can
//! set a filter stating that it can run only on nodes with at least 32 GB
//! of RAM": the master applies it before offering, so unsuitable offers
//! are never sent. Declines ([`Filters`]) are the other kind: "not this
//! agent for N seconds".

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::attributes::{AttributeValue, Attributes};
use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::resources::Resources;

/// Mesos's default refusal after a decline.
pub const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

/// Longest refusal accepted (Mesos: 365 days).
pub const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most tasks one accept may launch; the master drops all of a larger
/// accept's tasks.
pub const MAX_TASKS_PER_ACCEPT: usize = 1024;

/// Most offers one accept or decline may name; the master ignores the
/// rest.
pub const MAX_OFFERS_PER_CALL: usize = 1024;

/// Resources of one agent offered to one framework.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    /// The agent's node address: its HTTP endpoints are on that port.
    pub agent_address: std::net::SocketAddr,
    pub resources: Resources,
    pub attributes: Attributes,
}

/// How long an agent's resources are not offered again to a framework
/// that declined them (or left them unused in an accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Filters {
    pub refuse: Duration,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            refuse: DEFAULT_REFUSE,
        }
    }
}

impl Filters {
    /// The refusal, capped at [`MAX_REFUSE`].
    pub fn refuse(self) -> Duration {
        self.refuse.min(MAX_REFUSE)
    }
}

/// A standing filter: only agents that satisfy it are offered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OfferConstraint {
    /// The agent's free resources (for the framework's role) contain these.
    MinimumFree(Resources),
    /// The agent has the attribute with exactly this value.
    AttributeEquals { name: String, value: AttributeValue },
    /// The agent has the attribute with one of these values (as text).
    AttributeIn {
        name: String,
        values: BTreeSet<String>,
    },
    /// The agent is one of these.
    AgentIn(BTreeSet<AgentId>),
    /// The agent is none of these.
    AgentNotIn(BTreeSet<AgentId>),
}

impl OfferConstraint {
    /// Whether an agent with these attributes and free resources passes.
    pub fn admits(&self, agent: &AgentId, attributes: &Attributes, free: &Resources) -> bool {
        match self {
            OfferConstraint::MinimumFree(minimum) => free.contains(minimum),
            OfferConstraint::AttributeEquals { name, value } => attributes.get(name) == Some(value),
            OfferConstraint::AttributeIn { name, values } => attributes
                .get(name)
                .is_some_and(|value| values.contains(&value.as_text())),
            OfferConstraint::AgentIn(agents) => agents.contains(agent),
            OfferConstraint::AgentNotIn(agents) => !agents.contains(agent),
        }
    }
}

/// Whether an agent passes every constraint.
pub fn admits_all(
    constraints: &[OfferConstraint],
    agent: &AgentId,
    attributes: &Attributes,
    free: &Resources,
) -> bool {
    constraints
        .iter()
        .all(|constraint| constraint.admits(agent, attributes, free))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(constraint: OfferConstraint, attributes: &str, free: &str, expected: bool) {
        let agent = AgentId::new("a1").unwrap();
        let attributes: Attributes = attributes.parse().unwrap();
        let free: Resources = free.parse().unwrap();
        assert_eq!(
            constraint.admits(&agent, &attributes, &free),
            expected,
            "{constraint:?} on {attributes} with {free}"
        );
    }

    #[test]
    fn constraints() {
        let at_least_32_gb = OfferConstraint::MinimumFree("mem:32768".parse().unwrap());
        check(at_least_32_gb.clone(), "", "cpus:8;mem:65536", true);
        check(at_least_32_gb, "", "cpus:8;mem:16384", false);
        let rack = |value: &str| OfferConstraint::AttributeEquals {
            name: "rack".into(),
            value: AttributeValue::parse(value),
        };
        check(rack("r1"), "rack:r1", "", true);
        check(rack("r1"), "rack:r2", "", false);
        check(rack("r1"), "zone:a", "", false);
        let zones = OfferConstraint::AttributeIn {
            name: "zone".into(),
            values: ["a".to_owned(), "b".to_owned()].into(),
        };
        check(zones.clone(), "zone:b", "", true);
        check(zones, "zone:c", "", false);
        let a1: BTreeSet<AgentId> = [AgentId::new("a1").unwrap()].into();
        check(OfferConstraint::AgentIn(a1.clone()), "", "", true);
        check(OfferConstraint::AgentNotIn(a1), "", "", false);
    }

    #[test]
    fn refusals_are_capped() {
        let filters = Filters {
            refuse: Duration::from_secs(u64::MAX),
        };
        assert_eq!(filters.refuse(), MAX_REFUSE);
        assert_eq!(Filters::default().refuse(), DEFAULT_REFUSE);
    }
}
