//! How an agent isolates its containers: `--isolation`.
//!
//! - `posix`: each container is a process group; usage is sampled from
//!   `/proc` and a task over its memory is killed by the agent.
//! - `cgroups`: each container also gets a cgroup of its own
//!   ([`crate::cgroups`]) under `<cgroups root>/<work directory key>/`
//!   (one subtree per agent, so several agents on one machine never touch
//!   each other's), which its first process joins before it execs: cpu
//!   shares (and a CFS quota with `--cgroups-enable-cfs`), the kernel's
//!   memory limit with OOM kills reported as such, a pids limit, the
//!   kernel's accounting, and a kill that reaches every process.
//! - `cgroups,namespaces`: besides, a pid namespace whose first process
//!   reaps and takes everything with it, and a mount namespace with a
//!   private `/tmp` in the sandbox ([`crate::init`]); `network/none` adds
//!   a network namespace with nothing but loopback.
//!
//! Without a choice the agent takes the most it can: cgroups with
//! namespaces when it can create cgroups and namespaces (tried once at
//! start), else what it can, and says why once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_protocol::Resources;

use crate::cgroups::{Cgroup, CgroupError, Layout, Limits};
use crate::command_executor::{Confinement, Namespaces};

/// What `--isolation` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationFlags {
    pub cgroups: bool,
    pub namespaces: bool,
    pub network_none: bool,
}

impl IsolationFlags {
    pub const POSIX: IsolationFlags = IsolationFlags {
        cgroups: false,
        namespaces: false,
        network_none: false,
    };
}

impl std::str::FromStr for IsolationFlags {
    type Err = String;

    fn from_str(text: &str) -> Result<IsolationFlags, String> {
        let mut flags = IsolationFlags::POSIX;
        let mut posix = false;
        for name in text.split(',').map(str::trim) {
            match name {
                "posix" => posix = true,
                "cgroups" => flags.cgroups = true,
                "namespaces" => flags.namespaces = true,
                "network/none" => flags.network_none = true,
                other => {
                    return Err(format!(
                        "unknown isolation {other:?}: posix, or cgroups with optionally namespaces and network/none"
                    ));
                }
            }
        }
        if posix && flags != IsolationFlags::POSIX {
            return Err("posix isolation cannot be combined with others".into());
        }
        if !posix && !flags.cgroups {
            return Err("namespaces come with cgroups: --isolation cgroups,namespaces".into());
        }
        if flags.network_none && !flags.namespaces {
            return Err(
                "network/none needs namespaces: --isolation cgroups,namespaces,network/none".into(),
            );
        }
        Ok(flags)
    }
}

impl std::fmt::Display for IsolationFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.cgroups {
            return f.write_str("posix");
        }
        f.write_str("cgroups")?;
        if self.namespaces {
            f.write_str(",namespaces")?;
        }
        if self.network_none {
            f.write_str(",network/none")?;
        }
        Ok(())
    }
}

/// How containers are isolated in cgroups (and namespaces).
#[derive(Debug)]
pub struct CgroupIsolation {
    /// Where this agent's containers' cgroups are.
    pub layout: Layout,
    /// A hard cpu limit besides the shares.
    pub cfs: bool,
    pub pids_max: Option<u64>,
    pub namespaces: Option<Namespaces>,
}

impl CgroupIsolation {
    /// Container `name`'s cgroup, made with the limits of `resources`.
    pub fn create(&self, name: &str, resources: &Resources) -> Result<Cgroup, CgroupError> {
        self.layout.create(name, self.limits(resources))
    }

    /// Sets `cgroup`'s limits to those of `resources`, except that its
    /// memory limit is only ever raised (as in Mesos: memory a process
    /// holds is not given back because its container may use less now,
    /// and the kernel would kill for it).
    pub fn limit(&self, cgroup: &Cgroup, resources: &Resources) -> Result<(), CgroupError> {
        let mut limits = self.limits(resources);
        if let Some(current) = cgroup.memory_limit()? {
            limits.mem_bytes = limits.mem_bytes.max(current);
        } else {
            // No limit now: none after either.
            limits.mem_bytes = 0;
        }
        cgroup.limit(limits)
    }

