//! The seeds' walk-through, for real: two frameworks share one agent with
//! `cpus:4;mem:4096`.
//!
//! 1. The agent reports its free resources; the master offers all of them
//!    to framework 1.
//! 2. Framework 1 launches two tasks: ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩.
//! 3. The remaining ⟨1 CPU, 1 GB⟩ is offered to framework 2, which runs a
//!    task on it.
//! 4. When framework 1's tasks finish, their resources are offered again.
//!
//! Run against a one-agent cluster of that size:
//!
//! ```sh
//! cargo run --release -- local --agents 1 --resources 'cpus:4;mem:4096'
//! cargo run --release -p strata-examples --bin seed-walkthrough
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use strata_examples::{Cluster, framework, shell_task};
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{Filters, Offer, Operation, Resources, TaskState, TaskStatus};

/// What both frameworks have seen, to tell the story in order.
#[derive(Debug, Default)]
struct Story {
    first_launched: bool,
    first_finished: usize,
}

struct Walkthrough {
    second: bool,
    launched: bool,
    done: bool,
    story: Rc<RefCell<Story>>,
}

fn r(text: &str) -> Resources {
    text.parse().unwrap_or_default()
}

impl Walkthrough {
    fn name(&self) -> &'static str {
        if self.second {
            "framework 2"
        } else {
            "framework 1"
        }
    }
}

impl Scheduler for Walkthrough {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            let story_ready = !self.second || self.story.borrow().first_launched;
            let first_done = self.story.borrow().first_finished == 2;
            if !self.second && self.launched && first_done && !self.done {
                println!(
                    "4. {} is offered {} again: its tasks' resources are free",
                    self.name(),
                    offer.resources
                );
                self.done = true;
                driver.decline(&offer.id);
                driver.stop(false);
                continue;
            }
            if self.launched || !story_ready {
                // Not this framework's turn: give it back quickly.
                driver.decline_with(
                    &offer.id,
                    Filters {
                        refuse: Duration::from_millis(200),
                    },
                );
                continue;
            }
            let tasks = if self.second {
                println!(
                    "3. {} is offered the remaining {} on {}",
                    self.name(),
                    offer.resources,
                    offer.hostname
                );
                vec![shell_task(
                    "f2-task",
                    &offer.agent_id,
                    &r("cpus:1;mem:1024"),
                    "sleep 1",
                )]
            } else {
                println!(
                    "1. {} is offered {} on {}",
                    self.name(),
                    offer.resources,
                    offer.hostname
                );
                println!(
                    "2. {} launches ⟨2 CPU, 1 GB⟩ and ⟨1 CPU, 2 GB⟩",
                    self.name()
                );
                vec![
                    shell_task(
                        "f1-task-1",
                        &offer.agent_id,
                        &r("cpus:2;mem:1024"),
                        "sleep 2",
                    ),
                    shell_task(
                        "f1-task-2",
                        &offer.agent_id,
                        &r("cpus:1;mem:2048"),
                        "sleep 2",
                    ),
                ]
            };
            let Ok(tasks) = tasks.into_iter().collect::<Result<Vec<_>, _>>() else {
                continue;
            };
            self.launched = true;
            if !self.second {
                self.story.borrow_mut().first_launched = true;
            }
            // The rest goes back at once, for the other framework.
            driver.accept(
                vec![offer.id],
                vec![Operation::Launch(tasks)],
                Filters {
                    refuse: Duration::ZERO,
                },
            );
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        println!("   {} {} is {}", self.name(), status.task_id, status.state);
        if !status.state.is_terminal() {
            return;
        }
        if self.second {
            driver.stop(false);
        } else if status.state == TaskState::Finished {
            self.story.borrow_mut().first_finished += 1;
            // What they freed comes back as a new offer.
            driver.revive();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::from_args()?;
    actix_rt::System::new().block_on(async move {
        let node = cluster.node("seed-walkthrough").await?;
        let master = cluster.master_pid()?;
        let story = Rc::new(RefCell::new(Story::default()));
        let mut pids = Vec::new();
        for (id, second) in [("framework-1", false), ("framework-2", true)] {
            let story = story.clone();
            let config = SchedulerConfig::new(master.clone(), framework(id));
            pids.push(scheduler::spawn(&node, id, config, move || Walkthrough {
                second,
                launched: false,
                done: false,
                story: story.clone(),
            })?);
        }
        for pid in &pids {
            tokio::time::timeout(Duration::from_secs(120), scheduler::wait(&node, pid)).await??;
        }
        println!("done");
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
