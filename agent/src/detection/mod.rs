//! Detects how much of this machine the agent can offer to tasks when the
//! operator gives no `--resources`: cpus, memory and disk, the way an Apache
//! Mesos agent does, but never more than the agent's own cgroup allows, so an
//! agent running in a container does not offer the whole host.
//!
//! The parsers and offer policies are pure functions of file contents and
//! byte counts, tested with literal texts. [`detect_from`] is the only part
//! that touches the filesystem: it reads `/proc` and `/sys` below a root
//! directory, so a test can run the whole detection against a fake tree;
//! [`detect`] is the same with the real root.
//!
//! The offer policies are Mesos's (`Containerizer::resources`): memory is the
//! total less 1 GiB kept for the agent and the system, or half of a total
//! under 2 GiB; disk is the work directory's filesystem less 5 GiB, or half of
//! one under 10 GiB. A cgroup limit that cannot be read (no cgroup filesystem
//! mounted, a controller not enabled) leaves the host figure standing; one that
//! reads but does not parse is an error, because guessing could offer
//! resources the agent does not have.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use procfs::{CpuInfo, FromRead};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

const MILLIS_PER_CPU: u64 = 1000;

/// cgroup v1 reports "no memory limit" as the largest page-aligned counter
/// (9223372036854771712 on 64-bit kernels) rather than a word; no machine has
/// anywhere near this much memory, so anything this large is no limit.
const UNLIMITED_MEMORY_BYTES: u64 = 1 << 60;

/// Files under /proc and /sys are small; the cap keeps a corrupt or hostile
/// tree from being read into memory whole. A longer file is a read error.
const MAX_FILE_BYTES: u64 = 16 * MIB;

/// Quoted file contents in errors are cut to this many characters, so one bad
/// file cannot flood a log.
const MAX_QUOTED_CHARS: usize = 120;

/// What this agent can offer to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Thousandths of a cpu: 1.5 cpus is 1500.
    pub cpus_millis: u64,
    /// Memory in MiB (what Mesos calls "mem" in MB).
    pub mem_mib: u64,
    /// Disk in the agent's work directory, in MiB.
    pub disk_mib: u64,
}

/// Why the resources could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum DetectionError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot parse {text:?} in {}: {reason}", .path.display())]
    Parse {
        path: PathBuf,
        text: String,
        reason: String,
    },
    #[error("cannot count cpus: {} lists none and the scheduler cannot say: {source}", .path.display())]
    CpuCount { path: PathBuf, source: io::Error },
    #[error("cannot measure the filesystem holding {}: {source}", .path.display())]
    Filesystem { path: PathBuf, source: io::Error },
}

/// Why a text is not a valid value for the file it came from. The caller that
/// read the file turns it into a [`DetectionError::Parse`] naming the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {text:?}: {reason}")]
pub struct ParseError {
    /// The offending line or value, cut to a readable length.
    pub text: String,
    pub reason: String,
}

impl ParseError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        let text = text.trim();
        let text = match text.char_indices().nth(MAX_QUOTED_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_owned(),
        };
        Self {
            text,
            reason: reason.into(),
        }
    }

    fn in_file(self, path: &Path) -> DetectionError {
        DetectionError::Parse {
            path: path.to_path_buf(),
            text: self.text,
            reason: self.reason,
        }
    }
}

/// The agent's own cgroups, as `/proc/self/cgroup` names them: paths from the
/// root of each hierarchy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessCgroups {
    /// The cgroup v2 (unified) path, from the `0::/path` line.
    pub unified: Option<PathBuf>,
    /// The cgroup v1 path in the hierarchy holding the cpu controller.
    pub cpu: Option<PathBuf>,
    /// The cgroup v1 path in the hierarchy holding the memory controller.
    pub memory: Option<PathBuf>,
}

/// Where one cgroup hierarchy is mounted: the hierarchy's `root` (the cgroup
/// the mount shows, `/` unless a container was handed a subtree) appears at
/// `mount_point`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub root: PathBuf,
    pub mount_point: PathBuf,
}

