//! The master process: the shell around the books.
//!
//! It turns what the runtime delivers (messages, link exits, its own
//! periodic tick) into [`Input`]s for the [`Books`] and carries out the
//! [`Command`]s they return: sends, links and log lines. A durable master
//! also keeps the books' registry in its work directory (see
//! [`crate::registry`]): it recovers it on start, takes the next epoch and
//! writes it back before serving, then writes it again shortly after
//! every change. Writes are group commits: changes within
//! [`REGISTRY_FLUSH_DELAY`] are written together, and until they are on
//! disk every message the master sends waits (in order), so nobody hears
//! of an admission or a subscription the registry could still lose.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_protocol::{ToMaster, ToScheduler};
use strata_runtime::{Process, ProcessContext, Upid};
use tracing::{debug, error, info, warn};

use crate::books::{Books, Command, Config, Event, Input};
use crate::zk_registry::{ZkRegistry, ZkRegistryError};

mod ha;
use ha::{Ha, Stage};
pub use ha::{HaConfig, LeaderView, redirecting, restart_policy};

/// The master's process id.
pub const MASTER_ID: &str = "master";

/// Longest a registry change waits to be written.
pub const REGISTRY_FLUSH_DELAY: Duration = Duration::from_millis(5);

/// How long the master keeps retrying a registry write that fails before
/// it gives up (Mesos's `--registry_store_timeout` is 20 s): meanwhile
/// whatever depended on the change waits; then the master process fails,
/// and a daemon exits rather than serve from books it cannot keep.
pub const REGISTRY_STORE_TIMEOUT: Duration = Duration::from_secs(20);

/// First wait before a failed registry write is tried again; it doubles
/// up to a second.
const REGISTRY_RETRY: Duration = Duration::from_millis(50);

/// The master: books, allocator, and the loop that drives them.
#[derive(Debug)]
pub struct Master {
    books: Books,
    registry: Option<RegistryFile>,
    /// Where snapshots for the HTTP endpoints go, and what they need.
    publisher: Option<crate::state::Publisher>,
    /// The views of the last snapshot, which the next is made from.
    views: crate::state::Views,
    /// Bringing the views up to date: whether the next slice is on its
    /// way, how many it may redo, how many were left after the last, and
    /// what waits for them.
    views_next: bool,
    views_budget: usize,
    views_left: usize,
    /// The views' slices since the last snapshot, which its share of
    /// time counts.
    views_took: Duration,
    views_waiting: ViewsWaiting,
    start_time_ms: u64,
    pid: String,
    /// When the next periodic snapshot is due, and the earliest a fresh
    /// one asked for by a reader is taken (see [`SNAPSHOT_SHARE`]).
    next_snapshot: Instant,
    next_fresh: Instant,
    /// Whether the books took an input since the last snapshot.
    changed: bool,
    /// The longest the loop spent on one turn since the last snapshot (an
    /// input to the books with its commands carried out, a slice of the
    /// views' update), and how long that snapshot took.
    stall: Duration,
    snapshot_took: Duration,
    /// How long the last periodic cycle (pings, expiries, the allocation
    /// of every agent, in slices) took, and the slices so far of the one
    /// that goes on.
    cycle_took: Duration,
    cycle_sum: Duration,
    /// Whether an `Input::Continue` (the next slice of what is left:
    /// pings, a pass of allocation, frameworks being removed) is on its
    /// way.
    continue_next: bool,
    /// Held while this master publishes snapshots.
    listening: Option<crate::state::Listening>,
    /// Told of every broken invariant, when checking (simulation).
    checker: Option<Checker>,
    /// Calls from the v1 scheduler API, when the master serves it.
    api: Option<crate::api::ApiReceiver>,
    /// The subscriptions of HTTP frameworks.
    http: crate::api::HttpFrameworks,
    /// The operator API's event streams.
    operators: crate::operator::OperatorStreams,
    /// Whether a timer will open the operator streams that wait.
    operators_timer: bool,
    /// Process ids handed to operator API calls that change the cluster.
    next_operator: u64,
    /// Leadership by ZooKeeper, for a master among several.
    ha: Option<Ha>,
    /// The node this master runs on, for its message counters.
    node: Option<strata_runtime::Node>,
}

/// The answer to an operator call that changed the cluster.
type ChangeAnswer = std::sync::mpsc::SyncSender<crate::operator::ChangeResult>;

/// Where a checking master reports a broken invariant of its books.
pub type InvariantSink = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// Snapshots for the HTTP endpoints take at most this share of the
/// master's time: after one that took `t` (its views' slices included),
/// the next waits at least
/// `t / SNAPSHOT_SHARE` (and a periodic one at least an allocation
/// interval; fresh ones readers ask for are taken as soon as that share
/// allows, one for all readers that asked meanwhile).
pub const SNAPSHOT_SHARE: f64 = 0.1;

/// A turn of the master (an input with its commands carried out, a
/// slice of the views' update, a flush of the registry, a snapshot) this
/// long is logged at debug level: the master's stall target.
const LONG_INPUT: Duration = Duration::from_millis(10);

/// Views the master redoes in one turn when it brings them up to date
/// for a snapshot (about 5 µs each); when a turn leaves no fewer to redo
/// than the one before, the next may redo twice as many, up to
/// [`VIEWS_SLICE_MOST`], so that a master whose inputs change more than
/// a slice redoes gets there, once their burst ends if not before.
pub const VIEWS_SLICE: usize = 500;

/// The most views one turn redoes (about 5 ms): a burst that changes more
/// than slices redo is caught up with once it ends, and the stall target
/// (10 ms) holds meanwhile.
pub const VIEWS_SLICE_MOST: usize = 2 * VIEWS_SLICE;

/// Logs at debug level a `turn` of the master that took `took`, if that
/// is long, with its thread's own time since `cpu_started` (known when
/// debug logging is on).
fn log_long_turn(turn: &'static str, took: Duration, cpu_started: Option<Duration>) {
    if took >= LONG_INPUT
        && let Some(cpu_started) = cpu_started
    {
        let cpu = thread_cpu_time().saturating_sub(cpu_started);
        debug!(
            turn,
            took_ms = took.as_secs_f64() * 1e3,
            cpu_ms = cpu.as_secs_f64() * 1e3,
            "a turn held the master up (cpu_ms its thread ran, the rest it waited for a core)"
        );
    }
}

/// Views the master redoes after each input while it brings them up to
/// date for a snapshot, beside its slices: an input changes a few (a
/// status update: a task, its agent, an offer), so the inputs between two
/// slices do not outrun them.
const VIEWS_PER_INPUT: usize = 16;

/// One input's turn, from its start until its commands are carried out.
struct Turn {
    started: Instant,
    /// The thread's own time at its start, when debug logging is on.
    cpu_started: Option<Duration>,
    kind: &'static str,
    in_books: Duration,
    in_views: Duration,
    commands: usize,
}

