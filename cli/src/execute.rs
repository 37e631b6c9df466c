//! `strata execute`: run a command on the cluster, like `mesos-execute`.
//!
//! A small framework, a scheduler of the SDK
//! ([`strata_frameworks::scheduler`]): it subscribes, takes offers that fit
//! its tasks (resources, `--constraint`s as standing filters), launches
//! them, prints one line per status update as it arrives (the SDK
//! acknowledges it). Exit
//! codes: 0 when every task FINISHED, 1 when any ended otherwise (or the
//! master could not be reached), 2 when the tasks could not be placed
//! within `--timeout`, with what was asked and the largest offer seen.
//!
//! It says on stderr which framework it subscribed as. When it loses the
//! master it subscribes again as that framework (giving up after
//! `--timeout`) and reconciles its tasks; messages from an older master
//! epoch are ignored. `--framework-id` takes over a framework whose
//! earlier `strata execute` stopped within its `--failover-timeout`: it
//! follows the tasks `--name` and `--instances` name, learning their
//! states by reconciliation, instead of launching them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::offers::MAX_TASKS_PER_ACCEPT;
use strata_protocol::{
    AgentId, AttributeValue, Capability, CommandInfo, Filters, FrameworkId, FrameworkInfo, Offer,
    OfferConstraint, Operation, Reason, Resources, Source, TaskId, TaskInfo, TaskKind, TaskState,
    TaskStatus, ToMaster,
};
use strata_runtime::{Node, NodeConfig};

#[derive(Debug, clap::Args)]
pub struct ExecuteArgs {
    /// The task's name; also its id (with `-N` appended for several instances).
    #[arg(long)]
    pub name: String,
    /// The shell command to run.
    #[arg(long, required_unless_present = "framework_id")]
    pub command: Option<String>,
    /// The master's address, HOST:PORT, or zk://HOST:PORT[,...]/PATH to
    /// follow whichever master leads in ZooKeeper.
    #[arg(long, env = "STRATA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: crate::leader::MasterAddress,
    /// Resources each instance needs.
    #[arg(long, env = "STRATA_RESOURCES", default_value = "cpus:0.1;mem:32", value_parser = parse_resources)]
    pub resources: Resources,
    /// How many instances to run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub instances: u32,
    /// The role to be offered resources in.
    #[arg(long, env = "STRATA_ROLE", default_value = "*")]
    pub role: String,
    /// Only agents whose attribute has this value: ATTR:VALUE (repeatable).
    #[arg(long = "constraint", value_parser = parse_constraint)]
    pub constraints: Vec<(String, String)>,
    /// Give up placing the tasks after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Ask agents to checkpoint the tasks.
    #[arg(long)]
    pub checkpoint: bool,
    /// Seconds the master keeps the tasks if this command disconnects.
    #[arg(long, default_value_t = 0.0)]
    pub failover_timeout: f64,
    /// See UNREACHABLE instead of LOST when an agent is partitioned away.
    #[arg(long)]
    pub partition_aware: bool,
    /// Take over this framework, whose earlier `strata execute` stopped
    /// (within its --failover-timeout): follow its tasks, named by --name
    /// and --instances, to their end instead of launching them.
    #[arg(long, value_parser = parse_framework_id)]
    pub framework_id: Option<FrameworkId>,
    /// The framework's principal: who it authenticates as, which the
    /// master's ACLs name. With --tls-dir it must be the certificate's
    /// name; the development CA issues a certificate for it.
    #[arg(long, env = "STRATA_PRINCIPAL", default_value = "strata-execute")]
    pub principal: String,
    /// The user the tasks run as on agents that switch users (default:
    /// the user running this command).
    #[arg(long, env = "STRATA_USER")]
    pub user: Option<String>,
    /// Run the command in this image: a Docker reference
    /// (`busybox`, `registry:5000/team/app:1`, `app@sha256:…`) or an
    /// absolute path, on the agent, to an OCI image layout or a `docker
    /// save` / OCI archive. Its sandbox is at /mnt/mesos/sandbox.
    #[arg(long, env = "STRATA_IMAGE", value_parser = parse_image)]
    pub image: Option<String>,
    #[command(flatten)]
    pub tls: crate::TlsSource,
}

