//! A framework for simulations: launches a number of test-executor tasks,
//! each running for a virtual time drawn from a range, as offers allow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::containers::RUN_MS_LABEL;
use strata_frameworks::scheduler::{Scheduler, SchedulerDriver};
use strata_protocol::{CommandInfo, Offer, Resources, TaskId, TaskInfo, TaskKind, TaskStatus};
use strata_runtime::random::SplitMix;

/// What a [`Workload`] runs.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// How many tasks it launches in all.
    pub tasks: usize,
    /// Each task's resources.
    pub resources: Resources,
    /// Each task runs for a virtual time drawn from this range.
    pub run: (Duration, Duration),
    /// Seeds the run times.
    pub seed: u64,
    /// Labels each task carries besides its run time (what it does on
    /// the simulated machine: [`crate::containers::MEM_MB_LABEL`]).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl WorkloadSpec {
    /// `tasks` tasks of `resources` (`"cpus:1;mem:128"`), each running for
    /// up to `run`.
    ///
    /// # Panics
    ///
    /// If `resources` does not parse.
    pub fn new(tasks: usize, resources: &str, run: Duration) -> WorkloadSpec {
        #[allow(clippy::expect_used)]
        let resources = resources.parse().expect("valid task resources");
        WorkloadSpec {
            tasks,
            resources,
            run: (run / 10, run),
            seed: 0,
            labels: std::collections::BTreeMap::new(),
        }
    }
}

/// A scheduler that launches [`WorkloadSpec::tasks`] tasks, each once, on
/// whatever offers fit them, and declines the rest. Its progress (how many
/// it launched) is kept outside it, as a framework's own store would be,
/// so a scheduler restarted after a crash carries on instead of launching
/// the same tasks again.
#[derive(Debug)]
pub struct Workload {
    spec: WorkloadSpec,
    launched: Arc<AtomicUsize>,
    random: SplitMix,
}

impl Workload {
    /// A factory for [`crate::sim::SimCluster::add_framework`]: every
    /// scheduler it makes shares one record of what was launched.
    pub fn factory(spec: WorkloadSpec) -> impl Fn() -> Workload + Clone + 'static {
        let launched = Arc::new(AtomicUsize::new(0));
        move || Workload {
            random: SplitMix::new(spec.seed ^ launched.load(Ordering::Relaxed) as u64),
            spec: spec.clone(),
            launched: launched.clone(),
        }
    }

    fn next_task(&mut self, offer: &Offer) -> TaskInfo {
        let index = self.launched.fetch_add(1, Ordering::Relaxed);
        let (low, high) = self.spec.run;
        let spread = high.saturating_sub(low).as_millis() as u64;
        let run = low + Duration::from_millis(self.random.below(spread + 1));
        let task_id = TaskId::new(format!("task-{index}"))
            .unwrap_or_else(|_| unreachable!("task ids are valid"));
        let mut task = test_task(task_id, offer, self.spec.resources.clone(), run);
        task.labels.extend(self.spec.labels.clone());
        task
    }
}

/// A task for the agents' in-process test executor, which the simulation
/// runs: it holds `resources` on `offer`'s agent for `run` of virtual
/// time, then finishes.
pub fn test_task(task_id: TaskId, offer: &Offer, resources: Resources, run: Duration) -> TaskInfo {
    TaskInfo {
        name: task_id.to_string(),
        task_id,
        agent_id: offer.agent_id.clone(),
        resources,
        kind: TaskKind::Command(CommandInfo::shell("true")),
        labels: [(RUN_MS_LABEL.to_owned(), run.as_millis().to_string())].into(),
    }
}

impl Scheduler for Workload {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.launched.load(Ordering::Relaxed) < self.spec.tasks {
                let Some(rest) = left.checked_sub(&self.spec.resources) else {
                    break;
                };
                left = rest;
                tasks.push(self.next_task(&offer));
            }
            if tasks.is_empty() {
                driver.decline(&offer.id);
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, _driver: &mut SchedulerDriver<'_, '_, Self>, _status: &TaskStatus) {
    }
}
