//! The task monitor: a small process between the agent and a task's
//! command, so a task survives its agent and its end is still known.
//!
//! A task's process cannot be waited for by an agent that was restarted:
//! it is no longer the agent's child, and whoever reaps it learns its exit
//! status. So when the agent has a monitor program (the `strata` binary's
//! `monitor-task` subcommand), it starts the monitor as the leader of the
//! task's process group, and the monitor starts the command, waits for it
//! and writes how it ended to `exit.json` in the task's checkpoint
//! directory (atomically) before exiting with the same code. A live agent
//! reads that record when the monitor exits; a restarted one finds the
//! monitor by its checkpointed pid and start time, waits for it through a
//! pidfd, and reads the same record.
//!
//! The monitor outlives the kill signals it shares with its group
//! (SIGTERM, SIGINT, SIGHUP, SIGQUIT are caught, and the handlers do not
//! pass to the command, which starts with default dispositions), so a
//! killed task's signal is recorded. For frameworks that do not
//! checkpoint, the monitor is told the agent's pid and kills the task's
//! group when the agent dies, so such tasks never outlive their agent.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use crate::checkpoint::{self, ExitCheckpoint, ExitOutcome};

/// The monitor's subcommand in the `strata` binary.
pub const SUBCOMMAND: &str = "monitor-task";

/// What the monitor is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorArgs {
    /// Where to record how the command ended.
    pub exit_file: PathBuf,
    /// The command's working directory.
    pub sandbox: PathBuf,
    /// Kill the task when this process (the agent) ends.
    pub agent_pid: Option<i32>,
    /// The command: program, then its arguments.
    pub command: Vec<OsString>,
}

impl MonitorArgs {
    /// The arguments that start a monitor with these settings, after the
    /// program name: `monitor-task --exit-file F --sandbox S
    /// [--agent-pid P] -- PROGRAM ARGS...`.
    pub fn to_arguments(&self) -> Vec<OsString> {
        let mut arguments: Vec<OsString> = vec![
            SUBCOMMAND.into(),
            "--exit-file".into(),
            self.exit_file.clone().into(),
            "--sandbox".into(),
            self.sandbox.clone().into(),
        ];
        if let Some(pid) = self.agent_pid {
            arguments.push("--agent-pid".into());
            arguments.push(pid.to_string().into());
        }
        arguments.push("--".into());
        arguments.extend(self.command.iter().cloned());
        arguments
    }
}

impl MonitorArgs {
    /// Reads the arguments [`MonitorArgs::to_arguments`] makes, after the
    /// subcommand.
    pub fn parse(arguments: impl IntoIterator<Item = OsString>) -> Result<MonitorArgs, String> {
        let mut arguments = arguments.into_iter();
        let (mut exit_file, mut sandbox, mut agent_pid) = (None, None, None);
        loop {
            let Some(flag) = arguments.next() else {
                return Err("no command given (expected -- PROGRAM ARGS...)".into());
            };
            let flag = flag.to_string_lossy().into_owned();
            if flag == "--" {
                break;
            }
            let value = arguments
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--exit-file" => exit_file = Some(PathBuf::from(value)),
                "--sandbox" => sandbox = Some(PathBuf::from(value)),
                "--agent-pid" => {
                    let text = value.to_string_lossy();
                    agent_pid = Some(text.parse::<i32>().ok().filter(|pid| *pid > 0).ok_or_else(
                        || format!("--agent-pid must be a process id, not {text:?}"),
                    )?);
                }
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        Ok(MonitorArgs {
            exit_file: exit_file.ok_or("--exit-file is required")?,
            sandbox: sandbox.ok_or("--sandbox is required")?,
            agent_pid,
            command: arguments.collect(),
        })
    }
}

/// Waits until process `pid` has exited (also when it is not a child). A
/// process that is gone already counts as exited.
pub async fn wait_for_exit(pid: i32) -> std::io::Result<()> {
    let Some(pid) = Pid::from_raw(pid) else {
        return Ok(());
    };
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::NONBLOCK) {
        Ok(pidfd) => pidfd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    // The constructor is deprecated because a borrowed descriptor could be
    // closed under the registration; this one is owned by the `AsyncFd`
    // and closed only when it is dropped, which is what it requires (the
    // replacement is `unsafe`, which this workspace forbids).
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(pidfd, Interest::READABLE)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Runs the monitor; returns the process's exit code (the command's, or
/// 128 + its signal, or 127 when it could not start).
pub fn run(args: MonitorArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata monitor-task: cannot start: {error}");
            return 125;
        }
    };
    runtime.block_on(monitor(args))
}

