//! Control groups for containers: one cgroup per container under the
//! agent's root (`strata` by default), on cgroup v2 (a unified hierarchy
//! with the cpu, memory and pids controllers) or v1 (the cpu, cpuacct,
//! memory, pids and freezer hierarchies, as on hybrid hosts).
//!
//! What a container's cgroup gets, in Apache Mesos's terms: cpu shares
//! of 1024 per cpu (v2: the same share as a weight, as the kubelet maps
//! it), with `cfs` a hard limit of that many cpus per 100 ms period; a
//! memory limit of its mem; at most `pids_max` processes. Its processes
//! are killed all at once, those that left their process group included
//! (v2 `cgroup.kill`, else frozen, each killed, thawed); its usage is read
//! from the kernel's accounting.
//!
//! The few cgroup files are written directly (see the research notes:
//! the crates that wrap them pull in much more).

use std::path::{Path, PathBuf};

use crate::detection::{CgroupMounts, cgroup_dir, parse_mountinfo, parse_proc_self_cgroup};

/// CFS period for a hard cpu limit (Mesos's, 100 ms).
pub const CFS_PERIOD_US: u64 = 100_000;

/// Why a cgroup could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy this agent can use: {0}")]
    Unavailable(String),
    #[error("cgroup {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup file {} holds {text:?}, not what it should", .path.display())]
    Parse { path: PathBuf, text: String },
}

impl CgroupError {
    /// Whether the kernel still holds what was to be removed (processes
    /// on their way out): worth trying again.
    pub fn is_busy(&self) -> bool {
        matches!(self, CgroupError::Io { source, .. }
            if source.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the agent's containers' cgroups live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// cgroup v2: the root's directory in the unified hierarchy, and the
    /// top of what this agent sees of that hierarchy (every level between
    /// them hands the controllers down).
    V2 { base: PathBuf, root: PathBuf },
    /// cgroup v1: the root's directory in each hierarchy.
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
        freezer: PathBuf,
    },
}

/// What a container may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub cpus: f64,
    /// A hard cpu limit (CFS quota, `cpu.max`) besides the share.
    pub cfs: bool,
    /// The memory limit; 0 for none.
    pub mem_bytes: u64,
    pub pids_max: Option<u64>,
}

/// What a container used, from the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_time_ns: u64,
    pub throttled_ns: u64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    /// Anonymous memory (what `/proc` would call resident, less files).
    pub rss_bytes: u64,
    /// Processes the kernel killed for the memory limit.
    pub oom_kills: u64,
    /// Processes in the cgroup.
    pub processes: u32,
}

impl Layout {
    /// Finds the hierarchies in this process's view (`self/mountinfo`
    /// and `self/cgroup` under `proc_root`), with the containers' root
    /// `root_name` at the top of what it sees of each.
    pub fn detect(proc_root: &Path, root_name: &str) -> Result<Layout, CgroupError> {
        let read = |file: &str| {
            let path = proc_root.join(file);
            std::fs::read_to_string(&path).map_err(io(&path))
        };
        let mounts = parse_mountinfo(&read("self/mountinfo")?)
            .map_err(|error| CgroupError::Unavailable(error.to_string()))?;
        // Checked only for being well formed: containers' cgroups go at the
        // top of what the agent sees of each hierarchy.
        parse_proc_self_cgroup(&read("self/cgroup")?)
            .map_err(|error| CgroupError::Unavailable(error.to_string()))?;
        Layout::within(&mounts, root_name)
    }

    /// The layout under `mounts`: v1 when its cpu and memory hierarchies
    /// are mounted, else v2 when the unified hierarchy has the cpu and
    /// memory controllers.
    pub fn within(mounts: &CgroupMounts, root_name: &str) -> Result<Layout, CgroupError> {
        let relative = Path::new(root_name);
        if root_name.is_empty()
            || !relative
                .components()
                .all(|part| matches!(part, std::path::Component::Normal(_)))
        {
            return Err(CgroupError::Unavailable(format!(
                "{root_name:?} is not a cgroup path below the top of a hierarchy"
            )));
        }
        let top = |mount: &Option<crate::detection::CgroupMount>| {
            mount
                .as_ref()
                .and_then(|mount| cgroup_dir(mount, &mount.root))
                .map(|dir| dir.join(root_name))
        };
        if let (Some(cpu), Some(cpuacct), Some(memory), Some(pids), Some(freezer)) = (
            top(&mounts.cpu),
            top(&mounts.cpuacct),
            top(&mounts.memory),
            top(&mounts.pids),
            top(&mounts.freezer),
        ) {
            return Ok(Layout::V1 {
                cpu,
                cpuacct,
                memory,
                pids,
                freezer,
            });
        }
        let Some(unified) = mounts
            .unified
            .as_ref()
            .and_then(|mount| cgroup_dir(mount, &mount.root))
        else {
            return Err(CgroupError::Unavailable(
                "neither the v1 cpu, cpuacct, memory, pids and freezer hierarchies nor a unified one is mounted"
                    .into(),
            ));
        };
        let controllers_file = unified.join("cgroup.controllers");
        let controllers =
            std::fs::read_to_string(&controllers_file).map_err(io(&controllers_file))?;
        let has = |name: &str| controllers.split_whitespace().any(|found| found == name);
        if !(has("cpu") && has("memory") && has("pids")) {
            return Err(CgroupError::Unavailable(format!(
                "the unified hierarchy at {} offers {:?}, not cpu, memory and pids",
                unified.display(),
                controllers.trim()
            )));
        }
        Ok(Layout::V2 {
            root: unified.join(root_name),
            base: unified,
        })
    }

