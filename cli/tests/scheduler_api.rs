//! The v1 scheduler API over raw HTTP, as a framework in another language
//! drives it: SUBSCRIBE opens a chunked RecordIO stream, calls carry its
//! Mesos-Stream-Id and are answered 202, a task runs to TASK_FINISHED
//! with every update acknowledged, and bad calls get a 4xx that names
//! what is wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::events::{Events, client};
use serde_json::{Value, json};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

struct Api {
    url: String,
    client: ureq::Agent,
}

impl Api {
    /// POSTs `call` with `stream_id`; the status and body.
    fn call(&self, stream_id: Option<&str>, content_type: &str, call: &str) -> (u16, String) {
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Type", content_type);
        if let Some(stream_id) = stream_id {
            request = request.header("Mesos-Stream-Id", stream_id);
        }
        let mut response = request.send(call).unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// Launches `command` as task `task_id` on `offer` and follows its
    /// updates to TASK_FINISHED, acknowledging each; the states seen.
    fn run_to_finished(
        &self,
        stream_id: &str,
        events: &mut Events,
        framework_id: &str,
        offer: &Value,
        task_id: &str,
        command: &str,
    ) -> Vec<String> {
        let accept = json!({
            "framework_id": {"value": framework_id},
            "type": "ACCEPT",
            "accept": {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                    "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
                    ],
                    "command": {"value": command}
                }]}}],
                "filters": {"refuse_seconds": 1}
            }
        });
        let (status, body) = self.call(Some(stream_id), "application/json", &accept.to_string());
        assert_eq!(status, 202, "{body}");
        let mut states = Vec::new();
        while states.last().map(String::as_str) != Some("TASK_FINISHED") {
            let update = events.next_of("UPDATE");
            let status = &update["update"]["status"];
            assert_eq!(status["task_id"]["value"], task_id, "{update}");
            states.push(status["state"].as_str().unwrap().to_owned());
            assert!(
                !status["state"].as_str().unwrap().ends_with("FAILED"),
                "{update}"
            );
            if let Some(uuid) = status["uuid"].as_str() {
                let acknowledge = json!({
                    "framework_id": {"value": framework_id},
                    "type": "ACKNOWLEDGE",
                    "acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                    "uuid": uuid}
                });
                let (code, body) = self.call(
                    Some(stream_id),
                    "application/json",
                    &acknowledge.to_string(),
                );
                assert_eq!(code, 202, "{body}");
            }
        }
        states
    }

    fn subscribe(&self, framework_info: Value) -> (String, Events) {
        let call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}});
        let response = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .send(call.to_string())
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers().get("transfer-encoding").unwrap(),
            "chunked",
            "Mesos clients expect a chunked SUBSCRIBE answer"
        );
        let stream_id = response
            .headers()
            .get("mesos-stream-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let events = Events::of(Box::new(response.into_body().into_reader()));
        (stream_id, events)
    }
}

/// A master taking unauthenticated scheduler API calls and one agent.
struct Cluster {
    dir: std::path::PathBuf,
    work: String,
    address: String,
    master: strata_integration::ChildNode,
    _agent: strata_integration::ChildNode,
    api: Api,
}

