//! The messages masters, agents and schedulers send each other.
//!
//! Each process receives one message type: the master [`ToMaster`], an
//! agent [`ToAgent`], a scheduler [`ToScheduler`]. Requests are imperative
//! (`RegisterAgent`, `Accept`), notifications past tense
//! (`AgentRegistered`, `OfferRescinded`), in Apache Mesos's vocabulary.

use serde::{Deserialize, Serialize};

use crate::agents::AgentInfo;
use crate::frameworks::FrameworkInfo;
use crate::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use crate::offers::{Filters, Offer, OfferConstraint};
use crate::tasks::{Task, TaskInfo, TaskStatus, UpdateId};
use strata_runtime::Blob;

/// What an accept does with the offered resources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Operation {
    /// Launch these tasks on the offers' agent.
    Launch(Vec<TaskInfo>),
}

/// A task the scheduler asks about in a reconciliation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ReconcileTask {
    pub task_id: TaskId,
    pub agent_id: Option<AgentId>,
}

/// Everything the master receives.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ToMaster {
    // From agents.
    /// A new agent asks to be admitted.
    RegisterAgent { info: AgentInfo },
    /// An agent the master admitted before comes back, with the tasks it
    /// runs.
    ReregisterAgent { info: AgentInfo, tasks: Vec<Task> },
    /// The answer to a [`ToAgent::Ping`].
    Pong { sequence: u64 },
    /// A task's state changed; the agent resends until acknowledged.
    StatusUpdate {
        framework_id: FrameworkId,
        status: TaskStatus,
    },

    // From schedulers.
    /// Register (no id in `info`) or re-register (with the id the master
    /// assigned) a framework.
    Subscribe {
        info: FrameworkInfo,
        constraints: Vec<OfferConstraint>,
    },
    /// Use offers: launch tasks; whatever is left is declined with `filters`.
    Accept {
        framework_id: FrameworkId,
        offer_ids: Vec<OfferId>,
        operations: Vec<Operation>,
        filters: Filters,
    },
    Decline {
        framework_id: FrameworkId,
        offer_ids: Vec<OfferId>,
        filters: Filters,
    },
    /// Offers again, and forget earlier declines.
    Revive { framework_id: FrameworkId },
    /// No offers until revived.
    Suppress { framework_id: FrameworkId },
    /// Replace the framework's standing filters.
    SetConstraints {
        framework_id: FrameworkId,
        constraints: Vec<OfferConstraint>,
    },
    Kill {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// An operator (`strata kill`) asks for a task to be killed; the
    /// framework hears of it through the task's updates.
    OperatorKill {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// The framework received a status update.
    Acknowledge {
        framework_id: FrameworkId,
        agent_id: AgentId,
        task_id: TaskId,
        update_id: UpdateId,
    },
    /// Ask for the state of these tasks, or of all (empty list).
    Reconcile {
        framework_id: FrameworkId,
        tasks: Vec<ReconcileTask>,
    },
    /// The framework is done: kill its tasks and forget it.
    Teardown { framework_id: FrameworkId },
    /// Opaque data for one of the framework's executors (at most once).
    FrameworkMessage {
        framework_id: FrameworkId,
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Blob,
    },

    // From agents, about executors.
    /// An executor ended; the resources it held (beside its tasks') are
    /// free again.
    ExecutorExited {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// Opaque data from an executor for its scheduler (at most once).
    ExecutorMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Blob,
    },

    /// Shut down one of the framework's executors on an agent: its tasks
    /// end TASK_KILLED, then it is stopped.
    ShutdownExecutor {
        framework_id: FrameworkId,
        agent_id: AgentId,
        executor_id: ExecutorId,
    },
    /// Change the framework's description in place (Mesos's
    /// UPDATE_FRAMEWORK): its name, failover timeout and capabilities.
    UpdateFramework {
        framework_id: FrameworkId,
        info: FrameworkInfo,
    },

    // From operators (certificates with the operator role).
    /// Tear a framework down as if its scheduler had: its tasks are
    /// killed and it is forgotten (the `teardown_frameworks` ACL).
    OperatorTeardown { framework_id: FrameworkId },
    /// The agent is gone for good (its machine was decommissioned): its
    /// tasks are TASK_GONE_BY_OPERATOR and its id is never admitted
    /// again.
    OperatorMarkAgentGone { agent_id: AgentId },
}

impl strata_runtime::Message for ToMaster {
    fn kind(&self) -> &'static str {
        match self {
            ToMaster::RegisterAgent { .. } => "RegisterAgent",
            ToMaster::ReregisterAgent { .. } => "ReregisterAgent",
            ToMaster::Pong { .. } => "Pong",
            ToMaster::StatusUpdate { .. } => "StatusUpdate",
            ToMaster::Subscribe { .. } => "Subscribe",
            ToMaster::Accept { .. } => "Accept",
            ToMaster::Decline { .. } => "Decline",
            ToMaster::Revive { .. } => "Revive",
            ToMaster::Suppress { .. } => "Suppress",
            ToMaster::SetConstraints { .. } => "SetConstraints",
            ToMaster::Kill { .. } => "Kill",
            ToMaster::OperatorKill { .. } => "OperatorKill",
            ToMaster::Acknowledge { .. } => "Acknowledge",
            ToMaster::Reconcile { .. } => "Reconcile",
            ToMaster::Teardown { .. } => "Teardown",
            ToMaster::FrameworkMessage { .. } => "FrameworkMessage",
            ToMaster::ExecutorExited { .. } => "ExecutorExited",
            ToMaster::ExecutorMessage { .. } => "ExecutorMessage",
            ToMaster::ShutdownExecutor { .. } => "ShutdownExecutor",
            ToMaster::UpdateFramework { .. } => "UpdateFramework",
            ToMaster::OperatorTeardown { .. } => "OperatorTeardown",
            ToMaster::OperatorMarkAgentGone { .. } => "OperatorMarkAgentGone",
        }
    }
}