fn parse_image(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        strata_agent::images::reference::parse(text)?;
    }
    strata_protocol::ContainerInfo {
        image: Some(text.to_owned()),
        ..Default::default()
    }
    .validate()?;
    Ok(text.to_owned())
}

fn parse_framework_id(text: &str) -> Result<FrameworkId, String> {
    FrameworkId::new(text).map_err(|e| e.to_string())
}

fn parse_resources(text: &str) -> Result<Resources, String> {
    let resources: Resources = text
        .parse()
        .map_err(|e: strata_protocol::ResourcesError| e.to_string())?;
    if resources.is_empty() {
        return Err("a task must ask for some resources".into());
    }
    Ok(resources)
}

fn parse_constraint(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!("constraint {text:?} is not ATTR:VALUE")),
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("--{flag} must be a number of seconds, not {value}"))
}

/// Exit codes.
pub const FINISHED: u8 = 0;
pub const FAILED: u8 = 1;
pub const NOT_PLACED: u8 = 2;

fn clock() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    let seconds_today = (millis / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds_today / 3600,
        (seconds_today / 60) % 60,
        seconds_today % 60,
        millis % 1000
    )
}

fn print_status(status: &TaskStatus) {
    let agent = status
        .agent_id
        .as_ref()
        .map(AgentId::to_string)
        .unwrap_or_else(|| "-".into());
    let mut message = match status.reason {
        Some(reason) if status.state.is_terminal() => format!(" reason={}", reason.mesos_name()),
        _ => String::new(),
    };
    if !status.message.is_empty() {
        message.push(' ');
        message.push_str(&status.message);
    }
    println!(
        "{} {} {} agent={agent}{message}",
        clock(),
        status.task_id,
        status.state
    );
}

struct Execution {
    args: ExecuteArgs,
    /// Where the master is, as given.
    master: String,
    /// For placing the tasks, and for a lost master to come back.
    timeout: Duration,
    framework_id: Option<FrameworkId>,
    /// Tasks not placed yet, in the order they are tried.
    pending: Vec<TaskId>,
    states: BTreeMap<TaskId, TaskState>,
    largest_offer: Option<Resources>,
    /// Updates printed, by task and update id.
    acknowledged: BTreeSet<(TaskId, u128)>,
    /// How many times the master was lost: the token of the latest
    /// loss's deadline.
    lost: u64,
    /// The exit code, once decided.
    result: Option<u8>,
}

impl Execution {
    fn admits(&self, offer: &Offer) -> bool {
        self.args.constraints.iter().all(|(name, value)| {
            offer
                .attributes
                .get(name)
                .is_some_and(|have| have.as_text() == *value)
        })
    }

    /// Launches what fits in `offer`; declines it otherwise.
    fn use_offer(&mut self, offer: Offer) -> ToMaster {
        let framework_id = self
            .framework_id
            .clone()
            .unwrap_or_else(|| offer.framework_id.clone());
        let bigger = self.largest_offer.as_ref().is_none_or(|largest| {
            offer.resources.cpus() > largest.cpus() || offer.resources.mem_mb() > largest.mem_mb()
        });
        if bigger {
            self.largest_offer = Some(offer.resources.clone());
        }
        let mut left = offer.resources.clone();
        let mut tasks = Vec::new();
        if self.admits(&offer) {
            while tasks.len() < MAX_TASKS_PER_ACCEPT
                && let Some(task_id) = self.pending.first().cloned()
            {
                let Some(rest) = left.checked_sub(&self.args.resources) else {
                    break;
                };
                left = rest;
                self.pending.remove(0);
                self.states.insert(task_id.clone(), TaskState::Staging);
                tasks.push(TaskInfo {
                    task_id,
                    name: self.args.name.clone(),
                    agent_id: offer.agent_id.clone(),
                    resources: self.args.resources.clone(),
                    // Launching only happens without --framework-id, when
                    // --command is required.
                    kind: TaskKind::Command(CommandInfo {
                        container: self.args.image.clone().map(|image| {
                            strata_protocol::ContainerInfo {
                                image: Some(image),
                                ..Default::default()
                            }
                        }),
                        ..CommandInfo::shell(self.args.command.clone().unwrap_or_default())
                    }),
                    labels: Default::default(),
                });
            }
        }
        if tasks.is_empty() {
            return ToMaster::Decline {
                framework_id,
                offer_ids: vec![offer.id],
                filters: Filters {
                    refuse: Duration::from_secs(1),
                },
            };
        }
        ToMaster::Accept {
            framework_id,
            offer_ids: vec![offer.id],
            operations: vec![Operation::Launch(tasks)],
            filters: Filters::default(),
        }
    }

