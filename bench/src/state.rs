//! The state suite: what `/state` costs at 10,000 agents.
//!
//! A master's books are filled through their own inputs: 1,000
//! frameworks subscribe and 10,000 agents re-register, each with a
//! running task of one of them. Then three figures: the time the master's
//! process spends taking the snapshot it publishes every allocation tick
//! (the only `/state` work done inside it), the time to serialize that
//! snapshot to JSON, and the latency of `GET /state` over HTTP from the
//! snapshot, the median of 20; beside them, the time to bring the views
//! up to date after status updates while a snapshot still shares them
//! (what the master does between two snapshots). The baseline is what
//! answering `/state` inside the master's process would hold it up for
//! (snapshot and JSON together), which Apache Mesos's single-threaded
//! master does. Last, a framework with a running task on each agent is
//! torn down: the longest input of its removal, which goes a slice an
//! input, beside the whole removal, which one input once held.

use std::time::Instant;

use strata_master::books::{Books, Command, Config, Input};
use strata_master::state::State;
use strata_protocol::{
    AgentId, AgentInfo, CommandInfo, FrameworkInfo, Task, TaskId, TaskInfo, TaskKind, TaskState,
    ToMaster, ToScheduler,
};
use strata_runtime::Upid;

use crate::report::{Better, Measure, Row, Target};

fn upid(text: &str) -> anyhow::Result<Upid> {
    Ok(text.parse()?)
}

/// Books with `agents` agents, `frameworks` frameworks and a running
/// task on every agent. The agents arrive as after a master restart,
/// re-registering with their tasks, which the books adopt: that fills
/// them in linear time.
pub(crate) fn cluster(agents: usize, frameworks: usize) -> anyhow::Result<Books> {
    let mut books = Books::new(Config::default(), "bench");
    let now = Instant::now();
    books.set_clock(now, 1_700_000_000_000);
    let mut framework_ids = Vec::with_capacity(frameworks);
    for index in 0..frameworks {
        let pid = upid(&format!("scheduler-{index}@10.200.0.1:{}", 10_000 + index))?;
        let out = books.handle(
            now,
            Input::Received {
                sender: std::sync::Arc::new(strata_runtime::PeerIdentity::simulated(
                    Some(strata_runtime::Role::Framework),
                    "bench",
                )),
                from: pid,
                message: ToMaster::Subscribe {
                    info: FrameworkInfo::new(format!("framework-{index}"), "bench"),
                    constraints: vec![],
                },
            },
        );
        framework_ids.extend(out.into_iter().filter_map(|command| match command {
            Command::ToScheduler(_, ToScheduler::Subscribed { framework_id, .. }) => {
                Some(framework_id)
            }
            _ => None,
        }));
    }
    for index in 0..agents {
        let pid = agent_pid(index)?;
        let agent_id = AgentId::new(format!("bench-S{index}"))?;
        let info = AgentInfo {
            id: Some(agent_id.clone()),
            hostname: format!("host-{index}"),
            resources: "cpus:16;mem:65536;disk:409600;ports:[31000-32000]".parse()?,
            attributes: format!("rack:r{};zone:z{}", index % 100, index % 3).parse()?,
        };
        let task = Task {
            info: TaskInfo {
                task_id: TaskId::new(format!("task-{index}"))?,
                name: format!("task-{index}"),
                agent_id,
                resources: "cpus:1;mem:1024".parse()?,
                kind: TaskKind::Command(CommandInfo::shell("sleep 1000")),
                labels: Default::default(),
            },
            framework_id: framework_ids[index % framework_ids.len().max(1)].clone(),
            state: TaskState::Running,
            status: None,
        };
        books.handle(
            now,
            from_agent(
                pid,
                ToMaster::ReregisterAgent {
                    info,
                    tasks: vec![task],
                },
            ),
        );
    }
    Ok(books)
}

/// Status updates between two snapshots in [`run`]: 64, a small
/// fraction of what a second brings at scale (the master brings its
/// views up to date when a snapshot is due, a slice at a time).
const UPDATES: usize = 64;

