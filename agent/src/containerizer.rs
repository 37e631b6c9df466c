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
//! known to its next life, or else as the agent's own children; with
//! cgroups isolation ([`crate::isolation`]) each also gets a cgroup of
//! its own, which holds its limits, accounts for its usage, and is killed
//! and removed as a whole when it ends. Tests and the failure simulation
//! bring their own containerizers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use strata_protocol::CommandInfo;
use tracing::{error, info};

use crate::cgroups::Cgroup;
use crate::checkpoint::RunCheckpoint;
use crate::command_executor::{self, Confinement, Ending, Parent};
use crate::image_containers::{ImageContainers, ImageRun};
use crate::isolation::CgroupIsolation;
use crate::launcher::Launcher;
use crate::usage::{GroupUsage, KernelUsage};

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

/// Work done in a container's sandbox, once it exists, before its command
/// starts (writing a custom executor's credentials there).
pub struct Prepare(pub Box<PrepareFn>);

/// What [`Prepare`] runs, given the sandbox.
pub type PrepareFn = dyn FnOnce(&Path) -> Result<(), String> + Send;

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepare")
    }
}

/// What to run in a container.
#[derive(Debug)]
pub struct Launch {
    /// Its sandbox, created by the containerizer, its processes' working
    /// directory and home.
    pub sandbox: PathBuf,
    pub command: CommandInfo,
    /// Environment besides the command's own (which wins).
    pub environment: BTreeMap<String, String>,
    /// The user it runs as, looked up by the containerizer; `None` for
    /// the agent's own user.
    pub user: Option<String>,
    pub prepare: Option<Prepare>,
    /// Whether it keeps running when the agent stops (its framework
    /// checkpoints) for the agent's next life to take back.
    pub outlives_agent: bool,
    /// The task's labels (none for an executor's container).
    pub labels: BTreeMap<String, String>,
    /// What it may use (cpus and mem), where the containerizer enforces
    /// limits.
    pub resources: strata_protocol::Resources,
    /// A custom executor's container, which must reach its agent: it
    /// keeps the host's network under `network/none`.
    pub executor: bool,
}

/// A limit a container reached, for which it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limitation {
    /// The kernel killed a process of it for want of memory under its
    /// limit.
    Memory { limit_bytes: u64, peak_bytes: u64 },
}

impl Limitation {
    /// What a task stopped for it is told (Apache Mesos's words).
    pub fn message(&self) -> String {
        match self {
            Limitation::Memory {
                limit_bytes,
                peak_bytes,
            } => format!(
                "Memory limit exceeded: Requested: {}MB Maximum Used: {}MB",
                limit_bytes >> 20,
                peak_bytes >> 20
            ),
        }
    }
}

/// How a container ended.
#[derive(Debug)]
pub struct Exit {
    /// Its first process's status; an error when it is not known.
    pub status: Result<ExitStatus, String>,
    /// The limit it reached, if that is why it ended.
    pub limitation: Option<Limitation>,
}

/// How a launched container ends.
pub type ContainerEnding = std::pin::Pin<Box<dyn std::future::Future<Output = Exit> + Send>>;

/// A container ending as `ending` does, with no limits to report.
pub fn unlimited(ending: Ending) -> ContainerEnding {
    Box::pin(async move {
        Exit {
            status: ending.await.map_err(|error| error.to_string()),
            limitation: None,
        }
    })
}

/// A launched container: how it ends, and what to checkpoint to take it
/// back after a restart.
pub struct Launched {
    pub ending: ContainerEnding,
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
    Running(ContainerEnding),
    /// It ended while the agent was down, as this says, for the limit it
    /// reached if any.
    Ended(ExitStatus, Option<Limitation>),
    /// It is gone and how it ended is not known.
    Gone,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Running(_) => f.write_str("Running"),
            Recovery::Ended(status, limitation) => write!(f, "Ended({status}, {limitation:?})"),
            Recovery::Gone => f.write_str("Gone"),
        }
    }
}

/// Why a container could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// Its container could not be made (its image could not be had, its
    /// root filesystem not mounted), as opposed to its command not
    /// starting.
    pub preparation: bool,
    pub message: String,
}

