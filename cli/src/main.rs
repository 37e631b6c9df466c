//! `strata`: the one binary that runs and operates a Strata cluster.
//!
//! Every flag can also be set as a `STRATA_<FLAG>` environment variable;
//! `RUST_LOG` filters logs, which go to stderr. Exit codes: 0 success,
//! 1 failure, 2 usage error.

/// Prints a status line on stdout. Daemons print where they listen for
/// whoever started them; a reader that went away (a closed pipe) is no
/// reason to stop, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod agent;
mod client;
mod execute;
mod leader;
mod local;
mod master;
mod ping;
mod tls;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a cluster resource manager. Masters offer agents' resources to frameworks, which run tasks on them.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs are written to stderr: `text` for people, `json` (one
    /// object per line) for log collectors. `RUST_LOG` filters them.
    #[arg(long, global = true, env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a master and agents in this process, on loopback: the
    /// embedded cluster, with zero configuration.
    Local(local::LocalArgs),
    /// Run a master: it admits agents and offers their resources to
    /// frameworks.
    Master(master::MasterArgs),
    /// Run an agent: it offers this machine's resources through the
    /// master and runs tasks.
    Agent(agent::AgentArgs),
    /// Run a command on the cluster and follow it to the end (exit 0 if
    /// every instance finished, 1 if any failed, 2 if it could not be
    /// placed).
    Execute(execute::ExecuteArgs),
    /// Make the certificates a production cluster uses for mutual TLS.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Connect to a node as a peer would: checks reachability, mutual TLS and the protocol version.
    Ping(ping::PingArgs),
    /// List the cluster's agents (an aligned table; --json for scripts).
    Agents(view::ViewArgs),
    /// List the frameworks.
    Frameworks(view::ViewArgs),
    /// List the tasks, running ones first, then recently ended ones.
    Tasks(view::ViewArgs),
    /// Print a task's stdout (or stderr), read from its agent's sandbox;
    /// --follow keeps printing until the task ends.
    Logs(view::LogsArgs),
    /// Kill a running task (SIGTERM, then SIGKILL after the agent's grace
    /// period) and wait until it has ended.
    Kill(view::KillArgs),
}

/// Where a command finds TLS material: a production directory, or the
/// development CA in the work directory (created if absent).
#[derive(Debug, clap::Args)]
pub struct TlsSource {
    /// Directory with ca.pem, node.pem and node-key.pem (production).
    #[arg(long, env = "STRATA_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Work directory; without --tls-dir, its tls/ folder holds the
    /// development CA that `strata local` also uses.
    #[arg(long, env = "STRATA_WORK_DIR", default_value = "./.strata")]
    pub work_dir: PathBuf,
}

impl TlsSource {
    /// The material for a node in `role`: the production directory's
    /// (which must hold a certificate for that role), or one the
    /// development CA issues for `name`.
    pub fn material(
        &self,
        role: strata_runtime::Role,
        name: &str,
    ) -> anyhow::Result<strata_runtime::TlsMaterial> {
        self.serving_material(role, name, &[])
    }

    /// As [`TlsSource::material`], for a node serving HTTPS at `hosts`: a
    /// development certificate names them.
    pub fn serving_material(
        &self,
        role: strata_runtime::Role,
        name: &str,
        hosts: &[String],
    ) -> anyhow::Result<strata_runtime::TlsMaterial> {
        match &self.tls_dir {
            Some(dir) => {
                let material = strata_runtime::TlsMaterial::load(dir)?;
                let identity = material.identity();
                if identity.role != Some(role) {
                    anyhow::bail!(
                        "the certificate in {} is for {identity}, but this command needs a {role} certificate; issue one with `strata tls cert --role {role}`",
                        dir.display()
                    );
                }
                Ok(material)
            }
            None => Ok(strata_runtime::TlsMaterial::development_serving(
                &self.work_dir.join("tls"),
                role,
                name,
                hosts,
            )?),
        }
    }
}

/// Serves HTTP `routes` on `listener` (the TCP port of the node's QUIC
/// address), and HTTPS with `https`; returns where.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    cors: strata_runtime::http::Cors,
    https: Option<strata_runtime::http::Https>,
    routes: impl Fn(&strata_runtime::http::Request) -> strata_runtime::http::Response
    + Send
    + Sync
    + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    let bound = listener.local_addr()?;
    tokio::spawn(strata_runtime::http::serve_with(
        listener,
        cors,
        strata_runtime::http::Limits::default(),
        https,
        routes,
    ));
    Ok(bound)
}

/// The names a node's development certificate gives for HTTPS clients to
/// verify: the address it serves on, and `localhost` on loopback.
/// A duration written with its unit (`10s`, `500ms`, `1.5s`, `2m`), or a
/// plain number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|value| std::time::Duration::try_from_secs_f64(value * scale).ok())
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration (10s, 500ms, 2m)"))
}

