//! Strata's shared wire and API types: ids, resources, offers, tasks and
//! their states, the analogue of Apache Mesos's `mesos.proto`.
//!
//! Everything here is data and pure functions on it: no IO, no clock, no
//! runtime. Masters, agents and frameworks exchange these types as
//! messages through `strata-runtime` (whose `Message` trait the message
//! enums implement, naming their variants for logs and simulation).

pub mod agents;
pub mod attributes;
pub mod epoch;
pub mod frameworks;
#[cfg(feature = "arbitrary")]
mod fuzzing;
pub mod ids;
pub mod limits;
pub mod messages;
pub mod offers;
pub mod resources;
pub mod tasks;

pub use agents::AgentInfo;
pub use attributes::{AttributeValue, Attributes};
pub use epoch::{MasterEpoch, NotFromMaster};
pub use frameworks::{Capability, FrameworkInfo};
pub use ids::{AgentId, ExecutorId, FrameworkId, IdError, OfferId, TaskId};
pub use messages::{Operation, ReconcileTask, ToAgent, ToExecutor, ToMaster, ToScheduler};
pub use offers::{Filters, Offer, OfferConstraint};
pub use resources::{Ranges, Resource, Resources, ResourcesError, Scalar, UNRESERVED, Value};
pub use tasks::{
    CommandInfo, ContainerInfo, ContainerKind, ExecutorInfo, Reason, Source, Task, TaskInfo,
    TaskKind, TaskState, TaskStatus, UpdateId, Volume,
};
