//! The JSON Mesos clients send and read, through the translation.

use serde_json::{Value, json};
use strata_protocol::{
    self as protocol, AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState, ToMaster,
    ToScheduler, UpdateId,
};

use crate::ApiError;
use crate::mesos::{self, MasterInfo};
use crate::scheduler::{Call, Event, Translated};

fn framework() -> FrameworkId {
    FrameworkId::new("m-F1").unwrap()
}

fn translate(call: Value) -> Result<Translated, ApiError> {
    Call::parse(call.to_string().as_bytes())?.to_protocol(&framework())
}

fn to_master(call: Value) -> ToMaster {
    match translate(call.clone()) {
        Ok(Translated::ToMaster(message)) => message,
        other => panic!("{call}: {other:?}"),
    }
}

#[test]
fn a_subscribe_as_client_libraries_send_it() {
    let call = Call::parse(
        json!({
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {
                "user": "alice", "name": "py-framework", "hostname": "laptop",
                "failover_timeout": 604800.0, "checkpoint": true,
                "roles": ["analytics"], "principal": "alice",
                "capabilities": [{"type": "MULTI_ROLE"}, {"type": "PARTITION_AWARE"},
                                 {"type": "REGION_AWARE"}],
                "webui_url": "http://laptop:8080"
            }}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let info = call
        .subscribe
        .unwrap()
        .framework_info
        .to_protocol()
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.user.as_str()),
        ("py-framework", "alice")
    );
    assert_eq!(info.roles, vec!["analytics".to_owned()]);
    assert_eq!(info.failover_timeout.as_secs(), 604800);
    assert!(info.checkpoint);
    assert_eq!(info.principal.as_deref(), Some("alice"));
    assert!(
        info.capabilities
            .contains(&protocol::Capability::PartitionAware)
    );
    assert_eq!(
        info.capabilities.len(),
        2,
        "unknown capabilities are ignored"
    );
    // The older single role.
    let old = json!({"user": "u", "name": "n", "role": "web"});
    let info: mesos::FrameworkInfo = serde_json::from_value(old).unwrap();
    assert_eq!(info.to_protocol().unwrap().roles, vec!["web".to_owned()]);
}

#[test]
fn an_accept_launches_command_and_executor_tasks() {
    let message = to_master(json!({
        "framework_id": {"value": "m-F1"},
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [{"value": "m-O1"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                "name": "web", "task_id": {"value": "web-1"}, "agent_id": {"value": "m-S1"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 128}},
                    {"name": "ports", "type": "RANGES",
                     "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
                    {"name": "gpus", "type": "SCALAR", "scalar": {"value": 1},
                     "reservations": [{"type": "STATIC", "role": "ml"}]}
                ],
                "command": {"value": "echo hi", "environment": {"variables": [
                    {"name": "A", "value": "1"}]}},
                "labels": {"labels": [{"key": "tier", "value": "front"}]}
            }]}},
            {"type": "LAUNCH_GROUP", "launch_group": {
                "executor": {"executor_id": {"value": "ex"}, "type": "DEFAULT",
                             "command": {"value": "./executor"},
                             "resources": [{"name": "cpus", "type": "SCALAR",
                                            "scalar": {"value": 0.1}}]},
                "task_group": {"tasks": [{
                    "name": "part", "task_id": {"value": "part-1"},
                    "agent_id": {"value": "m-S1"},
                    "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}],
                    "command": {"value": "true"}
                }]}
            }}],
            "filters": {"refuse_seconds": 30.0}
        }
    }));
    let ToMaster::Accept {
        framework_id,
        offer_ids,
        operations,
        filters,
    } = message
    else {
        panic!("{message:?}");
    };
    assert_eq!(framework_id, framework());
    assert_eq!(offer_ids, vec![OfferId::new("m-O1").unwrap()]);
    assert_eq!(filters.refuse.as_secs(), 30);
    let [protocol::Operation::Launch(tasks)] = operations.as_slice() else {
        panic!("{operations:?}");
    };
    let web = &tasks[0];
    assert_eq!(web.task_id, TaskId::new("web-1").unwrap());
    assert_eq!(web.agent_id, AgentId::new("m-S1").unwrap());
    let expected: Resources = "cpus:0.5;mem:128;ports:[31000-31001];gpus(ml):1"
        .parse()
        .unwrap();
    assert_eq!(web.resources, expected);
    let protocol::TaskKind::Command(command) = &web.kind else {
        panic!("{web:?}");
    };
    assert!(command.shell);
    assert_eq!(command.value, "echo hi");
    assert_eq!(command.environment["A"], "1");
    assert_eq!(web.labels["tier"], "front");
    let protocol::TaskKind::Executor(executor) = &tasks[1].kind else {
        panic!("{:?}", tasks[1]);
    };
    assert_eq!(executor.executor_id.as_str(), "ex");
    assert_eq!(executor.resources, "cpus:0.1".parse().unwrap());
}

