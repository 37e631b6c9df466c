//! What operators read of masters and agents: the typed views behind
//! `/state` (master and agent), the CLI's tables and `strata logs`, the web
//! UI and the tests. Each is serialized by the endpoint and read back with
//! the same types, so a field renamed or retyped breaks the build, not a
//! reader at run time.
//!
//! Ids are the protocol's checked newtypes, task states are
//! [`TaskState`]s written with Mesos's names (`TASK_RUNNING`), resources
//! are [`Resources`] written as totals per name (`{"cpus": 2, "mem": 1024,
//! "ports": "[31000-32000]"}`), attributes as name to text, and a task's
//! sandbox is a field (relative to its agent's sandbox root, as the
//! agent's `/files` endpoints take it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::listed::{ListKey, Listed};

use serde::{Deserialize, Serialize};
use strata_protocol::{
    AgentId, Attributes, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskState,
};

/// The master's state at one moment (`GET /state` on the master).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterState {
    /// The master's id (what its MasterInfo and ids it hands out carry).
    pub id: String,
    /// The master's process id, `master@host:port`.
    pub pid: String,
    pub epoch: u64,
    /// When this master started and when the snapshot was taken,
    /// milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    pub snapshot_time_ms: u64,
    /// Whether agents may still come back to this (restarted) master.
    pub recovering: bool,
    /// By id.
    pub agents: Listed<AgentId, Agent>,
    /// By id.
    pub frameworks: Listed<FrameworkId, Framework>,
    /// Frameworks removed lately (their ended tasks are among
    /// `completed_tasks`).
    pub completed_frameworks: Vec<Framework>,
    /// Tasks that are not terminal, by framework and id.
    pub tasks: Listed<TaskKey, Task>,
    /// Recently ended tasks, by framework, oldest first.
    pub completed_tasks: Listed<CompletedKey, Task>,
    /// By id.
    pub offers: Listed<OfferId, Offer>,
    /// Tasks that ended in each terminal state since the master started.
    #[serde(with = "state_counts")]
    pub ended: BTreeMap<TaskState, u64>,
    /// Requests refused since the master started because the sender may
    /// not make them: its certificate's role or principal, or an ACL.
    pub authorization_denials: u64,
    /// The longest the master's loop spent on one thing (an input to its
    /// books with its messages sent, a slice of its views' update, a
    /// flush of its registry, or the snapshot before this one) since the
    /// snapshot before, in milliseconds: how long a message could wait
    /// behind it.
    #[serde(default)]
    pub longest_stall_ms: f64,
    /// How long the snapshot before this one took, in milliseconds.
    #[serde(default)]
    pub snapshot_ms: f64,
    /// How long the master's last periodic cycle took (pings, expiries,
    /// and the allocation of every agent's resources), in milliseconds.
    #[serde(default)]
    pub allocation_cycle_ms: f64,
    /// The master's node's message counters: sent, received, dropped
    /// and why.
    #[serde(default)]
    pub messages: strata_runtime::MetricsSnapshot,
}

/// A task that is not terminal: its framework and id.
pub type TaskKey = (FrameworkId, TaskId);

/// An ended task: its framework, and how many of that framework's tasks
/// ended before it (read back from a list: its position).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompletedKey(pub FrameworkId, pub u64);

impl ListKey<Agent> for AgentId {
    fn of(agent: &Agent, _: u64) -> AgentId {
        agent.id.clone()
    }
}

impl ListKey<Framework> for FrameworkId {
    fn of(framework: &Framework, _: u64) -> FrameworkId {
        framework.id.clone()
    }
}

impl ListKey<Task> for TaskKey {
    fn of(task: &Task, _: u64) -> TaskKey {
        (task.framework_id.clone(), task.id.clone())
    }
}

impl ListKey<Task> for CompletedKey {
    fn of(task: &Task, position: u64) -> CompletedKey {
        CompletedKey(task.framework_id.clone(), position)
    }
}

impl ListKey<Offer> for OfferId {
    fn of(offer: &Offer, _: u64) -> OfferId {
        offer.id.clone()
    }
}