/// What waits for the views to be up to date.
#[derive(Debug, Default)]
struct ViewsWaiting {
    /// The periodic snapshot.
    periodic: bool,
    /// Readers that asked for a fresh snapshot.
    readers: bool,
    /// Operator streams waiting for their first state.
    streams: bool,
}

/// Room (in inputs' batches) the queue of commands held for the registry
/// keeps when it empties.
const HELD_ROOM_KEPT: usize = 1024;

/// Most held commands one turn carries out once the registry holds what
/// they depend on (a few milliseconds; a batch of offers counts as many
/// as it has offers, see [`held_cost`]); the rest follow in turns of
/// their own, in order, with inputs handled between them.
const HELD_SLICE: usize = 500;

/// What carrying out a held command costs against [`HELD_SLICE`]: a
/// batch of offers (up to an allocation slice's) its offers, any other
/// one.
fn held_cost(command: &Command) -> usize {
    match command {
        Command::ToScheduler(_, ToScheduler::Offers(offers)) => offers.len().max(1),
        _ => 1,
    }
}

/// What a write of the registry to ZooKeeper came to.
enum ZkWrite {
    /// Planned and committed, or not.
    Committed(
        ZkRegistry,
        crate::zk_registry::Plan,
        Result<(), ZkRegistryError>,
    ),
    /// The plan failed (a bucket too large, say).
    NotPlanned(ZkRegistry, ZkRegistryError),
    /// The thread planning it panicked, and the registry's state with it.
    Lost,
}

impl ZkWrite {
    /// Works out the plan of writing `registry` over what `zk` wrote last
    /// (every agent's JSON compared with what was written: megabytes at
    /// 50,000 agents) on tokio's blocking pool, or at once in a
    /// simulation, so that a run stays the same for its seed; then
    /// commits it.
    async fn plan_and_commit(
        zk: ZkRegistry,
        registry: crate::registry::Registry,
        session: std::sync::Arc<dyn strata_zk::Session>,
        simulated: bool,
    ) -> ZkWrite {
        let plan = move || {
            let mut zk = zk;
            let plan = zk.plan(&registry);
            (zk, plan)
        };
        let planned = if simulated {
            Ok(plan())
        } else {
            tokio::task::spawn_blocking(plan).await
        };
        match planned {
            Err(_) => ZkWrite::Lost,
            Ok((zk, Err(cause))) => ZkWrite::NotPlanned(zk, cause),
            Ok((zk, Ok(plan))) => {
                let result = ZkRegistry::commit(session, &plan).await;
                ZkWrite::Committed(zk, plan, result)
            }
        }
    }
}

/// Where a durable master keeps its registry, and what it wrote last.
#[derive(Debug)]
struct RegistryFile {
    store: Store,
    written: u64,
    flush_pending: bool,
    /// Messages held until the registry holds what they depend on: the
    /// count of registry changes when they were decided, in order.
    /// Each input's commands stay together: at 50,000 agents a write
    /// holds thousands, and a queue of them one by one was copied over
    /// whenever it grew (tens of milliseconds).
    held: std::collections::VecDeque<(u64, Vec<Command>)>,
    /// Operator calls answered once the pending write is done.
    answers: Vec<(u64, ChangeAnswer, crate::operator::ChangeResult)>,
    /// Since when writes have been failing, and the next retry's wait.
    failing: Option<(Instant, Duration)>,
}

impl RegistryFile {
    fn new(store: Store) -> RegistryFile {
        RegistryFile {
            store,
            written: 0,
            flush_pending: false,
            held: Default::default(),
            answers: Vec::new(),
            failing: None,
        }
    }

    /// The registry holds `changes` now (after failing, said once).
    fn written_up_to(&mut self, changes: u64) {
        if self.failing.take().is_some() {
            info!("the registry is written again; sending what waited for it");
        }
        self.written = changes;
    }
}

/// Where the registry is kept.
#[derive(Debug)]
enum Store {
    /// A file in the work directory, written on a thread of tokio's
    /// blocking pool (`writing` the number of the write under way, if
    /// one is): at 50,000 agents the registry is megabytes of JSON, tens
    /// of milliseconds the master's thread would otherwise spend on it.
    /// On a simulated disk it is written at once, so that a simulation
    /// stays the same for a seed.
    File {
        disk: strata_runtime::durable::Disk,
        path: PathBuf,
        writing: Option<u64>,
        writes: u64,
    },
    /// ZooKeeper, once elected (`None` before, and while a write is
    /// under way).
    Zk(Option<ZkRegistry>),
}

/// How soon a master that may not act (its lease ran out) looks again.
const LEASE_RETRY: Duration = Duration::from_millis(50);

/// Where violations go, how often the books are checked (every `every`
/// inputs) and how many inputs since the last check.
struct Checker(InvariantSink, u64, u64);

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checker")
    }
}

impl Master {
    /// A master whose ids start with `id_prefix` (the shell passes the
    /// node's incarnation, so ids differ across restarts), and that keeps
    /// nothing across restarts (tests, simulation).
    pub fn new(config: Config, id_prefix: &str) -> Master {
        Master {
            books: Books::new(config, id_prefix),
            registry: None,
            publisher: None,
            views: Default::default(),
            views_next: false,
            views_budget: VIEWS_SLICE,
            views_left: usize::MAX,
            views_took: Duration::ZERO,
            views_waiting: ViewsWaiting::default(),
            start_time_ms: 0,
            pid: String::new(),
            next_snapshot: now(),
            next_fresh: now(),
            changed: true,
            stall: Duration::ZERO,
            snapshot_took: Duration::ZERO,
            cycle_took: Duration::ZERO,
            cycle_sum: Duration::ZERO,
            continue_next: false,
            listening: None,
            checker: None,
            api: None,
            http: crate::api::HttpFrameworks::new(id_prefix),
            operators: Default::default(),
            operators_timer: false,
            next_operator: 0,
            ha: None,
            node: None,
        }
    }

    /// A master among several that lead in turn by ZooKeeper (see
    /// [`HaConfig`]), with its registry there.
    pub fn highly_available(config: Config, id_prefix: &str, ha: HaConfig) -> Master {
        let mut master = Master::new(config, id_prefix);
        master.registry = Some(RegistryFile::new(Store::Zk(None)));
        master.ha = Some(Ha::new(ha));
        master
    }

    /// Whether this master waits to lead (a standby, or elected and
    /// recovering); a master without ZooKeeper always leads.
    fn standby(&self) -> bool {
        self.ha
            .as_ref()
            .is_some_and(|ha| ha.stage != Stage::Leading)
    }

    /// Whether the master may carry out what it decided now: always
    /// without ZooKeeper, under its lease with it.
    fn may_act(&self) -> bool {
        self.ha.as_ref().is_none_or(|ha| ha.leased(now()))
    }

