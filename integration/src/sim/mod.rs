//! Failure simulation: a whole Strata cluster (master, agents, framework
//! schedulers) in one process, on one thread, on a simulated network and a
//! paused clock, driven by a seed, with its invariants checked as it runs.
//!
//! The master, agent and scheduler code is the code that runs in
//! production; only the transport underneath ([`SimNetwork`]), the disk
//! under the master's registry ([`strata_runtime::durable::SimDisk`]) and
//! the tasks (containers on a simulated machine, [`crate::containers`],
//! which run for the virtual time their `strata.test/run-ms` label says)
//! are simulated.
//! Every random choice (latencies, losses, duplicates, and the scenario's
//! own through [`SimCluster::random`]) derives from the seed, so a failing
//! run is replayed exactly from its seed.
//!
//! A test drives a [`SimCluster`] inside [`run`]: it adds frameworks
//! (any [`Scheduler`] written with the SDK), injects faults (crashes and
//! restarts of agents, the master and schedulers, partitions, lossy
//! links, message filters on [`SimCluster::network`]), adds intruders
//! that send raw protocol messages under a certificate of their own
//! ([`SimCluster::add_intruder`]) and lets virtual time pass
//! ([`SimCluster::run_for`]). Then [`SimCluster::converge`] heals
//! everything and requires the cluster to settle, and
//! [`SimCluster::finish`] returns what was checked or a [`Failure`] with
//! the seed and the tail of the event trace. Checked all along:
//!
//! - after every input the master handles, its books: what an agent's
//!   tasks use plus each of its outstanding offers fits in its total,
//!   offer by offer (so no resource is in two offers), and the allocator
//!   agrees ([`strata_master::books::Books::check_invariants`]);
//! - at every status update that reaches a framework: no task leaves a
//!   terminal state, updates with ids (the reliable stream) arrive in the
//!   order their agent made them with none skipped and in legal
//!   transitions, and a duplicate is only a repeat of the latest update,
//!   with the same id and state ([`ledger`]);
//! - after convergence: every agent that runs is active in the master's
//!   books, every update an agent made reached its framework (unless the
//!   master ended the task), and every task is terminal and known so to
//!   its framework, or running and agreed on by its agent, the master and
//!   its framework.
//!
//! ```no_run
//! use std::time::Duration;
//! use strata_integration::sim::{self, ClusterSpec, SimCluster, Workload, WorkloadSpec};
//! use strata_protocol::FrameworkInfo;
//!
//! let report = sim::run(async {
//!     let mut cluster = SimCluster::new(42, ClusterSpec::new(3, "cpus:4;mem:4096"));
//!     let workload = WorkloadSpec::new(10, "cpus:1;mem:128", Duration::from_secs(5));
//!     cluster.add_framework(FrameworkInfo::new("batch", "me"), Workload::factory(workload));
//!     cluster.run_for(Duration::from_secs(3)).await;
//!     cluster.crash_agent(0);
//!     cluster.run_for(Duration::from_secs(10)).await;
//!     cluster.restart_agent(0);
//!     cluster.converge(Duration::from_secs(600)).await;
//!     cluster.finish()
//! });
//! if let Err(failure) = report {
//!     panic!("{failure}");
//! }
//! ```

pub mod intruder;
pub mod ledger;
pub mod scenarios;
pub mod sweep;
mod workload;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::containers::SimHost;
use strata_agent::process::AGENT_ID;
use strata_agent::{Agent, AgentConfig};
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig};
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{AgentId, FrameworkId, FrameworkInfo, Resources, TaskState};
use strata_runtime::durable::{Disk, SimDisk};
use strata_runtime::random::SplitMix;
use strata_runtime::transport::sim::{LinkConfig, Observer, SimEvent, SimNetwork};
use strata_runtime::transport::sim_udp::SimUdpNetwork;
use strata_runtime::{
    CertificateAuthority, Incarnation, MetricsSnapshot, Node, NodeConfig, Role, SpawnOptions, Upid,
};
use tokio::sync::watch;

pub use crate::containers::{MEM_MB_LABEL, RUN_MS_LABEL};
pub use intruder::Intruder;
pub use ledger::Ledger;
pub use workload::{Workload, WorkloadSpec, test_task};

/// Runs `scenario` on a fresh single-threaded actor system whose clock is
/// paused: virtual time jumps to the next timer whenever every task is
/// idle, so an hour of cluster time takes as long as the work in it.
///
/// # Panics
///
/// If the runtime cannot be built (the operating system refused it a
/// thread-local clock or an event loop).
pub fn run<T>(scenario: impl Future<Output = T>) -> T {
    #[allow(clippy::expect_used)]
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
    .block_on(scenario)
}

/// The shape of a simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub agents: usize,
    /// Every agent's resources.
    pub agent_resources: Resources,
    /// The master's configuration (Mesos's defaults unless changed).
    pub master: Config,
    /// Whether the master keeps its registry on a simulated disk, so it
    /// can crash and recover (see [`SimCluster::restart_master`]).
    pub durable_master: bool,
    /// How agents resend unacknowledged updates (Mesos: 10 s, doubling).
    pub status_update_retry: Duration,
    /// Whether the master checks its books after every input (a pass
    /// over them each time: on unless measuring speed without it).
    pub check_invariants: bool,
    /// Checks them only after every this many inputs (1: every input),
    /// for clusters so large that a pass per input costs too much.
    pub check_every: u64,
    /// What carries the messages.
    pub network: NetworkKind,
    /// How many masters: 1 leads alone; more elect a leader in a
    /// simulated ZooKeeper ensemble and keep the registry there.
    pub masters: usize,
    /// Their ZooKeeper session timeout.
    pub zk_session_timeout: Duration,
}

/// What carries a simulated cluster's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkKind {
    /// The simulated transport: messages as whole frames with a latency
    /// each, fully determined by the seed, and fast.
    #[default]
    Frames,
    /// The real QUIC transport (TLS, streams, keep-alives, idle timeouts,
    /// reconnects) over simulated UDP: slower, and only the network's
    /// choices follow the seed (TLS draws its own randomness).
    Quic,
}

