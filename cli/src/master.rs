//! `strata master`: run a master.
//!
//! Binds the master's node on `--ip`:`--port` (QUIC), spawns the master
//! process and runs until Ctrl-C or SIGTERM. Agents and schedulers reach it
//! at `master@IP:PORT`. Its registry lives in the work directory: started
//! again there, it recovers its agents and frameworks under a new epoch.
//! `--acls` gives it Apache Mesos's ACLs, read and checked before it
//! starts, so a bad file is this command's error.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use strata_master::allocator::Policy;
use strata_master::authorization::{Acls, Authorizer, DefaultDecision};
use strata_master::{Config, MASTER_ID, Master};
use strata_runtime::{NodeConfig, SpawnOptions};
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
    /// Most frameworks one principal may have at once.
    #[arg(long, env = "STRATA_MAX_FRAMEWORKS_PER_PRINCIPAL", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_frameworks_per_principal: u64,
    /// Most tasks one framework may have that have not ended and been
    /// acknowledged; launches beyond are answered TASK_ERROR.
    #[arg(long, env = "STRATA_MAX_TASKS_PER_FRAMEWORK", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks_per_framework: u64,
    #[command(flatten)]
    pub authorization: AuthorizationArgs,
    #[command(flatten)]
    pub http_auth: crate::HttpAuthArgs,
    /// Take v1 scheduler API calls only from frameworks that authenticate
    /// (HTTP Basic, or a bearer token: the secret) with --http-credentials;
    /// a framework's principal is then the one it authenticated as, and
    /// the ACLs decide what it may do.
    #[arg(long, env = "STRATA_AUTHENTICATE_HTTP_FRAMEWORKS")]
    pub authenticate_http_frameworks: bool,
    /// Take v1 scheduler API calls from any client that reaches the port,
    /// under the principal its FrameworkInfo names (as Apache Mesos does
    /// by default). Without this or --authenticate-http-frameworks the
    /// API is off: anyone who may call it may run tasks.
    #[arg(
        long,
        env = "STRATA_ALLOW_UNAUTHENTICATED_HTTP_FRAMEWORKS",
        conflicts_with = "authenticate_http_frameworks"
    )]
    pub allow_unauthenticated_http_frameworks: bool,
    /// Contend for leadership with other masters in ZooKeeper
    /// (zk://HOST:PORT[,HOST:PORT...]/PATH) and keep the registry there;
    /// without it this master leads alone, its registry in --work-dir.
    #[arg(long, env = "STRATA_ZK")]
    pub zk: Option<strata_zk::ZkUrl>,
    /// The ZooKeeper session timeout (10s, 500ms): a leader unheard of for
    /// this long is replaced.
    #[arg(long, env = "STRATA_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = crate::parse_session_timeout)]
    pub zk_session_timeout: Duration,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

/// Who may do what, by Apache Mesos's ACLs (`strata master` and `strata
/// local`).
#[derive(Debug, clap::Args)]
pub struct AuthorizationArgs {
    /// ACLs in Apache Mesos's JSON: register_frameworks (principals,
    /// roles), run_tasks (principals, users), teardown_frameworks,
    /// view_frameworks, view_tasks, mark_agents_gone (principals,
    /// agents) and permissive.
    #[arg(long, env = "STRATA_ACLS")]
    pub acls: Option<PathBuf>,
    /// What decides a request no ACL applies to when the file has no
    /// "permissive" (and every request without --acls): default-allow or
    /// default-deny.
    #[arg(long, env = "STRATA_AUTHORIZATION", default_value = "default-allow", value_parser = parse_default)]
    pub authorization: DefaultDecision,
}

fn parse_default(text: &str) -> Result<DefaultDecision, String> {
    text.parse()
}

impl AuthorizationArgs {
    /// The authorizer the flags describe; an unreadable or invalid ACL
    /// file is an error naming the file and what is wrong with it.
    pub fn authorizer(&self) -> anyhow::Result<Authorizer> {
        let acls = match &self.acls {
            Some(path) => strata_master::authorization::load(path)?,
            None => Acls::default(),
        };
        Ok(Authorizer::new(acls, self.authorization))
    }