    /// Serves the v1 scheduler API's calls that arrive on `api` (see
    /// [`crate::api`]).
    pub fn serving_api(mut self, api: crate::api::ApiReceiver) -> Master {
        self.api = Some(api);
        self
    }

    /// Checks the books' invariants ([`Books::check_invariants`]) after
    /// every input and tells `sink` of each violation: for simulations
    /// and tests, since it costs a pass over the books per input.
    pub fn checking(self, sink: InvariantSink) -> Master {
        self.checking_every(sink, 1)
    }

    /// [`Master::checking`] after every `every`th input (at least every
    /// one): for clusters so large that a pass per input costs too much.
    pub fn checking_every(mut self, sink: InvariantSink, every: u64) -> Master {
        self.checker = Some(Checker(sink, every.max(1), 0));
        self
    }

    /// Publishes a snapshot of the books on every allocation tick, for
    /// the HTTP endpoints ([`crate::state::routes`]).
    pub fn publishing(mut self, publisher: crate::state::Publisher) -> Master {
        self.publisher = Some(publisher);
        self
    }

    /// Takes and publishes a snapshot when one is due, once the views
    /// are up to date.
    fn publish(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        if self.publisher.is_none() || now() < self.next_snapshot {
            return;
        }
        if !self.views_up_to_date(ctx) {
            self.views_waiting.periodic = true;
            return;
        }
        let (started, took) = self.snapshot();
        let wait = took
            .div_f64(SNAPSHOT_SHARE)
            .max(self.books.config().allocation_interval);
        self.next_snapshot = started + wait;
    }

    /// Whether the views are up to date with the books after one more
    /// slice of them; if not, the slices go on in turns of their own
    /// (inputs are handled between them) and what waits for them
    /// ([`Master::views_waiting`]) is done once they are. The books'
    /// changes wait for a snapshot rather than being redone as they come:
    /// a task's several changes in between are redone once.
    fn views_up_to_date(&mut self, ctx: &mut ProcessContext<'_, Self>) -> bool {
        if self.views_next {
            return false;
        }
        let started = now();
        let cpu_started = tracing::enabled!(tracing::Level::DEBUG).then(thread_cpu_time);
        let done = self.views.update_some(&mut self.books, self.views_budget);
        let took = now().saturating_duration_since(started);
        self.stall = self.stall.max(took);
        self.views_took += took;
        log_long_turn("a slice of the views' update", took, cpu_started);
        if done {
            self.views_budget = VIEWS_SLICE;
            self.views_left = usize::MAX;
            return true;
        }
        let left = self.views.left_to_redo();
        if left >= self.views_left {
            self.views_budget = (self.views_budget * 2).min(VIEWS_SLICE_MOST);
        }
        self.views_left = left;
        self.views_next = true;
        ctx.run_later(Duration::ZERO, |master, ctx| {
            master.views_next = false;
            if !master.views_up_to_date(ctx) {
                return;
            }
            let waiting = std::mem::take(&mut master.views_waiting);
            if waiting.periodic {
                master.publish(ctx);
            }
            if waiting.readers {
                master.answer_readers(ctx);
            }
            if waiting.streams {
                master.open_operator_streams(ctx);
            }
        });
        false
    }

    /// Takes and publishes a snapshot, answering the readers that asked
    /// for one before; when and how long it took. The views are brought
    /// up to date first, all at once: callers see to it that they are
    /// ([`Master::views_up_to_date`]).
    fn snapshot(&mut self) -> (Instant, Duration) {
        let started = now();
        let cpu_started = tracing::enabled!(tracing::Level::DEBUG).then(thread_cpu_time);
        let Some(publisher) = &self.publisher else {
            return (started, Duration::ZERO);
        };
        let covers = publisher.asked();
        let now_ms = self.books.wall_clock_ms(started);
        let mut state = self
            .views
            .refresh(&mut self.books, &self.pid, self.start_time_ms, now_ms);
        state.longest_stall_ms = self.stall.max(self.snapshot_took).as_secs_f64() * 1e3;
        state.snapshot_ms = self.snapshot_took.as_secs_f64() * 1e3;
        state.allocation_cycle_ms = self.cycle_took.as_secs_f64() * 1e3;
        if let Some(node) = &self.node {
            state.messages = node.metrics();
        }
        publisher.publish(std::sync::Arc::new(state), covers);
        self.changed = false;
        let took = now().saturating_duration_since(started);
        log_long_turn("a snapshot", took, cpu_started);
        self.stall = Duration::ZERO;
        self.snapshot_took = took;
        // Its share of time counts the views' slices that led to it.
        let took = took + std::mem::take(&mut self.views_took);
        self.next_fresh = started + took.div_f64(SNAPSHOT_SHARE);
        (started, took)
    }

    /// Answers readers waiting for a fresh snapshot: a new one if the
    /// books changed since the last, else the last confirmed current.
    fn answer_readers(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        if !self.changed {
            publisher.confirm(publisher.asked());
        } else if self.views_up_to_date(ctx) {
            self.snapshot();
        } else {
            // Answered once the views are up to date.
            self.views_waiting.readers = true;
            return;
        }
        self.await_readers(ctx);
    }

    /// Waits (without holding anything up) for a reader to ask for a
    /// fresh snapshot, and for the snapshots' share of time to allow one.
    fn await_readers(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let requested = publisher.requested();
        let not_before = tokio::time::Instant::from_std(self.next_fresh);
        ctx.spawn_future(
            async move {
                requested.await;
                tokio::time::sleep_until(not_before).await;
            },
            |master, ctx, ()| master.answer_readers(ctx),
        );
    }

    /// A master that keeps its registry in `work_dir` and recovers it
    /// when started again.
    pub fn durable(config: Config, id_prefix: &str, work_dir: &Path) -> Master {
        let mut master = Master::new(config, id_prefix);
        master.registry = Some(RegistryFile::new(Store::File {
            disk: Default::default(),
            path: crate::registry::path(work_dir),
            writing: None,
            writes: 0,
        }));
        master
    }

    /// Keeps the registry on `disk` instead of the real one (simulations).
    pub fn on_disk(mut self, disk: strata_runtime::durable::Disk) -> Master {
        if let Some(RegistryFile {
            store: Store::File { disk: kept, .. },
            ..
        }) = &mut self.registry
        {
            *kept = disk;
        }
        self
    }

    /// Recovers the registry and writes it back under the next epoch.
    fn recover(&mut self) -> Result<(), crate::registry::RegistryError> {
        let Some(RegistryFile {
            store: Store::File { disk, path, .. },
            ..
        }) = &self.registry
        else {
            return Ok(());
        };
        let previous = crate::registry::load(disk, path)?;
        let (disk, path) = (disk.clone(), path.clone());
        self.take_back(previous);
        crate::registry::save(&disk, disk.ticket(&path), &self.books.registry())?;
        if let Some(file) = &mut self.registry {
            file.written = self.books.registry_changes();
        }
        Ok(())
    }