impl LaunchError {
    /// A container that could not be prepared, for `message`.
    pub fn preparation(message: impl Into<String>) -> LaunchError {
        LaunchError {
            preparation: true,
            message: message.into(),
        }
    }
}

impl From<String> for LaunchError {
    fn from(message: String) -> LaunchError {
        LaunchError {
            preparation: false,
            message,
        }
    }
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A launch under way: the container started, or why it could not.
pub type Launching =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Launched, LaunchError>> + Send>>;

/// A usage sample under way.
pub type Sampling =
    std::pin::Pin<Box<dyn std::future::Future<Output = BTreeMap<ContainerId, GroupUsage>> + Send>>;

/// Runs containers for an agent. Launches and usage samples are futures
/// that do their IO away from the agent's thread.
pub trait Containerizer: Send + std::fmt::Debug {
    /// Creates `launch`'s sandbox and starts its command as container
    /// `id`; an error says why it could not start.
    fn launch(&mut self, id: &ContainerId, launch: Launch) -> Launching;

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
    fn usage(&mut self) -> Sampling;

    /// Container `id` may now use `resources` (a custom executor's, as
    /// its tasks come and go).
    fn update(&mut self, _id: &ContainerId, _resources: &strata_protocol::Resources) {}

    /// Every container of an earlier life the agent still knows was
    /// passed to [`Containerizer::recover`]: what is left of any other is
    /// cleaned up.
    fn recovered(&mut self) {}

    /// The agent stops and `doomed` stop with it: killed, and cleaned up
    /// before this returns (bounded), since nothing would be left to do
    /// it after.
    fn stop_with_agent(&mut self, doomed: &[ContainerId]) {
        for id in doomed {
            self.signal(id, Signal::KILL);
        }
    }
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

/// One container of a [`ProcessContainerizer`]: its process group, and
/// its cgroup with cgroups isolation.
#[derive(Debug, Clone)]
struct Group {
    /// The leader's pid, which numbers the group.
    leader: i32,
    /// When the leader started, to tell it from a recycled pid.
    start_ticks: u64,
    /// Whether the task launcher started it (and reports its end).
    launched: bool,
    cgroup: Option<Cgroup>,
    /// A container in an image: the OCI runtime's, until cleaned up.
    image: Option<ImageRun>,
}

/// What a [`ProcessContainerizer`] shares with its launches, which run on
/// tokio's blocking pool.
#[derive(Debug, Default)]
struct Shared {
    launcher: std::sync::Mutex<Option<Launcher>>,
    groups: std::sync::Mutex<BTreeMap<ContainerId, Group>>,
}

impl Shared {
    fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<ContainerId, Group>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The task launcher, once connected.
    fn connected(&self) -> Option<Launcher> {
        self.launcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The task launcher, connected (and started) on first use; `None`
    /// without one, or when it cannot be reached (logged: containers then
    /// run as the agent's children and do not outlive it knowingly).
    fn launcher(&self, program: Option<&Path>, work_dir: &Path) -> Option<Launcher> {
        let mut launcher = self
            .launcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if launcher.is_none() {
            let program = program?;
            match Launcher::connect(program, work_dir) {
                Ok(connected) => *launcher = Some(connected),
                Err(error) => {
                    error!(cause = %error, "cannot reach the task launcher; tasks run as the agent's children");
                }
            }
        }
        launcher.clone()
    }

    /// Starts a container: blocking IO (the sandbox, the launcher's
    /// round trip), for the blocking pool.
    fn launch(
        &self,
        program: Option<&Path>,
        work_dir: &Path,
        isolation: Option<&CgroupIsolation>,
        images: &Result<Arc<ImageContainers>, String>,
        id: &ContainerId,
        mut launch: Launch,
    ) -> Result<Launched, LaunchError> {
        let run_as = match &launch.user {
            Some(user) => crate::users::run_as(user, true)?,
            None => None,
        };
        if let Some(Prepare(prepare)) = launch.prepare.take() {
            prepare(&launch.sandbox)?;
        }
        if launch
            .command
            .container
            .as_ref()
            .is_some_and(|container| container.image.is_some())
        {
            let images = images.as_ref().map_err(|reason| {
                LaunchError::preparation(format!(
                    "this agent cannot run containers with images: {reason}"
                ))
            })?;
            let isolation = isolation.ok_or_else(|| {
                LaunchError::preparation(
                    "containers with images need the cgroups isolation (an agent run as root)",
                )
            })?;
            return self.launch_in_image(program, work_dir, isolation, images, id, launch, run_as);
        }
        let (cgroup, confinement) = match isolation {
            None => (None, Confinement::default()),
            Some(isolation) => {
                let cgroup = isolation
                    .create(id.as_str(), &launch.resources)
                    .map_err(|e| format!("cannot create the container's cgroup: {e}"))?;
                let mut confinement = isolation.confinement(&cgroup);
                if launch.executor
                    && let Some(namespaces) = &mut confinement.namespaces
                {
                    namespaces.network = false;
                }
                (Some(cgroup), confinement)
            }
        };
        let launcher = self.launcher(program, work_dir);
        let parent = Parent::of(launcher.as_ref(), !launch.outlives_agent);
        let started = command_executor::start(
            &launch.sandbox,
            &launch.command,
            &launch.environment,
            parent,
            run_as.as_ref(),
            &confinement,
        );
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                if let Some(cgroup) = cgroup {
                    // Nothing started in it, or what did goes with it.
                    tokio::spawn(remove_cgroup(cgroup));
                }
                return Err(error.into());
            }
        };
        Ok(self.track(id, started, launcher.is_some(), cgroup, None))
    }

