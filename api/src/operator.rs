//! The v1 operator API (`master.proto`): the calls operators and tools
//! POST to `/api/v1` as JSON, the answers, the events of its SUBSCRIBE
//! stream, and the v0 `/master/state` tools such as Mesos's own CLI and
//! dashboards read. Every answer is made from the typed views of
//! [`crate::views`], so it says what `/state` says.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strata_protocol::{self as protocol, AgentId, FrameworkId, TaskState};

use crate::ApiError;
use crate::mesos::{Id, MasterInfo, attributes_to, resources_to};
use crate::metrics::Metric;
use crate::views::{Agent, AgentStatus, Framework, MasterState, Task};

/// How often the operator stream sends HEARTBEAT, in seconds.
pub const HEARTBEAT_INTERVAL_SECONDS: f64 = 15.0;

/// The call types of Mesos 1.11's master operator API that Strata takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    GetHealth,
    GetFlags,
    GetVersion,
    GetMetrics,
    GetState,
    GetAgents,
    GetFrameworks,
    GetExecutors,
    GetTasks,
    GetRoles,
    GetMaster,
    Subscribe,
    Teardown,
    MarkAgentGone,
}

impl CallType {
    /// Whether the call changes the cluster (and needs an operator who
    /// may).
    pub fn writes(self) -> bool {
        matches!(self, CallType::Teardown | CallType::MarkAgentGone)
    }

    /// Its name in JSON, `GET_STATE`.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|name| name.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Calls of Mesos's operator API that Strata does not serve (answered
/// 501 rather than 400: they are well formed).
const NOT_SERVED: &[&str] = &[
    "GET_LOGGING_LEVEL",
    "SET_LOGGING_LEVEL",
    "LIST_FILES",
    "READ_FILE",
    "GET_OPERATIONS",
    "GET_WEIGHTS",
    "UPDATE_WEIGHTS",
    "GET_MAINTENANCE_STATUS",
    "GET_MAINTENANCE_SCHEDULE",
    "UPDATE_MAINTENANCE_SCHEDULE",
    "START_MAINTENANCE",
    "STOP_MAINTENANCE",
    "DRAIN_AGENT",
    "DEACTIVATE_AGENT",
    "REACTIVATE_AGENT",
    "GET_QUOTA",
    "UPDATE_QUOTA",
    "SET_QUOTA",
    "REMOVE_QUOTA",
    "RESERVE_RESOURCES",
    "UNRESERVE_RESOURCES",
    "CREATE_VOLUMES",
    "DESTROY_VOLUMES",
    "GROW_VOLUME",
    "SHRINK_VOLUME",
];

#[derive(Debug, Deserialize)]
struct FrameworkBody {
    framework_id: Id,
}

#[derive(Debug, Deserialize)]
struct AgentBody {
    agent_id: Id,
}

#[derive(Debug, Deserialize)]
struct RawCall {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    teardown: Option<FrameworkBody>,
    #[serde(default)]
    mark_agent_gone: Option<AgentBody>,
}

/// An operator call, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A call that reads (or SUBSCRIBE).
    Read(CallType),
    Teardown(FrameworkId),
    MarkAgentGone(AgentId),
}

impl Call {
    /// Parses and checks a call's JSON.
    pub fn parse(body: &[u8]) -> Result<Call, ApiError> {
        let raw: RawCall =
            serde_json::from_slice(body).map_err(|error| ApiError::Json(error.to_string()))?;
        let kind: CallType = match serde_json::from_value(Value::String(raw.kind.clone())) {
            Ok(kind) => kind,
            Err(_) if NOT_SERVED.contains(&raw.kind.as_str()) => {
                return Err(ApiError::Unsupported(format!(
                    "the operator call {} is not served by Strata",
                    raw.kind
                )));
            }
            Err(_) => {
                return Err(ApiError::invalid(
                    "type",
                    format!("{:?} is not an operator call", raw.kind),
                ));
            }
        };
        match kind {
            CallType::Teardown => {
                let body = raw
                    .teardown
                    .ok_or_else(|| ApiError::invalid("teardown", "the call's body is missing"))?;
                Ok(Call::Teardown(
                    body.framework_id.parse("teardown.framework_id")?,
                ))
            }
            CallType::MarkAgentGone => {
                let body = raw.mark_agent_gone.ok_or_else(|| {
                    ApiError::invalid("mark_agent_gone", "the call's body is missing")
                })?;
                Ok(Call::MarkAgentGone(
                    body.agent_id.parse("mark_agent_gone.agent_id")?,
                ))
            }
            read => Ok(Call::Read(read)),
        }
    }

