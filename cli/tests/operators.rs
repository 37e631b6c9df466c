//! The master's HTTP endpoints on a live `strata master`, with an agent
//! daemon and a running task: each endpoint's shape, and refusals.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_api::views::{AgentState, AgentStatus, MasterState};
use strata_protocol::TaskState;

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// One raw HTTP exchange; returns the status code and the body.
fn http(address: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn get(address: &str, path: &str) -> (u16, String) {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// `/state` (as `T`: a typed view, or raw JSON) once it shows what
/// `ready` wants; waits up to 30 s.
fn state_when<T: serde::de::DeserializeOwned>(address: &str, ready: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(address, "/state");
        if status == 200 {
            let state: T = serde_json::from_str(&body).unwrap();
            if ready(&state) {
                return state;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/state never became ready: {body}"
        );
        // The next snapshot comes with the master's next tick (100 ms).
        std::thread::yield_now();
    }
}

/// A `strata master`, a `strata agent` with `agent_flags` and a task
/// `name` running `command` (0.5 cpus, 64 MB) from `strata execute`; all
/// killed, and the work directory removed, when dropped.
struct Cluster {
    dir: std::path::PathBuf,
    master: strata_integration::ChildNode,
    agent: strata_integration::ChildNode,
    address: String,
    /// The task's sandbox.
    sandbox: std::path::PathBuf,
    _framework: common::KillOnDrop,
    /// The framework's status lines after TASK_RUNNING.
    lines: std::sync::mpsc::Receiver<String>,
    _task: common::KillGroupOnDrop,
}

impl Cluster {
    fn start(test: &str, agent_flags: &[&str], name: &str, command: &str) -> Cluster {
        let (dir, work, agent_work) = common::work_dirs(test);
        let master = common::start_master(&work);
        let address = master.pid.addr().to_string();
        let mut args = vec!["agent", "--master", &address, "--port", "0"];
        args.extend(["--work-dir", &agent_work]);
        args.extend_from_slice(agent_flags);
        let agent =
            strata_integration::ChildNode::start_daemon(std::path::Path::new(STRATA), &args)
                .unwrap();
        let mut framework = Command::new(STRATA)
            .args([
                "execute",
                "--master",
                &address,
                "--name",
                name,
                "--command",
                command,
            ])
            .args(["--resources", "cpus:0.5;mem:64", "--work-dir", &work])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = common::lines_of(framework.stdout.take().unwrap());
        let framework = common::KillOnDrop(framework);
        let running = common::read_until(&lines, "TASK_RUNNING");
        let sandbox = std::path::PathBuf::from(running.split_once("running in ").unwrap().1);
        let task = common::KillGroupOnDrop::of(common::task_pid(&sandbox));
        Cluster {
            dir,
            master,
            agent,
            address,
            sandbox,
            _framework: framework,
            lines,
            _task: task,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_master_serves_state_and_metrics() {
    let cluster = Cluster::start(
        "operators",
        &[
            "--resources",
            "cpus:2;mem:1024;disk:2048",
            "--attributes",
            "rack:r1",
        ],
        "web",
        "sleep 600",
    );
    let (address, master) = (cluster.address.clone(), &cluster.master);

    let (status, body) = get(&address, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Tools find the leader through the redirect: this master.
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"GET /master/redirect HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(
        answer.contains(&format!("location: //{address}\r\n")),
        "{answer}"
    );
    // The scheduler API is off unless the master is told who may use it.
    let (status, body) = http(
        &address,
        "POST /api/v1/scheduler HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("--allow-unauthenticated-http-frameworks"),
        "{body}"
    );
    // Mesos client libraries read the version as numbers.
    let (status, body) = get(&address, "/version");
    assert_eq!(status, 200, "{body}");
    let version: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["version"], "1.11.0", "{body}");
    assert!(version["strata_version"].is_string(), "{body}");

    // Read as the typed view the master writes it from.
    let state: MasterState = state_when(&address, |state: &MasterState| {
        state
            .tasks
            .first()
            .is_some_and(|task| task.state == TaskState::Running)
    });
    assert_eq!(state.pid, master.pid.to_string());
    let agent = state.agents.first().unwrap();
    assert_eq!(agent.status, AgentStatus::Active);
    assert_eq!(
        agent
            .attributes
            .get("rack")
            .map(ToString::to_string)
            .as_deref(),
        Some("r1")
    );
    assert_eq!(agent.total.cpus().as_f64(), 2.0);
    assert_eq!(agent.used.cpus().as_f64(), 0.5);
    assert_eq!(agent.total.mem_mb().as_f64(), 1024.0);
    let framework = state.frameworks.first().unwrap();
    assert_eq!(framework.role, "*");
    assert!(framework.active);
    assert_eq!(framework.tasks, 1);
    assert_eq!(framework.used.cpus().as_f64(), 0.5);
    let task = state.tasks.first().unwrap();
    assert_eq!(task.name, "web");
    assert_eq!(task.agent_id, agent.id);
    assert!(task.sandbox.is_some());
    let history: Vec<TaskState> = task.history.iter().map(|step| step.state).collect();
    assert_eq!(
        history,
        [TaskState::Staging, TaskState::Starting, TaskState::Running]
    );
    // The wire shape the web UI reads.
    let raw: Value = serde_json::from_str(&get(&address, "/state").1).unwrap();
    assert_eq!(raw["agents"][0]["total"]["cpus"], 2.0);
    assert_eq!(raw["tasks"][0]["state"], "TASK_RUNNING");

    let (status, body) = get(&address, "/metrics/snapshot");
    assert_eq!(status, 200);
    let metrics: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metrics["master/elected"], 1.0);
    assert_eq!(metrics["master/agents_active"], 1.0);
    assert_eq!(metrics["master/frameworks_active"], 1.0);
    assert_eq!(metrics["master/tasks_running"], 1.0);
    assert_eq!(metrics["master/cpus_total"], 2.0);
    assert_eq!(metrics["master/cpus_used"], 0.5);
    assert!(metrics["master/outstanding_offers"].is_number());
    // The node's message counters: the agent's and framework's messages
    // came in.
    assert!(metrics["master/messages_received"].as_f64().unwrap() > 0.0);
    assert!(metrics["master/messages_sent"].as_f64().unwrap() > 0.0);
    assert!(metrics["master/dropped_messages"].is_number());

    let (status, body) = get(&address, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE strata_master_tasks_running gauge\nstrata_master_tasks_running 1\n"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE strata_master_tasks_finished_total counter\n"),
        "{body}"
    );

    // The CLI's tables read the same state.
    let strata = |args: &[&str]| {
        let output = Command::new(STRATA).args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, table, _) = strata(&["agents", "--master", &address]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID",
            "HOSTNAME",
            "STATUS",
            "CPUS",
            "MEM",
            "TASKS",
            "ATTRIBUTES"
        ],
        "{table}"
    );
    assert!(
        lines[1].contains("active") && lines[1].contains("0.5/2") && lines[1].ends_with("rack:r1"),
        "{table}"
    );
    let (code, table, _) = strata(&["frameworks", "--master", &address]);
    assert_eq!(code, Some(0));
    assert!(
        table.lines().nth(1).unwrap().contains("strata-execute web"),
        "{table}"
    );
    let (code, table, _) = strata(&["tasks", "--master", &address]);
    assert_eq!(code, Some(0));
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("web ") && row.contains("TASK_RUNNING"),
        "{table}"
    );
    let (code, json, _) = strata(&["tasks", "--master", &address, "--json"]);
    assert_eq!(code, Some(0));
    let tasks: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(tasks[0]["state"], "TASK_RUNNING");
    let (code, _, error) = strata(&["agents", "--master", "127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(
        error.contains("cannot reach the HTTP API at 127.0.0.1:1"),
        "{error}"
    );

    assert_eq!(get(&address, "/nothing").0, 404);
    assert_eq!(
        http(
            &address,
            "POST /state HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        .0,
        405
    );
    assert_eq!(http(&address, "GET /state\r\n\r\n").0, 400);

    // An operator kills the task; its framework sees it KILLED.
    let work = cluster.dir.to_str().unwrap().to_owned();
    let (code, out, error) = strata(&["kill", "web", "--master", &address, "--work-dir", &work]);
    assert_eq!(code, Some(0), "{error}");
    assert!(
        out.starts_with("web TASK_KILLED killed by signal 15"),
        "{out}"
    );
    common::read_until(&cluster.lines, "web TASK_KILLED");
    let (code, _, error) = strata(&["kill", "web", "--master", &address, "--work-dir", &work]);
    assert_eq!(code, Some(1));
    assert!(error.contains("task web is not running"), "{error}");
}

/// The agent's HTTP endpoints on a live `strata agent`: its state with
/// each task's sandbox and usage, per-executor statistics, and sandbox
/// files, with paths that leave the sandboxes refused.
#[test]
fn the_agent_serves_state_statistics_and_sandbox_files() {
    let cluster = Cluster::start(
        "agent-http",
        &["--resources", "cpus:2;mem:1024"],
        "files",
        "echo hello; ln -s / escape; mkfifo pipe; exec sleep 600",
    );
    let agent_http = cluster.agent.pid.addr().to_string();
    let sandbox_path = cluster.sandbox.clone();

    assert_eq!(get(&agent_http, "/health"), (200, "ok\n".to_owned()));
    let state = state_when(&agent_http, |state: &AgentState| {
        state
            .tasks
            .first()
            .is_some_and(|task| task.usage.is_some() && task.sandbox.is_some())
    });
    assert!(state.registered);
    assert_eq!(state.total.cpus().as_f64(), 2.0);
    assert_eq!(state.allocated.cpus().as_f64(), 0.5);
    let task = state.tasks.first().unwrap();
    assert_eq!(task.state, strata_protocol::TaskState::Running);
    let sandbox = task.sandbox.clone().unwrap();
    assert!(sandbox_path.ends_with(&sandbox), "{sandbox}");
    // The master's view of the task names the same sandbox.
    let master = state_when(&cluster.address, |state: &MasterState| {
        state
            .tasks
            .first()
            .is_some_and(|task| task.sandbox.is_some())
    });
    assert_eq!(
        master.task("files").unwrap().sandbox.as_ref(),
        Some(&sandbox)
    );

    let (status, body) = get(&agent_http, "/monitor/statistics");
    assert_eq!(status, 200);
    let statistics: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(statistics[0]["executor_id"], "files");
    assert_eq!(statistics[0]["statistics"]["cpus_limit"], 0.5);
    assert!(
        statistics[0]["statistics"]["mem_rss_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (status, body) = get(&agent_http, &format!("/files/browse?path={sandbox}"));
    assert_eq!(status, 200, "{body}");
    let entries: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().rsplit('/').next().unwrap())
        // The task's private /tmp, when it runs in namespaces (as root).
        .filter(|name| *name != "tmp")
        .collect();
    assert_eq!(names, ["escape", "pipe", "stderr", "stdout"]);
    let (status, body) = get(&agent_http, &format!("/files/read?path={sandbox}/stdout"));
    assert_eq!(status, 200, "{body}");
    let chunk: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(chunk["data"], "hello\n");
    let (_, body) = get(
        &agent_http,
        &format!("/files/read?path={sandbox}/stdout&offset=-1"),
    );
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["offset"], 6);
    let (_, body) = get(
        &agent_http,
        &format!("/files/read?path={sandbox}/stdout&offset=1&length=3"),
    );
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["data"], "ell");

    let refused = |path: &str| get(&agent_http, &format!("/files/read?path={path}")).0;
    assert_eq!(
        refused(&format!("{sandbox}/escape/etc/hostname")),
        403,
        "a link out"
    );
    assert_eq!(
        refused(&format!("{sandbox}/../../../../../tls/ca.pem")),
        403,
        ".."
    );
    assert_eq!(refused("/etc/hostname"), 400, "absolute");
    // A FIFO nobody writes to: refused at once, the agent keeps serving
    // and stays in touch with its master.
    let (status, body) = get(&agent_http, &format!("/files/read?path={sandbox}/pipe"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a regular file"), "{body}");
    assert_eq!(get(&agent_http, "/health").0, 200);
    let master_state = state_when(&cluster.address, |state: &MasterState| {
        !state.agents.is_empty()
    });
    assert_eq!(
        master_state.agents.first().unwrap().status,
        AgentStatus::Active
    );
    assert_eq!(get(&agent_http, "/files/read").0, 400);
    assert_eq!(refused(&format!("{sandbox}/nothing")), 404);

    let (status, body) = get(&agent_http, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("strata_agent_tasks_running 1\n"), "{body}");

    // `strata logs` reads the same files through the master and agent.
    let address = cluster.address.clone();
    let logs = |args: &[&str]| {
        let output = Command::new(STRATA)
            .args(["logs", "--master", &address])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(logs(&["files"]), (Some(0), "hello\n".into(), String::new()));
    assert_eq!(
        logs(&["files", "--stderr"]),
        (Some(0), String::new(), String::new())
    );
    let (code, _, error) = logs(&["nope"]);
    assert_eq!(code, Some(1));
    assert!(error.contains("knows no task nope"), "{error}");
    // Following a task that writes, pauses and ends prints all of it.
    let mut writer = Command::new(STRATA)
        .args(["execute", "--master", &address, "--name", "writer"])
        .args(["--command", "echo one; sleep 1; echo two"])
        .args(["--resources", "cpus:0.1;mem:32", "--work-dir"])
        .arg(cluster.dir.to_str().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let writer_lines = common::lines_of(writer.stdout.take().unwrap());
    let _writer = common::KillOnDrop(writer);
    common::read_until(&writer_lines, "TASK_RUNNING");
    assert_eq!(
        logs(&["writer", "--follow"]),
        (Some(0), "one\ntwo\n".into(), String::new())
    );
}

/// An agent asked to authenticate its readers serves task data only to
/// principals of its credentials file; health and metrics stay open.
#[test]
fn agent_endpoints_need_credentials_when_asked() {
    let credentials = common::scratch().join(format!(
        "strata-http-credentials-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &credentials,
        r#"{"credentials": [{"principal": "ops", "secret": "s3cret"}]}"#,
    )
    .unwrap();
    let cluster = Cluster::start(
        "agent-auth",
        &[
            "--authenticate-http-readonly",
            "--http-credentials",
            credentials.to_str().unwrap(),
        ],
        "guarded",
        "echo hidden; exec sleep 600",
    );
    let agent_http = cluster.agent.pid.addr().to_string();
    assert_eq!(get(&agent_http, "/health").0, 200);
    assert_eq!(get(&agent_http, "/metrics").0, 200);
    let (status, body) = get(&agent_http, "/state");
    assert_eq!(status, 401, "{body}");
    let with = |authorization: &str, path: &str| {
        http(
            &agent_http,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    // "ops:s3cret" and a wrong secret, in Basic; the secret as a token.
    assert_eq!(with("Basic b3BzOnMzY3JldA==", "/state").0, 200);
    assert_eq!(with("Basic b3BzOndyb25n", "/state").0, 401);
    let state = with("Bearer s3cret", "/state");
    assert_eq!(state.0, 200);
    let _ = std::fs::remove_file(&credentials);
}

/// With the agent as root, a task of a framework whose user is `nobody`
/// runs as nobody and can read none of the agent's secrets nor another
/// framework's sandbox.
#[test]
fn tasks_run_as_their_frameworks_user() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root, so this test must run there"
        );
        eprintln!("skipped: switching users needs root");
        return;
    }
    let cluster = Cluster::start(
        "run-as",
        &["--resources", "cpus:2;mem:1024"],
        "root-task",
        "echo secret > private; exec sleep 600",
    );
    let agent_work = std::path::PathBuf::from(common::agent_work_dir(&cluster.dir, "agent"));
    let targets = [
        cluster.dir.join("tls").join("dev-ca.pem"),
        agent_work.join("meta").join("executor-ca.pem"),
        agent_work.join("meta").join("task-launcher.secret"),
        cluster.sandbox.join("private"),
    ];
    // The task writes its file once it runs, which may be after RUNNING
    // is reported.
    common::wait_for_path(&cluster.sandbox.join("private"));
    for target in &targets {
        assert!(target.exists(), "{} exists", target.display());
    }
    let probes: Vec<String> = targets
        .iter()
        .map(|target| {
            let target = target.display();
            format!(
                "if cat {target} >/dev/null 2>&1; then echo READ {target}; else echo DENIED; fi"
            )
        })
        .collect();
    let command = format!("id -un; {}", probes.join("; "));
    let output = Command::new(STRATA)
        .args([
            "execute",
            "--master",
            &cluster.address,
            "--name",
            "as-nobody",
        ])
        .args(["--user", "nobody", "--command", &command])
        .args(["--resources", "cpus:0.1;mem:32", "--work-dir"])
        .arg(cluster.dir.to_str().unwrap())
        .args(["--timeout", "60"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{printed}");
    let running = printed
        .lines()
        .find(|line| line.contains("running in "))
        .unwrap_or_else(|| panic!("no sandbox in {printed}"));
    let sandbox = std::path::PathBuf::from(running.split_once("running in ").unwrap().1);
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "nobody", "{stdout}");
    assert_eq!(lines[1..], ["DENIED"; 4], "{stdout}");
    // Its sandbox is nobody's, and closed to others.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&sandbox).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o750);
    assert_ne!(meta.uid(), 0);
    // An unknown user fails the task, saying which.
    let output = Command::new(STRATA)
        .args([
            "execute",
            "--master",
            &cluster.address,
            "--name",
            "as-ghost",
        ])
        .args(["--user", "no-such-user-strata", "--command", "true"])
        .args(["--resources", "cpus:0.1;mem:32", "--work-dir"])
        .arg(cluster.dir.to_str().unwrap())
        .args(["--timeout", "60"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("TASK_FAILED") && printed.contains("no-such-user-strata"),
        "{printed}"
    );
}

/// The CLI's tables on a live `strata local`: its agents, and JSON that
/// scripts can read.
#[test]
fn tables_on_a_live_local_cluster() {
    let dir = common::scratch().join(format!("strata-tables-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut local = Command::new(STRATA)
        .args(["local", "--agents", "2", "--port", "0", "--work-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(local.stdout.take().unwrap());
    let _local = common::KillOnDrop(local);
    let http = common::read_until(&lines, "HTTP API");
    let address = http
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    // Both agents registered, as the master's snapshot shows.
    state_when(&address, |state: &MasterState| state.agents.len() == 2);
    let output = Command::new(STRATA)
        .args(["agents", "--master", &address])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[1..].iter().all(|row| row.contains("active")),
        "{table}"
    );
    // One row each (which is first depends on which registered first).
    for hostname in ["agent-1", "agent-2"] {
        assert_eq!(
            rows[1..]
                .iter()
                .filter(|row| row.contains(hostname))
                .count(),
            1,
            "{table}"
        );
    }
    for (command, length) in [("agents", 2), ("frameworks", 0), ("tasks", 0)] {
        let output = Command::new(STRATA)
            .args([command, "--master", &address, "--json"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}");
        let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), length, "{command}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