    fn limits(&self, resources: &Resources) -> Limits {
        Limits {
            cpus: resources.cpus().as_f64(),
            cfs: self.cfs,
            mem_bytes: memory_limit_mb(resources).saturating_mul(1 << 20),
            pids_max: self.pids_max,
        }
    }

    /// Container `name`'s cgroup if it exists (after a restart).
    pub fn existing(&self, name: &str) -> Option<Cgroup> {
        let cgroup = self.layout.open(name);
        cgroup.exists().then_some(cgroup)
    }

    /// How a container's first process is confined in `cgroup`.
    pub fn confinement(&self, cgroup: &Cgroup) -> Confinement {
        Confinement {
            cgroup: Some(cgroup.clone()),
            namespaces: self.namespaces.clone(),
        }
    }
}

/// The least memory limit a container gets, in MB (Apache Mesos's
/// `MIN_MEMORY`): a task that asks for less (or none) still runs its
/// command, and the container init with it.
pub const MIN_MEMORY_MB: u64 = 32;

/// The memory limit of a container of `resources`, in MB.
pub fn memory_limit_mb(resources: &Resources) -> u64 {
    resources.mem_mb().floor().max(MIN_MEMORY_MB)
}

/// What the agent isolates with.
#[derive(Debug, Clone)]
pub enum Isolation {
    Posix,
    Cgroups(Arc<CgroupIsolation>),
}

impl Isolation {
    /// What it is, as `--isolation` would say it.
    pub fn flags(&self) -> IsolationFlags {
        match self {
            Isolation::Posix => IsolationFlags::POSIX,
            Isolation::Cgroups(isolation) => IsolationFlags {
                cgroups: true,
                namespaces: isolation.namespaces.is_some(),
                network_none: isolation
                    .namespaces
                    .as_ref()
                    .is_some_and(|namespaces| namespaces.network),
            },
        }
    }
}

/// What the agent was told about isolation.
#[derive(Debug, Clone)]
pub struct IsolationOptions {
    /// `--isolation`; the most the agent can when `None`.
    pub requested: Option<IsolationFlags>,
    /// `--cgroups-root`.
    pub cgroups_root: String,
    /// `--cgroups-enable-cfs`.
    pub cfs: bool,
    /// `--cgroups-pids-max`.
    pub pids_max: Option<u64>,
    /// The `strata` program, for the container init.
    pub program: Option<PathBuf>,
    pub work_dir: PathBuf,
}

/// The default root of containers' cgroups.
pub const DEFAULT_CGROUPS_ROOT: &str = "strata";