/// Everything an agent receives from the master.
// Built once and moved into a mailbox: boxing the large variants would
// only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ToAgent {
    /// Admitted under `agent_id`. The master takes the agent as gone
    /// after `ping_timeout` without a pong; the agent likewise takes the
    /// master as lost, and registers again, after as long without a ping.
    /// `epoch` is the master's (see [`ToScheduler::Subscribed`]).
    AgentRegistered {
        agent_id: AgentId,
        ping_timeout: std::time::Duration,
        epoch: u64,
    },
    /// Taken back under its old id; `ping_timeout` as for registration.
    AgentReregistered {
        agent_id: AgentId,
        ping_timeout: std::time::Duration,
        epoch: u64,
    },
    /// The master will not admit this agent, and says why.
    RegistrationRefused {
        reason: String,
    },
    Ping {
        sequence: u64,
    },
    /// Both boxed: inline they made every message to an agent (and every
    /// command of the master that holds one) about 500 bytes.
    RunTask {
        framework: Box<FrameworkInfo>,
        task: Box<TaskInfo>,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// The framework acknowledged this update: send the next one.
    StatusUpdateAcknowledged {
        framework_id: FrameworkId,
        task_id: TaskId,
        update_id: UpdateId,
    },
    /// Kill every task of the framework and forget it.
    /// Shut down the framework's executor: it is asked to stop, and
    /// killed after the grace period.
    ShutdownExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    ShutdownFramework {
        framework_id: FrameworkId,
    },

    // From executors the agent started.
    /// An executor started by this agent is ready for its tasks.
    RegisterExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// A task of an executor changed state.
    ExecutorStatus {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        status: TaskStatus,
    },
    /// Data from a scheduler for an executor (from the master), or from an
    /// executor for its scheduler (from the executor).
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Blob,
    },
    /// From a master that does not lead (a standby of several): the
    /// leader's address (`master@ip:port`) when it knows one.
    NotLeader {
        leader: Option<String>,
    },
}