#[test]
fn other_calls_become_the_same_messages_as_an_actor_frameworks() {
    let uuid = mesos::uuid_to(UpdateId(42));
    let checks = [
        (
            json!({"type": "TEARDOWN"}),
            ToMaster::Teardown {
                framework_id: framework(),
            },
        ),
        (
            json!({"type": "REVIVE"}),
            ToMaster::Revive {
                framework_id: framework(),
            },
        ),
        (
            json!({"type": "SUPPRESS"}),
            ToMaster::Suppress {
                framework_id: framework(),
            },
        ),
        (
            json!({"type": "DECLINE", "decline": {"offer_ids": [{"value": "m-O2"}]}}),
            ToMaster::Decline {
                framework_id: framework(),
                offer_ids: vec![OfferId::new("m-O2").unwrap()],
                filters: protocol::Filters::default(),
            },
        ),
        (
            json!({"type": "KILL", "kill": {"task_id": {"value": "t1"},
                                            "agent_id": {"value": "m-S1"}}}),
            ToMaster::Kill {
                framework_id: framework(),
                task_id: TaskId::new("t1").unwrap(),
            },
        ),
        (
            json!({"type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": {"value": "m-S1"}, "task_id": {"value": "t1"}, "uuid": uuid}}),
            ToMaster::Acknowledge {
                framework_id: framework(),
                agent_id: AgentId::new("m-S1").unwrap(),
                task_id: TaskId::new("t1").unwrap(),
                update_id: UpdateId(42),
            },
        ),
        (
            json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "t1"}}]}}),
            ToMaster::Reconcile {
                framework_id: framework(),
                tasks: vec![protocol::ReconcileTask {
                    task_id: TaskId::new("t1").unwrap(),
                    agent_id: None,
                }],
            },
        ),
        (
            json!({"type": "RECONCILE"}),
            ToMaster::Reconcile {
                framework_id: framework(),
                tasks: vec![],
            },
        ),
        (
            json!({"type": "MESSAGE", "message": {"agent_id": {"value": "m-S1"},
                   "executor_id": {"value": "ex"}, "data": "aGk="}}),
            ToMaster::FrameworkMessage {
                framework_id: framework(),
                agent_id: AgentId::new("m-S1").unwrap(),
                executor_id: protocol::ExecutorId::new("ex").unwrap(),
                data: strata_runtime::Blob(b"hi".to_vec()),
            },
        ),
        (
            json!({"type": "SHUTDOWN", "shutdown": {"agent_id": {"value": "m-S1"},
                   "executor_id": {"value": "ex"}}}),
            ToMaster::ShutdownExecutor {
                framework_id: framework(),
                agent_id: AgentId::new("m-S1").unwrap(),
                executor_id: protocol::ExecutorId::new("ex").unwrap(),
            },
        ),
        (
            json!({"type": "UPDATE_FRAMEWORK", "update_framework": {"framework_info": {
                   "user": "u", "name": "renamed", "failover_timeout": 30.0}}}),
            ToMaster::UpdateFramework {
                framework_id: framework(),
                info: {
                    let mut info = protocol::FrameworkInfo::new("renamed", "u");
                    info.failover_timeout = std::time::Duration::from_secs(30);
                    info
                },
            },
        ),
    ];
    for (call, expected) in checks {
        assert_eq!(to_master(call.clone()), expected, "{call}");
    }
    assert_eq!(
        translate(json!({"type": "REQUEST", "request": {"requests": []}})),
        Ok(Translated::Nothing)
    );
}

