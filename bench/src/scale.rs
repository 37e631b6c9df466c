//! The scale suite: a real `strata master` process and many emulated
//! agents (the real agent code on simulated machines and disks, 500 to a
//! node and certificate, over real QUIC; `strata_integration::emulator`),
//! with a framework of the SDK keeping them busy with short tasks.
//!
//! Reported: the time for all agents to register (until the master's
//! `master/agents_active` counts them all), the master's resident memory
//! per agent (its RSS two seconds after they registered less before, over
//! their number), tasks per second from the first accept to the last
//! TASK_FINISHED, and the time from an offer's arrival at the framework
//! to the RUNNING update of a task launched on it (p50, p99), under two
//! loads: a burst (five tasks on every agent at once, which measures how
//! long the last of them queues) and a steady load (one task on each
//! offer, taking all of it, so each agent is offered again as its task
//! ends; tasks of 15 to 45 s, 30 s on average, as in the Mesos paper's
//! run of 50,000 agents, so the same load on the same cluster whatever
//! the burst made: a task an agent every 30 s, 1,667 a second at 50,000
//! agents; counted from when every agent's first task runs, since all of
//! those start at once). Then the steady framework is
//! torn down with a task running on every agent, and the master's
//! longest stall meanwhile is reported, and how many messages the
//! master's node dropped over the run (at a full mailbox, or to peers
//! whose send queues were full). Beside them, published figures:
//! Nomad's C1M test (about 3,750 containers per second on 5,000 nodes)
//! and the Mesos paper's task launch overhead at 50,000 emulated agents
//! (under 1 s, with tasks of about 30 s); and Strata's own targets.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{FrameworkInfo, Offer, Resources, TaskId, TaskState, TaskStatus};
use strata_runtime::{CertificateAuthority, Node, NodeConfig, Role, TlsMaterial, Upid};

use crate::report::{Better, Measure, Row, Target};

