//! Containers that are not processes: agents in tests and in the failure
//! simulation run their tasks on a [`SimHost`] through a
//! [`HostContainerizer`].
//!
//! On a real machine a task is an OS process that outlives the agent that
//! started it: a restarted agent finds it running, or finds how it ended.
//! A [`SimHost`] plays that part: a container "runs" for the (virtual)
//! time its task's [`RUN_MS_LABEL`] says, or until it is signalled, then
//! exits 0 (1 if its [`OUTCOME_LABEL`] says `failed`), and the host keeps
//! how it ended. A task whose [`MEM_MB_LABEL`] is more than its memory
//! limit (its `mem`, at least `MIN_MEMORY_MB`) is
//! killed half way through its run (or after [`OOM_AFTER`] if it runs
//! forever), as the kernel kills a process over its cgroup's memory
//! limit, and ends with that memory limitation. A host shared by every life of a simulated agent lets an
//! agent crashed and restarted on it take its tasks back as a real one
//! does; [`in_process`] gives each life a host of its own.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::Signal;
use strata_agent::Runner;
use strata_agent::checkpoint::RunCheckpoint;
use strata_agent::containerizer::{
    ContainerEnding, ContainerId, Containerizer, Containerizers, Exit, Launch, Launched, Launching,
    Limitation, Recovery, Sampling,
};
use tokio::sync::watch;

/// Label: how long a task runs, in milliseconds (forever without it).
pub const RUN_MS_LABEL: &str = "strata.test/run-ms";

/// A task of `resources` on `agent_id` that runs for `run_ms` on a
/// simulated or emulated agent (its command, `true`, is not run there).
pub fn timed_task(
    task_id: strata_protocol::TaskId,
    name: &str,
    agent_id: strata_protocol::AgentId,
    resources: strata_protocol::Resources,
    run_ms: u64,
) -> strata_protocol::TaskInfo {
    strata_protocol::TaskInfo {
        task_id,
        name: name.to_owned(),
        agent_id,
        resources,
        kind: strata_protocol::TaskKind::Command(strata_protocol::CommandInfo::shell("true")),
        labels: std::collections::BTreeMap::from([(RUN_MS_LABEL.to_owned(), run_ms.to_string())]),
    }
}

/// Label: `failed` makes a task exit 1 (FAILED) instead of 0.
pub const OUTCOME_LABEL: &str = "strata.test/outcome";

/// Label: how much memory a task takes, in MB (none without it).
pub const MEM_MB_LABEL: &str = "strata.test/mem-mb";

/// When a task that runs forever and takes more memory than its `mem` is
/// killed for it.
pub const OOM_AFTER: Duration = Duration::from_millis(100);

/// How a container ended on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub status: ExitStatus,
    pub limitation: Option<Limitation>,
}

impl From<ExitStatus> for Ending {
    fn from(status: ExitStatus) -> Ending {
        Ending {
            status,
            limitation: None,
        }
    }
}

/// What the host knows of a container.
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
    runs: Arc<Mutex<BTreeMap<ContainerId, Run>>>,
}

/// An exit with `code`.
fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