#[test]
fn bad_calls_are_refused_with_what_is_wrong() {
    let refused = |call: &str, status: u16, says: &str| {
        let error = Call::parse(call.as_bytes())
            .and_then(|call| call.to_protocol(&framework()))
            .unwrap_err();
        assert_eq!(error.status(), status, "{call}: {error}");
        assert!(error.to_string().contains(says), "{call}: {error}");
    };
    refused("{", 400, "malformed JSON");
    refused(r#"{"type": "DANCE"}"#, 400, "malformed JSON");
    refused(r#"{"type": "DECLINE"}"#, 400, "decline");
    refused(r#"{"type": "SUBSCRIBE"}"#, 400, "opens a stream");
    refused(
        r#"{"type": "KILL", "kill": {"task_id": {"value": "a/b"}}}"#,
        400,
        "kill.task_id",
    );
    refused(
        r#"{"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": {"value": "a"},
            "task_id": {"value": "t"}, "uuid": "aGk="}}"#,
        400,
        "16 bytes",
    );
    refused(
        r#"{"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": {"value": "a"},
            "task_id": {"value": "t"}, "uuid": "not base64!"}}"#,
        400,
        "base64",
    );
    let launch = |resources: &str| {
        format!(
            r#"{{"type": "ACCEPT", "accept": {{"offer_ids": [{{"value": "o"}}],
            "operations": [{{"type": "LAUNCH", "launch": {{"task_infos": [{{
            "name": "t", "task_id": {{"value": "t"}}, "agent_id": {{"value": "a"}},
            "resources": {resources}, "command": {{"value": "true"}}}}]}}}}]}}}}"#
        )
    };
    refused(
        &launch(r#"[{"name": "cpus", "type": "SCALAR", "scalar": {"value": -1}}]"#),
        400,
        "not an amount",
    );
    refused(
        &launch(r#"[{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1e300}}]"#),
        400,
        "too large",
    );
    refused(
        &launch(r#"[{"name": "os", "type": "TEXT", "text": {"value": "linux"}}]"#),
        400,
        "TEXT",
    );
    refused(
        &launch(r#"[{"name": "cpus", "type": "RANGES"}]"#),
        400,
        "ranges",
    );
    refused(
        &launch(
            r#"[{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 9, "end": 1}]}}]"#,
        ),
        400,
        "ends before it begins",
    );
    refused(
        &launch(r#"[{"name": "cpus", "type": "SET", "set": {"item": ["a"]}}]"#),
        400,
        "scalar resource",
    );
    refused(
        r#"{"type": "ACCEPT", "accept": {"offer_ids": [], "operations": [{"type": "RESERVE"}]}}"#,
        501,
        "Reserve",
    );
    refused(
        r#"{"type": "ACCEPT", "accept": {"offer_ids": [], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t"},
            "agent_id": {"value": "a"}}]}}]}}"#,
        400,
        "exactly one of `command` and `executor`",
    );
    let in_container = |container: &str| {
        format!(
            r#"{{"type": "ACCEPT", "accept": {{"offer_ids": [], "operations": [{{"type": "LAUNCH",
            "launch": {{"task_infos": [{{"name": "t", "task_id": {{"value": "t"}},
            "agent_id": {{"value": "a"}}, "command": {{"value": "true"}},
            "container": {container}}}]}}}}]}}}}"#
        )
    };
    refused(
        &in_container(r#"{"type": "MESOS", "mesos": {"image": {"type": "APPC"}}}"#),
        501,
        "APPC",
    );
    refused(
        &in_container(r#"{"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE"}}"#),
        501,
        "host's network",
    );
    refused(
        &in_container(
            r#"{"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox"}}},
                "volumes": [{"container_path": "/data", "host_path": "data", "mode": "RWX"}]}"#,
        ),
        400,
        "RW or RO",
    );
    refused(
        &in_container(
            r#"{"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "busybox"}}},
                "volumes": [{"container_path": "/../etc", "host_path": "data", "mode": "RW"}]}"#,
        ),
        400,
        "goes up",
    );
    refused(
        &in_container(r#"{"type": "LXC"}"#),
        400,
        "not MESOS or DOCKER",
    );
    refused(r#"{"type": "UPDATE_FRAMEWORK"}"#, 400, "update_framework");
    refused(
        r#"{"type": "SHUTDOWN", "shutdown": {"agent_id": {"value": "m-S1"}}}"#,
        400,
        "missing field",
    );
    let many: Vec<Value> = (0..=protocol::offers::MAX_OFFERS_PER_CALL)
        .map(|index| json!({"value": format!("o{index}")}))
        .collect();
    refused(
        &json!({"type": "DECLINE", "decline": {"offer_ids": many}}).to_string(),
        400,
        "per call",
    );
}

#[test]
fn events_have_mesos_shapes() {
    let status = protocol::TaskStatus {
        task_id: TaskId::new("t1").unwrap(),
        state: TaskState::Finished,
        source: protocol::Source::Executor,
        reason: Some(protocol::Reason::CommandExecutorFailed),
        message: "exited 0".into(),
        agent_id: Some(AgentId::new("m-S1").unwrap()),
        executor_id: None,
        update_id: Some(UpdateId(0x0102)),
        timestamp_ms: 1_500,
        sandbox: None,
    };
    let event = Event::from_protocol(
        &ToScheduler::Update {
            status: status.clone(),
        },
        "*",
    )
    .unwrap();
    let json: Value = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "UPDATE");
    let sent = &json["update"]["status"];
    assert_eq!(sent["task_id"]["value"], "t1");
    assert_eq!(sent["state"], "TASK_FINISHED");
    assert_eq!(sent["source"], "SOURCE_EXECUTOR");
    assert_eq!(sent["reason"], "REASON_COMMAND_EXECUTOR_FAILED");
    assert_eq!(sent["agent_id"]["value"], "m-S1");
    assert_eq!(sent["timestamp"], 1.5);
    // The uuid a client acknowledges with is the one it got.
    let uuid = sent["uuid"].as_str().unwrap();
    assert_eq!(mesos::uuid_from(uuid, "uuid"), Ok(UpdateId(0x0102)));
    // What an executor reports reads back the same.
    let status_json: mesos::TaskStatus = serde_json::from_value(sent.clone()).unwrap();
    assert_eq!(status_json.to_protocol().unwrap(), status);

    let offer = protocol::Offer {
        id: OfferId::new("m-O1").unwrap(),
        framework_id: framework(),
        agent_id: AgentId::new("m-S1").unwrap(),
        hostname: "host-1".into(),
        agent_address: "10.0.0.7:5051".parse().unwrap(),
        resources: "cpus:2;mem:1024;ports:[31000-31009];zones(web):{a,b}"
            .parse()
            .unwrap(),
        attributes: "rack:r1;weight:3".parse().unwrap(),
    };
    let event = Event::from_protocol(&ToScheduler::Offers(vec![offer.clone()]), "web").unwrap();
    let json: Value = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "OFFERS");
    let sent = &json["offers"]["offers"][0];
    assert_eq!(sent["id"]["value"], "m-O1");
    assert_eq!(sent["agent_id"]["value"], "m-S1");
    assert_eq!(sent["allocation_info"]["role"], "web");
    assert_eq!(
        sent["url"],
        json!({"scheme": "http", "address": {"hostname": "host-1", "ip": "10.0.0.7", "port": 5051},
               "path": "/agent"})
    );
    let cpus = sent["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["name"] == "cpus")
        .unwrap();
    assert_eq!(
        (&cpus["type"], &cpus["scalar"]["value"], &cpus["role"]),
        (&json!("SCALAR"), &json!(2.0), &json!("*"))
    );
    let zones = sent["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["name"] == "zones")
        .unwrap();
    assert_eq!(zones["reservations"][0]["role"], "web");
    assert_eq!(zones["set"]["item"], json!(["a", "b"]));
    let rack = sent["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attribute| attribute["name"] == "rack")
        .unwrap();
    assert_eq!(rack["text"]["value"], "r1");
    // Offered resources read back as what was offered, as a client's
    // LAUNCH would send them.
    let back: Vec<mesos::Resource> = serde_json::from_value(sent["resources"].clone()).unwrap();
    assert_eq!(mesos::resources_from(&back).unwrap(), offer.resources);

    let heartbeat = String::from_utf8(Event::heartbeat().record()).unwrap();
    assert_eq!(heartbeat, "20\n{\"type\":\"HEARTBEAT\"}");
    let error = serde_json::to_value(Event::error("no")).unwrap();
    assert_eq!(error, json!({"type": "ERROR", "error": {"message": "no"}}));
}

#[test]
fn master_info_as_mesos_publishes_it() {
    let pid: strata_runtime::Upid = "master@127.0.0.1:5050".parse().unwrap();
    let info = MasterInfo::of(&pid, "m");
    // 127.0.0.1 in network byte order, read as Mesos writes it.
    assert_eq!(info.ip, 16_777_343);
    assert_eq!(info.port, 5050);
    assert_eq!(info.pid, "master@127.0.0.1:5050");
    assert_eq!(info.address.ip, "127.0.0.1");
    assert_eq!(info.version, "1.11.0");
    let subscribed = serde_json::to_value(Event::subscribed(&framework(), info)).unwrap();
    assert_eq!(subscribed["subscribed"]["framework_id"]["value"], "m-F1");
    assert_eq!(subscribed["subscribed"]["heartbeat_interval_seconds"], 15.0);
}

#[test]
fn containers_read_from_mesos_json_and_back() {
    let task: crate::mesos::TaskInfo = serde_json::from_value(json!({
        "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
        "command": {"value": "cat /data/x"},
        "container": {"type": "MESOS",
            "mesos": {"image": {"type": "DOCKER", "docker": {"name": "registry:5000/app:1"}}},
            "volumes": [{"container_path": "/data", "host_path": "data", "mode": "RO"}]}
    }))
    .unwrap();
    let protocol = task.to_protocol().unwrap();
    let container = protocol.kind.container().unwrap().clone();
    assert_eq!(container.kind, protocol::ContainerKind::Mesos);
    assert_eq!(container.image.as_deref(), Some("registry:5000/app:1"));
    assert_eq!(
        container.volumes,
        [protocol::Volume {
            host_path: "data".into(),
            container_path: "/data".into(),
            read_only: true,
        }]
    );
    let back = crate::mesos::TaskInfo::from_protocol(&protocol);
    assert_eq!(back.to_protocol().unwrap(), protocol);
    let docker: crate::mesos::TaskInfo = serde_json::from_value(json!({
        "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
        "command": {"value": "true"},
        "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "HOST"}}
    }))
    .unwrap();
    let protocol = docker.to_protocol().unwrap();
    let container = protocol.kind.container().unwrap();
    assert_eq!(container.kind, protocol::ContainerKind::Docker);
    assert_eq!(container.image.as_deref(), Some("busybox"));
    let back = crate::mesos::TaskInfo::from_protocol(&protocol);
    assert_eq!(back.to_protocol().unwrap(), protocol);
}
