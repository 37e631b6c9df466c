//! The scheduler SDK over the real runtime: a scheduler written as a type
//! with callbacks runs tasks to completion and stops.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::rc::Rc;

use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_integration::cluster::{
    fast_master, node, r, start_in_process_agent, start_master, task,
};
use strata_protocol::{FrameworkId, FrameworkInfo, Offer, TaskState, TaskStatus};
use strata_runtime::{CertificateAuthority, Role};

/// What the test reads back.
#[derive(Debug, Default)]
struct Record {
    registered: Vec<FrameworkId>,
    finished: usize,
}

/// Launches `total` short tasks as offers allow, then stops.
struct Batch {
    total: usize,
    launched: usize,
    record: Rc<RefCell<Record>>,
}

impl Scheduler for Batch {
    fn registered(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, framework_id: &FrameworkId) {
        self.record
            .borrow_mut()
            .registered
            .push(framework_id.clone());
    }

    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let need = r("cpus:0.5;mem:64");
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.launched < self.total {
                let Some(rest) = left.checked_sub(&need) else {
                    break;
                };
                left = rest;
                self.launched += 1;
                tasks.push(task(
                    &format!("batch-{}", self.launched),
                    &offer.agent_id,
                    "cpus:0.5;mem:64",
                    50,
                ));
            }
            if tasks.is_empty() {
                driver.decline(&offer.id);
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if status.state == TaskState::Finished {
            let mut record = self.record.borrow_mut();
            record.finished += 1;
            if record.finished == self.total {
                driver.stop(false);
            }
        }
    }
}

#[test]
fn a_batch_scheduler_runs_its_tasks_and_stops() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        // Room for two tasks at a time: the batch needs several offers.
        let _agent = start_in_process_agent(&ca, &master, "agent", "cpus:1;mem:256").await;
        let scheduler_node = node(&ca, Role::Framework, "scheduler").await;
        let record = Rc::new(RefCell::new(Record::default()));
        let shared = record.clone();
        let config = SchedulerConfig::new(master.clone(), FrameworkInfo::new("batch", "test"));
        let pid = scheduler::spawn(&scheduler_node, "batch", config, move || Batch {
            total: 5,
            launched: 0,
            record: shared.clone(),
        })
        .unwrap();
        let deadline = std::time::Duration::from_secs(30);
        tokio::time::timeout(deadline, scheduler::wait(&scheduler_node, &pid))
            .await
            .expect("the batch finished in time")
            .unwrap();
        let record = record.borrow();
        assert_eq!(record.registered.len(), 1);
        assert_eq!(record.finished, 5);
    });
}

/// Launches one task on the first offer it gets and declines the rest.
struct LaunchOnce {
    launched: bool,
}

impl Scheduler for LaunchOnce {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            if self.launched {
                driver.decline(&offer.id);
            } else {
                self.launched = true;
                driver.launch(&offer.id, vec![task("t", &offer.agent_id, "cpus:1", 1000)]);
            }
        }
    }

    fn status_update(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, _: &TaskStatus) {}
}

/// The next message a master played by the test receives.
async fn next(
    inbox: &mut strata_runtime::Inbox<strata_protocol::ToMaster>,
) -> strata_protocol::ToMaster {
    match inbox.recv_within(std::time::Duration::from_secs(10)).await {
        Some(strata_runtime::Received::Message(_, message)) => message,
        other => panic!("the scheduler went quiet: {other:?}"),
    }
}

/// A master played by the test, and the SDK's scheduler (spawned with
/// `config`, given the master's address) subscribed with it and launched
/// one task, `t` on agent `S1`: the master's node, its inbox (the
/// launch taken from it) and the scheduler.
async fn subscribed_and_launched(
    ca: &CertificateAuthority,
    config: impl FnOnce(strata_runtime::Upid) -> SchedulerConfig,
) -> (
    strata_runtime::Node,
    strata_runtime::Inbox<strata_protocol::ToMaster>,
    strata_runtime::Upid,
) {
    use strata_protocol::{AgentId, Attributes, OfferId, ToMaster, ToScheduler};
    let master_node = node(ca, Role::Master, "master").await;
    let mut master = master_node.inbox::<ToMaster>("master", 64).unwrap();
    let schedulers = node(ca, Role::Framework, "schedulers").await;
    // Named as users name it, so any incarnation of it is the master.
    let master_pid = format!("master@{}", master_node.addr()).parse().unwrap();
    let scheduler = scheduler::spawn(&schedulers, "scheduler", config(master_pid), || {
        LaunchOnce { launched: false }
    })
    .unwrap();
    let framework_id = FrameworkId::new("F1").unwrap();
    assert!(matches!(
        next(&mut master).await,
        ToMaster::Subscribe { .. }
    ));
    let subscribed = ToScheduler::Subscribed {
        framework_id: framework_id.clone(),
        epoch: 1,
    };
    master.send(&scheduler, subscribed).unwrap();
    let offer = Offer {
        id: OfferId::new("O1").unwrap(),
        framework_id,
        agent_id: AgentId::new("S1").unwrap(),
        hostname: "h".into(),
        agent_address: master_node.addr(),
        resources: r("cpus:1"),
        attributes: Attributes::default(),
    };
    master
        .send(&scheduler, ToScheduler::Offers(vec![offer]))
        .unwrap();
    loop {
        if let ToMaster::Accept { .. } = next(&mut master).await {
            break;
        }
    }
    (master_node, master, scheduler)
}

