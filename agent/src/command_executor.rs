//! The command executor: a task's command as a real OS process.
//!
//! Each task runs in its own sandbox,
//! `<work>/agents/<agent>/frameworks/<framework>/executors/<executor>/runs/<run>/`,
//! with its stdout and stderr in files there, and in its own process
//! group, so a kill reaches everything it started and nothing it started
//! outlives it: after the task's process ends, whatever is left of its
//! group is killed. Processes are started with `std::process::Command`
//! (posix_spawn where it can), never by forking the agent.
//!
//! Kills are SIGTERM to the group, then SIGKILL after a grace period.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use strata_protocol::{AgentId, CommandInfo, FrameworkId, TaskId, TaskState};

use crate::launcher::Launcher;
use crate::users::RunAs;

/// The sandbox of one run of one executor.
pub fn sandbox_path(
    work_dir: &Path,
    agent_id: &AgentId,
    framework_id: &FrameworkId,
    executor: &str,
    run: &str,
) -> PathBuf {
    work_dir
        .join("agents")
        .join(agent_id.as_str())
        .join("frameworks")
        .join(framework_id.as_str())
        .join("executors")
        .join(executor)
        .join("runs")
        .join(run)
}

/// How a started process ends.
pub type Ending = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<ExitStatus>> + Send + 'static>,
>;

/// A started task process.
pub struct Started {
    /// Resolves when it ends.
    pub ending: Ending,
    /// Its process group (the process's pid).
    pub group: i32,
    pub sandbox: PathBuf,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("group", &self.group)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// Who starts a command: the agent itself, or its task launcher (see
/// [`crate::launcher`]), for tasks that outlive the agent.
#[derive(Debug, Clone, Copy)]
pub enum Parent<'a> {
    Agent,
    Launcher {
        launcher: &'a Launcher,
        /// Killed when the agent goes (its framework does not checkpoint).
        dies_with_agent: bool,
    },
}

impl<'a> Parent<'a> {
    /// The launcher when there is one, else the agent.
    pub fn of(launcher: Option<&'a Launcher>, dies_with_agent: bool) -> Parent<'a> {
        match launcher {
            Some(launcher) => Parent::Launcher {
                launcher,
                dies_with_agent,
            },
            None => Parent::Agent,
        }
    }
}

/// How a container's first process is confined before it execs (see
/// [`crate::isolation`]); the default confines nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// The container's cgroup: the process joins it (its `cgroup.procs`
    /// file in each hierarchy) before it execs, so everything it starts
    /// is in the cgroup from its first instruction.
    pub cgroup: Option<crate::cgroups::Cgroup>,
    /// Its own pid and mount namespaces (and network namespace), under
    /// the container init ([`crate::init`]).
    pub namespaces: Option<Namespaces>,
}

/// A container's namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// The program whose `container-init` subcommand sets the namespaces
    /// up and reaps in them (the `strata` binary).
    pub init: PathBuf,
    /// A network namespace of its own, with nothing but loopback.
    pub network: bool,
}

/// Creates the sandbox and starts `command` in it, as `parent`'s child,
/// as `run_as` (who then owns the sandbox) or as the agent's user,
/// confined as `confinement` says.
pub fn start(
    sandbox: &Path,
    command: &CommandInfo,
    extra_environment: &BTreeMap<String, String>,
    parent: Parent<'_>,
    run_as: Option<&RunAs>,
    confinement: &Confinement,
) -> Result<Started, String> {
    let output = prepare_sandbox(sandbox, run_as)?;
    let argv: Vec<std::ffi::OsString> = if command.shell {
        vec!["/bin/sh".into(), "-c".into(), command.value.clone().into()]
    } else {
        if command.value.is_empty() {
            return Err("the command names no executable".into());
        }
        // Mesos's convention: `arguments` is the whole argv, argv[0] first.
        std::iter::once(command.value.clone().into())
            .chain(command.arguments.iter().skip(1).map(Into::into))
            .collect()
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut environment: BTreeMap<OsString, OsString> = BTreeMap::from([
        ("PATH".into(), path.into()),
        ("HOME".into(), sandbox.into()),
        ("STRATA_SANDBOX".into(), sandbox.into()),
    ]);
    if let Some(run_as) = run_as {
        environment.insert("USER".into(), run_as.user.clone().into());
        environment.insert("LOGNAME".into(), run_as.user.clone().into());
    }
    for (name, value) in extra_environment.iter().chain(&command.environment) {
        environment.insert(name.into(), value.into());
    }
    start_argv(
        sandbox,
        argv,
        environment,
        output,
        parent,
        run_as,
        confinement,
    )
}

/// Creates the sandbox (its user's alone: `run_as`'s, or the agent's)
/// and its `stdout` and `stderr` files.
pub fn prepare_sandbox(
    sandbox: &Path,
    run_as: Option<&RunAs>,
) -> Result<(fs::File, fs::File), String> {
    fs::create_dir_all(sandbox)
        .map_err(|e| format!("cannot create the sandbox {}: {e}", sandbox.display()))?;
    let stdout = fs::File::create(sandbox.join("stdout"))
        .map_err(|e| format!("cannot create {}: {e}", sandbox.join("stdout").display()))?;
    let stderr = fs::File::create(sandbox.join("stderr"))
        .map_err(|e| format!("cannot create {}: {e}", sandbox.join("stderr").display()))?;
    // Others never read a sandbox: it is its user's (and group's) alone.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(sandbox, fs::Permissions::from_mode(0o750)).map_err(|e| {
            format!(
                "cannot close the sandbox {} to others: {e}",
                sandbox.display()
            )
        })?;
    }
    if let Some(run_as) = run_as {
        crate::users::hand_over(sandbox, run_as).map_err(|e| {
            format!(
                "cannot give the sandbox {} to {}: {e}",
                sandbox.display(),
                run_as.user
            )
        })?;
    }
    Ok((stdout, stderr))
}

