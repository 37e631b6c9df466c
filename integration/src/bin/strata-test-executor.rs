//! A custom executor for tests: each task runs for the milliseconds its
//! `strata.test/run-ms` label gives (100 without one) and finishes; kills
//! are honoured at once; framework messages come back reversed.

use std::time::Duration;

use strata_frameworks::executor::{self, Executor, ExecutorDriver};
use strata_protocol::{TaskId, TaskInfo, TaskState};

struct Timed;

impl Executor for Timed {
    fn launch_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task: TaskInfo) {
        driver.update(
            &task.task_id,
            TaskState::Running,
            "running in the test executor",
        );
        let run_ms = task
            .labels
            .get("strata.test/run-ms")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(100);
        let id = task.task_id.clone();
        driver.after(Duration::from_millis(run_ms), move |_, driver| {
            driver.update(&id, TaskState::Finished, "done")
        });
    }

    fn kill_task(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, task_id: TaskId) {
        driver.update(&task_id, TaskState::Killed, "killed");
    }

    /// Echoes framework messages back, reversed.
    fn framework_message(&mut self, driver: &mut ExecutorDriver<'_, '_, Self>, mut data: Vec<u8>) {
        data.reverse();
        driver.send_framework_message(data);
    }
}

fn main() -> Result<(), executor::ExecutorError> {
    executor::run(|| Timed)
}
