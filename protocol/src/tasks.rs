//! Tasks: what frameworks ask agents to run, and the states they report.
//!
//! States, reasons and sources are Apache Mesos's. Terminal states are
//! final: a task that reached one never leaves it (Strata treats LOST as
//! terminal, as Mesos's own `isTerminalState` does; a partition-aware
//! framework sees UNREACHABLE instead, which is not terminal).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, ExecutorId, FrameworkId, TaskId};
use crate::resources::Resources;

/// Every task state Mesos knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TaskState {
    /// Accepted by the master, on its way to the agent (initial state).
    Staging,
    Starting,
    Running,
    /// Being killed: its kill was asked for and is under way.
    Killing,
    Finished,
    Failed,
    Killed,
    /// Could not be launched: invalid, or its resources were not there.
    Error,
    /// Its agent was lost (frameworks that are not partition-aware).
    Lost,
    /// Dropped before it reached the agent.
    Dropped,
    /// Its agent is unreachable; it may come back (partition-aware).
    Unreachable,
    /// Its agent was removed for good.
    Gone,
    GoneByOperator,
    /// The master does not know it (reconciliation answer).
    Unknown,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// A state the task never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// Whether a task may go from `self` to `next`. Repeating a
    /// non-terminal state is allowed (reconciliation restates it).
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        if self.is_terminal() {
            return false;
        }
        if self == next {
            return true;
        }
        match self {
            Staging | Unknown | Unreachable => next != Staging,
            Starting => !matches!(next, Staging | Unknown),
            Running => !matches!(next, Staging | Starting | Unknown),
            Killing => next.is_terminal() || next == Unreachable,
            _ => false,
        }
    }

    /// The Mesos name, `TASK_RUNNING`.
    pub fn mesos_name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

impl TaskState {
    /// The state of a Mesos name, `TASK_RUNNING`.
    pub fn from_mesos_name(name: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.mesos_name() == name)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mesos_name())
    }
}

/// Who reported a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Source {
    Master,
    Agent,
    Executor,
}

/// Why a task reached its state, when there is more to say than the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Reason {
    Reconciliation,
    AgentRemoved,
    AgentDisconnected,
    AgentUnreachable,
    AgentRestarted,
    AgentDraining,
    ExecutorRegistrationTimeout,
    ExecutorTerminated,
    ExecutorUnregistered,
    ContainerLimitationMemory,
    /// Its container could not be made: its image could not be had or
    /// unpacked, or its root filesystem mounted.
    ContainerPreparationFailed,
    CommandExecutorFailed,
    TaskInvalid,
    /// An ACL does not let the framework's principal run the task as its
    /// user (Mesos's REASON_TASK_UNAUTHORIZED).
    TaskUnauthorized,
    TaskUnknown,
    TaskKilledDuringLaunch,
    InvalidOffers,
    ResourcesUnknown,
    FrameworkRemoved,
    /// An operator marked the task's agent gone (TASK_GONE_BY_OPERATOR).
    AgentRemovedByOperator,
}

impl Source {
    /// The Mesos name, `SOURCE_EXECUTOR`.
    pub fn mesos_name(self) -> &'static str {
        match self {
            Source::Master => "SOURCE_MASTER",
            Source::Agent => "SOURCE_AGENT",
            Source::Executor => "SOURCE_EXECUTOR",
        }
    }

    /// The source of a Mesos name (`SOURCE_SLAVE` as well as
    /// `SOURCE_AGENT`).
    pub fn from_mesos_name(name: &str) -> Option<Source> {
        match name {
            "SOURCE_MASTER" => Some(Source::Master),
            "SOURCE_AGENT" | "SOURCE_SLAVE" => Some(Source::Agent),
            "SOURCE_EXECUTOR" => Some(Source::Executor),
            _ => None,
        }
    }
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Reconciliation,
        Reason::AgentRemoved,
        Reason::AgentDisconnected,
        Reason::AgentUnreachable,
        Reason::AgentRestarted,
        Reason::AgentDraining,
        Reason::ExecutorRegistrationTimeout,
        Reason::ExecutorTerminated,
        Reason::ExecutorUnregistered,
        Reason::ContainerLimitationMemory,
        Reason::ContainerPreparationFailed,
        Reason::CommandExecutorFailed,
        Reason::TaskInvalid,
        Reason::TaskUnauthorized,
        Reason::TaskUnknown,
        Reason::TaskKilledDuringLaunch,
        Reason::InvalidOffers,
        Reason::ResourcesUnknown,
        Reason::FrameworkRemoved,
        Reason::AgentRemovedByOperator,
    ];

    /// The Mesos name, `REASON_RECONCILIATION`. Mesos has no reason for
    /// an unreachable agent of its own: it says the agent was removed
    /// (with the state TASK_UNREACHABLE).
    pub fn mesos_name(self) -> &'static str {
        match self {
            Reason::Reconciliation => "REASON_RECONCILIATION",
            Reason::AgentRemoved | Reason::AgentUnreachable => "REASON_AGENT_REMOVED",
            Reason::AgentDisconnected => "REASON_AGENT_DISCONNECTED",
            Reason::AgentRestarted => "REASON_AGENT_RESTARTED",
            Reason::AgentDraining => "REASON_AGENT_DRAINING",
            Reason::ExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
            Reason::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
            Reason::ExecutorUnregistered => "REASON_EXECUTOR_UNREGISTERED",
            Reason::ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
            Reason::ContainerPreparationFailed => "REASON_CONTAINER_PREPARATION_FAILED",
            Reason::CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
            Reason::TaskInvalid => "REASON_TASK_INVALID",
            Reason::TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
            Reason::TaskUnknown => "REASON_TASK_UNKNOWN",
            Reason::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
            Reason::InvalidOffers => "REASON_INVALID_OFFERS",
            Reason::ResourcesUnknown => "REASON_RESOURCES_UNKNOWN",
            Reason::FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
            Reason::AgentRemovedByOperator => "REASON_AGENT_REMOVED_BY_OPERATOR",
        }
    }

    /// The reason of a Mesos name (`REASON_SLAVE_*` as well as
    /// `REASON_AGENT_*`); `None` for reasons Strata does not make.
    pub fn from_mesos_name(name: &str) -> Option<Reason> {
        let name = name.replace("REASON_SLAVE_", "REASON_AGENT_");
        Reason::ALL
            .into_iter()
            .find(|reason| reason.mesos_name() == name)
    }
}