fn record(args: &MonitorArgs, outcome: ExitOutcome) {
    let exit = ExitCheckpoint {
        version: checkpoint::FORMAT_VERSION,
        outcome,
    };
    if let Err(error) = checkpoint::save(&args.exit_file, &exit) {
        eprintln!("strata monitor-task: {error}");
    }
}

async fn monitor(args: MonitorArgs) -> i32 {
    // Held for the monitor's life: the group's kill signals are caught
    // here, so the monitor lives to record the command's end.
    let mut caught = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ] {
        match signal(kind) {
            Ok(stream) => caught.push(stream),
            Err(error) => eprintln!("strata monitor-task: cannot catch {kind:?}: {error}"),
        }
    }
    let Some((program, arguments)) = args.command.split_first() else {
        record(
            &args,
            ExitOutcome::NotStarted {
                message: "the command names no executable".into(),
            },
        );
        return 127;
    };
    let spawned = tokio::process::Command::new(program)
        .args(arguments)
        .current_dir(&args.sandbox)
        .kill_on_drop(false)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let message = format!("cannot start {:?}: {error}", program.to_string_lossy());
            eprintln!("strata: {message}");
            record(&args, ExitOutcome::NotStarted { message });
            return 127;
        }
    };
    let agent_gone = async {
        match args.agent_pid {
            Some(pid) => {
                let parent = rustix::process::getppid().map(|parent| parent.as_raw_nonzero().get());
                // A monitor already reparented has lost its agent.
                if parent == Some(pid)
                    && let Err(error) = wait_for_exit(pid).await
                {
                    eprintln!("strata monitor-task: cannot watch the agent: {error}");
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        () = agent_gone => {
            // The task must not outlive an agent that does not checkpoint
            // it: end the whole group, this monitor included.
            let group = rustix::process::getpgrp();
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
            child.wait().await
        }
    };
    drop(caught);
    match status {
        Ok(status) => {
            record(
                &args,
                ExitOutcome::Exited {
                    wait_status: status.into_raw(),
                },
            );
            status
                .code()
                .or_else(|| status.signal().map(|signal| 128 + signal))
                .unwrap_or(1)
        }
        Err(error) => {
            eprintln!("strata monitor-task: lost track of the command: {error}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_bad_ones_are_named() {
        let args = MonitorArgs {
            exit_file: "/m/exit.json".into(),
            sandbox: "/s".into(),
            agent_pid: Some(42),
            command: vec!["/bin/sh".into(), "-c".into(), "echo -- hi".into()],
        };
        let arguments = args.to_arguments();
        assert_eq!(arguments[0], SUBCOMMAND);
        assert_eq!(MonitorArgs::parse(arguments.into_iter().skip(1)), Ok(args));
        let bad = |list: &[&str]| MonitorArgs::parse(list.iter().map(OsString::from)).unwrap_err();
        assert!(bad(&["--agent-pid", "x", "--"]).contains("process id"));
        assert!(bad(&["--sandbox", "/s", "--"]).contains("--exit-file"));
        assert!(bad(&["--exit-file"]).contains("needs a value"));
        assert!(bad(&["--what", "1", "--"]).contains("unknown flag"));
    }
}