    /// Takes back the registry an earlier master left (if any) under the
    /// next epoch: its agents may re-register, its frameworks subscribe
    /// again.
    fn take_back(&mut self, previous: Option<crate::registry::Registry>) {
        let epoch = previous.as_ref().map_or(0, |registry| registry.epoch) + 1;
        if let Some(registry) = &previous {
            info!(
                epoch,
                agents = registry.agents.len(),
                frameworks = registry.frameworks.len(),
                "recovered the registry; waiting for agents to re-register"
            );
        }
        self.books.recover(
            now(),
            previous.unwrap_or_else(crate::registry::Registry::empty),
            epoch,
        );
    }

    /// Writes the registry if it changed since it was last written (in
    /// the background with ZooKeeper), then sends what waited for what is
    /// written now (once the master may act), in order.
    fn flush_registry(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        // A turn of its own: writing the registry to its file and carrying
        // out what waited for it.
        let started = now();
        let cpu_started = tracing::enabled!(tracing::Level::DEBUG).then(thread_cpu_time);
        self.write_registry_and_carry_out(ctx);
        let took = now().saturating_duration_since(started);
        self.stall = self.stall.max(took);
        log_long_turn("a flush of the registry", took, cpu_started);
    }

    fn write_registry_and_carry_out(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(file) = &mut self.registry else {
            return;
        };
        file.flush_pending = false;
        let changes = self.books.registry_changes();
        if changes != file.written {
            match &mut file.store {
                Store::File {
                    writing: Some(_), ..
                } => {
                    // Its end flushes again.
                    file.flush_pending = true;
                }
                Store::File { disk, path, .. } if disk.is_simulated() => {
                    let ticket = disk.ticket(path);
                    match crate::registry::save(disk, ticket, &self.books.registry()) {
                        Ok(()) => file.written_up_to(changes),
                        Err(cause) => return self.registry_failed(ctx, cause.to_string()),
                    }
                }
                Store::File {
                    disk,
                    path,
                    writing,
                    writes,
                } => {
                    *writes += 1;
                    *writing = Some(*writes);
                    let (disk, path, write) = (disk.clone(), path.clone(), *writes);
                    self.write_file_in_background(ctx, disk, path, changes, write);
                }
                Store::Zk(slot) => match slot.take() {
                    // A write is under way; its end flushes again.
                    None => file.flush_pending = true,
                    Some(zk) => self.write_to_zk(ctx, zk, changes),
                },
            }
        }
        if !self.may_act() {
            return self.blocked(ctx);
        }
        if let Some(ha) = &mut self.ha
            && ha.blocked_since.take().is_some()
        {
            info!("the ZooKeeper session is confirmed again; acting as the leader");
            ha::announce(&ha.config.view, LeaderView::Leading);
        }
        let Some(file) = &mut self.registry else {
            return;
        };
        // What depends only on written changes goes; the rest waits for
        // the write under way (changes keep coming during a failover:
        // waiting for all of them would send nothing).
        let written = file.written;
        let mut budget = HELD_SLICE;
        let mut held: Vec<Command> = Vec::new();
        while let Some((needs, batch)) = file.held.front_mut() {
            if *needs > written || budget == 0 {
                break;
            }
            let mut count = 0;
            for command in batch.iter() {
                let cost = held_cost(command);
                // The first always goes, whatever it costs.
                if cost > budget && !(held.is_empty() && count == 0) {
                    break;
                }
                budget = budget.saturating_sub(cost);
                count += 1;
            }
            if count < batch.len() {
                held.extend(batch.drain(..count));
                break;
            }
            if let Some((_, batch)) = file.held.pop_front() {
                held.extend(batch);
            }
        }
        // A wave of registrations holds tens of thousands of commands for
        // a moment; what they grew the queue to is given back.
        if file.held.capacity() > HELD_ROOM_KEPT.max(4 * file.held.len()) {
            file.held.shrink_to(HELD_ROOM_KEPT.max(2 * file.held.len()));
        }
        if file
            .held
            .front()
            .is_some_and(|(needs, _)| *needs <= written)
        {
            // More is ready: it goes in turns of its own, and what is
            // decided meanwhile is held behind it.
            file.flush_pending = true;
            ctx.run_later(Duration::ZERO, |master, ctx| master.flush_registry(ctx));
            self.carry_out_all(ctx, held);
            return;
        }
        let (answers, waiting) = std::mem::take(&mut file.answers)
            .into_iter()
            .partition::<Vec<_>, _>(|(needs, _, _)| *needs <= written);
        file.answers = waiting;
        self.carry_out_all(ctx, held);
        for (_, answer, result) in answers {
            let _ = answer.try_send(result);
        }
        self.open_operator_streams(ctx);
    }

