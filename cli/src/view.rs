//! `strata agents | frameworks | tasks`: the cluster as aligned tables,
//! read from the master's `/state` (or as JSON with `--json`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

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

/// `GET path` on the master; the body of a 200 answer.
pub fn get(master: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let unreachable = || {
        format!(
            "cannot reach the master's HTTP API at {master} (is it running? --master or STRATA_MASTER names it)"
        )
    };
    let mut stream =
        TcpStream::connect_timeout(&master, Duration::from_secs(5)).with_context(unreachable)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {master}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .with_context(unreachable)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).with_context(unreachable)?;
    let split = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("the master's answer is not HTTP")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer[split + 4..].to_vec();
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|error| error["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        bail!("the master answered {path} with {status}: {reason}");
    }
    Ok(body)
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

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    // `/state` is a snapshot a moment old: a task launched just now may
    // take a tick to appear, so look again for a little while.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (state, task) = loop {
        let state: Value = serde_json::from_slice(&get(args.master, "/state")?)?;
        if let Some(task) = find_task(&state, &args.task_id) {
            break (state, task);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "the master at {} knows no task {}",
                args.master,
                args.task_id
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
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
