//! The seed sweep: runs a scenario over many seeds, or replays one.
//!
//! - `SIM_SEED=N` runs seed N only (a replay);
//! - otherwise the regression seeds of the scenario run first, then
//!   `SIM_SEEDS` seeds (default [`DEFAULT_SEEDS`]) from `SIM_SEED_START`
//!   (default 0).
//!
//! A failure panics with the seed, the command that replays it and the
//! tail of the event trace, and writes the whole trace to
//! `$TMPDIR/strata-sim/<test>-<seed>.txt`; with `SIM_TRACE` set, passing
//! runs write theirs there too.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use super::scenarios::Scenario;
use super::{Report, run};

/// Seeds per scenario in a default test run.
pub const DEFAULT_SEEDS: u64 = 200;

/// What a sweep ran.
#[derive(Debug, Clone)]
pub struct Summary {
    pub runs: usize,
    /// Virtual time simulated in all.
    pub simulated: Duration,
    pub wall: Duration,
    pub tasks: usize,
    pub updates: usize,
}

fn variable(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(number) => Some(number),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// The seeds a sweep runs: a replay's one, or the regressions and then
/// the swept range.
pub fn seeds(regressions: &[u64]) -> Vec<u64> {
    seeds_over(regressions, DEFAULT_SEEDS)
}

/// [`seeds`], sweeping `default` seeds unless `SIM_SEEDS` says otherwise.
pub fn seeds_over(regressions: &[u64], default: u64) -> Vec<u64> {
    if let Some(seed) = variable("SIM_SEED") {
        return vec![seed];
    }
    let count = variable("SIM_SEEDS").unwrap_or(default);
    let start = variable("SIM_SEED_START").unwrap_or(0);
    let mut seeds = regressions.to_vec();
    seeds.extend(start..start.saturating_add(count));
    seeds
}

/// The regression seeds listed for `scenario` in `list`: lines of
/// `<scenario> <seed>`, `#` starting a comment.
pub fn regressions(list: &str, scenario: &str) -> Vec<u64> {
    list.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let seed = words.next()?.parse().ok()?;
            (name == scenario).then_some(seed)
        })
        .collect()
}

/// Where the trace of `test` on `seed` is written.
fn trace_path(test: &str, seed: u64) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("strata-sim")
        .join(format!("{test}-{seed}.txt"))
}

/// Runs `scenario` once on seed `seed`.
pub fn run_seed(scenario: Scenario, seed: u64) -> Result<Report, super::Failure> {
    run(scenario(seed))
}

/// Runs `scenario` on every seed of [`seeds`]. `test` names the test
/// (for the replay command).
///
/// # Panics
///
/// On the first failing seed, with the seed, the replay command and the
/// trace tail.
pub fn sweep(test: &str, scenario: Scenario, regressions: &[u64]) -> Summary {
    sweep_over(test, scenario, regressions, DEFAULT_SEEDS)
}

/// [`sweep`] over `default` seeds unless `SIM_SEEDS` says otherwise.
///
/// # Panics
///
/// As [`sweep`].
pub fn sweep_over(test: &str, scenario: Scenario, regressions: &[u64], default: u64) -> Summary {
    let started = Instant::now();
    let mut summary = Summary {
        runs: 0,
        simulated: Duration::ZERO,
        wall: Duration::ZERO,
        tasks: 0,
        updates: 0,
    };
    for seed in seeds_over(regressions, default) {
        let replay = format!(
            "SIM_SEED={seed} cargo test -p strata-integration --test sim -- --exact {test}"
        );
        match std::panic::catch_unwind(AssertUnwindSafe(|| run_seed(scenario, seed))) {
            Ok(Ok(report)) => {
                if !report.trace.is_empty() {
                    let path = trace_path(test, seed);
                    let written = std::fs::create_dir_all(path.parent().unwrap_or(&path))
                        .and_then(|()| std::fs::write(&path, report.trace.join("\n") + "\n"));
                    match written {
                        Ok(()) => eprintln!("seed {seed}: trace in {}", path.display()),
                        Err(error) => eprintln!("seed {seed}: trace not written: {error}"),
                    }
                }
                summary.runs += 1;
                summary.simulated += report.simulated;
                summary.tasks += report.tasks;
                summary.updates += report.updates;
            }
            Ok(Err(failure)) => {
                let path = trace_path(test, seed);
                let saved = match failure.write_trace(&path) {
                    Ok(()) => format!("whole trace: {}", path.display()),
                    Err(error) => format!("the trace could not be saved: {error}"),
                };
                panic!("{failure}{saved}\nreplay: {replay}")
            }
            Err(panic) => {
                eprintln!("simulation with seed {seed} panicked; replay: {replay}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    summary.wall = started.elapsed();
    summary
}