/// Starts `argv` in the prepared `sandbox` with exactly `environment`,
/// its output to `output`, as `parent`'s child, as `run_as` or the
/// agent's user, confined as `confinement` says.
pub fn start_argv(
    sandbox: &Path,
    argv: Vec<OsString>,
    environment: BTreeMap<OsString, OsString>,
    output: (fs::File, fs::File),
    parent: Parent<'_>,
    run_as: Option<&RunAs>,
    confinement: &Confinement,
) -> Result<Started, String> {
    let (stdout, stderr) = output;
    let shown = argv
        .first()
        .map(|program| program.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Parent::Launcher {
        launcher,
        dies_with_agent,
    } = parent
    {
        let launch = crate::launcher::Launch {
            argv: argv.into_iter().map(OsString::into_vec).collect(),
            environment: environment
                .into_iter()
                .map(|(name, value)| (name.into_vec(), value.into_vec()))
                .collect(),
            directory: sandbox.to_owned(),
            stdout: sandbox.join("stdout"),
            stderr: sandbox.join("stderr"),
            dies_with_agent,
            run_as: run_as.cloned(),
            confinement: confinement.clone(),
        };
        let group = launcher.launch(launch)?;
        return Ok(Started {
            ending: Box::pin(launcher.end_of(group)),
            group,
            sandbox: sandbox.to_owned(),
        });
    }
    let child = spawn_in_group(
        &argv,
        environment,
        sandbox,
        stdout,
        stderr,
        run_as,
        confinement,
    )
    .map_err(|e| format!("cannot start {shown:?}: {e}"))?;
    let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return Err("the task process exited before it could be tracked".into());
    };
    Ok(Started {
        ending: Box::pin(reap_after_killing_group(child)),
        group,
        sandbox: sandbox.to_owned(),
    })
}

/// Starts `argv` (not empty) in `directory` with exactly `environment`,
/// its output to the given files, in a process group of its own,
/// confined as `confinement` says: how every task process starts, by the
/// agent or by its launcher.
pub(crate) fn spawn_in_group(
    argv: &[OsString],
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    directory: &Path,
    stdout: fs::File,
    stderr: fs::File,
    run_as: Option<&RunAs>,
    confinement: &Confinement,
) -> std::io::Result<tokio::process::Child> {
    let command = command_in_group(
        argv,
        environment,
        directory,
        stdout,
        stderr,
        run_as,
        confinement,
    )?;
    tokio::process::Command::from(command)
        .kill_on_drop(false)
        .spawn()
}

/// The command [`spawn_in_group`] starts.
pub(crate) fn command_in_group(
    argv: &[OsString],
    environment: impl IntoIterator<Item = (OsString, OsString)>,
    directory: &Path,
    stdout: impl Into<Stdio>,
    stderr: impl Into<Stdio>,
    run_as: Option<&RunAs>,
    confinement: &Confinement,
) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    if argv.is_empty() {
        return Err(std::io::Error::other("the command names no executable"));
    }
    // In namespaces, the container init runs first (as root, to set them
    // up) and starts the command as `run_as` itself.
    let argv: Vec<OsString> = match &confinement.namespaces {
        Some(namespaces) => std::iter::once(namespaces.init.clone().into_os_string())
            .chain(crate::init::arguments(run_as, namespaces.network, argv))
            .collect(),
        None => argv.to_vec(),
    };
    let Some((program, arguments)) = argv.split_first() else {
        return Err(std::io::Error::other("the command names no executable"));
    };
    let mut command = std::process::Command::new(program);
    crate::users::confine_in_child(&mut command, confinement)?;
    command
        .args(arguments)
        .current_dir(directory)
        .env_clear()
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if confinement.namespaces.is_some() {
        // The container init runs as root: the command's environment
        // reaches it on its standard input, never in its own.
        let environment: crate::init::Environment = environment
            .into_iter()
            .map(|(name, value)| (name.into_vec(), value.into_vec()))
            .collect();
        command.stdin(crate::init::environment_file(&environment)?);
    } else {
        if let Some(run_as) = run_as {
            crate::users::switch_in_child(&mut command, run_as);
        }
        command.envs(environment).stdin(Stdio::null());
    }
    Ok(command)
}

