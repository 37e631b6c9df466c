//! `strata local`: a master and agents in one process, on loopback.
//!
//! The embedded cluster for trying Strata and developing frameworks: zero
//! configuration (a development CA is created in the work directory), the
//! machine's detected resources shared between the agents, tasks run as
//! real processes in sandboxes under the work directory. Runs until
//! Ctrl-C or SIGTERM, then kills its tasks and exits 0.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strata_agent::detection::HostResources;
use strata_agent::process::DEFAULT_KILL_GRACE;
use strata_agent::{Agent, AgentConfig, Runner};
use strata_master::Config;
use strata_master::allocator::Policy;
use strata_master::process::LeaderView;
use strata_protocol::{Attributes, Ranges, Resource, Resources, UNRESERVED, Value};
use strata_runtime::{NodeConfig, Role, SpawnOptions, TlsMaterial};

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// How many masters to run: 1, or an odd number (3, 5) electing a
    /// leader in ZooKeeper, which this command starts from the installed
    /// package unless --zk names one.
    #[arg(long, env = "STRATA_MASTERS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=7))]
    pub masters: u64,
    /// The ZooKeeper the masters contend in (zk://HOST:PORT[,...]/PATH),
    /// with --masters above 1.
    #[arg(long, env = "STRATA_ZK")]
    pub zk: Option<strata_zk::ZkUrl>,
    /// The ZooKeeper session timeout (10s, 500ms).
    #[arg(long, env = "STRATA_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = crate::parse_session_timeout)]
    pub zk_session_timeout: Duration,
    /// How many agents to run.
    #[arg(long, env = "STRATA_AGENTS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub agents: u64,
    /// Resources of each agent, in Mesos syntax; resources not named are
    /// this machine's, shared equally between the agents.
    #[arg(long, env = "STRATA_RESOURCES", default_value = "", value_parser = parse_resources)]
    pub resources: Resources,
    /// Attributes of every agent: `rack:r1;zone:a`.
    #[arg(long, env = "STRATA_ATTRIBUTES", default_value = "", value_parser = parse_attributes)]
    pub attributes: Attributes,
    /// The master's port (0 picks a free one and prints it).
    #[arg(long, env = "STRATA_PORT", default_value_t = 5050)]
    pub port: u16,
    /// Allocation policy: drf or priority.
    #[arg(long, env = "STRATA_ALLOCATION_POLICY", default_value = "drf", value_parser = parse_policy)]
    pub allocation_policy: Policy,
    /// Where sandboxes and the development CA live.
    #[arg(long, env = "STRATA_WORK_DIR", default_value = "./.strata")]
    pub work_dir: PathBuf,
    #[command(flatten)]
    pub authorization: crate::master::AuthorizationArgs,
    /// The agents' isolation, as `strata agent` takes it.
    #[command(flatten)]
    pub isolation: crate::agent::IsolationArgs,
}

fn parse_resources(text: &str) -> Result<Resources, String> {
    text.parse()
        .map_err(|e: strata_protocol::ResourcesError| e.to_string())
}

fn parse_attributes(text: &str) -> Result<Attributes, String> {
    text.parse()
        .map_err(|e: strata_protocol::attributes::AttributesError| e.to_string())
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    text.parse()
}

