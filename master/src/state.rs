//! What operators see of the master: `/state` and the metrics.
//!
//! The master process takes a [`State`] snapshot of its books on every
//! allocation tick and publishes it; the HTTP endpoints serve snapshots,
//! so a large `/state` is serialized outside the master's process and
//! never holds it up. A snapshot is made from [`Views`] brought up to
//! date, a slice a turn, with what changed in the books since the last,
//! and shares their lists: its cost is the changes since the last, not
//! the size of the cluster. `/state` asks for a fresh one ([`Snapshots::fresh`]):
//! the master takes it between two messages, one for every reader that
//! asked meanwhile, within its share of time ([`crate::process::SNAPSHOT_SHARE`]),
//! so an update a client saw is in the `/state` it reads next. [`routes`] answers `/health`, `/state`,
//! `/metrics` (Prometheus text, `strata_*`) and `/metrics/snapshot` (flat
//! JSON with Apache Mesos's metric names).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_api::views::{
    Agent, AgentStatus, CompletedKey, Framework, Listed, Offer, Task, TaskKey,
};
use strata_protocol::Task as ProtocolTask;
use strata_protocol::{
    AgentId, FrameworkId, OfferId, Ranges, Resource, Resources, TaskId, TaskKind, Value,
};
use strata_runtime::http::{Request, Response, SharedJson};
use tokio::sync::{Notify, watch};

use crate::authorization::Authorizer;
use crate::books::{AgentEntry, Books, Changes, FrameworkEntry};

/// The master's state at one moment: the typed view every reader shares.
pub type State = strata_api::views::MasterState;

/// Agent `id` as the views show it, with `offered` its outstanding
/// offers' resources. What `before` (its view before) shares with it is
/// shared, not copied.
fn agent_view(
    books: &Books,
    id: &AgentId,
    agent: &AgentEntry,
    offered: Resources,
    before: Option<&Agent>,
) -> Agent {
    let total = &agent.info.resources;
    let active = matches!(agent.status, crate::books::AgentStatus::Active);
    let used = match (active, books.free(id)) {
        (true, Some(free)) => total
            .checked_sub(&free)
            .and_then(|taken| taken.checked_sub(&offered))
            .unwrap_or_default(),
        _ => Resources::new(),
    };
    Agent {
        id: id.clone(),
        pid: match before {
            Some(before) if displays_as(&agent.pid, &before.pid) => before.pid.clone(),
            _ => agent.pid.to_string().into(),
        },
        hostname: match before {
            Some(before) if *before.hostname == *agent.info.hostname => before.hostname.clone(),
            _ => agent.info.hostname.as_str().into(),
        },
        status: if active {
            AgentStatus::Active
        } else {
            AgentStatus::Unreachable
        },
        attributes: match before {
            Some(before) if *before.attributes == agent.info.attributes => {
                before.attributes.clone()
            }
            _ => Arc::new(agent.info.attributes.clone()),
        },
        total: match before {
            Some(before) if *before.total == *total => before.total.clone(),
            _ => Arc::new(total.clone()),
        },
        used,
        offered,
        tasks: agent.tasks.len(),
    }
}

/// Whether `value` is written out as `text`, found without writing it.
fn displays_as(value: &impl std::fmt::Display, text: &str) -> bool {
    /// What is left of the text to match.
    struct Rest<'a>(&'a str);
    impl std::fmt::Write for Rest<'_> {
        fn write_str(&mut self, piece: &str) -> std::fmt::Result {
            self.0 = self.0.strip_prefix(piece).ok_or(std::fmt::Error)?;
            Ok(())
        }
    }
    let mut rest = Rest(text);
    std::fmt::write(&mut rest, format_args!("{value}")).is_ok() && rest.0.is_empty()
}

/// Agent `id`'s view, if the books know it.
pub fn agent_of(books: &Books, id: &AgentId) -> Option<Agent> {
    agent_after(books, id, None)
}

/// Agent `id`'s view, if the books know it, sharing what it can with
/// `before`.
fn agent_after(books: &Books, id: &AgentId, before: Option<&Agent>) -> Option<Agent> {
    let agent = books.agents().get(id)?;
    let mut offered = Resources::new();
    for offer_id in &agent.offers {
        if let Some(entry) = books.offers().get(offer_id) {
            offered.add(&entry.offer.resources);
        }
    }
    Some(agent_view(books, id, agent, offered, before))
}

/// An offer as the views show it.
fn offer_view(offer: &strata_protocol::Offer) -> Offer {
    Offer {
        id: offer.id.clone(),
        framework_id: offer.framework_id.clone(),
        agent_id: offer.agent_id.clone(),
        resources: offer.resources.clone(),
    }
}

/// A task of framework `framework_id` as the views show it.
fn task_view(framework_id: &FrameworkId, framework: &FrameworkEntry, task: &ProtocolTask) -> Task {
    Task {
        id: task.info.task_id.clone(),
        name: task.info.name.clone(),
        framework_id: framework_id.clone(),
        user: crate::books::task_user(&task.info, &framework.info.user),
        agent_id: task.info.agent_id.clone(),
        executor_id: match &task.info.kind {
            TaskKind::Command(_) => None,
            TaskKind::Executor(executor) => Some(executor.executor_id.clone()),
        },
        state: task.state,
        resources: task.info.resources.clone(),
        message: task
            .status
            .as_ref()
            .map(|status| status.message.clone())
            .unwrap_or_default(),
        sandbox: task
            .status
            .as_ref()
            .and_then(|status| status.sandbox.clone()),
        image: task
            .info
            .kind
            .container()
            .and_then(|container| container.image.clone()),
        history: framework
            .history
            .get(&task.info.task_id)
            .cloned()
            .unwrap_or_default(),
    }
}