impl ClusterSpec {
    /// `agents` agents with `resources` each (`"cpus:4;mem:4096"`) and a
    /// durable master with Mesos's timings.
    ///
    /// # Panics
    ///
    /// If `resources` does not parse.
    pub fn new(agents: usize, resources: &str) -> ClusterSpec {
        #[allow(clippy::expect_used)]
        let agent_resources = resources.parse().expect("valid agent resources");
        ClusterSpec {
            agents,
            agent_resources,
            master: Config::default(),
            durable_master: true,
            status_update_retry: Duration::from_secs(10),
            check_invariants: true,
            check_every: 1,
            network: NetworkKind::Frames,
            masters: 1,
            zk_session_timeout: strata_zk::DEFAULT_SESSION_TIMEOUT,
        }
    }
}

/// Why a simulation failed, and how to replay it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub violations: Vec<String>,
    /// The events of the run, oldest first (at most the last 100,000,
    /// pings and pongs left out).
    pub trace: Vec<String>,
}

impl Failure {
    /// Writes the whole trace to `path`.
    pub fn write_trace(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.trace.join("\n") + "\n")
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation with seed {} failed:", self.seed)?;
        for violation in &self.violations {
            writeln!(f, "  - {violation}")?;
        }
        writeln!(f, "last events:")?;
        for line in &self.trace[self.trace.len().saturating_sub(TRACE_SHOWN)..] {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a passing simulation checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    /// A hash of everything the network did and every frame seen sent
    /// and delivered: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Virtual time the run took.
    pub simulated: Duration,
    /// Tasks launched, and how many ended in each terminal state.
    pub tasks: usize,
    pub ended: BTreeMap<String, usize>,
    /// Status updates that reached frameworks.
    pub updates: usize,
    /// The run's events, when `SIM_TRACE` is set (as [`Failure::trace`]).
    pub trace: Vec<String>,
}

/// Most events kept for a failure's trace (pings and pongs are left out).
const TRACE_KEPT: usize = 100_000;

/// Events shown with a failure (the whole trace goes to a file).
const TRACE_SHOWN: usize = 60;

/// One line of the trace, formatted only when shown.
#[derive(Debug, Clone)]
enum TraceLine {
    Frame {
        at: Duration,
        from: SocketAddr,
        to: SocketAddr,
        kind: &'static str,
        copies: usize,
        /// The frame, for the kinds whose content the trace shows
        /// (decoded only when the trace is shown).
        frame: Option<bytes::Bytes>,
    },
    Text(Duration, String),
}

/// What the network observer and the processes share with the harness.
#[derive(Debug, Default)]
struct Shared {
    ledger: Ledger,
    trace: VecDeque<TraceLine>,
    /// Node names by address, for the trace.
    names: BTreeMap<SocketAddr, String>,
    agents: HashSet<SocketAddr>,
    schedulers: HashSet<SocketAddr>,
    masters: HashSet<SocketAddr>,
    /// A running hash of the frames seen sent and delivered.
    events: u64,
}

impl Shared {
    fn hash(&mut self, event: &SimEvent<'_>) {
        let mut mix = |value: u64| {
            self.events = (self.events ^ value).wrapping_mul(0x0100_0000_01b3);
        };
        match *event {
            SimEvent::Frame {
                from,
                to,
                kind,
                bytes,
                copies,
            } => {
                mix(u64::from(from.port()) << 32 ^ u64::from(to.port()));
                mix(addr_bits(from) ^ addr_bits(to) << 1);
                mix(kind.len() as u64 ^ (bytes.len() as u64) << 8 ^ (copies as u64) << 40);
            }
            SimEvent::Delivered { from, to, body } => {
                mix(addr_bits(from) ^ addr_bits(to) << 1 ^ (body.len() as u64) << 32);
            }
            SimEvent::Connected { a, b } | SimEvent::Disconnected { a, b, .. } => {
                mix(addr_bits(a) ^ addr_bits(b) << 2 ^ 0x5a5a);
            }
        }
    }

    fn push(&mut self, line: TraceLine) {
        if self.trace.len() >= TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn name(&self, addr: &SocketAddr) -> String {
        self.names
            .get(addr)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    fn show(&self, line: &TraceLine) -> String {
        match line {
            TraceLine::Frame {
                at,
                from,
                to,
                kind,
                copies,
                frame,
            } => {
                let detail = frame
                    .as_ref()
                    .and_then(|frame| ledger::describe(kind, frame))
                    .unwrap_or_default();
                let fate = match copies {
                    0 => " (lost)",
                    1 => "",
                    _ => " (duplicated)",
                };
                format!(
                    "{:>10.3}s {} -> {}: {kind}{detail}{fate}",
                    at.as_secs_f64(),
                    self.name(from),
                    self.name(to)
                )
            }
            TraceLine::Text(at, text) => format!("{:>10.3}s {text}", at.as_secs_f64()),
        }
    }
}

type SharedRef = Arc<Mutex<Shared>>;

fn addr_bits(addr: SocketAddr) -> u64 {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => u64::from(u32::from(ip)),
        std::net::IpAddr::V6(ip) => u128::from(ip) as u64,
    }
}

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node of the cluster and its lives.
struct Slot {
    role: Role,
    name: String,
    addr: SocketAddr,
    node: Option<Node>,
    lives: u64,
}

impl Slot {
    fn new(role: Role, name: String, addr: SocketAddr) -> Slot {
        Slot {
            role,
            name,
            addr,
            node: None,
            lives: 0,
        }
    }

    /// A fresh node for the next life at this address.
    fn start(&mut self, fabric: &Fabric, index: u64) -> Option<Node> {
        self.lives += 1;
        let incarnation = Incarnation(index << 32 | self.lives);
        let node = fabric.node(self.addr, self.role, &self.name, incarnation)?;
        self.node = Some(node.clone());
        Some(node)
    }
}

/// The network under the cluster.
enum Fabric {
    Frames(SimNetwork),
    Quic {
        udp: SimUdpNetwork,
        authority: Box<CertificateAuthority>,
        observer: Observer,
    },
}

impl Fabric {
    fn node(
        &self,
        addr: SocketAddr,
        role: Role,
        name: &str,
        incarnation: Incarnation,
    ) -> Option<Node> {
        match self {
            Fabric::Frames(network) => Some(network.node(addr, role, name, incarnation)),
            Fabric::Quic {
                udp,
                authority,
                observer,
            } => {
                let tls = authority.issue(role, name).ok()?;
                let mut config = NodeConfig::new(addr, tls);
                config.settings.incarnation = Some(incarnation);
                Node::bind_on_socket(config, udp.bind(addr), Some(observer.clone())).ok()
            }
        }
    }