impl Cluster {
    fn start(name: &str, agent_flags: &[&str]) -> Cluster {
        let (dir, work, agent_work) = common::work_dirs(name);
        let master =
            common::start_master_with(&work, "0", &["--allow-unauthenticated-http-frameworks"]);
        let address = master.pid.addr().to_string();
        let agent = common::start_agent_with(&address, &agent_work, agent_flags);
        let api = Api {
            url: format!("http://{address}/api/v1/scheduler"),
            client: client(),
        };
        Cluster {
            dir,
            work,
            address,
            master,
            _agent: agent,
            api,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_v1_http_framework_runs_a_task_to_finished() {
    let cluster = Cluster::start("v1-api", &["--resources", "cpus:2;mem:512"]);
    let (api, master) = (&cluster.api, &cluster.master);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());

    let (stream_id, mut events) = api.subscribe(json!({
        "user": user, "name": "raw-http", "failover_timeout": 60.0,
        "capabilities": [{"type": "PARTITION_AWARE"}]
    }));
    let subscribed = events.next();
    assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
    let framework_id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(subscribed["subscribed"]["heartbeat_interval_seconds"], 15.0);
    assert_eq!(
        subscribed["subscribed"]["master_info"]["address"]["port"],
        master.pid.addr().port()
    );

    // UPDATE_FRAMEWORK changes the name in place; a change of who the
    // framework is gets a 4xx naming it, not a (fatal) ERROR event.
    let update = |info: Value| {
        let call = json!({"framework_id": {"value": framework_id}, "type": "UPDATE_FRAMEWORK",
                          "update_framework": {"framework_info": info}});
        api.call(Some(&stream_id), "application/json", &call.to_string())
    };
    let renamed = json!({"user": user, "name": "renamed", "failover_timeout": 60.0,
                         "capabilities": [{"type": "PARTITION_AWARE"}]});
    assert_eq!(update(renamed).0, 202);
    let (status, body) = update(json!({"user": "someone-else", "name": "renamed"}));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("user cannot change"), "{body}");

    // Nothing between the refusal and what the master says next (the
    // answer to a reconciliation) is an ERROR.
    let reconcile = json!({"framework_id": {"value": framework_id}, "type": "RECONCILE",
                           "reconcile": {"tasks": [{"task_id": {"value": "never-launched"}}]}});
    let (status, body) = api.call(Some(&stream_id), "application/json", &reconcile.to_string());
    assert_eq!(status, 202, "{body}");
    let mut offers = None;
    loop {
        let event = events.next();
        assert_ne!(event["type"], "ERROR", "{event}");
        if event["type"] == "OFFERS" && offers.is_none() {
            offers = Some(event.clone());
        }
        if event["type"] == "UPDATE"
            && event["update"]["status"]["task_id"]["value"] == "never-launched"
        {
            break;
        }
    }
    let offers = offers.unwrap_or_else(|| events.next_of("OFFERS"));
    let offer = &offers["offers"]["offers"][0];
    let cpus = offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["name"] == "cpus")
        .unwrap();
    assert_eq!(cpus["type"], "SCALAR");
    assert_eq!(cpus["scalar"]["value"], 2.0);

    // Bad calls change nothing and say why.
    let decline = json!({"framework_id": {"value": framework_id}, "type": "DECLINE",
                         "decline": {"offer_ids": [offer["id"]]}})
    .to_string();
    let (status, body) = api.call(None, "application/json", &decline);
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.call(Some("not-a-stream"), "application/json", &decline);
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.call(Some(&stream_id), "application/json", "{\"type\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed JSON"), "{body}");
    let (status, body) = api.call(Some(&stream_id), "application/x-protobuf", &decline);
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    let other = json!({"framework_id": {"value": "someone-else"}, "type": "REVIVE"}).to_string();
    let (status, body) = api.call(Some(&stream_id), "application/json", &other);
    assert_eq!(status, 403, "{body}");

    let states = api.run_to_finished(
        &stream_id,
        &mut events,
        &framework_id,
        offer,
        "hello-1",
        "echo hello from a v1 framework",
    );
    assert!(states.contains(&"TASK_RUNNING".to_owned()), "{states:?}");

    let teardown = json!({"framework_id": {"value": framework_id}, "type": "TEARDOWN"});
    let (status, body) = api.call(Some(&stream_id), "application/json", &teardown.to_string());
    assert_eq!(status, 202, "{body}");
    // The stream ends after the teardown.
    let mut rest = Vec::new();
    events.body.read_to_end(&mut rest).unwrap();
    let (status, body) = api.call(Some(&stream_id), "application/json", &decline);
    assert_eq!(status, 403, "{body}");
}

