//! The v1 executor API (`executor.proto`): the calls a custom executor
//! POSTs to its agent's `/api/v1/executor` as JSON and the events it
//! reads from its subscription's RecordIO stream, with their translation
//! to and from Strata's executor messages. Client libraries written for
//! Mesos (pymesos's `MesosExecutorDriver`, say) send and read these
//! shapes; the agent's endpoint parses with them.

use serde::{Deserialize, Serialize};
use strata_protocol::{self as protocol, ExecutorId, FrameworkId, ToAgent, ToExecutor};
use strata_runtime::Blob;

use crate::ApiError;
use crate::mesos::{
    ExecutorInfo, FrameworkInfo, Id, TaskInfo, TaskStatus, decode_bytes, encode_bytes, uuid_to,
};

/// Every call type of Mesos 1.11's executor API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    Update,
    Message,
}

/// What an executor that subscribes again says it has in flight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub unacknowledged_tasks: Vec<TaskInfo>,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub unacknowledged_updates: Vec<Update>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Base64.
    pub data: String,
}

/// A call, as an executor POSTs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    #[serde(rename = "type")]
    pub kind: CallType,
    pub framework_id: Id,
    pub executor_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

impl Call {
    pub fn parse(body: &[u8]) -> Result<Call, ApiError> {
        serde_json::from_slice(body).map_err(|error| ApiError::Json(error.to_string()))
    }

    /// The framework and executor the call is for.
    pub fn ids(&self) -> Result<(FrameworkId, ExecutorId), ApiError> {
        Ok((
            self.framework_id.parse("framework_id")?,
            self.executor_id.parse("executor_id")?,
        ))
    }

    /// The agent message an UPDATE or MESSAGE stands for (SUBSCRIBE opens
    /// a stream and is answered by it, not here). An update's status is
    /// the executor's: its source is the executor and it names the
    /// executor, whatever the JSON says, and it must carry a uuid (the
    /// update's id, for the acknowledgement).
    pub fn to_protocol(&self) -> Result<ToAgent, ApiError> {
        let (framework_id, executor_id) = self.ids()?;
        match self.kind {
            CallType::Subscribe => Err(ApiError::invalid(
                "type",
                "SUBSCRIBE opens a stream; it is not sent on one",
            )),
            CallType::Update => {
                let update = self
                    .update
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid("update", "the call's body is missing"))?;
                let mut status = update.status.to_protocol()?;
                if status.update_id.is_none() {
                    return Err(ApiError::invalid(
                        "update.status.uuid",
                        "an executor's update carries a uuid",
                    ));
                }
                status.source = protocol::Source::Executor;
                status.executor_id = Some(executor_id.clone());
                status.agent_id = None;
                status.sandbox = None;
                Ok(ToAgent::ExecutorStatus {
                    framework_id,
                    executor_id,
                    status,
                })
            }
            CallType::Message => {
                let message = self
                    .message
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid("message", "the call's body is missing"))?;
                let data = decode_bytes(&message.data, "message.data")?;
                Ok(ToAgent::FrameworkMessage {
                    framework_id,
                    executor_id,
                    data: Blob(data),
                })
            }
        }
    }
}

/// The agent an executor runs on, as `SUBSCRIBED` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: Id,
    pub hostname: String,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub resources: Vec<crate::mesos::Resource>,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub attributes: Vec<crate::mesos::Attribute>,
}

impl AgentInfo {
    pub fn from_protocol(agent_id: &protocol::AgentId, info: &protocol::AgentInfo) -> AgentInfo {
        AgentInfo {
            id: Id::of(agent_id),
            hostname: info.hostname.clone(),
            resources: crate::mesos::resources_to(&info.resources, None),
            attributes: crate::mesos::attributes_to(&info.attributes),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub executor_info: ExecutorInfo,
    pub framework_info: FrameworkInfo,
    pub agent_info: AgentInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub task: TaskInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub task_id: Id,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub task_id: Id,
    /// The acknowledged update's uuid, base64.
    pub uuid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub message: String,
}

/// Every event type of the executor API that Strata sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    Launch,
    LaunchGroup,
    Kill,
    Acknowledged,
    Message,
    Shutdown,
    Error,
    Heartbeat,
}

/// An event of the executor's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledged>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

impl Event {
    fn of(kind: EventType) -> Event {
        Event {
            kind,
            subscribed: None,
            launch: None,
            kill: None,
            acknowledged: None,
            message: None,
            error: None,
        }
    }

