//! `strata agent`: run an agent.
//!
//! Detects what this machine can offer (cpus and memory within the
//! agent's cgroup, the work directory's disk, ports 31000-32000), applies
//! `--resources` overrides and `--attributes`, registers with the master
//! and runs tasks as processes in sandboxes under the work directory,
//! until Ctrl-C or SIGTERM. Then the tasks of frameworks that do not
//! checkpoint are killed; the others keep running, and the agent started
//! again on the same work directory recovers them (also after a SIGKILL).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strata_agent::{AGENT_ID, Agent, AgentConfig, Runner};
use strata_protocol::{Attributes, Resources};
use strata_runtime::{NodeConfig, SpawnOptions};
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The master's address, HOST:PORT, or zk://HOST:PORT[,...]/PATH to
    /// follow whichever master leads in ZooKeeper.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: crate::leader::MasterAddress,
    /// Address to listen on; the master reaches the agent here.
    #[arg(long, env = "STRATA_IP", default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "STRATA_PORT", default_value_t = 5051)]
    pub port: u16,
    /// Resources to offer instead of the detected ones, in Mesos syntax:
    /// `cpus:4;mem:4096;ports:[31000-32000]`. Named resources replace the
    /// detected ones; others are added.
    #[arg(long, env = "STRATA_RESOURCES", default_value = "", value_parser = parse_resources)]
    pub resources: Resources,
    /// Attributes frameworks place by: `rack:r1;zone:a`.
    #[arg(long, env = "STRATA_ATTRIBUTES", default_value = "", value_parser = parse_attributes)]
    pub attributes: Attributes,
    /// Seconds between SIGTERM and SIGKILL when a task is killed.
    #[arg(long, env = "STRATA_KILL_GRACE", default_value_t = 5.0)]
    pub kill_grace: f64,
    /// Run tasks as their framework's user (needs root); false runs them
    /// all as this agent's user.
    #[arg(long, env = "STRATA_SWITCH_USER", default_value_t = true, action = clap::ArgAction::Set)]
    pub switch_user: bool,
    /// Take v1 executor API calls (`/api/v1/executor`) without
    /// credentials, for the executors this agent started that have not
    /// registered yet (as Apache Mesos does without executor
    /// authentication): custom executors written with a Mesos library.
    /// Without it, executors register with the certificates the agent
    /// gives them.
    #[arg(long, env = "STRATA_ALLOW_UNAUTHENTICATED_HTTP_EXECUTORS")]
    pub allow_unauthenticated_http_executors: bool,
    #[command(flatten)]
    pub isolation: IsolationArgs,
    #[command(flatten)]
    pub http_auth: crate::HttpAuthArgs,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

/// How an agent isolates its tasks.
#[derive(Debug, Clone, clap::Args)]
pub struct IsolationArgs {
    /// How tasks are isolated: posix (a process group each), cgroups (a
    /// cgroup each: cpu shares, memory and pids limits, the kernel's
    /// accounting, a kill that reaches every process), cgroups,namespaces
    /// (besides, pid and mount namespaces with a private /tmp), with
    /// ,network/none no network but loopback. Default: cgroups,namespaces
    /// where this machine allows, else what it does (logged).
    #[arg(long, env = "STRATA_ISOLATION")]
    pub isolation: Option<strata_agent::isolation::IsolationFlags>,
    /// Where containers' cgroups go, below the top of each hierarchy (one
    /// subtree per agent work directory inside).
    #[arg(long, env = "STRATA_CGROUPS_ROOT", default_value = strata_agent::isolation::DEFAULT_CGROUPS_ROOT, value_parser = parse_cgroups_root)]
    pub cgroups_root: String,
    /// Limit each task's cpu to its cpus with a CFS quota, besides its
    /// share (Mesos's --cgroups_enable_cfs).
    #[arg(long, env = "STRATA_CGROUPS_ENABLE_CFS")]
    pub cgroups_enable_cfs: bool,
    /// The most processes a task's container may have.
    #[arg(long, env = "STRATA_CGROUPS_PIDS_MAX", value_parser = clap::value_parser!(u64).range(1..))]
    pub cgroups_pids_max: Option<u64>,
    /// The OCI runtime that runs tasks in images: runc, crun, or a path
    /// to either. Default: runc if installed, else crun.
    #[arg(long, env = "STRATA_OCI_RUNTIME")]
    pub oci_runtime: Option<String>,
    /// The most MiB of unpacked image layers the agent keeps; the least
    /// recently used images not in use go first beyond it.
    #[arg(long, env = "STRATA_IMAGE_CACHE_MB", default_value_t = 10240, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_cache_mb: u64,
    /// The CAs (PEM) trusted for image registries spoken to over HTTPS
    /// (registries on loopback are spoken to over plain HTTP).
    #[arg(long, env = "STRATA_REGISTRY_CA", default_value = strata_agent::images::registry::DEFAULT_CA_BUNDLE)]
    pub registry_ca: PathBuf,
    /// Directories (comma-separated) whose OCI layouts and image archives
    /// tasks may name as their image by path; none by default.
    #[arg(long, env = "STRATA_IMAGE_DIRS", value_delimiter = ',')]
    pub image_dirs: Vec<PathBuf>,
    /// Directories (comma-separated) whose contents containers may mount
    /// as volumes by absolute host path; none by default (relative host
    /// paths, in the sandbox, are always allowed).
    #[arg(long, env = "STRATA_VOLUME_DIRS", value_delimiter = ',')]
    pub volume_dirs: Vec<PathBuf>,
}

