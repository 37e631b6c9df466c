//! Where a task's or an executor's processes run: the seam between the
//! agent and the machine.
//!
//! A container is one run of one command (a task's, under the command
//! executor, or a custom executor's), named by a [`ContainerId`] the
//! agent chooses. The agent asks a [`Containerizer`] to launch it, to
//! signal it, how it ends, and, after a restart, to take it back from
//! what the agent checkpointed of it ([`RunCheckpoint`]). What a task's
//! end means (FINISHED, FAILED, KILLED and why) stays the agent's.
//!
//! [`ProcessContainerizer`] runs containers as process groups on this
//! machine: started by the task launcher ([`crate::launcher`]) when the
//! agent has one, so that they outlive the agent and their ends are still
//! known to its next life, or else as the agent's own children. Tests and
//! the failure simulation bring their own containerizers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use strata_protocol::CommandInfo;
use tracing::error;

use crate::checkpoint::RunCheckpoint;
use crate::command_executor::{self, Ending, Parent};
use crate::launcher::Launcher;
use crate::usage::GroupUsage;
use crate::users::RunAs;

/// A container's name, unique on its agent across restarts (the run
/// directory of its sandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    /// A container id from text the agent made.
    pub fn new(text: impl Into<String>) -> ContainerId {
        ContainerId(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to run in a container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Its sandbox, created by the containerizer, its processes' working
    /// directory and home.
    pub sandbox: PathBuf,
    pub command: CommandInfo,
    /// Environment besides the command's own (which wins).
    pub environment: BTreeMap<String, String>,
    /// Whom it runs as; `None` for the agent's own user.
    pub run_as: Option<RunAs>,
    /// Whether it keeps running when the agent stops (its framework
    /// checkpoints) for the agent's next life to take back.
    pub outlives_agent: bool,
    /// The task's labels (none for an executor's container).
    pub labels: BTreeMap<String, String>,
}

/// A launched container: how it ends, and what to checkpoint to take it
/// back after a restart.
pub struct Launched {
    pub ending: Ending,
    pub run: RunCheckpoint,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// What became of a container an earlier life of the agent started.
pub enum Recovery {
    /// It runs still; how it ends. An error there means its end is
    /// known, not how.
    Running(Ending),
    /// It ended while the agent was down, as this says.
    Ended(ExitStatus),
    /// It is gone and how it ended is not known.
    Gone,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Running(_) => f.write_str("Running"),
            Recovery::Ended(status) => write!(f, "Ended({status})"),
            Recovery::Gone => f.write_str("Gone"),
        }
    }
}

/// Runs containers for an agent.
pub trait Containerizer: Send + std::fmt::Debug {
    /// Creates `launch`'s sandbox and starts its command as container
    /// `id`; an error says why it could not start.
    fn launch(&mut self, id: &ContainerId, launch: Launch) -> Result<Launched, String>;

    /// Takes back the container `run` describes, which an earlier life of
    /// the agent started.
    fn recover(&mut self, run: &RunCheckpoint) -> Recovery;

    /// Sends `signal` to every process of container `id` that runs; never
    /// to processes of a container whose end was seen.
    fn signal(&mut self, id: &ContainerId, signal: Signal);

    /// The agent has recorded container `id`'s end: whatever is left of it
    /// is killed and it is forgotten (a restarted agent will not ask for
    /// it).
    fn forget(&mut self, id: &ContainerId);

    /// What the running containers use now.
    fn usage(&mut self) -> BTreeMap<ContainerId, GroupUsage>;
}

/// Makes an agent's containerizer: called each time its process starts
/// (a supervisor restarts it after a panic), so state that must outlive
/// one life is shared by what the factory captures.
#[derive(Clone)]
pub struct Containerizers(Arc<dyn Fn() -> Box<dyn Containerizer> + Send + Sync>);

impl Containerizers {
    pub fn new(
        make: impl Fn() -> Box<dyn Containerizer> + Send + Sync + 'static,
    ) -> Containerizers {
        Containerizers(Arc::new(make))
    }

    /// A containerizer for a new life of the agent.
    pub fn make(&self) -> Box<dyn Containerizer> {
        (self.0)()
    }
}

impl std::fmt::Debug for Containerizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Containerizers")
    }
}

/// One container of a [`ProcessContainerizer`]: its process group.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// The leader's pid, which numbers the group.
    leader: i32,
    /// When the leader started, to tell it from a recycled pid.
    start_ticks: u64,
    /// Whether the task launcher started it (and reports its end).
    launched: bool,
}

/// Containers as process groups on this machine.
#[derive(Debug)]
pub struct ProcessContainerizer {
    work_dir: PathBuf,
    /// The task launcher program, if the agent has one.
    program: Option<PathBuf>,
    launcher: Option<Launcher>,
    groups: BTreeMap<ContainerId, Group>,
}

impl ProcessContainerizer {
    /// Containers for the agent of `work_dir`, started by the task
    /// launcher `program` when given, else as the agent's children.
    pub fn new(work_dir: &Path, program: Option<PathBuf>) -> ProcessContainerizer {
        ProcessContainerizer {
            work_dir: work_dir.to_owned(),
            program,
            launcher: None,
            groups: BTreeMap::new(),
        }
    }

    /// The task launcher, connected (and started) on first use; `None`
    /// without one, or when it cannot be reached (logged: containers then
    /// run as the agent's children and do not outlive it knowingly).
    fn launcher(&mut self) -> Option<Launcher> {
        if self.launcher.is_none() {
            let program = self.program.as_ref()?;
            match Launcher::connect(program, &self.work_dir) {
                Ok(launcher) => self.launcher = Some(launcher),
                Err(error) => {
                    error!(cause = %error, "cannot reach the task launcher; tasks run as the agent's children");
                }
            }
        }
        self.launcher.clone()
    }