#[test]
fn a_resubscribed_http_framework_keeps_its_tasks() {
    let cluster = Cluster::start("v1-failover", &[]);
    // The API under its other path.
    let api = Api {
        url: format!("http://{}/master/api/v1/scheduler", cluster.address),
        client: client(),
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let info = json!({"user": user, "name": "failing-over", "failover_timeout": 300.0});
    let (stream_id, mut events) = api.subscribe(info.clone());
    let framework_id = events.next_of("SUBSCRIBED")["subscribed"]["framework_id"].clone();
    let offer = events.next_of("OFFERS")["offers"]["offers"][0].clone();
    let accept = json!({
        "framework_id": framework_id, "type": "ACCEPT",
        "accept": {"offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {
            "task_infos": [{"name": "long", "task_id": {"value": "long-1"},
                            "agent_id": offer["agent_id"],
                            "resources": [{"name": "cpus", "type": "SCALAR",
                                           "scalar": {"value": 0.1}}],
                            "command": {"value": "exec sleep 600"}}]}}]}
    });
    let (status, body) = api.call(Some(&stream_id), "application/json", &accept.to_string());
    assert_eq!(status, 202, "{body}");
    loop {
        let update = events.next_of("UPDATE");
        let status = &update["update"]["status"];
        if let Some(uuid) = status["uuid"].as_str() {
            let acknowledge = json!({"framework_id": framework_id, "type": "ACKNOWLEDGE",
                "acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"],
                                "uuid": uuid}});
            api.call(
                Some(&stream_id),
                "application/json",
                &acknowledge.to_string(),
            );
        }
        if status["state"] == "TASK_RUNNING" {
            break;
        }
    }

    // The connection drops; the framework subscribes again on a new one,
    // within its failover timeout.
    drop(events);
    let mut again = info.clone();
    again["id"] = framework_id.clone();
    let (new_stream_id, mut events) = api.subscribe(again);
    assert_ne!(new_stream_id, stream_id);
    let subscribed = events.next_of("SUBSCRIBED");
    assert_eq!(subscribed["subscribed"]["framework_id"], framework_id);
    // The old stream id no longer acts for the framework.
    let revive = json!({"framework_id": framework_id, "type": "REVIVE"}).to_string();
    assert_eq!(
        api.call(Some(&stream_id), "application/json", &revive).0,
        403
    );
    // Its task still runs: reconciliation says so.
    let reconcile = json!({"framework_id": framework_id, "type": "RECONCILE",
                           "reconcile": {"tasks": [{"task_id": {"value": "long-1"}}]}});
    let (status, body) = api.call(
        Some(&new_stream_id),
        "application/json",
        &reconcile.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let update = events.next_of("UPDATE");
    assert_eq!(
        update["update"]["status"]["state"], "TASK_RUNNING",
        "{update}"
    );
    let kill = json!({"framework_id": framework_id, "type": "KILL",
                      "kill": {"task_id": {"value": "long-1"}, "agent_id": offer["agent_id"]}});
    let (status, body) = api.call(Some(&new_stream_id), "application/json", &kill.to_string());
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let update = events.next_of("UPDATE");
        let status = &update["update"]["status"];
        if status["state"] == "TASK_KILLED" {
            break;
        }
        assert!(Instant::now() < deadline, "not killed: {update}");
    }
}

/// ACLs in `dir` under which principal bob may register in no role; their
/// path.
fn bob_registers_nowhere(dir: &std::path::Path) -> std::path::PathBuf {
    let acls = dir.join("acls.json");
    std::fs::write(
        &acls,
        r#"{"register_frameworks": [{"principals": {"values": ["bob"]}, "roles": {"type": "NONE"}}]}"#,
    )
    .unwrap();
    acls
}