/// The mounts of the hierarchies that can limit the agent; the first mount of
/// each counts, later bind mounts show the same files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub unified: Option<CgroupMount>,
    pub cpu: Option<CgroupMount>,
    pub memory: Option<CgroupMount>,
    /// The v1 hierarchies the cgroups isolator also uses.
    pub cpuacct: Option<CgroupMount>,
    pub pids: Option<CgroupMount>,
    pub freezer: Option<CgroupMount>,
}

/// Parses cgroup v2 `cpu.max` ("max 100000", "150000 100000") into the limit
/// in thousandths of a cpu, `None` for no limit.
pub fn parse_cpu_max(text: &str) -> Result<Option<u64>, ParseError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [quota, period] = fields.as_slice() else {
        return Err(ParseError::new(
            text,
            "expected a quota (or \"max\") and a period",
        ));
    };
    let period_us =
        positive_number(period, "period").map_err(|reason| ParseError::new(text, reason))?;
    if *quota == "max" {
        return Ok(None);
    }
    let quota_us =
        positive_number(quota, "quota").map_err(|reason| ParseError::new(text, reason))?;
    Ok(Some(millicpus(quota_us, period_us)))
}

/// Parses cgroup v1 `cpu.cfs_quota_us`: microseconds of cpu time per period,
/// `None` for no limit (the kernel writes -1).
pub fn parse_cfs_quota(text: &str) -> Result<Option<u64>, ParseError> {
    let quota: i64 = text
        .trim()
        .parse()
        .map_err(|_| ParseError::new(text, "not a whole number of microseconds"))?;
    match u64::try_from(quota) {
        Err(_) => Ok(None),
        Ok(0) => Err(ParseError::new(text, "a quota of zero allows no cpu time")),
        Ok(quota_us) => Ok(Some(quota_us)),
    }
}

/// Parses cgroup v1 `cpu.cfs_period_us`, in microseconds.
pub fn parse_cfs_period(text: &str) -> Result<u64, ParseError> {
    positive_number(text.trim(), "period").map_err(|reason| ParseError::new(text, reason))
}

/// A field that must be a whole number above zero; the error is the reason,
/// naming the field as `what`.
fn positive_number(field: &str, what: &str) -> Result<u64, String> {
    match field.parse::<u64>() {
        Ok(0) => Err(format!("the {what} is zero")),
        Ok(number) => Ok(number),
        Err(_) => Err(format!("the {what} {field:?} is not a whole number")),
    }
}

/// The cpus a quota of `quota_us` per `period_us` allows, in thousandths,
/// rounded down so the agent never offers more than its cgroup grants.
/// `period_us` is positive: the parsers reject a zero period.
pub fn millicpus(quota_us: u64, period_us: u64) -> u64 {
    let millis = u128::from(quota_us) * u128::from(MILLIS_PER_CPU) / u128::from(period_us);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// Parses cgroup v2 `memory.max` or v1 `memory.limit_in_bytes` into bytes,
/// `None` for no limit ("max" in v2, a huge number in v1).
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, ParseError> {
    let value = text.trim();
    if value == "max" {
        return Ok(None);
    }
    let bytes: u64 = value
        .parse()
        .map_err(|_| ParseError::new(text, "not \"max\" or a whole number of bytes"))?;
    Ok((bytes < UNLIMITED_MEMORY_BYTES).then_some(bytes))
}

/// Parses the `MemTotal` line of /proc/meminfo into bytes.
pub fn parse_mem_total(meminfo: &str) -> Result<u64, ParseError> {
    let Some(line) = meminfo.lines().find(|line| line.starts_with("MemTotal:")) else {
        return Err(ParseError::new(meminfo, "no MemTotal line"));
    };
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    let (number, unit_bytes) = match fields.as_slice() {
        [number, "kB"] => (*number, KIB),
        [number] => (*number, 1),
        _ => return Err(ParseError::new(line, "expected a number of kB")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|amount| amount.checked_mul(unit_bytes))
        .ok_or_else(|| ParseError::new(line, "not a whole number of kB that fits in 64 bits"))
}

/// Counts the processors /proc/cpuinfo lists (the kernel lists the online
/// ones). `None` when it lists none in the usual `processor : N` form, as on
/// s390x, so the caller can ask the scheduler instead.
pub fn parse_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let info = CpuInfo::from_read(cpuinfo.as_bytes()).ok()?;
    // procfs counts every blank-line-separated block, so count only the
    // blocks that carry a processor number.
    let cores = (0..info.num_cores())
        .filter(|&cpu| info.get_field(cpu, "processor").is_some())
        .count();
    u64::try_from(cores).ok().filter(|&cores| cores > 0)
}

/// Parses /proc/self/cgroup: `0::/path` for the unified hierarchy,
/// `N:controller,controller:/path` for each v1 hierarchy.
pub fn parse_proc_self_cgroup(text: &str) -> Result<ProcessCgroups, ParseError> {
    let mut cgroups = ProcessCgroups::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError::new(
                line,
                "expected hierarchy-id:controllers:path",
            ));
        };
        if !path.starts_with('/') {
            return Err(ParseError::new(line, "the cgroup path is not absolute"));
        }
        let path = PathBuf::from(path);
        if id == "0" && controllers.is_empty() {
            cgroups.unified.get_or_insert(path);
            continue;
        }
        for controller in controllers.split(',') {
            let slot = match controller {
                "cpu" => &mut cgroups.cpu,
                "memory" => &mut cgroups.memory,
                _ => continue,
            };
            slot.get_or_insert_with(|| path.clone());
        }
    }
    Ok(cgroups)
}

