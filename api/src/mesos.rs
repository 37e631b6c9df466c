//! Apache Mesos's v1 messages (`mesos.proto`) in their JSON form, and
//! their translation to and from Strata's protocol types.
//!
//! JSON as Mesos writes it: field names as in the proto, ids as
//! `{"value": …}`, enums by name, bytes in base64, durations as seconds.
//! Fields Strata has no use for are accepted and ignored, as Mesos's own
//! JSON reader does; what Strata cannot honour (a resource of type TEXT,
//! a negative amount, an id with a `/`) is refused with a message naming
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use strata_protocol as protocol;
use strata_protocol::resources::MAX_SCALAR_MILLIS;

use crate::ApiError;

fn base64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// `null` read as the default, as protobuf's JSON mapping reads it:
/// client libraries send `null` for fields they leave unset.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Bytes as Mesos's JSON carries them: base64 text.
pub fn encode_bytes(bytes: &[u8]) -> String {
    base64().encode(bytes)
}

/// Bytes from base64 text; `what` names the field in the error.
pub fn decode_bytes(text: &str, what: &'static str) -> Result<Vec<u8>, ApiError> {
    base64()
        .decode(text)
        .map_err(|_| ApiError::invalid(what, "is not base64"))
}

/// An id: `{"value": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    pub value: String,
}

impl Id {
    pub fn of(id: impl std::fmt::Display) -> Id {
        Id {
            value: id.to_string(),
        }
    }

    /// An optional id as one of Strata's checked id types.
    pub fn parse_optional<T>(id: &Option<Id>, what: &'static str) -> Result<Option<T>, ApiError>
    where
        T: std::str::FromStr<Err = protocol::IdError>,
    {
        id.as_ref().map(|id| id.parse(what)).transpose()
    }

    /// The id as one of Strata's checked id types.
    pub fn parse<T>(&self, what: &'static str) -> Result<T, ApiError>
    where
        T: std::str::FromStr<Err = protocol::IdError>,
    {
        self.value
            .parse()
            .map_err(|error: protocol::IdError| ApiError::invalid(what, error.to_string()))
    }
}

/// The kind of a resource's or attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Scalar,
    Ranges,
    Set,
    Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub range: Vec<Range>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub item: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub value: String,
}

/// A reservation of a resource for a role; Strata's are static.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The role an offered resource is allocated to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationInfo {
    pub role: String,
}

/// One resource, as Mesos writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    /// The reservation's role in the format before reservation
    /// refinement; `*` when unreserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The reservations, innermost last (reservation refinement).
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reservations: Vec<Reservation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
}

/// A scalar amount from JSON: finite, not negative, within the bound,
/// rounded to thousandths as Mesos does.
fn scalar_from(value: f64, what: &'static str) -> Result<protocol::Scalar, ApiError> {
    if !value.is_finite() || value < 0.0 {
        return Err(ApiError::invalid(
            what,
            format!("{value} is not an amount (finite, not negative)"),
        ));
    }
    let millis = (value * 1000.0).round();
    if millis > MAX_SCALAR_MILLIS as f64 {
        return Err(ApiError::invalid(what, format!("{value} is too large")));
    }
    // Finite, not negative and within the bound: the cast is exact.
    Ok(protocol::Scalar::from_millis(millis as u64))
}

/// Resources from Mesos's JSON list.
pub fn resources_from(list: &[Resource]) -> Result<protocol::Resources, ApiError> {
    let mut resources = protocol::Resources::new();
    for resource in list {
        let what = "resources";
        let value = match resource.kind {
            ValueType::Scalar => {
                let scalar = resource
                    .scalar
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid(what, "a SCALAR resource without `scalar`"))?;
                protocol::Value::Scalar(scalar_from(scalar.value, what)?)
            }
            ValueType::Ranges => {
                let intervals = resource
                    .ranges
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid(what, "a RANGES resource without `ranges`"))?
                    .range
                    .iter()
                    .map(|range| (range.begin, range.end))
                    .collect::<Vec<_>>();
                let ranges = protocol::Ranges::try_from(intervals)
                    .map_err(|reason| ApiError::invalid(what, reason))?;
                protocol::Value::Ranges(ranges)
            }
            ValueType::Set => {
                let items = resource
                    .set
                    .as_ref()
                    .ok_or_else(|| ApiError::invalid(what, "a SET resource without `set`"))?;
                protocol::Value::Set(items.item.iter().cloned().collect())
            }
            ValueType::Text => {
                return Err(ApiError::invalid(
                    what,
                    format!(
                        "{} is TEXT; resources are SCALAR, RANGES or SET",
                        resource.name
                    ),
                ));
            }
        };
        let role = resource
            .reservations
            .last()
            .and_then(|reservation| reservation.role.clone())
            .or_else(|| resource.role.clone())
            .unwrap_or_else(|| protocol::UNRESERVED.to_owned());
        resources
            .try_add_one(protocol::Resource {
                name: resource.name.clone(),
                role,
                value,
            })
            .map_err(|error| ApiError::invalid(what, error.to_string()))?;
    }
    Ok(resources)
}