#[test]
fn http_frameworks_authenticate_and_the_acls_decide() {
    let (dir, work, _) = common::work_dirs("v1-auth");
    let credentials = dir.join("credentials.json");
    std::fs::write(
        &credentials,
        r#"{"credentials": [{"principal": "alice", "secret": "a-secret"},
                            {"principal": "bob", "secret": "b-secret"}]}"#,
    )
    .unwrap();
    let acls = bob_registers_nowhere(&dir);
    let master = common::start_master_with(
        &work,
        "0",
        &[
            "--http-credentials",
            credentials.to_str().unwrap(),
            "--authenticate-http-frameworks",
            "--acls",
            acls.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}/api/v1/scheduler", master.pid.addr());
    let subscribe = |authorization: Option<&str>, principal: Option<&str>| {
        let mut info = json!({"user": "nobody", "name": "authenticated"});
        if let Some(principal) = principal {
            info["principal"] = json!(principal);
        }
        let call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        let mut request = client()
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.send(call.to_string()).unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            // The stream stays open; its first record is enough.
            let mut reader = response.body_mut().as_reader();
            let mut first = [0; 64];
            let read = reader.read(&mut first).unwrap();
            return (status, String::from_utf8_lossy(&first[..read]).into_owned());
        }
        (status, response.body_mut().read_to_string().unwrap())
    };
    // "alice:a-secret" and "bob:b-secret" in Basic.
    let alice = "Basic YWxpY2U6YS1zZWNyZXQ=";
    let bob = "Basic Ym9iOmItc2VjcmV0";
    let (status, body) = subscribe(None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = subscribe(Some("Basic YWxpY2U6d3Jvbmc="), None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = subscribe(Some(alice), None);
    assert_eq!(status, 200, "{body}");
    // A framework cannot claim another principal than it authenticated as.
    let (status, body) = subscribe(Some(alice), Some("bob"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("principal"), "{body}");
    // Bob may register in no role.
    let (status, body) = subscribe(Some(bob), None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("principal \\\"bob\\\" may not register a framework in role"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_http_framework_and_an_sdk_framework_share_an_agent() {
    let cluster = Cluster::start("v1-sharing", &["--resources", "cpus:2;mem:1024"]);
    let (address, api) = (&cluster.address, &cluster.api);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let (stream_id, mut events) = api.subscribe(json!({"user": user, "name": "http-half"}));
    let framework_id = events.next_of("SUBSCRIBED")["subscribed"]["framework_id"].clone();
    let call = |call: Value| {
        let (status, body) = api.call(Some(&stream_id), "application/json", &call.to_string());
        assert_eq!(status, 202, "{call}: {body}");
    };
    // Half the agent, for a long while; the rest goes back at once.
    let offer = events.next_of("OFFERS")["offers"]["offers"][0].clone();
    call(json!({
        "framework_id": framework_id, "type": "ACCEPT",
        "accept": {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 0},
                   "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                       "name": "half", "task_id": {"value": "half-1"},
                       "agent_id": offer["agent_id"],
                       "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                                     {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}],
                       "command": {"value": "exec sleep 600"}}]}}]}
    }));
    // Offers it does not use it declines, or they would stay its own;
    // updates it acknowledges. Returns the state of each update.
    let handle = |event: &Value| -> Option<String> {
        if event["type"] == "OFFERS" {
            let ids: Vec<Value> = event["offers"]["offers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|offer| offer["id"].clone())
                .collect();
            call(json!({"framework_id": framework_id, "type": "DECLINE",
                        "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 1}}}));
        }
        if event["type"] != "UPDATE" {
            return None;
        }
        let status = &event["update"]["status"];
        if let Some(uuid) = status["uuid"].as_str() {
            call(json!({"framework_id": framework_id, "type": "ACKNOWLEDGE",
                        "acknowledge": {"agent_id": status["agent_id"],
                                        "task_id": status["task_id"], "uuid": uuid}}));
        }
        Some(status["state"].as_str().unwrap().to_owned())
    };
    while handle(&events.next()).as_deref() != Some("TASK_RUNNING") {}
    // Meanwhile an SDK framework runs two tasks of half a cpu beside it.
    let state = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if let Some(state) = handle(&events.next()) {
                    return state;
                }
            }
            String::new()
        });
        let sdk = std::process::Command::new(STRATA)
            .args([
                "execute",
                "--master",
                address,
                "--name",
                "sdk-half",
                "--command",
                "true",
                "--instances",
                "2",
                "--resources",
                "cpus:0.5;mem:64",
                "--work-dir",
                &cluster.work,
                "--timeout",
                "60",
            ])
            .output()
            .unwrap();
        let stdout = common::succeeded(&sdk);
        assert_eq!(stdout.matches("TASK_FINISHED").count(), 2, "{stdout}");
        // The HTTP framework's task ran all along: the first update
        // after its RUNNING is the one its kill causes.
        let kill = json!({"framework_id": framework_id, "type": "KILL",
                          "kill": {"task_id": {"value": "half-1"}}});
        let (status, body) = api.call(Some(&stream_id), "application/json", &kill.to_string());
        assert_eq!(status, 202, "{body}");
        watcher.join().unwrap()
    });
    assert_eq!(state, "TASK_KILLED");
}