    /// Keeps started container `id` (its leader, cgroup, image) and says
    /// how it ends and what to checkpoint of it.
    fn track(
        &self,
        id: &ContainerId,
        started: command_executor::Started,
        launched: bool,
        cgroup: Option<Cgroup>,
        image: Option<(Arc<ImageContainers>, ImageRun)>,
    ) -> Launched {
        let group = Group {
            leader: started.group,
            start_ticks: command_executor::start_ticks(started.group).unwrap_or(0),
            launched,
            cgroup,
            image: image.as_ref().map(|(_, run)| run.clone()),
        };
        let run = RunCheckpoint {
            container: id.clone(),
            group: group.leader,
            start_ticks: group.start_ticks,
            sandbox: started.sandbox,
            launched: group.launched,
        };
        let mut ending = contained(started.ending, group.cgroup.clone());
        if let Some((images, image)) = image {
            ending = in_image(ending, images, id.clone(), image);
        }
        self.groups().insert(id.clone(), group);
        Launched { ending, run }
    }
}

impl Shared {
    /// Starts a container in its image: the image provisioned, its bundle
    /// written, the OCI runtime started (as root, in the container's
    /// cgroup) to run it. Blocking.
    #[allow(clippy::too_many_arguments)]
    fn launch_in_image(
        &self,
        program: Option<&Path>,
        work_dir: &Path,
        isolation: &CgroupIsolation,
        images: &Arc<ImageContainers>,
        id: &ContainerId,
        launch: Launch,
        run_as: Option<crate::users::RunAs>,
    ) -> Result<Launched, LaunchError> {
        let container = launch.command.container.clone().unwrap_or_default();
        let output = command_executor::prepare_sandbox(&launch.sandbox, run_as.as_ref())
            .map_err(LaunchError::preparation)?;
        let cgroup = isolation
            .create(id.as_str(), &launch.resources)
            .map_err(|e| {
                LaunchError::preparation(format!("cannot create the container's cgroup: {e}"))
            })?;
        let own_network = !launch.executor
            && isolation
                .namespaces
                .as_ref()
                .is_some_and(|namespaces| namespaces.network);
        let prepared = images.prepare(
            id,
            &container,
            &launch.command,
            &launch.environment,
            &launch.sandbox,
            run_as.as_ref(),
            &cgroup,
            own_network,
        );
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                tokio::spawn(remove_cgroup(cgroup));
                return Err(error);
            }
        };
        // The runtime joins the cgroup before it execs; it makes the
        // container's namespaces itself.
        let confinement = Confinement {
            cgroup: Some(cgroup.clone()),
            namespaces: None,
        };
        let launcher = self.launcher(program, work_dir);
        let parent = Parent::of(launcher.as_ref(), !launch.outlives_agent);
        let started = command_executor::start_argv(
            &launch.sandbox,
            prepared.argv,
            prepared.environment,
            output,
            parent,
            None,
            &confinement,
        );
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                images.end(id.as_str(), &prepared.run);
                tokio::spawn(remove_cgroup(cgroup));
                return Err(error.into());
            }
        };
        let (leader, ticks) = (
            started.group,
            command_executor::start_ticks(started.group).unwrap_or(0),
        );
        crate::oci::wait_until_started(&images.bundle(id.as_str()), || {
            command_executor::still_running(leader, ticks)
        });
        Ok(self.track(
            id,
            started,
            launcher.is_some(),
            Some(cgroup),
            Some((images.clone(), prepared.run)),
        ))
    }
}