    /// The first event of a subscription.
    pub fn subscribed(
        executor: &protocol::ExecutorInfo,
        framework: &protocol::FrameworkInfo,
        agent_id: &protocol::AgentId,
        agent: &protocol::AgentInfo,
        framework_id: &FrameworkId,
    ) -> Event {
        let mut executor_info = ExecutorInfo::from_protocol(executor);
        executor_info.framework_id = Some(Id::of(framework_id));
        let mut framework_info = FrameworkInfo::from_protocol(framework);
        framework_info.id = Some(Id::of(framework_id));
        Event {
            subscribed: Some(Subscribed {
                executor_info,
                framework_info,
                agent_info: AgentInfo::from_protocol(agent_id, agent),
            }),
            ..Event::of(EventType::Subscribed)
        }
    }

    /// The event for what the agent tells an executor; `None` for what
    /// has no event (a registration an HTTP subscription answers
    /// itself, a reconnection it makes by subscribing again).
    pub fn from_protocol(message: &ToExecutor) -> Option<Event> {
        Some(match message {
            ToExecutor::ExecutorRegistered { .. } | ToExecutor::Reconnect => return None,
            ToExecutor::LaunchTask { task } => Event {
                launch: Some(Launch {
                    task: TaskInfo::from_protocol(task),
                }),
                ..Event::of(EventType::Launch)
            },
            ToExecutor::KillTask { task_id } => Event {
                kill: Some(Kill {
                    task_id: Id::of(task_id),
                }),
                ..Event::of(EventType::Kill)
            },
            ToExecutor::Shutdown => Event::of(EventType::Shutdown),
            ToExecutor::FrameworkMessage { data } => Event {
                message: Some(Message {
                    data: encode_bytes(&data.0),
                }),
                ..Event::of(EventType::Message)
            },
        })
    }

    /// The acknowledgement of the executor's update `update_id` of
    /// `task_id`.
    pub fn acknowledged(task_id: &protocol::TaskId, update_id: protocol::UpdateId) -> Event {
        Event {
            acknowledged: Some(Acknowledged {
                task_id: Id::of(task_id),
                uuid: uuid_to(update_id),
            }),
            ..Event::of(EventType::Acknowledged)
        }
    }

    pub fn error(message: impl Into<String>) -> Event {
        Event {
            error: Some(Error {
                message: message.into(),
            }),
            ..Event::of(EventType::Error)
        }
    }

    pub fn heartbeat() -> Event {
        Event::of(EventType::Heartbeat)
    }