/// An unmodified third-party Mesos client library from npm
/// (`mesos-framework`, in `cli/tests/mesos-framework/`) runs its
/// scheduler to TASK_FINISHED. `.ci/run` installs it; elsewhere, without
/// node or the package, the test says why and passes unless `CI` is set.
#[test]
fn a_scheduler_written_with_mesos_framework_from_npm_runs_a_task() {
    let script_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mesos-framework");
    let missing = if !script_dir.join("node_modules/mesos-framework").is_dir() {
        Some(format!(
            "no mesos-framework in {} (npm install there)",
            script_dir.display()
        ))
    } else if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("no node".to_owned())
    } else {
        None
    };
    if let Some(reason) = missing {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the mesos-framework test: {reason}"
        );
        eprintln!("skipping the mesos-framework test: {reason}");
        return;
    }
    let cluster = Cluster::start("v1-npm", &["--resources", "cpus:1;mem:256"]);
    // The library writes its logs to ./logs.
    std::fs::create_dir_all(cluster.dir.join("logs")).unwrap();
    let output = std::process::Command::new("node")
        .arg(script_dir.join("framework.js"))
        .arg(&cluster.address)
        .current_dir(&cluster.dir)
        .output()
        .unwrap();
    let stdout = common::succeeded(&output);
    assert!(stdout.contains("SUBSCRIBED"), "{stdout}");
    assert!(stdout.contains(" TASK_RUNNING"), "{stdout}");
    assert!(stdout.contains(" TASK_FINISHED"), "{stdout}");
}

/// A custom executor written with an unmodified third-party library,
/// pymesos (installed by `.ci/run` into cli/tests/mesos-executor/venv),
/// runs a v1 HTTP framework's tasks through the agent's executor API:
/// one finishes, one fails with its exit code, one is killed, and the
/// last ends when the framework shuts the executor down.
#[test]
fn a_custom_executor_written_with_pymesos_runs_tasks() {
    let executor_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mesos-executor");
    let python = executor_dir.join("venv/bin/python");
    let importable = std::process::Command::new(&python)
        .args(["-c", "import pymesos"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !importable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the pymesos executor test: run {}/install.sh",
            executor_dir.display()
        );
        eprintln!(
            "skipping the pymesos executor test: no pymesos in {}",
            python.display()
        );
        return;
    }
    let cluster = Cluster::start(
        "v1-executor",
        &[
            "--resources",
            "cpus:2;mem:512",
            "--allow-unauthenticated-http-executors",
            // The executor runs from this source tree, which may be under
            // /tmp: a task in namespaces has a /tmp of its own.
            "--isolation",
            if rustix::process::geteuid().is_root() {
                "cgroups"
            } else {
                "posix"
            },
        ],
    );
    let api = &cluster.api;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let (stream_id, mut events) =
        api.subscribe(json!({"user": user, "name": "python-executor", "failover_timeout": 60.0}));
    let subscribed = events.next();
    let framework_id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let offer = events.next_of("OFFERS")["offers"]["offers"][0].clone();
    let executor = json!({
        "executor_id": {"value": "python"},
        "command": {"value": format!("exec {} {}", python.display(), executor_dir.join("executor.py").display())},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}
        ]
    });
    let task = |id: &str, command: &str| {
        json!({
            "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}
            ],
            "executor": executor,
            "labels": {"labels": [{"key": "command", "value": command}]}
        })
    };
    let accept = json!({
        "framework_id": {"value": framework_id},
        "type": "ACCEPT",
        "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                task("py-ok", "echo from python"),
                task("py-fails", "exit 3"),
                task("py-killed", "exec sleep 600"),
                task("py-long", "exec sleep 600"),
            ]}}],
            "filters": {"refuse_seconds": 1}
        }
    });
    let (status, body) = api.call(Some(&stream_id), "application/json", &accept.to_string());
    assert_eq!(status, 202, "{body}");
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut messages: std::collections::BTreeMap<String, String> = Default::default();
    let mut kill_sent = false;
    let state_of = |last: &std::collections::BTreeMap<String, String>, task: &str| {
        last.get(task).cloned().unwrap_or_default()
    };
    let mut shutdown_sent = false;
    while state_of(&last, "py-long") != "TASK_KILLED" {
        let update = events.next_of("UPDATE");
        let status = &update["update"]["status"];
        let task_id = status["task_id"]["value"].as_str().unwrap().to_owned();
        let state = status["state"].as_str().unwrap().to_owned();
        messages.insert(
            task_id.clone(),
            status["message"].as_str().unwrap_or_default().to_owned(),
        );
        last.insert(task_id.clone(), state.clone());
        if let Some(uuid) = status["uuid"].as_str() {
            let acknowledge = json!({
                "framework_id": {"value": framework_id},
                "type": "ACKNOWLEDGE",
                "acknowledge": {"agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": uuid}
            });
            let (code, body) = api.call(
                Some(&stream_id),
                "application/json",
                &acknowledge.to_string(),
            );
            assert_eq!(code, 202, "{body}");
        }
        if task_id == "py-killed" && state == "TASK_RUNNING" && !kill_sent {
            kill_sent = true;
            let kill = json!({
                "framework_id": {"value": framework_id},
                "type": "KILL",
                "kill": {"task_id": {"value": "py-killed"}}
            });
            let (code, body) = api.call(Some(&stream_id), "application/json", &kill.to_string());
            assert_eq!(code, 202, "{body}");
        }
        assert!(
            !(task_id == "py-ok" && state.ends_with("FAILED")),
            "{update}"
        );
        // The others settled and the long one runs: the framework shuts
        // its executor down, which ends the long one.
        let settled = state_of(&last, "py-ok") == "TASK_FINISHED"
            && state_of(&last, "py-fails") == "TASK_FAILED"
            && state_of(&last, "py-killed") == "TASK_KILLED"
            && state_of(&last, "py-long") == "TASK_RUNNING";
        if settled && !shutdown_sent {
            shutdown_sent = true;
            let shutdown = json!({
                "framework_id": {"value": framework_id},
                "type": "SHUTDOWN",
                "shutdown": {"executor_id": {"value": "python"}, "agent_id": offer["agent_id"]}
            });
            let (code, body) =
                api.call(Some(&stream_id), "application/json", &shutdown.to_string());
            assert_eq!(code, 202, "{body}");
        }
    }
    assert_eq!(messages["py-fails"], "exit code 3");
    assert_eq!(
        messages["py-long"],
        "its executor was shut down by its framework"
    );
    // Nobody subscribes as an executor this agent did not start.
    let agent_api = format!("http://{}/api/v1/executor", cluster._agent.pid.addr());
    let subscribe = |executor_id: &str| {
        let call = json!({
            "type": "SUBSCRIBE",
            "framework_id": {"value": framework_id},
            "executor_id": {"value": executor_id},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []}
        });
        let mut response = client()
            .post(&agent_api)
            .header("Content-Type", "application/json")
            .send(call.to_string())
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let (status, body) = subscribe("stranger");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("was started by this agent"), "{body}");
}