    /// The containers' root in each hierarchy.
    fn roots(&self) -> Vec<PathBuf> {
        match self {
            Layout::V2 { root, .. } => vec![root.clone()],
            Layout::V1 {
                cpu,
                cpuacct,
                memory,
                pids,
                freezer,
            } => {
                let mut roots: Vec<PathBuf> = [cpu, cpuacct, memory, pids, freezer]
                    .into_iter()
                    .cloned()
                    .collect();
                // cpu and cpuacct are often one hierarchy.
                roots.dedup();
                roots
            }
        }
    }

    /// Every directory of container `name`'s cgroup.
    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|root| root.join(name))
            .collect()
    }

    /// Removes the containers' root once no container's cgroup is left,
    /// and its parent if that is left empty (the agents' common root, when
    /// the root is one agent's subtree).
    pub fn remove_root(&self) -> Result<(), CgroupError> {
        for root in self.roots() {
            match std::fs::remove_dir(&root) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io(&root)(error)),
            }
            // Another agent's subtree may keep it: that is no error.
            if let Some(parent) = root.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        Ok(())
    }

    /// The names of the containers' cgroups that exist now (after a
    /// restart: those to re-attach or clean up).
    pub fn existing(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        // In any hierarchy: one half made or half removed may be in some
        // only.
        for root in self.roots() {
            let entries = match std::fs::read_dir(&root) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io(&root)(error)),
            };
            names.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                    .filter_map(|entry| entry.file_name().into_string().ok()),
            );
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Creates container `name`'s cgroup with `limits` (again, if it
    /// exists: the limits are written anew).
    pub fn create(&self, name: &str, limits: Limits) -> Result<Cgroup, CgroupError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::Unavailable(format!(
                "{name:?} is not a cgroup name"
            )));
        }
        if let Layout::V2 { base, root } = self {
            std::fs::create_dir_all(root).map_err(io(root))?;
            // The controllers a container's cgroup needs, handed down from
            // the top to the root's children.
            let mut level = base.clone();
            let below = root.strip_prefix(base).unwrap_or(Path::new(""));
            for part in std::iter::once(None).chain(below.components().map(Some)) {
                if let Some(part) = part {
                    level.push(part);
                }
                write(&level.join("cgroup.subtree_control"), "+cpu +memory +pids")?;
            }
        }
        let cgroup = Cgroup {
            layout: self.clone(),
            name: name.to_owned(),
        };
        let made = self
            .dirs(name)
            .into_iter()
            .try_for_each(|dir| std::fs::create_dir_all(&dir).map_err(io(&dir)));
        if let Err(error) = made.and_then(|()| cgroup.limit(limits)) {
            // Nothing runs in it yet.
            let _ = cgroup.destroy();
            return Err(error);
        }
        Ok(cgroup)
    }

    /// Container `name`'s cgroup, as it is (to re-attach after a restart).
    pub fn open(&self, name: &str) -> Cgroup {
        Cgroup {
            layout: self.clone(),
            name: name.to_owned(),
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), CgroupError> {
    std::fs::write(path, text).map_err(io(path))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn number(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        text: text.chars().take(64).collect(),
    })
}

/// The value of `key` in a flat keyed file (`cpu.stat`, `memory.events`).
fn keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            text: format!("no {key}"),
        })
}

/// One container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cgroup {
    layout: Layout,
    name: String,
}

/// cpu.shares for `cpus` (Mesos: 1024 a cpu, at least 2).
pub fn cpu_shares(cpus: f64) -> u64 {
    ((cpus * 1024.0) as u64).max(2)
}

/// cpu.weight for `cpus`: the shares mapped onto 1..10000 as the kubelet
/// does.
pub fn cpu_weight(cpus: f64) -> u64 {
    let shares = cpu_shares(cpus).min(262_144);
    1 + ((shares - 2) * 9_999) / 262_142
}