/// When process `pid` started, in clock ticks since boot; `None` when it
/// is gone.
pub fn start_ticks(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .and_then(|process| process.stat())
        .ok()
        .map(|stat| stat.starttime)
}

/// Whether process group leader `group` still runs and is the process
/// that started at `start_ticks` (not a recycled pid). A zombie no longer
/// runs.
pub fn still_running(group: i32, start_ticks: u64) -> bool {
    procfs::process::Process::new(group)
        .and_then(|process| process.stat())
        .is_ok_and(|stat| stat.starttime == start_ticks && stat.state != 'Z' && stat.state != 'X')
}

/// Waits until process `pid` has exited (also when it is not a child). A
/// process that is gone already counts as exited.
pub async fn wait_for_exit(pid: i32) -> std::io::Result<()> {
    let Some(pid) = Pid::from_raw(pid) else {
        return Ok(());
    };
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
        Ok(pidfd) => pidfd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    // The constructor is deprecated because a borrowed descriptor could be
    // closed under the registration; this one is owned by the `AsyncFd`
    // and closed only when it is dropped, which is what it requires (the
    // replacement is `unsafe`, which this workspace forbids).
    #[allow(deprecated)]
    let fd = tokio::io::unix::AsyncFd::with_interest(pidfd, tokio::io::Interest::READABLE)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Signals the group of a task process the agent tracks, without ever
/// reaching a group whose leader was reaped (its number may be someone
/// else's by then): through the launcher when it started the task (it
/// signals only children it has not reaped), otherwise only while the
/// leader still runs as the process that started at `start_ticks` (the
/// agent's own child keeps its number until the agent reaps it, and the
/// agent kills the group before it does).
pub fn signal_process(
    launcher: Option<&Launcher>,
    group: i32,
    start_ticks: u64,
    launched: bool,
    signal: Signal,
) {
    match launcher {
        Some(launcher) if launched => launcher.signal(group, signal),
        _ => {
            if still_running(group, start_ticks) {
                signal_group(group, signal);
            }
        }
    }
}

/// Waits for `child` (a group leader) to exit, kills what is left of its
/// group while the exited leader still holds the group's number, then
/// reaps it.
pub async fn reap_after_killing_group(
    mut child: tokio::process::Child,
) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok())
        && wait_for_exit(pid).await.is_ok()
    {
        signal_group(pid, Signal::KILL);
    }
    child.wait().await
}

/// Sends `signal` to a process group; a group that is gone is no error.
/// Groups 0 and 1 are never signalled: they would mean the caller's own
/// group and every process.
pub fn signal_group(group: i32, signal: Signal) {
    if group > 1
        && let Some(pid) = Pid::from_raw(group)
    {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// What an exited task's state is, and the message that says why.
pub fn outcome(status: std::io::Result<ExitStatus>, kill_requested: bool) -> (TaskState, String) {
    match status {
        Err(error) => (
            TaskState::Failed,
            format!("lost track of the task process: {error}"),
        ),
        Ok(status) => match (status.code(), status.signal()) {
            (Some(0), _) => (TaskState::Finished, "exited with status 0".into()),
            (_, Some(signal)) if kill_requested => (
                TaskState::Killed,
                format!("killed by signal {signal} as requested"),
            ),
            (Some(code), _) if kill_requested => (
                TaskState::Killed,
                format!("exited with status {code} after a kill request"),
            ),
            (Some(code), _) => (TaskState::Failed, format!("exited with status {code}")),
            (None, Some(signal)) => (TaskState::Failed, format!("killed by signal {signal}")),
            (None, None) => (TaskState::Failed, "ended without a status".into()),
        },
    }
}

/// The task id as an executor id: the command executor of a task is
/// named after it, as in Mesos.
pub fn executor_name(task_id: &TaskId) -> String {
    task_id.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn check(raw_wait_status: i32, killed: bool, expected: (TaskState, &str)) {
        let (state, message) = outcome(Ok(ExitStatus::from_raw(raw_wait_status)), killed);
        assert_eq!(
            (state, message.as_str()),
            expected,
            "{raw_wait_status:#x} killed={killed}"
        );
    }

    #[test]
    fn exits_become_states() {
        check(0, false, (TaskState::Finished, "exited with status 0"));
        check(3 << 8, false, (TaskState::Failed, "exited with status 3"));
        check(9, false, (TaskState::Failed, "killed by signal 9"));
        check(
            15,
            true,
            (TaskState::Killed, "killed by signal 15 as requested"),
        );
        check(
            1 << 8,
            true,
            (
                TaskState::Killed,
                "exited with status 1 after a kill request",
            ),
        );
    }

    #[test]
    fn sandboxes_follow_the_mesos_layout() {
        let path = sandbox_path(
            Path::new("/w"),
            &AgentId::new("a1").unwrap(),
            &FrameworkId::new("f1").unwrap(),
            "t1",
            "r1",
        );
        assert_eq!(
            path,
            Path::new("/w/agents/a1/frameworks/f1/executors/t1/runs/r1")
        );
    }
}