/// Mesos's JSON list of `resources`, allocated to `allocated_to` when
/// they are offered or used by a framework of that role.
pub fn resources_to(resources: &protocol::Resources, allocated_to: Option<&str>) -> Vec<Resource> {
    resources
        .iter()
        .map(|resource| {
            let mut json = Resource {
                name: resource.name.clone(),
                kind: ValueType::Scalar,
                scalar: None,
                ranges: None,
                set: None,
                role: Some(resource.role.clone()),
                reservations: Vec::new(),
                allocation_info: allocated_to.map(|role| AllocationInfo {
                    role: role.to_owned(),
                }),
            };
            match &resource.value {
                protocol::Value::Scalar(scalar) => {
                    json.scalar = Some(Scalar {
                        value: scalar.as_f64(),
                    });
                }
                protocol::Value::Ranges(ranges) => {
                    json.kind = ValueType::Ranges;
                    json.ranges = Some(Ranges {
                        range: ranges
                            .intervals()
                            .iter()
                            .map(|&(begin, end)| Range { begin, end })
                            .collect(),
                    });
                }
                protocol::Value::Set(items) => {
                    json.kind = ValueType::Set;
                    json.set = Some(Set {
                        item: items.iter().cloned().collect(),
                    });
                }
            }
            if resource.role != protocol::UNRESERVED {
                json.reservations = vec![Reservation {
                    kind: Some("STATIC".to_owned()),
                    role: Some(resource.role.clone()),
                }];
            }
            json
        })
        .collect()
}

/// An agent attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ValueType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
}

/// Mesos's JSON list of `attributes`.
pub fn attributes_to(attributes: &protocol::Attributes) -> Vec<Attribute> {
    attributes
        .iter()
        .map(|(name, value)| match value {
            protocol::AttributeValue::Scalar(scalar) => Attribute {
                name: name.to_owned(),
                kind: ValueType::Scalar,
                scalar: Some(Scalar {
                    value: scalar.as_f64(),
                }),
                text: None,
            },
            protocol::AttributeValue::Text(text) => Attribute {
                name: name.to_owned(),
                kind: ValueType::Text,
                scalar: None,
                text: Some(Text {
                    value: text.clone(),
                }),
            },
        })
        .collect()
}

/// A key and a value, as Mesos's labels and environment carry them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub labels: Vec<Label>,
}