impl Cgroup {
    /// Its name under the root.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.name)
    }

    /// Writes `limits`.
    pub fn limit(&self, limits: Limits) -> Result<(), CgroupError> {
        let quota = (limits.cpus * CFS_PERIOD_US as f64).ceil().max(1000.0) as u64;
        let pids = limits
            .pids_max
            .map_or_else(|| "max".to_owned(), |max| max.to_string());
        match &self.layout {
            Layout::V2 { root, .. } => {
                let dir = self.dir(root);
                write(
                    &dir.join("cpu.weight"),
                    &cpu_weight(limits.cpus).to_string(),
                )?;
                let max = if limits.cfs {
                    format!("{quota} {CFS_PERIOD_US}")
                } else {
                    format!("max {CFS_PERIOD_US}")
                };
                write(&dir.join("cpu.max"), &max)?;
                let memory = match limits.mem_bytes {
                    0 => "max".to_owned(),
                    bytes => bytes.to_string(),
                };
                write(&dir.join("memory.max"), &memory)?;
                write(&dir.join("pids.max"), &pids)?;
            }
            Layout::V1 {
                cpu,
                memory,
                pids: pids_root,
                ..
            } => {
                let cpu = self.dir(cpu);
                write(
                    &cpu.join("cpu.shares"),
                    &cpu_shares(limits.cpus).to_string(),
                )?;
                write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                let quota = if limits.cfs {
                    quota.to_string()
                } else {
                    "-1".into()
                };
                write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
                let memory = self.dir(memory);
                let limit = match limits.mem_bytes {
                    0 => "-1".to_owned(),
                    bytes => bytes.to_string(),
                };
                write(&memory.join("memory.limit_in_bytes"), &limit)?;
                write(&self.dir(pids_root).join("pids.max"), &pids)?;
            }
        }
        Ok(())
    }

    /// Its memory limit; `None` when it has none.
    pub fn memory_limit(&self) -> Result<Option<u64>, CgroupError> {
        let path = match &self.layout {
            Layout::V2 { root, .. } => self.dir(root).join("memory.max"),
            Layout::V1 { memory, .. } => self.dir(memory).join("memory.limit_in_bytes"),
        };
        if read(&path)?.trim() == "max" {
            return Ok(None);
        }
        // v1 says "none" with the largest page-aligned value.
        Ok(Some(number(&path)?).filter(|limit| *limit < 1 << 62))
    }

    /// The `cgroup.procs` file of each of its directories: what a process
    /// writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.layout
            .dirs(&self.name)
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (and, for a child before it execs, what it
    /// starts) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.layout.dirs(&self.name) {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in it, in any of its hierarchies (one half made or
    /// half removed may have only some); an error when it has none.
    pub fn processes(&self) -> Result<Vec<u32>, CgroupError> {
        let mut found = None;
        for dir in self
            .layout
            .dirs(&self.name)
            .iter()
            .flat_map(|dir| subtree(dir))
        {
            let procs = dir.join("cgroup.procs");
            match std::fs::read_to_string(&procs) {
                Ok(text) => found.get_or_insert_with(Vec::new).extend(
                    text.lines()
                        .filter_map(|line| line.trim().parse::<u32>().ok()),
                ),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io(&procs)(error)),
            }
        }
        let mut pids = found.ok_or_else(|| {
            io(&self.layout.dirs(&self.name)[0])(std::io::ErrorKind::NotFound.into())
        })?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Its path below the top of its hierarchies (`/strata/…/<name>`), as
    /// an OCI runtime's `cgroupsPath` names it: its directory in the
    /// memory (v1) or unified (v2) hierarchy less that hierarchy's mount
    /// point in this process's view.
    pub fn hierarchy_path(&self) -> Result<String, CgroupError> {
        let dir = match &self.layout {
            Layout::V2 { root, .. } => self.dir(root),
            Layout::V1 { memory, .. } => self.dir(memory),
        };
        let mountinfo = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(mountinfo).map_err(io(mountinfo))?;
        let mount_point = text
            .lines()
            .filter(|line| {
                line.split_once(" - ")
                    .is_some_and(|(_, fs)| fs.starts_with("cgroup ") || fs.starts_with("cgroup2 "))
            })
            .filter_map(|line| line.split(' ').nth(4))
            .map(Path::new)
            .filter(|point| dir.starts_with(point))
            .max_by_key(|point| point.as_os_str().len())
            .ok_or_else(|| {
                CgroupError::Unavailable(format!("no cgroup mount holds {}", dir.display()))
            })?;
        let relative = dir.strip_prefix(mount_point).unwrap_or(&dir);
        Ok(format!("/{}", relative.display()))
    }

    /// Whether any of its directories exists.
    pub fn exists(&self) -> bool {
        self.layout.dirs(&self.name).iter().any(|dir| dir.is_dir())
    }

    /// How many processes are in it.
    fn count(&self) -> Result<u32, CgroupError> {
        Ok(u32::try_from(self.processes()?.len()).unwrap_or(u32::MAX))
    }

    /// Kills every process in it at once: v2 `cgroup.kill` where the
    /// kernel has it, else frozen (none can fork meanwhile), each
    /// SIGKILLed, thawed.
    pub fn kill(&self) -> Result<(), CgroupError> {
        let freezer = match &self.layout {
            Layout::V2 { root, .. } => {
                let kill = self.dir(root).join("cgroup.kill");
                if kill.exists() {
                    return write(&kill, "1");
                }
                (self.dir(root).join("cgroup.freeze"), "1", "0")
            }
            Layout::V1 { freezer, .. } => {
                (self.dir(freezer).join("freezer.state"), "FROZEN", "THAWED")
            }
        };
        let (state, frozen, thawed) = freezer;
        // Without its freezer directory (half made), each process is
        // killed as it is found.
        let freezing = state.parent().is_some_and(Path::is_dir);
        if freezing {
            write(&state, frozen)?;
            // Frozen once the kernel says so: none of its processes can
            // fork any more (v1 passes through FREEZING; v2 has
            // cgroup.events say `frozen 1`).
            for _ in 0..1000 {
                let settled = match &self.layout {
                    Layout::V2 { root, .. } => {
                        keyed(&self.dir(root).join("cgroup.events"), "frozen").is_ok_and(|f| f == 1)
                    }
                    Layout::V1 { .. } => read(&state).is_ok_and(|now| now.trim() == frozen),
                };
                if settled {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let killed = self.processes().map(|pids| {
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    // Gone already: nothing to kill.
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        });
        let thaw = if freezing {
            write(&state, thawed)
        } else {
            Ok(())
        };
        killed.and(thaw)
    }

    /// How many of its processes the kernel killed for want of memory.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        match &self.layout {
            Layout::V2 { root, .. } => keyed(&self.dir(root).join("memory.events"), "oom_kill"),
            // Counted since Linux 4.13.
            Layout::V1 { memory, .. } => {
                Ok(keyed(&self.dir(memory).join("memory.oom_control"), "oom_kill").unwrap_or(0))
            }
        }
    }

    /// What it used, from the kernel's accounting.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        match &self.layout {
            Layout::V2 { root, .. } => {
                let dir = self.dir(root);
                let stat = dir.join("cpu.stat");
                let peak = dir.join("memory.peak");
                Ok(Usage {
                    cpu_time_ns: keyed(&stat, "usage_usec")?.saturating_mul(1000),
                    throttled_ns: keyed(&stat, "throttled_usec")
                        .unwrap_or(0)
                        .saturating_mul(1000),
                    memory_bytes: number(&dir.join("memory.current"))?,
                    // memory.peak came with Linux 5.19.
                    memory_peak_bytes: if peak.exists() { number(&peak)? } else { 0 },
                    rss_bytes: keyed(&dir.join("memory.stat"), "anon")?,
                    oom_kills: self.oom_kills()?,
                    processes: self.count()?,
                })
            }
            Layout::V1 {
                cpu,
                cpuacct,
                memory,
                ..
            } => {
                let memory = self.dir(memory);
                Ok(Usage {
                    cpu_time_ns: number(&self.dir(cpuacct).join("cpuacct.usage"))?,
                    throttled_ns: keyed(&self.dir(cpu).join("cpu.stat"), "throttled_time")
                        .unwrap_or(0),
                    memory_bytes: number(&memory.join("memory.usage_in_bytes"))?,
                    memory_peak_bytes: number(&memory.join("memory.max_usage_in_bytes"))?,
                    rss_bytes: keyed(&memory.join("memory.stat"), "total_rss")?,
                    oom_kills: self.oom_kills()?,
                    processes: self.count()?,
                })
            }
        }
    }

    /// Removes it; its processes must be gone (a cgroup with processes
    /// cannot be removed: the error says so).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first = Ok(());
        for dir in self
            .layout
            .dirs(&self.name)
            .iter()
            .flat_map(|dir| subtree(dir))
        {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    if first.is_ok() {
                        first = Err(io(&dir)(error));
                    }
                }
            }
        }
        first
    }
}

/// `dir` and the cgroups below it (an OCI runtime's), deepest first,
/// `dir` last; at most a few levels down.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
        if depth < 8
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    walk(&entry.path(), depth + 1, found);
                }
            }
        }
        found.push(dir.to_owned());
    }
    let mut found = Vec::new();
    walk(dir, 0, &mut found);
    found
}

#[cfg(test)]
mod tests;
