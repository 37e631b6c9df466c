//! The failover suite: two `strata master` processes contending in a
//! three-server ZooKeeper ensemble (Debian's package, run here on loopback
//! ports), 1,000 emulated agents (`strata_integration::emulator`) and a
//! framework of the SDK, all following the leader through ZooKeeper, with
//! a long task running on every agent. The leading master is killed with
//! SIGKILL.
//!
//! Reported: the time from the kill to the other master's election (when
//! ZooKeeper has expired the dead leader's session and a detector sees the
//! other master lead; the session timeout is reported on a line of its
//! own), and from the election to every agent re-registered with the new
//! leader (its `/state` lists them all active); the tasks still running
//! afterwards.
//! Beside them, Apache Mesos's published master fail-over recovery time,
//! 4–8 s (its high-availability documentation), and Strata's target:
//! all agents back within 2 s of the new leader's election.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{FrameworkInfo, Offer, Resources, TaskId, TaskState, TaskStatus};
use strata_runtime::{CertificateAuthority, Node, NodeConfig, Role, TlsMaterial};
use strata_zk::Detector;
use strata_zk::server::LocalEnsemble;

use crate::report::{Better, Measure, Row, Target};

const AGENTS: usize = 1_000;
const AGENTS_PER_NODE: usize = 500;
/// Mesos's default `--zk_session_timeout`.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough to outlast the failover.
const TASK_RUN_MS: u64 = 600_000;

pub fn run(scale: f64) -> anyhow::Result<Vec<Row>> {
    let agents = ((AGENTS as f64 * scale) as usize).max(1);
    let measured = measure(agents)?;
    let seconds = |baseline_name: &'static str, target: Target| Measure {
        unit: "s",
        baseline_name,
        better: Better::Lower,
        target,
    };
    Ok(vec![
        Row::new(
            "ZooKeeper session timeout (a dead leader is replaced after it)".to_owned(),
            seconds("Apache Mesos's default --zk_session_timeout", Target::None),
            SESSION_TIMEOUT.as_secs_f64(),
            measured.session_timeout.as_secs_f64(),
        ),
        Row::new(
            format!("kill -9 of the leading master to another elected, {agents} agents"),
            seconds(
                "Apache Mesos master fail-over recovery, 4-8 s (published; midpoint)",
                Target::None,
            ),
            6.0,
            measured.to_leader.as_secs_f64(),
        ),
        Row::new(
            format!("election to all {agents} agents re-registered with the new leader"),
            seconds("the target: 2 s", Target::Absolute(2.0)),
            2.0,
            measured.to_registered.as_secs_f64(),
        ),
        Row::new(
            format!("tasks running after the fail-over, of {agents}"),
            Measure {
                unit: "tasks",
                baseline_name: "every task started before",
                better: Better::Higher,
                target: Target::Ratio(1.0),
            },
            agents as f64,
            measured.tasks_running as f64,
        ),
    ])
}

struct Measured {
    session_timeout: Duration,
    to_leader: Duration,
    to_registered: Duration,
    tasks_running: usize,
}

/// What the master at `address` answers `/state` with: whether it leads
/// (200), and then its active agents and running tasks.
fn leading(client: &ureq::Agent, address: &str) -> Option<(usize, usize)> {
    let mut response = client.get(&format!("http://{address}/state")).call().ok()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    let body = response.body_mut().read_to_string().ok()?;
    let state: serde_json::Value = serde_json::from_str(&body).ok()?;
    let active = state["agents"]
        .as_array()?
        .iter()
        .filter(|agent| agent["status"] == "active")
        .count();
    let running = state["tasks"]
        .as_array()?
        .iter()
        .filter(|task| task["state"] == "TASK_RUNNING")
        .count();
    Some((active, running))
}

