//! Agents as the master knows them.

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::ids::AgentId;
use crate::resources::Resources;

/// What an agent tells the master when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AgentInfo {
    /// Set when re-registering under an id the master assigned before.
    pub id: Option<AgentId>,
    pub hostname: String,
    /// Everything the agent offers, free or used.
    pub resources: Resources,
    pub attributes: Attributes,
}