/// A container in an image ending as `ending` does, cleaned up after (its
/// cgroup first, then the runtime's state and its root filesystem).
fn in_image(
    ending: ContainerEnding,
    images: Arc<ImageContainers>,
    id: ContainerId,
    run: ImageRun,
) -> ContainerEnding {
    Box::pin(async move {
        let exit = ending.await;
        let cleaning = tokio::task::spawn_blocking(move || images.end(id.as_str(), &run));
        if let Err(error) = cleaning.await {
            error!(cause = %error, "cleaning up after an image container failed");
        }
        exit
    })
}

/// A container ending as `ending` does; with a cgroup, whatever is left
/// in it is killed and it is removed before the end is told, and an OOM
/// kill the kernel counted there makes the end a memory limitation.
fn contained(ending: Ending, cgroup: Option<Cgroup>) -> ContainerEnding {
    let Some(cgroup) = cgroup else {
        return unlimited(ending);
    };
    Box::pin(async move {
        let status = ending.await.map_err(|error| error.to_string());
        let limitation = remove_cgroup(cgroup).await;
        Exit { status, limitation }
    })
}

/// The memory limitation `cgroup` reached, if the kernel killed in it.
fn limitation_of(cgroup: &Cgroup) -> Option<Limitation> {
    if cgroup.oom_kills().ok()? == 0 {
        return None;
    }
    let usage = cgroup.usage().ok()?;
    Some(Limitation::Memory {
        limit_bytes: cgroup.memory_limit().ok().flatten().unwrap_or(0),
        peak_bytes: usage.memory_peak_bytes.max(usage.memory_bytes),
    })
}

/// How long a killed cgroup's processes get to go before its removal is
/// given up (logged; the next agent start cleans it up).
const CGROUP_EMPTYING: std::time::Duration = std::time::Duration::from_secs(10);

/// Kills what is left in a container's cgroup and removes it once empty;
/// the memory limitation it reached, read first.
async fn remove_cgroup(cgroup: Cgroup) -> Option<Limitation> {
    // Every cgroup file operation runs on the blocking pool: removing a
    // memory cgroup can take the kernel a while.
    let (limitation, removed) = on_blocking_pool(&cgroup, |cgroup| {
        (limitation_of(cgroup), kill_and_remove(cgroup))
    })
    .await
    .unwrap_or((None, false));
    if !removed {
        finish_removal(cgroup).await;
    }
    limitation
}

/// Kills what is left in the cgroup of a container whose first process
/// ended and removes the cgroup once empty (the task launcher's, for the
/// containers of an agent that went away).
pub(crate) async fn remove_ended(cgroup: Cgroup) {
    if !on_blocking_pool(&cgroup, kill_and_remove)
        .await
        .unwrap_or(false)
    {
        finish_removal(cgroup).await;
    }
}

