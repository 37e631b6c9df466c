//! Agent recovery: a restarted agent carries on where it stopped.
//!
//! On start, an agent whose work directory names an agent (see
//! [`crate::checkpoint`]) reads back that agent's checkpointed frameworks,
//! tasks and update streams. Tasks whose process still runs (the same
//! process group leader, by pid and start time) are re-attached: the task
//! launcher that started them (see [`crate::launcher`]) reports how they
//! end, also when they ended while the agent was down. A task whose
//! launcher is gone is waited for through a pidfd and ends FAILED with
//! EXECUTOR_TERMINATED, as does one that ended unseen; tasks that never
//! started are LOST with AGENT_RESTARTED. Custom executors that still run are sent
//! `Reconnect` and their tasks wait for them to register again. The agent
//! then re-registers under its old id with its tasks, and resends the
//! unacknowledged updates.
//!
//! An agent restarted with fewer resources than its recovered tasks hold
//! refuses to start, saying what the tasks need; more resources, or other
//! attributes, are fine.

use std::fs;
use std::path::{Path, PathBuf};

use strata_protocol::{
    AgentId, AgentInfo, FrameworkInfo, Resources, TaskId, TaskState, TaskStatus,
};
use strata_runtime::durable::Disk;

use crate::checkpoint::{
    self, AgentCheckpoint, CheckpointError, ExecutorCheckpoint, FrameworkCheckpoint, TaskCheckpoint,
};

/// What an agent's work directory says about its previous life.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub agent_id: AgentId,
    /// The agent as it last registered.
    pub info: AgentInfo,
    pub frameworks: Vec<RecoveredFramework>,
}

/// A framework with checkpointed tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredFramework {
    pub info: FrameworkInfo,
    pub tasks: Vec<RecoveredTask>,
    /// Its custom executors as last recorded.
    pub executors: Vec<ExecutorCheckpoint>,
}

/// One task's checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredTask {
    pub task_id: TaskId,
    /// Its last recorded state and process; absent once it was terminal
    /// and acknowledged.
    pub checkpoint: Option<TaskCheckpoint>,
    /// Its unacknowledged updates, oldest first.
    pub pending: Vec<TaskStatus>,
}

/// Why an agent cannot recover.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot use {}: {source}", .path.display())]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another agent uses the work directory {}; give each agent its own --work-dir",
        .work_dir.display()
    )]
    InUse { work_dir: PathBuf },
    #[error(
        "this agent's recovered tasks hold {needed}, more than the {offered} it would now offer; \
         start it with at least what its tasks hold, or with a new work directory"
    )]
    Shrunk {
        needed: Resources,
        offered: Resources,
    },
}

impl Recovered {
    /// What the recovered tasks that are not terminal hold.
    pub fn allocated(&self) -> Resources {
        let mut allocated = Resources::new();
        for task in self
            .frameworks
            .iter()
            .flat_map(|framework| &framework.tasks)
        {
            if let Some(checkpoint) = &task.checkpoint
                && !task.state().is_some_and(TaskState::is_terminal)
            {
                allocated.add(&checkpoint.task.info.resources);
            }
        }
        allocated
    }

    /// Whether an agent offering `resources` can take these tasks back.
    pub fn check(&self, resources: &Resources) -> Result<(), RecoveryError> {
        let needed = self.allocated();
        if resources.contains(&needed) {
            Ok(())
        } else {
            Err(RecoveryError::Shrunk {
                needed,
                offered: resources.clone(),
            })
        }
    }
}

impl RecoveredTask {
    /// The task's latest state: its checkpoint's, or its last update's if
    /// that came later (the update is written first).
    pub fn state(&self) -> Option<TaskState> {
        let recorded = self.checkpoint.as_ref()?.task.state;
        Some(match self.pending.last() {
            Some(last) if recorded.can_become(last.state) => last.state,
            _ => recorded,
        })
    }
}

fn entries(disk: &Disk, dir: &Path) -> Result<Vec<PathBuf>, RecoveryError> {
    disk.list_dirs(dir).map_err(|source| RecoveryError::List {
        path: dir.to_owned(),
        source,
    })
}

fn load_if_present<T: serde::de::DeserializeOwned>(
    disk: &Disk,
    path: &Path,
) -> Result<Option<T>, CheckpointError> {
    if disk.exists(path) {
        checkpoint::load(disk, path).map(Some)
    } else {
        Ok(None)
    }
}

/// Reads a work directory's checkpoints; `None` when it has none (a new
/// agent).
pub fn read(disk: &Disk, work_dir: &Path) -> Result<Option<Recovered>, RecoveryError> {
    let latest = checkpoint::latest_path(work_dir);
    let Some(bytes) = load_raw_if_present(disk, &latest)? else {
        return Ok(None);
    };
    let invalid = |reason: String| CheckpointError::Invalid {
        path: latest.clone(),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
    let agent_id = AgentId::new(text.trim()).map_err(|e| invalid(e.to_string()))?;
    let agent: AgentCheckpoint =
        checkpoint::load(disk, &checkpoint::agent_path(work_dir, &agent_id))?;
    let frameworks_dir = checkpoint::agents_dir(work_dir)
        .join(agent_id.as_str())
        .join("frameworks");
    let mut frameworks = Vec::new();
    for dir in entries(disk, &frameworks_dir)? {
        let Some(framework) =
            load_if_present::<FrameworkCheckpoint>(disk, &dir.join("framework.json"))?
        else {
            continue;
        };
        let mut tasks = Vec::new();
        for task_dir in entries(disk, &dir.join("tasks"))? {
            let checkpoint: Option<TaskCheckpoint> =
                load_if_present(disk, &task_dir.join("task.json"))?;
            let pending = load_if_present::<checkpoint::StreamCheckpoint>(
                disk,
                &task_dir.join("updates.json"),
            )?
            .map(|stream| stream.pending)
            .unwrap_or_default();
            let task_id = match &checkpoint {
                Some(checkpoint) => checkpoint.task.info.task_id.clone(),
                None => match pending.first() {
                    Some(first) => first.task_id.clone(),
                    None => continue,
                },
            };
            tasks.push(RecoveredTask {
                task_id,
                checkpoint,
                pending,
            });
        }
        let mut executors = Vec::new();
        for executor_dir in entries(disk, &dir.join("executors"))? {
            if let Some(executor) = load_if_present(disk, &executor_dir.join("executor.json"))? {
                executors.push(executor);
            }
        }
        frameworks.push(RecoveredFramework {
            info: framework.info,
            tasks,
            executors,
        });
    }
    Ok(Some(Recovered {
        agent_id,
        info: agent.info,
        frameworks,
    }))
}

fn load_raw_if_present(disk: &Disk, path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match disk.read_bounded(path, 4096) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An agent's hold on its work directory, for as long as it lives.
#[derive(Debug)]
pub struct WorkDirLock {
    file: fs::File,
}

impl WorkDirLock {
    /// The locked file, which holds the lock while open.
    pub fn into_file(self) -> fs::File {
        self.file
    }
}

/// Takes the work directory for one agent: a second agent on the same
/// directory would read the first one's checkpoints as its own.
pub fn lock_work_dir(work_dir: &Path) -> Result<WorkDirLock, RecoveryError> {
    let path = checkpoint::agents_dir(work_dir).join("lock");
    match strata_runtime::durable::lock_exclusive(&path) {
        Ok(Some(file)) => Ok(WorkDirLock { file }),
        Ok(None) => Err(RecoveryError::InUse {
            work_dir: work_dir.to_owned(),
        }),
        Err(source) => Err(RecoveryError::List { path, source }),
    }
}