/// Decides how containers are isolated: what was asked for, which must
/// work (else the error says why), or, unasked, the most that works, with
/// why it is less than cgroups and namespaces.
pub fn choose(options: &IsolationOptions) -> Result<(Isolation, Option<String>), String> {
    let layout = || {
        Layout::detect(
            Path::new("/proc"),
            &format!(
                "{}/{}",
                options.cgroups_root.trim_matches('/'),
                crate::launcher::work_dir_key(&options.work_dir)
            ),
        )
        .and_then(|layout| {
            // Made and removed once: this agent can manage cgroups there.
            let probe = layout.create(
                &format!("probe-{}", std::process::id()),
                Limits {
                    cpus: 0.1,
                    cfs: options.cfs,
                    mem_bytes: 64 << 20,
                    pids_max: options.pids_max,
                },
            )?;
            probe.destroy()?;
            // The agent's subtree comes back with its first container (one
            // that holds containers still is not removed).
            let _ = layout.remove_root();
            Ok(layout)
        })
        .map_err(|error| error.to_string())
    };
    let namespaces = |layout: &Layout, network: bool| -> Result<Namespaces, String> {
        let init = options
            .program
            .clone()
            .ok_or("namespaces need the strata program for the container init")?;
        let namespaces = Namespaces { init, network };
        probe_namespaces(layout, &namespaces, &options.work_dir, options.pids_max)?;
        Ok(namespaces)
    };
    let isolation = |layout: Layout, namespaces: Option<Namespaces>| {
        Isolation::Cgroups(Arc::new(CgroupIsolation {
            layout,
            cfs: options.cfs,
            pids_max: options.pids_max,
            namespaces,
        }))
    };
    match options.requested {
        Some(flags) if !flags.cgroups => Ok((Isolation::Posix, None)),
        Some(flags) => {
            let layout = layout().map_err(|error| format!("cgroups isolation: {error}"))?;
            let namespaces = if flags.namespaces {
                Some(
                    namespaces(&layout, flags.network_none)
                        .map_err(|error| format!("namespaces: {error}"))?,
                )
            } else {
                None
            };
            Ok((isolation(layout, namespaces), None))
        }
        None => match layout() {
            Err(error) => Ok((
                Isolation::Posix,
                Some(format!("posix isolation: no cgroups ({error})")),
            )),
            Ok(layout) => match namespaces(&layout, false) {
                Ok(namespaces) => Ok((isolation(layout, Some(namespaces)), None)),
                Err(error) => Ok((
                    isolation(layout, None),
                    Some(format!("cgroups isolation without namespaces: {error}")),
                )),
            },
        },
    }
}

/// Runs `true` in a container with `namespaces`, once: that they can be
/// made here (root, and the kernel and its confinement allow it), and
/// that a container of at most `pids_max` processes has room for its
/// init (two processes) and a command.
fn probe_namespaces(
    layout: &Layout,
    namespaces: &Namespaces,
    work_dir: &Path,
    pids_max: Option<u64>,
) -> Result<(), String> {
    let name = format!("probe-{}", std::process::id());
    let cgroup = layout
        .create(
            &name,
            Limits {
                cpus: 0.1,
                cfs: false,
                mem_bytes: 0,
                pids_max,
            },
        )
        .map_err(|error| error.to_string())?;
    let sandbox = work_dir.join("meta").join(&name);
    let result = (|| {
        strata_runtime::durable::create_dir_all(&sandbox).map_err(|e| e.to_string())?;
        let confinement = Confinement {
            cgroup: Some(cgroup.clone()),
            namespaces: Some(namespaces.clone()),
        };
        let status = crate::command_executor::command_in_group(
            &["true".into()],
            [(
                std::ffi::OsString::from("PATH"),
                std::ffi::OsString::from("/usr/bin:/bin"),
            )],
            &sandbox,
            std::process::Stdio::null(),
            std::process::Stdio::piped(),
            None,
            &confinement,
        )
        .and_then(|mut command| command.output())
        .map_err(|error| error.to_string())?;
        if status.status.success() {
            Ok(())
        } else {
            Err(format!(
                "a container init ended {}: {}",
                status.status,
                String::from_utf8_lossy(&status.stderr).trim()
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&sandbox);
    let _ = cgroup.kill();
    let _ = cgroup.destroy();
    let _ = layout.remove_root();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_flags_parse_and_say_what_is_wrong() {
        let parse = |text: &str| text.parse::<IsolationFlags>();
        assert_eq!(parse("posix").unwrap(), IsolationFlags::POSIX);
        let all = parse("cgroups,namespaces,network/none").unwrap();
        assert!(all.cgroups && all.namespaces && all.network_none);
        assert_eq!(all.to_string(), "cgroups,namespaces,network/none");
        assert_eq!(parse("cgroups").unwrap().to_string(), "cgroups");
        assert!(parse("posix,cgroups").is_err());
        assert!(parse("namespaces").unwrap_err().contains("cgroups"));
        assert!(
            parse("cgroups,network/none")
                .unwrap_err()
                .contains("namespaces")
        );
        assert!(parse("docker").unwrap_err().contains("docker"));
    }
}
