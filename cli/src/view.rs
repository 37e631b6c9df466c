//! `strata agents | frameworks | tasks`: the cluster as aligned tables,
//! read from the master's `/state` (or as JSON with `--json`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use strata_api::views::{MasterState, Task};
use strata_protocol::{FrameworkId, Resources};

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
    /// The master's address, HOST:PORT (its HTTP API is on that port), or
    /// zk://HOST:PORT[,...]/PATH to ask whichever master leads.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: crate::leader::MasterAddress,
    /// Print the rows as JSON, as `/state` has them.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub https: crate::client::HttpsArgs,
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

/// A number as a person writes it: `2`, `0.5`, `1.25`.
fn number(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// The total of scalar `name` in `resources`.
fn amount(resources: &Resources, name: &str) -> String {
    number(resources.scalar_total(name).as_f64())
}

/// `used/total` of resource `name`.
fn share(used: &Resources, total: &Resources, name: &str) -> String {
    format!("{}/{}", amount(used, name), amount(total, name))
}

fn attributes(attributes: &strata_protocol::Attributes) -> String {
    if attributes.is_empty() {
        return "-".into();
    }
    attributes
        .iter()
        .map(|(name, value)| format!("{name}:{value}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The master's `/state`, read as the typed view it is written from.
fn master_state(master: SocketAddr) -> anyhow::Result<MasterState> {
    serde_json::from_slice(&get(master, "/state")?)
        .with_context(|| format!("the master at {master} answered /state with something else"))
}

fn print_json(rows: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = serde_json::to_string_pretty(rows)?;
    out.push('\n');
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

pub fn run(table: Table, args: ViewArgs) -> anyhow::Result<()> {
    crate::client::configure(&args.https)?;
    let state = master_state(crate::leader::http_address(&args.master)?)?;
    let header = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    let mut lines: Vec<Vec<String>> = Vec::new();
    match table {
        Table::Agents => {
            if args.json {
                return print_json(&state.agents);
            }
            lines.push(header(&[
                "ID",
                "HOSTNAME",
                "STATUS",
                "CPUS",
                "MEM",
                "TASKS",
                "ATTRIBUTES",
            ]));
            for agent in &state.agents {
                lines.push(vec![
                    agent.id.to_string(),
                    agent.hostname.to_string(),
                    agent.status.name().to_owned(),
                    share(&agent.used, &agent.total, "cpus"),
                    share(&agent.used, &agent.total, "mem"),
                    agent.tasks.to_string(),
                    attributes(&agent.attributes),
                ]);
            }
        }
        Table::Frameworks => {
            if args.json {
                return print_json(&state.frameworks);
            }
            lines.push(header(&[
                "ID", "NAME", "ROLE", "ACTIVE", "TASKS", "CPUS", "MEM",
            ]));
            for framework in &state.frameworks {
                lines.push(vec![
                    framework.id.to_string(),
                    framework.name.clone(),
                    framework.role.clone(),
                    if framework.active { "yes" } else { "no" }.to_owned(),
                    framework.tasks.to_string(),
                    amount(&framework.used, "cpus"),
                    amount(&framework.used, "mem"),
                ]);
            }
        }
        Table::Tasks => {
            let tasks: Vec<&Task> = state.tasks.iter().chain(&state.completed_tasks).collect();
            if args.json {
                return print_json(&tasks);
            }
            lines.push(header(&[
                "ID",
                "NAME",
                "STATE",
                "FRAMEWORK",
                "AGENT",
                "CPUS",
                "MEM",
                "IMAGE",
            ]));
            for task in tasks {
                lines.push(vec![
                    task.id.to_string(),
                    task.name.clone(),
                    task.state.to_string(),
                    task.framework_id.to_string(),
                    task.agent_id.to_string(),
                    amount(&task.resources, "cpus"),
                    amount(&task.resources, "mem"),
                    task.image.clone().unwrap_or_else(|| "-".into()),
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
    /// The master's address, HOST:PORT, or zk://HOST:PORT[,...]/PATH.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: crate::leader::MasterAddress,
    #[command(flatten)]
    pub https: crate::client::HttpsArgs,
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

/// Where a task's sandbox is: its agent's HTTP address and the sandbox
/// relative to the agent's sandbox root.
fn locate(state: &MasterState, task: &Task) -> anyhow::Result<(SocketAddr, String)> {
    let agent = state
        .agent(&task.agent_id)
        .with_context(|| format!("the master no longer knows agent {}", task.agent_id))?;
    let pid: strata_runtime::Upid = agent
        .pid
        .parse()
        .context("the master gave a malformed agent address")?;
    let sandbox = task.sandbox.clone().with_context(|| {
        format!(
            "task {} has no sandbox (it never ran, or ran in a custom executor)",
            task.id
        )
    })?;
    Ok((pid.addr(), sandbox))
}

/// The master's state and the task in it. `/state` holds everything the
/// master did before it was asked, so a task whose update a client saw
/// is there.
fn task_in_state(master: SocketAddr, task_id: &str) -> anyhow::Result<(MasterState, Task)> {
    let state = master_state(master)?;
    match state.task(task_id) {
        Some(task) => {
            let task = task.clone();
            Ok((state, task))
        }
        None => bail!("the master at {master} knows no task {task_id}"),
    }
}

/// Whether `task_id` (of `framework_id`) is among the running tasks.
fn running(state: &MasterState, framework_id: &FrameworkId, task_id: &str) -> bool {
    state
        .tasks
        .iter()
        .any(|task| task.id.as_str() == task_id && task.framework_id == *framework_id)
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The task's id.
    pub task_id: String,
    /// The task's framework, when tasks of several frameworks have this id.
    #[arg(long)]
    pub framework: Option<String>,
    /// The master's address, HOST:PORT, or zk://HOST:PORT[,...]/PATH.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: crate::leader::MasterAddress,
    /// Seconds to wait for the task to end.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub https: crate::client::HttpsArgs,
}

/// Asks the master to kill a task and waits until it has ended; prints its
/// final state.
pub fn kill(args: KillArgs) -> anyhow::Result<()> {
    crate::client::configure(&args.https)?;
    let timeout = Duration::try_from_secs_f64(args.timeout).map_err(|_| {
        anyhow::anyhow!(
            "--timeout must be a number of seconds, not {}",
            args.timeout
        )
    })?;
    let master_http = crate::leader::http_address(&args.master)?;
    let (state, _) = task_in_state(master_http, &args.task_id)?;
    let candidates: Vec<&Task> = state
        .tasks
        .iter()
        .filter(|task| task.id.as_str() == args.task_id)
        .filter(|task| {
            args.framework
                .as_ref()
                .is_none_or(|framework| task.framework_id.as_str() == framework)
        })
        .collect();
    let task = match candidates.as_slice() {
        [] => bail!("task {} is not running (see `strata tasks`)", args.task_id),
        [task] => (*task).clone(),
        several => bail!(
            "tasks of several frameworks are called {}: {}; name one with --framework",
            args.task_id,
            several
                .iter()
                .map(|task| task.framework_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let framework_id = task.framework_id.clone();
    let task_id = task.id.clone();
    let master: strata_runtime::Upid = state
        .pid
        .parse()
        .context("the master gave a malformed address")?;
    let material = args
        .https
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
            let address = master_http;
            let id = args.task_id.clone();
            let framework = task.framework_id.clone();
            let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
                let state = master_state(address)?;
                if running(&state, &framework, &id) {
                    return Ok(None);
                }
                // Ended; its framework may have finished and gone with it.
                Ok(Some(match state.task(&id) {
                    Some(task) => format!("{} {} {}", task.id, task.state, task.message),
                    None => format!("{id} ended (its framework has finished since)"),
                }))
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
        let _ = writeln!(out, "{ended}");
        Ok(())
    })
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    crate::client::configure(&args.https)?;
    let master_http = crate::leader::http_address(&args.master)?;
    let (state, task) = task_in_state(master_http, &args.task_id)?;
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
        let state = master_state(master_http)?;
        ended = !running(&state, &task.framework_id, &args.task_id);
    }
}