/// Parses /proc/self/mountinfo for the mounts of the unified hierarchy
/// (filesystem type `cgroup2`) and of the v1 hierarchies holding the cpu and
/// memory controllers (type `cgroup`, controller named in the super options).
pub fn parse_mountinfo(text: &str) -> Result<CgroupMounts, ParseError> {
    let mut mounts = CgroupMounts::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        // id parent major:minor root mount-point options [optional...] - type source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().skip(6).position(|field| *field == "-");
        let (Some(separator), [_, _, _, root, mount_point, ..]) =
            (separator.map(|skipped| skipped + 6), fields.as_slice())
        else {
            return Err(ParseError::new(
                line,
                "expected six fields, then \" - \" and the filesystem type",
            ));
        };
        let fs_type = fields.get(separator + 1).copied().unwrap_or("");
        let super_options = fields.get(separator + 3).copied().unwrap_or("");
        let mount = || CgroupMount {
            root: unescape_mount_path(root),
            mount_point: unescape_mount_path(mount_point),
        };
        match fs_type {
            "cgroup2" => {
                mounts.unified.get_or_insert_with(mount);
            }
            "cgroup" => {
                for option in super_options.split(',') {
                    let slot = match option {
                        "cpu" => &mut mounts.cpu,
                        "memory" => &mut mounts.memory,
                        "cpuacct" => &mut mounts.cpuacct,
                        "pids" => &mut mounts.pids,
                        "freezer" => &mut mounts.freezer,
                        _ => continue,
                    };
                    slot.get_or_insert_with(mount);
                }
            }
            _ => {}
        }
    }
    Ok(mounts)
}

/// Where the cgroup at `cgroup_path` (as /proc/self/cgroup names it) appears
/// below `mount`. `None` when the mount does not show it, as when a container
/// was handed a subtree that does not contain the agent.
pub fn cgroup_dir(mount: &CgroupMount, cgroup_path: &Path) -> Option<PathBuf> {
    let relative = cgroup_path.strip_prefix(&mount.root).ok()?;
    let plain = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    plain.then(|| mount.mount_point.join(relative))
}

/// Memory offered to tasks out of `total_bytes`, in MiB: the total less 1 GiB
/// for the agent and the system, or half of a total under 2 GiB.
pub fn offered_mem_mib(total_bytes: u64) -> u64 {
    let offered = if total_bytes >= 2 * GIB {
        total_bytes - GIB
    } else {
        total_bytes / 2
    };
    offered / MIB
}