/// Identifies one status update, so acknowledgements and duplicates can
/// be matched. Chosen by whoever creates the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct UpdateId(pub u128);

impl fmt::Display for UpdateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A task's state as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    pub source: Source,
    pub reason: Option<Reason>,
    pub message: String,
    pub agent_id: Option<AgentId>,
    pub executor_id: Option<ExecutorId>,
    /// Present on updates the agent delivers at least once; absent on
    /// ones the master makes up (reconciliation, agent loss), which need
    /// no acknowledgement.
    pub update_id: Option<UpdateId>,
    /// Milliseconds since the Unix epoch when the state was reached.
    pub timestamp_ms: u64,
    /// Where the task runs: its sandbox relative to the agent's sandbox
    /// root (`frameworks/F/executors/E/runs/R`), once it has one; what
    /// the agent's `/files` endpoints read under.
    pub sandbox: Option<String>,
}

/// A command to run: a shell string (`shell`) or an executable with
/// arguments.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CommandInfo {
    /// Run `value` with `/bin/sh -c` when true; otherwise `value` is the
    /// executable and `arguments` its argv (`argv[0]` included).
    pub shell: bool,
    pub value: String,
    pub arguments: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// The user to run it as; the framework's user when `None`.
    pub user: Option<String>,
    /// The container it runs in: an image's root filesystem and volumes.
    /// `None` runs it on the agent's own filesystem.
    #[serde(default)]
    pub container: Option<ContainerInfo>,
}

/// The longest image reference or volume path a container may name.
pub const MAX_CONTAINER_PATH_BYTES: usize = 4096;

/// The most volumes a container may have.
pub const MAX_VOLUMES: usize = 64;

/// Which kind of container Mesos was asked for. Both run the same way in
/// Strata (the agent provisions the image and an OCI runtime runs it; no
/// Docker daemon is involved); the kind is kept for what frameworks read
/// back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ContainerKind {
    #[default]
    Mesos,
    Docker,
}

/// A bind mount from the agent's host into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Volume {
    /// A path on the agent (absolute), or relative to the sandbox.
    pub host_path: String,
    /// Where it appears in the container (absolute).
    pub container_path: String,
    pub read_only: bool,
}

/// Where a command runs: in an image's root filesystem (Apache Mesos's
/// `ContainerInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ContainerInfo {
    pub kind: ContainerKind,
    /// A Docker image reference (`busybox`, `registry:5000/team/app:1`,
    /// `name@sha256:…`) or an absolute path on the agent to an OCI image
    /// layout directory or a `docker save` / OCI archive. Without one the
    /// command runs on the agent's own filesystem.
    pub image: Option<String>,
    pub volumes: Vec<Volume>,
}