const AGENTS: usize = 1_000;
const AGENTS_PER_NODE: usize = 500;
const TASKS_PER_AGENT: usize = 5;
const TASK_RUN_MS: u64 = 100;
/// Tasks each load framework runs: the master bounds one framework's
/// unfinished tasks (100,000 by default).
const TASKS_PER_FRAMEWORK: usize = 50_000;
/// `d`: the steady load's tasks run from `d` to `3 d`, spread evenly by
/// task number (mean `2 d`, the Mesos paper's tasks of about 30 s).
/// Fixed, not drawn from the burst's rate, so that runs on different days
/// (and builds) put the same load on the master. The steady load goes on
/// for `3 d` once every agent's first task runs (each agent's tasks
/// turned over at least once).
const STEADY_RUN: Duration = Duration::from_secs(15);
/// How long after the last agent registered the master's memory is
/// read: the master gives freed memory back to the system every half
/// second ([`strata_runtime::memory`]).
const MEMORY_SETTLES: Duration = Duration::from_secs(2);
/// How often the HTTP client polls `/state` (at most).
const POLL_EVERY: Duration = Duration::from_secs(1);

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let agents = ((AGENTS as f64 * scale) as usize).max(1);
    let tasks = agents * TASKS_PER_AGENT;
    let measured = measure(agents, tasks)?;
    let mut rows = vec![
        Row::new(
            format!("register {agents} emulated agents"),
            Measure {
                unit: "s",
                baseline_name: "(no published figure)",
                better: Better::Lower,
                target: Target::None,
            },
            0.0,
            measured.registration.as_secs_f64(),
        ),
        Row::new(
            format!("master resident memory per agent, {agents} agents"),
            Measure {
                unit: "bytes",
                baseline_name: "the target: 4 KiB an agent",
                better: Better::Lower,
                target: Target::Absolute(4096.0),
            },
            4096.0,
            measured.memory_per_agent,
        ),
        Row::new(
            format!(
                "tasks per second, accept to FINISHED, {tasks} tasks of {TASK_RUN_MS} ms on {agents} agents"
            ),
            Measure {
                unit: "tasks/s",
                baseline_name: "Nomad C1M, ~3,750 containers/s on 5,000 nodes (published)",
                better: Better::Higher,
                target: if agents >= 10_000 {
                    Target::Absolute(20_000.0)
                } else {
                    Target::None
                },
            },
            3750.0,
            measured.tasks_per_second,
        ),
    ];
    let steady = format!(
        "steady load (a task of {:.1}-{:.1} s on each offer, {} launched, ~{:.0}/s)",
        measured.steady_run.as_secs_f64(),
        measured.steady_run.as_secs_f64() * 3.0,
        measured.steady_launched,
        measured.steady_per_second
    );
    for (name, value, target) in [
        (
            format!("p50, burst of {tasks} tasks"),
            measured.offer_to_running_p50,
            Target::None,
        ),
        (
            format!("p99, burst of {tasks} tasks"),
            measured.offer_to_running_p99,
            Target::None,
        ),
        (format!("p50, {steady}"), measured.steady_p50, Target::None),
        (
            format!("p99, {steady}"),
            measured.steady_p99,
            Target::Absolute(100.0),
        ),
    ] {
        rows.push(Row::new(
            format!("offer to RUNNING {name}, {agents} agents"),
            Measure {
                unit: "ms",
                baseline_name: "Mesos paper: launch overhead < 1 s at 50,000 agents",
                better: Better::Lower,
                target,
            },
            1000.0,
            value,
        ));
    }
    let context = |baseline_name: &'static str, target: Target| Measure {
        unit: "ms",
        baseline_name,
        better: Better::Lower,
        target,
    };
    for (name, value) in [("p50", measured.state_p50), ("p99", measured.state_p99)] {
        rows.push(Row::new(
            format!(
                "GET /state {name} while polled ({} polls), {agents} agents and their tasks",
                measured.state_polls
            ),
            context("(no published figure)", Target::None),
            0.0,
            value,
        ));
    }
    rows.push(Row::new(
        format!("master's longest stall while /state is polled, {agents} agents"),
        context(
            "the target: 10 ms at 50,000 agents",
            if agents >= 50_000 {
                Target::Absolute(10.0)
            } else {
                Target::None
            },
        ),
        10.0,
        measured.longest_stall_ms,
    ));
    rows.push(Row::new(
        format!("master's longest snapshot of its books meanwhile, {agents} agents"),
        context("(no published figure)", Target::None),
        0.0,
        measured.longest_snapshot_ms,
    ));
    rows.push(Row::new(
        format!("master's longest allocation cycle under load, {agents} agents"),
        context("(no published figure)", Target::None),
        0.0,
        measured.longest_cycle_ms,
    ));
    rows.push(Row::new(
        format!(
            "master's longest stall under the steady load while /state is polled, {agents} agents"
        ),
        context("(no published figure)", Target::None),
        0.0,
        measured.steady_stall_ms,
    ));
    rows.push(Row::new(
        format!(
            "master's longest stall while the steady framework is torn down with {} tasks running, {agents} agents",
            measured.torn_down_tasks
        ),
        context("(no published figure)", Target::None),
        0.0,
        measured.teardown_stall_ms,
    ));
    let counted = Measure {
        unit: "msgs",
        baseline_name: "(no published figure)",
        better: Better::Lower,
        target: Target::None,
    };
    rows.push(Row::new(
        format!(
            "messages dropped at full mailboxes on the master's node over the run, {agents} agents"
        ),
        counted,
        0.0,
        measured.dropped_at_mailbox,
    ));
    rows.push(Row::new(
        format!(
            "messages the master's node dropped to peers' full send queues over the run, {agents} agents"
        ),
        counted,
        0.0,
        measured.dropped_at_send_queues,
    ));
    Ok(rows)
}