    /// One line on what `authorizer` does, for the start-up banner.
    pub fn describe(&self, authorizer: &Authorizer) -> String {
        let unmatched = if authorizer.permissive() {
            "allowed"
        } else {
            "denied"
        };
        let rules = authorizer.acls().len();
        let plural = if rules == 1 { "" } else { "s" };
        match &self.acls {
            Some(path) => format!(
                "{rules} ACL rule{plural} from {}; requests no rule applies to are {unmatched}",
                path.display()
            ),
            None => format!("no ACLs; every framework registration and task launch is {unmatched}"),
        }
    }
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

/// The master's flags by name (Apache Mesos's style, `snake_case`), for
/// `/master/flags` and GET_FLAGS.
fn flags(args: &MasterArgs) -> Vec<(String, String)> {
    let path = |path: &Option<PathBuf>| {
        path.as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    };
    [
        ("ip", args.ip.to_string()),
        ("port", args.port.to_string()),
        ("work_dir", args.tls.work_dir.display().to_string()),
        ("tls_dir", path(&args.tls.tls_dir)),
        ("allocation_policy", args.allocation_policy.to_string()),
        (
            "allocation_interval",
            format!("{}secs", args.allocation_interval),
        ),
        (
            "offer_timeout",
            args.offer_timeout
                .map(|secs| format!("{secs}secs"))
                .unwrap_or_default(),
        ),
        (
            "agent_ping_timeout",
            format!("{}secs", args.agent_ping_timeout),
        ),
        (
            "max_agent_ping_timeouts",
            args.max_agent_ping_timeouts.to_string(),
        ),
        (
            "agent_reregister_timeout",
            format!("{}secs", args.agent_reregister_timeout),
        ),
        (
            "max_frameworks_per_principal",
            args.max_frameworks_per_principal.to_string(),
        ),
        (
            "max_tasks_per_framework",
            args.max_tasks_per_framework.to_string(),
        ),
        (
            "zk",
            args.zk
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        (
            "zk_session_timeout",
            format!("{}secs", args.zk_session_timeout.as_secs_f64()),
        ),
        ("acls", path(&args.authorization.acls)),
        (
            "authorization",
            if args.authorization.authorization == DefaultDecision::Allow {
                "default-allow"
            } else {
                "default-deny"
            }
            .to_owned(),
        ),
        (
            "authenticate_http_readonly",
            args.http_auth.authenticate_http_readonly.to_string(),
        ),
        ("http_credentials", path(&args.http_auth.http_credentials)),
        ("https_only", args.http_auth.https_only.to_string()),
        (
            "authenticate_http_frameworks",
            args.authenticate_http_frameworks.to_string(),
        ),
        (
            "allow_unauthenticated_http_frameworks",
            args.allow_unauthenticated_http_frameworks.to_string(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// How a master contends in ZooKeeper: where, the session timeout, and
/// where it tells its HTTP port where it stands and who contends.
pub type Contending = (
    strata_zk::ZkUrl,
    Duration,
    tokio::sync::watch::Sender<strata_master::process::LeaderView>,
    tokio::sync::watch::Sender<Vec<strata_zk::MasterInfo>>,
);

/// Spawns the master process on `node`: leading alone with its registry
/// in `work_dir`, or with `ha` (ZooKeeper, the session timeout, where to
/// say where it stands) contending for leadership there.
pub fn spawn_master(
    node: &strata_runtime::Node,
    config: Config,
    work_dir: PathBuf,
    ha: Option<Contending>,
    publisher: strata_master::state::Publisher,
    api_calls: strata_master::api::ApiReceiver,
) -> anyhow::Result<strata_runtime::Upid> {
    let prefix = format!("{:08x}", node.incarnation().0 as u32);
    let hostname = node.pid(MASTER_ID)?.addr().ip().to_string();
    let options = match ha {
        Some(_) => SpawnOptions::default().restart(strata_master::process::restart_policy()),
        None => SpawnOptions::default(),
    };
    let ha = ha.map(
        |(url, timeout, view, masters)| strata_master::process::HaConfig {
            base: url.path().to_owned(),
            connect: strata_zk::election::connector(&url, timeout),
            hostname,
            view,
            masters,
            simulated: false,
        },
    );
    Ok(node.spawn(
        MASTER_ID,
        move || {
            match &ha {
                Some(ha) => Master::highly_available(config.clone(), &prefix, ha.clone()),
                None => Master::durable(config.clone(), &prefix, &work_dir),
            }
            .publishing(publisher.clone())
            .serving_api(api_calls.clone())
        },
        options,
    )?)
}

pub fn run(args: MasterArgs) -> anyhow::Result<()> {
    let flags = std::sync::Arc::new(flags(&args));
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
        authorizer: args.authorization.authorizer()?,
        max_frameworks_per_principal: usize::try_from(args.max_frameworks_per_principal)
            .unwrap_or(usize::MAX),
        max_tasks_per_framework: usize::try_from(args.max_tasks_per_framework)
            .unwrap_or(usize::MAX),
        ..Config::default()
    };
    let authorization = args.authorization.describe(&config.authorizer);
    let http_credentials = args.http_auth.credentials()?;
    let framework_access = match (
        args.authenticate_http_frameworks,
        args.allow_unauthenticated_http_frameworks,
        args.http_auth.credentials_file()?,
    ) {
        (true, _, Some(credentials)) => {
            strata_master::api::FrameworkAccess::Authenticated(credentials)
        }
        (true, _, None) => anyhow::bail!(
            "--authenticate-http-frameworks needs --http-credentials FILE naming the frameworks' principals"
        ),
        (false, true, _) => strata_master::api::FrameworkAccess::Unauthenticated,
        (false, false, _) => strata_master::api::FrameworkAccess::Off,
    };
    // Operator calls that change the cluster need an operator who
    // authenticates.
    let operator_writes = match args.http_auth.credentials_file()? {
        Some(credentials) => strata_master::operator::WriteAccess::Authenticated(credentials),
        None => strata_master::operator::WriteAccess::Off,
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
    // error (with ZooKeeper, the registry is read once elected).
    let recovered = match &args.zk {
        Some(_) => None,
        None => strata_master::registry::load(&strata_runtime::durable::Disk::real(), &registry)?,
    };
    let (masters, masters_watch) = tokio::sync::watch::channel(Vec::new());
    let (view, view_watch) = tokio::sync::watch::channel(match &args.zk {
        Some(_) => strata_master::process::LeaderView::Unknown,
        None => strata_master::process::LeaderView::Leading,
    });
    let material = args.tls.serving_material(
        strata_runtime::Role::Master,
        "master",
        &crate::served_names(args.ip),
    )?;
    let https = args.http_auth.https(&material)?;
    let publisher_and_routes = strata_master::state::channel();
    actix_rt::System::new().block_on(async move {
        let (node, listener) = crate::bind_serving_node(NodeConfig::new(
            SocketAddr::new(args.ip, args.port),
            material,
        ))
        .await?;
        let (api, api_calls) = strata_master::api::channel();
        let http = crate::serve_http(
            listener,
            strata_runtime::http::Cors::SameOrigin,
            Some(https),
            strata_master::process::redirecting(view_watch, masters_watch, strata_master::api::routes(
                api.clone(),
                framework_access,
                strata_runtime::http_auth::guard(
                    http_credentials,
                    strata_master::state::PUBLIC_PATHS,
                    strata_master::operator::routes(
                        strata_master::operator::OperatorApi {
                            api,
                            snapshots: publisher_and_routes.1.clone(),
                            authorizer: config.authorizer.clone(),
                            flags,
                            writes: operator_writes,
                        },
                        strata_master::state::routes(
                            publisher_and_routes.1.clone(),
                            config.authorizer.clone(),
                        ),
                    ),
                ),
            )),
        )
        .await?;
        let ha = args
            .zk
            .as_ref()
            .map(|url| (url.clone(), args.zk_session_timeout, view.clone(), masters.clone()));
        let pid = spawn_master(
            &node,
            config,
            work_dir,
            ha,
            publisher_and_routes.0.clone(),
            api_calls,
        )?;
        say!(
            "master listening at {pid} (allocation policy {})",
            args.allocation_policy
        );
        if args.http_auth.https_only {
            say!("HTTP API at https://{http}/ (state, metrics; HTTPS only)");
        } else {
            say!("HTTP API at http://{http}/ (state, metrics; HTTPS on the same port)");
        }
        say!("authorization: {authorization}");
        if let Some(url) = &args.zk {
            say!(
                "contending for leadership in {url} (session timeout {:?}); the registry is kept there",
                args.zk_session_timeout
            );
        }
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