/// The master played by the test answers the SDK's question about task
/// `t` on `S1` with `state`; the SDK asks about it no more within a
/// second.
async fn answer_then_no_more_questions(
    master: &mut strata_runtime::Inbox<strata_protocol::ToMaster>,
    scheduler: &strata_runtime::Upid,
    state: TaskState,
) {
    use strata_protocol::{AgentId, Reason, Source, ToMaster, ToScheduler};
    let status = TaskStatus {
        task_id: strata_protocol::TaskId::new("t").unwrap(),
        state,
        source: Source::Master,
        reason: Some(Reason::Reconciliation),
        message: String::new(),
        agent_id: Some(AgentId::new("S1").unwrap()),
        executor_id: None,
        update_id: None,
        timestamp_ms: 0,
        sandbox: None,
    };
    master
        .send(scheduler, ToScheduler::Update { status })
        .unwrap();
    while let Some(strata_runtime::Received::Message(_, message)) =
        master.recv_within(std::time::Duration::from_secs(1)).await
    {
        if let ToMaster::Reconcile { tasks, .. } = message {
            assert!(
                tasks.iter().all(|task| task.task_id.as_str() != "t"),
                "asked again after the answer: {tasks:?}"
            );
        }
    }
}

/// A master played by the test: it takes the SDK through a launch and a
/// master failover, then leaves the reconciliation unanswered twice. The
/// SDK asks again with backoff until answered, and then stops asking.
#[test]
fn the_sdk_reconciles_its_tasks_until_the_master_answers() {
    use std::time::Duration;
    use strata_protocol::{AgentId, ToMaster, ToScheduler};

    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        // Registration, an offer, a launch.
        let (master_node, master, scheduler) = subscribed_and_launched(&ca, |master| {
            let mut config = SchedulerConfig::new(master, FrameworkInfo::new("reconciling", "u"));
            config.resubscribe_interval = Duration::from_millis(100);
            config.reconcile_backoff = Duration::from_millis(100);
            config
        })
        .await;
        let framework_id = FrameworkId::new("F1").unwrap();
        let agent_id = AgentId::new("S1").unwrap();
        let subscribed = ToScheduler::Subscribed {
            framework_id: framework_id.clone(),
            epoch: 1,
        };

        // The master fails over: its node goes, a new one takes its
        // address, and the scheduler subscribes again with its id.
        let address = master_node.addr();
        drop(master);
        master_node.close(Duration::from_secs(1)).await;
        drop(master_node);
        let mut config =
            strata_runtime::NodeConfig::new(address, ca.issue(Role::Master, "master").unwrap());
        config.quic.idle_timeout = Duration::from_secs(2);
        // The old endpoint lets go of its socket once its driver task
        // ends: let it run, then bind again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let master_node = loop {
            match strata_runtime::Node::bind(config.clone()).await {
                Ok(node) => break node,
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "address not free yet");
                    tokio::task::yield_now().await;
                }
                Err(error) => panic!("cannot bind the master's address again: {error}"),
            }
        };
        let mut master = master_node.inbox::<ToMaster>("master", 64).unwrap();
        loop {
            if let ToMaster::Subscribe { info, .. } = next(&mut master).await {
                assert_eq!(info.id.as_ref(), Some(&framework_id));
                break;
            }
        }
        master.send(&scheduler, subscribed).unwrap();

        // The scheduler names its task until answered; the third time, the
        // master answers.
        let mut asked = 0;
        while asked < 3 {
            if let ToMaster::Reconcile { tasks, .. } = next(&mut master).await
                && tasks.iter().any(|task| task.task_id.as_str() == "t")
            {
                assert_eq!(tasks[0].agent_id.as_ref(), Some(&agent_id));
                asked += 1;
            }
        }
        // Answered: no more questions about it (the backoff had reached
        // 400 ms; a second is more than two more rounds).
        answer_then_no_more_questions(&mut master, &scheduler, TaskState::Running).await;
    });
}

/// A master played by the test receives a launch and says nothing of it,
/// as when the launch was lost on its way. The SDK asks about the task at
/// its next looks for unheard-of launches, and stops once answered.
#[test]
fn the_sdk_asks_about_a_launch_it_never_heard_of() {
    use std::time::Duration;
    use strata_protocol::{AgentId, ToMaster};

    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, mut master, scheduler) = subscribed_and_launched(&ca, |master| {
            let mut config = SchedulerConfig::new(master, FrameworkInfo::new("unheard", "u"));
            config.unheard_launch_check = Duration::from_millis(100);
            config
        })
        .await;
        let agent_id = AgentId::new("S1").unwrap();
        // Nothing said of the launch: the SDK asks, and asks again.
        let mut asked = 0;
        while asked < 2 {
            if let ToMaster::Reconcile { tasks, .. } = next(&mut master).await
                && tasks.iter().any(|task| task.task_id.as_str() == "t")
            {
                assert_eq!(tasks.len(), 1, "only the unheard-of task: {tasks:?}");
                assert_eq!(tasks[0].agent_id.as_ref(), Some(&agent_id));
                asked += 1;
            }
        }
        // Answered: no more questions about it (it was asked every 100
        // ms; a second is many more looks).
        answer_then_no_more_questions(&mut master, &scheduler, TaskState::Lost).await;
    });
}