    fn crash(&self, addr: SocketAddr) {
        match self {
            Fabric::Frames(network) => network.crash(addr),
            Fabric::Quic { udp, .. } => udp.crash(addr),
        }
    }

    fn partition(&self, a: SocketAddr, b: SocketAddr) {
        match self {
            Fabric::Frames(network) => network.partition(a, b),
            Fabric::Quic { udp, .. } => udp.partition(a, b),
        }
    }

    fn heal_all(&self) {
        match self {
            Fabric::Frames(network) => {
                network.heal_all();
                network.reset_links();
            }
            Fabric::Quic { udp, .. } => udp.heal_all(),
        }
    }
}

type StartScheduler = Rc<dyn Fn(&Node, Option<FrameworkId>) -> Option<Upid>>;

struct FrameworkSlot {
    slot: Slot,
    start: StartScheduler,
}

type AgentStates = watch::Receiver<Option<Arc<strata_agent::http::State>>>;

/// A master's node and what it publishes.
struct MasterSlot {
    slot: Slot,
    state: Option<MasterState>,
}

/// The simulated ZooKeeper of a cluster with several masters: the
/// ensemble, each master's current session, and the leader as a detector
/// sees it (agents and schedulers follow that).
struct SimZk {
    ensemble: strata_zk::memory::Ensemble,
    sessions: Arc<Mutex<Sessions>>,
    leader: watch::Receiver<Option<Upid>>,
    /// Each agent's and scheduler's own view of the leader, told in
    /// order (one watch shared by all would wake them in an order of
    /// tokio's choosing, which differs between runs).
    followers: Arc<Mutex<Vec<watch::Sender<Option<Upid>>>>>,
}

/// Each master's current session, and the masters cut off from
/// ZooKeeper (their new sessions too).
#[derive(Debug, Default)]
struct Sessions {
    current: BTreeMap<usize, strata_zk::memory::SessionId>,
    cut: BTreeSet<usize>,
}

/// Where masters contend in the simulated ZooKeeper.
const ZK_PATH: &str = "/strata";

impl SimZk {
    /// An ensemble that expires cut-off sessions on the virtual clock.
    fn start(timeout: Duration) -> SimZk {
        let ensemble = strata_zk::memory::Ensemble::new();
        let ticking = ensemble.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ticking.expire_overdue();
            }
        });
        let detecting = ensemble.clone();
        let connect: strata_zk::election::Connect = Arc::new(move || {
            let session: Arc<dyn strata_zk::Session> = detecting.session(timeout);
            Box::pin(std::future::ready(Ok(session)))
        });
        let leader = strata_zk::Detector::spawn_upids(connect, ZK_PATH);
        let followers: Arc<Mutex<Vec<watch::Sender<Option<Upid>>>>> = Arc::default();
        let (mut watching, telling) = (leader.clone(), followers.clone());
        tokio::spawn(async move {
            while watching.changed().await.is_ok() {
                let now = watching.borrow_and_update().clone();
                let mut followers = telling
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                followers.retain(|follower| !follower.is_closed());
                for follower in followers.iter() {
                    follower.send_replace(now.clone());
                }
            }
        });
        SimZk {
            ensemble,
            sessions: Arc::default(),
            leader,
            followers,
        }
    }

    /// A view of the leader for one agent or scheduler.
    fn follower(&self) -> watch::Receiver<Option<Upid>> {
        follower_of(&self.leader, &self.followers)
    }

    /// Opens sessions for master `index`, noting each as its current one.
    fn connector(&self, index: usize, timeout: Duration) -> strata_zk::election::Connect {
        let ensemble = self.ensemble.clone();
        let sessions = self.sessions.clone();
        Arc::new(move || {
            let session = ensemble.session(timeout);
            let mut sessions = lock_sessions(&sessions);
            sessions.current.insert(index, session.id());
            if sessions.cut.contains(&index) {
                ensemble.partition(session.id(), true);
            }
            let session: Arc<dyn strata_zk::Session> = session;
            Box::pin(std::future::ready(Ok(session)))
        })
    }

    /// Cuts master `index` off from ZooKeeper or reconnects it; a crashed
    /// master's session is cut off for good (`forever`).
    fn cut(&self, index: usize, cut: bool, forever: bool) {
        let mut sessions = lock_sessions(&self.sessions);
        if let Some(session) = sessions.current.get(&index) {
            self.ensemble.partition(*session, cut);
        }
        if forever {
            sessions.current.remove(&index);
        } else if cut {
            sessions.cut.insert(index);
        } else {
            sessions.cut.remove(&index);
        }
    }
}

/// A new view of `leader`, told of changes through `followers`.
fn follower_of(
    leader: &watch::Receiver<Option<Upid>>,
    followers: &Mutex<Vec<watch::Sender<Option<Upid>>>>,
) -> watch::Receiver<Option<Upid>> {
    let (sender, receiver) = watch::channel(leader.borrow().clone());
    followers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(sender);
    receiver
}

fn lock_sessions(sessions: &Mutex<Sessions>) -> MutexGuard<'_, Sessions> {
    sessions
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An agent's node, its machine (where its tasks run, and survive it) and
/// its disk (where its checkpoints are).
struct AgentSlot {
    slot: Slot,
    states: Option<AgentStates>,
    host: SimHost,
    disk: SimDir,
}

/// A simulated disk and the directory a node keeps its files in there.
#[derive(Debug)]
struct SimDir {
    root: PathBuf,
    disk: SimDisk,
}

impl SimDir {
    fn new(root: PathBuf) -> SimDir {
        SimDir {
            root,
            disk: SimDisk::default(),
        }
    }
}
type MasterState = strata_master::state::Snapshots;

/// A simulated cluster; see the [module documentation](self).
pub struct SimCluster {
    seed: u64,
    spec: ClusterSpec,
    fabric: Fabric,
    random: SplitMix,
    shared: SharedRef,
    started: tokio::time::Instant,
    masters: Vec<MasterSlot>,
    /// The ZooKeeper ensemble several masters elect a leader in.
    zk: Option<SimZk>,
    disk: SimDir,
    agents: Vec<AgentSlot>,
    frameworks: Vec<FrameworkSlot>,
    intruders: Vec<Intruder>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("seed", &self.seed)
            .field("agents", &self.agents.len())
            .field("frameworks", &self.frameworks.len())
            .finish_non_exhaustive()
    }
}

