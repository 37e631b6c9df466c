//! Checkpoints: what an agent keeps on disk so a restarted agent can
//! carry on.
//!
//! For frameworks that ask for it (`FrameworkInfo::checkpoint`, as in
//! Mesos) the agent records, under `<work>/meta/agents/`:
//!
//! - `latest`: the id of the agent this work directory belongs to;
//! - `<agent>/agent.json`: its info (resources, attributes) when it last
//!   registered;
//! - `<agent>/frameworks/<framework>/framework.json`: the framework's info;
//! - `.../tasks/<task>/task.json`: the task, its last state and the process
//!   that runs it (its process group and start time, its sandbox);
//! - `.../tasks/<task>/updates.json`: its unacknowledged status updates;
//! - `.../executors/<executor>/executor.json`: a custom executor's process
//!   and address.
//!
//! Every write is atomic and durable ([`strata_runtime::durable`]): after a
//! crash a file is either the old one or the new one, never a torn mix.
//! The format is versioned JSON, readable by people and by the agent
//! recovery that reads it back ([`crate::recovery`]); the state of a task
//! is written after its update is queued, so recovery takes the later of
//! the two.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_protocol::{
    AgentId, AgentInfo, ExecutorId, FrameworkId, FrameworkInfo, Task, TaskId, TaskStatus,
};
use strata_runtime::durable::Disk;

/// The format version written; readers refuse others.
pub const FORMAT_VERSION: u32 = 1;

/// Largest checkpoint file read back; a larger one is refused as corrupt.
const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

/// One task's unacknowledged updates, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    pub version: u32,
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub pending: Vec<TaskStatus>,
}

/// The agent as it last registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    pub version: u32,
    pub info: AgentInfo,
}

/// A framework with checkpointed tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkCheckpoint {
    pub version: u32,
    pub info: FrameworkInfo,
}

/// A task that is not terminal, and what runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub version: u32,
    pub task: Task,
    /// Its process, once started.
    pub run: Option<RunCheckpoint>,
}

/// A task's container (see [`crate::containerizer`]): its id, its process
/// group (the pid of its leader) and the leader's start time in clock
/// ticks since boot, so a recycled pid is not taken for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCheckpoint {
    #[serde(default)]
    pub container: crate::containerizer::ContainerId,
    pub group: i32,
    pub start_ticks: u64,
    pub sandbox: PathBuf,
    /// Whether the task launcher started it (see [`crate::launcher`]),
    /// which then reports its end to a restarted agent.
    #[serde(default)]
    pub launched: bool,
}

impl RunCheckpoint {
    /// This run, named: a checkpoint written before containers had ids
    /// is named after its sandbox's run directory (what ids are now), or
    /// else after its process group.
    pub fn named(mut self) -> RunCheckpoint {
        if self.container.as_str().is_empty() {
            let name = match self.sandbox.file_name().and_then(|name| name.to_str()) {
                Some(run) if !run.is_empty() => run.to_owned(),
                _ => format!("group-{}-{}", self.group, self.start_ticks),
            };
            self.container = crate::containerizer::ContainerId::new(name);
        }
        self
    }
}

/// A custom executor of a checkpointing framework: its process group
/// (leader pid and start time) and, once it registered, its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorCheckpoint {
    pub version: u32,
    pub executor_id: ExecutorId,
    pub group: i32,
    pub start_ticks: u64,
    pub pid: Option<strata_runtime::Upid>,
    /// Whether the task launcher started it (see [`crate::launcher`]).
    #[serde(default)]
    pub launched: bool,
    /// Its container (see [`crate::containerizer`]).
    #[serde(default)]
    pub container: crate::containerizer::ContainerId,
    #[serde(default)]
    pub sandbox: PathBuf,
}