/// A ZooKeeper session timeout: a duration (see [`parse_duration`])
/// from 1 s to 10 min (ZooKeeper grants between 2 and 20 of its ticks).
pub fn parse_session_timeout(text: &str) -> Result<std::time::Duration, String> {
    let timeout = parse_duration(text)?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600)).contains(&timeout)
    {
        return Err(format!("{text:?} is not a session timeout from 1s to 10m"));
    }
    Ok(timeout)
}

pub fn served_names(ip: std::net::IpAddr) -> Vec<String> {
    let mut names = Vec::new();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    if ip.is_loopback() {
        names.push("localhost".to_owned());
    }
    names
}

/// Binds a daemon's node, which serves HTTP too: QUIC on UDP (on a
/// thread of its own) and HTTP on TCP, at the same port number. Port 0
/// picks a number free for both: a free TCP port first, then its UDP
/// twin, again with another when that one is taken.
pub async fn bind_serving_node(
    mut config: strata_runtime::NodeConfig,
) -> anyhow::Result<(strata_runtime::Node, tokio::net::TcpListener)> {
    // A daemon's QUIC runs beside its processes, not between their
    // messages.
    config.quic.own_thread = true;
    let http_error = |addr: std::net::SocketAddr, error: std::io::Error| {
        anyhow::anyhow!("cannot serve HTTP on TCP {addr} (the node's port): {error}")
    };
    if config.listen.port() != 0 {
        let node = strata_runtime::Node::bind(config).await?;
        let listener = strata_runtime::http::bind(node.addr())
            .await
            .map_err(|error| http_error(node.addr(), error))?;
        return Ok((node, listener));
    }
    let mut taken = None;
    for _ in 0..32 {
        let listener = strata_runtime::http::bind(config.listen)
            .await
            .map_err(|error| http_error(config.listen, error))?;
        let mut attempt = config.clone();
        attempt.listen.set_port(listener.local_addr()?.port());
        match strata_runtime::Node::bind(attempt).await {
            Ok(node) => return Ok((node, listener)),
            Err(error) => taken = Some(error),
        }
    }
    match taken {
        Some(error) => Err(anyhow::anyhow!(
            "no port on {} was free for both QUIC (UDP) and HTTP (TCP): {error}",
            config.listen.ip()
        )),
        None => anyhow::bail!("no port was free for both QUIC (UDP) and HTTP (TCP)"),
    }
}

/// Whether HTTP endpoints that reveal task data need credentials
/// (`strata master` and `strata agent`).
#[derive(Debug, clap::Args)]
pub struct HttpAuthArgs {
    /// Serve /state, sandbox files and usage only to principals that
    /// authenticate: with a framework's or an operator's certificate over
    /// HTTPS, or with HTTP Basic or a bearer token (the secret) from
    /// --http-credentials; /health and /metrics stay open.
    #[arg(long, env = "STRATA_AUTHENTICATE_HTTP_READONLY")]
    pub authenticate_http_readonly: bool,
    /// Principals and secrets in Apache Mesos's credentials JSON:
    /// {"credentials": [{"principal": "ops", "secret": "..."}]}.
    #[arg(long, env = "STRATA_HTTP_CREDENTIALS")]
    pub http_credentials: Option<std::path::PathBuf>,
    /// Refuse plain HTTP: clients must speak HTTPS to the node's port,
    /// verifying its certificate with the cluster's CA (and may present
    /// a framework's or an operator's certificate instead of
    /// credentials). Without it, the port serves both.
    #[arg(long, env = "STRATA_HTTPS_ONLY")]
    pub https_only: bool,
}

