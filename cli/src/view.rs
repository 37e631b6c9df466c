//! `strata agents | frameworks | tasks`: the cluster as aligned tables,
//! read from the master's `/state` (or as JSON with `--json`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::get;

/// Which table.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Agents,
    Frameworks,
    Tasks,
}

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// The master's address, HOST:PORT (its HTTP API is on that port).
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050", value_parser = parse_address)]
    pub master: SocketAddr,
    /// Print the rows as JSON, as `/state` has them.
    #[arg(long)]
    pub json: bool,
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    strata_runtime::upid::parse_socket_addr(text).map_err(|e| e.to_string())
}

/// Prints `rows` (header first) with columns aligned.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        Value::Number(number) => number
            .as_f64()
            .map(|n| {
                if n.fract() == 0.0 {
                    format!("{n:.0}")
                } else {
                    format!("{n:.2}").trim_end_matches('0').to_owned()
                }
            })
            .unwrap_or_else(|| number.to_string()),
        other => other.to_string(),
    }
}

/// `used/total` of resource `name`.
fn share(used: &Value, total: &Value, name: &str) -> String {
    let amount = |resources: &Value| text(resources.get(name).unwrap_or(&Value::from(0)));
    format!("{}/{}", amount(used), amount(total))
}

fn attributes(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return "-".into();
    };
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(name, value)| format!("{name}:{}", text(value)))
        .collect::<Vec<_>>()
        .join(";")
}