/// Removes `cgroup` if empty, else kills what is in it and tries once
/// more; false while processes are left.
fn kill_and_remove(cgroup: &Cgroup) -> bool {
    // Usually nothing is left: its first process took the rest along.
    if remove_if_empty(cgroup) {
        return true;
    }
    if let Err(error) = cgroup.kill() {
        error!(cgroup = cgroup.name(), cause = %error, "cannot kill what is left of a container");
    }
    remove_if_empty(cgroup)
}

/// Kills what is in `cgroup` until the kernel let its processes go, then
/// removes it; gives up after [`CGROUP_EMPTYING`] (logged).
async fn finish_removal(cgroup: Cgroup) {
    // Killed processes leave the cgroup as the kernel reaps them: soon.
    let deadline = tokio::time::Instant::now() + CGROUP_EMPTYING;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if tokio::time::Instant::now() >= deadline {
            error!(
                cgroup = cgroup.name(),
                "processes of an ended container do not go; its cgroup is left"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
        // Killed again: whatever forked meanwhile goes too.
        let removed = on_blocking_pool(&cgroup, |cgroup| {
            let _ = cgroup.kill();
            remove_if_empty(cgroup)
        })
        .await
        .unwrap_or(false);
        if removed {
            return;
        }
    }
}

/// Runs `work` on `cgroup` on tokio's blocking pool; `None` if it could
/// not finish.
async fn on_blocking_pool<T: Send + 'static>(
    cgroup: &Cgroup,
    work: impl FnOnce(&Cgroup) -> T + Send + 'static,
) -> Option<T> {
    let cgroup = cgroup.clone();
    tokio::task::spawn_blocking(move || work(&cgroup))
        .await
        .ok()
}

/// Removes `cgroup` if no process is left in it; false while some are
/// (or the kernel still holds them).
fn remove_if_empty(cgroup: &Cgroup) -> bool {
    if cgroup.processes().is_ok_and(|pids| !pids.is_empty()) {
        return false;
    }
    match cgroup.destroy() {
        Ok(()) => true,
        Err(error) if error.is_busy() => false,
        Err(error) => {
            error!(cgroup = cgroup.name(), cause = %error, "cannot remove an ended container's cgroup");
            true
        }
    }
}

/// Containers as process groups on this machine.
#[derive(Debug)]
pub struct ProcessContainerizer {
    work_dir: PathBuf,
    /// The task launcher program, if the agent has one.
    program: Option<PathBuf>,
    isolation: Option<Arc<CgroupIsolation>>,
    /// Containers with images, or why this agent cannot run them.
    images: Result<Arc<ImageContainers>, String>,
    shared: Arc<Shared>,
}

impl ProcessContainerizer {
    /// Containers for the agent of `work_dir`, started by the task
    /// launcher `program` when given, else as the agent's children.
    pub fn new(work_dir: &Path, program: Option<PathBuf>) -> ProcessContainerizer {
        ProcessContainerizer {
            work_dir: work_dir.to_owned(),
            program,
            isolation: None,
            images: Err("it was started without them".into()),
            shared: Arc::default(),
        }
    }

    /// Containers with images run as `images` says (or, an error, why
    /// they cannot be run here).
    pub fn with_images(
        mut self,
        images: Result<Arc<ImageContainers>, String>,
    ) -> ProcessContainerizer {
        self.images = images;
        self
    }

    /// Containers isolated in cgroups (and namespaces) as `isolation`
    /// says.
    pub fn isolated(mut self, isolation: Arc<CgroupIsolation>) -> ProcessContainerizer {
        self.isolation = Some(isolation);
        self
    }

    fn signal_group(&self, group: &Group, signal: Signal) {
        if signal == Signal::KILL
            && let Some(cgroup) = group.cgroup.clone()
        {
            // Every process of it, those that left its group included, away
            // from the agent's thread (freezing may take a moment); its
            // group is killed at once below.
            tokio::task::spawn_blocking(move || {
                if let Err(error) = cgroup.kill() {
                    error!(cgroup = cgroup.name(), cause = %error, "cannot kill a container");
                }
            });
        }
        command_executor::signal_process(
            self.shared.connected().as_ref(),
            group.leader,
            group.start_ticks,
            group.launched,
            signal,
        );
    }
}