/// Disk offered to tasks out of a filesystem of `total_bytes`, in MiB: the
/// total less 5 GiB for logs and the agent's own state, or half of one under
/// 10 GiB.
pub fn offered_disk_mib(total_bytes: u64) -> u64 {
    let offered = if total_bytes >= 10 * GIB {
        total_bytes - 5 * GIB
    } else {
        total_bytes / 2
    };
    offered / MIB
}

/// Detects what this machine can offer, with the disk measured on the
/// filesystem holding `work_dir` (which must exist).
pub fn detect(work_dir: &Path) -> Result<HostResources, DetectionError> {
    detect_from(Path::new("/"), work_dir)
}

/// [`detect`] reading `/proc` and `/sys` below `root` instead of `/`. The
/// disk is still measured at `work_dir` itself.
pub fn detect_from(root: &Path, work_dir: &Path) -> Result<HostResources, DetectionError> {
    let tree = Tree { root };
    let cgroups = tree.agent_cgroups()?;

    let host_cpus_millis = tree.host_cpus()?.saturating_mul(MILLIS_PER_CPU);
    let cpus_millis = at_most(host_cpus_millis, cgroups.cpu_limit_millis()?);

    let meminfo_path = tree.path("/proc/meminfo");
    let host_mem_bytes = parse_mem_total(&read_text(&meminfo_path)?)
        .map_err(|error| error.in_file(&meminfo_path))?;
    let mem_bytes = at_most(host_mem_bytes, cgroups.memory_limit_bytes()?);

    Ok(HostResources {
        cpus_millis,
        mem_mib: offered_mem_mib(mem_bytes),
        disk_mib: offered_disk_mib(filesystem_bytes(work_dir)?),
    })
}

fn at_most(host: u64, limit: Option<u64>) -> u64 {
    limit.map_or(host, |limit| limit.min(host))
}

/// The size of the filesystem holding `path`, as statvfs reports it.
fn filesystem_bytes(path: &Path) -> Result<u64, DetectionError> {
    let stat = rustix::fs::statvfs(path).map_err(|errno| DetectionError::Filesystem {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    Ok(stat.f_blocks.saturating_mul(stat.f_frsize))
}

/// The machine's files, seen below `root`.
#[derive(Debug)]
struct Tree<'a> {
    root: &'a Path,
}

impl Tree<'_> {
    /// `absolute` (as the kernel names it) below the root.
    fn path(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        self.root
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }

    fn host_cpus(&self) -> Result<u64, DetectionError> {
        let path = self.path("/proc/cpuinfo");
        if let Some(cores) = read_text(&path).ok().as_deref().and_then(parse_cpuinfo) {
            return Ok(cores);
        }
        // The scheduler's figure also honours cpu affinity and cgroup
        // quotas, which is no harm here since the smaller figure wins anyway.
        std::thread::available_parallelism()
            .map(|cores| u64::try_from(cores.get()).unwrap_or(u64::MAX))
            .map_err(|source| DetectionError::CpuCount { path, source })
    }

    /// The directories of the agent's own cgroups. Without /proc/self/cgroup
    /// or /proc/self/mountinfo (no /proc mounted, a kernel without cgroups)
    /// there is no cgroup to read limits from.
    fn agent_cgroups(&self) -> Result<AgentCgroups, DetectionError> {
        let cgroup_path = self.path("/proc/self/cgroup");
        let mountinfo_path = self.path("/proc/self/mountinfo");
        let (Ok(cgroup_text), Ok(mountinfo_text)) =
            (read_text(&cgroup_path), read_text(&mountinfo_path))
        else {
            return Ok(AgentCgroups::default());
        };
        let cgroups =
            parse_proc_self_cgroup(&cgroup_text).map_err(|error| error.in_file(&cgroup_path))?;
        let mounts =
            parse_mountinfo(&mountinfo_text).map_err(|error| error.in_file(&mountinfo_path))?;
        let dir = |mount: Option<CgroupMount>, cgroup: Option<PathBuf>| {
            let (mount, cgroup) = (mount?, cgroup?);
            let leaf = cgroup_dir(&mount, &cgroup)?;
            Some(CgroupDir {
                leaf: self.path(leaf),
                top: self.path(&mount.mount_point),
            })
        };
        Ok(AgentCgroups {
            unified: dir(mounts.unified, cgroups.unified),
            cpu: dir(mounts.cpu, cgroups.cpu),
            memory: dir(mounts.memory, cgroups.memory),
        })
    }
}

