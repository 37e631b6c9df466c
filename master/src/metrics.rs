//! The master's metrics, by Apache Mesos's names, worked out from a
//! snapshot of its state: counts of agents and tasks by status and
//! state, resource sums, and the master's own figures (its loop's
//! stalls, its node's message counters).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_api::metrics::Metric;
use strata_api::views::AgentStatus;
use strata_protocol::{Resources, Scalar, TaskState};

use crate::state::State;

/// The resources the metrics sum, each with its metrics' names: its
/// total, used, offered and the used share of the total.
const SUMMED: [(&str, [&str; 4]); 4] = [
    (
        "cpus",
        [
            "master/cpus_total",
            "master/cpus_used",
            "master/cpus_offered",
            "master/cpus_percent",
        ],
    ),
    (
        "mem",
        [
            "master/mem_total",
            "master/mem_used",
            "master/mem_offered",
            "master/mem_percent",
        ],
    ),
    (
        "disk",
        [
            "master/disk_total",
            "master/disk_used",
            "master/disk_offered",
            "master/disk_percent",
        ],
    ),
    (
        "gpus",
        [
            "master/gpus_total",
            "master/gpus_used",
            "master/gpus_offered",
            "master/gpus_percent",
        ],
    ),
];

/// What the metrics count of agents and tasks, in one pass over each:
/// a snapshot at tens of thousands of agents holds hundreds of thousands
/// of tasks, and monitoring polls the metrics often.
#[derive(Debug, Default)]
struct Counted {
    agents_active: u64,
    agents_unreachable: u64,
    /// Of active agents, for each of [`SUMMED`] in its order: their
    /// totals, what is used and what is offered.
    total_millis: [u64; 4],
    used_millis: [u64; 4],
    offered_millis: [u64; 4],
    /// Tasks that are not terminal, by state.
    tasks: BTreeMap<TaskState, u64>,
}

impl Counted {
    fn of(state: &State) -> Counted {
        let mut counted = Counted::default();
        let add = |sums: &mut [u64; 4], resources: &Resources| {
            for (sum, (name, _)) in sums.iter_mut().zip(SUMMED) {
                *sum = sum.saturating_add(resources.scalar_total(name).millis());
            }
        };
        for agent in state.agents.iter() {
            match agent.status {
                AgentStatus::Active => {
                    counted.agents_active += 1;
                    add(&mut counted.total_millis, &agent.total);
                    add(&mut counted.used_millis, &agent.used);
                    add(&mut counted.offered_millis, &agent.offered);
                }
                AgentStatus::Unreachable => counted.agents_unreachable += 1,
            }
        }
        for task in state.tasks.iter() {
            *counted.tasks.entry(task.state).or_default() += 1;
        }
        counted
    }
}