    pub fn kind(&self) -> CallType {
        match self {
            Call::Read(kind) => *kind,
            Call::Teardown(_) => CallType::Teardown,
            Call::MarkAgentGone(_) => CallType::MarkAgentGone,
        }
    }
}

/// An answer: `{"type": "GET_X", "get_x": body}`, as JSON.
pub fn answer<T: Serialize>(kind: CallType, body: &T) -> serde_json::Result<Vec<u8>> {
    struct Answer<'a, T> {
        kind: &'a str,
        field: &'a str,
        body: &'a T,
    }
    impl<T: Serialize> Serialize for Answer<'_, T> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry("type", self.kind)?;
            map.serialize_entry(self.field, self.body)?;
            map.end()
        }
    }
    let name = kind.name();
    serde_json::to_vec(&Answer {
        kind: &name,
        field: &name.to_lowercase(),
        body,
    })
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn address_port(pid: &str) -> u16 {
    pid.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(0)
}

/// An id as Mesos writes it, `{"value": …}`, borrowed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdRef<'a> {
    pub value: &'a str,
}

fn id(value: &str) -> IdRef<'_> {
    IdRef { value }
}

/// An agent's `AgentInfo`.
#[derive(Debug, Serialize)]
pub struct AgentInfoJson<'a> {
    pub id: IdRef<'a>,
    pub hostname: &'a str,
    pub port: u16,
    pub resources: Vec<crate::mesos::Resource>,
    pub attributes: Vec<crate::mesos::Attribute>,
}

/// An agent as `master.proto`'s `Response.GetAgents.Agent`.
#[derive(Debug, Serialize)]
pub struct AgentJson<'a> {
    pub agent_info: AgentInfoJson<'a>,
    pub active: bool,
    pub deactivated: bool,
    pub version: &'static str,
    pub pid: &'a str,
    pub total_resources: Vec<crate::mesos::Resource>,
    pub allocated_resources: Vec<crate::mesos::Resource>,
    pub offered_resources: Vec<crate::mesos::Resource>,
}

pub fn agent(agent: &Agent) -> AgentJson<'_> {
    AgentJson {
        agent_info: AgentInfoJson {
            id: id(agent.id.as_str()),
            hostname: &agent.hostname,
            port: address_port(&agent.pid),
            resources: resources_to(&agent.total, None),
            attributes: attributes_to(&agent.attributes),
        },
        active: agent.status == AgentStatus::Active,
        deactivated: false,
        version: crate::MESOS_COMPATIBLE_VERSION,
        pid: &agent.pid,
        total_resources: resources_to(&agent.total, None),
        allocated_resources: resources_to(&agent.used, None),
        offered_resources: resources_to(&agent.offered, None),
    }
}

#[derive(Debug, Serialize)]
pub struct CapabilityJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
}

/// A framework's `FrameworkInfo`.
#[derive(Debug, Serialize)]
pub struct FrameworkInfoJson<'a> {
    pub id: IdRef<'a>,
    pub name: &'a str,
    pub user: &'a str,
    pub roles: [&'a str; 1],
    pub failover_timeout: f64,
    pub checkpoint: bool,
    pub capabilities: Vec<CapabilityJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<&'a str>,
}

pub fn framework_info(framework: &Framework) -> FrameworkInfoJson<'_> {
    FrameworkInfoJson {
        id: id(framework.id.as_str()),
        name: &framework.name,
        user: &framework.user,
        roles: [&framework.role],
        failover_timeout: framework.failover_timeout_secs,
        checkpoint: framework.checkpoint,
        capabilities: framework
            .capabilities
            .iter()
            .map(|kind| CapabilityJson { kind })
            .collect(),
        principal: framework.principal.as_deref(),
    }
}