    /// Whether `status` says the master dropped a launch because its offer
    /// had gone (rescinded while the accept was on its way, say when the
    /// agent re-registered): the task never started, so it waits for
    /// another offer instead of ending.
    fn relaunch_if_offer_gone(&mut self, status: &TaskStatus) -> bool {
        let gone = status.source == Source::Master
            && status.reason == Some(Reason::InvalidOffers)
            && matches!(status.state, TaskState::Dropped | TaskState::Lost)
            && self.states.get(&status.task_id) == Some(&TaskState::Staging);
        if gone {
            self.states.remove(&status.task_id);
            self.pending.push(status.task_id.clone());
        }
        gone
    }

    fn done(&self) -> bool {
        self.pending.is_empty() && self.states.values().all(|state| state.is_terminal())
    }

    fn explain_not_placed(&self) -> String {
        let asked = format!(
            "{} of {} instance(s) could not be placed within {} s; each needs {}",
            self.pending.len(),
            self.args.instances,
            self.args.timeout,
            self.args.resources
        );
        let constraints = if self.args.constraints.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self
                .args
                .constraints
                .iter()
                .map(|(name, value)| format!("{name}:{value}"))
                .collect();
            format!(" on agents with {}", list.join(", "))
        };
        let seen = match &self.largest_offer {
            Some(largest) => format!("; the largest offer seen was {largest}"),
            None => "; no offer arrived (no agent has free resources for this role, or none passes the constraints)".into(),
        };
        format!("{asked}{constraints}{seen}")
    }
}

/// Timer token: the tasks must be placed by now.
const PLACEMENT_DEADLINE: u64 = 0;

/// `strata execute` as a scheduler of the SDK, which subscribes (again
/// after losing the master), follows one master epoch, acknowledges
/// updates and reconciles; this decides what to launch, prints what
/// happens and ends with the run's exit code.
struct Execute {
    execution: Rc<RefCell<Execution>>,
}

impl Execute {
    /// Ends the run with exit code `code`, tearing the framework down
    /// when asked.
    fn finish(&self, driver: &mut SchedulerDriver<'_, '_, Self>, code: u8, teardown: bool) {
        self.execution.borrow_mut().result = Some(code);
        driver.stop(!teardown);
    }
}

impl Scheduler for Execute {
    fn started(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>) {
        let timeout = self.execution.borrow().timeout;
        driver.set_timer(timeout, PLACEMENT_DEADLINE);
    }

    fn timer(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, token: u64) {
        let execution = self.execution.borrow();
        if token == PLACEMENT_DEADLINE {
            if !execution.pending.is_empty() {
                eprintln!("strata execute: {}", execution.explain_not_placed());
                drop(execution);
                self.finish(driver, NOT_PLACED, true);
            }
        } else if token == execution.lost && !driver.subscribed() {
            eprintln!(
                "strata execute: the master at {} did not come back within {} s",
                execution.master,
                execution.timeout.as_secs_f64()
            );
            drop(execution);
            self.finish(driver, FAILED, false);
        }
    }

    fn registered(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, framework_id: &FrameworkId) {
        eprintln!("strata execute: subscribed as framework {framework_id}");
        self.execution.borrow_mut().framework_id = Some(framework_id.clone());
    }

