//! Checkpoints: what an agent keeps on disk so a restarted agent can
//! carry on.
//!
//! For frameworks that ask for it (`FrameworkInfo::checkpoint`, as in
//! Mesos), each task's unacknowledged status updates are kept in
//! `<work>/meta/agents/<agent>/frameworks/<framework>/tasks/<task>/updates.json`,
//! rewritten whole after every change and removed when the stream is
//! empty. Every write goes to a temporary file that is synced, renamed
//! over the old one and followed by a sync of the directory, so after a
//! crash the file is either the old stream or the new one, never a torn
//! mix. The format is versioned JSON, readable by people and by the agent
//! recovery that reads it back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_protocol::{AgentId, FrameworkId, TaskId, TaskStatus};

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

/// Where a task's update stream is kept.
pub fn stream_path(
    work_dir: &Path,
    agent_id: &AgentId,
    framework_id: &FrameworkId,
    task_id: &TaskId,
) -> PathBuf {
    work_dir
        .join("meta")
        .join("agents")
        .join(agent_id.as_str())
        .join("frameworks")
        .join(framework_id.as_str())
        .join("tasks")
        .join(task_id.as_str())
        .join("updates.json")
}

/// Writes `contents` to `path` atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), CheckpointError> {
    let error = |source| CheckpointError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().ok_or_else(|| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no parent directory",
        ))
    })?;
    fs::create_dir_all(dir).map_err(error)?;
    let aside = path.with_extension("json.tmp");
    let mut file = fs::File::create(&aside).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    fs::rename(&aside, path).map_err(error)?;
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(error)
}

/// Saves a stream, or removes its file when nothing is pending.
pub fn save_stream(
    path: &Path,
    framework_id: &FrameworkId,
    task_id: &TaskId,
    pending: &[TaskStatus],
) -> Result<(), CheckpointError> {
    if pending.is_empty() {
        return match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Write {
                path: path.to_owned(),
                source,
            }),
        };
    }
    let checkpoint = StreamCheckpoint {
        version: FORMAT_VERSION,
        framework_id: framework_id.clone(),
        task_id: task_id.clone(),
        pending: pending.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&checkpoint).map_err(|e| CheckpointError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    write_atomically(path, &json)
}

/// Reads a stream back, checking its size and version.
pub fn load_stream(path: &Path) -> Result<StreamCheckpoint, CheckpointError> {
    let read_error = |source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    };
    let size = fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_CHECKPOINT_BYTES {
        return Err(CheckpointError::Invalid {
            path: path.to_owned(),
            reason: format!("{size} bytes is more than a checkpoint can hold"),
        });
    }
    let bytes = fs::read(path).map_err(read_error)?;
    let checkpoint: StreamCheckpoint =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if checkpoint.version != FORMAT_VERSION {
        return Err(CheckpointError::Invalid {
            path: path.to_owned(),
            reason: format!(
                "format version {} (this agent reads {FORMAT_VERSION})",
                checkpoint.version
            ),
        });
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        save_stream(&path, &framework, &task, &pending).unwrap();
        let loaded = load_stream(&path).unwrap();
        assert_eq!(loaded.pending, pending);
        assert!(!path.with_extension("json.tmp").exists());
        save_stream(&path, &framework, &task, &[]).unwrap();
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
        let error = load_stream(&torn).unwrap_err().to_string();
        assert!(error.contains("torn.json"), "{error}");
        let future = dir.join("future.json");
        fs::write(
            &future,
            br#"{"version": 9, "framework_id": "f", "task_id": "t", "pending": []}"#,
        )
        .unwrap();
        let error = load_stream(&future).unwrap_err().to_string();
        assert!(error.contains("format version 9"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
