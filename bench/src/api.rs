//! The api suite: a framework speaking Apache Mesos's v1 scheduler API
//! (JSON over HTTP, events from a RecordIO stream) against the Rust SDK's
//! way (bincode messages over QUIC), on the same in-process cluster, and
//! the operator API's answers at 10,000 agents.
//!
//! Both frameworks run the same loop: accept every offer with as many
//! `/bin/true` tasks (1 cpu, 32 MB) as fit, acknowledge every update,
//! count TASK_FINISHED. The HTTP one posts its calls from four threads
//! over kept-alive connections and reads its stream on a fifth; the
//! actor one sends from its node. Rates are the best of three runs,
//! interleaved; offer-to-RUNNING is one task at a time, from the offer's
//! arrival to its TASK_RUNNING, the median and 99th percentile.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use strata_agent::Agent;
use strata_master::{Config, MASTER_ID, Master};
use strata_protocol::{
    CommandInfo, Filters, FrameworkInfo, Operation, Resources, TaskId, TaskInfo, TaskKind,
    TaskState, ToMaster, ToScheduler, UpdateId,
};
use strata_runtime::{CertificateAuthority, Node, NodeConfig, Received, SpawnOptions, Upid};

use crate::report::{Better, Measure, Row, Target};

/// Tasks in flight at most (the agent's cpus).
const SLOTS: usize = 64;

/// How long a run waits for the next event before it gives up.
const QUIET: Duration = Duration::from_secs(60);

/// What a framework hears, the same for both ways of speaking.
enum Heard {
    Subscribed,
    Offer {
        id: String,
        agent_id: String,
        cpus: f64,
        mem: f64,
    },
    Update {
        task_id: String,
        state: TaskState,
        /// What acknowledging it takes, when it asks for it.
        ack: Option<(String, String)>,
    },
    Other,
}

/// A framework's side of the conversation.
trait Framework {
    fn next(&mut self) -> anyhow::Result<Heard>;
    fn launch(&mut self, offer_id: &str, agent_id: &str, tasks: &[String]) -> anyhow::Result<()>;
    /// Acknowledges an update of `task_id` from `agent_id` with `uuid`.
    fn acknowledge(&mut self, task_id: &str, ack: &(String, String)) -> anyhow::Result<()>;
}

/// A master serving the v1 API on its HTTP port and one agent with
/// [`SLOTS`] cpus, in an actix system on a thread of their own.
struct Cluster {
    master: Upid,
    http: SocketAddr,
    ca: CertificateAuthority,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    work_dir: std::path::PathBuf,
}