fn labels_from(labels: Option<&Labels>) -> BTreeMap<String, String> {
    labels
        .map(|labels| {
            labels
                .labels
                .iter()
                .map(|label| (label.key.clone(), label.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn labels_to(labels: &BTreeMap<String, String>) -> Option<Labels> {
    (!labels.is_empty()).then(|| Labels {
        labels: labels
            .iter()
            .map(|(key, value)| Label {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    })
}

/// A framework capability, `{"type": "PARTITION_AWARE"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
}

fn capability_from(name: &str) -> Option<protocol::Capability> {
    match name {
        "PARTITION_AWARE" => Some(protocol::Capability::PartitionAware),
        "MULTI_ROLE" => Some(protocol::Capability::MultiRole),
        "TASK_KILLING_STATE" => Some(protocol::Capability::TaskKillingState),
        "GPU_RESOURCES" => Some(protocol::Capability::GpuResources),
        _ => None,
    }
}

/// What a framework says of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub user: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    /// The single role of frameworks without MULTI_ROLE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

impl FrameworkInfo {
    /// Strata's framework description. Capabilities Strata does not know
    /// are ignored (it behaves as Mesos does without them).
    pub fn to_protocol(&self) -> Result<protocol::FrameworkInfo, ApiError> {
        let id = Id::parse_optional(&self.id, "framework_info.id")?;
        let failover_timeout = match self.failover_timeout {
            None => Duration::ZERO,
            Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                Duration::try_from_secs_f64(seconds)
                    .unwrap_or(protocol::frameworks::MAX_FAILOVER_TIMEOUT)
                    .min(protocol::frameworks::MAX_FAILOVER_TIMEOUT)
            }
            Some(seconds) => {
                return Err(ApiError::invalid(
                    "framework_info.failover_timeout",
                    format!("{seconds} is not a number of seconds"),
                ));
            }
        };
        let roles = if !self.roles.is_empty() {
            self.roles.clone()
        } else {
            vec![
                self.role
                    .clone()
                    .unwrap_or_else(|| protocol::UNRESERVED.to_owned()),
            ]
        };
        Ok(protocol::FrameworkInfo {
            id,
            name: self.name.clone(),
            user: self.user.clone(),
            roles,
            principal: self.principal.clone(),
            failover_timeout,
            checkpoint: self.checkpoint.unwrap_or(false),
            capabilities: self
                .capabilities
                .iter()
                .filter_map(|capability| capability_from(&capability.kind))
                .collect::<BTreeSet<_>>(),
        })
    }

    /// Mesos's JSON of Strata's framework description.
    pub fn from_protocol(info: &protocol::FrameworkInfo) -> FrameworkInfo {
        FrameworkInfo {
            user: info.user.clone(),
            name: info.name.clone(),
            id: info.id.as_ref().map(Id::of),
            failover_timeout: Some(info.failover_timeout.as_secs_f64()),
            checkpoint: Some(info.checkpoint),
            role: None,
            roles: info.roles.clone(),
            hostname: None,
            principal: info.principal.clone(),
            capabilities: info
                .capabilities
                .iter()
                .map(|capability| Capability {
                    kind: capability.mesos_name().to_owned(),
                })
                .collect(),
            labels: None,
        }
    }
}

/// One environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub variables: Vec<Variable>,
}

/// A command: a shell string (`shell` true, the default) or an
/// executable with `arguments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl CommandInfo {
    pub fn to_protocol(&self) -> Result<protocol::CommandInfo, ApiError> {
        let shell = self.shell.unwrap_or(true);
        let value = self.value.clone().unwrap_or_default();
        if shell && value.is_empty() {
            return Err(ApiError::invalid(
                "command",
                "a shell command needs a `value`",
            ));
        }
        if !shell && value.is_empty() && self.arguments.is_empty() {
            return Err(ApiError::invalid(
                "command",
                "a command needs a `value` or `arguments`",
            ));
        }
        Ok(protocol::CommandInfo {
            shell,
            value,
            arguments: self.arguments.clone(),
            environment: self
                .environment
                .as_ref()
                .map(|environment| {
                    environment
                        .variables
                        .iter()
                        .map(|variable| (variable.name.clone(), variable.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            user: self.user.clone(),
            // The task's or executor's `container`, set by its caller.
            container: None,
        })
    }

    pub fn from_protocol(command: &protocol::CommandInfo) -> CommandInfo {
        CommandInfo {
            shell: Some(command.shell),
            value: Some(command.value.clone()),
            arguments: command.arguments.clone(),
            environment: (!command.environment.is_empty()).then(|| Environment {
                variables: command
                    .environment
                    .iter()
                    .map(|(name, value)| Variable {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            }),
            user: command.user.clone(),
        }
    }
}

/// A framework's own executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    pub executor_id: Id,
    /// Set in what the agent tells an executor; ignored in a launch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
}

impl ExecutorInfo {
    pub fn to_protocol(&self) -> Result<protocol::ExecutorInfo, ApiError> {
        let command = self
            .command
            .as_ref()
            .ok_or_else(|| ApiError::invalid("executor", "an executor needs a `command`"))?;
        Ok(protocol::ExecutorInfo {
            executor_id: self.executor_id.parse("executor.executor_id")?,
            name: self.name.clone().unwrap_or_default(),
            command: {
                let mut command = command.to_protocol()?;
                command.container = self
                    .container
                    .as_ref()
                    .map(ContainerInfo::to_protocol)
                    .transpose()?;
                command
            },
            resources: resources_from(&self.resources)?,
        })
    }

    pub fn from_protocol(executor: &protocol::ExecutorInfo) -> ExecutorInfo {
        ExecutorInfo {
            framework_id: None,
            executor_id: Id::of(&executor.executor_id),
            name: Some(executor.name.clone()),
            command: Some(CommandInfo::from_protocol(&executor.command)),
            resources: resources_to(&executor.resources, None),
            container: executor
                .command
                .container
                .as_ref()
                .map(ContainerInfo::from_protocol),
        }
    }
}

/// Apache Mesos's `ContainerInfo`: `type` MESOS with `mesos.image`
/// (`type` DOCKER, `docker.name`), or `type` DOCKER with `docker.image`,
/// and `volumes`. Both kinds run the same way in Strata: the agent
/// provisions the image and an OCI runtime runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesos: Option<MesosContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerContainer>,
    #[serde(
        default,
        deserialize_with = "crate::mesos::nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volumes: Vec<VolumeJson>,
}

/// `ContainerInfo.mesos`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MesosContainer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageJson>,
}

/// `Image`: Strata reads `type` DOCKER (`docker.name`); APPC images are
/// not supported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageJson {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerImage>,
}

/// `Image.Docker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerImage {
    pub name: String,
}

/// `ContainerInfo.DockerInfo`: its `image`; the network is the host's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerContainer {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `Volume`: a host path mounted at `container_path`, `mode` RW or RO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeJson {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    pub mode: String,
}

impl ContainerInfo {
    pub fn to_protocol(&self) -> Result<protocol::ContainerInfo, ApiError> {
        let (kind, image) = match self.kind.as_str() {
            "MESOS" => {
                let image = match self.mesos.as_ref().and_then(|mesos| mesos.image.as_ref()) {
                    None => None,
                    Some(image) => match (image.kind.as_str(), &image.docker) {
                        ("DOCKER", Some(docker)) => Some(docker.name.clone()),
                        ("DOCKER", None) => {
                            return Err(ApiError::invalid(
                                "container.mesos.image",
                                "an image of type DOCKER needs `docker.name`",
                            ));
                        }
                        (other, _) => {
                            return Err(ApiError::Unsupported(format!(
                                "images of type {other}: Strata runs DOCKER (and OCI) images"
                            )));
                        }
                    },
                };
                (protocol::ContainerKind::Mesos, image)
            }
            "DOCKER" => {
                let docker = self.docker.as_ref().ok_or_else(|| {
                    ApiError::invalid(
                        "container.docker",
                        "a DOCKER container needs `docker.image`",
                    )
                })?;
                if let Some(network) = &docker.network
                    && network != "HOST"
                {
                    return Err(ApiError::Unsupported(format!(
                        "docker network {network}: containers share the host's network"
                    )));
                }
                (protocol::ContainerKind::Docker, Some(docker.image.clone()))
            }
            other => {
                return Err(ApiError::invalid(
                    "container.type",
                    format!("{other:?} is not MESOS or DOCKER"),
                ));
            }
        };
        let volumes = self
            .volumes
            .iter()
            .map(|volume| {
                let read_only = match volume.mode.as_str() {
                    "RW" => false,
                    "RO" => true,
                    other => {
                        return Err(ApiError::invalid(
                            "container.volumes.mode",
                            format!("{other:?} is not RW or RO"),
                        ));
                    }
                };
                let host_path = volume.host_path.clone().ok_or_else(|| {
                    ApiError::Unsupported(
                        "volumes without a host_path (images, secrets, sources)".into(),
                    )
                })?;
                Ok(protocol::Volume {
                    host_path,
                    container_path: volume.container_path.clone(),
                    read_only,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let container = protocol::ContainerInfo {
            kind,
            image,
            volumes,
        };
        container
            .validate()
            .map_err(|reason| ApiError::invalid("container", reason))?;
        Ok(container)
    }

    pub fn from_protocol(container: &protocol::ContainerInfo) -> ContainerInfo {
        let volumes = container
            .volumes
            .iter()
            .map(|volume| VolumeJson {
                container_path: volume.container_path.clone(),
                host_path: Some(volume.host_path.clone()),
                mode: if volume.read_only { "RO" } else { "RW" }.into(),
            })
            .collect();
        match container.kind {
            protocol::ContainerKind::Mesos => ContainerInfo {
                kind: "MESOS".into(),
                mesos: Some(MesosContainer {
                    image: container.image.as_ref().map(|name| ImageJson {
                        kind: "DOCKER".into(),
                        docker: Some(DockerImage { name: name.clone() }),
                    }),
                }),
                docker: None,
                volumes,
            },
            protocol::ContainerKind::Docker => ContainerInfo {
                kind: "DOCKER".into(),
                mesos: None,
                docker: Some(DockerContainer {
                    image: container.image.clone().unwrap_or_default(),
                    network: Some("HOST".into()),
                }),
                volumes,
            },
        }
    }
}

/// A task a framework asks to run: a command, or a task for its
/// executor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: Id,
    pub agent_id: Id,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// The container a command task runs in (a task for an executor runs
    /// in the executor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
}

impl TaskInfo {
    pub fn to_protocol(&self) -> Result<protocol::TaskInfo, ApiError> {
        let kind = match (&self.command, &self.executor) {
            (Some(command), None) => {
                let mut command = command.to_protocol()?;
                command.container = self
                    .container
                    .as_ref()
                    .map(ContainerInfo::to_protocol)
                    .transpose()?;
                protocol::TaskKind::Command(command)
            }
            (None, Some(_)) if self.container.is_some() => {
                return Err(ApiError::invalid(
                    "task_info.container",
                    format!(
                        "task {} runs in its executor's container: give the executor a `container`",
                        self.task_id.value
                    ),
                ));
            }
            (None, Some(executor)) => protocol::TaskKind::Executor(executor.to_protocol()?),
            _ => {
                return Err(ApiError::invalid(
                    "task_info",
                    format!(
                        "task {} needs exactly one of `command` and `executor`",
                        self.task_id.value
                    ),
                ));
            }
        };
        Ok(protocol::TaskInfo {
            task_id: self.task_id.parse("task_info.task_id")?,
            name: self.name.clone(),
            agent_id: self.agent_id.parse("task_info.agent_id")?,
            resources: resources_from(&self.resources)?,
            kind,
            labels: labels_from(self.labels.as_ref()),
        })
    }

    pub fn from_protocol(task: &protocol::TaskInfo) -> TaskInfo {
        let (command, executor) = match &task.kind {
            protocol::TaskKind::Command(command) => {
                (Some(CommandInfo::from_protocol(command)), None)
            }
            protocol::TaskKind::Executor(executor) => {
                (None, Some(ExecutorInfo::from_protocol(executor)))
            }
        };
        TaskInfo {
            name: task.name.clone(),
            task_id: Id::of(&task.task_id),
            agent_id: Id::of(&task.agent_id),
            resources: resources_to(&task.resources, None),
            executor,
            command,
            labels: labels_to(&task.labels),
            container: match &task.kind {
                protocol::TaskKind::Command(command) => {
                    command.container.as_ref().map(ContainerInfo::from_protocol)
                }
                protocol::TaskKind::Executor(_) => None,
            },
        }
    }
}

/// A task's status, as frameworks and executors see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: Id,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<Id>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// The update's id, 16 bytes in base64; present on updates to
    /// acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// An update id as Mesos's JSON carries it: its 16 bytes, big-endian,
/// in base64.
pub fn uuid_to(update_id: protocol::UpdateId) -> String {
    encode_bytes(&update_id.0.to_be_bytes())
}

/// An update id from base64 text of 16 bytes.
pub fn uuid_from(text: &str, what: &'static str) -> Result<protocol::UpdateId, ApiError> {
    let bytes: [u8; 16] = decode_bytes(text, what)?
        .try_into()
        .map_err(|_| ApiError::invalid(what, "a uuid has 16 bytes"))?;
    Ok(protocol::UpdateId(u128::from_be_bytes(bytes)))
}

impl TaskStatus {
    pub fn from_protocol(status: &protocol::TaskStatus) -> TaskStatus {
        TaskStatus {
            task_id: Id::of(&status.task_id),
            state: status.state.mesos_name().to_owned(),
            message: (!status.message.is_empty()).then(|| status.message.clone()),
            source: Some(status.source.mesos_name().to_owned()),
            reason: status.reason.map(|reason| reason.mesos_name().to_owned()),
            agent_id: status.agent_id.as_ref().map(Id::of),
            executor_id: status.executor_id.as_ref().map(Id::of),
            timestamp: Some(status.timestamp_ms as f64 / 1000.0),
            uuid: status.update_id.map(uuid_to),
        }
    }

    /// Strata's status from an executor's JSON; reasons Strata does not
    /// make are dropped (the state and message still say what happened).
    pub fn to_protocol(&self) -> Result<protocol::TaskStatus, ApiError> {
        let state = protocol::TaskState::from_mesos_name(&self.state).ok_or_else(|| {
            ApiError::invalid(
                "status.state",
                format!("{:?} is not a task state", self.state),
            )
        })?;
        let source = match self.source.as_deref() {
            None => protocol::Source::Executor,
            Some(name) => protocol::Source::from_mesos_name(name).ok_or_else(|| {
                ApiError::invalid("status.source", format!("{name:?} is not a source"))
            })?,
        };
        let timestamp_ms = match self.timestamp {
            Some(seconds) if seconds.is_finite() && seconds >= 0.0 => (seconds * 1000.0) as u64,
            _ => 0,
        };
        Ok(protocol::TaskStatus {
            task_id: self.task_id.parse("status.task_id")?,
            state,
            source,
            reason: self
                .reason
                .as_deref()
                .and_then(protocol::Reason::from_mesos_name),
            message: self.message.clone().unwrap_or_default(),
            agent_id: Id::parse_optional(&self.agent_id, "status.agent_id")?,
            executor_id: Id::parse_optional(&self.executor_id, "status.executor_id")?,
            update_id: self
                .uuid
                .as_deref()
                .map(|uuid| uuid_from(uuid, "status.uuid"))
                .transpose()?,
            timestamp_ms,
            sandbox: None,
        })
    }
}

/// An offer of one agent's resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: Id,
    pub framework_id: Id,
    pub agent_id: Id,
    pub hostname: String,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub resources: Vec<Resource>,
    #[serde(default, deserialize_with = "crate::mesos::nullable")]
    pub attributes: Vec<Attribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
    /// The agent's HTTP endpoint, as Mesos sets it on every offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
}

/// Where an HTTP endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Url {
    pub scheme: String,
    pub address: Address,
    pub path: String,
}

impl Offer {
    /// The JSON of `offer`, made to a framework of role `role`.
    pub fn from_protocol(offer: &protocol::Offer, role: &str) -> Offer {
        Offer {
            id: Id::of(&offer.id),
            framework_id: Id::of(&offer.framework_id),
            agent_id: Id::of(&offer.agent_id),
            hostname: offer.hostname.clone(),
            resources: resources_to(&offer.resources, Some(role)),
            attributes: attributes_to(&offer.attributes),
            allocation_info: Some(AllocationInfo {
                role: role.to_owned(),
            }),
            url: Some(Url {
                scheme: "http".to_owned(),
                address: Address {
                    hostname: offer.hostname.clone(),
                    ip: offer.agent_address.ip().to_string(),
                    port: offer.agent_address.port(),
                },
                path: "/agent".to_owned(),
            }),
        }
    }
}

/// How long declined resources are not offered again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Seconds; Mesos's default is 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

impl Filters {
    pub fn to_protocol(&self) -> Result<protocol::Filters, ApiError> {
        match self.refuse_seconds {
            None => Ok(protocol::Filters::default()),
            Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(protocol::Filters {
                refuse: Duration::try_from_secs_f64(seconds)
                    .unwrap_or(protocol::offers::MAX_REFUSE)
                    .min(protocol::offers::MAX_REFUSE),
            }),
            Some(seconds) => Err(ApiError::invalid(
                "filters.refuse_seconds",
                format!("{seconds} is not a number of seconds"),
            )),
        }
    }
}

/// A master's address, as Mesos publishes it (also in ZooKeeper).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub hostname: String,
    pub ip: String,
    pub port: u16,
}

/// Who the master is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    pub id: String,
    /// The IPv4 address as a number in network byte order, as Mesos
    /// writes it (0 for IPv6 masters).
    pub ip: u32,
    pub port: u16,
    pub pid: String,
    pub hostname: String,
    pub version: String,
    pub address: Address,
}

impl MasterInfo {
    /// The MasterInfo of the master at `pid`.
    pub fn of(pid: &strata_runtime::Upid, id: &str) -> MasterInfo {
        let address = pid.addr();
        let ip = match address.ip() {
            // Network byte order read as a little-endian number, as
            // Mesos's JSON has it.
            std::net::IpAddr::V4(ip) => u32::from_le_bytes(ip.octets()),
            std::net::IpAddr::V6(_) => 0,
        };
        MasterInfo {
            id: id.to_owned(),
            ip,
            port: address.port(),
            pid: pid.to_string(),
            hostname: address.ip().to_string(),
            version: strata_runtime::http::MESOS_COMPATIBLE_VERSION.to_owned(),
            address: Address {
                hostname: address.ip().to_string(),
                ip: address.ip().to_string(),
                port: address.port(),
            },
        }
    }
}
