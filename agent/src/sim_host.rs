//! A simulated machine's processes, for agents in the failure simulation
//! ([`crate::Runner::Simulated`]).
//!
//! On a real machine a task is an OS process that outlives the agent that
//! started it: a restarted agent finds it running, or finds how it ended.
//! A [`SimHost`] plays that part in simulation: the agent starts a task on
//! it, the task "runs" for the virtual time its `strata.test/run-ms` label
//! says (or until killed), and the host keeps its outcome. The host is
//! shared by every life of the simulated agent, so an agent crashed and
//! restarted on the same host re-attaches to its tasks as a real one does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use strata_protocol::{FrameworkId, TaskId, TaskState};
use tokio::sync::watch;

/// How a simulated task ended: its state and what to say.
pub type Ending = (TaskState, String);

/// A task on the host, by framework and task id.
pub type HostKey = (FrameworkId, TaskId);

/// What the host knows of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostStatus {
    Running,
    Ended(Ending),
}

#[derive(Debug)]
struct Run {
    ending: watch::Sender<Option<Ending>>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

/// A simulated machine's process table; cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct SimHost {
    runs: Arc<Mutex<BTreeMap<HostKey, Run>>>,
}

impl SimHost {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<HostKey, Run>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a task that ends as `ending` after `run`, or runs until
    /// killed when `run` is `None`. A task already there is left alone.
    pub fn start(&self, key: HostKey, run: Option<Duration>, ending: Ending) {
        let mut runs = self.lock();
        if runs.contains_key(&key) {
            return;
        }
        let (sender, _) = watch::channel(None);
        let timer = run.map(|run| {
            let host = self.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(run).await;
                host.end(&key, ending);
            })
        });
        runs.insert(
            key,
            Run {
                ending: sender,
                timer,
            },
        );
    }

    /// Ends a running task as `ending` (a kill, say); nothing if it ended.
    pub fn end(&self, key: &HostKey, ending: Ending) {
        let runs = self.lock();
        if let Some(run) = runs.get(key)
            && run.ending.borrow().is_none()
        {
            if let Some(timer) = &run.timer {
                timer.abort();
            }
            run.ending.send_replace(Some(ending));
        }
    }

    /// Kills a running task.
    pub fn kill(&self, key: &HostKey, message: &str) {
        self.end(key, (TaskState::Killed, message.to_owned()));
    }

    /// What the host knows of a task; `None` if it never ran here.
    pub fn status(&self, key: &HostKey) -> Option<HostStatus> {
        let runs = self.lock();
        let run = runs.get(key)?;
        let ending = run.ending.borrow().clone();
        Some(match ending {
            Some(ending) => HostStatus::Ended(ending),
            None => HostStatus::Running,
        })
    }

    /// Resolves with the task's ending once it ends (at once if it has);
    /// `None` if it never ran here.
    pub fn wait(&self, key: &HostKey) -> impl std::future::Future<Output = Option<Ending>> + use<> {
        let receiver = self.lock().get(key).map(|run| run.ending.subscribe());
        async move {
            let mut receiver = receiver?;
            let ending = receiver.wait_for(Option::is_some).await.ok()?;
            ending.clone()
        }
    }

    /// Drops an ended task's record (its end was reported).
    pub fn forget(&self, key: &HostKey) {
        let mut runs = self.lock();
        if runs
            .get(key)
            .is_some_and(|run| run.ending.borrow().is_some())
        {
            runs.remove(key);
        }
    }

    /// Tasks running now.
    pub fn running(&self) -> Vec<HostKey> {
        self.lock()
            .iter()
            .filter(|(_, run)| run.ending.borrow().is_none())
            .map(|(key, _)| key.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(task: &str) -> HostKey {
        (
            FrameworkId::new("f").unwrap_or_else(|_| unreachable!()),
            TaskId::new(task).unwrap_or_else(|_| unreachable!()),
        )
    }

    #[test]
    fn tasks_end_on_time_or_when_killed_and_the_host_remembers() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|_| unreachable!())
            .block_on(async {
                let host = SimHost::default();
                let finished = (TaskState::Finished, String::new());
                host.start(key("a"), Some(Duration::from_secs(5)), finished.clone());
                host.start(key("b"), None, finished.clone());
                assert_eq!(host.status(&key("a")), Some(HostStatus::Running));
                assert_eq!(host.status(&key("c")), None);
                let started = tokio::time::Instant::now();
                assert_eq!(host.wait(&key("a")).await, Some(finished.clone()));
                assert_eq!(started.elapsed(), Duration::from_secs(5));
                assert_eq!(host.running(), vec![key("b")]);
                host.kill(&key("b"), "asked");
                assert_eq!(
                    host.status(&key("b")),
                    Some(HostStatus::Ended((TaskState::Killed, "asked".into())))
                );
                host.forget(&key("a"));
                assert_eq!(host.status(&key("a")), None);
                assert_eq!(host.wait(&key("a")).await, None);
            });
    }
}