impl strata_runtime::Message for ToAgent {
    fn kind(&self) -> &'static str {
        match self {
            ToAgent::AgentRegistered { .. } => "AgentRegistered",
            ToAgent::AgentReregistered { .. } => "AgentReregistered",
            ToAgent::RegistrationRefused { .. } => "RegistrationRefused",
            ToAgent::Ping { .. } => "Ping",
            ToAgent::RunTask { .. } => "RunTask",
            ToAgent::KillTask { .. } => "KillTask",
            ToAgent::StatusUpdateAcknowledged { .. } => "StatusUpdateAcknowledged",
            ToAgent::ShutdownFramework { .. } => "ShutdownFramework",
            ToAgent::ShutdownExecutor { .. } => "ShutdownExecutor",
            ToAgent::RegisterExecutor { .. } => "RegisterExecutor",
            ToAgent::ExecutorStatus { .. } => "ExecutorStatus",
            ToAgent::FrameworkMessage { .. } => "FrameworkMessage",
            ToAgent::NotLeader { .. } => "NotLeader",
        }
    }
}

/// Everything an executor receives from its agent.
// Launches are most of what an executor receives; boxing them would only
// add allocations, as for the other message enums.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ToExecutor {
    ExecutorRegistered {
        agent_id: AgentId,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    LaunchTask {
        task: TaskInfo,
    },
    KillTask {
        task_id: TaskId,
    },
    /// Kill every task and exit.
    Shutdown,
    /// The agent restarted and recovered this executor: register again
    /// with the sender, the restarted agent.
    Reconnect,
    /// Data from the scheduler.
    FrameworkMessage {
        data: Blob,
    },
}

impl strata_runtime::Message for ToExecutor {
    fn kind(&self) -> &'static str {
        match self {
            ToExecutor::ExecutorRegistered { .. } => "ExecutorRegistered",
            ToExecutor::LaunchTask { .. } => "LaunchTask",
            ToExecutor::KillTask { .. } => "KillTask",
            ToExecutor::Shutdown => "Shutdown",
            ToExecutor::Reconnect => "Reconnect",
            ToExecutor::FrameworkMessage { .. } => "FrameworkMessage",
        }
    }
}

/// Everything a scheduler receives from the master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ToScheduler {
    /// Subscribed under `framework_id` by the master of `epoch`; messages
    /// from masters of earlier epochs are to be ignored from now on.
    Subscribed {
        framework_id: FrameworkId,
        epoch: u64,
    },
    Offers(Vec<Offer>),
    OfferRescinded {
        offer_id: OfferId,
    },
    /// A task's status; acknowledge it if it carries an update id.
    Update {
        status: TaskStatus,
    },
    AgentLost {
        agent_id: AgentId,
    },
    /// Data from one of the framework's executors.
    FrameworkMessage {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Blob,
    },
    /// One of the framework's executors ended; its tasks' updates follow.
    ExecutorLost {
        agent_id: AgentId,
        executor_id: ExecutorId,
    },
    /// A request was refused; the message says why.
    Error {
        message: String,
    },
    /// From a master that does not lead (a standby of several): the
    /// leader's address (`master@ip:port`) when it knows one.
    NotLeader {
        leader: Option<String>,
    },
}

impl strata_runtime::Message for ToScheduler {
    fn kind(&self) -> &'static str {
        match self {
            ToScheduler::Subscribed { .. } => "Subscribed",
            ToScheduler::Offers(_) => "Offers",
            ToScheduler::OfferRescinded { .. } => "OfferRescinded",
            ToScheduler::Update { .. } => "Update",
            ToScheduler::AgentLost { .. } => "AgentLost",
            ToScheduler::FrameworkMessage { .. } => "FrameworkMessage",
            ToScheduler::ExecutorLost { .. } => "ExecutorLost",
            ToScheduler::Error { .. } => "Error",
            ToScheduler::NotLeader { .. } => "NotLeader",
        }
    }
}