/// What one run measured.
struct Measured {
    registration: Duration,
    memory_per_agent: f64,
    tasks_per_second: f64,
    offer_to_running_p50: f64,
    offer_to_running_p99: f64,
    /// `GET /state` latency while polled, ms, and how many polls.
    state_p50: f64,
    state_p99: f64,
    state_polls: usize,
    /// The master's longest stall and its longest snapshot meanwhile, ms.
    longest_stall_ms: f64,
    longest_snapshot_ms: f64,
    /// The longest periodic allocation cycle meanwhile, ms.
    longest_cycle_ms: f64,
    /// Under the steady load: offer to RUNNING (ms), tasks launched and
    /// how many a second, the master's longest stall.
    steady_p50: f64,
    steady_p99: f64,
    steady_launched: usize,
    steady_per_second: f64,
    /// The shortest steady task, `d`.
    steady_run: Duration,
    steady_stall_ms: f64,
    /// Its tasks running when the steady framework was torn down, and the
    /// master's longest stall until they had all ended.
    torn_down_tasks: usize,
    teardown_stall_ms: f64,
    /// Messages the master's node dropped over the run: arriving at a
    /// full mailbox there (the master's, in practice: a remote message
    /// once the master handled nothing for a second while it waited), and
    /// to peers whose send queues were full.
    dropped_at_mailbox: f64,
    dropped_at_send_queues: f64,
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kilobytes: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kilobytes * 1024.0)
}

/// How many agents the master at `address` has active.
fn agents_active(client: &ureq::Agent, address: &str) -> anyhow::Result<usize> {
    Ok(master_metric(client, address, "master/agents_active")? as usize)
}

