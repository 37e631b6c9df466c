//! A batch framework: runs N tasks, retries each failed one up to three
//! times, and prints a summary.
//!
//! Each task runs a command that fails about one time in three, so
//! retries happen. Run against any cluster:
//!
//! ```sh
//! cargo run --release -- local
//! cargo run --release -p strata-examples --bin batch -- 20
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use strata_examples::{Cluster, framework, run_scheduler, shell_task};
use strata_frameworks::scheduler::{Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{Offer, Resources, TaskState, TaskStatus};

/// Attempts allowed per task.
const ATTEMPTS: u32 = 3;

/// A task's history: attempts made, and how it ended.
#[derive(Debug, Default, Clone)]
struct Job {
    attempts: u32,
    outcome: Option<TaskState>,
}

struct Batch {
    jobs: BTreeMap<u32, Job>,
    /// Jobs waiting for an offer.
    waiting: Vec<u32>,
    need: Resources,
}

impl Batch {
    fn task_id(job: u32, attempt: u32) -> String {
        format!("job-{job}-try-{attempt}")
    }

    fn summary(&self) {
        let finished = self
            .jobs
            .values()
            .filter(|job| job.outcome == Some(TaskState::Finished))
            .count();
        let retried = self.jobs.values().filter(|job| job.attempts > 1).count();
        let attempts: u32 = self.jobs.values().map(|job| job.attempts).sum();
        println!(
            "summary: {finished} of {} jobs finished, {retried} needed retries, {attempts} attempts in all, {} gave up",
            self.jobs.len(),
            self.jobs.len() - finished
        );
    }
}

impl Scheduler for Batch {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while let Some(&job) = self.waiting.last() {
                let Some(rest) = left.checked_sub(&self.need) else {
                    break;
                };
                left = rest;
                self.waiting.pop();
                let entry = self.jobs.entry(job).or_default();
                entry.attempts += 1;
                // Fails about one time in three.
                let command = "test $(( $(od -An -N1 -tu1 /dev/urandom) % 3 )) -ne 0";
                if let Ok(task) = shell_task(
                    &Batch::task_id(job, entry.attempts),
                    &offer.agent_id,
                    &self.need,
                    command,
                ) {
                    tasks.push(task);
                }
            }
            if tasks.is_empty() {
                driver.decline(&offer.id);
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if !status.state.is_terminal() {
            return;
        }
        let Some(job) = status
            .task_id
            .as_str()
            .strip_prefix("job-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|job| job.parse::<u32>().ok())
        else {
            return;
        };
        let Some(entry) = self.jobs.get_mut(&job) else {
            return;
        };
        println!("{} {}", status.task_id, status.state);
        if status.state == TaskState::Finished || entry.attempts >= ATTEMPTS {
            entry.outcome = Some(status.state);
        } else {
            self.waiting.push(job);
            driver.revive();
        }
        if self.jobs.values().all(|job| job.outcome.is_some()) {
            self.summary();
            driver.stop(false);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::from_args()?;
    let count: u32 = match cluster.rest.first() {
        Some(text) => text.parse()?,
        None => 10,
    };
    actix_rt::System::new().block_on(async move {
        let node = cluster.node("batch").await?;
        let config = SchedulerConfig::new(cluster.master_pid()?, framework("batch"));
        run_scheduler(
            &node,
            "batch",
            config,
            Duration::from_secs(300),
            move || Batch {
                jobs: (0..count).map(|job| (job, Job::default())).collect(),
                waiting: (0..count).rev().collect(),
                need: "cpus:0.1;mem:32".parse().unwrap_or_default(),
            },
        )
        .await?;
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