impl IsolationArgs {
    /// How the agent runs tasks in images; an error for an OCI runtime
    /// asked for that is not there.
    pub fn images(&self) -> anyhow::Result<strata_agent::image_containers::ImageOptions> {
        if let Some(runtime) = &self.oci_runtime {
            strata_agent::oci::OciRuntime::find(Some(runtime), std::path::Path::new("/"))
                .map_err(|error| anyhow::anyhow!("--oci-runtime: {error}"))?;
        }
        Ok(strata_agent::image_containers::ImageOptions {
            runtime: self.oci_runtime.clone(),
            cache_bytes: self.image_cache_mb.saturating_mul(1 << 20),
            ca_bundle: self.registry_ca.clone(),
            image_dirs: self.image_dirs.clone(),
            volume_dirs: self.volume_dirs.clone(),
        })
    }

    /// The isolation of the agent of `work_dir`: what was asked (an error
    /// when this machine cannot), else the most that works, with why it
    /// is less logged once.
    pub fn choose(
        &self,
        work_dir: &std::path::Path,
        program: Option<PathBuf>,
        say_why: bool,
    ) -> anyhow::Result<strata_agent::isolation::Isolation> {
        let (isolation, why) =
            strata_agent::isolation::choose(&strata_agent::isolation::IsolationOptions {
                requested: self.isolation,
                cgroups_root: self.cgroups_root.clone(),
                cfs: self.cgroups_enable_cfs,
                pids_max: self.cgroups_pids_max,
                program,
                work_dir: work_dir.to_owned(),
            })
            .map_err(|error| anyhow::anyhow!("--isolation: {error}"))?;
        if let Some(why) = why.filter(|_| say_why) {
            tracing::warn!("{why}");
        }
        Ok(isolation)
    }
}

fn parse_cgroups_root(text: &str) -> Result<String, String> {
    let path = std::path::Path::new(text);
    if text.is_empty()
        || !path
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "{text:?} is not a relative cgroup path such as strata"
        ));
    }
    Ok(text.to_owned())
}

fn parse_resources(text: &str) -> Result<Resources, String> {
    text.parse()
        .map_err(|e: strata_protocol::ResourcesError| e.to_string())
}

