//! `strata-bench`: benchmarks that measure a baseline and Strata in the
//! same run and print both with their ratio.
//!
//! Wall-clock results on shared machines are noisy; that is why every row
//! carries its own baseline measured minutes apart at most, and why none of
//! this is a test that asserts a time.

mod allocator;
mod api;
mod failover;
mod image;
mod launch;
mod recovery;
mod report;
mod runtime;
mod scale;
mod sim;
mod state;

/// The allocator the daemons use (see the `strata` binary): the emulated
/// agents and frameworks of the scale suite share two cores with the
/// master, and the less they take the more of the run measures it.
#[global_allocator]
static ALLOCATOR: strata_runtime::memory::Allocator = strata_runtime::memory::Allocator;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Suite {
    /// Local and remote sends, remote round trips: ours against plain
    /// actix and raw quinn.
    Runtime,
    /// Milliseconds per full allocation cycle, agents × frameworks, beside
    /// Apache Mesos's published figure; memory per agent.
    Allocator,
    /// Tasks per second from accept to finished for /bin/true, beside
    /// spawning and reaping /bin/true directly.
    Launch,
    /// Accept to TASK_RUNNING of a task in a cached image (run by runc)
    /// against a plain command task, in the same run (needs root, runc,
    /// busybox-static and the `strata` binary).
    Image,
    /// Agent restart with 100 running tasks, master restart with 1,000
    /// agents, beside a fresh agent start and Apache Mesos's published
    /// master fail-over time (needs the release `strata` binary).
    Recovery,
    /// What `/state` costs at 10,000 agents: the master's time per
    /// snapshot, JSON outside it, and `GET /state` latency.
    State,
    /// A v1 HTTP framework against the Rust SDK's: tasks per second and
    /// offer-to-RUNNING; GET_STATE and /master/state at 10,000 agents.
    Api,
    /// Simulated cluster-seconds per wall-second of the failure
    /// simulation: 3 agents with 2 frameworks, 100 agents with 10.
    Sim,
    /// A real master and 1,000 emulated agents (--scale 10 for 10,000):
    /// registration, the master's memory per agent, tasks per second,
    /// offer-to-RUNNING (needs the release `strata` binary).
    Scale,
    /// Two masters in a ZooKeeper ensemble with 1,000 emulated agents and
    /// running tasks: kill -9 of the leader to a new leader and to every
    /// agent re-registered (needs the release `strata` binary and the
    /// zookeeper package).
    Failover,
}

#[derive(Debug, Parser)]
#[command(
    name = "strata-bench",
    about = "Strata benchmarks: baseline, ours and ratio from one run"
)]
struct Arguments {
    /// Which suite to run.
    suite: Suite,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Scale the message counts (1.0 is the documented run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Run only the rows whose group is named here (runtime: local,
    /// remote, round-trip); all when absent.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // The allocator suite measures memory in a child process of itself.
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("allocator-memory") {
        let agents = raw.next().unwrap_or_default().parse()?;
        return allocator::print_memory_per_agent(agents);
    }
    let arguments = Arguments::parse();
    // As the daemons do: freed memory is given back on a thread of its own.
    strata_runtime::memory::give_back_freed_memory()?;
    let rows = match arguments.suite {
        Suite::Runtime => runtime::run(arguments.scale, arguments.only.as_deref())?,
        Suite::Allocator => allocator::run(arguments.scale)?,
        Suite::Launch => launch::run(arguments.scale)?,
        Suite::Image => image::run(arguments.scale)?,
        Suite::Recovery => recovery::run(arguments.scale)?,
        Suite::State => state::run(arguments.scale)?,
        Suite::Sim => sim::run(arguments.scale)?,
        Suite::Api => api::run(arguments.scale)?,
        Suite::Scale => scale::run(arguments.scale)?,
        Suite::Failover => failover::run(arguments.scale)?,
    };
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        report::print_table(&rows);
    }
    Ok(())
}
