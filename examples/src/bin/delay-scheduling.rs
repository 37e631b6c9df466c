//! Delay scheduling for data locality: each task's data lives on one
//! agent; the framework declines other agents' offers for that task for
//! up to a bounded wait, then takes anything. It runs the same job at
//! several waits and prints the locality each achieved.
//!
//! Tasks name their data's agent by hostname (`strata local` names its
//! agents agent-1, agent-2, ...). With no wait, tasks run wherever the
//! first offer is; with a wait of a second or two, nearly all run local.
//!
//! ```sh
//! cargo run --release -- local --agents 3
//! cargo run --release -p strata-examples --bin delay-scheduling
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use strata_examples::{Cluster, framework, run_scheduler, shell_task};
use strata_frameworks::scheduler::{Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{Filters, Offer, Resources, TaskStatus};

const TASKS: usize = 12;

struct Pending {
    id: usize,
    home: String,
    since: Instant,
}

struct Locality {
    wait: Duration,
    agents: usize,
    pending: Vec<Pending>,
    local: usize,
    remote: usize,
    finished: usize,
    need: Resources,
    /// (local, remote) launches, read by `main` once the run stops.
    result: Rc<RefCell<(usize, usize)>>,
}

impl Scheduler for Locality {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            let mut index = 0;
            while index < self.pending.len() {
                let task = &self.pending[index];
                let local = task.home == offer.hostname;
                let waited_enough = task.since.elapsed() >= self.wait;
                let fits = left.contains(&self.need);
                if fits && (local || waited_enough) {
                    left = left.checked_sub(&self.need).unwrap_or_default();
                    let task = self.pending.remove(index);
                    if local {
                        self.local += 1;
                    } else {
                        self.remote += 1;
                    }
                    if let Ok(info) = shell_task(
                        &format!("read-{}", task.id),
                        &offer.agent_id,
                        &self.need,
                        "sleep 0.3",
                    ) {
                        tasks.push(info);
                    }
                } else {
                    index += 1;
                }
            }
            if tasks.is_empty() {
                // Not yet: let other agents' offers come round.
                driver.decline_with(
                    &offer.id,
                    Filters {
                        refuse: Duration::from_millis(100),
                    },
                );
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if status.state.is_terminal() {
            self.finished += 1;
            if self.finished == TASKS {
                *self.result.borrow_mut() = (self.local, self.remote);
                driver.stop(false);
            }
        }
    }

    fn registered(
        &mut self,
        _: &mut SchedulerDriver<'_, '_, Self>,
        _: &strata_protocol::FrameworkId,
    ) {
        let now = Instant::now();
        self.pending = (0..TASKS)
            .map(|id| Pending {
                id,
                home: format!("agent-{}", id % self.agents + 1),
                since: now,
            })
            .collect();
    }
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::from_args()?;
    let agents: usize = match cluster.rest.first() {
        Some(text) => text.parse()?,
        None => 3,
    };
    actix_rt::System::new().block_on(async move {
        let node = cluster.node("delay-scheduling").await?;
        println!("{:>10}  {:>8}  {:>8}", "wait", "local", "locality");
        for wait_ms in [0u64, 500, 2000] {
            let result = Rc::new(RefCell::new((0, 0)));
            let shared = result.clone();
            let id = format!("delay-{wait_ms}");
            let config = SchedulerConfig::new(cluster.master_pid()?, framework(&id));
            run_scheduler(&node, &id, config, Duration::from_secs(120), move || {
                Locality {
                    wait: Duration::from_millis(wait_ms),
                    agents: agents.max(1),
                    pending: Vec::new(),
                    local: 0,
                    remote: 0,
                    finished: 0,
                    need: "cpus:0.1;mem:16".parse().unwrap_or_default(),
                    result: shared.clone(),
                }
            })
            .await?;
            let (local, remote) = *result.borrow();
            let share = 100.0 * local as f64 / (local + remote).max(1) as f64;
            println!(
                "{:>8}ms  {local:>3}/{:<4}  {share:>7.0}%",
                wait_ms,
                local + remote
            );
        }
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