/// Agent `index` of `count`'s share of the machine and of the task ports.
fn share(detected: HostResources, count: u64, index: u64, overrides: &Resources) -> Resources {
    let part = HostResources {
        cpus_millis: detected.cpus_millis / count,
        mem_mib: detected.mem_mib / count,
        disk_mib: detected.disk_mib / count,
    };
    let mut total = strata_agent::resources::total(part, overrides);
    let named_ports = overrides.iter().any(|resource| resource.name == "ports");
    if !named_ports {
        let (first, last) = strata_agent::resources::DEFAULT_PORTS;
        let width = (last - first + 1) / count;
        let begin = first + index * width;
        let ports = Resource {
            name: "ports".into(),
            role: UNRESERVED.into(),
            value: Value::Ranges(Ranges::interval(begin, begin + width - 1)),
        };
        let mut without_ports = Resources::new();
        for resource in total.iter().filter(|resource| resource.name != "ports") {
            // Resources already in a valid bag re-enter one without error.
            let _ = without_ports.try_add_one(resource);
        }
        let _ = without_ports.try_add_one(ports);
        total = without_ports;
    }
    total
}

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    // Checked before anything is created, so a bad file changes nothing.
    let authorizer = args.authorization.authorizer()?;
    let authorization = args.authorization.describe(&authorizer);
    std::fs::create_dir_all(&args.work_dir).with_context(|| {
        format!(
            "cannot create the work directory {}",
            args.work_dir.display()
        )
    })?;
    let work_dir = args.work_dir.canonicalize()?;
    let tls_dir = work_dir.join("tls");
    let task_launcher = std::env::current_exe().ok();
    let highly_available = args.masters > 1 || args.zk.is_some();
    let master_work_dirs: Vec<PathBuf> = (0..args.masters)
        .map(|index| match index {
            0 => work_dir.join("master"),
            _ => work_dir.join(format!("master-{}", index + 1)),
        })
        .collect();
    // One cluster per work directory: its masters' and agents' locks, as
    // `strata master` and `strata agent` take them, held until it stops.
    let mut locks = Vec::new();
    for master_work_dir in &master_work_dirs {
        let master_lock = strata_master::registry::path(master_work_dir).with_file_name("lock");
        locks.push(
            strata_runtime::durable::lock_exclusive(&master_lock)
                .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", master_lock.display()))?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "another strata local or master uses the work directory {}; give each its own --work-dir",
                        work_dir.display()
                    )
                })?,
        );
    }
    for index in 0..args.agents {
        let agent_work_dir = work_dir.join(format!("agent-{}", index + 1));
        let lock = strata_agent::recovery::lock_work_dir(&agent_work_dir)?;
        locks.push(lock.into_file());
    }
    let detected = strata_agent::detection::detect(&work_dir)?;
    let config = Config {
        policy: args.allocation_policy,
        authorizer,
        ..Config::default()
    };
    let flags: Vec<(String, String)> = [
        ("cluster", "local".to_owned()),
        ("port", args.port.to_string()),
        ("work_dir", work_dir.display().to_string()),
        ("agents", args.agents.to_string()),
        ("masters", args.masters.to_string()),
        ("allocation_policy", args.allocation_policy.to_string()),
        (
            "acls",
            args.authorization
                .acls
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    // Several masters elect a leader in ZooKeeper: the one given, or a
    // server of the installed package run in the work directory.
    let (_zookeeper, zk) = match (&args.zk, highly_available) {
        (Some(url), _) => (None, Some(url.clone())),
        (None, true) => {
            let dir = work_dir.join("zookeeper");
            let ensemble = strata_zk::server::LocalEnsemble::start(&dir, 1).with_context(|| {
                "--masters above 1 needs ZooKeeper: install it, or give one with --zk".to_owned()
            })?;
            let url: strata_zk::ZkUrl = ensemble.url("/strata").parse()?;
            (Some(ensemble), Some(url))
        }
        (None, false) => (None, None),
    };
    let flags = std::sync::Arc::new(flags);
    actix_rt::System::new().block_on(async move {
        let loopback: std::net::IpAddr = Ipv4Addr::LOCALHOST.into();
        say!("Strata local cluster, work directory {}", work_dir.display());
        if let Some(url) = &zk {
            let started = if _zookeeper.is_some() {
                "started here from the installed package, its data in the work directory"
            } else {
                "given with --zk"
            };
            say!("  ZooKeeper {url}  ({started})");
        }
        let mut nodes = Vec::new();
        let mut masters = Vec::new();
        for (index, master_work_dir) in master_work_dirs.into_iter().enumerate() {
            let port = match (index, args.port) {
                (0, port) | (_, port @ 0) => port,
                (index, port) => port.saturating_add(2 * index as u16),
            };
            let ha = zk.as_ref().map(|url| (url.clone(), args.zk_session_timeout));
            let (node, pid, http) = start_master(
                &tls_dir,
                SocketAddr::new(loopback, port),
                master_work_dir,
                config.clone(),
                flags.clone(),
                ha,
            )
            .await?;
            say!("  master   {pid}  (allocation policy {})", args.allocation_policy);
            say!("  HTTP API http://{http}/  (state, metrics)");
            nodes.push(node);
            masters.push(pid);
        }
        say!("  authorization: {authorization}");
        let (master, leader) = match &zk {
            Some(url) => {
                let address = crate::leader::MasterAddress::Zk(url.clone());
                crate::leader::find(&address, Some(Duration::from_secs(60))).await?
            }
            None => (masters[0].clone(), None),
        };
        if zk.is_some() {
            say!("  leading  {master}");
        }
        for index in 0..args.agents {
            let name = format!("agent-{}", index + 1);
            let mut tls = TlsMaterial::development_serving(
                &tls_dir,
                Role::Agent,
                &name,
                &crate::served_names(loopback),
            )?;
            let agent_work_dir = work_dir.join(&name);
            let credentials = strata_agent::ExecutorCredentials::kept_in(&agent_work_dir, &tls)?;
            credentials.trusted_by(&mut tls);
            let https = strata_runtime::http::Https {
                config: strata_runtime::tls::https_server_config(&tls)?,
                only: false,
            };
            let (node, listener) =
                crate::bind_serving_node(NodeConfig::new(SocketAddr::new(loopback, 0), tls)).await?;
            let resources = share(detected, args.agents, index, &args.resources);
            let agent = AgentConfig {
                master: master.clone(),
                hostname: name.clone(),
                resources: resources.clone(),
                attributes: args.attributes.clone(),
                seed: node.incarnation().0,
                runner: Runner::Processes {
                    // Each agent keeps its own checkpoints.
                    isolation: args.isolation.choose(
                        &agent_work_dir,
                        task_launcher.clone(),
                        index == 0,
                    )?,
                    work_dir: agent_work_dir,
                    kill_grace: DEFAULT_KILL_GRACE,
                    images: Some(args.isolation.images()?),
                },
                status_update_retry: strata_agent::status_updates::FIRST_RETRY,
                usage_interval: std::time::Duration::from_secs(1),
                master_silence_check: strata_agent::MASTER_SILENCE_CHECK,
                executor_credentials: Some(credentials),
                executor_registration_timeout: std::time::Duration::from_secs(60),
                task_launcher: task_launcher.clone(),
                switch_user: true,
                kill_tasks_on_stop: true,
                    disk: Default::default(),
                leader: leader.clone(),
            };
            let (publisher, snapshots) = strata_agent::http::channel();
            // Executors written with a Mesos library may use the v1
            // executor API without credentials, on loopback.
            let (executor_api, executor_calls) = strata_agent::executor_api::channel();
            crate::serve_http(
                listener,
                crate::agent_cors(master.addr()),
                Some(https),
                strata_agent::executor_api::routes(
                    executor_api,
                    strata_agent::executor_api::ExecutorAccess::Unauthenticated,
                    strata_agent::http::routes(snapshots),
                ),
            )
            .await?;
            let pid = node.spawn(
                "agent",
                move || {
                    Agent::new(agent.clone())
                        .publishing(publisher.clone())
                        .serving_executor_api(executor_calls.clone())
                },
                SpawnOptions::default(),
            )?;
            say!("  {name}  {pid}  {resources}");
            nodes.push(node);
        }
        let master_address = master.addr();
        let master_flag = match &zk {
            Some(url) => format!(" --master {url}"),
            None if master_address.port() == 5050 => String::new(),
            None => format!(" --master {master_address}"),
        };
        say!("Submit work: cargo run --release -- execute{master_flag} --name hello --command 'echo hello'");
        say!("Stop with Ctrl-C.");
        let served = crate::serve_until_shutdown(&nodes[0], &masters).await;
        say!("Stopping: killing tasks.");
        // Agents first, so their tasks are killed before the master goes.
        for node in nodes.iter().rev() {
            node.close(Duration::from_secs(1)).await;
        }
        served
    })
}

/// Starts a master of the local cluster on `address`: its node, its
/// address and its HTTP address. With `ha` (ZooKeeper and the session
/// timeout) it contends for leadership there.
async fn start_master(
    tls_dir: &std::path::Path,
    address: SocketAddr,
    work_dir: PathBuf,
    config: Config,
    flags: std::sync::Arc<Vec<(String, String)>>,
    ha: Option<(strata_zk::ZkUrl, Duration)>,
) -> anyhow::Result<(strata_runtime::Node, strata_runtime::Upid, SocketAddr)> {
    let tls = TlsMaterial::development_serving(
        tls_dir,
        Role::Master,
        "master",
        &crate::served_names(address.ip()),
    )?;
    let https = strata_runtime::http::Https {
        config: strata_runtime::tls::https_server_config(&tls)?,
        only: false,
    };
    let (node, listener) = crate::bind_serving_node(NodeConfig::new(address, tls)).await?;
    let publisher_and_routes = strata_master::state::channel();
    let (api, api_calls) = strata_master::api::channel();
    let (masters, masters_watch) = tokio::sync::watch::channel(Vec::new());
    let (view, view_watch) = tokio::sync::watch::channel(match ha {
        Some(_) => LeaderView::Unknown,
        None => LeaderView::Leading,
    });
    let http = crate::serve_http(
        listener,
        strata_runtime::http::Cors::SameOrigin,
        Some(https),
        // A development cluster on loopback: frameworks of the machine's
        // users may call without credentials, and so may operator calls
        // that change the cluster. Standbys redirect to the leader.
        strata_master::process::redirecting(
            view_watch,
            masters_watch,
            strata_master::api::routes(
                api.clone(),
                strata_master::api::FrameworkAccess::Unauthenticated,
                strata_master::operator::routes(
                    strata_master::operator::OperatorApi {
                        api,
                        snapshots: publisher_and_routes.1.clone(),
                        authorizer: config.authorizer.clone(),
                        flags,
                        writes: strata_master::operator::WriteAccess::Unauthenticated,
                    },
                    strata_master::state::routes(
                        publisher_and_routes.1.clone(),
                        config.authorizer.clone(),
                    ),
                ),
            ),
        ),
    )
    .await?;
    let ha = ha.map(|(url, timeout)| (url, timeout, view, masters));
    let pid = crate::master::spawn_master(
        &node,
        config,
        work_dir,
        ha,
        publisher_and_routes.0.clone(),
        api_calls,
    )?;
    Ok((node, pid, http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_share_the_machine_and_the_ports() {
        let detected = HostResources {
            cpus_millis: 2000,
            mem_mib: 4000,
            disk_mib: 10000,
        };
        let none = Resources::new();
        assert_eq!(
            share(detected, 2, 0, &none).to_string(),
            "cpus:1;disk:5000;mem:2000;ports:[31000-31499]"
        );
        assert_eq!(
            share(detected, 2, 1, &none).to_string(),
            "cpus:1;disk:5000;mem:2000;ports:[31500-31999]"
        );
        let given: Resources = "cpus:4;ports:[8000-8001]".parse().unwrap();
        assert_eq!(
            share(detected, 2, 1, &given).to_string(),
            "cpus:4;disk:5000;mem:2000;ports:[8000-8001]"
        );
    }
}
