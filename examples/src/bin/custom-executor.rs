//! A custom executor running several tasks in one process, and the
//! framework that uses it.
//!
//! The framework launches four tasks, all on one executor: the agent
//! starts this same program as the executor (it knows it is one from the
//! `STRATA_EXECUTOR_ID` the agent sets), which runs each task as a timer
//! in its own process and reports its states. The framework then asks the
//! executor, through a framework message, how many tasks it ran.
//!
//! ```sh
//! cargo run --release -- local
//! cargo run --release -p strata-examples --bin custom-executor
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use strata_examples::{Cluster, framework, run_scheduler};
use strata_frameworks::executor::{self, Executor, ExecutorDriver};
use strata_frameworks::scheduler::{Scheduler, SchedulerConfig, SchedulerDriver};
use strata_protocol::{
    AgentId, CommandInfo, ExecutorId, ExecutorInfo, Offer, TaskId, TaskInfo, TaskKind, TaskState,
    TaskStatus,
};

const TASKS: usize = 4;

/// The executor side: tasks are timers in this process.
#[derive(Default)]
struct InProcess {
    ran: usize,
}

impl Executor for InProcess {
    fn launch_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task: TaskInfo) {
        driver.update(
            &task.task_id,
            TaskState::Running,
            &format!("in executor process {}", std::process::id()),
        );
        let id = task.task_id.clone();
        driver.after(Duration::from_millis(300), move |executor, driver| {
            executor.ran += 1;
            driver.update(&id, TaskState::Finished, "done");
        });
    }

    fn kill_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task_id: TaskId) {
        driver.update(&task_id, TaskState::Killed, "killed");
    }

    fn framework_message(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, _: Vec<u8>) {
        driver.send_framework_message(
            format!("ran {} tasks in process {}", self.ran, std::process::id()).into_bytes(),
        );
    }
}

/// The framework side.
struct UsesExecutor {
    executor: ExecutorInfo,
    launched: bool,
    finished: BTreeSet<TaskId>,
    agent: Option<AgentId>,
}

impl Scheduler for UsesExecutor {
    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        for offer in offers {
            let need: strata_protocol::Resources = "cpus:0.1;mem:16".parse().unwrap_or_default();
            if self.launched {
                driver.decline(&offer.id);
                continue;
            }
            let tasks: Vec<TaskInfo> = (0..TASKS)
                .filter_map(|n| TaskId::new(format!("on-executor-{n}")).ok())
                .map(|task_id| TaskInfo {
                    name: task_id.to_string(),
                    task_id,
                    agent_id: offer.agent_id.clone(),
                    resources: need.clone(),
                    kind: TaskKind::Executor(self.executor.clone()),
                    labels: Default::default(),
                })
                .collect();
            self.launched = true;
            self.agent = Some(offer.agent_id.clone());
            driver.launch(&offer.id, tasks);
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        println!("{} {} {}", status.task_id, status.state, status.message);
        if status.state.is_terminal() {
            self.finished.insert(status.task_id.clone());
        }
        if self.finished.len() == TASKS
            && let Some(agent) = self.agent.clone()
        {
            driver.send_framework_message(
                &agent,
                &self.executor.executor_id,
                b"how many?".to_vec(),
            );
        }
    }

    fn framework_message(
        &mut self,
        driver: &mut SchedulerDriver<'_, '_, Self>,
        _: &AgentId,
        executor: &ExecutorId,
        data: Vec<u8>,
    ) {
        println!(
            "executor {executor} says: {}",
            String::from_utf8_lossy(&data)
        );
        driver.stop(false);
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("STRATA_EXECUTOR_ID").is_some() {
        return Ok(executor::run(InProcess::default)?);
    }
    let cluster = Cluster::from_args()?;
    let program = std::env::current_exe()?.display().to_string();
    let executor = ExecutorInfo {
        executor_id: ExecutorId::new("in-process")?,
        name: "in-process".into(),
        command: CommandInfo {
            shell: false,
            value: program.clone(),
            arguments: vec![program],
            ..CommandInfo::default()
        },
        resources: "cpus:0.1;mem:32".parse()?,
    };
    actix_rt::System::new().block_on(async move {
        let node = cluster.node("custom-executor").await?;
        let config = SchedulerConfig::new(cluster.master_pid()?, framework("custom-executor"));
        run_scheduler(
            &node,
            "custom-executor",
            config,
            Duration::from_secs(120),
            move || UsesExecutor {
                executor: executor.clone(),
                launched: false,
                finished: BTreeSet::new(),
                agent: None,
            },
        )
        .await?;
        node.close(Duration::from_secs(1)).await;
        Ok(())
    })
}