/// [`UPDATES`] status updates of running tasks, spread over the
/// `agents` agents of [`cluster`]: each says the task still runs, with a
/// new message, as a health report would.
fn status_updates(books: &mut Books, agents: usize, round: u64) -> anyhow::Result<()> {
    let now = Instant::now();
    let tasks: Vec<(strata_protocol::FrameworkId, TaskId, AgentId)> = books
        .frameworks()
        .iter()
        .flat_map(|(framework_id, framework)| {
            framework.tasks.values().map(|task| {
                (
                    framework_id.clone(),
                    task.info.task_id.clone(),
                    task.info.agent_id.clone(),
                )
            })
        })
        .collect();
    let step = (tasks.len() / UPDATES).max(1);
    for (number, (framework_id, task_id, agent_id)) in
        tasks.into_iter().step_by(step).take(UPDATES).enumerate()
    {
        let index: usize = agent_id
            .as_str()
            .strip_prefix("bench-S")
            .and_then(|index| index.parse().ok())
            .unwrap_or(0)
            % agents.max(1);
        books.handle(
            now,
            from_agent(
                agent_pid(index)?,
                ToMaster::StatusUpdate {
                    framework_id,
                    status: strata_protocol::TaskStatus {
                        task_id,
                        state: TaskState::Running,
                        source: strata_protocol::Source::Executor,
                        reason: None,
                        message: format!("healthy, round {round}"),
                        agent_id: Some(agent_id),
                        executor_id: None,
                        update_id: Some(strata_protocol::UpdateId(
                            u128::from(round) << 32 | number as u128,
                        )),
                        timestamp_ms: 1_700_000_000_000 + round,
                        sandbox: None,
                    },
                },
            ),
        );
    }
    Ok(())
}

/// Allocation slices timed in [`views_after_allocation_slice`].
const SLICES: usize = 9;

/// The time the books take for a slice of an allocation pass, and the
/// time to bring `views` up to date after it while the snapshot before
/// still shares the views (the medians of [`SLICES`], each starting
/// where the last ended), in milliseconds: what the views of a slice at
/// scale cost (the master now redoes them when a snapshot is due, at
/// most 1,000 a turn). Every framework suppresses offers and declines
/// those it holds; then one revives, which starts a pass, whose first
/// slice offers it agents, and declines them.
fn views_after_allocation_slice(
    books: &mut Books,
    views: &mut strata_master::state::Views,
) -> anyhow::Result<(f64, f64)> {
    let now = Instant::now();
    let frameworks: Vec<(strata_protocol::FrameworkId, Upid)> = books
        .frameworks()
        .iter()
        .filter_map(|(id, framework)| Some((id.clone(), framework.pid.clone()?)))
        .collect();
    let mut declines: std::collections::BTreeMap<_, Vec<_>> = Default::default();
    for (offer_id, entry) in books.offers() {
        declines
            .entry(entry.offer.framework_id.clone())
            .or_default()
            .push(offer_id.clone());
    }
    let from_framework = |pid: &Upid, message| Input::Received {
        sender: std::sync::Arc::new(strata_runtime::PeerIdentity::simulated(
            Some(strata_runtime::Role::Framework),
            "bench",
        )),
        from: pid.clone(),
        message,
    };
    let decline = |framework_id: &strata_protocol::FrameworkId, offer_ids| ToMaster::Decline {
        framework_id: framework_id.clone(),
        offer_ids,
        filters: strata_protocol::Filters::default(),
    };
    for (framework_id, pid) in &frameworks {
        let framework_id = framework_id.clone();
        books.handle(
            now,
            from_framework(pid, ToMaster::Suppress { framework_id }),
        );
    }
    for (framework_id, pid) in &frameworks {
        let offer_ids = declines.remove(framework_id).unwrap_or_default();
        books.handle(now, from_framework(pid, decline(framework_id, offer_ids)));
    }
    anyhow::ensure!(books.offers().is_empty(), "offers are left after declines");
    let (framework_id, pid) = frameworks
        .first()
        .ok_or_else(|| anyhow::anyhow!("no framework"))?;
    let (mut slice_ms, mut views_ms) = (Vec::new(), Vec::new());
    for _ in 0..SLICES {
        let held = views.refresh(books, "master@127.0.0.1:5050", 0, 1);
        let revive = ToMaster::Revive {
            framework_id: framework_id.clone(),
        };
        let started = Instant::now();
        books.handle(now, from_framework(pid, revive));
        slice_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let offer_ids: Vec<_> = books.offers().keys().cloned().collect();
        anyhow::ensure!(
            offer_ids.len() == books.config().allocation_slice.min(books.agents().len()),
            "the slice offered {} agents",
            offer_ids.len()
        );
        let started = Instant::now();
        views.update(books);
        views_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(held);
        books.handle(now, from_framework(pid, decline(framework_id, offer_ids)));
        anyhow::ensure!(books.offers().is_empty(), "offers are left after declines");
    }
    Ok((median(slice_ms), median(views_ms)))
}

