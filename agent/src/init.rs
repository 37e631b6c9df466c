//! The container init: what runs first in a container with namespaces.
//!
//! A container with namespaces starts as the `strata` binary's
//! `container-init` subcommand, in the container's cgroup, after the
//! launching side unshared new pid and mount namespaces (and a network
//! namespace for `network/none`) between fork and exec. It takes two
//! processes:
//!
//! - The **outer** one (in the host's pid namespace, the new mount
//!   namespace): makes every mount private to the container, mounts the
//!   sandbox's `tmp/` over `/tmp` (a sandbox that was under `/tmp` is
//!   shown again at its path), brings loopback up in a new network
//!   namespace, and starts the inner one, which is the new pid
//!   namespace's first process. It outlives a SIGTERM to the container's
//!   process group (the command gets it directly: the group spans the
//!   namespace), and ends as the command ended: with its exit code, or
//!   killed by its signal (it execs itself with `--die-by`, since a
//!   caught signal cannot be raised again).
//! - The **inner** one, pid 1 of the container, in a mount namespace of
//!   its own (so the outer one keeps the host's `/proc`, and reaches its
//!   program through a descriptor even when it lives under `/tmp`):
//!   mounts a `/proc` of the new namespace, starts the command as its user (which never runs as
//!   root when a user was asked), reaps every orphan, and when the
//!   command ends hands its wait status to the outer one through a pipe
//!   (its standard input) and exits, which makes the kernel kill whatever
//!   is left in the namespace. It dies with the outer one.
//!
//! Signals from the host reach the command through its process group;
//! the agent's kill reaches the whole cgroup.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};

use crate::users::RunAs;

/// The subcommand of the `strata` binary.
pub const SUBCOMMAND: &str = "container-init";

/// The arguments (after the program) that start `argv` under the
/// container init, as `run_as` when given, with loopback brought up when
/// `loopback` (a new network namespace).
pub fn arguments(run_as: Option<&RunAs>, loopback: bool, argv: &[OsString]) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = vec![SUBCOMMAND.into()];
    if let Some(run_as) = run_as {
        let groups: Vec<String> = run_as.groups.iter().map(u32::to_string).collect();
        arguments.push("--user".into());
        arguments.push(
            format!(
                "{}:{}:{}:{}",
                run_as.uid,
                run_as.gid,
                groups.join(","),
                run_as.user
            )
            .into(),
        );
    }
    if loopback {
        arguments.push("--loopback".into());
    }
    arguments.push("--".into());
    arguments.extend(argv.iter().cloned());
    arguments
}

/// What the container init was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Run `argv` in the container.
    Run {
        run_as: Option<RunAs>,
        loopback: bool,
        argv: Vec<OsString>,
    },
    /// End by this signal (the outer init's last step).
    DieBy(i32),
}

/// Reads the subcommand's arguments (after its name).
pub fn parse_arguments(arguments: impl Iterator<Item = OsString>) -> Result<Task, String> {
    let mut arguments = arguments.peekable();
    let (mut run_as, mut loopback) = (None, false);
    while let Some(argument) = arguments.next() {
        match argument.to_str() {
            Some("--") => break,
            Some("--loopback") => loopback = true,
            Some("--die-by") => {
                let signal = arguments
                    .next()
                    .and_then(|value| value.to_str()?.parse().ok())
                    .filter(|signal| (1..=64).contains(signal))
                    .ok_or("--die-by takes a signal number")?;
                return Ok(Task::DieBy(signal));
            }
            Some("--user") => {
                let value = arguments.next().ok_or("--user takes UID:GID:GROUPS:NAME")?;
                run_as = Some(parse_user(&value.to_string_lossy())?);
            }
            _ => return Err(format!("unexpected argument {argument:?}")),
        }
    }
    let argv: Vec<OsString> = arguments.collect();
    if argv.is_empty() {
        return Err("no command to run after --".into());
    }
    Ok(Task::Run {
        run_as,
        loopback,
        argv,
    })
}