    fn signal_group(&self, group: &Group, signal: Signal) {
        command_executor::signal_process(
            self.launcher.as_ref(),
            group.leader,
            group.start_ticks,
            group.launched,
            signal,
        );
    }
}

impl Containerizer for ProcessContainerizer {
    fn launch(&mut self, id: &ContainerId, launch: Launch) -> Result<Launched, String> {
        let launcher = self.launcher();
        let parent = Parent::of(launcher.as_ref(), !launch.outlives_agent);
        let started = command_executor::start(
            &launch.sandbox,
            &launch.command,
            &launch.environment,
            parent,
            launch.run_as.as_ref(),
        )?;
        let group = Group {
            leader: started.group,
            start_ticks: command_executor::start_ticks(started.group).unwrap_or(0),
            launched: launcher.is_some(),
        };
        self.groups.insert(id.clone(), group);
        Ok(Launched {
            ending: started.ending,
            run: RunCheckpoint {
                container: id.clone(),
                group: group.leader,
                start_ticks: group.start_ticks,
                sandbox: started.sandbox,
                launched: group.launched,
            },
        })
    }

    fn recover(&mut self, run: &RunCheckpoint) -> Recovery {
        let group = Group {
            leader: run.group,
            start_ticks: run.start_ticks,
            launched: run.launched,
        };
        // The launcher that started it runs it still, or holds its end.
        let launcher = run
            .launched
            .then(|| self.launcher())
            .flatten()
            .filter(|launcher| launcher.knows(run.group));
        if let Some(launcher) = launcher {
            self.groups.insert(run.container.clone(), group);
            return match launcher.take_end(run.group) {
                Some(status) => Recovery::Ended(status),
                None => Recovery::Running(Box::pin(launcher.end_of(run.group))),
            };
        }
        if !command_executor::still_running(run.group, run.start_ticks) {
            return Recovery::Gone;
        }
        // Its parent is gone: that it ends is known, not how.
        self.groups.insert(
            run.container.clone(),
            Group {
                launched: false,
                ..group
            },
        );
        let leader = run.group;
        Recovery::Running(Box::pin(async move {
            command_executor::wait_for_exit(leader).await?;
            Err(std::io::Error::other(
                "its process was started by an earlier life of this agent, \
                 and how it ended is not known",
            ))
        }))
    }

    fn signal(&mut self, id: &ContainerId, signal: Signal) {
        if let Some(group) = self.groups.get(id) {
            self.signal_group(group, signal);
        }
    }

    fn forget(&mut self, id: &ContainerId) {
        let Some(group) = self.groups.remove(id) else {
            return;
        };
        // Its parent killed what was left of its group before reaping it;
        // one whose end is unknown (its launcher was lost) may still run,
        // and a leader that runs still is the same process (its start
        // time says so), never a recycled number.
        if command_executor::still_running(group.leader, group.start_ticks) {
            command_executor::signal_group(group.leader, Signal::KILL);
        }
        if group.launched
            && let Some(launcher) = &self.launcher
        {
            launcher.forget(group.leader);
        }
    }

    fn usage(&mut self) -> BTreeMap<ContainerId, GroupUsage> {
        let leaders = self.groups.values().map(|group| group.leader).collect();
        let sampled = crate::usage::sample(&leaders);
        self.groups
            .iter()
            .filter_map(|(id, group)| Some((id.clone(), *sampled.get(&group.leader)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn launch(sandbox: &Path, script: &str) -> Launch {
        Launch {
            sandbox: sandbox.to_owned(),
            command: CommandInfo::shell(script),
            environment: BTreeMap::new(),
            run_as: None,
            outlives_agent: false,
            labels: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn process_containers_run_end_take_signals_and_are_taken_back() {
        let work = std::env::temp_dir().join(format!("strata-containers-{}", std::process::id()));
        let mut containerizer = ProcessContainerizer::new(&work, None);
        let (quick, slow) = (ContainerId::new("quick"), ContainerId::new("slow"));

        let launched = containerizer
            .launch(&quick, launch(&work.join("quick"), "echo out; exit 3"))
            .unwrap();
        assert_eq!(launched.run.container, quick);
        assert_eq!(launched.ending.await.unwrap().code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(work.join("quick").join("stdout")).unwrap(),
            "out\n"
        );
        containerizer.forget(&quick);

        let launched = containerizer
            .launch(&slow, launch(&work.join("slow"), "sleep 100 & wait"))
            .unwrap();
        let run = launched.run.clone();
        assert!(containerizer.usage().contains_key(&slow));
        // Another life of the agent finds it running (its end known, not
        // how: it is not that life's child).
        let mut next_life = ProcessContainerizer::new(&work, None);
        let Recovery::Running(watched) = next_life.recover(&run) else {
            panic!("a running container is taken back");
        };
        containerizer.signal(&slow, Signal::TERM);
        assert_eq!(launched.ending.await.unwrap().signal(), Some(15));
        assert!(watched.await.is_err());
        // Gone now, and its recycled number is never taken for it.
        assert!(matches!(next_life.recover(&run), Recovery::Gone));
        containerizer.forget(&slow);
        assert!(containerizer.usage().is_empty());

        // A command that cannot start says why.
        let error = containerizer
            .launch(
                &ContainerId::new("bad"),
                Launch {
                    command: CommandInfo {
                        shell: false,
                        value: String::new(),
                        ..CommandInfo::shell("")
                    },
                    ..launch(&work.join("bad"), "")
                },
            )
            .unwrap_err();
        assert!(error.contains("names no executable"), "{error}");
        let _ = std::fs::remove_dir_all(&work);
    }
}
