//! What operators see of the master: `/state` and the metrics.
//!
//! The master process takes a [`State`] snapshot of its books on every
//! allocation tick and publishes it; the HTTP endpoints serve snapshots,
//! so a large `/state` is serialized outside the master's process and
//! never holds it up. `/state` asks for a fresh one ([`Snapshots::fresh`]):
//! the master takes it between two messages, one for every reader that
//! asked meanwhile, within its share of time ([`crate::process::SNAPSHOT_SHARE`]),
//! so an update a client saw is in the `/state` it reads next. [`routes`] answers `/health`, `/state`,
//! `/metrics` (Prometheus text, `strata_*`) and `/metrics/snapshot` (flat
//! JSON with Apache Mesos's metric names).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_api::metrics::Metric;
use strata_api::views::{Agent, AgentStatus, Framework, Offer, Task};
use strata_protocol::Task as ProtocolTask;
use strata_protocol::{AgentId, FrameworkId, Resources, TaskId, TaskKind, TaskState};
use strata_runtime::http::{Request, Response, SharedJson};
use tokio::sync::{Notify, watch};

use crate::authorization::Authorizer;
use crate::books::{AgentEntry, Books, FrameworkEntry};

/// The master's state at one moment: the typed view every reader shares.
pub type State = strata_api::views::MasterState;

/// Agent `id` as the views show it, with `offered` its outstanding
/// offers' resources.
fn agent_view(books: &Books, id: &AgentId, agent: &AgentEntry, offered: Resources) -> Agent {
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
        pid: agent.pid.to_string(),
        hostname: agent.info.hostname.clone(),
        status: if active {
            AgentStatus::Active
        } else {
            AgentStatus::Unreachable
        },
        attributes: agent.info.attributes.clone(),
        total: total.clone(),
        used,
        offered,
        tasks: agent.tasks.len(),
    }
}

/// Agent `id`'s view, if the books know it.
pub fn agent_of(books: &Books, id: &AgentId) -> Option<Agent> {
    let agent = books.agents().get(id)?;
    let mut offered = Resources::new();
    for offer_id in &agent.offers {
        if let Some(entry) = books.offers().get(offer_id) {
            offered.add(&entry.offer.resources);
        }
    }
    Some(agent_view(books, id, agent, offered))
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
    let mut offers = Vec::with_capacity(books.offers().len());
    for entry in books.offers().values() {
        offered
            .entry(&entry.offer.agent_id)
            .or_default()
            .add(&entry.offer.resources);
        offers.push(Offer {
            id: entry.offer.id.clone(),
            framework_id: entry.offer.framework_id.clone(),
            agent_id: entry.offer.agent_id.clone(),
            resources: entry.offer.resources.clone(),
        });
    }
    let agents = books
        .agents()
        .iter()
        .map(|(id, agent)| {
            let offered = offered.get(id).cloned().unwrap_or_default();
            agent_view(books, id, agent, offered)
        })
        .collect();
    let mut frameworks = Vec::new();
    let mut tasks = Vec::new();
    let mut completed_tasks = Vec::new();
    let mut completed_frameworks = Vec::new();
    let removed = books
        .completed_frameworks()
        .iter()
        .filter_map(|framework| Some((framework.info.id.as_ref()?, framework, false)));
    let current = books
        .frameworks()
        .iter()
        .map(|(id, framework)| (id, framework, true));
    for (id, framework, is_current) in current.chain(removed) {
        tasks.extend(
            framework
                .tasks
                .values()
                .filter(|task| !task.state.is_terminal())
                .map(|task| task_view(id, framework, task)),
        );
        completed_tasks.extend(
            framework
                .completed
                .iter()
                .map(|task| task_view(id, framework, task)),
        );
        let view = framework_view(id, framework);
        if is_current {
            frameworks.push(view);
        } else {
            completed_frameworks.push(view);
        }
    }
    State {
        id: books.id_prefix().to_owned(),
        pid: pid.to_owned(),
        epoch: books.master_epoch(),
        start_time_ms,
        snapshot_time_ms: now_ms,
        recovering: books.recovering(),
        agents,
        frameworks,
        completed_frameworks,
        tasks,
        completed_tasks,
        offers,
        ended: books.ended().clone(),
        authorization_denials: books.denied(),
        // The master's process fills these in: the books know no time.
        longest_stall_ms: 0.0,
        snapshot_ms: 0.0,
        allocation_cycle_ms: 0.0,
    }
}