    fn disconnected(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>) {
        let mut execution = self.execution.borrow_mut();
        eprintln!(
            "strata execute: lost the master at {}; subscribing again",
            execution.master
        );
        // Each loss has a deadline of its own.
        execution.lost += 1;
        driver.set_timer(execution.timeout, execution.lost);
    }

    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let mut execution = self.execution.borrow_mut();
        for offer in offers {
            match execution.use_offer(offer) {
                ToMaster::Accept {
                    offer_ids,
                    operations,
                    filters,
                    ..
                } => driver.accept(offer_ids, operations, filters),
                ToMaster::Decline {
                    offer_ids, filters, ..
                } => {
                    for offer_id in &offer_ids {
                        driver.decline_with(offer_id, filters);
                    }
                }
                _ => {}
            }
        }
        if execution.pending.is_empty() {
            driver.suppress();
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        let mut execution = self.execution.borrow_mut();
        if execution.relaunch_if_offer_gone(status) {
            eprintln!(
                "strata execute: {}: {}; waiting for another offer",
                status.task_id, status.message
            );
            driver.revive();
            return;
        }
        // An update resent before the acknowledgement arrived is printed
        // once.
        if let Some(update_id) = status.update_id
            && !execution
                .acknowledged
                .insert((status.task_id.clone(), update_id.0))
        {
            return;
        }
        // A reconciliation answer that changes nothing is not news.
        let restated = status.reason == Some(Reason::Reconciliation)
            && execution.states.get(&status.task_id) == Some(&status.state);
        if execution.states.contains_key(&status.task_id) && !restated {
            print_status(status);
            execution
                .states
                .insert(status.task_id.clone(), status.state);
        }
        if execution.done() {
            let all_finished = execution
                .states
                .values()
                .all(|state| *state == TaskState::Finished);
            drop(execution);
            self.finish(driver, if all_finished { FINISHED } else { FAILED }, true);
        }
    }

    fn error(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, message: &str) {
        eprintln!("strata execute: the master refused: {message}");
        self.finish(driver, FAILED, false);
    }
}

pub fn run(args: ExecuteArgs) -> anyhow::Result<u8> {
    let timeout = seconds("timeout", args.timeout)?;
    let failover_timeout = seconds("failover-timeout", args.failover_timeout)?;
    let material = args
        .tls
        .material(strata_runtime::Role::Framework, &args.principal)?;
    let address = args.master.clone();
    let pending: Vec<TaskId> = (0..args.instances)
        .map(|index| {
            if args.instances == 1 {
                TaskId::new(args.name.clone())
            } else {
                TaskId::new(format!("{}-{index}", args.name))
            }
        })
        .collect::<Result<_, _>>()?;
    let user = args.user.clone().unwrap_or_else(whoami);
    let mut info = FrameworkInfo::new(format!("strata-execute {}", args.name), user);
    info.principal = Some(material.identity().name);
    info.roles = vec![args.role.clone()];
    info.checkpoint = args.checkpoint;
    info.failover_timeout = failover_timeout;
    // Taking over: a subscription with the framework's id is a failover.
    info.id = args.framework_id.clone();
    if args.partition_aware {
        info.capabilities.insert(Capability::PartitionAware);
    }
    let constraints: Vec<OfferConstraint> = args
        .constraints
        .iter()
        .map(|(name, value)| OfferConstraint::AttributeEquals {
            name: name.clone(),
            value: AttributeValue::parse(value),
        })
        .collect();
    // Taking over: the tasks exist already; their states come from
    // reconciliation.
    let (pending, states) = match &args.framework_id {
        None => (pending, BTreeMap::new()),
        Some(_) => (
            Vec::new(),
            pending
                .into_iter()
                .map(|task_id| (task_id, TaskState::Staging))
                .collect(),
        ),
    };
    let execution = Rc::new(RefCell::new(Execution {
        framework_id: args.framework_id.clone(),
        args,
        master: address.to_string(),
        timeout,
        pending,
        states,
        largest_offer: None,
        acknowledged: BTreeSet::new(),
        lost: PLACEMENT_DEADLINE,
        result: None,
    }));
    actix_rt::System::new().block_on(async move {
        let (master, leader) = crate::leader::find(&address, Some(timeout)).await?;
        let local_ip = crate::ping::local_ip_towards(master.addr())?;
        let mut config = SchedulerConfig::new(master.clone(), info);
        config.constraints = constraints;
        config.leader = leader;
        let node = Node::bind(NodeConfig::new(SocketAddr::new(local_ip, 0), material)).await?;
        node.connect(master.addr()).await?;
        let id = format!("execute-{:08x}", node.incarnation().0 as u32);
        let shared = execution.clone();
        let pid = scheduler::spawn(&node, &id, config, move || Execute {
            execution: shared.clone(),
        })?;
        scheduler::wait(&node, &pid).await?;
        // What it said last (a teardown) goes out before the node closes.
        node.close(Duration::from_secs(1)).await;
        let code = execution.borrow().result;
        Ok(code.unwrap_or(FAILED))
    })
}

