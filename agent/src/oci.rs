//! Containers with images, run by an OCI runtime (runc or crun): the
//! bundle's `config.json`, and the runtime's commands (run, kill,
//! delete, list).
//!
//! The runtime runs in the foreground as the container's first process
//! (started by the task launcher, in the container's cgroup), so its end
//! is the container's. runc joins the container's own cgroup and keeps
//! it after the end (`run --keep`) until `delete`, so the kernel's OOM
//! counters are read there; crun (which has no `--keep`) gets a cgroup
//! below it, which it removes itself.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

/// The file in a bundle the runtime writes the container's first
/// process's pid to once it started.
pub const PID_FILE: &str = "pid";

/// How long a runtime's command (kill, delete, list) may take.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a runtime may take to start a container.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits (blocking) until the runtime started the container of `bundle`
/// (its pid file exists), or `runtime_running` says the runtime's own
/// process ended first, or a minute passed: TASK_RUNNING means the
/// container's process runs, not only its runtime.
pub fn wait_until_started(bundle: &Path, mut runtime_running: impl FnMut() -> bool) {
    use rustix::fs::inotify;
    let pid_file = bundle.join(PID_FILE);
    let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        .and_then(|fd| {
            inotify::add_watch(
                &fd,
                bundle,
                inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO,
            )?;
            Ok(fd)
        })
        .ok();
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
    while !pid_file.exists() && runtime_running() && std::time::Instant::now() < deadline {
        // Woken by a file made in the bundle, else every 20 ms to see
        // whether the runtime is still there.
        let slice = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        match &watch {
            Some(fd) => {
                let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                let _ = rustix::event::poll(&mut fds, Some(&slice));
                let mut events = inotify::Reader::new(fd, &mut buffer);
                while events.next().is_ok() {}
            }
            None => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Where a container sees its sandbox (Apache Mesos's path).
pub const SANDBOX_PATH: &str = "/mnt/mesos/sandbox";

/// Which OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Runc,
    Crun,
}

/// An OCI runtime and where it keeps its containers' state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    pub program: PathBuf,
    pub kind: RuntimeKind,
    pub state_dir: PathBuf,
}

/// Finds `name` in PATH (or takes it as a path).
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl OciRuntime {
    /// The runtime `choice` names (`runc`, `crun` or a path to either),
    /// or by default runc if installed, else crun; state under
    /// `state_dir`.
    pub fn find(choice: Option<&str>, state_dir: &Path) -> Result<OciRuntime, String> {
        let candidates: Vec<&str> = match choice {
            Some(choice) => vec![choice],
            None => vec!["runc", "crun"],
        };
        for candidate in &candidates {
            if let Some(program) = find_program(candidate) {
                let name = program
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let kind = if name.contains("crun") {
                    RuntimeKind::Crun
                } else {
                    RuntimeKind::Runc
                };
                return Ok(OciRuntime {
                    program,
                    kind,
                    state_dir: state_dir.to_owned(),
                });
            }
        }
        Err(format!(
            "no OCI runtime found ({}): install runc or crun",
            candidates.join(", ")
        ))
    }

    fn base(&self) -> Vec<OsString> {
        vec![
            self.program.clone().into(),
            "--root".into(),
            self.state_dir.clone().into(),
        ]
    }

    /// The command that runs container `id` of `bundle` in the
    /// foreground and exits as its first process does; the runtime writes
    /// [`PID_FILE`] in the bundle once the container's process started.
    pub fn run_argv(&self, bundle: &Path, id: &str) -> Vec<OsString> {
        let mut argv = self.base();
        argv.push("run".into());
        if self.kind == RuntimeKind::Runc {
            argv.push("--keep".into());
        }
        argv.extend([
            "--pid-file".into(),
            bundle.join(PID_FILE).into(),
            "--bundle".into(),
            bundle.into(),
            id.into(),
        ]);
        argv
    }

    /// The cgroup (relative to each hierarchy's top) the runtime puts the
    /// container in, given the container's own.
    pub fn cgroups_path(&self, ours: &str) -> String {
        match self.kind {
            RuntimeKind::Runc => ours.to_owned(),
            RuntimeKind::Crun => format!("{ours}/runtime"),
        }
    }

    fn command(&self, arguments: &[&str]) -> Result<String, String> {
        let mut argv = self.base();
        argv.extend(arguments.iter().map(OsString::from));
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        // Bounded: a runtime that hangs is killed, not waited for.
        let pid = rustix::process::Pid::from_child(&child);
        let (sender, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        let output = match answer.recv_timeout(COMMAND_TIMEOUT) {
            Ok(output) => {
                output.map_err(|e| format!("cannot run {}: {e}", self.program.display()))?
            }
            Err(_) => {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                return Err(format!(
                    "{} {} did not answer within {} s",
                    self.program.display(),
                    arguments.join(" "),
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{} {} failed: {}",
                self.program.display(),
                arguments.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to container `id`'s processes.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), String> {
        self.command(&["kill", "--all", id, signal])
            .or_else(|_| self.command(&["kill", id, signal]))
            .map(|_| ())
    }

    /// Removes container `id`'s state (and what cgroups it made); gone
    /// already is no error.
    pub fn delete(&self, id: &str) -> Result<(), String> {
        match self.command(&["delete", "--force", id]) {
            Ok(_) => Ok(()),
            Err(error) if error.contains("does not exist") || error.contains("not exist") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The containers the runtime knows under its state directory.
    pub fn list(&self) -> Result<Vec<String>, String> {
        // The runtime keeps a directory per container there: none, no
        // need to ask it (an agent's start does not wait for a runtime).
        let empty =
            std::fs::read_dir(&self.state_dir).map_or(true, |mut entries| entries.next().is_none());
        if empty {
            return Ok(Vec::new());
        }
        let listed = self.command(&["list", "--format", "json"])?;
        #[derive(serde::Deserialize)]
        struct Listed {
            id: String,
        }
        let listed: Option<Vec<Listed>> = serde_json::from_str(listed.trim())
            .map_err(|e| format!("cannot read what {} lists: {e}", self.program.display()))?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .map(|container| container.id)
            .collect())
    }
}

/// A bind mount into a container, its host path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// What a container's `config.json` says.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The sandbox on the host, mounted at [`SANDBOX_PATH`].
    pub sandbox: PathBuf,
    pub volumes: Vec<BindMount>,
    pub cgroups_path: String,
    /// A network namespace of its own (loopback only); else the host's.
    pub own_network: bool,
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount, String> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())
}

/// The capabilities a container's processes keep (a root user's; others
/// lose them at exec): Docker's default set less MKNOD (a device node
/// made on a volume could be opened from the host, outside the
/// container's device rules) and, on the host's network, NET_RAW.
const CAPABILITIES: [Capability; 12] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// System calls a container may not make (EPERM), after Docker's default
/// profile: the kernel's keyrings, modules, clocks, accounting, swap,
/// reboot, mounts and namespaces, tracing and other processes' memory,
/// BPF, perf and io_uring. New user namespaces (`clone` with CLONE_NEWUSER) are
/// refused too; `clone3`, whose flags a filter cannot read, answers
/// ENOSYS so the C library falls back to `clone`.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// CLONE_NEWUSER.
const CLONE_NEWUSER: u64 = 0x1000_0000;

fn seccomp() -> Result<LinuxSeccomp, String> {
    let failed =
        |e: oci_spec::OciSpecError| format!("cannot write the container's seccomp filter: {e}");
    let (eperm, enosys) = (1u32, 38u32);
    let rules: Vec<LinuxSyscall> = vec![
        LinuxSyscallBuilder::default()
            .names(
                DENIED_SYSCALLS
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(eperm)
            .build()
            .map_err(failed)?,
        LinuxSyscallBuilder::default()
            .names(vec!["clone".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(eperm)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(CLONE_NEWUSER)
                    .value_two(CLONE_NEWUSER)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()
                    .map_err(failed)?,
            ])
            .build()
            .map_err(failed)?,
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(enosys)
            .build()
            .map_err(failed)?,
    ];
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchAarch64,
        ])
        .syscalls(rules)
        .build()
        .map_err(failed)
}

/// The runtime spec of `bundle`.
pub fn spec(bundle: &Bundle) -> Result<Spec, String> {
    let failed = |e: oci_spec::OciSpecError| format!("cannot write the container's spec: {e}");
    let capabilities: std::collections::HashSet<Capability> = CAPABILITIES
        .into_iter()
        .chain(bundle.own_network.then_some(Capability::NetRaw))
        .collect();
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(bundle.args.clone())
        .env(bundle.env.clone())
        .cwd(bundle.cwd.clone())
        .user(
            UserBuilder::default()
                .uid(bundle.uid)
                .gid(bundle.gid)
                .additional_gids(bundle.groups.clone())
                .build()
                .map_err(failed)?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .permitted(capabilities.clone())
                .effective(capabilities)
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .map_err(failed)?,
        )
        .rlimits(vec![
            // The agent's own: the runtime sets them once the container's
            // capabilities are dropped, when it can no longer raise them.
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(nofile.current.unwrap_or(1024))
                .hard(nofile.maximum.unwrap_or(1024))
                .build()
                .map_err(failed)?,
        ])
        .no_new_privileges(true)
        .build()
        .map_err(failed)?;
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    let host = |path: &Path| path.to_string_lossy().into_owned();
    mounts.push(mount(
        SANDBOX_PATH,
        "bind",
        &host(&bundle.sandbox),
        &["bind", "rw", "nosuid", "nodev"],
    )?);
    if !bundle.own_network {
        // The host's network, with its resolver and hosts.
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(file).is_file() {
                mounts.push(mount(file, "bind", file, &["rbind", "ro"])?);
            }
        }
    }
    for volume in &bundle.volumes {
        let mode = if volume.read_only { "ro" } else { "rw" };
        mounts.push(mount(
            &volume.container.to_string_lossy(),
            "bind",
            &host(&volume.host),
            &["bind", mode, "nosuid", "nodev"],
        )?);
    }
    let mut namespaces = Vec::new();
    for kind in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .chain(bundle.own_network.then_some(LinuxNamespaceType::Network))
    {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(kind)
                .build()
                .map_err(failed)?,
        );
    }
    let defaults = oci_spec::runtime::Linux::default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&bundle.cgroups_path))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()
                        .map_err(failed)?,
                ])
                .build()
                .map_err(failed)?,
        )
        .seccomp(seccomp()?)
        .masked_paths(
            defaults
                .masked_paths()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(["/sys/devices/virtual/powercap".to_owned()])
                .collect::<Vec<_>>(),
        )
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(failed)?;
    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path(bundle.rootfs.clone())
            .readonly(false)
            .build()
            .map_err(failed)?,
    ));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Writes `bundle`'s `config.json` into directory `dir`.
pub fn write_config(dir: &Path, bundle: &Bundle) -> Result<(), String> {
    let spec = spec(bundle)?;
    let bytes = serde_json::to_vec_pretty(&spec)
        .map_err(|e| format!("cannot write the container's spec: {e}"))?;
    // It holds the task's environment: root's alone.
    let path = dir.join("config.json");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &bytes));
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}