/// The agent's cgroup directories, below the tree's root.
#[derive(Debug, Default)]
struct AgentCgroups {
    unified: Option<CgroupDir>,
    cpu: Option<CgroupDir>,
    memory: Option<CgroupDir>,
}

impl AgentCgroups {
    fn cpu_limit_millis(&self) -> Result<Option<u64>, DetectionError> {
        let unified = tightest(self.unified.as_ref(), |dir| {
            read_limit(&dir.join("cpu.max"), parse_cpu_max).map(Option::flatten)
        })?;
        let v1 = tightest(self.cpu.as_ref(), |dir| {
            let quota_path = dir.join("cpu.cfs_quota_us");
            let period_path = dir.join("cpu.cfs_period_us");
            let Some(Some(quota_us)) = read_limit(&quota_path, parse_cfs_quota)? else {
                return Ok(None);
            };
            let period_us = read_limit(&period_path, parse_cfs_period)?;
            Ok(period_us.map(|period_us| millicpus(quota_us, period_us)))
        })?;
        Ok(tighter(unified, v1))
    }

    fn memory_limit_bytes(&self) -> Result<Option<u64>, DetectionError> {
        let unified = tightest(self.unified.as_ref(), |dir| {
            read_limit(&dir.join("memory.max"), parse_memory_max).map(Option::flatten)
        })?;
        let v1 = tightest(self.memory.as_ref(), |dir| {
            read_limit(&dir.join("memory.limit_in_bytes"), parse_memory_max).map(Option::flatten)
        })?;
        Ok(tighter(unified, v1))
    }
}

/// One of the agent's cgroups: its directory, and the mount point above it.
#[derive(Debug)]
struct CgroupDir {
    leaf: PathBuf,
    top: PathBuf,
}

/// The smallest limit that `limit_in` finds in `cgroup` or any ancestor up to
/// the mount point: a parent's limit binds its children too, and the agent's
/// own cgroup often has none.
fn tightest(
    cgroup: Option<&CgroupDir>,
    limit_in: impl Fn(&Path) -> Result<Option<u64>, DetectionError>,
) -> Result<Option<u64>, DetectionError> {
    let Some(cgroup) = cgroup else {
        return Ok(None);
    };
    let mut tightest = None;
    for dir in cgroup
        .leaf
        .ancestors()
        .take_while(|dir| dir.starts_with(&cgroup.top))
    {
        tightest = tighter(tightest, limit_in(dir)?);
    }
    Ok(tightest)
}

fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads and parses a cgroup file; `None` when it cannot be read, since a
/// cgroup file that is not there sets no limit.
fn read_limit<T>(
    path: &Path,
    parse: fn(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, DetectionError> {
    let Ok(text) = read_text(path) else {
        return Ok(None);
    };
    parse(&text).map(Some).map_err(|error| error.in_file(path))
}

fn read_text(path: &Path) -> Result<String, DetectionError> {
    let read_error = |source| DetectionError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(read_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {MAX_FILE_BYTES} bytes"),
        )));
    }
    Ok(text)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011` for a tab,
/// `\012` for a newline, `\134` for a backslash) in a path field.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut path = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = match bytes.get(at..at + 4) {
            Some([b'\\', digits @ ..]) if digits.iter().all(|d| (b'0'..=b'7').contains(d)) => {
                digits.iter().try_fold(0u8, |value, digit| {
                    value.checked_mul(8)?.checked_add(digit - b'0')
                })
            }
            _ => None,
        };
        match escaped {
            Some(byte) => {
                path.push(byte);
                at += 4;
            }
            None => {
                path.push(bytes[at]);
                at += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(path))
}

#[cfg(test)]
mod tests;