fn whoami() -> String {
    strata_agent::users::current_user()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use strata_protocol::OfferId;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: ExecuteArgs,
    }

    fn execution(flags: &[&str]) -> Execution {
        let args = Command::try_parse_from([&["execute", "--command", "true"], flags].concat())
            .unwrap()
            .args;
        let pending = (0..args.instances)
            .map(|index| TaskId::new(format!("{}-{index}", args.name)).unwrap())
            .collect();
        Execution {
            master: args.master.to_string(),
            timeout: Duration::from_secs(60),
            framework_id: Some(FrameworkId::new("F1").unwrap()),
            args,
            pending,
            states: BTreeMap::new(),
            largest_offer: None,
            acknowledged: BTreeSet::new(),
            lost: PLACEMENT_DEADLINE,
            result: None,
        }
    }

    fn offer(id: &str, resources: &str) -> Offer {
        Offer {
            id: OfferId::new(id).unwrap(),
            framework_id: FrameworkId::new("F1").unwrap(),
            agent_id: AgentId::new("S1").unwrap(),
            hostname: "localhost".into(),
            agent_address: "127.0.0.1:5051".parse().unwrap(),
            resources: resources.parse().unwrap(),
            attributes: Default::default(),
        }
    }

    fn launched(call: &ToMaster) -> Vec<String> {
        match call {
            ToMaster::Accept { operations, .. } => operations
                .iter()
                .flat_map(|Operation::Launch(tasks)| tasks)
                .map(|task| task.task_id.to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn from_master(task_id: &str, state: TaskState, reason: Reason) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(task_id).unwrap(),
            state,
            source: Source::Master,
            reason: Some(reason),
            message: "offer O1 is no longer valid".into(),
            agent_id: Some(AgentId::new("S1").unwrap()),
            executor_id: None,
            update_id: None,
            timestamp_ms: 0,
            sandbox: None,
        }
    }

    #[test]
    fn a_launch_dropped_because_its_offer_was_gone_is_tried_again() {
        let mut execution = execution(&["--name", "web", "--resources", "cpus:1;mem:32"]);
        let first = execution.use_offer(offer("O1", "cpus:1;mem:64"));
        assert_eq!(launched(&first), ["web-0"]);
        assert!(execution.pending.is_empty());
        let dropped = from_master("web-0", TaskState::Dropped, Reason::InvalidOffers);
        assert!(execution.relaunch_if_offer_gone(&dropped));
        assert!(!execution.done());
        assert_eq!(execution.pending.len(), 1);
        let second = execution.use_offer(offer("O2", "cpus:1;mem:64"));
        assert_eq!(launched(&second), ["web-0"]);
        // Once it is under way, the same answer is no reason to launch it
        // again: it ends the task.
        execution
            .states
            .insert(TaskId::new("web-0").unwrap(), TaskState::Running);
        assert!(!execution.relaunch_if_offer_gone(&dropped));
    }

    #[test]
    fn other_refusals_end_the_task() {
        let mut execution = execution(&["--name", "web"]);
        execution.use_offer(offer("O1", "cpus:1;mem:64"));
        let invalid = from_master("web-0", TaskState::Error, Reason::TaskInvalid);
        assert!(!execution.relaunch_if_offer_gone(&invalid));
        execution.states.insert(invalid.task_id, invalid.state);
        assert!(execution.done());
    }

    #[test]
    fn an_accept_launches_no_more_than_the_master_takes() {
        let mut execution = execution(&["--name", "many", "--instances", "2000"]);
        let call = execution.use_offer(offer("O1", "cpus:1000;mem:100000"));
        assert_eq!(launched(&call).len(), MAX_TASKS_PER_ACCEPT);
        assert_eq!(execution.pending.len(), 2000 - MAX_TASKS_PER_ACCEPT);
    }
}