/// The process id of agent number `index` of [`cluster`].
fn agent_pid(index: usize) -> anyhow::Result<Upid> {
    upid(&format!(
        "agent@10.{}.{}.{}:5051",
        index / 65_536,
        (index / 256) % 256,
        index % 256
    ))
}

/// `message` from the agent at `pid`, as its certificate names it.
fn from_agent(pid: Upid, message: ToMaster) -> Input {
    Input::Received {
        sender: std::sync::Arc::new(strata_runtime::PeerIdentity::simulated(
            Some(strata_runtime::Role::Agent),
            &pid.to_string(),
        )),
        from: pid,
        message,
    }
}

pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let agents = ((10_000.0 * scale) as usize).max(10);
    let frameworks = ((1_000.0 * scale) as usize).max(1);
    let mut books = cluster(agents, frameworks)?;
    let tasks: usize = books
        .frameworks()
        .values()
        .map(|framework| framework.tasks.len())
        .sum();
    let mut snapshot_ms = Vec::new();
    let mut json_ms = Vec::new();
    let mut state = None;
    for _ in 0..5 {
        let started = Instant::now();
        let taken = strata_master::state::snapshot(&books, "master@127.0.0.1:5050", 0, 1);
        snapshot_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let json = serde_json::to_vec(&taken)?;
        json_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        state = Some((taken, json.len()));
    }
    // What the master does: views kept up to date with the books'
    // changes, a snapshot that shares them.
    let mut views = strata_master::state::Views::default();
    let started = Instant::now();
    views.update(&mut books);
    let first_views_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut shared_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let shared = views.refresh(&mut books, "master@127.0.0.1:5050", 0, 1);
        shared_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            shared.agents.len() == agents && shared.tasks.len() == tasks,
            "the shared snapshot lacks agents or tasks"
        );
    }
    let shared = median(shared_ms);
    // What the master does between snapshots: status updates of tasks
    // spread over the cluster, then the views brought up to date while
    // the snapshot before still shares their lists.
    let mut after_updates_ms = Vec::new();
    for round in 0..5u64 {
        let held = views.refresh(&mut books, "master@127.0.0.1:5050", 0, 1);
        status_updates(&mut books, agents, round)?;
        let started = Instant::now();
        views.update(&mut books);
        after_updates_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(held);
    }
    let after_updates = median(after_updates_ms);
    let (slice, after_slice) = views_after_allocation_slice(&mut books, &mut views)?;
    drop(views);
    drop(books);
    let (teardown_longest, teardown_all, teardown_inputs) = framework_teardown(agents)?;
    let (state, bytes) = state.ok_or_else(|| anyhow::anyhow!("no snapshot taken"))?;
    let snapshot = median(snapshot_ms);
    let json = median(json_ms);
    let http = http_latencies_ms(state, &[GET_STATE])?[0];
    let shape = format!("{agents} agents, {frameworks} frameworks, {tasks} tasks");
    let context = |unit| Measure {
        unit,
        baseline_name: "answering /state inside the master's process (snapshot + JSON)",
        better: Better::Lower,
        target: Target::None,
    };
    Ok(vec![
        Row::new(
            format!("master process time per snapshot, {shape}"),
            Measure {
                target: Target::Ratio(1.0),
                ..context("ms")
            },
            snapshot + json,
            snapshot,
        ),
        Row::new(
            format!(
                "master process time per snapshot made of changes, none since the last, {shape}"
            ),
            Measure {
                target: Target::Ratio(1.0),
                ..context("ms")
            },
            snapshot + json,
            shared,
        ),
        Row::new(
            format!(
                "bringing the views up to date after {UPDATES} status updates, a snapshot held, {shape}"
            ),
            context("ms"),
            snapshot + json,
            after_updates,
        ),
        Row::new(
            format!(
                "an allocation slice of {} agents in the books, {shape}",
                Config::default().allocation_slice.min(agents)
            ),
            context("ms"),
            snapshot + json,
            slice,
        ),
        Row::new(
            format!(
                "bringing the views up to date after an allocation slice of {} agents, a snapshot held, {shape}",
                Config::default().allocation_slice.min(agents)
            ),
            context("ms"),
            snapshot + json,
            after_slice,
        ),
        Row::new(
            format!(
                "removing a framework with a running task on each of {agents} agents: the master's longest turn, an input or a slice of the views' update (of {teardown_inputs})"
            ),
            Measure {
                unit: "ms",
                baseline_name: "all the removal's turns together (once one input)",
                better: Better::Lower,
                target: Target::None,
            },
            teardown_all,
            teardown_longest,
        ),
        Row::new(
            format!("bringing the master's views up to date from nothing (once), {shape}"),
            context("ms"),
            snapshot + json,
            first_views_ms,
        ),
        Row::new(
            format!(
                "JSON of /state ({:.1} MB), outside the master",
                bytes as f64 / 1e6
            ),
            context("ms"),
            snapshot + json,
            json,
        ),
        Row::new(
            "GET /state over HTTP from the snapshot, median of 20".to_owned(),
            context("ms"),
            snapshot + json,
            http,
        ),
    ])
}