/// The master's metrics, by Apache Mesos's names, in a stable order.
pub fn metrics(state: &State) -> Vec<Metric> {
    let count_agents = |status: AgentStatus| {
        state
            .agents
            .iter()
            .filter(|agent| agent.status == status)
            .count() as f64
    };
    let count_tasks = |wanted: TaskState| {
        state
            .tasks
            .iter()
            .filter(|task| task.state == wanted)
            .count() as f64
    };
    let ended = |wanted: TaskState| state.ended.get(&wanted).copied().unwrap_or_default() as f64;
    let sum = |pick: &dyn Fn(&Agent) -> &Resources, name: &str| -> f64 {
        state
            .agents
            .iter()
            .filter(|agent| agent.status == AgentStatus::Active)
            .map(|agent| pick(agent).scalar_total(name).as_f64())
            .sum()
    };
    let frameworks_active = state.frameworks.iter().filter(|f| f.active).count() as f64;
    let uptime = state.snapshot_time_ms.saturating_sub(state.start_time_ms) as f64 / 1000.0;
    let mut metrics = vec![
        Metric::gauge("master/elected", 1.0),
        Metric::gauge("master/uptime_secs", uptime),
        Metric::gauge("master/epoch", state.epoch as f64),
        Metric::gauge("master/recovering", f64::from(u8::from(state.recovering))),
        Metric::gauge("master/agents_active", count_agents(AgentStatus::Active)),
        Metric::gauge(
            "master/agents_unreachable",
            count_agents(AgentStatus::Unreachable),
        ),
        Metric::gauge("master/frameworks_active", frameworks_active),
        Metric::gauge(
            "master/frameworks_inactive",
            state.frameworks.len() as f64 - frameworks_active,
        ),
        Metric::gauge("master/outstanding_offers", state.offers.len() as f64),
        Metric::gauge("master/tasks_staging", count_tasks(TaskState::Staging)),
        Metric::gauge("master/tasks_starting", count_tasks(TaskState::Starting)),
        Metric::gauge("master/tasks_running", count_tasks(TaskState::Running)),
        Metric::gauge("master/tasks_killing", count_tasks(TaskState::Killing)),
        Metric::gauge(
            "master/tasks_unreachable",
            count_tasks(TaskState::Unreachable),
        ),
        Metric::counter("master/tasks_finished", ended(TaskState::Finished)),
        Metric::counter("master/tasks_failed", ended(TaskState::Failed)),
        Metric::counter("master/tasks_killed", ended(TaskState::Killed)),
        Metric::counter("master/tasks_lost", ended(TaskState::Lost)),
        Metric::counter("master/tasks_error", ended(TaskState::Error)),
        Metric::counter("master/tasks_dropped", ended(TaskState::Dropped)),
        Metric::counter("master/tasks_gone", ended(TaskState::Gone)),
        // Strata's own, under a name in Mesos's style.
        Metric::counter(
            "master/authorization_denials",
            state.authorization_denials as f64,
        ),
        Metric::gauge("master/longest_stall_ms", state.longest_stall_ms),
        Metric::gauge("master/snapshot_ms", state.snapshot_ms),
        Metric::gauge("master/allocation_cycle_ms", state.allocation_cycle_ms),
    ];
    for (resource, total_name, used_name, offered_name, percent_name) in [
        (
            "cpus",
            "master/cpus_total",
            "master/cpus_used",
            "master/cpus_offered",
            "master/cpus_percent",
        ),
        (
            "mem",
            "master/mem_total",
            "master/mem_used",
            "master/mem_offered",
            "master/mem_percent",
        ),
        (
            "disk",
            "master/disk_total",
            "master/disk_used",
            "master/disk_offered",
            "master/disk_percent",
        ),
        (
            "gpus",
            "master/gpus_total",
            "master/gpus_used",
            "master/gpus_offered",
            "master/gpus_percent",
        ),
    ] {
        let total = sum(&|agent| &agent.total, resource);
        let used = sum(&|agent| &agent.used, resource);
        metrics.push(Metric::gauge(total_name, total));
        metrics.push(Metric::gauge(used_name, used));
        metrics.push(Metric::gauge(
            offered_name,
            sum(&|agent| &agent.offered, resource),
        ));
        metrics.push(Metric::gauge(
            percent_name,
            if total > 0.0 { used / total } else { 0.0 },
        ));
    }
    metrics
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

    /// Publishes `state`, taken after the first `covers` requests.
    pub fn publish(&self, state: Arc<State>, covers: u64) {
        self.sender.send_replace(Published {
            state: Some(state),
            covers,
        });
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
                Response::json(strata_api::metrics::snapshot(&metrics(&state)))
            }
            ("/metrics", Some(state)) => Response::text(
                strata_api::metrics::PROMETHEUS_CONTENT_TYPE,
                strata_api::metrics::prometheus(&metrics(&state)),
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