/// The master's metrics, by Apache Mesos's names, in a stable order.
pub fn metrics(state: &State) -> Vec<Metric> {
    let counted = Counted::of(state);
    let count_tasks =
        |wanted: TaskState| counted.tasks.get(&wanted).copied().unwrap_or_default() as f64;
    let ended = |wanted: TaskState| state.ended.get(&wanted).copied().unwrap_or_default() as f64;
    let frameworks_active = state.frameworks.iter().filter(|f| f.active).count() as f64;
    let uptime = state.snapshot_time_ms.saturating_sub(state.start_time_ms) as f64 / 1000.0;
    let mut metrics = vec![
        Metric::gauge("master/elected", 1.0),
        Metric::gauge("master/uptime_secs", uptime),
        Metric::gauge("master/epoch", state.epoch as f64),
        Metric::gauge("master/recovering", f64::from(u8::from(state.recovering))),
        Metric::gauge("master/agents_active", counted.agents_active as f64),
        Metric::gauge(
            "master/agents_unreachable",
            counted.agents_unreachable as f64,
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
    // The node's counters, under names in Mesos's style (Mesos has
    // `master/dropped_messages`).
    let messages = &state.messages;
    let dropped = [
        ("master/dropped_mailbox_full", messages.dropped_mailbox_full),
        (
            "master/dropped_send_queue_full",
            messages.dropped_send_queue_full,
        ),
        ("master/dropped_unreachable", messages.dropped_unreachable),
        (
            "master/dropped_unknown_process",
            messages.dropped_unknown_process,
        ),
        (
            "master/dropped_stale_incarnation",
            messages.dropped_stale_incarnation,
        ),
        (
            "master/dropped_impersonation",
            messages.dropped_impersonation,
        ),
        ("master/dropped_wrong_type", messages.dropped_wrong_type),
        ("master/dropped_too_large", messages.dropped_too_large),
    ];
    let total: u64 = dropped.iter().map(|(_, count)| count).sum();
    metrics.push(Metric::counter("master/dropped_messages", total as f64));
    for (name, count) in dropped {
        metrics.push(Metric::counter(name, count as f64));
    }
    for (name, count) in [
        (
            "master/messages_received",
            messages.messages_received_remote,
        ),
        (
            "master/messages_sent",
            messages.messages_sent_remote + messages.messages_sent_local,
        ),
        ("master/connections_lost", messages.connections_lost),
        ("master/handshake_failures", messages.handshake_failures),
        ("master/decode_errors", messages.decode_errors),
    ] {
        metrics.push(Metric::counter(name, count as f64));
    }
    for (index, (_, [total_name, used_name, offered_name, percent_name])) in
        SUMMED.into_iter().enumerate()
    {
        let amount = |sums: &[u64; 4]| Scalar::from_millis(sums[index]).as_f64();
        let total = amount(&counted.total_millis);
        let used = amount(&counted.used_millis);
        metrics.push(Metric::gauge(total_name, total));
        metrics.push(Metric::gauge(used_name, used));
        metrics.push(Metric::gauge(offered_name, amount(&counted.offered_millis)));
        metrics.push(Metric::gauge(
            percent_name,
            if total > 0.0 { used / total } else { 0.0 },
        ));
    }
    metrics
}

/// The metrics of the snapshot they were last worked out from: monitoring
/// polls them more often than the master takes snapshots, and each
/// working out is a pass over the snapshot's agents and tasks. The
/// snapshot is held weakly: its lists go when the master drops it.
#[derive(Debug, Default)]
pub struct MetricsOf {
    latest: std::sync::Mutex<Option<WorkedOut>>,
}

/// A snapshot, held weakly, and its metrics.
type WorkedOut = (std::sync::Weak<State>, Arc<[Metric]>);

impl MetricsOf {
    /// The metrics of `state`, worked out unless they were for it last.
    pub fn of(&self, state: &Arc<State>) -> Arc<[Metric]> {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((from, metrics)) = latest.as_ref()
            && from.upgrade().is_some_and(|from| Arc::ptr_eq(&from, state))
        {
            return metrics.clone();
        }
        let worked_out: Arc<[Metric]> = metrics(state).into();
        *latest = Some((Arc::downgrade(state), worked_out.clone()));
        worked_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_api::views::{Agent, Task};
    use strata_protocol::{AgentId, FrameworkId, TaskId};

    fn state(pid: &str) -> Arc<State> {
        let books = crate::books::Books::new(crate::Config::default(), "m");
        Arc::new(crate::state::snapshot(&books, pid, 0, 0))
    }

    /// A state of agents in both statuses and tasks in several states,
    /// with resources that do not add up exactly as floats.
    fn busy_state() -> State {
        let mut state = Arc::unwrap_or_clone(state("master@127.0.0.1:1"));
        let states = [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Unreachable,
        ];
        for n in 0..40u64 {
            let id = AgentId::new(format!("a{n}")).unwrap();
            let resources = |cpus: u64, mem: u64| -> Resources {
                format!("cpus:{}.{};mem:{mem};gpus:{}", cpus / 10, cpus % 10, n % 2)
                    .parse()
                    .unwrap()
            };
            state.agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    pid: format!("agent@127.0.0.1:{}", 1000 + n).into(),
                    hostname: "h".into(),
                    status: if n % 7 == 3 {
                        AgentStatus::Unreachable
                    } else {
                        AgentStatus::Active
                    },
                    attributes: Default::default(),
                    total: resources(40 + n, 4096).into(),
                    used: resources(n % 5, 32 * n),
                    offered: resources(1, 64),
                    tasks: 0,
                },
            );
            for t in 0..(n % 4) {
                let task_id = TaskId::new(format!("t{n}-{t}")).unwrap();
                let framework_id = FrameworkId::new("f").unwrap();
                state.tasks.insert(
                    (framework_id.clone(), task_id.clone()),
                    Task {
                        id: task_id,
                        name: "t".into(),
                        framework_id,
                        user: "u".into(),
                        agent_id: id.clone(),
                        executor_id: None,
                        state: states[((n + t) % 5) as usize],
                        resources: Resources::default(),
                        message: String::new(),
                        sandbox: None,
                        image: None,
                        history: Vec::new(),
                    },
                );
            }
        }
        state
    }

    /// The metrics counted in one pass are what a pass per metric over
    /// the same state finds; sums of resources are exact (in thousandths,
    /// as resources are held), not float sums.
    #[test]
    fn metrics_count_what_passes_per_metric_count() {
        let state = busy_state();
        let metrics = metrics(&state);
        let value = |name: &str| {
            metrics
                .iter()
                .find(|metric| metric.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .value
        };
        let active = || {
            state
                .agents
                .iter()
                .filter(|agent| agent.status == AgentStatus::Active)
        };
        assert_eq!(value("master/agents_active"), active().count() as f64);
        assert_eq!(
            value("master/agents_unreachable"),
            (state.agents.len() - active().count()) as f64
        );
        for wanted in [
            TaskState::Staging,
            TaskState::Running,
            TaskState::Unreachable,
        ] {
            let counted = state
                .tasks
                .iter()
                .filter(|task| task.state == wanted)
                .count();
            assert!(counted > 0, "the state has {wanted:?} tasks");
            let name = format!("master/tasks_{}", format!("{wanted:?}").to_lowercase());
            assert_eq!(value(&name), counted as f64, "{name}");
        }
        for (name, pick) in [
            (
                "cpus_total",
                &(|agent: &Agent| (*agent.total).clone()) as &dyn Fn(&Agent) -> Resources,
            ),
            ("cpus_used", &|agent: &Agent| agent.used.clone()),
            ("cpus_offered", &|agent: &Agent| agent.offered.clone()),
        ] {
            let millis: u64 = active().map(|agent| pick(agent).cpus().millis()).sum();
            assert_eq!(
                value(&format!("master/{name}")),
                millis as f64 / 1000.0,
                "{name}"
            );
        }
        let mem_used: u64 = active().map(|agent| agent.used.mem_mb().millis()).sum();
        let mem_total: u64 = active().map(|agent| agent.total.mem_mb().millis()).sum();
        assert_eq!(value("master/mem_used"), mem_used as f64 / 1000.0);
        assert_eq!(
            value("master/mem_percent"),
            (mem_used as f64 / 1000.0) / (mem_total as f64 / 1000.0)
        );
        let gpus: u64 = active().map(|agent| agent.total.gpus().millis()).sum();
        assert!(gpus > 0);
        assert_eq!(value("master/gpus_total"), gpus as f64 / 1000.0);
    }

    /// Metrics are worked out once a snapshot: polled again, the same;
    /// from a new snapshot, anew.
    #[test]
    fn metrics_are_worked_out_once_a_snapshot() {
        let worked_out = MetricsOf::default();
        let first = Arc::new(busy_state());
        let once = worked_out.of(&first);
        assert!(
            Arc::ptr_eq(&once, &worked_out.of(&first)),
            "the same snapshot"
        );
        let mut changed = busy_state();
        changed.agents.remove(&AgentId::new("a0").unwrap());
        let second = Arc::new(changed);
        let again = worked_out.of(&second);
        assert!(!Arc::ptr_eq(&once, &again), "a new snapshot");
        let active = |metrics: &[Metric]| {
            metrics
                .iter()
                .find(|metric| metric.name == "master/agents_active")
                .unwrap()
                .value
        };
        assert_eq!(active(&again), active(&once) - 1.0);
    }
}