/// A framework as `Response.GetFrameworks.Framework`.
#[derive(Debug, Serialize)]
pub struct FrameworkJson<'a> {
    pub framework_info: FrameworkInfoJson<'a>,
    pub active: bool,
    pub connected: bool,
    pub recovered: bool,
    pub allocated_resources: Vec<crate::mesos::Resource>,
    pub offered_resources: Vec<crate::mesos::Resource>,
}

pub fn framework(framework: &Framework) -> FrameworkJson<'_> {
    FrameworkJson {
        framework_info: framework_info(framework),
        active: framework.active,
        connected: framework.active,
        recovered: false,
        allocated_resources: resources_to(&framework.used, Some(&framework.role)),
        offered_resources: Vec::new(),
    }
}

/// One of a task's statuses, from its history.
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    pub task_id: IdRef<'a>,
    pub state: &'static str,
    pub agent_id: IdRef<'a>,
    pub timestamp: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub message: &'a str,
}

/// A task as Mesos's `Task`, its history as its `statuses`.
#[derive(Debug, Serialize)]
pub struct TaskJson<'a> {
    pub name: &'a str,
    pub task_id: IdRef<'a>,
    pub framework_id: IdRef<'a>,
    pub agent_id: IdRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<IdRef<'a>>,
    pub state: &'static str,
    pub resources: Vec<crate::mesos::Resource>,
    pub statuses: Vec<StatusJson<'a>>,
    pub user: &'a str,
    /// Its image, as a MESOS container's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::mesos::ContainerInfo>,
}

pub fn task(task: &Task) -> TaskJson<'_> {
    TaskJson {
        name: &task.name,
        task_id: id(task.id.as_str()),
        framework_id: id(task.framework_id.as_str()),
        agent_id: id(task.agent_id.as_str()),
        executor_id: task
            .executor_id
            .as_ref()
            .map(|executor| id(executor.as_str())),
        state: task.state.mesos_name(),
        resources: resources_to(&task.resources, None),
        statuses: task
            .history
            .iter()
            .map(|step| StatusJson {
                task_id: id(task.id.as_str()),
                state: step.state.mesos_name(),
                agent_id: id(task.agent_id.as_str()),
                timestamp: seconds(step.timestamp_ms),
                message: &step.message,
            })
            .collect(),
        user: &task.user,
        container: task.image.as_ref().map(|image| {
            crate::mesos::ContainerInfo::from_protocol(&strata_protocol::ContainerInfo {
                image: Some(image.clone()),
                ..Default::default()
            })
        }),
    }
}

/// `GET_AGENTS`.
#[derive(Debug, Serialize)]
pub struct GetAgents<'a> {
    pub agents: Vec<AgentJson<'a>>,
    pub recovered_agents: Vec<AgentInfoJson<'a>>,
}

pub fn get_agents(state: &MasterState) -> GetAgents<'_> {
    GetAgents {
        agents: state.agents.iter().map(agent).collect(),
        recovered_agents: Vec::new(),
    }
}

/// `GET_FRAMEWORKS`.
#[derive(Debug, Serialize)]
pub struct GetFrameworks<'a> {
    pub frameworks: Vec<FrameworkJson<'a>>,
    pub completed_frameworks: Vec<FrameworkJson<'a>>,
}

pub fn get_frameworks(state: &MasterState) -> GetFrameworks<'_> {
    GetFrameworks {
        frameworks: state.frameworks.iter().map(framework).collect(),
        completed_frameworks: state.completed_frameworks.iter().map(framework).collect(),
    }
}

/// `GET_TASKS`: running ones, those on unreachable agents, and recently
/// ended ones.
#[derive(Debug, Serialize)]
pub struct GetTasks<'a> {
    pub pending_tasks: Vec<TaskJson<'a>>,
    pub tasks: Vec<TaskJson<'a>>,
    pub unreachable_tasks: Vec<TaskJson<'a>>,
    pub completed_tasks: Vec<TaskJson<'a>>,
    pub orphan_tasks: Vec<TaskJson<'a>>,
}