/// The master's metric `name` (0 if it has none of that name).
fn master_metric(client: &ureq::Agent, address: &str, name: &str) -> anyhow::Result<f64> {
    let body = client
        .get(&format!("http://{address}/metrics/snapshot"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let snapshot: serde_json::Value = serde_json::from_str(&body)?;
    Ok(snapshot[name].as_f64().unwrap_or(0.0))
}

fn measure(agents: usize, tasks: usize) -> anyhow::Result<Measured> {
    let strata = crate::recovery::strata_binary()?;
    let dir = std::env::temp_dir().join(format!("strata-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TlsMaterial::development(&dir.join("tls"), Role::Operator, "bootstrap")?;
    let ca = CertificateAuthority::development(&dir.join("tls"))?;
    let master = strata_integration::ChildNode::start_daemon(
        &strata,
        &[
            "master",
            "--port",
            "0",
            "--work-dir",
            dir.to_str().context("path")?,
        ],
    )?;
    let address = master.pid.addr().to_string();
    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let before = resident_bytes(master.process_id())?;
    let result = actix_rt::System::new().block_on(async {
        let started = Instant::now();
        let mut emulators = Vec::new();
        for (index, first) in (0..agents).step_by(AGENTS_PER_NODE).enumerate() {
            let count = AGENTS_PER_NODE.min(agents - first);
            emulators.push(
                strata_integration::emulator::emulate(
                    &ca,
                    &master.pid,
                    &format!("emulated-{index}"),
                    count,
                    "cpus:4;mem:4096",
                )
                .await?,
            );
        }
        while agents_active(&client, &address)? < agents {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the agents did not all register within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let registration = started.elapsed();
        // What the wave of registrations freed goes back to the system
        // within half a second (the master's give-back thread): read
        // after that.
        tokio::time::sleep(MEMORY_SETTLES).await;
        let after = resident_bytes(master.process_id())?;
        // HTTP clients poll /state while the framework keeps the agents
        // busy; the master's own figures are sampled beside them.
        let polling = Polling::start(&address);
        let load = load(&ca, &master.pid, tasks).await;
        let polled = polling.stop();
        let load = load?;
        let steady = steady(&ca, &master.pid, &client, &address, agents, STEADY_RUN).await?;
        let dropped = [
            "master/dropped_mailbox_full",
            "master/dropped_send_queue_full",
        ]
        .map(|name| master_metric(&client, &address, name));
        anyhow::Ok((
            registration,
            (after - before) / agents as f64,
            load,
            polled,
            steady,
            dropped,
        ))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (
        registration,
        memory_per_agent,
        (tasks_per_second, mut latencies),
        mut polled,
        mut steady,
        [dropped_at_mailbox, dropped_at_send_queues],
    ) = result?;
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Measured {
        registration,
        memory_per_agent,
        tasks_per_second,
        offer_to_running_p50: percentile(0.5),
        offer_to_running_p99: percentile(0.99),
        state_p50: polled.percentile(0.5),
        state_p99: polled.percentile(0.99),
        state_polls: polled.latencies.len(),
        longest_stall_ms: polled.longest_stall_ms,
        longest_snapshot_ms: polled.longest_snapshot_ms,
        longest_cycle_ms: polled.longest_cycle_ms,
        steady_p50: steady.latencies.percentile(0.5),
        steady_p99: steady.latencies.percentile(0.99),
        steady_launched: steady.launched,
        steady_per_second: steady.per_second,
        steady_run: steady.run,
        steady_stall_ms: steady.stall_ms,
        torn_down_tasks: steady.torn_down_tasks,
        teardown_stall_ms: steady.teardown_stall_ms,
        dropped_at_mailbox: dropped_at_mailbox?,
        dropped_at_send_queues: dropped_at_send_queues?,
    })
}

/// `/state` polled by one HTTP client (every [`POLL_EVERY`] at most), and the master's
/// `master/longest_stall_ms` and `master/snapshot_ms` sampled every
/// 100 ms, from threads of their own.
struct Polling {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Polled>>,
}

/// What polling saw.
#[derive(Default)]
struct Polled {
    /// `GET /state` latencies, ms.
    latencies: Vec<f64>,
    longest_stall_ms: f64,
    longest_snapshot_ms: f64,
    longest_cycle_ms: f64,
}

impl Polled {
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_by(f64::total_cmp);
        self.latencies
            .get(
                ((self.latencies.len() as f64 * p) as usize)
                    .min(self.latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0.0)
    }
}

impl Polling {
    fn start(address: &str) -> Polling {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = || -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into()
        };
        let (state_url, metrics_url) = (
            format!("http://{address}/state"),
            format!("http://{address}/metrics/snapshot"),
        );
        let stopped = stop.clone();
        let poller = std::thread::spawn(move || {
            let client = client();
            let mut polled = Polled::default();
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answered = client.get(&state_url).call().and_then(|mut answer| {
                    answer.body_mut().with_config().limit(1 << 30).read_to_vec()
                });
                if answered.is_ok() {
                    polled.latencies.push(started.elapsed().as_secs_f64() * 1e3);
                }
                // Once a second at most, as the web UI polls.
                if let Some(rest) = POLL_EVERY.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            polled
        });
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let client = client();
            let mut polled = Polled::default();
            while !stopped.load(Ordering::Relaxed) {
                let snapshot: Option<serde_json::Value> = client
                    .get(&metrics_url)
                    .call()
                    .ok()
                    .and_then(|mut answer| answer.body_mut().read_to_string().ok())
                    .and_then(|body| serde_json::from_str(&body).ok());
                if let Some(snapshot) = snapshot {
                    let read = |name: &str| snapshot[name].as_f64().unwrap_or(0.0);
                    polled.longest_stall_ms =
                        polled.longest_stall_ms.max(read("master/longest_stall_ms"));
                    polled.longest_snapshot_ms =
                        polled.longest_snapshot_ms.max(read("master/snapshot_ms"));
                    polled.longest_cycle_ms = polled
                        .longest_cycle_ms
                        .max(read("master/allocation_cycle_ms"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            polled
        });
        Polling {
            stop,
            threads: vec![poller, sampler],
        }
    }

    fn stop(self) -> Polled {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Polled::default();
        for thread in self.threads {
            if let Ok(polled) = thread.join() {
                all.latencies.extend(polled.latencies);
                all.longest_stall_ms = all.longest_stall_ms.max(polled.longest_stall_ms);
                all.longest_snapshot_ms = all.longest_snapshot_ms.max(polled.longest_snapshot_ms);
                all.longest_cycle_ms = all.longest_cycle_ms.max(polled.longest_cycle_ms);
            }
        }
        all
    }
}

/// What the load framework saw.
#[derive(Default)]
struct Load {
    tasks: usize,
    launched: usize,
    /// Tasks ended, and of those how many did not end FINISHED (a launch
    /// the master never received ends LOST once the SDK asks about it).
    finished: usize,
    ended_otherwise: usize,
    first_accept: Option<Instant>,
    last_finished: Option<Instant>,
    /// When the offer each running task was launched on arrived.
    offered: BTreeMap<TaskId, Instant>,
    /// Offer to RUNNING, ms.
    latencies: Vec<f64>,
}

/// Launches short tasks on every offer until `tasks` have been launched,
/// and stops once they all finished.
struct LoadScheduler {
    load: Rc<RefCell<Load>>,
    task: Resources,
}

impl Scheduler for LoadScheduler {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let mut load = self.load.borrow_mut();
        let now = Instant::now();
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut launch = Vec::new();
            // At most TASKS_PER_AGENT an offer, so every agent runs tasks.
            while load.launched < load.tasks
                && launch.len() < TASKS_PER_AGENT
                && let Some(rest) = left.checked_sub(&self.task)
            {
                left = rest;
                let task_id = TaskId::new(format!("t{}", load.launched))
                    .unwrap_or_else(|_| unreachable!("a valid id"));
                load.launched += 1;
                load.offered.insert(task_id.clone(), now);
                launch.push(strata_integration::containers::timed_task(
                    task_id,
                    "load",
                    offer.agent_id.clone(),
                    self.task.clone(),
                    TASK_RUN_MS,
                ));
            }
            if launch.is_empty() {
                driver.decline(&offer.id);
            } else {
                load.first_accept.get_or_insert(now);
                driver.launch(&offer.id, launch);
            }
        }
        // Nothing left to launch: no more offers, as a framework with
        // nothing left to run should ask. Asked again if offers still
        // come (a suppression lost, or undone by subscribing again).
        if load.launched == load.tasks {
            driver.suppress();
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        let mut load = self.load.borrow_mut();
        let now = Instant::now();
        if status.state == TaskState::Running
            && let Some(offered) = load.offered.remove(&status.task_id)
        {
            load.latencies
                .push(now.duration_since(offered).as_secs_f64() * 1000.0);
        }
        if status.state.is_terminal() {
            load.finished += 1;
            if status.state != TaskState::Finished {
                load.ended_otherwise += 1;
            }
            if load.finished == load.tasks {
                load.last_finished = Some(now);
                driver.stop(false);
            }
        }
    }
}

/// Runs `tasks` short tasks through frameworks of the SDK, one for each
/// [`TASKS_PER_FRAMEWORK`] (under the master's bound on one framework's
/// unfinished tasks); tasks FINISHED per second from the first accept to
/// the last end, and each task's offer-to-RUNNING time. Tasks that ended
/// otherwise are not counted, and are reported on standard error.
async fn load(
    ca: &CertificateAuthority,
    master: &Upid,
    tasks: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let node = Node::bind(NodeConfig::new(
        "127.0.0.1:0".parse()?,
        ca.issue(Role::Framework, "load")?,
    ))
    .await?;
    let task: Resources = "cpus:0.1;mem:32".parse()?;
    let frameworks = tasks.div_ceil(TASKS_PER_FRAMEWORK).max(1);
    let mut loads = Vec::new();
    for index in 0..frameworks {
        let share = tasks / frameworks + usize::from(index < tasks % frameworks);
        let load = Rc::new(RefCell::new(Load {
            tasks: share,
            ..Load::default()
        }));
        let shared = load.clone();
        let task = task.clone();
        let name = format!("load-{index}");
        let config = SchedulerConfig::new(master.clone(), load_framework(&name));
        let pid = scheduler::spawn(&node, &name, config, move || LoadScheduler {
            load: shared.clone(),
            task: task.clone(),
        })?;
        loads.push((pid, load));
    }
    let mut first = None::<Instant>;
    let mut last = None::<Instant>;
    let mut latencies = Vec::new();
    let mut ended_otherwise = 0;
    for (pid, load) in loads {
        scheduler::wait(&node, &pid).await?;
        let load = load.borrow();
        let (Some(began), Some(ended)) = (load.first_accept, load.last_finished) else {
            anyhow::bail!("the tasks did not all finish");
        };
        first = Some(first.map_or(began, |first| first.min(began)));
        last = Some(last.map_or(ended, |last| last.max(ended)));
        latencies.extend_from_slice(&load.latencies);
        ended_otherwise += load.ended_otherwise;
    }
    let elapsed = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => anyhow::bail!("no task ran"),
    };
    if ended_otherwise > 0 {
        eprintln!(
            "{ended_otherwise} of the burst's {tasks} tasks ended other than FINISHED (not counted in tasks per second)"
        );
    }
    Ok(((tasks - ended_otherwise) as f64 / elapsed, latencies))
}

/// What the steady load saw.
#[derive(Default)]
struct SteadyLoad {
    /// How many agents there are.
    agents: usize,
    /// Agents offered to it before: the first task on each is the ramp.
    seen: std::collections::BTreeSet<strata_protocol::AgentId>,
    /// Tasks of the ramp not yet RUNNING (or ended).
    ramp_left: usize,
    /// When every agent had its first task running: latencies count for
    /// tasks offered from then on, once the queue the ramp made is gone.
    ramp_done: Option<Instant>,
    launched: usize,
    /// When the offer each task not yet RUNNING was launched on arrived,
    /// and whether its latency counts.
    offered: BTreeMap<TaskId, (Instant, bool)>,
    /// Offer to RUNNING of the tasks that count, ms, and when the first
    /// and last of them were launched.
    latencies: Polled,
    first_counted: Option<Instant>,
    last_counted: Option<Instant>,
    /// Set when the steady load's time has passed: it launches no more.
    done: bool,
    /// Set by the benchmark: tear the framework down now.
    tear_down: bool,
}

impl SteadyLoad {
    /// A task of the ramp is running or ended: the ramp may be over.
    fn ramp_task_ran(&mut self, now: Instant) {
        self.ramp_left = self.ramp_left.saturating_sub(1);
        if self.ramp_left == 0 && self.seen.len() >= self.agents {
            self.ramp_done.get_or_insert(now);
        }
    }
}

/// Launches one task on every offer, of `run` to `3 run`, taking all of
/// it (so an agent is offered again when its task ends, and only then);
/// once every agent has had its first task running, it goes on for
/// `3 run` more, then waits to be torn down.
struct SteadyScheduler {
    load: Rc<RefCell<SteadyLoad>>,
    run: Duration,
}

/// Timer tokens of [`SteadyScheduler`].
const STEADY_OVER: u64 = 0;
const TEAR_DOWN_ASKED: u64 = 1;

impl Scheduler for SteadyScheduler {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let mut load = self.load.borrow_mut();
        let now = Instant::now();
        for offer in offers {
            if load.done || offer.resources.is_empty() {
                driver.decline(&offer.id);
                continue;
            }
            let ramp = load.seen.insert(offer.agent_id.clone());
            let counts = load.ramp_done.is_some();
            if ramp {
                load.ramp_left += 1;
            }
            if counts {
                load.first_counted.get_or_insert(now);
                load.last_counted = Some(now);
            }
            let number = load.launched as u64;
            load.launched += 1;
            let task_id = TaskId::new(format!("{}{number}", if ramp { "r" } else { "s" }))
                .unwrap_or_else(|_| unreachable!("a valid id"));
            load.offered.insert(task_id.clone(), (now, counts));
            let least = self.run.as_millis() as u64;
            let run_ms = least + number * 7_919 % (2 * least + 1);
            driver.launch(
                &offer.id,
                vec![strata_integration::containers::timed_task(
                    task_id,
                    "steady",
                    offer.agent_id.clone(),
                    offer.resources.clone(),
                    run_ms,
                )],
            );
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        let mut load = self.load.borrow_mut();
        let now = Instant::now();
        let first = load.ramp_done.is_none();
        if (status.state == TaskState::Running || status.state.is_terminal())
            && let Some((offered, counts)) = load.offered.remove(&status.task_id)
        {
            if counts && status.state == TaskState::Running {
                load.latencies
                    .latencies
                    .push(now.duration_since(offered).as_secs_f64() * 1000.0);
            }
            if status.task_id.as_str().starts_with('r') {
                load.ramp_task_ran(now);
            }
        }
        if first && load.ramp_done.is_some() {
            driver.set_timer(self.run * 3, STEADY_OVER);
        }
    }

    fn timer(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, token: u64) {
        let mut load = self.load.borrow_mut();
        if token == STEADY_OVER {
            load.done = true;
            driver.suppress();
        } else if load.tear_down {
            driver.stop(false);
            return;
        }
        driver.set_timer(Duration::from_millis(50), TEAR_DOWN_ASKED);
    }
}

/// What [`steady`] measured.
struct Steady {
    run: Duration,
    latencies: Polled,
    launched: usize,
    per_second: f64,
    stall_ms: f64,
    torn_down_tasks: usize,
    teardown_stall_ms: f64,
}

/// Tasks the master counts as neither ended nor unreachable (in one
/// snapshot).
fn tasks_not_ended(client: &ureq::Agent, address: &str) -> anyhow::Result<usize> {
    let body = client
        .get(&format!("http://{address}/metrics/snapshot"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let snapshot: serde_json::Value = serde_json::from_str(&body)?;
    let mut sum = 0.0;
    for state in ["staging", "starting", "running", "killing"] {
        let name = format!("master/tasks_{state}");
        sum += snapshot[&name]
            .as_f64()
            .with_context(|| format!("no {name} in the master's metrics"))?;
    }
    Ok(sum as usize)
}

/// A load framework named `name`: one the master keeps for a minute
/// when its link breaks, as frameworks that run for long do (Marathon
/// keeps a week). With Mesos's default of none, a link broken under the
/// load at 50,000 agents (the benchmark's one thread with the agents'
/// and frameworks' connections falling seconds behind) removed the
/// framework and the run failed; its scheduler subscribes again instead.
fn load_framework(name: &str) -> FrameworkInfo {
    let mut info = FrameworkInfo::new(name, "bench");
    info.failover_timeout = Duration::from_secs(60);
    info
}

/// The steady load while `/state` is polled, then its framework torn
/// down with its tasks running, until the master has ended them all.
async fn steady(
    ca: &CertificateAuthority,
    master: &Upid,
    client: &ureq::Agent,
    address: &str,
    agents: usize,
    run: Duration,
) -> anyhow::Result<Steady> {
    let node = Node::bind(NodeConfig::new(
        "127.0.0.1:0".parse()?,
        ca.issue(Role::Framework, "steady")?,
    ))
    .await?;
    let load = Rc::new(RefCell::new(SteadyLoad {
        agents,
        ..SteadyLoad::default()
    }));
    let shared = load.clone();
    let polling = Polling::start(address);
    let config = SchedulerConfig::new(master.clone(), load_framework("steady"));
    let pid = scheduler::spawn(&node, "steady", config, move || SteadyScheduler {
        load: shared.clone(),
        run,
    })?;
    let started = Instant::now();
    while !load.borrow().done {
        anyhow::ensure!(
            started.elapsed() < run * 3 + Duration::from_secs(600),
            "the steady load never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polled = polling.stop();
    let torn_down_tasks = tasks_not_ended(client, address)?;
    let polling = Polling::start(address);
    load.borrow_mut().tear_down = true;
    scheduler::wait(&node, &pid).await?;
    let asked = Instant::now();
    while tasks_not_ended(client, address)? > 0 {
        anyhow::ensure!(
            asked.elapsed() < Duration::from_secs(300),
            "the torn-down framework's tasks did not all end within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The snapshot that counted none covers the last slice of the
    // removal: the sampler reads it (every 100 ms) before it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let teardown = polling.stop();
    let mut load = load.borrow_mut();
    let per_second = match (load.first_counted, load.last_counted) {
        (Some(first), Some(last)) if last > first => {
            load.latencies.latencies.len() as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    };
    Ok(Steady {
        run,
        latencies: std::mem::take(&mut load.latencies),
        launched: load.launched,
        per_second,
        stall_ms: polled.longest_stall_ms,
        torn_down_tasks,
        teardown_stall_ms: teardown.longest_stall_ms,
    })
}
