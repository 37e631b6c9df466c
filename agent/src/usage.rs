//! What running tasks use: cpu time and resident memory, per process
//! group, sampled from `/proc`.
//!
//! Without cgroups a task is its process group (see
//! [`crate::command_executor`]), so its usage is the sum over the group's
//! processes. The agent samples every second, keeps the latest figures
//! for `/monitor/statistics`, and fails a task whose resident memory
//! exceeds its `mem` (a sampling limit). With cgroups isolation the
//! figures are the kernel's, for the container's cgroup
//! ([`KernelUsage`]), and the kernel enforces the limit.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One process group's usage at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GroupUsage {
    /// User plus system cpu time of the group's live processes, seconds.
    pub cpu_seconds: f64,
    /// Resident memory of the group's processes, bytes.
    pub rss_bytes: u64,
    /// How many processes the group has.
    pub processes: u32,
    /// What only the kernel's accounting of a cgroup knows.
    pub kernel: Option<KernelUsage>,
}

/// A container's usage from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KernelUsage {
    /// Time its processes wanted cpu but were held by the hard limit.
    pub throttled_seconds: f64,
    /// Memory charged to it now (page cache included) and at its peak.
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    /// Its memory limit, if it has one.
    pub memory_limit_bytes: Option<u64>,
    /// Processes the kernel killed in it for want of memory.
    pub oom_kills: u64,
}

/// Reads `/proc` once and sums usage for each of `groups`; a group with no
/// live process is absent from the answer.
pub fn sample(groups: &BTreeSet<i32>) -> BTreeMap<i32, GroupUsage> {
    let mut usage: BTreeMap<i32, GroupUsage> = BTreeMap::new();
    if groups.is_empty() {
        return usage;
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return usage;
    };
    let ticks = procfs::ticks_per_second().max(1) as f64;
    let page = procfs::page_size();
    for process in processes.flatten() {
        // A process that ended between listing and reading is skipped.
        let Ok(stat) = process.stat() else {
            continue;
        };
        if !groups.contains(&stat.pgrp) {
            continue;
        }
        let entry = usage.entry(stat.pgrp).or_default();
        entry.cpu_seconds += (stat.utime + stat.stime) as f64 / ticks;
        entry.rss_bytes += stat.rss * page;
        entry.processes += 1;
    }
    usage
}

/// Whether a task using `rss_bytes` is over a limit of `mem_mb` MB.
pub fn over_memory_limit(rss_bytes: u64, mem_mb: u64) -> bool {
    mem_mb > 0 && rss_bytes > mem_mb.saturating_mul(1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_group_is_seen() {
        let group = rustix::process::getpgrp().as_raw_nonzero().get();
        let usage = sample(&BTreeSet::from([group]));
        let ours = usage.get(&group).copied().unwrap_or_default();
        assert!(ours.processes >= 1, "{usage:?}");
        assert!(ours.rss_bytes > 0);
    }

    #[test]
    fn limits() {
        assert!(!over_memory_limit(64 << 20, 64));
        assert!(over_memory_limit((64 << 20) + 1, 64));
        assert!(!over_memory_limit(1 << 40, 0), "no mem asked: no limit");
    }
}