/// Task `task_id` of `framework_id` (running, else recently ended), if
/// the books know it.
pub fn task_of(books: &Books, framework_id: &FrameworkId, task_id: &TaskId) -> Option<Task> {
    let framework = books.frameworks().get(framework_id)?;
    let task = framework.tasks.get(task_id).or_else(|| {
        framework
            .completed
            .iter()
            .rev()
            .find(|task| task.info.task_id == *task_id)
    })?;
    Some(task_view(framework_id, framework, task))
}

/// Framework `id` as the views show it.
fn framework_view(id: &FrameworkId, framework: &FrameworkEntry) -> Framework {
    let mut used = Resources::new();
    let mut running = 0;
    for task in framework.tasks.values() {
        if !task.state.is_terminal() {
            used.add(&task.info.resources);
            running += 1;
        }
    }
    framework_view_of(id, framework, used, running)
}

/// Framework `id` as the views show it, whose tasks that are not
/// terminal use `used` and are `running`.
fn framework_view_of(
    id: &FrameworkId,
    framework: &FrameworkEntry,
    used: Resources,
    running: usize,
) -> Framework {
    Framework {
        id: id.clone(),
        name: framework.info.name.clone(),
        role: framework.info.role().to_owned(),
        user: framework.info.user.clone(),
        principal: framework.info.principal.clone(),
        active: framework.pid.is_some(),
        pid: framework.pid.as_ref().map(ToString::to_string),
        failover_timeout_secs: framework.info.failover_timeout.as_secs_f64(),
        checkpoint: framework.info.checkpoint,
        partition_aware: framework.info.is_partition_aware(),
        capabilities: framework
            .info
            .capabilities
            .iter()
            .map(|capability| capability.mesos_name().to_owned())
            .collect(),
        tasks: running,
        completed_tasks: framework.completed.len(),
        offers: framework.offers.len(),
        used,
    }
}

/// Framework `id`'s view: a current one, else one removed lately.
pub fn framework_of(books: &Books, id: &FrameworkId) -> Option<Framework> {
    match books.frameworks().get(id) {
        Some(framework) => Some(framework_view(id, framework)),
        None => books
            .completed_frameworks()
            .iter()
            .rev()
            .find(|framework| framework.info.id.as_ref() == Some(id))
            .map(|framework| framework_view(id, framework)),
    }
}

/// A snapshot of `books`, for the master at `pid`.
pub fn snapshot(books: &Books, pid: &str, start_time_ms: u64, now_ms: u64) -> State {
    let mut offered: BTreeMap<&AgentId, Resources> = BTreeMap::new();
    let mut offers = Listed::new();
    for (id, entry) in books.offers() {
        offered
            .entry(&entry.offer.agent_id)
            .or_default()
            .add(&entry.offer.resources);
        offers.insert(id.clone(), offer_view(&entry.offer));
    }
    let agents = books
        .agents()
        .iter()
        .map(|(id, agent)| {
            let offered = offered.get(id).cloned().unwrap_or_default();
            agent_view(books, id, agent, offered, None)
        })
        .collect();
    let mut frameworks = Listed::new();
    let mut tasks = Listed::new();
    let mut completed_tasks = Listed::new();
    let removed = books
        .completed_frameworks()
        .iter()
        .filter_map(|framework| Some((framework.info.id.as_ref()?, framework, false)));
    let current = books
        .frameworks()
        .iter()
        .map(|(id, framework)| (id, framework, true));
    for (id, framework, is_current) in current.chain(removed) {
        for task in framework.tasks.values() {
            if !task.state.is_terminal() {
                let key = (id.clone(), task.info.task_id.clone());
                tasks.insert(key, task_view(id, framework, task));
            }
        }
        let first = framework
            .filed
            .saturating_sub(framework.completed.len() as u64);
        for (number, task) in (first..).zip(&framework.completed) {
            let key = CompletedKey(id.clone(), number);
            completed_tasks.insert(key, task_view(id, framework, task));
        }
        if is_current {
            frameworks.insert(id.clone(), framework_view(id, framework));
        }
    }
    let mut views = Views {
        agents,
        frameworks,
        tasks,
        completed_tasks,
        offers,
        ..Views::default()
    };
    views.state(books, pid, start_time_ms, now_ms)
}

/// The views of the last snapshot the master took, kept so that the next
/// redoes only what changed since ([`Views::update_some`]): at tens of
/// thousands of agents a pass over everything would hold up the master
/// for longer than any message should wait. A snapshot shares the views'
/// lists ([`strata_api::listed::Listed`]): taking one costs the changes,
/// not the size of the cluster.
#[derive(Debug, Default)]
pub struct Views {
    agents: Listed<AgentId, Agent>,
    frameworks: Listed<FrameworkId, Framework>,
    tasks: Listed<TaskKey, Task>,
    completed_tasks: Listed<CompletedKey, Task>,
    offers: Listed<OfferId, Offer>,
    /// What is listed of each framework (current or lately removed).
    listings: BTreeMap<FrameworkId, Listing>,
    /// The ids of the lately removed frameworks at the last refresh.
    removed: Vec<FrameworkId>,
    /// What changed in the books and is not redone yet.
    pending: Pending,
    /// Views replaced or taken out that a snapshot still showed.
    replaced: Replaced,
}