impl Containerizer for ProcessContainerizer {
    fn launch(&mut self, id: &ContainerId, launch: Launch) -> Launching {
        let shared = self.shared.clone();
        let (program, work_dir, id) = (self.program.clone(), self.work_dir.clone(), id.clone());
        let isolation = self.isolation.clone();
        let images = self.images.clone();
        let launching = tokio::task::spawn_blocking(move || {
            shared.launch(
                program.as_deref(),
                &work_dir,
                isolation.as_deref(),
                &images,
                &id,
                launch,
            )
        });
        Box::pin(async move {
            launching
                .await
                .unwrap_or_else(|error| Err(format!("the launch did not finish: {error}").into()))
        })
    }

    fn recover(&mut self, run: &RunCheckpoint) -> Recovery {
        let cgroup = self
            .isolation
            .as_ref()
            .and_then(|isolation| isolation.existing(run.container.as_str()));
        let image = self
            .images
            .as_ref()
            .ok()
            .and_then(|images| Some((images.clone(), images.recover(run.container.as_str())?)));
        let group = Group {
            leader: run.group,
            start_ticks: run.start_ticks,
            launched: run.launched,
            cgroup: cgroup.clone(),
            image: image.as_ref().map(|(_, image)| image.clone()),
        };
        // A container in an image is cleaned up after its end.
        let finish = |ending: ContainerEnding| match &image {
            Some((images, image)) => {
                in_image(ending, images.clone(), run.container.clone(), image.clone())
            }
            None => ending,
        };
        // The launcher that started it runs it still, or holds its end.
        let launcher = run
            .launched
            .then(|| {
                self.shared
                    .launcher(self.program.as_deref(), &self.work_dir)
            })
            .flatten()
            .filter(|launcher| launcher.knows(run.group));
        if let Some(launcher) = launcher {
            self.shared.groups().insert(run.container.clone(), group);
            return match launcher.take_end(run.group) {
                // Its cgroup goes when the agent forgets it.
                Some(status) => Recovery::Ended(status, cgroup.as_ref().and_then(limitation_of)),
                None => Recovery::Running(finish(contained(
                    Box::pin(launcher.end_of(run.group)),
                    cgroup,
                ))),
            };
        }
        if !command_executor::still_running(run.group, run.start_ticks) {
            if let Some(cgroup) = cgroup {
                // What it left behind goes with it.
                tokio::spawn(remove_cgroup(cgroup));
            }
            if let Some((images, image)) = image {
                let id = run.container.clone();
                tokio::task::spawn_blocking(move || images.end(id.as_str(), &image));
            }
            return Recovery::Gone;
        }
        // Its parent is gone: that it ends is known, not how.
        self.shared.groups().insert(
            run.container.clone(),
            Group {
                launched: false,
                ..group
            },
        );
        let leader = run.group;
        Recovery::Running(finish(contained(
            Box::pin(async move {
                command_executor::wait_for_exit(leader).await?;
                Err(std::io::Error::other(
                    "its process was started by an earlier life of this agent, \
                     and how it ended is not known",
                ))
            }),
            cgroup,
        )))
    }

    fn update(&mut self, id: &ContainerId, resources: &strata_protocol::Resources) {
        let (Some(isolation), Some(group)) =
            (&self.isolation, self.shared.groups().get(id).cloned())
        else {
            return;
        };
        let (Some(cgroup), isolation, resources) =
            (group.cgroup, isolation.clone(), resources.clone())
        else {
            return;
        };
        let id = id.clone();
        // The kernel may reclaim memory as the limit changes: not on the
        // agent's thread.
        tokio::task::spawn_blocking(move || {
            if let Err(error) = isolation.limit(&cgroup, &resources) {
                error!(container = %id, cause = %error, "cannot change a container's limits");
            }
        });
    }