    /// Its RecordIO record.
    pub fn record(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string
        // keys, no custom serializers that refuse.
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::recordio::encode(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pymesos's `MesosExecutorDriver` sends, as captured from it.
    const SUBSCRIBE: &str = r#"{"type": "SUBSCRIBE", "framework_id": {"value": "m-F1"}, "executor_id": {"value": "ex-1"}, "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []}}"#;
    const UPDATE: &str = r#"{"type": "UPDATE", "executor_id": {"value": "ex-1"}, "framework_id": {"value": "m-F1"}, "update": {"status": {"task_id": {"value": "t2"}, "state": "TASK_FAILED", "message": "exit code 3", "timestamp": 1795818313, "uuid": "bTMHzeBsRaettiusQp3jPA==", "source": "SOURCE_EXECUTOR"}}}"#;
    const MESSAGE: &str = r#"{"type": "MESSAGE", "executor_id": {"value": "ex-1"}, "framework_id": {"value": "m-F1"}, "message": {"data": "ZWNobzpoaSB0aGVyZQ=="}}"#;

    #[test]
    fn calls_of_a_mesos_executor_library_translate() {
        let subscribe = Call::parse(SUBSCRIBE.as_bytes()).unwrap();
        assert_eq!(subscribe.kind, CallType::Subscribe);
        let (framework_id, executor_id) = subscribe.ids().unwrap();
        assert_eq!(
            (framework_id.as_str(), executor_id.as_str()),
            ("m-F1", "ex-1")
        );
        assert!(subscribe.to_protocol().is_err());

        let ToAgent::ExecutorStatus {
            executor_id,
            status,
            ..
        } = Call::parse(UPDATE.as_bytes())
            .unwrap()
            .to_protocol()
            .unwrap()
        else {
            panic!("not a status");
        };
        assert_eq!(status.state, protocol::TaskState::Failed);
        assert_eq!(status.message, "exit code 3");
        assert_eq!(status.executor_id, Some(executor_id));
        assert_eq!(status.timestamp_ms, 1_795_818_313_000);
        assert_eq!(
            uuid_to(status.update_id.unwrap()),
            "bTMHzeBsRaettiusQp3jPA=="
        );

        let ToAgent::FrameworkMessage { data, .. } = Call::parse(MESSAGE.as_bytes())
            .unwrap()
            .to_protocol()
            .unwrap()
        else {
            panic!("not a message");
        };
        assert_eq!(data.0, b"echo:hi there");
    }

    #[test]
    fn bad_calls_are_refused_naming_what_is_wrong() {
        let refused = |json: &str| {
            Call::parse(json.as_bytes())
                .and_then(|call| call.to_protocol())
                .unwrap_err()
                .to_string()
        };
        assert!(refused("{").contains("malformed"));
        assert!(refused(r#"{"type": "LAUNCH", "framework_id": {"value": "f"}, "executor_id": {"value": "e"}}"#).contains("malformed"));
        assert!(refused(r#"{"type": "UPDATE", "framework_id": {"value": "f"}, "executor_id": {"value": "e"}}"#).contains("update"));
        let without_uuid = UPDATE.replace(r#", "uuid": "bTMHzeBsRaettiusQp3jPA==""#, "");
        assert!(refused(&without_uuid).contains("uuid"));
        let bad_id = UPDATE.replace(r#""value": "ex-1""#, r#""value": "../x""#);
        assert!(refused(&bad_id).contains("executor_id"));
        let bad_data = MESSAGE.replace("ZWNobzpoaSB0aGVyZQ==", "not base64!");
        assert!(refused(&bad_data).contains("message.data"));
    }

    #[test]
    fn events_are_written_as_the_library_reads_them() {
        let executor = protocol::ExecutorInfo {
            executor_id: "ex-1".parse().unwrap(),
            name: "ex".into(),
            command: protocol::CommandInfo::shell("./executor.py"),
            resources: "cpus:0.1;mem:32".parse().unwrap(),
        };
        let framework = protocol::FrameworkInfo::new("fw", "nobody");
        let agent = protocol::AgentInfo {
            id: None,
            hostname: "h".into(),
            resources: "cpus:2".parse().unwrap(),
            attributes: Default::default(),
        };
        let framework_id: FrameworkId = "m-F1".parse().unwrap();
        let subscribed = Event::subscribed(
            &executor,
            &framework,
            &"m-S1".parse().unwrap(),
            &agent,
            &framework_id,
        );
        let json: serde_json::Value = serde_json::from_slice(&subscribed.record()[4..]).unwrap();
        assert_eq!(json["type"], "SUBSCRIBED");
        let body = &json["subscribed"];
        assert_eq!(body["executor_info"]["executor_id"]["value"], "ex-1");
        assert_eq!(body["framework_info"]["id"]["value"], "m-F1");
        assert_eq!(body["agent_info"]["id"]["value"], "m-S1");

        let kill = Event::from_protocol(&ToExecutor::KillTask {
            task_id: "t1".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(
            serde_json::to_value(&kill).unwrap(),
            serde_json::json!({"type": "KILL", "kill": {"task_id": {"value": "t1"}}})
        );
        let acknowledged = Event::acknowledged(&"t1".parse().unwrap(), protocol::UpdateId(1));
        let json = serde_json::to_value(&acknowledged).unwrap();
        assert_eq!(json["acknowledged"]["uuid"], "AAAAAAAAAAAAAAAAAAAAAQ==");
        assert!(Event::from_protocol(&ToExecutor::Reconnect).is_none());
        assert_eq!(
            serde_json::to_value(Event::from_protocol(&ToExecutor::Shutdown).unwrap()).unwrap(),
            serde_json::json!({"type": "SHUTDOWN"})
        );
    }
}
