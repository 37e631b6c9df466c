//! A long-running service: keeps K instances up, relaunches any that end,
//! and spreads them across agents (a new instance goes to an agent with
//! the fewest).
//!
//! The instances here are `sleep` commands that end after a few seconds,
//! standing in for crashes, so relaunches happen; the example stops after
//! a number of relaunches and prints where instances ran.
//!
//! ```sh
//! cargo run --release -- local --agents 2
//! cargo run --release -p strata-examples --bin service -- 4 6
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use strata_examples::{Cluster, framework, run_scheduler, shell_task};
use strata_frameworks::scheduler::{Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{AgentId, Filters, Offer, Resources, TaskId, TaskStatus};

struct Service {
    instances: usize,
    relaunches_to_show: usize,
    next_id: usize,
    /// Running instances by task, with their agent.
    running: BTreeMap<TaskId, AgentId>,
    /// Instances placed per agent, over the whole run.
    placed: BTreeMap<AgentId, usize>,
    /// Every agent seen in an offer, with its running instances.
    load: BTreeMap<AgentId, usize>,
    relaunches: usize,
    need: Resources,
}

impl Scheduler for Service {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in &offers {
            self.load.entry(offer.agent_id.clone()).or_insert(0);
        }
        for offer in offers {
            let fewest = self.load.values().copied().min().unwrap_or(0);
            let here = self.load.get(&offer.agent_id).copied().unwrap_or(0);
            let missing = self.instances.saturating_sub(self.running.len());
            if missing == 0 || here > fewest || !offer.resources.contains(&self.need) {
                // Spread: wait for an agent with fewer instances.
                driver.decline_with(
                    &offer.id,
                    Filters {
                        refuse: Duration::from_millis(100),
                    },
                );
                continue;
            }
            self.next_id += 1;
            let Ok(task) = shell_task(
                &format!("web-{}", self.next_id),
                &offer.agent_id,
                &self.need,
                "sleep 3",
            ) else {
                continue;
            };
            self.running
                .insert(task.task_id.clone(), offer.agent_id.clone());
            *self.load.entry(offer.agent_id.clone()).or_insert(0) += 1;
            *self.placed.entry(offer.agent_id.clone()).or_insert(0) += 1;
            driver.launch(&offer.id, vec![task]);
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if !status.state.is_terminal() {
            return;
        }
        let Some(agent) = self.running.remove(&status.task_id) else {
            return;
        };
        if let Some(load) = self.load.get_mut(&agent) {
            *load = load.saturating_sub(1);
        }
        self.relaunches += 1;
        println!(
            "{} ended ({}); relaunching ({} so far)",
            status.task_id, status.state, self.relaunches
        );
        if self.relaunches >= self.relaunches_to_show {
            for (agent, count) in &self.placed {
                println!("agent {agent}: {count} instances placed");
            }
            driver.stop(false);
        } else {
            driver.revive();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::from_args()?;
    let number = |index: usize, default: usize| -> anyhow::Result<usize> {
        Ok(match cluster.rest.get(index) {
            Some(text) => text.parse()?,
            None => default,
        })
    };
    let (instances, relaunches) = (number(0, 4)?, number(1, 6)?);
    actix_rt::System::new().block_on(async move {
        let node = cluster.node("service").await?;
        let config = SchedulerConfig::new(cluster.master_pid()?, framework("service"));
        run_scheduler(
            &node,
            "service",
            config,
            Duration::from_secs(300),
            move || Service {
                instances,
                relaunches_to_show: relaunches,
                next_id: 0,
                running: BTreeMap::new(),
                placed: BTreeMap::new(),
                load: BTreeMap::new(),
                relaunches: 0,
                need: "cpus:0.1;mem:16".parse().unwrap_or_default(),
            },
        )
        .await?;
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