/// Runs `strata` with `args`; its output.
fn strata(args: &[&str]) -> std::process::Output {
    std::process::Command::new(STRATA)
        .args(args)
        .output()
        .unwrap()
}

/// An HTTPS client trusting the CA in `ca` (a `strata tls` directory),
/// presenting the certificate in `identity` when given: as a client in
/// another language would, from the PEM files.
fn https_client(ca: &std::path::Path, identity: Option<&std::path::Path>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let pem = |path: std::path::PathBuf| std::fs::read(path).unwrap();
    let root = Certificate::from_pem(&pem(ca.join("ca.pem"))).unwrap();
    let mut tls = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&[root]));
    if let Some(dir) = identity {
        let certificate = Certificate::from_pem(&pem(dir.join("node.pem"))).unwrap();
        let key = PrivateKey::from_pem(&pem(dir.join("node-key.pem"))).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[certificate], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .tls_config(tls.build())
        .build()
        .into()
}

#[test]
fn http_callers_authenticate_with_client_certificates() {
    let (dir, work, agent_work) = common::work_dirs("v1-certificates");
    let path = |name: &str| dir.join(name);
    let text = |name: &str| path(name).to_str().unwrap().to_owned();
    // A production CA, a certificate for each node and caller, and a
    // look-alike framework certificate from a CA the cluster never saw.
    for ca in ["ca", "other-ca"] {
        common::succeeded(&strata(&["tls", "ca", "--dir", &text(ca)]));
    }
    let issue = |ca: &str, role: &str, name: &str, out: &str| {
        let mut args = vec![
            "tls", "cert", "--ca-dir", ca, "--role", role, "--name", name,
        ];
        args.extend(["--host", "127.0.0.1", "--out", out]);
        common::succeeded(&strata(&args));
    };
    for (role, name) in [
        ("master", "master"),
        ("agent", "agent-1"),
        ("framework", "alice"),
        ("framework", "bob"),
        ("operator", "ops"),
    ] {
        issue(&text("ca"), role, name, &text(name));
    }
    issue(
        &text("other-ca"),
        "framework",
        "alice",
        &text("forged-alice"),
    );
    let acls = bob_registers_nowhere(&dir);
    // HTTPS only, /state only for those who authenticate, and no HTTP
    // credentials at all: certificates are the only way in.
    let master = common::start_master_with(
        &work,
        "0",
        &[
            "--tls-dir",
            &text("master"),
            "--https-only",
            "--authenticate-http-readonly",
            "--acls",
            acls.to_str().unwrap(),
        ],
    );
    let address = master.pid.addr().to_string();
    let _agent = common::start_agent_with(
        &address,
        &agent_work,
        &[
            "--tls-dir",
            &text("agent-1"),
            "--https-only",
            "--authenticate-http-readonly",
            "--resources",
            "cpus:2;mem:512",
        ],
    );
    let ca = path("ca");
    let as_who = |who: Option<&str>| https_client(&ca, who.map(&path).as_deref());
    let get = |client: &ureq::Agent, url: &str| {
        let mut response = client.get(url).call().unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let state_url = format!("https://{address}/state");

    // Plain HTTP is told to use HTTPS; HTTPS without a certificate reaches
    // only the public endpoints.
    let (status, body) = get(&client(), &format!("http://{address}/health"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTPS only"), "{body}");
    assert_eq!(
        get(&as_who(None), &format!("https://{address}/health")).0,
        200
    );
    let (status, body) = get(&as_who(None), &state_url);
    assert_eq!(status, 401, "{body}");
    // A certificate of another CA fails the handshake; an agent's names no
    // principal; an operator's reads the state.
    assert!(as_who(Some("forged-alice")).get(&state_url).call().is_err());
    let (status, body) = get(&as_who(Some("agent-1")), &state_url);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("names no principal"), "{body}");
    // The agent registers a moment after it announced its address.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = get(&as_who(Some("ops")), &state_url);
        assert_eq!(status, 200, "{body}");
        let state: strata_api::views::MasterState = serde_json::from_str(&body).unwrap();
        if state.agents.len() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::yield_now();
    }

    // The scheduler API: the certificate's name is the principal, and the
    // ACLs decide as for any framework.
    let api_as = |who: &str| Api {
        url: format!("https://{address}/api/v1/scheduler"),
        client: as_who(Some(who)),
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let subscribe = |info: Value| {
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}).to_string()
    };
    let (status, body) = api_as("bob").call(
        None,
        "application/json",
        &subscribe(json!({"user": user, "name": "bob's"})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may not register"), "{body}");
    let (status, body) = api_as("alice").call(
        None,
        "application/json",
        &subscribe(json!({"user": user, "name": "claims bob", "principal": "bob"})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("principal"), "{body}");
    let (status, body) = api_as("ops").call(
        None,
        "application/json",
        &subscribe(json!({"user": user, "name": "operator's"})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("framework's certificate"), "{body}");

    let alice = api_as("alice");
    let (stream_id, mut events) = alice.subscribe(json!({"user": user, "name": "alice's"}));
    let subscribed = events.next_of("SUBSCRIBED");
    let framework_id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let offers = events.next_of("OFFERS");
    let states = alice.run_to_finished(
        &stream_id,
        &mut events,
        &framework_id,
        &offers["offers"]["offers"][0],
        "over-https",
        "echo hello over https",
    );
    assert!(states.contains(&"TASK_RUNNING".to_owned()), "{states:?}");

    // The CLI reads the master and the agent over HTTPS with an operator's
    // certificate; without HTTPS it is told to use it.
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--master", &address, "--https", "--tls-dir"]);
        let ops = text("ops");
        all.push(&ops);
        strata(&all)
    };
    let tasks = common::succeeded(&cli(&["tasks"]));
    assert!(tasks.contains("over-https"), "{tasks}");
    let logs = common::succeeded(&cli(&["logs", "over-https"]));
    assert_eq!(logs.trim(), "hello over https");
    let plain = strata(&["tasks", "--master", &address]);
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("HTTPS only"),
        "{plain:?}"
    );

    // Calls that change the cluster need an operator's certificate.
    let teardown =
        json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": framework_id}}})
            .to_string();
    let operator_call = |who: &str| {
        let mut response = as_who(Some(who))
            .post(&format!("https://{address}/api/v1"))
            .header("Content-Type", "application/json")
            .send(&teardown)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    };
    let (status, body) = operator_call("alice");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("operator's certificate"), "{body}");
    let (status, body) = operator_call("ops");
    assert_eq!(status, 200, "{body}");
    // The torn-down framework's stream ends.
    let mut rest = Vec::new();
    let _ = events.body.read_to_end(&mut rest);
    let _ = std::fs::remove_dir_all(&dir);
}
