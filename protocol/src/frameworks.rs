//! Frameworks as the master knows them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::FrameworkId;
use crate::resources::UNRESERVED;

/// What a framework can handle beyond the basics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Capability {
    /// Sees TASK_UNREACHABLE instead of TASK_LOST, and keeps tasks whose
    /// agent comes back.
    PartitionAware,
    /// Subscribes with several roles.
    MultiRole,
    /// Understands TASK_KILLING.
    TaskKillingState,
    /// May be offered agents with GPUs.
    GpuResources,
}

impl Capability {
    /// The Mesos name, `PARTITION_AWARE`.
    pub fn mesos_name(self) -> &'static str {
        match self {
            Capability::PartitionAware => "PARTITION_AWARE",
            Capability::MultiRole => "MULTI_ROLE",
            Capability::TaskKillingState => "TASK_KILLING_STATE",
            Capability::GpuResources => "GPU_RESOURCES",
        }
    }
}

/// Longest failover timeout the master honours (Mesos takes any double
/// of seconds; a year is beyond any real use and keeps deadlines far from
/// the clock's limits). Longer ones are taken as this.
pub const MAX_FAILOVER_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now` plus `after`, saturating far in the future instead of
/// overflowing: durations that come from peers can be anything.
pub fn deadline(now: std::time::Instant, after: Duration) -> std::time::Instant {
    now.checked_add(after.min(MAX_FAILOVER_TIMEOUT))
        .unwrap_or(now)
}

/// What a framework tells the master when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FrameworkInfo {
    /// Set when re-registering a framework the master already assigned.
    pub id: Option<FrameworkId>,
    pub name: String,
    /// The user tasks run as.
    pub user: String,
    /// Roles it is offered resources for; `*` when none is given.
    pub roles: Vec<String>,
    pub principal: Option<String>,
    /// How long the master keeps its tasks after its scheduler
    /// disconnects. Zero: killed at once (Mesos's default).
    pub failover_timeout: Duration,
    /// Whether agents checkpoint its tasks so they survive agent restarts.
    pub checkpoint: bool,
    pub capabilities: BTreeSet<Capability>,
}

impl FrameworkInfo {
    /// A framework with defaults: role `*`, no failover, no checkpoint.
    pub fn new(name: impl Into<String>, user: impl Into<String>) -> FrameworkInfo {
        FrameworkInfo {
            id: None,
            name: name.into(),
            user: user.into(),
            roles: vec![UNRESERVED.to_owned()],
            principal: None,
            failover_timeout: Duration::ZERO,
            checkpoint: false,
            capabilities: BTreeSet::new(),
        }
    }

    /// The role offers and shares are counted in: the first one.
    pub fn role(&self) -> &str {
        self.roles.first().map(String::as_str).unwrap_or(UNRESERVED)
    }

    /// The failover timeout, at most [`MAX_FAILOVER_TIMEOUT`].
    pub fn failover_timeout(&self) -> Duration {
        self.failover_timeout.min(MAX_FAILOVER_TIMEOUT)
    }

    pub fn is_partition_aware(&self) -> bool {
        self.capabilities.contains(&Capability::PartitionAware)
    }
}