/// Most views replaced since a snapshot that [`Views::update_some`]
/// frees a call, once no snapshot shows them, unless more were kept
/// since the last call.
const FREED_PER_UPDATE: usize = 1_000;

/// Snapshots after which a view replaced is no longer kept to be freed
/// here: a snapshot still showing it then is held by a reader that is
/// slow or keeps it (an HTTP client reading a large `/state`, a stream),
/// and frees it when it lets go.
const KEPT_FOR_SNAPSHOTS: u64 = 4;

/// Views replaced or taken out while a snapshot still showed them, in
/// the order they were, each with the number of snapshots taken before,
/// freed by the master a few at a time once no snapshot shows them.
/// Left to the last snapshot that showed them, they were freed on the
/// thread that drops snapshots, and mimalloc hands a block freed on
/// another thread back to the thread that allocated it, which then walks
/// them one by one: at 50,000 agents the master spent 10 to 50 ms at
/// once walking a second's replaced views, inside whatever input it was
/// handling.
#[derive(Debug, Default)]
struct Replaced {
    gone: VecDeque<(u64, Gone)>,
    /// Snapshots taken of the views so far.
    snapshots: u64,
    /// Views kept since the last [`Replaced::free`].
    kept: usize,
}

/// A view replaced or taken out.
#[derive(Debug)]
enum Gone {
    Agent(Arc<Agent>),
    Offer(Arc<Offer>),
    Framework(Arc<Framework>),
    Task(Arc<Task>),
}

impl Gone {
    /// Whether something else (a snapshot) still holds it.
    fn shown(&self) -> bool {
        match self {
            Gone::Agent(view) => Arc::strong_count(view) > 1,
            Gone::Offer(view) => Arc::strong_count(view) > 1,
            Gone::Framework(view) => Arc::strong_count(view) > 1,
            Gone::Task(view) => Arc::strong_count(view) > 1,
        }
    }
}

macro_rules! gone_from {
    ($($view:ident),*) => {$(
        impl From<Arc<$view>> for Gone {
            fn from(view: Arc<$view>) -> Gone {
                Gone::$view(view)
            }
        }
    )*};
}
gone_from!(Agent, Offer, Framework, Task);

impl Replaced {
    /// Frees `view` now if nothing else holds it, else keeps it to free
    /// once nothing does.
    fn keep<V>(&mut self, view: Option<Arc<V>>)
    where
        Arc<V>: Into<Gone>,
    {
        if let Some(view) = view {
            let gone = view.into();
            if gone.shown() {
                self.gone.push_back((self.snapshots, gone));
                self.kept += 1;
            }
        }
    }

    /// Frees at most `most` of the views no snapshot shows any more, or
    /// as many as were kept since the last time if more, the earliest
    /// replaced first, up to the first one still shown (a snapshot that
    /// shows it shows those replaced after it too, unless they came
    /// after it). One still shown [`KEPT_FOR_SNAPSHOTS`] snapshots later
    /// is left to whoever holds it.
    fn free(&mut self, most: usize) {
        let most = most.max(std::mem::take(&mut self.kept));
        for _ in 0..most {
            match self.gone.front() {
                Some((_, gone)) if !gone.shown() => {}
                Some((kept_at, _)) if kept_at + KEPT_FOR_SNAPSHOTS <= self.snapshots => {}
                _ => break,
            }
            drop(self.gone.pop_front());
        }
    }
}

/// Views left to redo: the books' changes, taken and merged until they
/// are done, a slice at a time.
#[derive(Debug, Default)]
struct Pending {
    agents: BTreeSet<AgentId>,
    offers: BTreeSet<OfferId>,
    /// Frameworks to redo, each after the views of these tasks of it.
    frameworks: BTreeMap<FrameworkId, BTreeSet<TaskId>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.offers.is_empty() && self.frameworks.is_empty()
    }
}

/// Adds `more` to `into`.
fn merge<K: Ord>(into: &mut BTreeSet<K>, mut more: BTreeSet<K>) {
    if into.len() < more.len() {
        std::mem::swap(into, &mut more);
    }
    into.extend(more);
}

/// What the views list of one framework.
#[derive(Debug, Default)]
struct Listing {
    /// What its listed (not terminal) tasks use, and how many they are.
    used: Tally,
    running: usize,
    /// The numbers of its ended tasks listed (see
    /// [`FrameworkEntry::filed`]), and which of them each task id has.
    completed: std::ops::Range<u64>,
    completed_ids: BTreeMap<TaskId, BTreeSet<u64>>,
}

/// Resources summed as the views sum them (ranges and sets as unions),
/// which tasks can also be taken out of again: scalars as a sum, each
/// interval and set item with the number of tasks holding it.
#[derive(Debug, Default)]
struct Tally {
    scalars: Resources,
    pieces: BTreeMap<(String, String, Piece), usize>,
}

/// An interval of a ranges resource or an item of a set resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Piece {
    Interval(u64, u64),
    Item(String),
}

impl Tally {
    fn add(&mut self, resources: &Resources) {
        self.count(resources, true);
    }

    fn remove(&mut self, resources: &Resources) {
        self.count(resources, false);
    }