impl ExecutorCheckpoint {
    /// Its container, as a task's is recorded.
    pub fn run(&self) -> RunCheckpoint {
        RunCheckpoint {
            container: self.container.clone(),
            group: self.group,
            start_ticks: self.start_ticks,
            sandbox: self.sandbox.clone(),
            launched: self.launched,
        }
        .named()
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid checkpoint: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// `<work>/meta/agents`.
pub fn agents_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("agents")
}

/// The file naming the agent this work directory belongs to.
pub fn latest_path(work_dir: &Path) -> PathBuf {
    agents_dir(work_dir).join("latest")
}

/// Where an agent's info is kept.
pub fn agent_path(work_dir: &Path, agent_id: &AgentId) -> PathBuf {
    agents_dir(work_dir)
        .join(agent_id.as_str())
        .join("agent.json")
}

/// The directory of a framework's checkpoints.
pub fn framework_dir(work_dir: &Path, agent_id: &AgentId, framework_id: &FrameworkId) -> PathBuf {
    agents_dir(work_dir)
        .join(agent_id.as_str())
        .join("frameworks")
        .join(framework_id.as_str())
}

/// Where a custom executor's checkpoint is kept.
pub fn executor_path(
    work_dir: &Path,
    agent_id: &AgentId,
    framework_id: &FrameworkId,
    executor_id: &ExecutorId,
) -> PathBuf {
    framework_dir(work_dir, agent_id, framework_id)
        .join("executors")
        .join(executor_id.as_str())
        .join("executor.json")
}

/// The directory of a task's checkpoints.
pub fn task_dir(
    work_dir: &Path,
    agent_id: &AgentId,
    framework_id: &FrameworkId,
    task_id: &TaskId,
) -> PathBuf {
    framework_dir(work_dir, agent_id, framework_id)
        .join("tasks")
        .join(task_id.as_str())
}

/// Where a task's update stream is kept.
pub fn stream_path(
    work_dir: &Path,
    agent_id: &AgentId,
    framework_id: &FrameworkId,
    task_id: &TaskId,
) -> PathBuf {
    task_dir(work_dir, agent_id, framework_id, task_id).join("updates.json")
}

/// `value` as the JSON a checkpoint at `path` holds.
pub fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<String, CheckpointError> {
    serde_json::to_string_pretty(value).map_err(|e| CheckpointError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `value` as versioned JSON, atomically.
pub fn save<T: Serialize>(disk: &Disk, path: &Path, value: &T) -> Result<(), CheckpointError> {
    write(disk, path, to_json(path, value)?.as_bytes())
}

/// Writes a checkpoint's `contents`, atomically and durably.
pub fn write(disk: &Disk, path: &Path, contents: &[u8]) -> Result<(), CheckpointError> {
    disk.write_atomically(path, contents)
        .map_err(|source| CheckpointError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Removes a checkpoint file; one that is gone already is no error.
pub fn remove(disk: &Disk, path: &Path) -> Result<(), CheckpointError> {
    disk.remove_if_present(path)
        .map_err(|source| CheckpointError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Removes a task's checkpoint file, and the task's directory once
/// nothing is left in it.
pub fn remove_task_file(disk: &Disk, path: &Path) -> Result<(), CheckpointError> {
    remove(disk, path)?;
    if let Some(dir) = path.parent() {
        disk.remove_empty_dir(dir);
    }
    Ok(())
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

/// Reads a checkpoint back, checking its size and version.
pub fn load<T: DeserializeOwned>(disk: &Disk, path: &Path) -> Result<T, CheckpointError> {
    let bytes = disk
        .read_bounded(path, MAX_CHECKPOINT_BYTES)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => CheckpointError::Invalid {
                path: path.to_owned(),
                reason: source.to_string(),
            },
            _ => CheckpointError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
    parse(path, &bytes)
}

/// Reads a checkpoint from `bytes` (the file at `path`), checking its
/// version; a document of another shape is an error naming the file.
pub fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, CheckpointError> {
    let invalid = |e: serde_json::Error| CheckpointError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(invalid)?;
    if probe.version != FORMAT_VERSION {
        return Err(CheckpointError::Invalid {
            path: path.to_owned(),
            reason: format!(
                "format version {} (this agent reads {FORMAT_VERSION})",
                probe.version
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(invalid)
}

/// Saves a stream, or removes its file when nothing is pending.
pub fn save_stream(
    disk: &Disk,
    path: &Path,
    framework_id: &FrameworkId,
    task_id: &TaskId,
    pending: &[TaskStatus],
) -> Result<(), CheckpointError> {
    if pending.is_empty() {
        return remove_task_file(disk, path);
    }
    save(
        disk,
        path,
        &StreamCheckpoint {
            version: FORMAT_VERSION,
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            pending: pending.to_vec(),
        },
    )
}

/// Reads a stream back.
pub fn load_stream(disk: &Disk, path: &Path) -> Result<StreamCheckpoint, CheckpointError> {
    load(disk, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use strata_protocol::{Source, TaskState, UpdateId};

    fn status(state: TaskState, id: u128) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new("t").unwrap(),
            state,
            source: Source::Executor,
            reason: None,
            message: "m".into(),
            agent_id: None,
            executor_id: None,
            update_id: Some(UpdateId(id)),
            timestamp_ms: 1,
            sandbox: None,
        }
    }

    #[test]
    fn streams_round_trip_and_disappear_when_empty() {
        let dir = std::env::temp_dir().join(format!("strata-checkpoint-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (framework, task) = (FrameworkId::new("f").unwrap(), TaskId::new("t").unwrap());
        let path = stream_path(&dir, &AgentId::new("a").unwrap(), &framework, &task);
        let pending = vec![
            status(TaskState::Running, 1),
            status(TaskState::Finished, 2),
        ];
        save_stream(&Disk::real(), &path, &framework, &task, &pending).unwrap();
        let loaded = load_stream(&Disk::real(), &path).unwrap();
        assert_eq!(loaded.pending, pending);
        assert!(!path.with_extension("json.tmp").exists());
        assert!(!path.with_file_name("updates.json.tmp").exists());
        save_stream(&Disk::real(), &path, &framework, &task, &[]).unwrap();
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused_with_the_path() {
        let dir =
            std::env::temp_dir().join(format!("strata-checkpoint-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let torn = dir.join("torn.json");
        fs::write(&torn, br#"{"version": 1, "framework_"#).unwrap();
        let error = load_stream(&Disk::real(), &torn).unwrap_err().to_string();
        assert!(error.contains("torn.json"), "{error}");
        let future = dir.join("future.json");
        fs::write(
            &future,
            br#"{"version": 9, "framework_id": "f", "task_id": "t", "pending": []}"#,
        )
        .unwrap();
        let error = load_stream(&Disk::real(), &future).unwrap_err().to_string();
        assert!(error.contains("format version 9"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_checkpointed_before_container_ids_are_named_after_their_sandbox() {
        let old: RunCheckpoint = serde_json::from_str(
            r#"{"group": 41, "start_ticks": 7, "sandbox": "/w/agents/a/frameworks/f/executors/t/runs/00ab", "launched": true}"#,
        )
        .unwrap();
        assert_eq!(old.clone().named().container.as_str(), "00ab");
        let nameless = RunCheckpoint {
            sandbox: PathBuf::new(),
            ..old.clone()
        };
        assert_eq!(nameless.named().container.as_str(), "group-41-7");
        let named = RunCheckpoint {
            container: crate::containerizer::ContainerId::new("c1"),
            ..old
        };
        assert_eq!(named.named().container.as_str(), "c1");
        let executor: ExecutorCheckpoint = serde_json::from_str(
            r#"{"version": 1, "executor_id": "e", "group": 5, "start_ticks": 6, "pid": null}"#,
        )
        .unwrap();
        assert_eq!(executor.run().container.as_str(), "group-5-6");
    }
}
