//! `strata-bench sim`: how fast the failure simulation runs a cluster, in
//! simulated cluster-seconds per wall-second, beside real time (a cluster
//! on real clocks runs one cluster-second per second).

use std::time::{Duration, Instant};

use strata_integration::sim::{self, ClusterSpec, SimCluster, Workload, WorkloadSpec};
use strata_protocol::FrameworkInfo;

use crate::report::{Better, Measure, Row, Target};

/// Simulated time per run at scale 1.
const SPAN: Duration = Duration::from_secs(600);

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let span = SPAN.mul_f64(scale.max(0.1));
    let mut rows = Vec::new();
    for (agents, frameworks, checked) in [(3, 2, true), (100, 10, true), (100, 10, false)] {
        let (speed, tasks) = measure(agents, frameworks, span, checked)?;
        let checks = if checked { "checked" } else { "unchecked" };
        rows.push(Row::new(
            format!("{agents} agents, {frameworks} fw, {tasks} tasks, {checks}"),
            Measure {
                unit: "sim s/s",
                baseline_name: "real time: a cluster on real clocks (1 s per s)",
                better: Better::Higher,
                target: Target::None,
            },
            1.0,
            speed,
        ));
    }
    Ok(rows)
}

/// Runs a cluster of `agents` agents (4 cpus each) and `frameworks`
/// frameworks that keep launching 1-cpu tasks of 1 to 30 s for `span` of
/// virtual time; simulated seconds per wall second and tasks launched.
fn measure(
    agents: usize,
    frameworks: usize,
    span: Duration,
    checked: bool,
) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let report = sim::run(async move {
        let mut spec = ClusterSpec::new(agents, "cpus:4;mem:4096");
        spec.check_invariants = checked;
        let mut cluster = SimCluster::new(1, spec);
        for index in 0..frameworks {
            let workload = WorkloadSpec {
                seed: index as u64,
                run: (Duration::from_secs(1), Duration::from_secs(30)),
                ..WorkloadSpec::new(10_000_000, "cpus:1;mem:256", Duration::from_secs(30))
            };
            cluster.add_framework(
                FrameworkInfo::new(format!("framework-{index}"), "bench"),
                Workload::factory(workload),
            );
        }
        cluster.run_for(span).await;
        cluster.finish()
    })
    .map_err(|failure| anyhow::anyhow!("{failure}"))?;
    let wall = started.elapsed().as_secs_f64();
    Ok((report.simulated.as_secs_f64() / wall, report.tasks))
}