impl Cluster {
    fn start(name: &str) -> anyhow::Result<Cluster> {
        let work_dir = crate::launch::sandbox_root()
            .0
            .join(format!("strata-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work_dir);
        let ca = CertificateAuthority::generate("strata-bench")?;
        let (started, up) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let issue = (
            ca.issue(strata_runtime::Role::Master, "master")?,
            ca.issue(strata_runtime::Role::Agent, "agent")?,
        );
        let agent_dir = work_dir.clone();
        let thread = std::thread::spawn(move || {
            let failed = started.clone();
            let ran = actix_rt::System::new().block_on(async move {
                let (master_tls, agent_tls) = issue;
                let master_node =
                    Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, master_tls)).await?;
                let (api, calls) = strata_master::api::channel();
                let listener = strata_runtime::http::bind("127.0.0.1:0".parse()?).await?;
                let http = listener.local_addr()?;
                let no_more = |_: &strata_runtime::http::Request| {
                    strata_runtime::http::Response::error(404, "no such endpoint")
                };
                let server = actix_rt::spawn(strata_runtime::http::serve(
                    listener,
                    strata_runtime::http::Cors::SameOrigin,
                    strata_master::api::routes(
                        api,
                        strata_master::api::FrameworkAccess::Unauthenticated,
                        no_more,
                    ),
                ));
                let config = Config {
                    allocation_interval: Duration::from_millis(100),
                    ..Config::default()
                };
                let master = master_node.spawn(
                    MASTER_ID,
                    move || Master::new(config.clone(), "bench").serving_api(calls.clone()),
                    SpawnOptions::default(),
                )?;
                let agent_node =
                    Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, agent_tls)).await?;
                let agent = crate::launch::agent_config(
                    master.clone(),
                    &agent_dir,
                    None,
                    strata_agent::isolation::Isolation::Posix,
                )?;
                agent_node.spawn(
                    "agent",
                    move || Agent::new(agent.clone()),
                    SpawnOptions::default(),
                )?;
                let _ = started.send(Ok((master, http)));
                let _ = stopped.await;
                server.abort();
                for node in [&agent_node, &master_node] {
                    node.close(Duration::from_secs(1)).await;
                }
                Ok::<_, anyhow::Error>(())
            });
            if let Err(error) = ran {
                let _ = failed.send(Err(error));
            }
        });
        let (master, http) = up.recv().context("the cluster's thread ended")??;
        Ok(Cluster {
            master,
            http,
            ca,
            stop: Some(stop),
            thread: Some(thread),
            work_dir,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// A framework of the v1 scheduler API: its stream read on one thread,
/// its calls posted from four.
struct HttpFramework {
    events: mpsc::Receiver<anyhow::Result<Value>>,
    calls: mpsc::Sender<String>,
    framework_id: Option<String>,
    /// Set when the run is over: calls still queued are dropped.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HttpFramework {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Calls in flight at once.
const CALLERS: usize = 4;

impl HttpFramework {
    fn subscribe(http: SocketAddr) -> anyhow::Result<HttpFramework> {
        let url = format!("http://{http}/api/v1/scheduler");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let info = json!({"user": "bench", "name": "bench-http", "failover_timeout": 0});
        let response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(
                json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}).to_string(),
            )?;
        anyhow::ensure!(
            response.status().as_u16() == 200,
            "SUBSCRIBE was answered {}",
            response.status()
        );
        let stream_id = response
            .headers()
            .get("mesos-stream-id")
            .and_then(|value| value.to_str().ok())
            .context("no Mesos-Stream-Id")?
            .to_owned();
        let (heard, events) = mpsc::channel();
        let mut body = response.into_body().into_reader();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut reader = strata_api::recordio::RecordReader::new(1 << 24);
            let mut buffer = vec![0; 64 * 1024];
            loop {
                match reader.next_record() {
                    Ok(Some(record)) => {
                        let event = serde_json::from_slice(&record).map_err(Into::into);
                        if heard.send(event).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = heard.send(Err(anyhow::anyhow!("{error}")));
                        return;
                    }
                }
                match body.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(read) => reader.push(&buffer[..read]),
                }
            }
        });
        let (calls, waiting) = mpsc::channel::<String>();
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(waiting));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..CALLERS {
            let (agent, url, stream_id, waiting, done) = (
                agent.clone(),
                url.clone(),
                stream_id.clone(),
                waiting.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                loop {
                    let next = waiting.lock().map(|calls| calls.recv());
                    let Ok(Ok(call)) = next else {
                        return;
                    };
                    if done.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let answered = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("Mesos-Stream-Id", &stream_id)
                        .send(call);
                    match answered {
                        Ok(mut response) if response.status().as_u16() == 202 => {
                            let _ = response.body_mut().read_to_string();
                        }
                        Ok(mut response) => {
                            let body = response.body_mut().read_to_string().unwrap_or_default();
                            eprintln!("a call was answered {}: {body}", response.status());
                        }
                        Err(error) => eprintln!("a call failed: {error}"),
                    }
                }
            });
        }
        Ok(HttpFramework {
            events,
            calls,
            framework_id: None,
            done,
        })
    }

    fn call(&self, call: Value) -> anyhow::Result<()> {
        self.calls
            .send(call.to_string())
            .map_err(|_| anyhow::anyhow!("the callers are gone"))
    }

    fn framework_id(&self) -> anyhow::Result<Value> {
        let id = self.framework_id.as_ref().context("not subscribed")?;
        Ok(json!({ "value": id }))
    }
}

fn scalar(resources: &Value, name: &str) -> f64 {
    resources
        .as_array()
        .into_iter()
        .flatten()
        .filter(|resource| resource["name"] == name)
        .filter_map(|resource| resource["scalar"]["value"].as_f64())
        .sum()
}

