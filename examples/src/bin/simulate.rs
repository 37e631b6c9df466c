//! Testing a scheduler of your own against failures, in simulation.
//!
//! `Replicas` keeps a number of long-running replicas up: it launches one
//! per free slot and a replacement whenever a replica ends. Each run puts
//! it on a simulated cluster of four agents (one process, virtual time,
//! every choice from the seed), crashes an agent, cuts another off from
//! the master for longer than the master waits for it, brings both back,
//! and lets the cluster settle. The harness checks Strata's own
//! invariants all along; this program adds the framework's: once settled,
//! exactly the wanted number of replicas run, on distinct tasks the
//! cluster agrees on.
//!
//! ```text
//! cargo run -p strata-examples --bin simulate -- --seeds 50
//! cargo run -p strata-examples --bin simulate -- --seed 17      # replay one
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use strata_frameworks::scheduler::{Scheduler, SchedulerDriver};
use strata_integration::sim::{self, ClusterSpec, Failure, Report, SimCluster};
use strata_protocol::{FrameworkInfo, Offer, Resources, TaskId, TaskStatus};

/// What the scheduler knows, kept outside it (as a framework's own store
/// would be) so the test can look, and a restarted scheduler carries on.
#[derive(Debug, Default)]
struct Book {
    /// Replicas launched and not ended.
    live: BTreeSet<TaskId>,
    launched: u64,
}

/// Keeps `wanted` replicas of `size` running.
#[derive(Debug)]
struct Replicas {
    wanted: usize,
    size: Resources,
    book: Arc<Mutex<Book>>,
}

impl Scheduler for Replicas {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while book.live.len() < self.wanted {
                let Some(rest) = left.checked_sub(&self.size) else {
                    break;
                };
                left = rest;
                book.launched += 1;
                let task_id = TaskId::new(format!("replica-{}", book.launched))
                    .unwrap_or_else(|_| unreachable!("replica ids are valid"));
                book.live.insert(task_id.clone());
                // Replicas run "for ever": a day of virtual time.
                let day = Duration::from_secs(86_400);
                tasks.push(sim::test_task(task_id, &offer, self.size.clone(), day));
            }
            if tasks.is_empty() {
                driver.decline(&offer.id);
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if status.state.is_terminal() {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            if book.live.remove(&status.task_id) {
                // Freed room is offered at the next allocation; ask now.
                driver.revive();
            }
        }
    }
}

const WANTED: usize = 4;

/// One run: the faults, then the framework's own check.
async fn scenario(seed: u64) -> Result<Report, Failure> {
    let mut cluster = SimCluster::new(seed, ClusterSpec::new(4, "cpus:2;mem:2048"));
    let book = Arc::new(Mutex::new(Book::default()));
    let shared = book.clone();
    let size: Resources = "cpus:1;mem:256"
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid size"));
    cluster.add_framework(FrameworkInfo::new("replicas", "example"), move || {
        Replicas {
            wanted: WANTED,
            size: size.clone(),
            book: shared.clone(),
        }
    });
    let warm_up = cluster.between(Duration::from_secs(5), Duration::from_secs(30));
    cluster.run_for(warm_up).await;

    let crashed = cluster.random().below(4) as usize;
    let cut = (crashed + 1 + cluster.random().below(3) as usize) % 4;
    cluster.crash_agent(crashed);
    cluster.partition(cluster.master_addr(), cluster.agent_addr(cut));
    // Longer than the master waits for a silent agent (5 pings of 15 s).
    let outage = cluster.between(Duration::from_secs(90), Duration::from_secs(180));
    cluster.run_for(outage).await;
    cluster.restart_agent(crashed);
    cluster.converge(Duration::from_secs(3600)).await;

    let live = book.lock().unwrap_or_else(|e| e.into_inner()).live.len();
    if live != WANTED {
        cluster.violation(format!("{live} replicas live after settling, not {WANTED}"));
    }
    cluster.finish()
}

fn flag(arguments: &[String], name: &str) -> anyhow::Result<Option<u64>> {
    match arguments.iter().position(|argument| argument == name) {
        None => Ok(None),
        Some(at) => {
            let value = arguments
                .get(at + 1)
                .with_context(|| format!("{name} needs a number"))?;
            let number = value
                .parse()
                .with_context(|| format!("{name} {value:?} is not a number"))?;
            Ok(Some(number))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let seeds: Vec<u64> = match flag(&arguments, "--seed")? {
        Some(seed) => vec![seed],
        None => {
            let count = flag(&arguments, "--seeds")?.unwrap_or(20);
            let start = flag(&arguments, "--start")?.unwrap_or(0);
            (start..start + count).collect()
        }
    };
    let mut simulated = Duration::ZERO;
    let started = std::time::Instant::now();
    for &seed in &seeds {
        match sim::run(scenario(seed)) {
            Ok(report) => simulated += report.simulated,
            Err(failure) => {
                eprint!("{failure}");
                bail!("seed {seed} failed; replay: simulate --seed {seed}");
            }
        }
    }
    println!(
        "{} seeds passed: {:.0} simulated seconds in {:.2} s",
        seeds.len(),
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
