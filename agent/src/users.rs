//! Which user a task runs as.
//!
//! An agent running as root runs each task and custom executor as its
//! framework's user (`FrameworkInfo.user`, or the command's own `user`),
//! with that user's groups, in a sandbox that user owns and others cannot
//! read, like Apache Mesos's `--switch_user`. The agent's own files (its
//! work directory's `meta/`, keys, the launcher's secret) stay root's.
//! With `--switch-user=false`, or an agent that is not root, tasks run as
//! the agent's user; a task asking for another user then fails, since the
//! agent cannot become it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A user to run a process as, resolved on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
}

/// The name of the user this process runs as.
pub fn current_user() -> String {
    uzers::get_current_username()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| rustix::process::geteuid().as_raw().to_string())
}

/// Looks `user` up in this machine's user database.
pub fn resolve(user: &str) -> Result<RunAs, String> {
    let found = uzers::get_user_by_name(user)
        .ok_or_else(|| format!("user {user:?} does not exist on this agent's machine"))?;
    let gid = found.primary_group_id();
    let mut groups: Vec<u32> = uzers::get_user_groups(user, gid)
        .unwrap_or_default()
        .iter()
        .map(uzers::Group::gid)
        .collect();
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(RunAs {
        user: user.to_owned(),
        uid: found.uid(),
        gid,
        groups,
    })
}

/// Whom a task asking for `user` runs as on an agent that switches users
/// when `switch_user` is set: `None` to run as the agent's own user.
pub fn run_as(user: &str, switch_user: bool) -> Result<Option<RunAs>, String> {
    let me = rustix::process::geteuid().as_raw();
    if !switch_user {
        return Ok(None);
    }
    // No user would mean the agent's own: root, for an agent that
    // switches users.
    if user.is_empty() {
        return Err(
            "the task names no user to run as (set the framework's user or the command's)".into(),
        );
    }
    let target = resolve(user)?;
    if target.uid == me {
        return Ok(None);
    }
    if me != 0 {
        return Err(format!(
            "the task asks to run as {user:?}, but this agent runs as {} and cannot switch users (run it as root, or with --switch-user=false to run tasks as its own user)",
            current_user()
        ));
    }
    Ok(Some(target))
}

/// Gives `path` (and, for a directory, everything in it) to `run_as`,
/// and makes a directory readable by that user alone (mode 0750).
///
/// Everything below is handed over before the directory itself: until
/// then the directory is still the agent's, so nothing of that user can
/// swap an entry for a link while the agent, as root, walks it. Links
/// are never followed.
pub fn hand_over(path: &Path, run_as: &RunAs) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    let owner = (
        Some(rustix::fs::Uid::from_raw(run_as.uid)),
        Some(rustix::fs::Gid::from_raw(run_as.gid)),
    );
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.is_dir() {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for entry in std::fs::read_dir(path)? {
            hand_over(&entry?.path(), run_as)?;
        }
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o750))?;
        rustix::fs::fchown(&dir, owner.0, owner.1)?;
        return Ok(());
    }
    rustix::fs::chownat(CWD, path, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Makes the command that `command` will run become `run_as` between
/// fork and exec: supplementary groups, then group, then user (in that
/// order: after giving up root nothing else can be changed).
pub fn switch_in_child(command: &mut std::process::Command, run_as: &RunAs) {
    use std::os::unix::process::CommandExt;
    let groups: Vec<rustix::process::Gid> = run_as
        .groups
        .iter()
        .map(|gid| rustix::process::Gid::from_raw(*gid))
        .collect();
    let gid = rustix::process::Gid::from_raw(run_as.gid);
    let uid = rustix::process::Uid::from_raw(run_as.uid);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes three raw system calls
    // (rustix's linux_raw backend: no allocation, no lock, no libc state)
    // on values prepared before the fork, and reports failure through the
    // returned error, which makes the spawn fail.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            rustix::thread::set_thread_groups(&groups)?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            Ok(())
        });
    }
}

/// Makes the command that `command` will run join its container's cgroup
/// and, with namespaces, enter new pid, mount (and network) namespaces,
/// between fork and exec, before anything else (as root). The cgroup
/// files are opened now, in the parent.
pub fn confine_in_child(
    command: &mut std::process::Command,
    confinement: &crate::command_executor::Confinement,
) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use rustix::thread::UnshareFlags;
    use std::os::unix::process::CommandExt;
    let procs = confinement
        .cgroup
        .as_ref()
        .map(crate::cgroups::Cgroup::procs_files)
        .unwrap_or_default();
    if procs.is_empty() && confinement.namespaces.is_none() {
        return Ok(());
    }
    let cgroups = procs
        .iter()
        .map(|path| {
            rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
                |error| std::io::Error::other(format!("cannot open {}: {error}", path.display())),
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let unshare = confinement.namespaces.as_ref().map(|namespaces| {
        let mut flags = UnshareFlags::NEWPID | UnshareFlags::NEWNS;
        if namespaces.network {
            flags |= UnshareFlags::NEWNET;
        }
        flags
    });
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes raw system calls
    // (rustix's linux_raw backend: no allocation, no lock, no libc state)
    // on descriptors and flags prepared before the fork: a write of "0"
    // (this process) to each `cgroup.procs`, then `unshare` of namespaces
    // only (never of the file table, which `unshare_unsafe` warns about),
    // and reports failure through the returned error, which makes the
    // spawn fail.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            for cgroup in &cgroups {
                rustix::io::write(cgroup, b"0")?;
            }
            if let Some(flags) = unshare {
                rustix::thread::unshare_unsafe(flags)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Makes the command that `command` will run enter a mount namespace of
/// its own (a copy of this one) between fork and exec: what it mounts
/// then stays its own (the container's inner init and its `/proc`).
pub fn own_mount_namespace_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes one raw system call
    // (rustix's linux_raw backend: no allocation, no lock, no libc state),
    // `unshare` of the mount namespace only (never of the file table,
    // which `unshare_unsafe` warns about), and reports failure through the
    // returned error, which makes the spawn fail.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            Ok(())
        });
    }
}

/// Makes `dir` usable by this process's user alone (mode 0700), creating
/// it if needed: where the agent keeps what tasks must not read.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    strata_runtime::durable::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_or_are_named_in_the_error() {
        let root = resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let error = resolve("no-such-user-strata").unwrap_err();
        assert!(error.contains("no-such-user-strata"), "{error}");
        assert!(run_as("", true).is_err_and(|error| error.contains("no user")));
        assert_eq!(run_as("", false), Ok(None));
        assert_eq!(run_as(&current_user(), true), Ok(None));
        assert_eq!(run_as("nobody", false), Ok(None));
        let unknown = run_as("no-such-user-strata", true).unwrap_err();
        assert!(unknown.contains("does not exist"), "{unknown}");
    }
}
