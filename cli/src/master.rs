//! `strata master`: run a master.
//!
//! Binds the master's node on `--ip`:`--port` (QUIC), spawns the master
//! process and runs until Ctrl-C or SIGTERM. Agents and schedulers reach it
//! at `master@IP:PORT`. Its registry lives in the work directory: started
//! again there, it recovers its agents and frameworks under a new epoch.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use strata_master::allocator::Policy;
use strata_master::{Config, MASTER_ID, Master};
use strata_runtime::{Node, NodeConfig, SpawnOptions};
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Address to listen on; agents and schedulers reach the master here.
    #[arg(long, env = "STRATA_IP", default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "STRATA_PORT", default_value_t = 5050)]
    pub port: u16,
    /// Allocation policy: drf (weighted dominant resource fairness) or
    /// priority (strict priority by role weight).
    #[arg(long, env = "STRATA_ALLOCATION_POLICY", default_value = "drf", value_parser = parse_policy)]
    pub allocation_policy: Policy,
    /// Seconds between allocation rounds (offers are also made on events).
    #[arg(long, env = "STRATA_ALLOCATION_INTERVAL", default_value_t = 1.0)]
    pub allocation_interval: f64,
    /// Rescind offers unused for this many seconds (never when absent).
    #[arg(long, env = "STRATA_OFFER_TIMEOUT")]
    pub offer_timeout: Option<f64>,
    /// Seconds an agent has to answer each ping.
    #[arg(long, env = "STRATA_AGENT_PING_TIMEOUT", default_value_t = 15.0)]
    pub agent_ping_timeout: f64,
    /// Unanswered pings in a row before an agent is unreachable.
    #[arg(long, env = "STRATA_MAX_AGENT_PING_TIMEOUTS", default_value_t = 5)]
    pub max_agent_ping_timeouts: u32,
    /// Seconds a restarted master waits for its agents to re-register
    /// before taking the missing ones as unreachable.
    #[arg(long, env = "STRATA_AGENT_REREGISTER_TIMEOUT", default_value_t = 600.0)]
    pub agent_reregister_timeout: f64,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    text.parse()
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!("--{flag} must be a positive number of seconds, not {value}")
        })
}

pub fn run(args: MasterArgs) -> anyhow::Result<()> {
    let config = Config {
        allocation_interval: seconds("allocation-interval", args.allocation_interval)?,
        offer_timeout: args
            .offer_timeout
            .map(|value| seconds("offer-timeout", value))
            .transpose()?,
        agent_ping_timeout: seconds("agent-ping-timeout", args.agent_ping_timeout)?,
        max_missed_pongs: args.max_agent_ping_timeouts.max(1),
        policy: args.allocation_policy,
        agent_reregister_timeout: seconds(
            "agent-reregister-timeout",
            args.agent_reregister_timeout,
        )?,
        ..Config::default()
    };
    let work_dir = args.tls.work_dir.clone();
    let registry = strata_master::registry::path(&work_dir);
    let lock = registry.with_file_name("lock");
    let _lock = strata_runtime::durable::lock_exclusive(&lock)
        .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", lock.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "another master uses the work directory {}; give each master its own --work-dir",
                work_dir.display()
            )
        })?;
    // Checked before starting, so a damaged registry is this command's
    // error.
    let recovered = strata_master::registry::load(&registry)?;
    let material = args.tls.material(strata_runtime::Role::Master, "master")?;
    let publisher_and_routes = strata_master::state::channel();
    actix_rt::System::new().block_on(async move {
        let node = Node::bind(NodeConfig::new(
            SocketAddr::new(args.ip, args.port),
            material,
        ))
        .await?;
        let http = crate::serve_http(
            node.addr(),
            strata_runtime::http::Cors::SameOrigin,
            strata_master::state::routes(publisher_and_routes.1.clone()),
        )
        .await?;
        let prefix = format!("{:08x}", node.incarnation().0 as u32);
        let publisher = publisher_and_routes.0.clone();
        let pid = node.spawn(
            MASTER_ID,
            move || {
                Master::durable(config.clone(), &prefix, &work_dir).publishing(publisher.clone())
            },
            SpawnOptions::default(),
        )?;
        say!(
            "master listening at {pid} (allocation policy {})",
            args.allocation_policy
        );
        say!("HTTP API at http://{http}/ (state, metrics)");
        if let Some(registry) = recovered {
            say!(
                "recovering the registry of epoch {}: {} agents, {} frameworks",
                registry.epoch,
                registry.agents.len(),
                registry.frameworks.len()
            );
        }
        let served = crate::serve_until_shutdown(&node, std::slice::from_ref(&pid)).await;
        info!("shutting down");
        node.close(Duration::from_secs(2)).await;
        served
    })
}