fn parse_user(value: &str) -> Result<RunAs, String> {
    let bad = || format!("--user {value:?} is not UID:GID:GROUPS:NAME");
    let mut parts = value.splitn(4, ':');
    let mut number = || -> Result<u32, String> {
        parts
            .next()
            .and_then(|part| part.parse().ok())
            .ok_or_else(bad)
    };
    let (uid, gid) = (number()?, number()?);
    let groups = parts.next().ok_or_else(bad)?;
    let groups = if groups.is_empty() {
        Vec::new()
    } else {
        groups
            .split(',')
            .map(|group| group.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    let user = parts.next().ok_or_else(bad)?.to_owned();
    Ok(RunAs {
        user,
        uid,
        gid,
        groups,
    })
}

/// Runs the container init; its exit code.
pub fn run(task: Task) -> i32 {
    match task {
        Task::DieBy(signal) => die_by(signal),
        Task::Run {
            run_as,
            loopback,
            argv,
        } => {
            let result = if rustix::process::getpid().is_init() {
                inner(run_as.as_ref(), &argv)
            } else {
                outer(loopback)
            };
            result.unwrap_or_else(|error| {
                eprintln!("strata {SUBCOMMAND}: {error}");
                // What a shell answers for a command it cannot run.
                127
            })
        }
    }
}

/// Ends by `signal` (its handler is the default after exec), or with the
/// shell's code for it when the signal is ignored (SIGPIPE, which Rust
/// programs ignore) or has no name (a real-time one). Dumps no core.
fn die_by(signal: i32) -> i32 {
    let core = rustix::process::getrlimit(rustix::process::Resource::Core);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: core.maximum,
        },
    );
    if let Some(named) = rustix::process::Signal::from_named_raw(signal) {
        let _ = rustix::process::kill_process(rustix::process::getpid(), named);
    }
    128 + signal
}

/// The most environment a container's command may be given (as the task
/// launcher takes a launch).
const MAX_ENVIRONMENT_BYTES: usize = 1 << 20;

/// A command's environment, as the container init is handed it: never
/// through its own environment, which the dynamic loader of a process
/// running as root would read (`LD_PRELOAD`).
pub type Environment = Vec<(Vec<u8>, Vec<u8>)>;

/// `environment` in a sealed-off file for the outer init's standard
/// input.
pub fn environment_file(environment: &Environment) -> std::io::Result<std::os::fd::OwnedFd> {
    let bytes = strata_runtime::codec::encode(environment).map_err(std::io::Error::other)?;
    if bytes.len() > MAX_ENVIRONMENT_BYTES {
        return Err(std::io::Error::other("the environment is over 1 MiB"));
    }
    let file = rustix::fs::memfd_create("strata-environment", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut written = 0;
    while written < bytes.len() {
        written += rustix::io::write(&file, &bytes[written..])?;
    }
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))?;
    Ok(file)
}

/// Reads an environment from `source` (bounded), as `environment_file`
/// or the outer init wrote it.
fn read_environment(source: impl std::io::Read) -> Result<Environment, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    source
        .take(MAX_ENVIRONMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the environment: {e}"))?;
    if bytes.len() > MAX_ENVIRONMENT_BYTES {
        return Err("the environment is over 1 MiB".into());
    }
    strata_runtime::codec::decode("environment", &bytes).map_err(|e| e.to_string())
}

