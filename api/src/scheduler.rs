//! The v1 scheduler API (`scheduler.proto`): the calls a framework POSTs
//! as JSON and the events it reads from its subscription's RecordIO
//! stream, with their translation to Strata's messages.
//!
//! A call is one object with a `type` and the body of that type under its
//! lower-case name (`{"type": "DECLINE", "decline": {…}}`), as protobuf's
//! JSON has it; [`Call::to_protocol`] checks that the body is there and
//! turns the call into the [`ToMaster`] message an actor framework sends.

use serde::{Deserialize, Serialize};
use strata_protocol::{self as protocol, ToMaster, ToScheduler};
use strata_runtime::Blob;

use crate::ApiError;
use crate::mesos::{
    FrameworkInfo, Id, MasterInfo, Offer, TaskInfo, TaskStatus, decode_bytes, encode_bytes,
    uuid_from,
};

/// Every call type of Mesos 1.11's scheduler API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    Teardown,
    Accept,
    Decline,
    AcceptInverseOffers,
    DeclineInverseOffers,
    Revive,
    Kill,
    Shutdown,
    Acknowledge,
    AcknowledgeOperationStatus,
    Reconcile,
    ReconcileOperations,
    Message,
    Request,
    Suppress,
    UpdateFramework,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    pub framework_info: FrameworkInfo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    Launch,
    LaunchGroup,
    Reserve,
    Unreserve,
    Create,
    Destroy,
    GrowVolume,
    ShrinkVolume,
    CreateDisk,
    DestroyDisk,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskGroupInfo {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub tasks: Vec<TaskInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchGroup {
    /// The executor the group runs under; its tasks name it too.
    pub executor: crate::mesos::ExecutorInfo,
    pub task_group: TaskGroupInfo,
}

/// An operation on offered resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: OperationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_group: Option<LaunchGroup>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub offer_ids: Vec<Id>,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub operations: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<crate::mesos::Filters>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decline {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub offer_ids: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<crate::mesos::Filters>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    pub executor_id: Id,
    pub agent_id: Id,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledge {
    pub agent_id: Id,
    pub task_id: Id,
    pub uuid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileTask {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconcile {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub agent_id: Id,
    pub executor_id: Id,
    /// Base64.
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateFramework {
    pub framework_info: FrameworkInfo,
}

/// One call, as a framework POSTs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    #[serde(rename = "type")]
    pub kind: CallType,
    /// Every call but the first SUBSCRIBE names its framework.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<Shutdown>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_framework: Option<UpdateFramework>,
}

/// What a call asks of the master.
#[derive(Clone, Debug, PartialEq)]
pub enum Translated {
    /// A message for the master, as an actor framework would send it.
    ToMaster(ToMaster),
    /// Nothing to do (a REQUEST, which Mesos's allocator ignores too).
    Nothing,
}

fn body<'a, T>(body: &'a Option<T>, name: &'static str) -> Result<&'a T, ApiError> {
    body.as_ref()
        .ok_or_else(|| ApiError::invalid(name, "the call's body is missing"))
}

fn offer_ids(ids: &[Id]) -> Result<Vec<protocol::OfferId>, ApiError> {
    if ids.len() > protocol::offers::MAX_OFFERS_PER_CALL {
        return Err(ApiError::invalid(
            "offer_ids",
            format!(
                "{} offers; at most {} per call",
                ids.len(),
                protocol::offers::MAX_OFFERS_PER_CALL
            ),
        ));
    }
    ids.iter().map(|id| id.parse("offer_ids")).collect()
}

impl Call {
    /// Reads a call from a request body.
    pub fn parse(body: &[u8]) -> Result<Call, ApiError> {
        serde_json::from_slice(body).map_err(|error| ApiError::Json(error.to_string()))
    }

    /// The framework a call (other than a first SUBSCRIBE) names.
    pub fn framework_id(&self) -> Result<Option<protocol::FrameworkId>, ApiError> {
        Id::parse_optional(&self.framework_id, "framework_id")
    }

    /// The master message of a call by framework `framework_id` (the one
    /// its stream subscribed). SUBSCRIBE is answered by the stream, not
    /// here.
    pub fn to_protocol(
        &self,
        framework_id: &protocol::FrameworkId,
    ) -> Result<Translated, ApiError> {
        let framework_id = framework_id.clone();
        let message = match self.kind {
            CallType::Subscribe => {
                return Err(ApiError::invalid(
                    "type",
                    "SUBSCRIBE opens a stream; it is not sent on one",
                ));
            }
            CallType::Teardown => ToMaster::Teardown { framework_id },
            CallType::Accept => {
                let accept = body(&self.accept, "accept")?;
                let mut tasks = Vec::new();
                for operation in &accept.operations {
                    match operation.kind {
                        OperationType::Launch => {
                            for task in &body(&operation.launch, "launch")?.task_infos {
                                tasks.push(task.to_protocol()?);
                            }
                        }
                        OperationType::LaunchGroup => {
                            let group = body(&operation.launch_group, "launch_group")?;
                            let executor = group.executor.to_protocol()?;
                            for task in &group.task_group.tasks {
                                let mut task = task.to_protocol()?;
                                task.kind = protocol::TaskKind::Executor(executor.clone());
                                tasks.push(task);
                            }
                        }
                        other => {
                            return Err(ApiError::Unsupported(format!(
                                "{other:?} operations (only LAUNCH and LAUNCH_GROUP)"
                            )));
                        }
                    }
                }
                if tasks.len() > protocol::offers::MAX_TASKS_PER_ACCEPT {
                    return Err(ApiError::invalid(
                        "accept",
                        format!(
                            "{} tasks; at most {} per accept",
                            tasks.len(),
                            protocol::offers::MAX_TASKS_PER_ACCEPT
                        ),
                    ));
                }
                ToMaster::Accept {
                    framework_id,
                    offer_ids: offer_ids(&accept.offer_ids)?,
                    operations: vec![protocol::Operation::Launch(tasks)],
                    filters: accept
                        .filters
                        .as_ref()
                        .map(crate::mesos::Filters::to_protocol)
                        .transpose()?
                        .unwrap_or_default(),
                }
            }
            CallType::Decline => {
                let decline = body(&self.decline, "decline")?;
                ToMaster::Decline {
                    framework_id,
                    offer_ids: offer_ids(&decline.offer_ids)?,
                    filters: decline
                        .filters
                        .as_ref()
                        .map(crate::mesos::Filters::to_protocol)
                        .transpose()?
                        .unwrap_or_default(),
                }
            }
            CallType::Revive => ToMaster::Revive { framework_id },
            CallType::Suppress => ToMaster::Suppress { framework_id },
            CallType::Kill => {
                let kill = body(&self.kill, "kill")?;
                ToMaster::Kill {
                    framework_id,
                    task_id: kill.task_id.parse("kill.task_id")?,
                }
            }
            CallType::Shutdown => {
                let shutdown = body(&self.shutdown, "shutdown")?;
                ToMaster::ShutdownExecutor {
                    framework_id,
                    agent_id: shutdown.agent_id.parse("shutdown.agent_id")?,
                    executor_id: shutdown.executor_id.parse("shutdown.executor_id")?,
                }
            }
            CallType::Acknowledge => {
                let acknowledge = body(&self.acknowledge, "acknowledge")?;
                ToMaster::Acknowledge {
                    framework_id,
                    agent_id: acknowledge.agent_id.parse("acknowledge.agent_id")?,
                    task_id: acknowledge.task_id.parse("acknowledge.task_id")?,
                    update_id: uuid_from(&acknowledge.uuid, "acknowledge.uuid")?,
                }
            }
            CallType::Reconcile => {
                let reconcile = self.reconcile.clone().unwrap_or_default();
                let tasks = reconcile
                    .tasks
                    .iter()
                    .map(|task| {
                        Ok(protocol::ReconcileTask {
                            task_id: task.task_id.parse("reconcile.tasks.task_id")?,
                            agent_id: Id::parse_optional(
                                &task.agent_id,
                                "reconcile.tasks.agent_id",
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                ToMaster::Reconcile {
                    framework_id,
                    tasks,
                }
            }
            CallType::Message => {
                let message = body(&self.message, "message")?;
                ToMaster::FrameworkMessage {
                    framework_id,
                    agent_id: message.agent_id.parse("message.agent_id")?,
                    executor_id: message.executor_id.parse("message.executor_id")?,
                    data: Blob(decode_bytes(&message.data, "message.data")?),
                }
            }
            CallType::Request => return Ok(Translated::Nothing),
            CallType::UpdateFramework => {
                let update = body(&self.update_framework, "update_framework")?;
                ToMaster::UpdateFramework {
                    framework_id,
                    info: update.framework_info.to_protocol()?,
                }
            }
            other @ (CallType::AcceptInverseOffers
            | CallType::DeclineInverseOffers
            | CallType::AcknowledgeOperationStatus
            | CallType::ReconcileOperations) => {
                return Err(ApiError::Unsupported(format!(
                    "{other:?} (Strata makes no inverse offers or operation feedback)"
                )));
            }
        };
        Ok(Translated::ToMaster(message))
    }
}

/// Every event type of Mesos 1.11's scheduler API that Strata sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    Offers,
    Rescind,
    Update,
    Message,
    Failure,
    Error,
    Heartbeat,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub framework_id: Id,
    pub heartbeat_interval_seconds: f64,
    pub master_info: MasterInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offers {
    pub offers: Vec<Offer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescind {
    pub offer_id: Id,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<Id>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub message: String,
}

/// One event on a subscription's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Offers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind: Option<Rescind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

/// Mesos's heartbeat interval for subscriptions.
pub const HEARTBEAT_INTERVAL_SECONDS: f64 = 15.0;

impl Event {
    fn of(kind: EventType) -> Event {
        Event {
            kind,
            subscribed: None,
            offers: None,
            rescind: None,
            update: None,
            message: None,
            failure: None,
            error: None,
        }
    }

    pub fn heartbeat() -> Event {
        Event::of(EventType::Heartbeat)
    }

    pub fn subscribed(framework_id: &protocol::FrameworkId, master: MasterInfo) -> Event {
        Event {
            subscribed: Some(Subscribed {
                framework_id: Id::of(framework_id),
                heartbeat_interval_seconds: HEARTBEAT_INTERVAL_SECONDS,
                master_info: master,
            }),
            ..Event::of(EventType::Subscribed)
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

    /// The event of a master's message to a framework of role `role`;
    /// `None` for what a v1 framework is not told (its SUBSCRIBED comes
    /// from [`Event::subscribed`]).
    pub fn from_protocol(message: &ToScheduler, role: &str) -> Option<Event> {
        let event = match message {
            // HTTP frameworks reach standbys only to be redirected.
            ToScheduler::Subscribed { .. } | ToScheduler::NotLeader { .. } => return None,
            ToScheduler::Offers(offers) => Event {
                offers: Some(Offers {
                    offers: offers
                        .iter()
                        .map(|offer| Offer::from_protocol(offer, role))
                        .collect(),
                }),
                ..Event::of(EventType::Offers)
            },
            ToScheduler::OfferRescinded { offer_id } => Event {
                rescind: Some(Rescind {
                    offer_id: Id::of(offer_id),
                }),
                ..Event::of(EventType::Rescind)
            },
            ToScheduler::Update { status } => Event {
                update: Some(Update {
                    status: TaskStatus::from_protocol(status),
                }),
                ..Event::of(EventType::Update)
            },
            ToScheduler::AgentLost { agent_id } => Event {
                failure: Some(Failure {
                    agent_id: Some(Id::of(agent_id)),
                    executor_id: None,
                }),
                ..Event::of(EventType::Failure)
            },
            ToScheduler::ExecutorLost {
                agent_id,
                executor_id,
            } => Event {
                failure: Some(Failure {
                    agent_id: Some(Id::of(agent_id)),
                    executor_id: Some(Id::of(executor_id)),
                }),
                ..Event::of(EventType::Failure)
            },
            ToScheduler::FrameworkMessage {
                agent_id,
                executor_id,
                data,
            } => Event {
                message: Some(Message {
                    agent_id: Id::of(agent_id),
                    executor_id: Id::of(executor_id),
                    data: encode_bytes(&data.0),
                }),
                ..Event::of(EventType::Message)
            },
            ToScheduler::Error { message } => Event::error(message.clone()),
        };
        Some(event)
    }

    /// The event as one RecordIO record.
    pub fn record(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string
        // keys, no custom serializers that refuse.
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::recordio::encode(&json)
    }
}