pub fn get_tasks(state: &MasterState) -> GetTasks<'_> {
    let (unreachable, tasks): (Vec<&Task>, Vec<&Task>) = state
        .tasks
        .iter()
        .partition(|task| task.state == TaskState::Unreachable);
    GetTasks {
        pending_tasks: Vec::new(),
        tasks: tasks.into_iter().map(task).collect(),
        unreachable_tasks: unreachable.into_iter().map(task).collect(),
        completed_tasks: state.completed_tasks.iter().map(task).collect(),
        orphan_tasks: Vec::new(),
    }
}

#[derive(Debug, Serialize)]
pub struct ExecutorInfoJson<'a> {
    pub executor_id: IdRef<'a>,
    pub framework_id: IdRef<'a>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ExecutorJson<'a> {
    pub executor_info: ExecutorInfoJson<'a>,
    pub agent_id: IdRef<'a>,
}

/// `GET_EXECUTORS`: the custom executors that run tasks.
#[derive(Debug, Serialize)]
pub struct GetExecutors<'a> {
    pub executors: Vec<ExecutorJson<'a>>,
    pub orphan_executors: Vec<ExecutorJson<'a>>,
}

pub fn get_executors(state: &MasterState) -> GetExecutors<'_> {
    let mut seen = std::collections::BTreeSet::new();
    let executors = state
        .tasks
        .iter()
        .filter_map(|task| {
            let executor_id = task.executor_id.as_ref()?;
            seen.insert((&task.framework_id, executor_id, &task.agent_id))
                .then(|| ExecutorJson {
                    executor_info: ExecutorInfoJson {
                        executor_id: id(executor_id.as_str()),
                        framework_id: id(task.framework_id.as_str()),
                        kind: "CUSTOM",
                    },
                    agent_id: id(task.agent_id.as_str()),
                })
        })
        .collect();
    GetExecutors {
        executors,
        orphan_executors: Vec::new(),
    }
}

/// `GET_STATE`: tasks, executors, frameworks and agents at once.
#[derive(Debug, Serialize)]
pub struct GetState<'a> {
    pub get_tasks: GetTasks<'a>,
    pub get_executors: GetExecutors<'a>,
    pub get_frameworks: GetFrameworks<'a>,
    pub get_agents: GetAgents<'a>,
}

pub fn get_state(state: &MasterState) -> GetState<'_> {
    GetState {
        get_tasks: get_tasks(state),
        get_executors: get_executors(state),
        get_frameworks: get_frameworks(state),
        get_agents: get_agents(state),
    }
}

/// `GET_ROLES`: each role with frameworks, its weight and what its
/// frameworks use.
pub fn get_roles(state: &MasterState) -> Value {
    let mut roles: std::collections::BTreeMap<&str, (Vec<Id>, protocol::Resources)> =
        std::collections::BTreeMap::new();
    for framework in &state.frameworks {
        let (frameworks, used) = roles.entry(&framework.role).or_default();
        frameworks.push(Id::of(&framework.id));
        used.add(&framework.used);
    }
    let roles: Vec<Value> = roles
        .into_iter()
        .map(|(name, (frameworks, used))| {
            json!({
                "name": name,
                "weight": 1.0,
                "frameworks": frameworks,
                "resources": resources_to(&used, Some(name)),
            })
        })
        .collect();
    json!({ "roles": roles })
}

/// The master's MasterInfo, from its view.
pub fn master_info(state: &MasterState) -> Option<MasterInfo> {
    let pid: strata_runtime::Upid = state.pid.parse().ok()?;
    Some(MasterInfo::of(&pid, &state.id))
}

/// `GET_MASTER`.
pub fn get_master(state: &MasterState) -> Value {
    json!({
        "master_info": master_info(state),
        "start_time": seconds(state.start_time_ms),
        "elected_time": seconds(state.start_time_ms),
    })
}

/// `GET_VERSION`.
pub fn get_version() -> Value {
    json!({ "version_info": { "version": crate::MESOS_COMPATIBLE_VERSION } })
}

/// `GET_FLAGS` of flags given as name and value.
pub fn get_flags(flags: &[(String, String)]) -> Value {
    let flags: Vec<Value> = flags
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    json!({ "flags": flags })
}