impl SimHost {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<ContainerId, Run>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a container that ends as `ending` after `run`, or runs until
    /// signalled when `run` is `None`. One already there is left alone.
    pub fn start(&self, id: ContainerId, run: Option<Duration>, ending: impl Into<Ending>) {
        let ending = ending.into();
        let mut runs = self.lock();
        if runs.contains_key(&id) {
            return;
        }
        let (sender, _) = watch::channel(None);
        let timer = run.map(|run| {
            let host = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(run).await;
                host.end(&id, ending);
            })
        });
        runs.insert(
            id,
            Run {
                ending: sender,
                timer,
            },
        );
    }

    /// Ends a running container as `ending` (a kill, say); nothing if it
    /// ended.
    pub fn end(&self, id: &ContainerId, ending: impl Into<Ending>) {
        let ending = ending.into();
        let runs = self.lock();
        if let Some(run) = runs.get(id)
            && run.ending.borrow().is_none()
        {
            if let Some(timer) = &run.timer {
                timer.abort();
            }
            run.ending.send_replace(Some(ending));
        }
    }

    /// What the host knows of a container; `None` if it never ran here
    /// (or was forgotten).
    pub fn status(&self, id: &ContainerId) -> Option<HostStatus> {
        let runs = self.lock();
        let ending = *runs.get(id)?.ending.borrow();
        Some(match ending {
            Some(ending) => HostStatus::Ended(ending),
            None => HostStatus::Running,
        })
    }

    /// Resolves with the container's end once it ends (at once if it
    /// has); `None` if it never ran here.
    pub fn wait(
        &self,
        id: &ContainerId,
    ) -> impl std::future::Future<Output = Option<Ending>> + use<> {
        let receiver = self.lock().get(id).map(|run| run.ending.subscribe());
        async move {
            let mut receiver = receiver?;
            let ending = receiver.wait_for(Option::is_some).await.ok()?;
            *ending
        }
    }

    /// Drops an ended container's record (its end was reported).
    pub fn forget(&self, id: &ContainerId) {
        let mut runs = self.lock();
        if runs
            .get(id)
            .is_some_and(|run| run.ending.borrow().is_some())
        {
            runs.remove(id);
        }
    }

    /// Containers running now.
    pub fn running(&self) -> Vec<ContainerId> {
        self.lock()
            .iter()
            .filter(|(_, run)| run.ending.borrow().is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// An agent's containers on a [`SimHost`].
#[derive(Debug)]
pub struct HostContainerizer {
    host: SimHost,
}

impl HostContainerizer {
    pub fn new(host: SimHost) -> HostContainerizer {
        HostContainerizer { host }
    }

    fn ending(&self, id: &ContainerId) -> ContainerEnding {
        let ended = self.host.wait(id);
        Box::pin(async move {
            match ended.await {
                Some(ending) => Exit {
                    status: Ok(ending.status),
                    limitation: ending.limitation,
                },
                None => Exit {
                    status: Err("the simulated machine lost the task".into()),
                    limitation: None,
                },
            }
        })
    }
}

impl Containerizer for HostContainerizer {
    fn launch(&mut self, id: &ContainerId, launch: Launch) -> Launching {
        let run = launch
            .labels
            .get(RUN_MS_LABEL)
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis);
        let failed = launch
            .labels
            .get(OUTCOME_LABEL)
            .is_some_and(|outcome| outcome == "failed");
        let limit_mb = strata_agent::isolation::memory_limit_mb(&launch.resources);
        let taken_mb = launch
            .labels
            .get(MEM_MB_LABEL)
            .and_then(|mb| mb.parse::<u64>().ok())
            .unwrap_or(0);
        if taken_mb > limit_mb {
            // The kernel kills it for its memory, as a cgroup's limit does.
            let oom = run.map_or(OOM_AFTER, |run| run / 2);
            self.host.start(
                id.clone(),
                Some(oom),
                Ending {
                    status: ExitStatus::from_raw(Signal::KILL.as_raw()),
                    limitation: Some(Limitation::Memory {
                        limit_bytes: limit_mb.saturating_mul(1 << 20),
                        peak_bytes: limit_mb.saturating_mul(1 << 20),
                    }),
                },
            );
        } else {
            self.host
                .start(id.clone(), run, exited(if failed { 1 } else { 0 }));
        }
        Box::pin(std::future::ready(Ok(Launched {
            ending: self.ending(id),
            run: RunCheckpoint {
                container: id.clone(),
                group: 0,
                start_ticks: 0,
                sandbox: launch.sandbox,
                launched: false,
            },
        })))
    }

    fn recover(&mut self, run: &RunCheckpoint) -> Recovery {
        match self.host.status(&run.container) {
            Some(HostStatus::Running) => Recovery::Running(self.ending(&run.container)),
            Some(HostStatus::Ended(ending)) => Recovery::Ended(ending.status, ending.limitation),
            None => Recovery::Gone,
        }
    }

    fn signal(&mut self, id: &ContainerId, signal: Signal) {
        self.host.end(id, ExitStatus::from_raw(signal.as_raw()));
    }

    fn forget(&mut self, id: &ContainerId) {
        self.host
            .end(id, ExitStatus::from_raw(Signal::KILL.as_raw()));
        self.host.forget(id);
    }

    fn usage(&mut self) -> Sampling {
        Box::pin(std::future::ready(BTreeMap::new()))
    }
}

/// Tasks run inside the agent's process, each life of it with a host of
/// its own, and nothing checkpointed.
pub fn in_process() -> Runner {
    Runner::Containers {
        containerizers: Containerizers::new(|| {
            Box::new(HostContainerizer::new(SimHost::default()))
        }),
        work_dir: None,
    }
}

/// Tasks run on `host`, which outlives the agent, with checkpoints in
/// `work_dir` (a simulated disk): the failure simulation's agents, which a
/// crash and restart on the same host and disk recover.
pub fn simulated(host: SimHost, work_dir: PathBuf) -> Runner {
    Runner::Containers {
        containerizers: Containerizers::new(move || Box::new(HostContainerizer::new(host.clone()))),
        work_dir: Some(work_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_end_on_time_or_when_killed_and_the_host_remembers() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap_or_else(|_| unreachable!())
            .block_on(async {
                let host = SimHost::default();
                let (a, b, c) = (
                    ContainerId::new("a"),
                    ContainerId::new("b"),
                    ContainerId::new("c"),
                );
                host.start(a.clone(), Some(Duration::from_secs(5)), exited(0));
                host.start(b.clone(), None, exited(0));
                assert_eq!(host.status(&a), Some(HostStatus::Running));
                assert_eq!(host.status(&c), None);
                let started = tokio::time::Instant::now();
                assert_eq!(host.wait(&a).await, Some(exited(0).into()));
                assert_eq!(started.elapsed(), Duration::from_secs(5));
                assert_eq!(host.running(), vec![b.clone()]);
                let killed = ExitStatus::from_raw(Signal::KILL.as_raw());
                host.end(&b, killed);
                assert_eq!(host.status(&b), Some(HostStatus::Ended(killed.into())));
                host.forget(&a);
                assert_eq!(host.status(&a), None);
                assert_eq!(host.wait(&a).await, None);
            });
    }
}