    fn recovered(&mut self) {
        let known = self.shared.groups().keys().cloned().collect::<Vec<_>>();
        if let Ok(images) = &self.images {
            // Before any launch, so no new container's bundle is taken
            // for an unknown one (bounded: each runtime command is).
            let known: Vec<String> = known.iter().map(|id| id.as_str().to_owned()).collect();
            images.clean_up_unknown(&known);
        }
        let Some(isolation) = &self.isolation else {
            return;
        };
        match isolation.layout.existing() {
            Ok(names) => {
                for name in names {
                    if known.iter().any(|id| id.as_str() == name) {
                        continue;
                    }
                    info!(cgroup = %name, "removing the cgroup of a container this agent no longer knows");
                    tokio::spawn(remove_cgroup(isolation.layout.open(&name)));
                }
            }
            Err(error) => error!(cause = %error, "cannot list the containers' cgroups"),
        }
    }

    fn stop_with_agent(&mut self, doomed: &[ContainerId]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for id in doomed {
            let Some(group) = self.shared.groups().get(id).cloned() else {
                continue;
            };
            command_executor::signal_process(
                self.shared.connected().as_ref(),
                group.leader,
                group.start_ticks,
                group.launched,
                Signal::KILL,
            );
            let mut emptied = true;
            if let Some(cgroup) = &group.cgroup {
                // Killed again each pass while the kernel holds exiting
                // processes.
                loop {
                    if let Err(error) = cgroup.kill() {
                        info!(cgroup = cgroup.name(), %error, "cannot kill a container as the agent stops");
                    }
                    match cgroup.destroy() {
                        Err(error) if error.is_busy() && std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        Err(error) => {
                            error!(cgroup = cgroup.name(), cause = %error, "a container's cgroup is left as the agent stops");
                            emptied = false;
                            break;
                        }
                        Ok(()) => break,
                    }
                }
            }
            // Its root filesystem stays while anything may still run in
            // it (the next start cleans up).
            if emptied && let (Some(image), Ok(images)) = (&group.image, &self.images) {
                images.end(id.as_str(), image);
            }
        }
    }

    fn signal(&mut self, id: &ContainerId, signal: Signal) {
        let group = self.shared.groups().get(id).cloned();
        if let Some(group) = group {
            if group.image.is_some()
                && let Ok(images) = &self.images
            {
                // Through the runtime, to the container's processes (the
                // runtime's own process passes signals on as well).
                let (images, id) = (images.clone(), id.clone());
                let name = if signal == Signal::KILL {
                    "KILL"
                } else {
                    "TERM"
                };
                tokio::task::spawn_blocking(move || {
                    if let Err(error) = images.runtime.kill(id.as_str(), name) {
                        info!(container = %id, %error, "the OCI runtime could not signal a container");
                    }
                });
            }
            self.signal_group(&group, signal);
        }
    }

    fn forget(&mut self, id: &ContainerId) {
        let Some(group) = self.shared.groups().remove(id) else {
            return;
        };
        // Its parent killed what was left of its group before reaping it;
        // one whose end is unknown (its launcher was lost) may still run,
        // and a leader that runs still is the same process (its start
        // time says so), never a recycled number.
        if command_executor::still_running(group.leader, group.start_ticks) {
            command_executor::signal_group(group.leader, Signal::KILL);
        }
        // One that ended while the agent was down still has its cgroup
        // (one watched to its end has none by now).
        if let Some(cgroup) = group.cgroup
            && cgroup.exists()
        {
            tokio::spawn(remove_cgroup(cgroup));
        }
        if group.launched
            && let Some(launcher) = self.shared.connected()
        {
            launcher.forget(group.leader);
        }
        // One that ended while the agent was down: its image's things.
        if let (Some(image), Ok(images)) = (group.image, &self.images) {
            let (images, id) = (images.clone(), id.clone());
            tokio::task::spawn_blocking(move || images.end(id.as_str(), &image));
        }
    }