    fn count(&mut self, resources: &Resources, add: bool) {
        for resource in resources.iter() {
            let pieces: Vec<Piece> = match resource.value {
                Value::Scalar(amount) => {
                    let scalar = Resources::scalar(&resource.name, &resource.role, amount);
                    if add {
                        self.scalars.add(&scalar);
                    } else {
                        self.scalars = self.scalars.checked_sub(&scalar).unwrap_or_default();
                    }
                    continue;
                }
                Value::Ranges(ranges) => ranges
                    .intervals()
                    .iter()
                    .map(|(begin, end)| Piece::Interval(*begin, *end))
                    .collect(),
                Value::Set(items) => items.into_iter().map(Piece::Item).collect(),
            };
            for piece in pieces {
                let key = (resource.name.clone(), resource.role.clone(), piece);
                if add {
                    *self.pieces.entry(key).or_default() += 1;
                } else if let Some(count) = self.pieces.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.pieces.remove(&key);
                    }
                }
            }
        }
    }

    /// The sum.
    fn total(&self) -> Resources {
        let mut total = self.scalars.clone();
        for (name, role, piece) in self.pieces.keys() {
            let value = match piece {
                Piece::Interval(begin, end) => Value::Ranges(Ranges::interval(*begin, *end)),
                Piece::Item(item) => Value::Set(BTreeSet::from([item.clone()])),
            };
            // Added before under the same name and kind: cannot fail.
            let _ = total.try_add_one(Resource {
                name: name.clone(),
                role: role.clone(),
                value,
            });
        }
        total
    }
}

/// The least task id: ids are never empty and start with a character no
/// lower than a space (control characters are refused).
fn least_task_id() -> TaskId {
    TaskId::new(" ").unwrap_or_else(|_| unreachable!("a space is a valid id"))
}

impl Views {
    /// A snapshot of `books` for the master at `pid`, made of the views
    /// and the changes since they were last brought up to date, which it
    /// takes from the books. The same as [`snapshot`] of the same books.
    pub fn refresh(
        &mut self,
        books: &mut Books,
        pid: &str,
        start_time_ms: u64,
        now_ms: u64,
    ) -> State {
        self.update(books);
        self.state(books, pid, start_time_ms, now_ms)
    }

    /// Brings the views up to date with the changes the books noted since
    /// the last time, all at once (tests and benchmarks; the master does
    /// it a slice at a time, [`Views::update_some`]).
    pub fn update(&mut self, books: &mut Books) {
        self.update_some(books, usize::MAX);
    }

    /// Takes the changes the books noted since the last time and redoes
    /// at most about `budget` views of what is left to redo (an agent, an
    /// offer, a task or a framework counts one, and a framework's ended
    /// tasks listed or forgotten one each); whether the views are now up
    /// to date with the books. A task that changed several times before
    /// it is redone is redone once: the master brings its views up to
    /// date only for a snapshot, so a task launched, started and ended in
    /// between is listed once, among the ended.
    pub fn update_some(&mut self, books: &mut Books, budget: usize) -> bool {
        self.replaced.free(budget.min(FREED_PER_UPDATE));
        self.absorb(books);
        let books = &*books;
        let mut left = budget;
        while left > 0 {
            let Some(id) = self.pending.agents.pop_first() else {
                break;
            };
            let old = match agent_after(books, &id, self.agents.get(&id)) {
                Some(view) => self.agents.insert(id, view),
                None => self.agents.remove(&id),
            };
            self.replaced.keep(old);
            left -= 1;
        }
        while left > 0 {
            let Some(id) = self.pending.offers.pop_first() else {
                break;
            };
            let old = match books.offers().get(&id) {
                Some(entry) => self.offers.insert(id, offer_view(&entry.offer)),
                None => self.offers.remove(&id),
            };
            self.replaced.keep(old);
            left -= 1;
        }
        while left > 0 {
            let Some((id, mut tasks)) = self.pending.frameworks.pop_first() else {
                break;
            };
            let current = books.frameworks().get(&id);
            let entry = current.or_else(|| {
                books
                    .completed_frameworks()
                    .iter()
                    .find(|framework| framework.info.id.as_ref() == Some(&id))
            });
            let Some(entry) = entry else {
                // Gone from the books: gone from the views.
                self.forget_framework(&id);
                left -= 1;
                continue;
            };
            self.listings.entry(id.clone()).or_default();
            while left > 0 {
                let Some(task_id) = tasks.pop_first() else {
                    break;
                };
                self.refresh_task(&id, entry, &task_id);
                self.refresh_completed_of(&id, entry, &task_id);
                left -= 1;
            }
            if !tasks.is_empty() {
                self.pending.frameworks.insert(id, tasks);
                break;
            }
            // Its ended tasks, then itself.
            let (redone, all) = self.refresh_completed(&id, entry, left);
            left = left.saturating_sub(redone);
            if !all {
                self.pending.frameworks.insert(id, tasks);
                break;
            }
            left = left.saturating_sub(1);
            let old = match current {
                Some(framework) => {
                    let listing = self.listings.get(&id);
                    let mut view = framework_view_of(&id, framework, Resources::new(), 0);
                    if let Some(listing) = listing {
                        view.used = listing.used.total();
                        view.tasks = listing.running;
                    }
                    self.frameworks.insert(id, view)
                }
                None => self.frameworks.remove(&id),
            };
            self.replaced.keep(old);
        }
        self.pending.is_empty()
    }

    /// How many views replaced or taken out, which a snapshot showed,
    /// wait to be freed.
    pub fn replaced_waiting(&self) -> usize {
        self.replaced.gone.len()
    }

    /// How many views are left to redo, about (a framework's ended
    /// tasks count as one).
    pub fn left_to_redo(&self) -> usize {
        let tasks: usize = self.pending.frameworks.values().map(BTreeSet::len).sum();
        self.pending.agents.len()
            + self.pending.offers.len()
            + self.pending.frameworks.len()
            + tasks
    }