impl MasterState {
    /// The task `task_id`: a running one, else the latest that ended.
    pub fn task(&self, task_id: &str) -> Option<&Task> {
        self.tasks
            .iter()
            .find(|task| task.id.as_str() == task_id)
            .or_else(|| {
                self.completed_tasks
                    .iter()
                    .rev()
                    .find(|task| task.id.as_str() == task_id)
            })
    }

    /// The agent `agent_id`, if the master knows it.
    pub fn agent(&self, agent_id: &AgentId) -> Option<&Agent> {
        self.agents.get(agent_id)
    }
}

/// Whether the master hears from an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    /// Silent past the ping timeout; its tasks are TASK_UNREACHABLE.
    Unreachable,
}

impl AgentStatus {
    pub fn name(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Unreachable => "unreachable",
        }
    }
}

/// An agent as the master sees it. What changes only when the agent
/// registers again (process id, hostname, attributes, total) is shared
/// between the versions of its view: the master makes a view again
/// whenever the agent's offers change, and at tens of thousands of agents
/// copying those for each would hold it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    /// Its process id, `agent@host:port` (its HTTP API is on that port).
    pub pid: Arc<str>,
    pub hostname: Arc<str>,
    pub status: AgentStatus,
    #[serde(with = "attributes_text")]
    pub attributes: Arc<Attributes>,
    #[serde(with = "totals")]
    pub total: Arc<Resources>,
    #[serde(with = "totals")]
    pub used: Resources,
    #[serde(with = "totals")]
    pub offered: Resources,
    pub tasks: usize,
}

/// A framework as the master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Framework {
    pub id: FrameworkId,
    pub name: String,
    pub role: String,
    /// The user its tasks run as, and who it authenticated as.
    pub user: String,
    pub principal: Option<String>,
    /// Whether its scheduler is connected.
    pub active: bool,
    pub pid: Option<String>,
    pub failover_timeout_secs: f64,
    pub checkpoint: bool,
    pub partition_aware: bool,
    /// Its capabilities, by Mesos's names (`PARTITION_AWARE`, ...).
    pub capabilities: Vec<String>,
    pub tasks: usize,
    pub completed_tasks: usize,
    pub offers: usize,
    #[serde(with = "totals")]
    pub used: Resources,
}

/// A task as the master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    /// The user it runs as.
    pub user: String,
    pub agent_id: AgentId,
    /// The custom executor that runs it (none for a command task).
    pub executor_id: Option<ExecutorId>,
    #[serde(with = "state_name")]
    pub state: TaskState,
    #[serde(with = "totals")]
    pub resources: Resources,
    /// Its last status's message.
    pub message: String,
    /// Its sandbox relative to its agent's sandbox root, once it has one
    /// (a task run by a custom executor has its executor's).
    pub sandbox: Option<String>,
    /// The image it runs in (its executor's, for a custom executor's
    /// task); none on the agent's own filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub history: Vec<Transition>,
}

/// A state a task reached, when, and the message that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    #[serde(with = "state_name")]
    pub state: TaskState,
    pub timestamp_ms: u64,
    pub message: String,
}

/// An outstanding offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    #[serde(with = "totals")]
    pub resources: Resources,
}

/// An agent at one moment (`GET /state` on the agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub pid: String,
    /// The id the master gave it, once registered.
    pub id: Option<AgentId>,
    pub hostname: String,
    /// Its master's process id.
    pub master: String,
    pub registered: bool,
    #[serde(with = "totals")]
    pub total: Resources,
    #[serde(with = "totals")]
    pub allocated: Resources,
    #[serde(with = "attributes_text")]
    pub attributes: Attributes,
    /// Where sandboxes are, when tasks run as processes.
    pub sandbox_root: Option<PathBuf>,
    pub tasks: Vec<AgentTask>,
    pub executors: Vec<Executor>,
    pub unacknowledged_updates: usize,
    pub snapshot_time_ms: u64,
}

/// A task as its agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTask {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    #[serde(with = "state_name")]
    pub state: TaskState,
    #[serde(with = "totals")]
    pub resources: Resources,
    /// Its sandbox, relative to the sandbox root, for `/files/*`.
    pub sandbox: Option<String>,
    pub usage: Option<Usage>,
}