impl ContainerInfo {
    /// Why this container cannot be run anywhere, checked where tasks are
    /// accepted: sizes and paths, not whether the image exists.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(image) = &self.image {
            if image.is_empty() || image.len() > MAX_CONTAINER_PATH_BYTES {
                return Err("the image reference is empty or too long".into());
            }
            if image.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "the image reference {image:?} has blanks or control characters"
                ));
            }
        }
        if self.volumes.len() > MAX_VOLUMES {
            return Err(format!("more than {MAX_VOLUMES} volumes"));
        }
        if !self.volumes.is_empty() && self.image.is_none() {
            return Err("volumes need an image: a container without one runs on the host".into());
        }
        for volume in &self.volumes {
            for path in [&volume.host_path, &volume.container_path] {
                if path.is_empty() || path.len() > MAX_CONTAINER_PATH_BYTES || path.contains('\0') {
                    return Err(format!(
                        "the volume path {path:?} is empty, too long or has NUL"
                    ));
                }
                if path.split('/').any(|part| part == "..") {
                    return Err(format!("the volume path {path:?} goes up with `..`"));
                }
            }
            // Plain names below / (at least one: never the root itself),
            // or plain names in the sandbox.
            let names = |path: &str, absolute: bool| {
                let mut components = std::path::Path::new(path).components().peekable();
                if absolute && components.next() != Some(std::path::Component::RootDir) {
                    return false;
                }
                components.peek().is_some()
                    && components.all(|part| matches!(part, std::path::Component::Normal(_)))
            };
            if !names(&volume.container_path, true) {
                return Err(format!(
                    "the volume's container path {:?} is not an absolute path below /",
                    volume.container_path
                ));
            }
            if !names(&volume.host_path, volume.host_path.starts_with('/')) {
                return Err(format!(
                    "the volume's host path {:?} is neither an absolute path below / nor plain names in the sandbox",
                    volume.host_path
                ));
            }
        }
        Ok(())
    }
}

impl CommandInfo {
    /// A shell command, the common case.
    pub fn shell(command: impl Into<String>) -> CommandInfo {
        CommandInfo {
            shell: true,
            value: command.into(),
            ..CommandInfo::default()
        }
    }
}

/// A framework's executor: a process the agent starts once and hands
/// several tasks to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ExecutorInfo {
    pub executor_id: ExecutorId,
    pub name: String,
    pub command: CommandInfo,
    /// What the executor itself uses, beside its tasks.
    pub resources: Resources,
}

/// How a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TaskKind {
    /// A command run by the agent's built-in command executor.
    Command(CommandInfo),
    /// A task handed to the framework's own executor.
    Executor(ExecutorInfo),
}

impl TaskKind {
    /// The container the task's process runs in, if it names one (a
    /// custom executor's tasks run in its container).
    pub fn container(&self) -> Option<&ContainerInfo> {
        match self {
            TaskKind::Command(command) => command.container.as_ref(),
            TaskKind::Executor(executor) => executor.command.container.as_ref(),
        }
    }
}

/// What a framework asks to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TaskInfo {
    pub task_id: TaskId,
    pub name: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub kind: TaskKind,
    pub labels: BTreeMap<String, String>,
}

/// A task as the master and agents keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Task {
    pub info: TaskInfo,
    pub framework_id: FrameworkId,
    pub state: TaskState,
    /// The last status, with reason and message.
    pub status: Option<TaskStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn mesos_names_read_back() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_mesos_name(state.mesos_name()), Some(state));
        }
        for reason in Reason::ALL {
            let read = Reason::from_mesos_name(reason.mesos_name()).unwrap();
            assert_eq!(read.mesos_name(), reason.mesos_name());
        }
        assert_eq!(
            Reason::from_mesos_name("REASON_SLAVE_RESTARTED"),
            Some(Reason::AgentRestarted)
        );
        assert_eq!(Source::from_mesos_name("SOURCE_SLAVE"), Some(Source::Agent));
        assert_eq!(TaskState::from_mesos_name("TASK_BOGUS"), None);
    }

    #[test]
    fn terminal_states_are_final() {
        for from in TaskState::ALL
            .into_iter()
            .filter(|state| state.is_terminal())
        {
            for to in TaskState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_usual_lifecycles_are_legal() {
        for path in [
            &[Staging, Starting, Running, Finished][..],
            &[Staging, Running, Killing, Killed],
            &[Staging, Error],
            &[Staging, Starting, Running, Unreachable, Running, Failed],
            &[Staging, Running, Running, Lost],
        ] {
            for pair in path.windows(2) {
                assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
            }
        }
    }

    #[test]
    fn container_volumes_name_plain_paths() {
        let with = |host: &str, container: &str| ContainerInfo {
            kind: ContainerKind::Mesos,
            image: Some("busybox".into()),
            volumes: vec![Volume {
                host_path: host.into(),
                container_path: container.into(),
                read_only: false,
            }],
        };
        for (host, container) in [("data", "/data"), ("/srv/x", "/mnt/x"), ("a/b", "/a/./b")] {
            assert!(
                with(host, container).validate().is_ok(),
                "{host} {container}"
            );
        }
        for (host, container) in [
            ("data", "/"),
            ("data", "//"),
            ("data", "/."),
            ("data", "relative"),
            ("../up", "/x"),
            ("./x", "/x"),
            ("/", "/x"),
            ("", "/x"),
            ("a\0b", "/x"),
        ] {
            assert!(
                with(host, container).validate().is_err(),
                "{host:?} {container:?}"
            );
        }
        let without_image = ContainerInfo {
            image: None,
            ..with("data", "/data")
        };
        assert!(without_image.validate().is_err());
    }

    #[test]
    fn going_back_is_not() {
        for (from, to) in [
            (Running, Staging),
            (Running, Starting),
            (Killing, Running),
            (Starting, Staging),
        ] {
            assert!(!from.can_become(to), "{from} -> {to}");
        }
    }
}