    /// Takes the changes the books noted into what is left to redo.
    fn absorb(&mut self, books: &mut Books) {
        let changes = books.take_view_changes();
        let books = &*books;
        match changes.agents {
            Changes::All => {
                self.agents = Listed::new();
                self.pending.agents = books.agents().keys().cloned().collect();
            }
            Changes::Keys(keys) => merge(&mut self.pending.agents, keys),
        }
        match changes.offers {
            Changes::All => {
                self.offers = Listed::new();
                self.pending.offers = books.offers().keys().cloned().collect();
            }
            Changes::Keys(keys) => merge(&mut self.pending.offers, keys),
        }
        if changes.frameworks == Changes::All {
            // Every framework comes with all its tasks below.
            self.frameworks = Listed::new();
            self.tasks = Listed::new();
            self.completed_tasks = Listed::new();
            self.listings.clear();
            self.pending.frameworks.clear();
        }
        let removed: Vec<FrameworkId> = books
            .completed_frameworks()
            .iter()
            .filter_map(|framework| framework.info.id.clone())
            .collect();
        let mut frameworks = changes.tasks;
        if removed != self.removed {
            // Those that left the lately removed go from the lists.
            for id in &self.removed {
                if !removed.contains(id) && !books.frameworks().contains_key(id) {
                    frameworks.push((id.clone(), Changes::All));
                }
            }
            self.removed = removed;
        }
        for (id, tasks) in frameworks {
            let keys = match tasks {
                Changes::All => {
                    // Every task listed, every task the books hold, and
                    // every id of an ended task listed (a task of that id
                    // since may have gone on with its history).
                    let first = (id.clone(), least_task_id());
                    let mut all: BTreeSet<TaskId> = self
                        .tasks
                        .keys_from(&first)
                        .take_while(|(framework_id, _)| framework_id == &id)
                        .map(|(_, task_id)| task_id.clone())
                        .collect();
                    if let Some(listing) = self.listings.get(&id) {
                        all.extend(listing.completed_ids.keys().cloned());
                    }
                    let entry = books.frameworks().get(&id).or_else(|| {
                        books
                            .completed_frameworks()
                            .iter()
                            .find(|framework| framework.info.id.as_ref() == Some(&id))
                    });
                    if let Some(entry) = entry {
                        all.extend(entry.tasks.keys().cloned());
                    }
                    all
                }
                Changes::Keys(keys) => keys,
            };
            merge(self.pending.frameworks.entry(id).or_default(), keys);
        }
    }

    /// A snapshot of `books` made of the views as they are (up to date
    /// after [`Views::update`]): the lists are shared, not copied.
    pub fn state(&mut self, books: &Books, pid: &str, start_time_ms: u64, now_ms: u64) -> State {
        self.replaced.snapshots += 1;
        State {
            id: books.id_prefix().to_owned(),
            pid: pid.to_owned(),
            epoch: books.master_epoch(),
            start_time_ms,
            snapshot_time_ms: now_ms,
            recovering: books.recovering(),
            agents: self.agents.clone(),
            frameworks: self.frameworks.clone(),
            completed_frameworks: books
                .completed_frameworks()
                .iter()
                .filter_map(|framework| {
                    Some(framework_view(framework.info.id.as_ref()?, framework))
                })
                .collect(),
            tasks: self.tasks.clone(),
            completed_tasks: self.completed_tasks.clone(),
            offers: self.offers.clone(),
            ended: books.ended().clone(),
            authorization_denials: books.denied(),
            longest_stall_ms: 0.0,
            snapshot_ms: 0.0,
            allocation_cycle_ms: 0.0,
            messages: Default::default(),
        }
    }

    /// Redoes the view of task `task_id` of framework `id`: listed while
    /// not terminal.
    fn refresh_task(&mut self, id: &FrameworkId, entry: &FrameworkEntry, task_id: &TaskId) {
        let key = (id.clone(), task_id.clone());
        let view = entry
            .tasks
            .get(task_id)
            .filter(|task| !task.state.is_terminal())
            .map(|task| task_view(id, entry, task));
        let listing = self.listings.entry(id.clone()).or_default();
        if let Some(view) = &view {
            listing.used.add(&view.resources);
            listing.running += 1;
        }
        let old = match view {
            Some(view) => self.tasks.insert(key, view),
            None => self.tasks.remove(&key),
        };
        if let Some(old) = &old {
            listing.used.remove(&old.resources);
            listing.running = listing.running.saturating_sub(1);
        }
        self.replaced.keep(old);
    }

    /// Lists framework `id`'s ended tasks as its books hold them now: the
    /// ones forgotten since go, the ones filed since come, at most about
    /// `budget` of them; how many went or came, and whether that was all.
    fn refresh_completed(
        &mut self,
        id: &FrameworkId,
        entry: &FrameworkEntry,
        budget: usize,
    ) -> (usize, bool) {
        let to = entry.filed;
        let from = to.saturating_sub(entry.completed.len() as u64);
        let listing = self.listings.entry(id.clone()).or_default();
        let mut listed = listing.completed.clone();
        let mut redone = 0;
        let mut forget = |number: u64, listing: &mut Listing| {
            let task = self
                .completed_tasks
                .remove(&CompletedKey(id.clone(), number));
            if let Some(task) = &task {
                forget_number(&mut listing.completed_ids, &task.id, number);
            }
            self.replaced.keep(task);
        };
        if to < listed.end {
            // Numbered anew (books made again): all of it again.
            for number in listed.clone() {
                forget(number, listing);
                redone += 1;
            }
            listed = from..from;
        }
        // Forgotten by the books since.
        while listed.start < listed.end.min(from) {
            if redone >= budget {
                listing.completed = listed;
                return (redone, false);
            }
            forget(listed.start, listing);
            listed.start += 1;
            redone += 1;
        }
        if listed.start < from {
            listed = from..from;
        }
        // Filed since.
        while listed.end < to {
            if redone >= budget {
                listing.completed = listed;
                return (redone, false);
            }
            if let Some(task) = entry.completed.get((listed.end - from) as usize) {
                listing
                    .completed_ids
                    .entry(task.info.task_id.clone())
                    .or_default()
                    .insert(listed.end);
                let old = self.completed_tasks.insert(
                    CompletedKey(id.clone(), listed.end),
                    task_view(id, entry, task),
                );
                self.replaced.keep(old);
            }
            listed.end += 1;
            redone += 1;
        }
        listing.completed = listed;
        (redone, true)
    }