impl HttpAuthArgs {
    /// The credentials file read, if one is named.
    pub fn credentials_file(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<strata_runtime::http_auth::HttpCredentials>>> {
        self.http_credentials
            .as_ref()
            .map(|path| {
                Ok(std::sync::Arc::new(
                    strata_runtime::http_auth::HttpCredentials::load(path)?,
                ))
            })
            .transpose()
    }

    /// The credentials to check, when authentication is asked for.
    pub fn credentials(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<strata_runtime::http_auth::HttpCredentials>>> {
        if !self.authenticate_http_readonly {
            return Ok(None);
        }
        // Without a credentials file, only clients with a framework's or
        // an operator's certificate authenticate.
        Ok(Some(self.credentials_file()?.unwrap_or_default()))
    }

    /// HTTPS on the node's port with `material`'s certificate.
    pub fn https(
        &self,
        material: &strata_runtime::TlsMaterial,
    ) -> anyhow::Result<strata_runtime::http::Https> {
        Ok(strata_runtime::http::Https {
            config: strata_runtime::tls::https_server_config(material)?,
            only: self.https_only,
        })
    }
}

/// Who may read an agent's HTTP answers from a page of another origin:
/// the web UI of its master at `master` (its HTTP and HTTPS share the
/// port).
pub fn agent_cors(master: std::net::SocketAddr) -> strata_runtime::http::Cors {
    let mut hosts = vec![master.to_string()];
    if master.ip().is_loopback() {
        hosts.push(format!("localhost:{}", master.port()));
    }
    let origins = hosts
        .iter()
        .flat_map(|host| [format!("http://{host}"), format!("https://{host}")])
        .collect();
    strata_runtime::http::Cors::Origins(origins)
}

/// Waits for Ctrl-C or SIGTERM, or for one of `processes` on `node` to
/// stop: a daemon whose master or agent gave up must not go on serving
/// without it, so that is an error naming why.
pub async fn serve_until_shutdown(
    node: &strata_runtime::Node,
    processes: &[strata_runtime::Upid],
) -> anyhow::Result<()> {
    let mut watcher = node.inbox::<u64>("daemon-watch", 1)?;
    for pid in processes {
        watcher.link(pid);
    }
    let gone = async {
        loop {
            match watcher.recv().await {
                Some(strata_runtime::Received::Exited(pid)) => return Some(pid),
                Some(strata_runtime::Received::Message(..)) => {}
                None => return None,
            }
        }
    };
    tokio::select! {
        _ = wait_for_shutdown() => Ok(()),
        Some(pid) = gone => {
            let why = node
                .failures()
                .into_iter()
                .find(|(failed, _)| failed.id() == pid.id())
                .map(|(_, failure)| failure.to_string())
                .unwrap_or_else(|| "it stopped (see the log above)".to_owned());
            anyhow::bail!("{} gave up: {why}", pid.id())
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// The `strata` binary's allocator (every subcommand): mimalloc, not
/// glibc's. At 50,000 agents a fifth of the master's thread was in
/// glibc's slow path (`_int_malloc`, in a profile of its steady load):
/// the master allocates and frees small blocks (ids, views, messages) at
/// tens of thousands a second. In runs of the scale suite at 50,000
/// agents mimalloc made about 1.5 to 2 times the tasks a second, with
/// about as much memory an agent as glibc once it does not ask for
/// transparent huge pages (`no_thp`; asking took the figure from about
/// 3,100 to 4,300 bytes; a host whose kernel gives them to every process
/// still does). It gives freed memory back to the system by itself, which
/// glibc needed a fixed threshold for; the daemons have a thread of their
/// own do it, so the master's thread does not
/// ([`strata_runtime::memory`]).
#[global_allocator]
static ALLOCATOR: strata_runtime::memory::Allocator = strata_runtime::memory::Allocator;

fn main() -> ExitCode {
    // The task launcher is started by agents, not people: it reads only
    // its own arguments.
    let mut arguments = std::env::args_os().skip(1);
    if arguments
        .next()
        .is_some_and(|first| first == strata_agent::launcher::SUBCOMMAND)
    {
        return match strata_agent::launcher::parse_arguments(arguments) {
            Ok(work_dir) => {
                ExitCode::from(strata_agent::launcher::run(&work_dir).clamp(0, 255) as u8)
            }
            Err(error) => {
                eprintln!("strata {}: {error}", strata_agent::launcher::SUBCOMMAND);
                ExitCode::from(2)
            }
        };
    }
    // So is the container init, which runs first in a container with
    // namespaces.
    let mut arguments = std::env::args_os().skip(1);
    if arguments
        .next()
        .is_some_and(|first| first == strata_agent::init::SUBCOMMAND)
    {
        return match strata_agent::init::parse_arguments(arguments) {
            Ok(task) => ExitCode::from(strata_agent::init::run(task).clamp(0, 255) as u8),
            Err(error) => {
                eprintln!("strata {}: {error}", strata_agent::init::SUBCOMMAND);
                ExitCode::from(2)
            }
        };
    }
    let cli = Cli::parse();
    // Daemons log what they do; one-shot commands report failures as their
    // error message and log only errors unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Master(_) | Command::Agent(_) => "info",
        Command::Local(_) => "warn",
        _ => "error",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if matches!(
        cli.command,
        Command::Local(_) | Command::Master(_) | Command::Agent(_)
    ) && let Err(error) = strata_runtime::memory::give_back_freed_memory()
    {
        // Memory is still given back, by whichever thread frees some.
        tracing::warn!(%error, "no thread of its own gives freed memory back");
    }
    let result = match cli.command {
        Command::Execute(args) => match execute::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(error) => Err(error),
        },
        Command::Local(args) => local::run(args),
        Command::Master(args) => master::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Tls(command) => tls::run(command),
        Command::Ping(args) => ping::run(args),
        Command::Agents(args) => view::run(view::Table::Agents, args),
        Command::Frameworks(args) => view::run(view::Table::Frameworks, args),
        Command::Tasks(args) => view::run(view::Table::Tasks, args),
        Command::Logs(args) => view::logs(args),
        Command::Kill(args) => view::kill(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_parse_with_their_units_and_session_timeouts_are_bounded() {
        assert_eq!(super::parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            super::parse_duration("1.5"),
            Ok(Duration::from_millis(1500))
        );
        for bad in ["", "0s", "-1s", "ten", "1e400s", "s"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
        assert!(super::parse_session_timeout("4s").is_ok());
        assert!(super::parse_session_timeout("100ms").is_err());
        assert!(super::parse_session_timeout("1e9s").is_err());
    }
}