/// Serves `state` as the master does (operator API in front of
/// `/state`) and times each of `requests` (whole HTTP/1.1 requests),
/// the median of 20 each, in milliseconds.
pub(crate) fn http_latencies_ms(state: State, requests: &[&[u8]]) -> anyhow::Result<Vec<f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (publisher, snapshots) = strata_master::state::channel();
    publisher.publish(std::sync::Arc::new(state), 0);
    let (api, _calls) = strata_master::api::channel();
    let operator = strata_master::operator::OperatorApi {
        api,
        snapshots: snapshots.clone(),
        authorizer: Default::default(),
        flags: Default::default(),
        writes: strata_master::operator::WriteAccess::Off,
    };
    runtime.block_on(async {
        let listener = strata_runtime::http::bind("127.0.0.1:0".parse()?).await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(strata_runtime::http::serve(
            listener,
            strata_runtime::http::Cors::SameOrigin,
            strata_master::operator::routes(
                operator,
                strata_master::state::routes(snapshots, Default::default()),
            ),
        ));
        let mut medians = Vec::new();
        for request in requests {
            let mut samples = Vec::new();
            for _ in 0..20 {
                let started = Instant::now();
                let mut stream = tokio::net::TcpStream::connect(address).await?;
                stream.write_all(request).await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
                if !answer.starts_with(b"HTTP/1.1 200") {
                    anyhow::bail!(
                        "{} failed: {}",
                        String::from_utf8_lossy(request)
                            .lines()
                            .next()
                            .unwrap_or_default(),
                        String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    );
                }
            }
            medians.push(median(samples));
        }
        server.abort();
        Ok(medians)
    })
}

/// `GET /state`, as a client that closes the connection sends it.
pub(crate) const GET_STATE: &[u8] =
    b"GET /state HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// A framework with a running task on each of `agents` agents torn down
/// by its scheduler: the master's longest turn of the removal and all of
/// them together, in milliseconds, and how many turns it took. A turn is
/// an input to the books or a slice of the views' update, which the
/// master makes when a snapshot is due: here once after each input, so
/// that every turn of it is counted, however the snapshots fall.
fn framework_teardown(agents: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut books = cluster(agents, 1)?;
    let mut views = strata_master::state::Views::default();
    views.update(&mut books);
    let (framework_id, pid) = books
        .frameworks()
        .iter()
        .find_map(|(id, framework)| Some((id.clone(), framework.pid.clone()?)))
        .ok_or_else(|| anyhow::anyhow!("no framework with a scheduler"))?;
    let mut input = Some(Input::Received {
        sender: std::sync::Arc::new(strata_runtime::PeerIdentity::simulated(
            Some(strata_runtime::Role::Framework),
            "bench",
        )),
        from: pid,
        message: ToMaster::Teardown {
            framework_id: framework_id.clone(),
        },
    });
    let mut inputs_ms = Vec::new();
    while let Some(next) = input.take() {
        let started = Instant::now();
        books.handle(Instant::now(), next);
        inputs_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        loop {
            let started = Instant::now();
            let done = views.update_some(&mut books, strata_master::process::VIEWS_SLICE);
            inputs_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            if done {
                break;
            }
        }
        if books.work_left() {
            input = Some(Input::Continue);
        }
        anyhow::ensure!(
            inputs_ms.len() <= 3 * agents + 10,
            "the removal never ended"
        );
    }
    anyhow::ensure!(
        !books.frameworks().contains_key(&framework_id),
        "the framework is still there"
    );
    let longest = inputs_ms.iter().copied().fold(0.0, f64::max);
    Ok((longest, inputs_ms.iter().sum(), inputs_ms.len()))
}