pub fn run(table: Table, args: ViewArgs) -> anyhow::Result<()> {
    let body = get(args.master, "/state")?;
    let state: Value = serde_json::from_slice(&body).context("the master's /state is not JSON")?;
    let empty = Vec::new();
    let list = |key: &str| state[key].as_array().unwrap_or(&empty).clone();
    let rows: Vec<Value> = match table {
        Table::Agents => list("agents"),
        Table::Frameworks => list("frameworks"),
        Table::Tasks => list("tasks")
            .into_iter()
            .chain(list("completed_tasks"))
            .collect(),
    };
    if args.json {
        let mut out = serde_json::to_string_pretty(&rows)?;
        out.push('\n');
        std::io::stdout().lock().write_all(out.as_bytes())?;
        return Ok(());
    }
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let header = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    match table {
        Table::Agents => {
            lines.push(header(&[
                "ID",
                "HOSTNAME",
                "STATUS",
                "CPUS",
                "MEM",
                "TASKS",
                "ATTRIBUTES",
            ]));
            for agent in &rows {
                lines.push(vec![
                    text(&agent["id"]),
                    text(&agent["hostname"]),
                    text(&agent["status"]),
                    share(&agent["used"], &agent["total"], "cpus"),
                    share(&agent["used"], &agent["total"], "mem"),
                    text(&agent["tasks"]),
                    attributes(&agent["attributes"]),
                ]);
            }
        }
        Table::Frameworks => {
            lines.push(header(&[
                "ID", "NAME", "ROLE", "ACTIVE", "TASKS", "CPUS", "MEM",
            ]));
            for framework in &rows {
                let yes_no = if framework["active"] == Value::Bool(true) {
                    "yes"
                } else {
                    "no"
                };
                lines.push(vec![
                    text(&framework["id"]),
                    text(&framework["name"]),
                    text(&framework["role"]),
                    yes_no.to_owned(),
                    text(&framework["tasks"]),
                    text(framework["used"].get("cpus").unwrap_or(&Value::from(0))),
                    text(framework["used"].get("mem").unwrap_or(&Value::from(0))),
                ]);
            }
        }
        Table::Tasks => {
            lines.push(header(&[
                "ID",
                "NAME",
                "STATE",
                "FRAMEWORK",
                "AGENT",
                "CPUS",
                "MEM",
            ]));
            for task in &rows {
                lines.push(vec![
                    text(&task["id"]),
                    text(&task["name"]),
                    text(&task["state"]),
                    text(&task["framework_id"]),
                    text(&task["agent_id"]),
                    text(task["resources"].get("cpus").unwrap_or(&Value::from(0))),
                    text(task["resources"].get("mem").unwrap_or(&Value::from(0))),
                ]);
            }
        }
    }
    print_table(&lines);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The task's id.
    pub task_id: String,
    /// Print its stderr instead of its stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing what the task writes until it ends.
    #[arg(long, short)]
    pub follow: bool,
    /// The master's address, HOST:PORT.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050", value_parser = parse_address)]
    pub master: SocketAddr,
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The task's entry in the master's state, running ones first.
fn find_task(state: &Value, task_id: &str) -> Option<Value> {
    ["tasks", "completed_tasks"].iter().find_map(|list| {
        state[*list]
            .as_array()?
            .iter()
            .rev()
            .find(|task| task["id"] == task_id)
            .cloned()
    })
}

/// Where a task's sandbox is: its agent's HTTP address and the sandbox
/// relative to the agent's sandbox root (from its RUNNING message, which
/// names the sandbox).
fn locate(state: &Value, task: &Value) -> anyhow::Result<(SocketAddr, String)> {
    let agent_id = task["agent_id"].as_str().unwrap_or_default();
    let agent = state["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|agent| agent["id"] == agent_id))
        .with_context(|| format!("the master no longer knows agent {agent_id}"))?;
    let pid: strata_runtime::Upid = agent["pid"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .context("the master gave a malformed agent address")?;
    let marker = format!("/agents/{agent_id}/");
    let sandbox = task["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|step| step["message"].as_str()?.strip_prefix("running in "))
        .find_map(|path| {
            path.split_once(&marker)
                .map(|(_, relative)| relative.to_owned())
        })
        .with_context(|| {
            format!(
                "task {} has no sandbox (it never ran, or ran in a custom executor)",
                text(&task["id"])
            )
        })?;
    Ok((pid.addr(), sandbox))
}

/// The master's state and the task in it. `/state` holds everything the
/// master did before it was asked, so a task whose update a client saw
/// is there.
fn task_in_state(master: SocketAddr, task_id: &str) -> anyhow::Result<(Value, Value)> {
    let state: Value = serde_json::from_slice(&get(master, "/state")?)?;
    match find_task(&state, task_id) {
        Some(task) => Ok((state, task)),
        None => bail!("the master at {master} knows no task {task_id}"),
    }
}

/// Whether `task_id` (of `framework_id`) is among the running tasks.
fn running(state: &Value, framework_id: &Value, task_id: &str) -> bool {
    state["tasks"].as_array().is_some_and(|tasks| {
        tasks
            .iter()
            .any(|task| task["id"] == task_id && &task["framework_id"] == framework_id)
    })
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The task's id.
    pub task_id: String,
    /// The task's framework, when tasks of several frameworks have this id.
    #[arg(long)]
    pub framework: Option<String>,
    /// The master's address, HOST:PORT.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050", value_parser = parse_address)]
    pub master: SocketAddr,
    /// Seconds to wait for the task to end.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

/// Asks the master to kill a task and waits until it has ended; prints its
/// final state.
pub fn kill(args: KillArgs) -> anyhow::Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout).map_err(|_| {
        anyhow::anyhow!(
            "--timeout must be a number of seconds, not {}",
            args.timeout
        )
    })?;
    let (state, _) = task_in_state(args.master, &args.task_id)?;
    let candidates: Vec<Value> = state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["id"] == args.task_id.as_str())
        .filter(|task| {
            args.framework
                .as_ref()
                .is_none_or(|framework| task["framework_id"] == framework.as_str())
        })
        .cloned()
        .collect();
    let task = match candidates.as_slice() {
        [] => bail!("task {} is not running (see `strata tasks`)", args.task_id),
        [task] => task.clone(),
        several => bail!(
            "tasks of several frameworks are called {}: {}; name one with --framework",
            args.task_id,
            several
                .iter()
                .map(|task| text(&task["framework_id"]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let framework_id: strata_protocol::FrameworkId = text(&task["framework_id"]).parse()?;
    let task_id: strata_protocol::TaskId = args.task_id.parse()?;
    let master: strata_runtime::Upid = text(&state["pid"])
        .parse()
        .context("the master gave a malformed address")?;
    let material = args
        .tls
        .material(strata_runtime::Role::Operator, "strata-cli")?;
    let local_ip = crate::ping::local_ip_towards(master.addr())?;
    actix_rt::System::new().block_on(async move {
        let node = strata_runtime::Node::bind(strata_runtime::NodeConfig::new(
            SocketAddr::new(local_ip, 0),
            material,
        ))
        .await?;
        node.connect(master.addr()).await?;
        let inbox = node.inbox::<strata_protocol::ToScheduler>("operator", 16)?;
        let call = strata_protocol::ToMaster::OperatorKill {
            framework_id,
            task_id,
        };
        inbox
            .send(&master, call)
            .map_err(|e| anyhow::anyhow!("cannot reach the master at {master}: {e}"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let ended = loop {
            let address = args.master;
            let id = args.task_id.clone();
            let framework = task["framework_id"].clone();
            let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Value>> {
                let state: Value = serde_json::from_slice(&get(address, "/state")?)?;
                if running(&state, &framework, &id) {
                    return Ok(None);
                }
                // Ended; its framework may have finished and gone with it.
                Ok(Some(find_task(&state, &id).unwrap_or_else(|| {
                    serde_json::json!({
                        "id": id,
                        "state": "ended",
                        "message": "(its framework has finished since)",
                    })
                })))
            })
            .await??;
            if let Some(ended) = found {
                break ended;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "task {} did not end within {} s",
                    args.task_id,
                    timeout.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        node.close(Duration::from_secs(1)).await;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{} {} {}",
            text(&ended["id"]),
            text(&ended["state"]),
            text(&ended["message"])
        );
        Ok(())
    })
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let (state, task) = task_in_state(args.master, &args.task_id)?;
    let (agent, sandbox) = locate(&state, &task)?;
    let file = format!(
        "{sandbox}/{}",
        if args.stderr { "stderr" } else { "stdout" }
    );
    let mut offset: u64 = 0;
    let mut out = std::io::stdout().lock();
    let mut ended = false;
    loop {
        let path = format!("/files/read?path={}&offset={offset}", encode(&file));
        let chunk: Value = serde_json::from_slice(&get(agent, &path)?)?;
        let length = chunk["length"].as_u64().unwrap_or(0);
        out.write_all(chunk["data"].as_str().unwrap_or_default().as_bytes())?;
        offset += length;
        if length > 0 {
            continue;
        }
        // All read that there is. Following, wait for more until the task
        // has ended and what it wrote last is read.
        if !args.follow || ended {
            return Ok(());
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(500));
        let state: Value = serde_json::from_slice(&get(args.master, "/state")?)?;
        ended = find_task(&state, &args.task_id).is_none_or(|task| {
            state["tasks"]
                .as_array()
                .is_none_or(|running| !running.iter().any(|t| t["id"] == task["id"]))
        });
    }
}
