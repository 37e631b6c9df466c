//! The failure scenarios, swept over seeds (see
//! `strata_integration::sim::sweep` for `SIM_SEED`, `SIM_SEEDS` and
//! `SIM_SEED_START`), the regression seeds, and the determinism check.

use strata_integration::sim::scenarios::{self, Scenario};
use strata_integration::sim::sweep;

/// Seeds that once failed, by scenario; they always run.
const REGRESSIONS: &str = include_str!("sim-regressions.txt");

fn sweep_scenario(name: &str) {
    sweep_scenario_over(name, sweep::DEFAULT_SEEDS);
}

/// [`sweep_scenario`] over `seeds` seeds by default.
fn sweep_scenario_over(name: &str, seeds: u64) {
    let Some((_, scenario)) = scenarios::ALL.iter().find(|(known, _)| *known == name) else {
        panic!("no scenario {name}");
    };
    let regressions = sweep::regressions(REGRESSIONS, name);
    let summary = sweep::sweep_over(name, *scenario as Scenario, &regressions, seeds);
    eprintln!(
        "{name}: {} runs, {:.0} simulated seconds in {:.2} s, {} tasks, {} updates",
        summary.runs,
        summary.simulated.as_secs_f64(),
        summary.wall.as_secs_f64(),
        summary.tasks,
        summary.updates
    );
}

/// At scale a run takes seconds, not milliseconds: a few seeds by
/// default (`SIM_SEEDS` sweeps more).
#[test]
fn a_thousand_agents() {
    sweep_scenario_over("a_thousand_agents", 3);
}

#[test]
fn agent_crash_restart() {
    sweep_scenario("agent_crash_restart");
}

#[test]
fn agent_machine_lost() {
    sweep_scenario("agent_machine_lost");
}

#[test]
fn agent_to_master_stall() {
    sweep_scenario("agent_to_master_stall");
}

#[test]
fn master_agent_partition() {
    sweep_scenario("master_agent_partition");
}

#[test]
fn master_agent_partition_quic() {
    sweep_scenario("master_agent_partition_quic");
}

#[test]
fn scheduler_failover() {
    sweep_scenario("scheduler_failover");
}

#[test]
fn scheduler_failover_too_late() {
    sweep_scenario("scheduler_failover_too_late");
}

#[test]
fn status_update_storm() {
    sweep_scenario("status_update_storm");
}

#[test]
fn master_crash_agent_straggler() {
    sweep_scenario("master_crash_agent_straggler");
}

#[test]
fn master_crash_restart() {
    sweep_scenario("master_crash_restart");
}

#[test]
fn stolen_agent_certificate() {
    sweep_scenario("stolen_agent_certificate");
}

#[test]
fn leader_crash() {
    sweep_scenario("leader_crash");
}

#[test]
fn leader_cut_off_from_zookeeper() {
    sweep_scenario("leader_cut_off_from_zookeeper");
}

#[test]
fn zookeeper_quorum_lost() {
    sweep_scenario("zookeeper_quorum_lost");
}

#[test]
fn leadership_flaps() {
    sweep_scenario("leadership_flaps");
}

#[test]
fn memory_limits() {
    sweep_scenario("memory_limits");
}

/// Runs on the simulated transport repeat exactly; runs on real QUIC do
/// not (TLS draws its own randomness), so they are left out.
#[test]
fn one_seed_runs_the_same_twice() {
    for (name, scenario) in scenarios::ALL
        .iter()
        .filter(|(name, _)| !name.ends_with("_quic"))
    {
        let first = sweep::run_seed(*scenario, 7).unwrap_or_else(|failure| panic!("{failure}"));
        let second = sweep::run_seed(*scenario, 7).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(first, second, "{name}: two runs of seed 7 differ");
    }
}