impl Framework for HttpFramework {
    fn next(&mut self) -> anyhow::Result<Heard> {
        let event = self
            .events
            .recv_timeout(QUIET)
            .context("the stream went quiet")??;
        Ok(match event["type"].as_str() {
            Some("SUBSCRIBED") => {
                self.framework_id = event["subscribed"]["framework_id"]["value"]
                    .as_str()
                    .map(str::to_owned);
                Heard::Subscribed
            }
            Some("OFFERS") => {
                let offer = &event["offers"]["offers"][0];
                Heard::Offer {
                    id: offer["id"]["value"].as_str().unwrap_or_default().to_owned(),
                    agent_id: offer["agent_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    cpus: scalar(&offer["resources"], "cpus"),
                    mem: scalar(&offer["resources"], "mem"),
                }
            }
            Some("UPDATE") => {
                let status = &event["update"]["status"];
                let state = status["state"]
                    .as_str()
                    .and_then(TaskState::from_mesos_name)
                    .context("an update without a state")?;
                let ack = status["uuid"].as_str().map(|uuid| {
                    (
                        status["agent_id"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        uuid.to_owned(),
                    )
                });
                Heard::Update {
                    task_id: status["task_id"]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    state,
                    ack,
                }
            }
            _ => Heard::Other,
        })
    }

    fn launch(&mut self, offer_id: &str, agent_id: &str, tasks: &[String]) -> anyhow::Result<()> {
        let task_infos: Vec<Value> = tasks
            .iter()
            .map(|task_id| {
                json!({
                    "name": "true",
                    "task_id": {"value": task_id},
                    "agent_id": {"value": agent_id},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                    ],
                    "command": {"shell": false, "value": "/bin/true", "arguments": ["/bin/true"]},
                })
            })
            .collect();
        self.call(json!({
            "type": "ACCEPT",
            "framework_id": self.framework_id()?,
            "accept": {
                "offer_ids": [{"value": offer_id}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": task_infos}}],
                "filters": {"refuse_seconds": 0},
            },
        }))
    }

    fn acknowledge(&mut self, task_id: &str, ack: &(String, String)) -> anyhow::Result<()> {
        self.call(json!({
            "type": "ACKNOWLEDGE",
            "framework_id": self.framework_id()?,
            "acknowledge": {
                "agent_id": {"value": ack.0},
                "task_id": {"value": task_id},
                "uuid": ack.1,
            },
        }))
    }
}

/// A framework of the Rust SDK's protocol: its node in an actix system
/// on a thread of its own, messages in and out through channels.
struct ActorFramework {
    events: mpsc::Receiver<ToScheduler>,
    calls: tokio::sync::mpsc::UnboundedSender<ToMaster>,
    framework_id: Option<strata_protocol::FrameworkId>,
}

impl ActorFramework {
    fn subscribe(cluster: &Cluster) -> anyhow::Result<ActorFramework> {
        let tls = cluster
            .ca
            .issue(strata_runtime::Role::Framework, "scheduler")?;
        let master = cluster.master.clone();
        let (heard, events) = mpsc::channel();
        let (calls, mut to_send) = tokio::sync::mpsc::unbounded_channel::<ToMaster>();
        calls
            .send(ToMaster::Subscribe {
                info: FrameworkInfo::new("bench-actor", "bench"),
                constraints: vec![],
            })
            .map_err(|_| anyhow::anyhow!("no scheduler"))?;
        std::thread::spawn(move || {
            let ran = actix_rt::System::new().block_on(async move {
                let node = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, tls)).await?;
                let mut inbox = node.inbox::<ToScheduler>("scheduler", 65_536)?;
                loop {
                    tokio::select! {
                        received = inbox.recv() => match received {
                            Some(Received::Message(_, message)) => {
                                if heard.send(message).is_err() {
                                    break;
                                }
                            }
                            Some(_) => {}
                            None => break,
                        },
                        call = to_send.recv() => match call {
                            Some(call) => inbox
                                .send(&master, call)
                                .map_err(|error| anyhow::anyhow!("{error}"))?,
                            None => break,
                        },
                    }
                }
                node.close(Duration::from_secs(1)).await;
                Ok::<_, anyhow::Error>(())
            });
            if let Err(error) = ran {
                eprintln!("the scheduler's node failed: {error:#}");
            }
        });
        Ok(ActorFramework {
            events,
            calls,
            framework_id: None,
        })
    }

    fn send(&self, call: ToMaster) -> anyhow::Result<()> {
        self.calls
            .send(call)
            .map_err(|_| anyhow::anyhow!("the scheduler's node is gone"))
    }
}