/// The address of a node: the master is 10.0.0.1, agent `n` is in
/// 10.1.0.0/16, scheduler `n` in 10.2.0.0/16, intruder `n` in
/// 10.3.0.0/16.
fn address(group: u8, index: usize) -> SocketAddr {
    let index = index as u32 + 1;
    SocketAddr::from(([10, group, (index >> 8) as u8, (index & 0xff) as u8], 5050))
}

/// Names each run's simulated directories, for the traces.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl SimCluster {
    /// Starts a master and `spec.agents` agents on a network seeded with
    /// `seed`. Call it inside [`run`].
    ///
    /// # Panics
    ///
    /// On real QUIC, if no certificate authority can be made for the
    /// cluster (the system's randomness failed).
    pub fn new(seed: u64, spec: ClusterSpec) -> SimCluster {
        let shared = SharedRef::default();
        let observed = shared.clone();
        let started = tokio::time::Instant::now();
        let observer: Observer = Arc::new(move |event: &SimEvent<'_>| {
            let at = started.elapsed();
            let mut shared = lock(&observed);
            shared.hash(event);
            match *event {
                SimEvent::Frame {
                    from,
                    to,
                    kind,
                    bytes,
                    copies,
                } => {
                    let from_agent = shared.agents.contains(&from);
                    shared.ledger.sent(from_agent, from, kind, bytes);
                    if shared.masters.contains(&from) {
                        shared.ledger.sent_by_master(from, kind, bytes);
                    }
                    if matches!(kind, "Ping" | "Pong") && copies > 0 {
                        return;
                    }
                    let frame = ledger::DESCRIBED.contains(&kind).then(|| bytes.clone());
                    shared.push(TraceLine::Frame {
                        at,
                        from,
                        to,
                        kind,
                        copies,
                        frame,
                    });
                }
                SimEvent::Delivered { to, body, .. } => {
                    if shared.schedulers.contains(&to) {
                        shared.ledger.delivered_to_scheduler(to, body);
                    }
                }
                SimEvent::Connected { a, b } => {
                    let line = format!("connected {} <-> {}", shared.name(&a), shared.name(&b));
                    shared.push(TraceLine::Text(at, line));
                }
                SimEvent::Disconnected { a, b, reason } => {
                    let line = format!(
                        "disconnected {} <-> {}: {reason}",
                        shared.name(&a),
                        shared.name(&b)
                    );
                    shared.push(TraceLine::Text(at, line));
                }
            }
        });
        let fabric = match spec.network {
            NetworkKind::Frames => {
                let network = SimNetwork::new(seed);
                network.observe(move |event| observer(event));
                Fabric::Frames(network)
            }
            NetworkKind::Quic => Fabric::Quic {
                udp: SimUdpNetwork::new(seed),
                #[allow(clippy::expect_used)]
                authority: Box::new(
                    CertificateAuthority::generate("strata-sim")
                        .expect("a certificate authority for the simulation"),
                ),
                observer,
            },
        };
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let root = PathBuf::from(format!("/strata-sim/{seed}-{run}"));
        let disk = SimDir::new(root.join("master"));
        let several = spec.masters > 1;
        let masters = (0..spec.masters.max(1))
            .map(|index| MasterSlot {
                slot: Slot::new(
                    Role::Master,
                    if several {
                        format!("master-{index}")
                    } else {
                        "master".into()
                    },
                    address(0, index),
                ),
                state: None,
            })
            .collect();
        let zk = several.then(|| SimZk::start(spec.zk_session_timeout));
        let agents = (0..spec.agents)
            .map(|index| AgentSlot {
                slot: Slot::new(Role::Agent, format!("agent-{index}"), address(1, index)),
                states: None,
                host: SimHost::default(),
                disk: SimDir::new(root.join(format!("agent-{index}"))),
            })
            .collect();
        let mut cluster = SimCluster {
            seed,
            random: SplitMix::new(seed ^ 0x5eed_5eed_5eed_5eed),
            spec,
            fabric,
            shared,
            started,
            masters,
            zk,
            disk,
            agents,
            frameworks: Vec::new(),
            intruders: Vec::new(),
        };
        {
            let mut shared = lock(&cluster.shared);
            for master in &cluster.masters {
                shared
                    .names
                    .insert(master.slot.addr, master.slot.name.clone());
                shared.masters.insert(master.slot.addr);
            }
            for agent in &cluster.agents {
                shared
                    .names
                    .insert(agent.slot.addr, agent.slot.name.clone());
                shared.agents.insert(agent.slot.addr);
            }
        }
        cluster.restart_master();
        for index in 0..cluster.agents.len() {
            cluster.restart_agent(index);
        }
        cluster
    }

    /// The seed this run derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated network, for links, partitions and filters; `None`
    /// on real QUIC, which runs over simulated UDP instead.
    pub fn network(&self) -> Option<&SimNetwork> {
        match &self.fabric {
            Fabric::Frames(network) => Some(network),
            Fabric::Quic { .. } => None,
        }
    }

    /// A generator for the scenario's own choices, seeded from the seed.
    pub fn random(&mut self) -> &mut SplitMix {
        &mut self.random
    }

    /// A duration drawn uniformly from `low..=high`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let spread = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.random.below(spread + 1))
    }

    /// Virtual time since the cluster started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The master's address as agents and schedulers know it: with
    /// several, the leader's (the first master's while none leads).
    pub fn master(&self) -> Upid {
        Upid::new(
            MASTER_ID,
            self.masters[self.leader_index()].slot.addr,
            Incarnation::ANY,
        )
        .unwrap_or_else(|_| unreachable!("the master's id is valid"))
    }

    pub fn master_addr(&self) -> SocketAddr {
        self.masters[self.leader_index()].slot.addr
    }

    /// How many masters the cluster has.
    pub fn master_count(&self) -> usize {
        self.masters.len()
    }

    /// The address of master `index`.
    pub fn master_addr_at(&self, index: usize) -> SocketAddr {
        self.masters[index].slot.addr
    }

    /// Which master leads as ZooKeeper says (the first when none does, or
    /// with one master).
    pub fn leader_index(&self) -> usize {
        let Some(zk) = &self.zk else {
            return 0;
        };
        let leader = zk.leader.borrow().clone();
        leader
            .and_then(|leader| {
                self.masters
                    .iter()
                    .position(|master| master.slot.addr == leader.addr())
            })
            .unwrap_or(0)
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn agent_addr(&self, index: usize) -> SocketAddr {
        self.agents[index].slot.addr
    }

    pub fn framework_addr(&self, index: usize) -> SocketAddr {
        self.frameworks[index].slot.addr
    }

    /// Agent `index`'s process, as its master addresses it.
    pub fn agent(&self, index: usize) -> Upid {
        Upid::new(AGENT_ID, self.agent_addr(index), Incarnation::ANY)
            .unwrap_or_else(|_| unreachable!("the agent's id is valid"))
    }

    /// What agent `index` last published about itself, while it runs.
    pub fn agent_state(&self, index: usize) -> Option<Arc<strata_agent::http::State>> {
        self.agents[index]
            .states
            .as_ref()
            .and_then(|states| states.borrow().clone())
    }

    /// The id agent `index` is registered under, once it is.
    pub fn agent_id(&self, index: usize) -> Option<AgentId> {
        let state = self.agent_state(index)?;
        state.id.clone()
    }

    /// The counters of agent `index`'s node in its current life.
    pub fn agent_metrics(&self, index: usize) -> Option<MetricsSnapshot> {
        self.agents[index].slot.node.as_ref().map(Node::metrics)
    }

    /// What the master (the leader, with several) last published of its
    /// books, while it runs.
    pub fn master_state(&self) -> Option<Arc<strata_master::state::State>> {
        self.masters[self.leader_index()]
            .state
            .as_ref()
            .and_then(strata_master::state::Snapshots::latest)
    }

    /// Reads what the network showed so far (updates made and delivered,
    /// tasks launched).
    pub fn ledger<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        read(&lock(&self.shared).ledger)
    }

    /// Adds a line to the event trace.
    pub fn note(&self, text: impl Into<String>) {
        let at = self.elapsed();
        lock(&self.shared).push(TraceLine::Text(at, text.into()));
    }

    /// Records a broken invariant found by the scenario itself.
    pub fn violation(&self, text: impl Into<String>) {
        let text = text.into();
        self.note(format!("VIOLATION: {text}"));
        lock(&self.shared).ledger.violations.push(text);
    }

    /// Starts a framework's scheduler on a node of its own; returns its
    /// index. `factory` makes the scheduler, again for every restart.
    pub fn add_framework<S: Scheduler>(
        &mut self,
        info: FrameworkInfo,
        factory: impl Fn() -> S + Clone + 'static,
    ) -> usize {
        let index = self.frameworks.len();
        let master = self.master();
        let zk_followers = self
            .zk
            .as_ref()
            .map(|zk| (zk.leader.clone(), zk.followers.clone()));
        let start: StartScheduler = Rc::new(move |node, framework_id| {
            let leader = zk_followers
                .as_ref()
                .map(|(leader, followers)| follower_of(leader, followers));
            let mut info = info.clone();
            if framework_id.is_some() {
                info.id = framework_id;
            }
            let mut config = SchedulerConfig::new(master.clone(), info);
            config.leader = leader;
            scheduler::spawn(node, "scheduler", config, factory.clone()).ok()
        });
        let slot = Slot::new(
            Role::Framework,
            format!("scheduler-{index}"),
            address(2, index),
        );
        {
            let mut shared = lock(&self.shared);
            shared.names.insert(slot.addr, slot.name.clone());
            shared.schedulers.insert(slot.addr);
        }
        self.frameworks.push(FrameworkSlot { slot, start });
        self.restart_framework(index);
        index
    }

    /// Adds a node that runs nothing, holding a certificate for `role`
    /// named `name`, for the scenario to send raw messages from (an
    /// attacker with a stolen certificate); it is in 10.3.0.0/16. `None`
    /// (and a violation) if its node could not be started.
    pub fn add_intruder(&mut self, role: Role, name: &str) -> Option<Intruder> {
        let index = self.intruders.len();
        let addr = address(3, index);
        let incarnation = Incarnation((0x300 + index as u64) << 32 | 1);
        let Some(node) = self.fabric.node(addr, role, name, incarnation) else {
            self.violation(format!("intruder {name}'s node could not be started"));
            return None;
        };
        lock(&self.shared).names.insert(addr, name.to_owned());
        self.note(format!(
            "start intruder {name} ({}) at {addr}",
            role.as_str()
        ));
        let intruder = Intruder::new(name.to_owned(), node);
        self.intruders.push(intruder.clone());
        Some(intruder)
    }

    /// The id the master gave framework `index`, once subscribed.
    pub fn framework_id(&self, index: usize) -> Option<FrameworkId> {
        let addr = self.frameworks[index].slot.addr;
        lock(&self.shared).ledger.framework_at(addr)
    }

    /// Crashes a node: its processes stop, messages in flight to or from
    /// it are lost, its peers notice only at their idle timeout; its disk
    /// stays.
    fn crash(fabric: &Fabric, slot: &mut Slot) {
        if let Some(node) = slot.node.take() {
            fabric.crash(slot.addr);
            node.shutdown();
        }
    }

    /// Crashes agent `index`. Its machine goes on: the tasks of
    /// frameworks that checkpoint keep running for its restart to take
    /// back; the others die with it, as their monitors see it go.
    pub fn crash_agent(&mut self, index: usize) {
        self.note(format!("crash agent-{index}"));
        Self::crash(&self.fabric, &mut self.agents[index].slot);
        self.agents[index].states = None;
    }

    /// Crashes agent `index`'s whole machine: its tasks die too, and its
    /// disk is replaced by an empty one. A restart is a new agent.
    pub fn crash_machine(&mut self, index: usize) {
        self.crash_agent(index);
        self.note(format!("agent-{index}'s machine lost with its disk"));
        let agent = &mut self.agents[index];
        for id in agent.host.running() {
            agent.host.end(
                &id,
                <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(9),
            );
        }
        agent.host = SimHost::default();
        agent.disk.disk.wipe();
    }

    /// Starts agent `index` again (or for the first time), on the same
    /// address with a new incarnation.
    pub fn restart_agent(&mut self, index: usize) {
        let master = self.master();
        let AgentSlot {
            slot,
            states,
            host,
            disk,
        } = &mut self.agents[index];
        if slot.node.is_some() {
            return;
        }
        let Some(node) = slot.start(&self.fabric, 0x100 + index as u64) else {
            let name = slot.name.clone();
            self.violation(format!("{name}'s node could not be started"));
            return;
        };
        let mut config = AgentConfig::new(
            master,
            slot.name.clone(),
            self.spec.agent_resources.clone(),
            Default::default(),
            self.seed ^ (index as u64) << 20 ^ slot.lives,
            crate::containers::simulated(host.clone(), disk.root.clone()),
        );
        config.disk = Disk::simulated(&disk.disk);
        config.leader = self.zk.as_ref().map(SimZk::follower);
        config.status_update_retry = self.spec.status_update_retry;
        // Like a daemon killed with SIGKILL: checkpointed tasks live on.
        config.kill_tasks_on_stop = false;
        let (publisher, receiver) = strata_agent::http::channel();
        *states = Some(receiver);
        let spawned = node.spawn(
            "agent",
            move || Agent::new(config.clone()).publishing(publisher.clone()),
            SpawnOptions::default(),
        );
        let note = match spawned {
            Ok(_) => format!("start agent-{index} (life {})", slot.lives),
            Err(error) => format!("agent-{index} did not start: {error}"),
        };
        self.note(note);
    }

    /// Crashes the master (the leader, with several).
    pub fn crash_master(&mut self) {
        self.crash_master_at(self.leader_index());
    }

    /// Crashes master `index`. With ZooKeeper, its session is heard from
    /// no more and expires after its timeout.
    pub fn crash_master_at(&mut self, index: usize) {
        let name = self.masters[index].slot.name.clone();
        self.note(format!("crash {name}"));
        Self::crash(&self.fabric, &mut self.masters[index].slot);
        self.masters[index].state = None;
        if let Some(zk) = &self.zk {
            zk.cut(index, true, true);
        }
    }

    /// Cuts master `index` off from ZooKeeper (`true`), or lets it reach
    /// ZooKeeper again; its session expires if cut off for its timeout.
    pub fn zk_partition_master(&mut self, index: usize, cut: bool) {
        let name = self.masters[index].slot.name.clone();
        self.note(format!(
            "{} {name} from ZooKeeper",
            if cut { "partition" } else { "reconnect" }
        ));
        if let Some(zk) = &self.zk {
            zk.cut(index, cut, false);
        }
    }

    /// ZooKeeper loses its quorum (`true`) or gets it back.
    pub fn zk_quorum_lost(&mut self, lost: bool) {
        self.note(if lost {
            "ZooKeeper loses its quorum"
        } else {
            "ZooKeeper's quorum is back"
        });
        if let Some(zk) = &self.zk {
            zk.ensemble.lose_quorum(lost);
        }
    }

    /// Starts every master that is down again (or for the first time): a
    /// durable master recovers its registry from its simulated disk, one
    /// of several contends in ZooKeeper.
    pub fn restart_master(&mut self) {
        for index in 0..self.masters.len() {
            self.restart_master_at(index);
        }
    }

    /// Starts master `index` again (or for the first time).
    pub fn restart_master_at(&mut self, index: usize) {
        if self.masters[index].slot.node.is_some() {
            return;
        }
        let Some(node) = self.masters[index]
            .slot
            .start(&self.fabric, 1 + index as u64)
        else {
            self.violation("a master's node could not be started");
            return;
        };
        let lives = self.masters[index].slot.lives;
        let prefix = match index {
            0 => format!("m{lives}"),
            _ => format!("m{index}x{lives}"),
        };
        let config = self.spec.master.clone();
        let work_dir = self.spec.durable_master.then(|| self.disk.root.clone());
        let disk = Disk::simulated(&self.disk.disk);
        let ha = self.zk.as_ref().map(|zk| strata_master::process::HaConfig {
            base: ZK_PATH.to_owned(),
            connect: zk.connector(index, self.spec.zk_session_timeout),
            hostname: self.masters[index].slot.addr.ip().to_string(),
            view: watch::channel(strata_master::process::LeaderView::Unknown).0,
            masters: watch::channel(Vec::new()).0,
            simulated: true,
        });
        let shared = self.shared.clone();
        let started = self.started;
        let sink: strata_master::process::InvariantSink = Arc::new(move |violation: String| {
            let at = started.elapsed();
            let mut shared = lock(&shared);
            shared.push(TraceLine::Text(
                at,
                format!("VIOLATION: master: {violation}"),
            ));
            shared
                .ledger
                .violations
                .push(format!("master: {violation}"));
        });
        let sink = self.spec.check_invariants.then_some(sink);
        let every = self.spec.check_every;
        let (publisher, receiver) = strata_master::state::channel();
        self.masters[index].state = Some(receiver);
        let spawned = node.spawn(
            MASTER_ID,
            move || {
                let master = match (&ha, &work_dir) {
                    (Some(ha), _) => Master::highly_available(config.clone(), &prefix, ha.clone()),
                    (None, Some(dir)) => {
                        Master::durable(config.clone(), &prefix, dir).on_disk(disk.clone())
                    }
                    (None, None) => Master::new(config.clone(), &prefix),
                };
                let master = match &sink {
                    Some(sink) => master.checking_every(sink.clone(), every),
                    None => master,
                };
                master.publishing(publisher.clone())
            },
            match self.zk {
                Some(_) => {
                    SpawnOptions::default().restart(strata_master::process::restart_policy())
                }
                None => SpawnOptions::default(),
            },
        );
        let name = self.masters[index].slot.name.clone();
        let note = match spawned {
            Ok(_) => format!("start {name} (life {lives})"),
            Err(error) => format!("{name} did not start: {error}"),
        };
        self.note(note);
    }

    /// Crashes framework `index`'s scheduler (a failover follows if it is
    /// restarted within its failover timeout).
    pub fn crash_framework(&mut self, index: usize) {
        self.note(format!("crash scheduler-{index}"));
        Self::crash(&self.fabric, &mut self.frameworks[index].slot);
    }

    /// Starts framework `index`'s scheduler again, re-subscribing with its
    /// framework id if it had one (a failover).
    pub fn restart_framework(&mut self, index: usize) {
        if self.frameworks[index].slot.node.is_some() {
            return;
        }
        let framework_id = self.framework_id(index);
        let framework = &mut self.frameworks[index];
        let Some(node) = framework.slot.start(&self.fabric, 0x200 + index as u64) else {
            self.violation(format!("scheduler-{index}'s node could not be started"));
            return;
        };
        let started = (framework.start)(&node, framework_id.clone()).is_some();
        let lives = framework.slot.lives;
        self.note(match (started, framework_id) {
            (false, _) => format!("scheduler-{index} did not start"),
            (true, Some(id)) => format!("start scheduler-{index} (life {lives}) failing over {id}"),
            (true, None) => format!("start scheduler-{index}"),
        });
    }

    /// Cuts the network between `a` and `b` both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.note(format!("partition {} <-> {}", self.name(a), self.name(b)));
        self.fabric.partition(a, b);
    }

    /// Holds back every frame from `from` to `to`, the connection staying
    /// up (a stalled path: nothing is lost, nothing arrives), until
    /// [`SimCluster::release`]. On the simulated transport only: a QUIC
    /// cluster records a violation instead.
    pub fn hold(&self, from: SocketAddr, to: SocketAddr) {
        self.note(format!("hold {} -> {}", self.name(from), self.name(to)));
        match &self.fabric {
            Fabric::Frames(network) => network.hold(from, to),
            Fabric::Quic { .. } => self.violation("hold is not available on QUIC"),
        }
    }

    /// Delivers what was held from `from` to `to`, in order, and lets
    /// later frames through.
    pub fn release(&self, from: SocketAddr, to: SocketAddr) {
        self.note(format!("release {} -> {}", self.name(from), self.name(to)));
        if let Fabric::Frames(network) = &self.fabric {
            network.release(from, to);
        }
    }

    /// Heals every partition and gives every link back its default.
    pub fn heal_all(&self) {
        self.note("heal all");
        self.fabric.heal_all();
    }

    /// Sets how every link behaves (loss, duplication, latency). On real
    /// QUIC, latency and loss apply to datagrams; duplication and message
    /// kinds cannot (the wire is encrypted) and are recorded as a
    /// violation of the scenario.
    pub fn set_default_link(&self, link: LinkConfig) {
        self.note(format!(
            "links: drop {:.2}, duplicate {:.2}, latency {:?}..{:?}, kinds {:?}",
            link.drop, link.duplicate, link.latency.0, link.latency.1, link.kinds
        ));
        match &self.fabric {
            Fabric::Frames(network) => network.set_default_link(link),
            Fabric::Quic { udp, .. } => {
                if link.duplicate > 0.0 || link.kinds.is_some() {
                    self.violation("duplication and message kinds are not available on QUIC");
                }
                udp.set_latency(link.latency.0, link.latency.1);
                udp.set_loss(link.drop);
            }
        }
    }

    fn name(&self, addr: SocketAddr) -> String {
        lock(&self.shared).name(&addr)
    }

    /// Lets `duration` of virtual time pass.
    pub async fn run_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Lets virtual time pass, a second at a time, until `done` says so
    /// or `limit` has passed; whether `done` said so.
    pub async fn run_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&SimCluster) -> bool,
    ) -> bool {
        let deadline = self.elapsed() + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.elapsed() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Heals the network, then lets the cluster run fault-free until every
    /// running agent is active in the master and every task is terminal
    /// and known so to its framework, or running and agreed on by agent,
    /// master and framework; waits at most `limit`
    /// of virtual time and records a violation if it never settles. Nodes
    /// that are down stay down (restart them first if they should count).
    pub async fn converge(&mut self, limit: Duration) {
        self.heal_all();
        let deadline = self.elapsed() + limit;
        let mut problems;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            problems = self.disagreement();
            if problems.is_empty() {
                // Agreement reached; every update the agents made must
                // also have reached its framework (a resent one may still
                // be on its way).
                let active = self.active_frameworks();
                problems = lock(&self.shared).ledger.check_complete(&active);
            }
            if problems.is_empty() || self.elapsed() >= deadline {
                break;
            }
        }
        let waited = limit.saturating_sub(deadline.saturating_sub(self.elapsed()));
        if problems.is_empty() {
            self.note(format!("converged after {:.1}s", waited.as_secs_f64()));
        }
        for problem in problems {
            self.violation(format!("not converged after {limit:?}: {problem}"));
        }
        self.check_registry().await;
    }

    /// With ZooKeeper: every agent a leader admitted and every framework
    /// it subscribed (acknowledged registry writes: the answers go out
    /// only once the registry holds them) is in the registry now, unless
    /// gone or removed since.
    async fn check_registry(&mut self) {
        let Some(zk) = &self.zk else {
            return;
        };
        let session = zk.ensemble.session(self.spec.zk_session_timeout);
        let registry = match strata_master::zk_registry::ZkRegistry::recover(
            session.as_ref(),
            ZK_PATH,
        )
        .await
        {
            Ok((_, Some(registry))) => registry,
            Ok((_, None)) => return self.violation("no registry in ZooKeeper"),
            Err(error) => return self.violation(format!("cannot read the registry: {error}")),
        };
        let (admitted, subscribed) = {
            let shared = lock(&self.shared);
            (
                shared.ledger.admitted.clone(),
                shared.ledger.subscribed.clone(),
            )
        };
        let agents: HashSet<&AgentId> = registry
            .agents
            .iter()
            .filter_map(|agent| agent.info.id.as_ref())
            .chain(registry.gone_agents.iter())
            .collect();
        let frameworks: HashSet<&FrameworkId> = registry
            .frameworks
            .iter()
            .filter_map(|framework| framework.id.as_ref())
            .chain(registry.removed_frameworks.iter())
            .collect();
        for agent in admitted.iter().filter(|agent| !agents.contains(agent)) {
            self.violation(format!(
                "agent {agent} was admitted but the registry lost it"
            ));
        }
        for framework in subscribed.iter().filter(|id| !frameworks.contains(id)) {
            self.violation(format!(
                "framework {framework} was subscribed but the registry lost it"
            ));
        }
    }

    /// The frameworks the master has (not removed), by id.
    fn active_frameworks(&self) -> HashSet<String> {
        self.master_state()
            .map(|state| {
                state
                    .frameworks
                    .iter()
                    .map(|framework| framework.id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What keeps the cluster from agreeing now, if anything.
    fn disagreement(&self) -> Vec<String> {
        let Some(master) = self.master_state() else {
            return vec!["the master is down".into()];
        };
        if master.recovering {
            return vec!["the master is still waiting for agents to re-register".into()];
        }
        // Non-terminal tasks by (framework, task): (state, agent).
        let master_tasks: BTreeMap<(String, String), (&str, &str)> = master
            .tasks
            .iter()
            .map(|task| {
                (
                    (task.framework_id.to_string(), task.id.to_string()),
                    (task.state.mesos_name(), task.agent_id.as_str()),
                )
            })
            .collect();
        let mut problems = Vec::new();
        // Every agent that runs is back in the master's books, active.
        for agent in &self.agents {
            if agent.slot.node.is_none() {
                continue;
            }
            let state = agent
                .states
                .as_ref()
                .and_then(|states| states.borrow().clone());
            let active = state
                .as_ref()
                .and_then(|state| state.id.as_ref())
                .is_some_and(|id| {
                    master.agents.iter().any(|known| {
                        &known.id == id && known.status == strata_api::views::AgentStatus::Active
                    })
                });
            if !active {
                problems.push(format!(
                    "{} is not an active agent of the master",
                    agent.slot.name
                ));
            }
        }
        let mut agent_tasks: BTreeMap<String, BTreeMap<(String, String), String>> = BTreeMap::new();
        for agent in &self.agents {
            let Some(state) = agent
                .states
                .as_ref()
                .and_then(|states| states.borrow().clone())
            else {
                continue;
            };
            let Some(id) = &state.id else {
                continue;
            };
            agent_tasks.insert(
                id.to_string(),
                state
                    .tasks
                    .iter()
                    .map(|task| {
                        (
                            (task.framework_id.to_string(), task.id.to_string()),
                            task.state.to_string(),
                        )
                    })
                    .collect(),
            );
        }
        let active: HashSet<&str> = master
            .frameworks
            .iter()
            .map(|framework| framework.id.as_str())
            .collect();
        let terminal = |name: &str| {
            TaskState::ALL
                .iter()
                .any(|state| state.is_terminal() && state.mesos_name() == name)
        };
        let shared = lock(&self.shared);
        for (framework_id, ledger) in &shared.ledger.frameworks {
            let framework = framework_id.to_string();
            let removed = !active.contains(framework.as_str());
            let known: std::collections::BTreeSet<_> =
                ledger.tasks.keys().chain(ledger.launched.iter()).collect();
            for task_id in known {
                let key = (framework.clone(), task_id.to_string());
                let on_master = master_tasks.get(&key).filter(|(state, _)| !terminal(state));
                let on_agents: Vec<(&String, &String)> = agent_tasks
                    .iter()
                    .filter_map(|(agent, tasks)| Some((agent, tasks.get(&key)?)))
                    .filter(|(_, state)| !terminal(state))
                    .collect();
                let state = ledger.tasks.get(task_id).and_then(|record| record.state);
                match state {
                    _ if removed => {
                        if let Some((state, _)) = on_master {
                            problems.push(format!(
                                "{framework}/{task_id}: the framework is gone, the master has \
                                 it {state}"
                            ));
                        }
                        for (agent, state) in on_agents {
                            problems.push(format!(
                                "{framework}/{task_id}: the framework is gone, agent {agent} \
                                 has it {state}"
                            ));
                        }
                    }
                    None => problems.push(format!(
                        "{framework}/{task_id}: launched, and the framework never heard of it"
                    )),
                    // Whatever the framework last heard, a task that
                    // ended, or that the master said it does not know, is
                    // settled once nothing runs it any more.
                    Some(state) if state.is_terminal() || state == TaskState::Unknown => {
                        if let Some((master_state, _)) = on_master {
                            problems.push(format!(
                                "{framework}/{task_id}: {state} for the framework, \
                                 {master_state} for the master"
                            ));
                        }
                        for (agent, agent_state) in on_agents {
                            problems.push(format!(
                                "{framework}/{task_id}: {state} for the framework, \
                                 {agent_state} on agent {agent}"
                            ));
                        }
                    }
                    Some(state) => {
                        let state = state.to_string();
                        match on_master {
                            Some((master_state, agent)) if *master_state == state => {
                                let agent_state =
                                    agent_tasks.get(*agent).and_then(|tasks| tasks.get(&key));
                                if agent_state != Some(&state) {
                                    problems.push(format!(
                                        "{framework}/{task_id}: {state} for the framework and \
                                         the master, {agent_state:?} on agent {agent}"
                                    ));
                                }
                            }
                            other => problems.push(format!(
                                "{framework}/{task_id}: {state} for the framework, {:?} for \
                                 the master",
                                other.map(|(state, _)| state)
                            )),
                        }
                    }
                }
            }
        }
        for ((framework, task), (state, _)) in &master_tasks {
            if terminal(state) {
                continue;
            }
            let known = shared.ledger.frameworks.iter().any(|(id, ledger)| {
                id.as_str() == framework && ledger.tasks.keys().any(|t| t.as_str() == task)
            });
            if !known {
                problems.push(format!(
                    "{framework}/{task}: {state} for the master, unknown to its framework"
                ));
            }
        }
        problems
    }

    /// Ends the run: the report, or every violation found with the seed
    /// and the tail of the trace.
    pub fn finish(self) -> Result<Report, Failure> {
        let shared = lock(&self.shared);
        let ledger = &shared.ledger;
        if !ledger.violations.is_empty() {
            return Err(Failure {
                seed: self.seed,
                violations: ledger.violations.clone(),
                trace: shared.trace.iter().map(|line| shared.show(line)).collect(),
            });
        }
        let mut ended = BTreeMap::new();
        let mut tasks = 0;
        let mut updates = 0;
        for framework in ledger.frameworks.values() {
            tasks += framework.launched.len();
            for record in framework.tasks.values() {
                updates += record.deliveries;
                if let Some(state) = record.state.filter(|state| state.is_terminal()) {
                    *ended.entry(state.to_string()).or_default() += 1;
                }
            }
        }
        Ok(Report {
            seed: self.seed,
            trace_hash: match &self.fabric {
                Fabric::Frames(network) => network.trace_hash() ^ shared.events,
                Fabric::Quic { .. } => shared.events,
            },
            simulated: self.elapsed(),
            tasks,
            ended,
            updates,
            trace: if std::env::var_os("SIM_TRACE").is_some() {
                shared.trace.iter().map(|line| shared.show(line)).collect()
            } else {
                Vec::new()
            },
        })
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for node in self
            .agents
            .iter_mut()
            .map(|agent| &mut agent.slot)
            .chain(
                self.frameworks
                    .iter_mut()
                    .map(|framework| &mut framework.slot),
            )
            .chain(self.masters.iter_mut().map(|master| &mut master.slot))
            .filter_map(|slot| slot.node.take())
        {
            node.shutdown();
        }
        for intruder in self.intruders.drain(..) {
            intruder.node().shutdown();
        }
    }
}