fn parse_attributes(text: &str) -> Result<Attributes, String> {
    text.parse()
        .map_err(|e: strata_protocol::attributes::AttributesError| e.to_string())
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let work_dir: PathBuf = args.tls.work_dir.clone();
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create the work directory {}", work_dir.display()))?;
    let detected = strata_agent::detection::detect(&work_dir)?;
    let resources = strata_agent::resources::total(detected, &args.resources);
    let kill_grace = Duration::try_from_secs_f64(args.kill_grace).map_err(|_| {
        anyhow::anyhow!(
            "--kill-grace must be a number of seconds, not {}",
            args.kill_grace
        )
    })?;
    let _lock = strata_agent::recovery::lock_work_dir(&work_dir)?;
    // Checkpoint batches a machine crash kept only in the journal come
    // back before anything reads the checkpoints.
    strata_agent::journal::Journal::new(&work_dir)
        .replay()
        .with_context(|| {
            format!(
                "cannot replay the checkpoint journal in {}",
                work_dir.display()
            )
        })?;
    // Checked before starting, so a refusal is this command's error.
    let recovering =
        match strata_agent::recovery::read(&strata_runtime::durable::Disk::real(), &work_dir)? {
            Some(recovered) => {
                recovered.check(&resources)?;
                Some(recovered.agent_id)
            }
            None => None,
        };
    let task_launcher =
        std::env::current_exe().context("cannot find this program to run as the task launcher")?;
    let isolation = args
        .isolation
        .choose(&work_dir, Some(task_launcher.clone()), true)?;
    let isolated = isolation.flags();
    // A development agent is named after its machine and work directory,
    // which a restarted agent keeps: the master binds the agent's id to
    // that name.
    let mut material = args.tls.serving_material(
        strata_runtime::Role::Agent,
        &development_agent_name(&args.ip.to_string(), &work_dir),
        &crate::served_names(args.ip),
    )?;
    let credentials = strata_agent::ExecutorCredentials::kept_in(&work_dir, &material)?;
    let http_credentials = args.http_auth.credentials()?;
    credentials.trusted_by(&mut material);
    let https = args.http_auth.https(&material)?;
    actix_rt::System::new().block_on(async move {
        let (node, listener) = crate::bind_serving_node(NodeConfig::new(
            SocketAddr::new(args.ip, args.port),
            material,
        ))
        .await?;
        if let crate::leader::MasterAddress::Zk(url) = &args.master {
            info!(%url, "waiting for a master to lead");
        }
        let (master, leader) = crate::leader::find(&args.master, None).await?;
        let config = AgentConfig {
            master: master.clone(),
            hostname: args.ip.to_string(),
            resources: resources.clone(),
            attributes: args.attributes.clone(),
            seed: node.incarnation().0,
            runner: Runner::Processes {
                work_dir: work_dir.clone(),
                kill_grace,
                isolation,
                images: Some(args.isolation.images()?),
            },
            status_update_retry: strata_agent::status_updates::FIRST_RETRY,
            usage_interval: std::time::Duration::from_secs(1),
            master_silence_check: strata_agent::MASTER_SILENCE_CHECK,
            executor_credentials: Some(credentials),
            executor_registration_timeout: std::time::Duration::from_secs(60),
            task_launcher: Some(task_launcher),
            switch_user: args.switch_user,
            kill_tasks_on_stop: false,
            disk: Default::default(),
            leader,
        };
        let (publisher, snapshots) = strata_agent::http::channel();
        let (executor_api, executor_calls) = strata_agent::executor_api::channel();
        let executor_access = if args.allow_unauthenticated_http_executors {
            strata_agent::executor_api::ExecutorAccess::Unauthenticated
        } else {
            strata_agent::executor_api::ExecutorAccess::Off
        };
        let http = crate::serve_http(
            listener,
            crate::agent_cors(master.addr()),
            Some(https),
            strata_agent::executor_api::routes(
                executor_api,
                executor_access,
                strata_runtime::http_auth::guard(
                    http_credentials,
                    strata_agent::http::PUBLIC_PATHS,
                    strata_agent::http::routes(snapshots),
                ),
            ),
        )
        .await?;
        let pid = node.spawn(
            AGENT_ID,
            move || {
                Agent::new(config.clone())
                    .publishing(publisher.clone())
                    .serving_executor_api(executor_calls.clone())
            },
            SpawnOptions::default(),
        )?;
        say!("agent listening at {pid}, offering {resources}, registering with {master}");
        say!("HTTP API at http://{http}/ (state, metrics, sandbox files)");
        say!("tasks isolated with {isolated}");
        if let Some(agent_id) = recovering {
            say!(
                "recovering agent {agent_id} and its tasks from {}",
                work_dir.display()
            );
        }
        let served = crate::serve_until_shutdown(&node, std::slice::from_ref(&pid)).await;
        info!("shutting down; tasks of frameworks that checkpoint keep running");
        node.close(Duration::from_secs(2)).await;
        served
    })
}

/// The development certificate name of an agent at `ip` working in
/// `work_dir`: stable across restarts, different for two agents on one
/// machine.
fn development_agent_name(ip: &str, work_dir: &std::path::Path) -> String {
    let place = work_dir
        .canonicalize()
        .unwrap_or_else(|_| work_dir.to_owned());
    // FNV-1a: fixed across builds, unlike the standard library's hasher.
    let hash = place
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
        });
    format!("agent-{ip}-{hash:08x}")
}