fn measure(agents: usize) -> anyhow::Result<Measured> {
    let strata = crate::recovery::strata_binary()?;
    let dir = std::env::temp_dir().join(format!("strata-bench-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TlsMaterial::development(&dir.join("tls"), Role::Operator, "bootstrap")?;
    let ca = CertificateAuthority::development(&dir.join("tls"))?;
    let ensemble = LocalEnsemble::start(&dir.join("zookeeper"), 3)?;
    let url = ensemble.url("/strata/bench");
    let timeout = format!("{}s", SESSION_TIMEOUT.as_secs());
    let mut masters = Vec::new();
    for index in 0..2 {
        // Each master its own work directory, sharing the development CA.
        let home = dir.join(format!("master-{index}"));
        std::fs::create_dir_all(&home)?;
        std::os::unix::fs::symlink(dir.join("tls"), home.join("tls"))?;
        let home = home.to_str().context("path")?.to_owned();
        masters.push(strata_integration::ChildNode::start_daemon(
            &strata,
            &[
                "master",
                "--port",
                "0",
                "--work-dir",
                &home,
                "--zk",
                &url,
                "--zk-session-timeout",
                &timeout,
            ],
        )?);
    }
    let client: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url: strata_zk::ZkUrl = url.parse()?;
    let result = actix_rt::System::new().block_on(async {
        let connect = strata_zk::election::connector(&url, SESSION_TIMEOUT);
        let session_timeout = connect().await?.timeout();
        let mut leader = Detector::spawn_upids(connect, url.path());
        let first = tokio::time::timeout(Duration::from_secs(60), leader.wait_for(Option::is_some))
            .await
            .context("no master led within a minute")??
            .clone()
            .context("no leader")?;
        let mut emulators = Vec::new();
        for (index, start) in (0..agents).step_by(AGENTS_PER_NODE).enumerate() {
            emulators.push(
                strata_integration::emulator::emulate_following(
                    &ca,
                    &first,
                    Some(leader.clone()),
                    &format!("emulated-{index}"),
                    AGENTS_PER_NODE.min(agents - start),
                    "cpus:1;mem:1024",
                )
                .await?,
            );
        }
        let address = first.addr().to_string();
        let started = Instant::now();
        while leading(&client, &address).map_or(0, |(active, _)| active) < agents {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the agents did not all register within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A long task on every agent, from a framework that follows the
        // leader too.
        let running = Rc::new(RefCell::new(Running::default()));
        let node = Node::bind(NodeConfig::new(
            "127.0.0.1:0".parse()?,
            ca.issue(Role::Framework, "failover")?,
        ))
        .await?;
        let mut info = FrameworkInfo::new("failover", "bench");
        info.failover_timeout = Duration::from_secs(3600);
        let mut config = SchedulerConfig::new(first.clone(), info);
        config.leader = Some(leader.clone());
        let shared = running.clone();
        let task: Resources = "cpus:1;mem:64".parse()?;
        let _framework = scheduler::spawn(&node, "failover", config, move || LongTasks {
            running: shared.clone(),
            tasks: agents,
            task: task.clone(),
        })?;
        while running.borrow().running.len() < agents {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the tasks did not all start within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Kill the leader; time the other master's election and the
        // agents' return.
        let (dead, other) = if masters[0].pid.addr() == first.addr() {
            (0, 1)
        } else {
            (1, 0)
        };
        let other = masters[other].pid.addr().to_string();
        let killed = Instant::now();
        masters[dead].kill()?;
        // Elected once ZooKeeper expired the dead leader's session and
        // the other master's node is the lowest: the detector sees it.
        let other_pid = masters[1 - dead].pid.clone();
        tokio::time::timeout(
            Duration::from_secs(120),
            leader.wait_for(|now| now.as_ref().is_some_and(|pid| pid.same_name(&other_pid))),
        )
        .await
        .context("no master led within 2 minutes of the kill")??;
        let elected = Instant::now();
        let tasks_running = loop {
            let (active, tasks) = leading(&client, &other).unwrap_or_default();
            if active == agents {
                break tasks;
            }
            anyhow::ensure!(
                elected.elapsed() < Duration::from_secs(600),
                "the agents did not all re-register within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let to_registered = elected.elapsed();
        drop(emulators);
        anyhow::Ok(Measured {
            session_timeout,
            to_leader: elected.duration_since(killed),
            to_registered,
            tasks_running,
        })
    });
    drop(masters);
    drop(ensemble);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What the framework saw.
#[derive(Default)]
struct Running {
    launched: usize,
    running: std::collections::BTreeSet<TaskId>,
}

/// Launches one long task on each offer until `tasks` are launched.
struct LongTasks {
    running: Rc<RefCell<Running>>,
    tasks: usize,
    task: Resources,
}

impl Scheduler for LongTasks {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let mut running = self.running.borrow_mut();
        for offer in offers {
            if running.launched >= self.tasks || offer.resources.checked_sub(&self.task).is_none() {
                driver.decline(&offer.id);
                continue;
            }
            let task_id = TaskId::new(format!("long-{}", running.launched))
                .unwrap_or_else(|_| unreachable!("a valid id"));
            running.launched += 1;
            driver.launch(
                &offer.id,
                vec![strata_integration::containers::timed_task(
                    task_id,
                    "long",
                    offer.agent_id.clone(),
                    self.task.clone(),
                    TASK_RUN_MS,
                )],
            );
        }
    }

    fn status_update(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if status.state == TaskState::Running {
            self.running
                .borrow_mut()
                .running
                .insert(status.task_id.clone());
        }
    }
}