    /// Redoes the views of framework `id`'s ended tasks of id `task_id`:
    /// they show the history of their id, which a later task of the same
    /// id goes on with.
    fn refresh_completed_of(&mut self, id: &FrameworkId, entry: &FrameworkEntry, task_id: &TaskId) {
        let Some(listing) = self.listings.get(id) else {
            return;
        };
        let Some(numbers) = listing.completed_ids.get(task_id) else {
            return;
        };
        // Numbered as the books number them now, which the listing may not
        // have caught up with yet (its ended tasks are listed after its
        // tasks are redone): one forgotten since, or numbered anew, is
        // left to [`Views::refresh_completed`].
        let from = entry.filed.saturating_sub(entry.completed.len() as u64);
        for number in numbers {
            let task = number
                .checked_sub(from)
                .and_then(|index| entry.completed.get(index as usize))
                .filter(|task| task.info.task_id == *task_id);
            if let Some(task) = task {
                let old = self.completed_tasks.insert(
                    CompletedKey(id.clone(), *number),
                    task_view(id, entry, task),
                );
                self.replaced.keep(old);
            }
        }
    }

    /// Takes framework `id` and everything of it out of the views.
    fn forget_framework(&mut self, id: &FrameworkId) {
        let old = self.frameworks.remove(id);
        self.replaced.keep(old);
        let first = (id.clone(), least_task_id());
        let tasks: Vec<TaskKey> = self
            .tasks
            .keys_from(&first)
            .take_while(|(framework_id, _)| framework_id == id)
            .cloned()
            .collect();
        for key in &tasks {
            let old = self.tasks.remove(key);
            self.replaced.keep(old);
        }
        if let Some(listing) = self.listings.remove(id) {
            for number in listing.completed {
                let old = self
                    .completed_tasks
                    .remove(&CompletedKey(id.clone(), number));
                self.replaced.keep(old);
            }
        }
    }
}

/// Takes `number` from the ended tasks of `task_id`.
fn forget_number(ids: &mut BTreeMap<TaskId, BTreeSet<u64>>, task_id: &TaskId, number: u64) {
    if let Some(numbers) = ids.get_mut(task_id) {
        numbers.remove(&number);
        if numbers.is_empty() {
            ids.remove(task_id);
        }
    }
}

/// The web UI: one page, embedded in the binary, that polls `/state`
/// every second and reads task output from the agents' `/files/read`.
pub const WEB_UI: &str = include_str!("ui/index.html");

/// A published snapshot and the requests for a fresh one it answers.
#[derive(Debug, Clone, Default)]
struct Published {
    state: Option<Arc<State>>,
    /// Taken after the first `covers` requests for a fresh snapshot.
    covers: u64,
}

/// What readers and the master share: requests for a fresh snapshot.
#[derive(Debug, Default)]
struct Wanted {
    /// Requests made so far.
    asked: AtomicU64,
    /// Rung on every request.
    bell: Notify,
    /// Masters publishing now (0 between a crash and the restart).
    listening: AtomicU64,
}

/// How long a reader waits for a fresh snapshot before it answers with
/// the latest one (the master is restarting or very busy).
pub const FRESH_SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Where the master publishes its snapshots, and learns that a reader
/// wants a fresh one.
#[derive(Debug, Clone)]
pub struct Publisher {
    sender: Arc<watch::Sender<Published>>,
    wanted: Arc<Wanted>,
}

