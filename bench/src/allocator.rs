//! The allocator suite: milliseconds per full allocation cycle at
//! 1k–50k agents × 10–1,000 frameworks, beside Apache Mesos's figure for
//! the shape it published.
//!
//! A full cycle hands out every agent's free resources: all agents start
//! free, every framework wants offers, and one `allocate` call runs. Then
//! everything is returned (not timed) and the cycle repeats; the best of
//! three counts. Memory is the resident size a fresh process grows by
//! when 50,000 agents register with a master's books (allocator
//! included), divided by 50,000.

use std::time::Instant;

use anyhow::Context;
use strata_master::allocator::{Allocator, HierarchicalAllocator, Policy};
use strata_protocol::{AgentId, Attributes, FrameworkId, Resources};

use crate::report::{Better, Measure, Row, Target};

/// Apache Mesos's HierarchicalAllocator_BENCHMARK_Test.DeclineOffers at
/// 10,000 agents and 1,000 frameworks, after its 2018 optimisations
/// (mesos-notes.md): about 1.06 s per allocation cycle.
const MESOS_10K_1K_MS: f64 = 1060.0;

const CYCLES: usize = 3;

fn agent_resources() -> anyhow::Result<Resources> {
    Ok("cpus:16;mem:65536;disk:409600;ports:[31000-32000]".parse()?)
}

fn build(
    agents: usize,
    frameworks: usize,
) -> anyhow::Result<(HierarchicalAllocator, Vec<AgentId>, Vec<FrameworkId>)> {
    let mut allocator = HierarchicalAllocator::new(Policy::Drf);
    let resources = agent_resources()?;
    let mut agent_ids = Vec::with_capacity(agents);
    for index in 0..agents {
        let id = AgentId::new(format!("agent-{index:06}"))?;
        let attributes: Attributes =
            format!("rack:r{};zone:z{}", index % 100, index % 3).parse()?;
        allocator.add_agent(id.clone(), resources.clone(), attributes, &[]);
        agent_ids.push(id);
    }
    let mut framework_ids = Vec::with_capacity(frameworks);
    for index in 0..frameworks {
        let id = FrameworkId::new(format!("framework-{index:05}"))?;
        allocator.add_framework(id.clone(), format!("role-{}", index % 10));
        framework_ids.push(id);
    }
    Ok((allocator, agent_ids, framework_ids))
}

/// Best milliseconds per full cycle.
fn cycle_ms(agents: usize, frameworks: usize) -> anyhow::Result<f64> {
    let (mut allocator, _, _) = build(agents, frameworks)?;
    let mut best = f64::INFINITY;
    for _ in 0..CYCLES {
        let now = Instant::now();
        let started = Instant::now();
        let allocations = allocator.allocate(now);
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            allocations.len() == agents,
            "a full cycle handed out {} of {agents} agents",
            allocations.len()
        );
        best = best.min(elapsed);
        for allocation in allocations {
            allocator.recover(
                &allocation.framework_id,
                &allocation.agent_id,
                &allocation.resources,
                None,
                now,
            );
        }
    }
    Ok(best)
}

fn resident_bytes() -> anyhow::Result<u64> {
    let statm =
        std::fs::read_to_string("/proc/self/statm").context("cannot read /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("unexpected /proc/self/statm")?
        .parse()?;
    Ok(pages * 4096)
}

/// Measures memory in a fresh process, where nothing freed earlier sits
/// in the allocator's arenas to hide the growth.
fn memory_per_agent_in_child(agents: usize) -> anyhow::Result<f64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["allocator-memory", &agents.to_string()])
        .output()
        .context("cannot run the memory probe")?;
    anyhow::ensure!(
        output.status.success(),
        "memory probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// The child side: prints resident bytes per agent after `agents` agents
/// registered with a master's books (which hold the allocator too).
pub fn print_memory_per_agent(agents: usize) -> anyhow::Result<()> {
    use strata_master::books::{Books, Input};
    use strata_protocol::{AgentInfo, ToMaster};
    let resources = agent_resources()?;
    let now = Instant::now();
    let before = resident_bytes()?;
    let mut books = Books::new(strata_master::Config::default(), "bench");
    for index in 0..agents {
        let from: strata_runtime::Upid = format!(
            "agent@10.{}.{}.{}:5051",
            index >> 16,
            (index >> 8) & 255,
            index & 255
        )
        .parse()?;
        let info = AgentInfo {
            id: None,
            hostname: format!("node-{index:06}.cluster.example"),
            resources: resources.clone(),
            attributes: format!("rack:r{};zone:z{}", index % 100, index % 3).parse()?,
        };
        books.handle(
            now,
            Input::Received {
                sender: std::sync::Arc::new(strata_runtime::PeerIdentity::simulated(
                    Some(strata_runtime::Role::Agent),
                    &from.to_string(),
                )),
                from,
                message: ToMaster::RegisterAgent { info },
            },
        );
    }
    let after = resident_bytes()?;
    anyhow::ensure!(books.agents().len() == agents, "not every agent registered");
    println!("{}", after.saturating_sub(before) as f64 / agents as f64);
    drop(books);
    Ok(())
}

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let agent_counts =
        [1_000usize, 10_000, 50_000].map(|count| ((count as f64 * scale) as usize).max(10));
    for agents in agent_counts {
        for frameworks in [10usize, 100, 1_000] {
            let ms = cycle_ms(agents, frameworks)?;
            let is_mesos_shape = agents == 10_000 && frameworks == 1_000;
            let measure = Measure {
                unit: "ms",
                baseline_name: if is_mesos_shape {
                    "Apache Mesos, DeclineOffers benchmark (published)"
                } else {
                    "no published figure for this shape"
                },
                better: Better::Lower,
                target: if is_mesos_shape {
                    Target::Absolute(50.0)
                } else {
                    Target::None
                },
            };
            let baseline = if is_mesos_shape { MESOS_10K_1K_MS } else { 0.0 };
            rows.push(Row::new(
                format!("cycle {agents} agents × {frameworks} fw"),
                measure,
                baseline,
                ms,
            ));
        }
    }
    // Linearity: per-agent cost at 1,000 frameworks across sizes.
    let small = rows.iter().find(|row| {
        row.name
            .starts_with(&format!("cycle {} agents × 1000 ", agent_counts[0]))
    });
    let large = rows.iter().find(|row| {
        row.name
            .starts_with(&format!("cycle {} agents × 1000 ", agent_counts[2]))
    });
    if let (Some(small), Some(large)) = (small, large) {
        let per_agent_small = small.ours * 1e3 / agent_counts[0] as f64;
        let per_agent_large = large.ours * 1e3 / agent_counts[2] as f64;
        let measure = Measure {
            unit: "µs/agent",
            baseline_name: "per-agent cost at the smallest size (same run)",
            better: Better::Lower,
            target: Target::Ratio(1.5),
        };
        rows.push(Row::new(
            format!("per agent at {} vs {}", agent_counts[2], agent_counts[0]),
            measure,
            per_agent_small,
            per_agent_large,
        ));
    }

    let agents = agent_counts[2];
    let per_agent = memory_per_agent_in_child(agents)?;
    let measure = Measure {
        unit: "bytes",
        baseline_name: "master books and allocator, resident growth ÷ agents",
        better: Better::Lower,
        target: Target::None,
    };
    rows.push(Row::new(
        format!("master memory per agent at {agents}"),
        measure,
        0.0,
        per_agent,
    ));
    Ok(rows)
}