    /// Writes the registry to its file on a thread of tokio's blocking
    /// pool; when done, flushes again (sending what waited, or writing
    /// what changed meanwhile).
    fn write_file_in_background(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        disk: strata_runtime::durable::Disk,
        path: PathBuf,
        changes: u64,
        write: u64,
    ) {
        let registry = self.books.registry();
        // Its place among writes of the file, taken now: a write of this
        // master's that ends after its successor's (once it gave up) is
        // refused.
        let ticket = disk.ticket(&path);
        // A write that never ends (a disk that hangs) holds back every
        // message: as for one that keeps failing, the master gives up.
        ctx.run_later(REGISTRY_STORE_TIMEOUT, move |master, ctx| {
            if let Some(RegistryFile {
                store: Store::File { writing, .. },
                ..
            }) = &master.registry
                && *writing == Some(write)
            {
                error!("the registry's write did not end in {REGISTRY_STORE_TIMEOUT:?}; the master gives up");
                ctx.fail(format!(
                    "the registry's write did not end in {REGISTRY_STORE_TIMEOUT:?}"
                ));
            }
        });
        ctx.spawn_future(
            async move {
                tokio::task::spawn_blocking(move || {
                    crate::registry::save(&disk, ticket, &registry).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|_| Err("the thread writing the registry failed".to_owned()))
            },
            move |master, ctx, written| {
                let Some(file) = &mut master.registry else {
                    return;
                };
                if let Store::File { writing, .. } = &mut file.store {
                    *writing = None;
                }
                match written {
                    Ok(()) => {
                        file.written_up_to(changes);
                        master.flush_registry(ctx);
                    }
                    Err(cause) => master.registry_failed(ctx, cause),
                }
            },
        );
    }

    /// A registry write failed: nothing that depended on the change goes
    /// out before it is durable; it is tried again, and after
    /// [`REGISTRY_STORE_TIMEOUT`] the master gives up.
    fn registry_failed(&mut self, ctx: &mut ProcessContext<'_, Self>, cause: String) {
        let Some(file) = &mut self.registry else {
            return;
        };
        let now = now();
        let (since, wait) = file.failing.unwrap_or((now, REGISTRY_RETRY));
        if now.saturating_duration_since(since) >= REGISTRY_STORE_TIMEOUT {
            error!(%cause, "the registry could not be written for {REGISTRY_STORE_TIMEOUT:?}; the master gives up");
            ctx.fail(format!(
                "the registry could not be written for {REGISTRY_STORE_TIMEOUT:?}: {cause}"
            ));
            return;
        }
        if file.failing.is_none() {
            let held: usize = file.held.iter().map(|(_, batch)| batch.len()).sum();
            error!(%cause, held, "the registry was not written; holding back what depends on it and retrying");
        }
        file.failing = Some((since, (wait * 2).min(Duration::from_secs(1))));
        file.flush_pending = true;
        ctx.run_later(wait, |master, ctx| master.flush_registry(ctx));
    }

    /// Writes the registry's changes to ZooKeeper in the background (the
    /// plan, every agent's JSON compared with what was written, on
    /// tokio's blocking pool: megabytes at 50,000 agents); when done,
    /// flushes again (sending what waited, or writing what changed
    /// meanwhile).
    fn write_to_zk(&mut self, ctx: &mut ProcessContext<'_, Self>, zk: ZkRegistry, changes: u64) {
        let registry = self.books.registry();
        if let Some(file) = &mut self.registry {
            file.store = Store::Zk(None);
        }
        let Some(session) = self.ha.as_ref().and_then(|ha| ha.session.clone()) else {
            return ctx.fail("no ZooKeeper session to write the registry in");
        };
        let simulated = self.ha.as_ref().is_some_and(|ha| ha.config.simulated);
        ctx.spawn_future(
            ZkWrite::plan_and_commit(zk, registry, session, simulated),
            move |master, ctx, written| {
                let (zk, plan, result) = match written {
                    ZkWrite::Committed(zk, plan, result) => (zk, plan, result),
                    ZkWrite::NotPlanned(zk, cause) => {
                        master.put_back(zk);
                        return master.registry_failed(ctx, cause.to_string());
                    }
                    ZkWrite::Lost => {
                        error!("the thread planning the registry's write failed");
                        return ctx.fail("the thread planning the registry's write failed");
                    }
                };
                master.zk_written(ctx, zk, plan, result, changes);
            },
        );
    }

    /// What a write of the registry to ZooKeeper came to.
    fn zk_written(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        mut zk: ZkRegistry,
        plan: crate::zk_registry::Plan,
        result: Result<(), ZkRegistryError>,
        changes: u64,
    ) {
        match result {
            Ok(()) => {
                zk.committed(plan);
                self.put_back(zk);
                if let Some(file) = &mut self.registry {
                    file.written_up_to(changes);
                }
                self.flush_registry(ctx);
            }
            Err(ZkRegistryError::Deposed) => {
                error!("another master wrote the registry: this one no longer leads");
                ctx.fail("another master wrote the registry: this one no longer leads");
            }
            Err(ZkRegistryError::ZooKeeper(strata_zk::ZkError::SessionExpired)) => {
                error!("the ZooKeeper session expired: this master no longer leads");
                ctx.fail("the ZooKeeper session expired while writing the registry");
            }
            Err(ZkRegistryError::ZooKeeper(strata_zk::ZkError::ConnectionLoss)) => {
                // Written or not, or in part: read back what is there
                // before writing again.
                warn!("the registry write's answer was lost; reading the registry back");
                self.resync_registry(ctx);
            }
            Err(cause) => {
                self.put_back(zk);
                self.registry_failed(ctx, cause.to_string());
            }
        }
    }

    /// Reads the registry back from ZooKeeper after a write whose outcome
    /// is not known, then writes what differs; it is this master's still
    /// if it holds this master's epoch. Tried again while ZooKeeper cannot
    /// be reached, up to [`REGISTRY_STORE_TIMEOUT`].
    fn resync_registry(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(ha) = &self.ha else {
            return;
        };
        let Some(session) = ha.session.clone() else {
            return ctx.fail("no ZooKeeper session to read the registry back in");
        };
        let base = ha.config.base.clone();
        ctx.spawn_future(
            async move { ZkRegistry::recover(session.as_ref(), &base).await },
            |master, ctx, read| match read {
                Ok((zk, Some(registry))) if registry.epoch == master.books.master_epoch() => {
                    // The changes the lost write carried are still not
                    // counted written: the next flush writes what the
                    // read-back lacks.
                    master.put_back(zk);
                    master.flush_registry(ctx);
                }
                Ok(_) => {
                    error!("another master wrote the registry: this one no longer leads");
                    ctx.fail("another master wrote the registry: this one no longer leads");
                }
                Err(cause) => {
                    let now = now();
                    let Some(file) = &mut master.registry else {
                        return;
                    };
                    let (since, wait) = file.failing.unwrap_or((now, REGISTRY_RETRY));
                    if now.saturating_duration_since(since) >= REGISTRY_STORE_TIMEOUT {
                        return ctx.fail(format!(
                            "the registry could not be read back for {REGISTRY_STORE_TIMEOUT:?}: {cause}"
                        ));
                    }
                    file.failing = Some((since, (wait * 2).min(Duration::from_secs(1))));
                    ctx.run_later(wait, |master, ctx| master.resync_registry(ctx));
                }
            },
        );
    }

    fn put_back(&mut self, zk: ZkRegistry) {
        if let Some(file) = &mut self.registry {
            file.store = Store::Zk(Some(zk));
        }
    }

    /// The master may not act now (its lease ran out): what it decided
    /// waits, and it looks again shortly; once it could not act for a
    /// session timeout, its session is surely over and it stops leading.
    fn blocked(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let now = now();
        let Some(ha) = &mut self.ha else {
            return;
        };
        let since = *ha.blocked_since.get_or_insert_with(|| {
            warn!("the ZooKeeper session is not confirmed; holding everything back");
            ha::announce(&ha.config.view, LeaderView::Unknown);
            now
        });
        let limit = ha
            .session
            .as_ref()
            .map_or(strata_zk::DEFAULT_SESSION_TIMEOUT, |session| {
                session.timeout()
            });
        if ha.stage == Stage::Leading && now.saturating_duration_since(since) >= limit {
            error!(
                ?limit,
                "this master could not confirm its ZooKeeper session; it stops leading"
            );
            return ctx.fail(format!(
                "could not confirm the ZooKeeper session for {limit:?}"
            ));
        }
        if let Some(file) = &mut self.registry
            && !file.flush_pending
        {
            file.flush_pending = true;
            ctx.run_later(LEASE_RETRY, |master, ctx| master.flush_registry(ctx));
        }
    }

    /// The books, for operators' views and tests.
    pub fn books(&self) -> &Books {
        &self.books
    }

    fn apply(&mut self, ctx: &mut ProcessContext<'_, Self>, input: Input) {
        let (commands, turn) = self.decide(input);
        self.execute(ctx, commands);
        self.end_turn(turn);
        self.continue_if_work_left(ctx);
    }

    /// Sends the master the next slice of what is left (pings, a
    /// framework's removal, a pass of allocation), after what waits to be
    /// handled now, unless one is on its way.
    fn continue_if_work_left(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        if self.books.work_left() && !self.continue_next {
            self.continue_next = true;
            ctx.run_later(Duration::ZERO, |master, ctx| {
                master.continue_next = false;
                if !master.standby() {
                    master.apply(ctx, Input::Continue);
                }
            });
        }
    }

    /// What the books make of `input`, and the turn it began.
    fn decide(&mut self, input: Input) -> (Vec<Command>, Turn) {
        let started = now();
        // The thread's own time, to tell a long input from a preempted
        // one in the debug log: a system call, made only when debug
        // logging is on.
        let cpu_started = tracing::enabled!(tracing::Level::DEBUG).then(thread_cpu_time);
        let cycle = matches!(input, Input::Tick | Input::Continue);
        let kind = match &input {
            Input::Received { message, .. } => strata_runtime::Message::kind(message),
            Input::Tick => "Tick",
            Input::Continue => "Continue",
            Input::Exited(_) => "Exited",
            Input::OffersNotSent { .. } => "OffersNotSent",
        };
        let commands = self.books.handle(started, input);
        let in_books = now().saturating_duration_since(started);
        if self.views_next {
            // Bringing the views up to date: a few after each input too.
            self.views.update_some(&mut self.books, VIEWS_PER_INPUT);
        }
        let took = now().saturating_duration_since(started);
        self.views_took += took.saturating_sub(in_books);
        if cycle {
            // A cycle's time is that of its slices together.
            self.cycle_sum += in_books;
            if !self.books.work_left() {
                self.cycle_took = std::mem::take(&mut self.cycle_sum);
            }
        }
        self.changed = true;
        let mut turn = Turn {
            started,
            cpu_started,
            kind,
            in_books,
            in_views: took.saturating_sub(in_books),
            commands: commands.len(),
        };
        if let Some(Checker(sink, every, since)) = &mut self.checker {
            *since += 1;
            if *since >= *every {
                *since = 0;
                // Tests' own work: not counted in the turn.
                let checking = now();
                if let Err(violation) = self.books.check_invariants() {
                    sink(violation);
                }
                turn.started += now().saturating_duration_since(checking);
            }
        }
        (commands, turn)
    }

    /// Ends the turn of an input once its commands are carried out: the
    /// stall it made runs from the input's start to its last message
    /// queued, as no other input is handled meanwhile.
    fn end_turn(&mut self, turn: Turn) {
        let took = now().saturating_duration_since(turn.started);
        self.stall = self.stall.max(took);
        if took >= LONG_INPUT
            && let Some(cpu_started) = turn.cpu_started
        {
            let cpu = thread_cpu_time().saturating_sub(cpu_started);
            debug!(
                input = turn.kind,
                took_ms = took.as_secs_f64() * 1e3,
                cpu_ms = cpu.as_secs_f64() * 1e3,
                books_ms = turn.in_books.as_secs_f64() * 1e3,
                views_ms = turn.in_views.as_secs_f64() * 1e3,
                commands = turn.commands,
                "one input held the master up (cpu_ms its thread ran, the rest it waited for a core; books_ms in the books, views_ms redoing views after it, the rest carrying out its commands)"
            );
        }
    }

    /// Carries out `commands`, or holds them until the registry holds
    /// what they depend on.
    fn execute(&mut self, ctx: &mut ProcessContext<'_, Self>, commands: Vec<Command>) {
        let changes = self.books.registry_changes();
        let acting = self.may_act();
        match &mut self.registry {
            Some(file) if !acting || file.flush_pending || file.written != changes => {
                if !commands.is_empty() {
                    file.held.push_back((changes, commands));
                }
                if !file.flush_pending {
                    file.flush_pending = true;
                    ctx.run_later(REGISTRY_FLUSH_DELAY, |master, ctx| {
                        master.flush_registry(ctx)
                    });
                }
            }
            _ => self.carry_out_all(ctx, commands),
        }
    }

    /// Answers an operator call once what it changed is carried out (and
    /// in the registry).
    fn answer_after(&mut self, answer: ChangeAnswer, result: crate::operator::ChangeResult) {
        let changes = self.books.registry_changes();
        match &mut self.registry {
            Some(file) if file.flush_pending => file.answers.push((changes, answer, result)),
            _ => drop(answer.try_send(result)),
        }
    }

    /// Opens the operator streams waiting for their first state: with a
    /// snapshot taken once what the books decided is carried out (so the
    /// events that follow start where it ends), one for all that wait,
    /// within the snapshots' share of the master's time.
    fn open_operator_streams(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        if !self.operators.waiting() || self.operators_timer {
            return;
        }
        if self
            .registry
            .as_ref()
            .is_some_and(|file| file.flush_pending || !file.held.is_empty())
        {
            // The flush opens them once it has carried out what it held
            // (a snapshot now would show changes whose events are still
            // held, and they would be told twice).
            return;
        }
        let wait = self.next_fresh.saturating_duration_since(now());
        if !wait.is_zero() {
            self.operators_timer = true;
            ctx.run_later(wait, |master, ctx| {
                master.operators_timer = false;
                master.open_operator_streams(ctx);
            });
            return;
        }
        let stale = self
            .publisher
            .as_ref()
            .is_some_and(|publisher| self.changed || publisher.latest().is_none());
        if stale {
            if !self.views_up_to_date(ctx) {
                self.views_waiting.streams = true;
                return;
            }
            self.snapshot();
        }
        let state = self
            .publisher
            .as_ref()
            .and_then(|publisher| publisher.latest());
        let state = state.unwrap_or_else(|| {
            let now_ms = self.books.wall_clock_ms(now());
            std::sync::Arc::new(self.views.refresh(
                &mut self.books,
                &self.pid,
                self.start_time_ms,
                now_ms,
            ))
        });
        self.operators.open_waiting(&state);
    }

    /// Takes an operator API call.
    fn operator_call(
        &mut self,
        ctx: &mut ProcessContext<'_, Self>,
        call: crate::operator::OperatorCall,
    ) {
        match call {
            crate::operator::OperatorCall::Subscribe { events, answer } => {
                if let Err(reason) = self.operators.admit(events, answer) {
                    debug!(%reason, "operator subscription refused");
                }
                self.open_operator_streams(ctx);
            }
            crate::operator::OperatorCall::Change {
                principal,
                message,
                answer,
            } => {
                let missing = match &message {
                    ToMaster::OperatorTeardown { framework_id }
                        if !self.books.frameworks().contains_key(framework_id) =>
                    {
                        Some(format!("there is no framework {framework_id}"))
                    }
                    ToMaster::OperatorMarkAgentGone { agent_id }
                        if self.books.is_gone(agent_id) =>
                    {
                        // Marked already (a retried call): done.
                        let _ = answer.try_send(Ok(()));
                        return;
                    }
                    ToMaster::OperatorMarkAgentGone { agent_id }
                        if !self.books.agents().contains_key(agent_id) =>
                    {
                        Some(format!("there is no agent {agent_id}"))
                    }
                    _ => None,
                };
                if let Some(reason) = missing {
                    let _ = answer.try_send(Err((404, reason)));
                    return;
                }
                self.next_operator += 1;
                let master = ctx.pid().clone();
                let Ok(from) = Upid::new(
                    &format!("{OPERATOR_PROCESS_PREFIX}{}", self.next_operator),
                    master.addr(),
                    master.incarnation(),
                ) else {
                    let _ = answer.try_send(Err((503, "no process id for the call".into())));
                    return;
                };
                let sender = std::sync::Arc::new(strata_runtime::tls::PeerIdentity {
                    role: Some(strata_runtime::tls::Role::Operator),
                    name: principal.unwrap_or_default(),
                    fingerprint: "http".to_owned(),
                });
                let (commands, turn) = self.decide(Input::Received {
                    from: from.clone(),
                    sender,
                    message,
                });
                let refusal = commands.iter().find_map(|command| match command {
                    Command::ToScheduler(to, ToScheduler::Error { message }) if *to == from => {
                        Some((403, message.clone()))
                    }
                    _ => None,
                });
                self.execute(ctx, commands);
                self.end_turn(turn);
                // A teardown goes on in slices.
                self.continue_if_work_left(ctx);
                self.answer_after(answer, refusal.map_or(Ok(()), Err));
            }
        }
    }

    /// Tells the operator streams what `command` says happened.
    fn tell_operators(&mut self, command: &Command) {
        use strata_api::operator::Event as Told;
        let Command::Log(event) = command else {
            return;
        };
        let told = match event {
            Event::AgentAdmitted { agent_id, .. } | Event::AgentReturned { agent_id } => {
                crate::state::agent_of(&self.books, agent_id).map(Told::AgentAdded)
            }
            Event::AgentUnreachable { agent_id, .. } | Event::AgentGone { agent_id, .. } => {
                Some(Told::AgentRemoved(agent_id.clone()))
            }
            Event::FrameworkRegistered { framework_id, .. } => {
                crate::state::framework_of(&self.books, framework_id).map(Told::FrameworkAdded)
            }
            Event::FrameworkResubscribed { framework_id }
            | Event::FrameworkUpdated { framework_id }
            | Event::FrameworkDisconnected { framework_id } => {
                crate::state::framework_of(&self.books, framework_id).map(Told::FrameworkUpdated)
            }
            Event::FrameworkRemoved { framework_id, .. } => {
                crate::state::framework_of(&self.books, framework_id).map(Told::FrameworkRemoved)
            }
            Event::TaskLaunched {
                framework_id,
                task_id,
                ..
            } => crate::state::task_of(&self.books, framework_id, task_id).map(Told::TaskAdded),
            Event::TaskUpdated {
                framework_id,
                status,
                user,
            } => Some(Told::TaskUpdated {
                framework_id: framework_id.clone(),
                status: status.clone(),
                user: user.clone(),
            }),
            Event::AgentRefused { .. }
            | Event::RequestRefused { .. }
            | Event::OperatorKill { .. } => None,
        };
        if let Some(told) = told {
            self.operators.send(&told);
        }
    }

    /// Carries out the books' commands: sends, links and logs; messages
    /// for HTTP frameworks go to their streams. A framework whose stream
    /// is gone is disconnected next, as if its link broke.
    fn carry_out_all(&mut self, ctx: &mut ProcessContext<'_, Self>, commands: Vec<Command>) {
        let master = ctx.pid().clone();
        for command in commands {
            if self.operators.any() {
                self.tell_operators(&command);
            }
            if let Command::Log(Event::FrameworkRemoved {
                framework_id,
                reason,
            }) = &command
            {
                self.http.close_framework(framework_id, reason);
            }
            match command {
                Command::ToScheduler(pid, message) if self.http.serves(&pid) => {
                    if !self.http.deliver(&master, &pid, &message) {
                        self.stream_gone(ctx, pid);
                    }
                }
                Command::Link(pid) if self.http.serves(&pid) => {}
                // A subscription that is gone, or an operator call
                // answered already: nothing to send to.
                Command::ToScheduler(pid, _) | Command::Link(pid)
                    if crate::api::HttpFrameworks::owns(&master, &pid)
                        || operator_call_of(&master, &pid) => {}
                Command::ToAgent(pid, message) => {
                    send(ctx, &pid, message);
                }
                Command::ToScheduler(pid, message) => {
                    let offered: Vec<strata_protocol::OfferId> = match &message {
                        ToScheduler::Offers(offers) => {
                            offers.iter().map(|offer| offer.id.clone()).collect()
                        }
                        _ => Vec::new(),
                    };
                    if !send(ctx, &pid, message) && !offered.is_empty() {
                        // Offers that never left come back, after what
                        // is being carried out.
                        ctx.run_later(Duration::ZERO, move |master, ctx| {
                            if !master.standby() {
                                let offers = offered;
                                master.apply(ctx, Input::OffersNotSent { to: pid, offers });
                            }
                        });
                    }
                }
                Command::Link(pid) => ctx.link(&pid),
                Command::Log(event) => log(&event),
            }
        }
    }

    /// Closes an HTTP framework's stream and, after what is being carried
    /// out, disconnects its framework.
    fn stream_gone(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        self.http.forget(&pid);
        ctx.run_later(Duration::ZERO, move |master, ctx| {
            master.apply(ctx, Input::Exited(pid))
        });
    }

    /// Takes the next call of the v1 scheduler API, then waits for more.
    fn take_api_calls(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(api) = self.api.clone() else {
            return;
        };
        ctx.spawn_future(async move { api.next().await }, |master, ctx, call| {
            let call = match call {
                None => return,
                Some(call) if master.standby() => {
                    call.refuse("this master does not lead now");
                    return master.take_api_calls(ctx);
                }
                Some(crate::api::ApiCall::Operator(call)) => {
                    master.operator_call(ctx, call);
                    return master.take_api_calls(ctx);
                }
                Some(call) => call,
            };
            let Some(stream_id) = fresh_stream_id() else {
                call.refuse("the master has no random source for a stream id");
                return master.take_api_calls(ctx);
            };
            match master.http.admit(&ctx.pid().clone(), stream_id, call) {
                crate::api::Admitted::Message {
                    from,
                    sender,
                    message,
                } => {
                    if matches!(message, ToMaster::Teardown { .. }) {
                        // Torn down by its own call: its stream ends, as in
                        // Mesos, without an error.
                        master.http.forget(&from);
                    }
                    master.apply(
                        ctx,
                        Input::Received {
                            from: from.clone(),
                            sender,
                            message,
                        },
                    );
                }
                crate::api::Admitted::Checked {
                    from,
                    sender,
                    message,
                    answer,
                } => {
                    let (mut commands, turn) = master.decide(Input::Received {
                        from: from.clone(),
                        sender,
                        message,
                    });
                    let refused = commands.iter().position(|command| {
                        matches!(command, Command::ToScheduler(to, ToScheduler::Error { .. }) if *to == from)
                    });
                    let result = match refused.map(|at| commands.remove(at)) {
                        Some(Command::ToScheduler(_, ToScheduler::Error { message })) => {
                            Err(message)
                        }
                        _ => Ok(()),
                    };
                    master.execute(ctx, commands);
                    master.end_turn(turn);
                    let _ = answer.try_send(result);
                    // A TEARDOWN goes on in slices.
                    master.continue_if_work_left(ctx);
                }
                crate::api::Admitted::Answered => {}
            }
            master.take_api_calls(ctx);
        });
    }
}

/// An unguessable stream id (128 bits from the system's random source):
/// it is what lets a call act for its framework.
fn fresh_stream_id() -> Option<String> {
    strata_runtime::random::unguessable_id()
}

/// The process ids of operator API calls start so, on the master's node.
const OPERATOR_PROCESS_PREFIX: &str = "operator-http-";

/// Whether `pid` is an operator API call's, on the master's node.
fn operator_call_of(master: &Upid, pid: &Upid) -> bool {
    pid.addr() == master.addr() && pid.id().starts_with(OPERATOR_PROCESS_PREFIX)
}

/// The time the calling thread has run.
fn thread_cpu_time() -> Duration {
    let spent = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(spent.tv_sec).unwrap_or(0),
        u32::try_from(spent.tv_nsec).unwrap_or(0),
    )
}