/// Held by a master while it publishes: readers wait for fresh
/// snapshots only while one does.
#[derive(Debug)]
pub struct Listening(Arc<Wanted>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Publisher {
    /// Marks a master as publishing until the guard is dropped.
    pub fn listen(&self) -> Listening {
        self.wanted.listening.fetch_add(1, Ordering::SeqCst);
        Listening(self.wanted.clone())
    }

    /// The requests made so far: read before taking a snapshot, which
    /// then answers them.
    pub fn asked(&self) -> u64 {
        self.wanted.asked.load(Ordering::SeqCst)
    }

    /// Resolves when a reader asks for a fresh snapshot (at once if one
    /// asked since the last call).
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let wanted = self.wanted.clone();
        async move { wanted.bell.notified().await }
    }

    /// Publishes `state`, taken after the first `covers` requests. The
    /// snapshot it replaces is freed on another thread (`retire`).
    pub fn publish(&self, state: Arc<State>, covers: u64) {
        let replaced = self.sender.send_replace(Published {
            state: Some(state),
            covers,
        });
        if let Some(state) = replaced.state {
            retire(state);
        }
    }

    /// Says that the latest snapshot is still current after the first
    /// `covers` requests (nothing changed since it was taken).
    pub fn confirm(&self, covers: u64) {
        self.sender.send_if_modified(|published| {
            let newer = published.state.is_some() && covers > published.covers;
            if newer {
                published.covers = covers;
            }
            newer
        });
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Option<Arc<State>> {
        self.sender.borrow().state.clone()
    }
}

/// What the endpoints read: the latest snapshot, or a fresh one.
#[derive(Debug, Clone)]
pub struct Snapshots {
    receiver: watch::Receiver<Published>,
    wanted: Arc<Wanted>,
}

impl Snapshots {
    /// The latest snapshot, however old (up to an allocation interval
    /// while the master is idle).
    pub fn latest(&self) -> Option<Arc<State>> {
        self.receiver.borrow().state.clone()
    }

    /// A snapshot taken after this call began, so it holds everything
    /// the master had done before: what a client saw from the master
    /// (a TASK_FINISHED) is in it. Blocks the calling thread (the HTTP
    /// handlers run on the blocking pool) for at most `wait`; the master
    /// never waits for it. The latest snapshot when no master publishes
    /// or it does not answer in time.
    pub fn fresh(&self, wait: Duration) -> Option<Arc<State>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return self.latest();
        };
        if self.wanted.listening.load(Ordering::SeqCst) == 0 {
            return self.latest();
        }
        let ticket = self.wanted.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.wanted.bell.notify_one();
        let mut receiver = self.receiver.clone();
        let answered = runtime.block_on(async {
            tokio::time::timeout(
                wait,
                receiver.wait_for(|published| published.covers >= ticket),
            )
            .await
            .ok()?
            .ok()
            .and_then(|published| published.state.clone())
        });
        answered.or_else(|| self.latest())
    }
}

/// Snapshots waiting for the thread that frees them; beyond, one is
/// freed where it was replaced (a thread that falls behind by that many
/// snapshots, seconds at scale, is starved anyway).
const RETIRED_WAITING: usize = 4;

/// Frees a snapshot the master replaced, on a thread of its own. What
/// it alone holds is the B-tree nodes of everything that changed since
/// it was taken (the next shares the rest; the views it alone showed are
/// freed by the master, see [`Replaced`]): when the views went with it,
/// freeing them held the master's loop up to 105 ms. Freed here if that
/// thread cannot be started, has stopped, or has [`RETIRED_WAITING`]
/// waiting.
fn retire(state: Arc<State>) {
    static RETIRED: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Arc<State>>>> =
        std::sync::OnceLock::new();
    let retired = RETIRED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<State>>(RETIRED_WAITING);
        std::thread::Builder::new()
            .name("strata-retired-snapshots".to_owned())
            .spawn(move || {
                // Each is freed as it arrives.
                for _state in receiver {}
            })
            .ok()
            .map(|_| sender)
    });
    if let Some(retired) = retired {
        // Refused (full, or the thread gone), it comes back in the error
        // and is freed here.
        let _ = retired.try_send(state);
    }
}

/// A publisher and the snapshots [`routes`] read.
pub fn channel() -> (Publisher, Snapshots) {
    let (sender, receiver) = watch::channel(Published::default());
    let wanted = Arc::new(Wanted::default());
    (
        Publisher {
            sender: Arc::new(sender),
            wanted: wanted.clone(),
        },
        Snapshots { receiver, wanted },
    )
}

/// Endpoints served without credentials when the master asks for them:
/// the web UI's page (its requests for `/state` then ask), health and
/// the metrics, which reveal no task data.
pub const PUBLIC_PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/health",
    "/version",
    "/redirect",
    "/master/redirect",
    "/metrics",
    "/metrics/snapshot",
];

/// What `principal` may see of `state` by the view ACLs: frameworks by
/// `view_frameworks` (their user), tasks by `view_tasks` (their user),
/// offers of the frameworks it sees.
pub fn visible_to(state: &State, authorizer: &Authorizer, principal: Option<&str>) -> State {
    let framework_visible = |framework: &Framework| {
        authorizer
            .may_view_framework(principal, &framework.user)
            .is_ok()
    };
    let task_visible = |task: &Task| authorizer.may_view_task(principal, &task.user).is_ok();
    let mut visible = state.clone();
    visible.frameworks.retain(framework_visible);
    visible.completed_frameworks.retain(framework_visible);
    visible.tasks.retain(task_visible);
    visible.completed_tasks.retain(task_visible);
    let seen: std::collections::BTreeSet<&strata_protocol::FrameworkId> = visible
        .frameworks
        .iter()
        .map(|framework| &framework.id)
        .collect();
    let offers = state
        .offers
        .iter()
        .filter(|offer| seen.contains(&offer.framework_id))
        .cloned()
        .collect();
    visible.offers = offers;
    visible
}

/// `/master/redirect`: 307 to the leading master's HTTP address in
/// Mesos's protocol-relative form (`//host:port`), which tools follow to
/// find the leader. A single master leads itself.
fn redirect_to_leader(pid: &str) -> Response {
    match pid.parse::<strata_runtime::Upid>() {
        Ok(pid) => {
            let mut response = Response::text("text/plain", Bytes::new())
                .with_header("Location", format!("//{}", pid.addr()));
            response.status = 307;
            response
        }
        Err(_) => Response::error(503, "no leading master is known"),
    }
}