/// `GET_METRICS`.
pub fn get_metrics(metrics: &[Metric]) -> Value {
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|metric| json!({ "name": metric.name, "value": metric.value }))
        .collect();
    json!({ "metrics": metrics })
}

/// An event of the operator stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// First on every stream: the state the events that follow change.
    Subscribed(std::sync::Arc<MasterState>),
    TaskAdded(Task),
    TaskUpdated {
        framework_id: FrameworkId,
        status: protocol::TaskStatus,
        /// Who the task runs as (for the view ACLs; not written).
        user: String,
    },
    AgentAdded(Agent),
    AgentRemoved(AgentId),
    FrameworkAdded(Framework),
    FrameworkUpdated(Framework),
    FrameworkRemoved(Framework),
    Heartbeat,
}

/// `SUBSCRIBED`'s body.
#[derive(Serialize)]
struct Subscribed<'a> {
    get_state: GetState<'a>,
    heartbeat_interval_seconds: f64,
}

/// An event's JSON: `{"type": "X_Y", "x_y": body}` (just the type when
/// there is no body).
fn event_json<T: Serialize>(kind: &'static str, body: Option<&T>) -> Vec<u8> {
    struct EventJson<'a, T> {
        kind: &'static str,
        field: &'a str,
        body: Option<&'a T>,
    }
    impl<T: Serialize> Serialize for EventJson<'_, T> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(None)?;
            map.serialize_entry("type", self.kind)?;
            if let Some(body) = self.body {
                map.serialize_entry(self.field, body)?;
            }
            map.end()
        }
    }
    // Serializing these types cannot fail: no maps with non-string keys,
    // no serializers that refuse.
    serde_json::to_vec(&EventJson {
        kind,
        field: &kind.to_lowercase(),
        body,
    })
    .unwrap_or_default()
}

impl Event {
    /// Its JSON text, as `master.proto`'s `Event`.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Event::Subscribed(state) => event_json(
                "SUBSCRIBED",
                Some(&Subscribed {
                    get_state: get_state(state),
                    heartbeat_interval_seconds: HEARTBEAT_INTERVAL_SECONDS,
                }),
            ),
            Event::TaskAdded(added) => {
                event_json("TASK_ADDED", Some(&json!({ "task": task(added) })))
            }
            Event::TaskUpdated {
                framework_id,
                status,
                ..
            } => event_json(
                "TASK_UPDATED",
                Some(&json!({
                    "framework_id": id(framework_id.as_str()),
                    "status": crate::mesos::TaskStatus::from_protocol(status),
                    "state": status.state.mesos_name(),
                })),
            ),
            Event::AgentAdded(added) => {
                event_json("AGENT_ADDED", Some(&json!({ "agent": agent(added) })))
            }
            Event::AgentRemoved(agent_id) => event_json(
                "AGENT_REMOVED",
                Some(&json!({ "agent_id": id(agent_id.as_str()) })),
            ),
            Event::FrameworkAdded(added) => event_json(
                "FRAMEWORK_ADDED",
                Some(&json!({ "framework": framework(added) })),
            ),
            Event::FrameworkUpdated(updated) => event_json(
                "FRAMEWORK_UPDATED",
                Some(&json!({ "framework": framework(updated) })),
            ),
            Event::FrameworkRemoved(removed) => event_json(
                "FRAMEWORK_REMOVED",
                Some(&json!({ "framework_info": framework_info(removed) })),
            ),
            Event::Heartbeat => event_json::<Value>("HEARTBEAT", None),
        }
    }

    /// Its RecordIO record.
    pub fn record(&self) -> Vec<u8> {
        crate::recordio::encode(&self.bytes())
    }
}

/// v0 resources: every standard scalar (0 when absent), the rest, and
/// ports as range text.
#[derive(Debug)]
pub struct ResourcesV0<'a>(pub &'a protocol::Resources);