/// A custom executor on an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executor {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub registered: bool,
    pub tasks: usize,
}

/// A task's usage, as `/monitor/statistics` reports it (Apache Mesos's
/// `ResourceStatistics` names; the kernel's figures only with cgroups
/// isolation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpus_time_secs: f64,
    pub mem_rss_bytes: u64,
    pub processes: u32,
    /// Time held back by the CFS quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_throttled_time_secs: Option<f64>,
    /// Memory charged to the container's cgroup (page cache included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_bytes: Option<u64>,
    /// The most it was ever charged (Strata's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_peak_bytes: Option<u64>,
    /// Processes of it the kernel killed for memory (Strata's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_oom_kills: Option<u64>,
}

/// A task state as its Mesos name (`TASK_RUNNING`).
pub mod state_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use strata_protocol::TaskState;

    pub fn serialize<S: Serializer>(state: &TaskState, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(state.mesos_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TaskState, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TaskState::from_mesos_name(&name)
            .ok_or_else(|| D::Error::custom(format!("{name:?} is not a task state")))
    }
}

/// Counts per task state, keyed by Mesos names.
pub mod state_counts {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use strata_protocol::TaskState;

    pub fn serialize<S: Serializer>(
        counts: &BTreeMap<TaskState, u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            counts
                .iter()
                .map(|(state, count)| (state.mesos_name(), count)),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<TaskState, u64>, D::Error> {
        BTreeMap::<String, u64>::deserialize(deserializer)?
            .into_iter()
            .map(|(name, count)| {
                TaskState::from_mesos_name(&name)
                    .map(|state| (state, count))
                    .ok_or_else(|| D::Error::custom(format!("{name:?} is not a task state")))
            })
            .collect()
    }
}

/// Resources as totals per name: scalars as numbers, ports as Mesos's
/// range text (`"[31000-32000]"`). Roles, other ranges and sets are not
/// shown.
pub mod totals {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use strata_protocol::Resources;

    pub fn serialize<S: Serializer, R: std::borrow::Borrow<Resources>>(
        resources: &R,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let resources = resources.borrow();
        let names = resources.scalar_names();
        let ports = resources.ports();
        let mut map =
            serializer.serialize_map(Some(names.len() + usize::from(!ports.is_empty())))?;
        for name in names {
            map.serialize_entry(name, &resources.scalar_total(name).as_f64())?;
        }
        if !ports.is_empty() {
            map.serialize_entry("ports", &ports.to_string())?;
        }
        map.end()
    }

    /// A total: a scalar's amount or the ports' ranges.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Total {
        Scalar(f64),
        Ranges(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>, R: From<Resources>>(
        deserializer: D,
    ) -> Result<R, D::Error> {
        let totals = BTreeMap::<String, Total>::deserialize(deserializer)?;
        if let Some(name) = totals.keys().find(|name| {
            name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || ";:()[]{}".contains(c))
        }) {
            return Err(D::Error::custom(format!("{name:?} is not a resource name")));
        }
        let text = totals
            .iter()
            .map(|(name, total)| match total {
                Total::Scalar(amount) => format!("{name}:{amount}"),
                Total::Ranges(ranges) => format!("{name}:{ranges}"),
            })
            .collect::<Vec<_>>()
            .join(";");
        text.parse::<Resources>()
            .map(R::from)
            .map_err(D::Error::custom)
    }
}

/// Attributes as an object of name to text value (`{"rack": "r1"}`).
pub mod attributes_text {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};
    use strata_protocol::Attributes;
    use strata_protocol::attributes::AttributeValue;