/// The master's HTTP endpoints, over its latest snapshot, showing each
/// reader what the view ACLs of `authorizer` let its principal see.
pub fn routes(
    snapshots: Snapshots,
    authorizer: Authorizer,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let serialized = SharedJson::default();
    let worked_out = crate::metrics::MetricsOf::default();
    move |request: &Request| {
        if request.method == "POST" {
            return Response::error(405, "these endpoints answer GET and HEAD");
        }
        if matches!(request.path.as_str(), "/" | "/index.html") {
            return Response::text("text/html; charset=utf-8", WEB_UI);
        }
        // `/state` is read fresh, so what a client saw is in it; the
        // rest from the latest snapshot.
        let latest = if request.path == "/state" {
            snapshots.fresh(FRESH_SNAPSHOT_WAIT)
        } else {
            snapshots.latest()
        };
        match (request.path.as_str(), latest) {
            ("/health", Some(_)) => Response::text("text/plain", "ok\n"),
            ("/version", _) => strata_runtime::http::version(),
            (_, None) => Response::error(503, "the master is starting"),
            ("/state", Some(state)) if !authorizer.allows_everything() => {
                let visible = visible_to(&state, &authorizer, request.principal.as_deref());
                match serde_json::to_vec(&visible) {
                    Ok(body) => Response::json(body),
                    Err(error) => Response::error(500, &error.to_string()),
                }
            }
            ("/state", Some(state)) => serialized.answer(&state),
            ("/master/redirect" | "/redirect", Some(state)) => redirect_to_leader(&state.pid),
            ("/metrics/snapshot", Some(state)) => {
                Response::json(strata_api::metrics::snapshot(&worked_out.of(&state)))
            }
            ("/metrics", Some(state)) => Response::text(
                strata_api::metrics::PROMETHEUS_CONTENT_TYPE,
                strata_api::metrics::prometheus(&worked_out.of(&state)),
            ),
            _ => Response::error(404, "no such endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: &str) -> Arc<State> {
        let books = Books::new(crate::Config::default(), "m");
        Arc::new(snapshot(&books, pid, 0, 0))
    }

    /// A process id matches its text, and nothing else: not a prefix,
    /// not a longer text, not another port.
    #[test]
    fn displays_as_matches_the_whole_text_only() {
        let pid: strata_runtime::Upid = "agent@10.0.0.1:5051".parse().unwrap();
        assert!(displays_as(&pid, "agent@10.0.0.1:5051"));
        assert!(!displays_as(&pid, "agent@10.0.0.1:505"));
        assert!(!displays_as(&pid, "agent@10.0.0.1:50511"));
        assert!(!displays_as(&pid, "agent@10.0.0.1:5052"));
        assert!(!displays_as(&pid, ""));
    }

    /// A snapshot replaced by the next is freed once no reader holds it,
    /// and not while one does (whichever thread frees it: this checks
    /// that it is freed, and kept while read, not where).
    #[test]
    fn a_replaced_snapshot_is_freed_once_nobody_reads_it() {
        let (publisher, snapshots) = channel();
        let first = state("first@127.0.0.1:1");
        let second = state("second@127.0.0.1:1");
        let (first_weak, second_weak) = (Arc::downgrade(&first), Arc::downgrade(&second));
        publisher.publish(first, 0);
        let read = snapshots.latest().expect("published");
        publisher.publish(second, 0);
        let freed = |weak: &std::sync::Weak<State>| {
            // Freed on another thread: waited for, for at most a minute.
            let waited_from = std::time::Instant::now();
            while weak.upgrade().is_some() {
                if waited_from.elapsed() > Duration::from_secs(60) {
                    return false;
                }
                std::thread::yield_now();
            }
            true
        };
        assert_eq!(read.pid, "first@127.0.0.1:1");
        assert!(first_weak.upgrade().is_some(), "a reader still holds it");
        drop(read);
        assert!(freed(&first_weak), "the replaced snapshot was never freed");
        assert!(second_weak.upgrade().is_some(), "the latest is kept");
        publisher.publish(state("third@127.0.0.1:1"), 0);
        assert!(freed(&second_weak), "the replaced snapshot was never freed");
    }

    /// A reader asking for a fresh snapshot gets one taken after it
    /// asked, never the older one; with no master publishing it gets the
    /// latest at once.
    #[tokio::test]
    async fn a_fresh_snapshot_is_taken_after_it_was_asked_for() {
        let (publisher, snapshots) = channel();
        publisher.publish(state("old@127.0.0.1:1"), publisher.asked());
        let reader = snapshots.clone();
        let alone = tokio::task::spawn_blocking(move || reader.fresh(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alone.pid, "old@127.0.0.1:1", "nobody publishes: the latest");

        let listening = publisher.listen();
        let reader = snapshots.clone();
        let asked = tokio::task::spawn_blocking(move || reader.fresh(Duration::from_secs(60)));
        publisher.requested().await;
        // Something older than the request does not answer it.
        publisher.publish(state("older@127.0.0.1:1"), 0);
        publisher.publish(state("new@127.0.0.1:1"), publisher.asked());
        assert_eq!(asked.await.unwrap().unwrap().pid, "new@127.0.0.1:1");

        // Nothing changed since: the same snapshot, confirmed current.
        let reader = snapshots.clone();
        let asked = tokio::task::spawn_blocking(move || reader.fresh(Duration::from_secs(60)));
        publisher.requested().await;
        publisher.confirm(publisher.asked());
        assert_eq!(asked.await.unwrap().unwrap().pid, "new@127.0.0.1:1");

        // A master that does not answer in time: the latest.
        let reader = snapshots.clone();
        let late = tokio::task::spawn_blocking(move || reader.fresh(Duration::from_millis(1)));
        assert_eq!(late.await.unwrap().unwrap().pid, "new@127.0.0.1:1");
        drop(listening);
    }
}