/// A directory opened without following a symbolic link, not inherited
/// by what runs next.
fn open_directory(
    at: impl AsFd,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The path that names what `fd` is open on (for `mount`, which takes
/// paths: an opened directory cannot be swapped for a link meanwhile).
fn fd_path(fd: &std::os::fd::OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The outer init: the mount namespace, then the pid namespace's first
/// process, then its end.
fn outer(loopback: bool) -> Result<i32, String> {
    use rustix::fs::CWD;
    use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
    // Its own program, held open: a program under /tmp is hidden once the
    // sandbox's tmp is mounted there. Run again through its descriptor.
    let program_file: std::os::fd::OwnedFd = std::env::current_exe()
        .and_then(std::fs::File::open)
        .map_err(|e| format!("cannot open its own program: {e}"))?
        .into();
    let program = fd_path(&program_file);
    let environment = read_environment(std::io::stdin().lock())?;
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("cannot make the container's mounts private: {e}"))?;
    // The sandbox is its user's: everything in it is reached through
    // descriptors opened without following links, never by path again.
    let sandbox_path = std::env::current_dir().map_err(|e| format!("no sandbox: {e}"))?;
    let sandbox = open_directory(CWD, ".").map_err(|e| format!("no sandbox: {e}"))?;
    match rustix::fs::mkdirat(&sandbox, "tmp", rustix::fs::Mode::from_raw_mode(0o1777)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(error) => return Err(format!("cannot create the sandbox's tmp: {error}")),
    }
    let tmp = open_directory(&sandbox, "tmp")
        .map_err(|e| format!("the sandbox's tmp is not a directory: {e}"))?;
    rustix::fs::fchmod(&tmp, rustix::fs::Mode::from_raw_mode(0o1777))
        .map_err(|e| format!("cannot open the sandbox's tmp to the task: {e}"))?;
    mount_bind(fd_path(&tmp), "/tmp")
        .map_err(|e| format!("cannot mount the sandbox's tmp: {e}"))?;
    drop(tmp);
    // A sandbox under /tmp (a work directory there) is hidden by it now:
    // it is shown again at its own path, each directory on the way made
    // and opened in the new /tmp without following links.
    if let Ok(below) = sandbox_path.strip_prefix("/tmp")
        && below.components().next().is_some()
    {
        let mut place = open_directory(CWD, "/tmp").map_err(|e| format!("no /tmp: {e}"))?;
        for part in below.components() {
            let std::path::Component::Normal(name) = part else {
                return Err(format!("{} is not a plain path", sandbox_path.display()));
            };
            match rustix::fs::mkdirat(&place, name, rustix::fs::Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(error) => return Err(format!("cannot show the sandbox again: {error}")),
            }
            place = open_directory(&place, name)
                .map_err(|e| format!("cannot show the sandbox again: {e}"))?;
        }
        mount_bind(fd_path(&sandbox), fd_path(&place))
            .map_err(|e| format!("cannot show the sandbox at its path: {e}"))?;
    }
    drop(sandbox);
    if loopback {
        loopback_up().map_err(|e| format!("cannot bring loopback up: {e}"))?;
    }
    // The inner init reads its command's environment from this socket,
    // and tells the command's wait status through it.
    let (mut here, there) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make a socket pair: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let ended = runtime.block_on(async {
        use std::io::Write;
        use tokio::signal::unix::{SignalKind, signal};
        // Signals to the container's group reach its command directly;
        // this one only lives on until the command has ended.
        for kind in [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
            SignalKind::quit(),
            SignalKind::user_defined1(),
            SignalKind::user_defined2(),
        ] {
            let mut signals = signal(kind)?;
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        let mut inner = std::process::Command::new(&program);
        inner
            .args(std::env::args_os().skip(1))
            .env_clear()
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(there)));
        // Its /proc is the new pid namespace's: mounted in a mount
        // namespace of its own, so this one keeps the host's /proc (and
        // can run its program again through its descriptor).
        crate::users::own_mount_namespace_in_child(&mut inner);
        let mut inner = tokio::process::Command::from(inner);
        inner.kill_on_drop(true);
        let mut child = inner.spawn()?;
        drop(inner);
        // The inner init reads it all first thing; one that died first
        // makes this fail, and its end tells.
        let bytes = strata_runtime::codec::encode(&environment).map_err(std::io::Error::other)?;
        let _ = here
            .write_all(&bytes)
            .and_then(|()| here.shutdown(std::net::Shutdown::Write));
        child.wait().await
    });
    let inner_status =
        ended.map_err(|e| format!("cannot run the container's first process: {e}"))?;
    let mut raw = [0u8; 4];
    let status = match std::io::Read::read_exact(&mut here, &mut raw) {
        Ok(()) => ExitStatus::from_raw(i32::from_le_bytes(raw)),
        // Killed before its command ended (the container's kill).
        Err(_) => inner_status,
    };
    if let Some(code) = status.code() {
        return Ok(code);
    }
    let signal = status
        .signal()
        .unwrap_or(rustix::process::Signal::KILL.as_raw());
    let error = std::process::Command::new(&program)
        .args([SUBCOMMAND, "--die-by", &signal.to_string()])
        .env_clear()
        .exec();
    eprintln!("strata {SUBCOMMAND}: cannot end as its command did: {error}");
    drop(program_file);
    Ok(128 + signal)
}

/// The inner init, pid 1 of the container: `/proc`, the command, the
/// reaping, the command's status to the outer init.
fn inner(run_as: Option<&RunAs>, argv: &[OsString]) -> Result<i32, String> {
    use rustix::mount::{MountFlags, mount};
    use rustix::process::{WaitOptions, wait};
    use std::os::unix::ffi::OsStringExt;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot tie itself to its parent: {e}"))?;
    // Its standard input is its socket to the outer init.
    let socket = std::os::unix::net::UnixStream::from(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("cannot reach the outer init: {e}"))?,
    );
    let environment = read_environment(&socket)?;
    mount(
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| format!("cannot mount the container's /proc: {e}"))?;
    let Some((program, arguments)) = argv.split_first() else {
        return Err("no command to run".into());
    };
    let mut command = std::process::Command::new(program);
    command
        .args(arguments)
        .env_clear()
        .envs(
            environment
                .into_iter()
                .map(|(name, value)| (OsString::from_vec(name), OsString::from_vec(value))),
        )
        .stdin(Stdio::null());
    if let Some(run_as) = run_as {
        crate::users::switch_in_child(&mut command, run_as);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pid = rustix::process::Pid::from_child(&child);
    let status = loop {
        match wait(WaitOptions::empty()) {
            Ok(Some((reaped, status))) if reaped == pid => break status.as_raw(),
            // An orphan reaped.
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(format!("cannot wait for its command: {error}")),
        }
    };
    std::io::Write::write_all(&mut &socket, &status.to_le_bytes())
        .map_err(|e| format!("cannot report its command's end: {e}"))?;
    Ok(0)
}

/// Brings the loopback interface of a new network namespace up (index 1
/// there) with one rtnetlink request: `RTM_NEWLINK` setting `IFF_UP`.
fn loopback_up() -> std::io::Result<()> {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, recv, send, socket};
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    let socket = socket(AddressFamily::NETLINK, SocketType::RAW, None)?;
    let mut request = Vec::with_capacity(32);
    // struct nlmsghdr: length, type, flags, sequence, port.
    request.extend_from_slice(&32u32.to_ne_bytes());
    request.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, padding, type, index, flags, change.
    request.extend_from_slice(&[0, 0, 0, 0]);
    request.extend_from_slice(&1i32.to_ne_bytes());
    request.extend_from_slice(&IFF_UP.to_ne_bytes());
    request.extend_from_slice(&IFF_UP.to_ne_bytes());
    send(&socket, &request, SendFlags::empty())?;
    let mut answer = [0u8; 256];
    let (length, _) = recv(&socket, &mut answer, RecvFlags::empty())?;
    // An acknowledgement is an error message whose error is 0.
    let field = |at: usize, size: usize| answer.get(at..at + size).filter(|_| at + size <= length);
    let kind = field(4, 2).map(|bytes| u16::from_ne_bytes([bytes[0], bytes[1]]));
    let error =
        field(16, 4).map(|bytes| i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    match (kind, error) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(error)) => Err(std::io::Error::from_raw_os_error(-error)),
        _ => Err(std::io::Error::other(
            "the kernel's answer is not an acknowledgement",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_bad_ones_are_named() {
        let run_as = RunAs {
            user: "nobody:odd".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 10],
        };
        let argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), "echo --".into()];
        let given = arguments(Some(&run_as), true, &argv);
        assert_eq!(given[0], SUBCOMMAND);
        assert_eq!(
            parse_arguments(given.into_iter().skip(1)).unwrap(),
            Task::Run {
                run_as: Some(run_as),
                loopback: true,
                argv: argv.clone(),
            }
        );
        let plain = arguments(None, false, &argv);
        assert!(matches!(
            parse_arguments(plain.into_iter().skip(1)).unwrap(),
            Task::Run {
                run_as: None,
                loopback: false,
                ..
            }
        ));
        let environment: Environment =
            vec![(b"A".to_vec(), b"1=2".to_vec()), (b"B".to_vec(), vec![])];
        let file = environment_file(&environment).unwrap();
        assert_eq!(
            read_environment(std::fs::File::from(file)).unwrap(),
            environment
        );
        assert!(read_environment(&b"\xff\xff\xff\xff\x0f"[..]).is_err());
        let parse = |words: &[&str]| parse_arguments(words.iter().map(OsString::from));
        assert_eq!(parse(&["--die-by", "15"]).unwrap(), Task::DieBy(15));
        assert!(parse(&["--die-by", "99"]).is_err());
        assert!(parse(&["--"]).unwrap_err().contains("no command"));
        assert!(parse(&["--user", "x:1::n", "--", "true"]).is_err());
        assert!(parse(&["--what"]).unwrap_err().contains("--what"));
        assert_eq!(
            parse(&["--user", "5:6::u", "--", "true"]).unwrap(),
            Task::Run {
                run_as: Some(RunAs {
                    user: "u".into(),
                    uid: 5,
                    gid: 6,
                    groups: Vec::new()
                }),
                loopback: false,
                argv: vec!["true".into()],
            }
        );
    }
}