    pub fn serialize<S: Serializer, A: std::borrow::Borrow<Attributes>>(
        attributes: &A,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let attributes = attributes.borrow();
        serializer.collect_map(
            attributes
                .iter()
                .map(|(name, value)| (name, value.to_string())),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>, A: From<Attributes>>(
        deserializer: D,
    ) -> Result<A, D::Error> {
        let mut attributes = Attributes::new();
        for (name, value) in BTreeMap::<String, String>::deserialize(deserializer)? {
            attributes.insert(name, AttributeValue::parse(&value));
        }
        Ok(A::from(attributes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T: std::str::FromStr>(text: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        text.parse().unwrap()
    }

    /// What a master writes reads back as the same view, in the shape
    /// the web UI and older readers know.
    #[test]
    fn views_read_back_as_written() {
        let task = Task {
            id: id("t1"),
            name: "hello".into(),
            framework_id: id("m-F1"),
            user: "nobody".into(),
            agent_id: id("m-S1"),
            executor_id: None,
            state: TaskState::Finished,
            resources: "cpus:0.5;mem:32;ports:[31000-31001,31005-31005]"
                .parse()
                .unwrap(),
            message: "exited with status 0".into(),
            sandbox: Some("frameworks/m-F1/executors/t1/runs/0a".into()),
            image: Some("registry:5000/app:1".into()),
            history: vec![Transition {
                state: TaskState::Running,
                timestamp_ms: 5,
                message: "running".into(),
            }],
        };
        let mut attributes = Attributes::new();
        attributes.insert(
            "rack",
            strata_protocol::attributes::AttributeValue::parse("r1"),
        );
        let state = MasterState {
            id: "m".into(),
            pid: "master@127.0.0.1:5050".into(),
            epoch: 3,
            start_time_ms: 1,
            snapshot_time_ms: 2,
            longest_stall_ms: 0.5,
            snapshot_ms: 0.25,
            allocation_cycle_ms: 0.125,
            messages: Default::default(),
            recovering: false,
            agents: [Agent {
                id: id("m-S1"),
                pid: "agent@127.0.0.1:5051".into(),
                hostname: "h".into(),
                status: AgentStatus::Unreachable,
                attributes: attributes.into(),
                total: Arc::new("cpus:2;mem:1024;gpus:1".parse().unwrap()),
                used: "cpus:0.5".parse().unwrap(),
                offered: Resources::new(),
                tasks: 1,
            }]
            .into_iter()
            .collect(),
            frameworks: Listed::new(),
            completed_frameworks: vec![],
            tasks: Listed::new(),
            completed_tasks: [task].into_iter().collect(),
            offers: Listed::new(),
            ended: BTreeMap::from([(TaskState::Finished, 7)]),
            authorization_denials: 0,
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["completed_tasks"][0]["state"], "TASK_FINISHED");
        assert_eq!(
            json["completed_tasks"][0]["history"][0]["state"],
            "TASK_RUNNING"
        );
        assert_eq!(
            json["completed_tasks"][0]["resources"],
            serde_json::json!({"cpus": 0.5, "mem": 32.0, "ports": "[31000-31001,31005-31005]"})
        );
        assert_eq!(json["agents"][0]["status"], "unreachable");
        assert_eq!(json["agents"][0]["attributes"]["rack"], "r1");
        assert_eq!(json["ended"]["TASK_FINISHED"], 7);
        let read: MasterState = serde_json::from_value(json).unwrap();
        assert_eq!(read, state);
        assert_eq!(
            read.task("t1").and_then(|task| task.sandbox.as_deref()),
            Some("frameworks/m-F1/executors/t1/runs/0a")
        );
    }

    #[test]
    fn malformed_views_are_refused() {
        let task = |state: &str, resources: &str| {
            serde_json::from_str::<Transition>(&format!(
                r#"{{"state": "{state}", "timestamp_ms": 1, "message": "{resources}"}}"#
            ))
        };
        assert!(task("TASK_RUNNING", "").is_ok());
        assert!(task("RUNNING", "").is_err());
        let resources = |json: &str| {
            #[derive(Deserialize)]
            struct Holder {
                #[serde(with = "totals")]
                #[allow(dead_code)]
                resources: Resources,
            }
            serde_json::from_str::<Holder>(json)
        };
        assert!(resources(r#"{"resources": {"cpus": 1}}"#).is_ok());
        assert!(resources(r#"{"resources": {"cpus": -1}}"#).is_err());
        assert!(resources(r#"{"resources": {"ports": "31000"}}"#).is_err());
        assert!(resources(r#"{"resources": {"a;b": 1}}"#).is_err());
        assert!(resources(r#"{"resources": {"mem:5;cpus": 1}}"#).is_err());
    }
}