/// The runtime's clock (tokio's, so paused tests and simulation drive it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Sends `message` to `to`; whether it was sent (queued for its peer).
fn send<M: strata_runtime::Message>(
    ctx: &mut ProcessContext<'_, Master>,
    to: &Upid,
    message: M,
) -> bool {
    let kind = message.kind();
    match ctx.send(to, message) {
        Ok(()) => true,
        Err(error) => {
            // Delivery is at most once: the protocol recovers (agents
            // resend updates, schedulers reconcile, offers that were not
            // sent come back).
            debug!(to = %to, kind, cause = %error, "message not sent");
            false
        }
    }
}

fn log(event: &Event) {
    match event {
        Event::AgentAdmitted { agent_id, pid } => {
            info!(agent_id = %agent_id, pid = %pid, "agent admitted")
        }
        Event::AgentReturned { agent_id } => info!(agent_id = %agent_id, "agent re-registered"),
        Event::AgentUnreachable {
            agent_id,
            missed_pongs,
        } => {
            warn!(agent_id = %agent_id, missed_pongs, "agent unreachable")
        }
        Event::AgentRefused { pid, reason } => warn!(pid = %pid, reason = %reason, "agent refused"),
        Event::FrameworkRegistered { framework_id, name } => {
            info!(framework_id = %framework_id, name = %name, "framework registered")
        }
        Event::FrameworkDisconnected { framework_id } => {
            info!(framework_id = %framework_id, "framework disconnected; waiting for failover")
        }
        Event::FrameworkRemoved {
            framework_id,
            reason,
        } => {
            info!(framework_id = %framework_id, reason = %reason, "framework removed")
        }
        Event::TaskLaunched {
            framework_id,
            task_id,
            agent_id,
        } => {
            debug!(framework_id = %framework_id, task_id = %task_id, agent_id = %agent_id, "task launched")
        }
        Event::RequestRefused { from, reason } => {
            warn!(from = %from, reason = %reason, "request refused")
        }
        Event::OperatorKill {
            from,
            framework_id,
            task_id,
        } => {
            info!(from = %from, framework_id = %framework_id, task_id = %task_id, "operator kill")
        }
        Event::TaskUpdated {
            framework_id,
            status,
            ..
        } => {
            debug!(framework_id = %framework_id, task_id = %status.task_id, state = %status.state, "task updated")
        }
        Event::FrameworkResubscribed { framework_id } => {
            info!(framework_id = %framework_id, "framework subscribed again")
        }
        Event::FrameworkUpdated { framework_id } => {
            info!(framework_id = %framework_id, "framework updated its description")
        }
        Event::AgentGone { from, agent_id } => {
            warn!(from = %from, agent_id = %agent_id, "agent marked gone by an operator")
        }
    }
}