impl Serialize for ResourcesV0<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const STANDARD: [&str; 4] = ["cpus", "mem", "disk", "gpus"];
        let mut map = serializer.serialize_map(None)?;
        for name in STANDARD {
            map.serialize_entry(name, &self.0.scalar_total(name).as_f64())?;
        }
        for name in self.0.scalar_names() {
            if !STANDARD.contains(&name) {
                map.serialize_entry(name, &self.0.scalar_total(name).as_f64())?;
            }
        }
        let ports = self.0.ports();
        if !ports.is_empty() {
            map.serialize_entry("ports", &ports.to_string())?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
struct StatusV0 {
    state: &'static str,
    timestamp: f64,
}

#[derive(Debug, Serialize)]
struct TaskV0<'a> {
    id: &'a str,
    name: &'a str,
    framework_id: &'a str,
    executor_id: &'a str,
    slave_id: &'a str,
    state: &'static str,
    resources: ResourcesV0<'a>,
    user: &'a str,
    sandbox: Option<&'a str>,
    statuses: Vec<StatusV0>,
}

fn task_v0(task: &Task) -> TaskV0<'_> {
    TaskV0 {
        id: task.id.as_str(),
        name: &task.name,
        framework_id: task.framework_id.as_str(),
        executor_id: task
            .executor_id
            .as_ref()
            .map_or("", |executor| executor.as_str()),
        slave_id: task.agent_id.as_str(),
        state: task.state.mesos_name(),
        resources: ResourcesV0(&task.resources),
        user: &task.user,
        sandbox: task.sandbox.as_deref(),
        statuses: task
            .history
            .iter()
            .map(|step| StatusV0 {
                state: step.state.mesos_name(),
                timestamp: seconds(step.timestamp_ms),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
struct OfferV0<'a> {
    id: &'a str,
    framework_id: &'a str,
    slave_id: &'a str,
    resources: ResourcesV0<'a>,
}

#[derive(Debug, Serialize)]
struct FrameworkV0<'a> {
    id: &'a str,
    name: &'a str,
    pid: &'a str,
    user: &'a str,
    role: &'a str,
    principal: Option<&'a str>,
    active: bool,
    connected: bool,
    recovered: bool,
    failover_timeout: f64,
    checkpoint: bool,
    capabilities: &'a [String],
    hostname: &'static str,
    webui_url: &'static str,
    resources: ResourcesV0<'a>,
    used_resources: ResourcesV0<'a>,
    offered_resources: protocol::Resources,
    tasks: Vec<TaskV0<'a>>,
    completed_tasks: Vec<TaskV0<'a>>,
    offers: Vec<OfferV0<'a>>,
    executors: [(); 0],
}

/// Serializes owned resources as [`ResourcesV0`].
fn owned_v0<S: serde::Serializer>(
    resources: &protocol::Resources,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    ResourcesV0(resources).serialize(serializer)
}

#[derive(Debug, Serialize)]
struct SlaveV0<'a> {
    id: &'a str,
    pid: &'a str,
    hostname: &'a str,
    port: u16,
    active: bool,
    version: &'static str,
    resources: ResourcesV0<'a>,
    used_resources: ResourcesV0<'a>,
    offered_resources: ResourcesV0<'a>,
    #[serde(serialize_with = "owned_v0")]
    unreserved_resources: protocol::Resources,
    #[serde(serialize_with = "crate::views::attributes_text::serialize")]
    attributes: &'a protocol::Attributes,
}

#[derive(Debug, Serialize)]
struct StateV0<'a> {
    version: &'static str,
    strata_version: &'static str,
    id: &'a str,
    pid: &'a str,
    hostname: String,
    start_time: f64,
    elected_time: f64,
    leader: &'a str,
    leader_info: Option<MasterInfo>,
    activated_slaves: usize,
    deactivated_slaves: usize,
    unreachable_slaves: usize,
    flags: std::collections::BTreeMap<&'a str, &'a str>,
    slaves: Vec<SlaveV0<'a>>,
    frameworks: Vec<FrameworkV0<'a>>,
    completed_frameworks: Vec<FrameworkV0<'a>>,
    orphan_tasks: [(); 0],
    unregistered_frameworks: [(); 0],
}