impl Framework for ActorFramework {
    fn next(&mut self) -> anyhow::Result<Heard> {
        Ok(
            match self
                .events
                .recv_timeout(QUIET)
                .context("the scheduler went quiet")?
            {
                ToScheduler::Subscribed { framework_id, .. } => {
                    self.framework_id = Some(framework_id);
                    Heard::Subscribed
                }
                ToScheduler::Offers(offers) => match offers.into_iter().next() {
                    Some(offer) => Heard::Offer {
                        id: offer.id.to_string(),
                        agent_id: offer.agent_id.to_string(),
                        cpus: offer.resources.cpus().as_f64(),
                        mem: offer.resources.mem_mb().as_f64(),
                    },
                    None => Heard::Other,
                },
                ToScheduler::Update { status } => Heard::Update {
                    task_id: status.task_id.to_string(),
                    state: status.state,
                    ack: match (status.update_id, status.agent_id) {
                        (Some(update_id), Some(agent_id)) => {
                            Some((agent_id.to_string(), format!("{}", update_id.0)))
                        }
                        _ => None,
                    },
                },
                _ => Heard::Other,
            },
        )
    }

    fn launch(&mut self, offer_id: &str, agent_id: &str, tasks: &[String]) -> anyhow::Result<()> {
        let need: Resources = "cpus:1;mem:32".parse()?;
        let tasks = tasks
            .iter()
            .map(|task_id| {
                Ok(TaskInfo {
                    task_id: TaskId::new(task_id.clone())?,
                    name: "true".into(),
                    agent_id: agent_id.parse()?,
                    resources: need.clone(),
                    kind: TaskKind::Command(CommandInfo {
                        shell: false,
                        value: "/bin/true".into(),
                        ..CommandInfo::default()
                    }),
                    labels: Default::default(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.send(ToMaster::Accept {
            framework_id: self.framework_id.clone().context("not subscribed")?,
            offer_ids: vec![offer_id.parse()?],
            operations: vec![Operation::Launch(tasks)],
            filters: Filters {
                refuse: Duration::ZERO,
            },
        })
    }

    fn acknowledge(&mut self, task_id: &str, ack: &(String, String)) -> anyhow::Result<()> {
        self.send(ToMaster::Acknowledge {
            framework_id: self.framework_id.clone().context("not subscribed")?,
            agent_id: ack.0.parse()?,
            task_id: task_id.parse()?,
            update_id: UpdateId(ack.1.parse()?),
        })
    }
}

/// Tasks per second from the first ACCEPT to the last TASK_FINISHED.
fn rate(framework: &mut dyn Framework, total: usize) -> anyhow::Result<f64> {
    let (mut launched, mut finished, mut start) = (0, 0, None);
    while finished < total {
        match framework.next()? {
            Heard::Offer {
                id,
                agent_id,
                cpus,
                mem,
            } => {
                let fit = (cpus.floor() as usize).min((mem / 32.0).floor() as usize);
                let count = fit.min(total - launched);
                let tasks: Vec<String> = (launched..launched + count)
                    .map(|index| format!("true-{index}"))
                    .collect();
                launched += count;
                start.get_or_insert_with(Instant::now);
                framework.launch(&id, &agent_id, &tasks)?;
            }
            Heard::Update {
                task_id,
                state,
                ack,
            } => {
                if let Some(ack) = &ack {
                    framework.acknowledge(&task_id, ack)?;
                }
                match state {
                    TaskState::Finished => finished += 1,
                    state if state.is_terminal() => anyhow::bail!("{task_id} ended {state}"),
                    _ => {}
                }
            }
            Heard::Subscribed | Heard::Other => {}
        }
    }
    Ok(total as f64 / start.context("nothing launched")?.elapsed().as_secs_f64())
}

/// Milliseconds from an offer's arrival to its one task's TASK_RUNNING,
/// `samples` times, one task at a time.
fn round_trips(framework: &mut dyn Framework, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut taken = Vec::with_capacity(samples);
    let mut waiting: Option<(String, Instant)> = None;
    let mut running = false;
    while taken.len() < samples || waiting.is_some() {
        match framework.next()? {
            Heard::Offer { id, agent_id, .. } if waiting.is_none() => {
                let task_id = format!("trip-{}", taken.len());
                let arrived = Instant::now();
                framework.launch(&id, &agent_id, std::slice::from_ref(&task_id))?;
                waiting = Some((task_id, arrived));
                running = false;
            }
            // Declined at once (to be offered again), so what the next
            // task needs is offered when this one has ended.
            Heard::Offer { id, agent_id, .. } => framework.launch(&id, &agent_id, &[])?,
            Heard::Update {
                task_id,
                state,
                ack,
            } => {
                if let Some(ack) = &ack {
                    framework.acknowledge(&task_id, ack)?;
                }
                let Some((waited, arrived)) = &waiting else {
                    continue;
                };
                if *waited != task_id {
                    continue;
                }
                if state == TaskState::Running && !running {
                    running = true;
                    taken.push(arrived.elapsed().as_secs_f64() * 1000.0);
                }
                if state.is_terminal() {
                    anyhow::ensure!(running, "{task_id} ended {state} before running");
                    waiting = None;
                }
            }
            _ => {}
        }
    }
    Ok(taken)
}

fn percentile(mut samples: Vec<f64>, at: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * at).round() as usize;
    samples[index.min(samples.len() - 1)]
}

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let total = ((1000.0 * scale) as usize).max(SLOTS);
    let trips = ((100.0 * scale) as usize).max(10);
    let (mut sdk, mut http): (f64, f64) = (0.0, 0.0);
    let (mut sdk_trips, mut http_trips) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let cluster = Cluster::start(&format!("api-actor-{round}"))?;
        let mut framework = ActorFramework::subscribe(&cluster)?;
        sdk = sdk.max(rate(&mut framework, total)?);
        sdk_trips.extend(round_trips(&mut framework, trips / 3 + 1)?);
        drop(framework);
        drop(cluster);
        let cluster = Cluster::start(&format!("api-http-{round}"))?;
        let mut framework = HttpFramework::subscribe(cluster.http)?;
        http = http.max(rate(&mut framework, total)?);
        http_trips.extend(round_trips(&mut framework, trips / 3 + 1)?);
    }
    let versus_sdk = |unit, better, target| Measure {
        unit,
        baseline_name: "the Rust SDK's framework (bincode over QUIC), same cluster and run",
        better,
        target,
    };
    let mut rows = vec![
        Row::new(
            format!("{total} /bin/true tasks, ACCEPT to FINISHED, v1 HTTP framework"),
            versus_sdk("tasks/s", Better::Higher, Target::Ratio(0.5)),
            sdk,
            http,
        ),
        Row::new(
            format!(
                "offer to TASK_RUNNING p50, v1 HTTP framework ({} tasks one at a time)",
                http_trips.len()
            ),
            versus_sdk("ms", Better::Lower, Target::None),
            percentile(sdk_trips.clone(), 0.5),
            percentile(http_trips.clone(), 0.5),
        ),
        Row::new(
            "offer to TASK_RUNNING p99, v1 HTTP framework".to_owned(),
            versus_sdk("ms", Better::Lower, Target::None),
            percentile(sdk_trips, 0.99),
            percentile(http_trips, 0.99),
        ),
    ];
    rows.extend(operator_latencies(scale)?);
    Ok(rows)
}

/// GET_STATE and the v0 `/master/state` beside `GET /state`, at 10,000
/// agents with a task each.
fn operator_latencies(scale: f64) -> anyhow::Result<Vec<Row>> {
    let agents = ((10_000.0 * scale) as usize).max(10);
    let frameworks = ((1_000.0 * scale) as usize).max(1);
    let books = crate::state::cluster(agents, frameworks)?;
    let state = strata_master::state::snapshot(&books, "master@127.0.0.1:5050", 0, 1);
    // The baseline: Strata's own `/state` JSON of the same snapshot,
    // serialized afresh (as it is once per snapshot).
    let mut serialized = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let json = serde_json::to_vec(&state)?;
        serialized.push(started.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(json);
    }
    let baseline = crate::state::median(serialized);
    let get_state = json!({"type": "GET_STATE"}).to_string();
    let call = format!(
        "POST /api/v1 HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{get_state}",
        get_state.len()
    );
    let medians = crate::state::http_latencies_ms(
        state,
        &[
            call.as_bytes(),
            b"GET /master/state HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
        ],
    )?;
    let measure = Measure {
        unit: "ms",
        baseline_name: "the JSON of Strata's own /state of the same snapshot, made afresh",
        better: Better::Lower,
        target: Target::None,
    };
    Ok(vec![
        Row::new(
            format!("operator API GET_STATE over HTTP, {agents} agents and tasks, median of 20"),
            measure,
            baseline,
            medians[0],
        ),
        Row::new(
            "v0 GET /master/state over HTTP, median of 20".to_owned(),
            measure,
            baseline,
            medians[1],
        ),
    ])
}