impl Process for Master {
    type Message = ToMaster;

    fn started(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        self.node = Some(ctx.node().clone());
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0);
        self.books.set_clock(now(), wall_ms);
        self.start_time_ms = wall_ms;
        self.pid = ctx.pid().to_string();
        if let Some(ha) = &mut self.ha {
            // A standby until elected; the registry is read then.
            let events = ha.start(ctx.pid());
            self.take_ha_events(ctx, events);
        } else if let Err(cause) = self.recover() {
            error!(%cause, "cannot recover the registry; stopping");
            ctx.stop();
            return;
        }
        let interval = self
            .books
            .config()
            .allocation_interval
            .max(Duration::from_millis(10));
        ctx.run_every(interval, |master, ctx| {
            if master.standby() {
                return;
            }
            if !master.may_act() {
                // Idle or not, a leader without its lease stops serving
                // and, past a session timeout, stops leading.
                master.blocked(ctx);
            }
            master.apply(ctx, Input::Tick);
            master.publish(ctx);
        });
        self.publish(ctx);
        if let Some(publisher) = &self.publisher {
            self.listening = Some(publisher.listen());
            self.await_readers(ctx);
        }
        if self.api.is_some() {
            self.take_api_calls(ctx);
            let heartbeat =
                Duration::from_secs_f64(strata_api::scheduler::HEARTBEAT_INTERVAL_SECONDS);
            ctx.run_every(heartbeat, |master, ctx| {
                for pid in master.http.heartbeat() {
                    master.stream_gone(ctx, pid);
                }
                master
                    .operators
                    .send(&strata_api::operator::Event::Heartbeat);
            });
        }
        info!(pid = %ctx.pid(), epoch = self.books.master_epoch(), "master started");
    }

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, message: ToMaster) {
        if self.standby() {
            return self.not_leading(ctx, from, message);
        }
        let sender = ctx.sender();
        self.apply(
            ctx,
            Input::Received {
                from,
                sender,
                message,
            },
        );
    }

    fn exited(&mut self, ctx: &mut ProcessContext<'_, Self>, pid: Upid) {
        if self.standby() {
            return;
        }
        self.apply(ctx, Input::Exited(pid));
    }
}