    fn usage(&mut self) -> Sampling {
        let groups = self.shared.groups().clone();
        let sampling = tokio::task::spawn_blocking(move || {
            // From the kernel's accounting where there is a cgroup, else
            // from /proc.
            let leaders = groups
                .values()
                .filter(|group| group.cgroup.is_none())
                .map(|group| group.leader)
                .collect();
            let sampled = crate::usage::sample(&leaders);
            groups
                .iter()
                .filter_map(|(id, group)| {
                    let usage = match &group.cgroup {
                        Some(cgroup) => kernel_usage(cgroup)?,
                        None => *sampled.get(&group.leader)?,
                    };
                    Some((id.clone(), usage))
                })
                .collect()
        });
        Box::pin(async move { sampling.await.unwrap_or_default() })
    }
}

/// A container's usage from its cgroup; `None` once it is gone.
fn kernel_usage(cgroup: &Cgroup) -> Option<GroupUsage> {
    let usage = cgroup.usage().ok()?;
    Some(GroupUsage {
        cpu_seconds: usage.cpu_time_ns as f64 / 1e9,
        rss_bytes: usage.rss_bytes,
        processes: usage.processes,
        kernel: Some(KernelUsage {
            throttled_seconds: usage.throttled_ns as f64 / 1e9,
            memory_bytes: usage.memory_bytes,
            memory_peak_bytes: usage.memory_peak_bytes,
            memory_limit_bytes: cgroup.memory_limit().ok().flatten(),
            oom_kills: usage.oom_kills,
        }),
    })
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
            user: None,
            prepare: None,
            outlives_agent: false,
            labels: BTreeMap::new(),
            resources: strata_protocol::Resources::default(),
            executor: false,
        }
    }

    #[tokio::test]
    async fn process_containers_run_end_take_signals_and_are_taken_back() {
        let work = std::env::temp_dir().join(format!("strata-containers-{}", std::process::id()));
        let mut containerizer = ProcessContainerizer::new(&work, None);
        let (quick, slow) = (ContainerId::new("quick"), ContainerId::new("slow"));

        let launched = containerizer
            .launch(&quick, launch(&work.join("quick"), "echo out; exit 3"))
            .await
            .unwrap();
        assert_eq!(launched.run.container, quick);
        assert_eq!(launched.ending.await.status.unwrap().code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(work.join("quick").join("stdout")).unwrap(),
            "out\n"
        );
        containerizer.forget(&quick);

        let launched = containerizer
            .launch(&slow, launch(&work.join("slow"), "sleep 100 & wait"))
            .await
            .unwrap();
        let run = launched.run.clone();
        assert!(containerizer.usage().await.contains_key(&slow));
        // Another life of the agent finds it running (its end known, not
        // how: it is not that life's child).
        let mut next_life = ProcessContainerizer::new(&work, None);
        let Recovery::Running(watched) = next_life.recover(&run) else {
            panic!("a running container is taken back");
        };
        containerizer.signal(&slow, Signal::TERM);
        assert_eq!(launched.ending.await.status.unwrap().signal(), Some(15));
        assert!(watched.await.status.is_err());
        // Gone now, and its recycled number is never taken for it.
        assert!(matches!(next_life.recover(&run), Recovery::Gone));
        containerizer.forget(&slow);
        assert!(containerizer.usage().await.is_empty());

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
            .await
            .unwrap_err();
        assert!(error.message.contains("names no executable"), "{error}");
        // Work to do in the sandbox before the command starts, and its
        // failure.
        let prepared = Launch {
            prepare: Some(Prepare(Box::new(|sandbox| {
                std::fs::create_dir_all(sandbox).map_err(|e| e.to_string())?;
                std::fs::write(sandbox.join("given"), "yes").map_err(|e| e.to_string())
            }))),
            ..launch(&work.join("prepared"), "cat given")
        };
        let launched = containerizer
            .launch(&ContainerId::new("prepared"), prepared)
            .await
            .unwrap();
        assert_eq!(launched.ending.await.status.unwrap().code(), Some(0));
        let refused = Launch {
            prepare: Some(Prepare(Box::new(|_| Err("no credentials".into())))),
            ..launch(&work.join("refused"), "true")
        };
        let error = containerizer
            .launch(&ContainerId::new("refused"), refused)
            .await
            .unwrap_err();
        assert_eq!(error.message, "no credentials");
        assert!(!error.preparation);
        let _ = std::fs::remove_dir_all(&work);
    }
}