/// The v0 `/master/state` (also `/master/state.json`, `/state.json`):
/// Mesos's field names (`slaves`, `frameworks`, `completed_frameworks`,
/// `leader`, ...), for tools that read them, as JSON.
pub fn state_v0<'a>(
    state: &'a MasterState,
    flags: &[(String, String)],
) -> serde_json::Result<Vec<u8>> {
    use std::collections::BTreeMap;
    // Each framework's tasks and offers, found in one pass.
    let mut running: BTreeMap<&FrameworkId, Vec<TaskV0<'a>>> = BTreeMap::new();
    for task in &state.tasks {
        running
            .entry(&task.framework_id)
            .or_default()
            .push(task_v0(task));
    }
    let mut completed: BTreeMap<&FrameworkId, Vec<TaskV0<'a>>> = BTreeMap::new();
    for task in &state.completed_tasks {
        completed
            .entry(&task.framework_id)
            .or_default()
            .push(task_v0(task));
    }
    let mut offers: BTreeMap<&FrameworkId, (Vec<OfferV0<'a>>, protocol::Resources)> =
        BTreeMap::new();
    for offer in &state.offers {
        let (list, offered) = offers.entry(&offer.framework_id).or_default();
        offered.add(&offer.resources);
        list.push(OfferV0 {
            id: offer.id.as_str(),
            framework_id: offer.framework_id.as_str(),
            slave_id: offer.agent_id.as_str(),
            resources: ResourcesV0(&offer.resources),
        });
    }
    let mut framework_v0 = |framework: &'a Framework| -> FrameworkV0<'a> {
        let (offers, offered) = offers.remove(&framework.id).unwrap_or_default();
        FrameworkV0 {
            id: framework.id.as_str(),
            name: &framework.name,
            pid: framework.pid.as_deref().unwrap_or_default(),
            user: &framework.user,
            role: &framework.role,
            principal: framework.principal.as_deref(),
            active: framework.active,
            connected: framework.active,
            recovered: false,
            failover_timeout: framework.failover_timeout_secs,
            checkpoint: framework.checkpoint,
            capabilities: &framework.capabilities,
            hostname: "",
            webui_url: "",
            resources: ResourcesV0(&framework.used),
            used_resources: ResourcesV0(&framework.used),
            offered_resources: offered,
            tasks: running.remove(&framework.id).unwrap_or_default(),
            completed_tasks: completed.remove(&framework.id).unwrap_or_default(),
            offers,
            executors: [],
        }
    };
    let frameworks: Vec<FrameworkV0<'a>> = state.frameworks.iter().map(&mut framework_v0).collect();
    let completed_frameworks: Vec<FrameworkV0<'a>> = state
        .completed_frameworks
        .iter()
        .map(&mut framework_v0)
        .collect();
    let active = state
        .agents
        .iter()
        .filter(|agent| agent.status == AgentStatus::Active)
        .count();
    let info = master_info(state);
    serde_json::to_vec(&StateV0 {
        version: crate::MESOS_COMPATIBLE_VERSION,
        strata_version: env!("CARGO_PKG_VERSION"),
        id: &state.id,
        pid: &state.pid,
        hostname: info
            .as_ref()
            .map(|info| info.hostname.clone())
            .unwrap_or_default(),
        start_time: seconds(state.start_time_ms),
        elected_time: seconds(state.start_time_ms),
        leader: &state.pid,
        leader_info: info,
        activated_slaves: active,
        deactivated_slaves: 0,
        unreachable_slaves: state.agents.len() - active,
        flags: flags
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect(),
        slaves: state
            .agents
            .iter()
            .map(|agent| SlaveV0 {
                id: agent.id.as_str(),
                pid: &agent.pid,
                hostname: &agent.hostname,
                port: address_port(&agent.pid),
                active: agent.status == AgentStatus::Active,
                version: crate::MESOS_COMPATIBLE_VERSION,
                resources: ResourcesV0(&agent.total),
                used_resources: ResourcesV0(&agent.used),
                offered_resources: ResourcesV0(&agent.offered),
                unreserved_resources: agent.total.unreserved(),
                attributes: &agent.attributes,
            })
            .collect(),
        frameworks,
        completed_frameworks,
        orphan_tasks: [],
        unregistered_frameworks: [],
    })
}

/// The v0 `/master/flags`.
pub fn flags_v0(flags: &[(String, String)]) -> Value {
    json!({
        "flags": flags
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect::<serde_json::Map<_, _>>(),
    })
}
