//! The v1 operator API and the v0 endpoints tools read, against `strata
//! local` as real processes: the event stream follows a task from launch
//! to finish record by record, the GET calls answer in Mesos's shapes,
//! TEARDOWN and MARK_AGENT_GONE change the cluster, and bad calls get a
//! 4xx (or 501) naming what is wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::events::{Events, client};
use serde_json::{Value, json};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// `strata local` with two agents, stopped when dropped.
struct Local {
    child: std::process::Child,
    work_dir: std::path::PathBuf,
    master: String,
}

impl Local {
    fn start(name: &str) -> Local {
        let work_dir = common::scratch().join(format!("strata-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work_dir);
        let (child, master) = common::start_local(&work_dir, "2");
        let local = Local {
            child,
            work_dir,
            master,
        };
        // Both agents registered: in the state the stream starts with, or
        // as they are added.
        let mut events = local.subscribe();
        let subscribed = events.next();
        let mut agents = subscribed["subscribed"]["get_state"]["get_agents"]["agents"]
            .as_array()
            .unwrap()
            .len();
        while agents < 2 {
            let added = events.next_of("AGENT_ADDED");
            assert_eq!(added["agent_added"]["agent"]["active"], true);
            agents += 1;
        }
        local
    }

    /// POSTs `call` to `/api/v1`; the status and the body.
    fn call(&self, content_type: &str, call: &str) -> (u16, String) {
        let mut response = client()
            .post(format!("http://{}/api/v1", self.master))
            .header("Content-Type", content_type)
            .send(call)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// A call's JSON answer, which must be 200.
    fn get(&self, call: Value) -> Value {
        let (status, body) = self.call("application/json", &call.to_string());
        assert_eq!(status, 200, "{call}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn read(&self, path: &str) -> Value {
        let mut response = client()
            .get(format!("http://{}{path}", self.master))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn subscribe(&self) -> Events {
        let response = client()
            .post(format!("http://{}/api/v1", self.master))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .send(json!({"type": "SUBSCRIBE"}).to_string())
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        Events::of(Box::new(response.into_body().into_reader()))
    }

    fn execute(&self, name: &str, command: &str) -> std::process::Child {
        Command::new(STRATA)
            .args([
                "execute",
                "--master",
                &self.master,
                "--name",
                name,
                "--command",
                command,
                "--work-dir",
            ])
            .arg(&self.work_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

#[test]
fn the_operator_stream_follows_a_task_from_launch_to_finish() {
    let local = Local::start("operator-stream");
    let mut events = local.subscribe();
    let subscribed = events.next();
    assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
    let state = &subscribed["subscribed"]["get_state"];
    assert_eq!(state["get_agents"]["agents"].as_array().unwrap().len(), 2);
    assert!(
        state["get_frameworks"]["frameworks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(subscribed["subscribed"]["heartbeat_interval_seconds"], 15.0);

    let mut run = local.execute("followed", "echo followed");
    let added = events.next_of("FRAMEWORK_ADDED");
    let framework_id = added["framework_added"]["framework"]["framework_info"]["id"].clone();
    let task = events.next_of("TASK_ADDED");
    assert_eq!(task["task_added"]["task"]["task_id"]["value"], "followed");
    assert_eq!(task["task_added"]["task"]["framework_id"], framework_id);
    // Every state the task reached, in order, to TASK_FINISHED.
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("TASK_FINISHED") {
        let updated = events.next_of("TASK_UPDATED");
        let body = &updated["task_updated"];
        assert_eq!(body["framework_id"], framework_id);
        assert_eq!(body["status"]["task_id"]["value"], "followed");
        assert_eq!(body["state"], body["status"]["state"]);
        states.push(body["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states, ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]);
    assert!(run.wait().unwrap().success());
    let removed = events.next_of("FRAMEWORK_REMOVED");
    assert_eq!(
        removed["framework_removed"]["framework_info"]["id"],
        framework_id
    );

    // What the stream said is what GET_TASKS and /master/state say.
    let tasks = local.get(json!({"type": "GET_TASKS"}));
    let completed = &tasks["get_tasks"]["completed_tasks"][0];
    assert_eq!(completed["state"], "TASK_FINISHED");
    let statuses: Vec<&str> = completed["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|status| status["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "TASK_STAGING",
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_FINISHED"
        ]
    );
    let v0 = local.read("/master/state");
    assert_eq!(
        v0["completed_frameworks"][0]["completed_tasks"][0]["state"],
        "TASK_FINISHED"
    );
    assert_eq!(v0["activated_slaves"], 2);
    assert_eq!(v0["leader"], format!("master@{}", local.master));
    assert_eq!(v0["slaves"][0]["resources"]["gpus"], 0.0);
    assert_eq!(local.read("/master/state.json"), local.read("/state.json"));
}

#[test]
fn operator_calls_answer_in_mesos_shapes_and_refuse_bad_calls() {
    let local = Local::start("operator-calls");
    assert_eq!(
        local.get(json!({"type": "GET_HEALTH"})),
        json!({"type": "GET_HEALTH", "get_health": {"healthy": true}})
    );
    let version = local.get(json!({"type": "GET_VERSION"}));
    assert_eq!(version["get_version"]["version_info"]["version"], "1.11.0");
    let flags = local.get(json!({"type": "GET_FLAGS"}));
    assert!(
        flags["get_flags"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "agents", "value": "2"}))
    );
    assert_eq!(local.read("/master/flags")["flags"]["agents"], "2");
    let metrics = local.get(json!({"type": "GET_METRICS"}));
    assert!(
        metrics["get_metrics"]["metrics"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "master/agents_active", "value": 2.0}))
    );
    let master = local.get(json!({"type": "GET_MASTER"}));
    assert_eq!(
        master["get_master"]["master_info"]["pid"],
        format!("master@{}", local.master)
    );
    let state = local.get(json!({"type": "GET_STATE"}));
    let agents = &state["get_state"]["get_agents"]["agents"];
    assert_eq!(agents.as_array().unwrap().len(), 2);
    assert_eq!(agents[0]["agent_info"]["resources"][0]["type"], "SCALAR");

    // Bad calls: each a clear 4xx (or 501), and nothing changes.
    let refused = |content_type: &str, call: &str| local.call(content_type, call);
    let (status, body) = refused("application/json", "{\"type\": ");
    assert_eq!(status, 400, "{body}");
    let (status, body) = refused("application/json", r#"{"type": "GET_EVERYTHING"}"#);
    assert_eq!(
        (status, body.contains("GET_EVERYTHING")),
        (400, true),
        "{body}"
    );
    let (status, body) = refused("application/json", r#"{"type": "GET_QUOTA"}"#);
    assert_eq!((status, body.contains("not served")), (501, true), "{body}");
    let (status, body) = refused("application/x-protobuf", r#"{"type": "GET_HEALTH"}"#);
    assert_eq!(
        (status, body.contains("application/json")),
        (415, true),
        "{body}"
    );
    let (status, body) = refused("application/json", r#"{"type": "TEARDOWN"}"#);
    assert_eq!((status, body.contains("teardown")), (400, true), "{body}");
    let (status, body) = refused(
        "application/json",
        r#"{"type": "TEARDOWN", "teardown": {"framework_id": {"value": "no-F1"}}}"#,
    );
    assert_eq!(
        (status, body.contains("no framework no-F1")),
        (404, true),
        "{body}"
    );
    let (status, _) = refused(
        "application/json",
        r#"{"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": {"value": "../x"}}}"#,
    );
    assert_eq!(status, 400);
    let again = local.get(json!({"type": "GET_STATE"}));
    assert_eq!(
        again["get_state"]["get_agents"],
        state["get_state"]["get_agents"]
    );
}

#[test]
fn an_operator_tears_down_a_framework_and_marks_an_agent_gone() {
    let local = Local::start("operator-changes");
    let mut events = local.subscribe();
    assert_eq!(events.next()["type"], "SUBSCRIBED");
    let mut run = local.execute("long", "exec sleep 600");
    let framework_id =
        events.next_of("FRAMEWORK_ADDED")["framework_added"]["framework"]["framework_info"]["id"]
            .clone();
    loop {
        let updated = events.next_of("TASK_UPDATED");
        if updated["task_updated"]["state"] == "TASK_RUNNING" {
            break;
        }
    }
    let tasks = local.get(json!({"type": "GET_TASKS"}));
    let agent_id = tasks["get_tasks"]["tasks"][0]["agent_id"].clone();

    let teardown = json!({"type": "TEARDOWN", "teardown": {"framework_id": framework_id}});
    let (status, body) = local.call("application/json", &teardown.to_string());
    assert_eq!(status, 200, "{body}");
    // Read your writes: the framework is gone from what the master says next.
    let frameworks = local.get(json!({"type": "GET_FRAMEWORKS"}));
    assert!(
        frameworks["get_frameworks"]["frameworks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        frameworks["get_frameworks"]["completed_frameworks"][0]["framework_info"]["id"],
        framework_id
    );
    // Its running task ends TASK_KILLED on the stream, before the
    // framework is removed.
    let killed = events.next_of("TASK_UPDATED");
    assert_eq!(killed["task_updated"]["state"], "TASK_KILLED", "{killed}");
    let removed = events.next_of("FRAMEWORK_REMOVED");
    assert_eq!(
        removed["framework_removed"]["framework_info"]["id"],
        framework_id
    );
    // Its scheduler is told, and `strata execute` ends without success.
    assert!(!run.wait().unwrap().success());

    let gone = json!({"type": "MARK_AGENT_GONE", "mark_agent_gone": {"agent_id": agent_id}});
    let (status, body) = local.call("application/json", &gone.to_string());
    assert_eq!(status, 200, "{body}");
    let removed = events.next_of("AGENT_REMOVED");
    assert_eq!(removed["agent_removed"]["agent_id"], agent_id);
    let agents = local.get(json!({"type": "GET_AGENTS"}));
    let left = agents["get_agents"]["agents"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0]["agent_info"]["id"], agent_id);
    // The cluster still runs work on the agent left.
    let mut after = local.execute("after", "true");
    assert!(after.wait().unwrap().success());
}
