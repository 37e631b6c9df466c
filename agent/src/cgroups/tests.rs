use std::io::Write;

use super::*;
use crate::detection::CgroupMount;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-cgroups-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mount(dir: &Path) -> Option<CgroupMount> {
    Some(CgroupMount {
        root: PathBuf::from("/"),
        mount_point: dir.to_owned(),
    })
}

const LIMITS: Limits = Limits {
    cpus: 0.5,
    cfs: true,
    mem_bytes: 64 << 20,
    pids_max: Some(100),
};

#[test]
fn shares_and_weights_follow_mesos_and_the_kubelet() {
    assert_eq!(cpu_shares(1.0), 1024);
    assert_eq!(cpu_shares(0.001), 2);
    assert_eq!(cpu_weight(0.001), 1);
    assert_eq!(cpu_weight(1.0), 39);
    assert_eq!(cpu_weight(1000.0), 10_000);
}

#[test]
fn a_v2_container_gets_its_limits_and_reports_its_usage() {
    let dir = temp("v2");
    std::fs::write(
        dir.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let mounts = CgroupMounts {
        unified: mount(&dir),
        ..CgroupMounts::default()
    };
    let layout = Layout::within(&mounts, "strata").unwrap();
    assert_eq!(
        layout,
        Layout::V2 {
            base: dir.clone(),
            root: dir.join("strata")
        }
    );
    let cgroup = layout.create("c1", LIMITS).unwrap();
    let file = |name: &str| std::fs::read_to_string(dir.join("strata").join(name)).unwrap();
    assert_eq!(file("cgroup.subtree_control"), "+cpu +memory +pids");
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids",
        "the top hands the controllers down too"
    );
    assert_eq!(file("c1/cpu.max"), "50000 100000");
    assert_eq!(file("c1/memory.max"), "67108864");
    assert_eq!(file("c1/pids.max"), "100");
    assert_eq!(layout.existing().unwrap(), ["c1"]);
    let c1 = dir.join("strata/c1");
    std::fs::write(
        c1.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nthrottled_usec 20\n",
    )
    .unwrap();
    std::fs::write(c1.join("memory.current"), "4096\n").unwrap();
    std::fs::write(c1.join("memory.stat"), "anon 2048\nfile 2048\n").unwrap();
    std::fs::write(c1.join("cgroup.procs"), "17\n18\n").unwrap();
    std::fs::write(
        c1.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    )
    .unwrap();
    assert_eq!(
        cgroup.usage().unwrap(),
        Usage {
            cpu_time_ns: 1_500_000,
            throttled_ns: 20_000,
            memory_bytes: 4096,
            memory_peak_bytes: 0,
            rss_bytes: 2048,
            oom_kills: 1,
            processes: 2,
        }
    );
    std::fs::write(c1.join("memory.current"), "lots\n").unwrap();
    assert!(
        cgroup
            .usage()
            .unwrap_err()
            .to_string()
            .contains("memory.current")
    );
    // Without the controllers it needs, the unified hierarchy is refused.
    std::fs::write(dir.join("cgroup.controllers"), "cpu io\n").unwrap();
    assert!(Layout::within(&mounts, "strata").is_err());
    assert!(layout.create("../escape", LIMITS).is_err());
    assert!(Layout::within(&mounts, "../up").is_err());
    assert!(Layout::within(&mounts, "/abs").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_v1_container_gets_its_limits_in_each_hierarchy() {
    let dir = temp("v1");
    let hierarchy = |name: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        mount(&path)
    };
    let mounts = CgroupMounts {
        unified: hierarchy("unified"),
        cpu: hierarchy("cpu,cpuacct"),
        cpuacct: hierarchy("cpu,cpuacct"),
        memory: hierarchy("memory"),
        pids: hierarchy("pids"),
        freezer: hierarchy("freezer"),
    };
    let layout = Layout::within(&mounts, "strata").unwrap();
    let cgroup = layout
        .create(
            "c1",
            Limits {
                cfs: false,
                ..LIMITS
            },
        )
        .unwrap();
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(file("cpu,cpuacct/strata/c1/cpu.shares"), "512");
    assert_eq!(file("cpu,cpuacct/strata/c1/cpu.cfs_quota_us"), "-1");
    assert_eq!(file("memory/strata/c1/memory.limit_in_bytes"), "67108864");
    assert_eq!(file("pids/strata/c1/pids.max"), "100");
    assert!(dir.join("freezer/strata/c1").is_dir());
    assert_eq!(layout.existing().unwrap(), ["c1"]);
    assert_eq!(cgroup.name(), "c1");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real hierarchies of this machine, when the test may create
/// cgroups there (root); in CI it must.
fn real_layout(root: &str) -> Option<Layout> {
    let layout = Layout::detect(Path::new("/proc"), root);
    let usable = layout.as_ref().ok().filter(|layout| {
        layout
            .create("probe", LIMITS)
            .is_ok_and(|probe| probe.destroy().is_ok())
    });
    if usable.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to create cgroups: {layout:?}"
        );
        eprintln!("skipping: cannot create cgroups here ({layout:?})");
    }
    usable.cloned()
}

/// Kills and removes a test's cgroup and its root, however the test ends.
struct Cleanup(Cgroup, Layout);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.0.processes().is_ok_and(|pids| !pids.is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        let _ = self.0.destroy();
        let _ = self.1.remove_root();
    }
}

#[test]
fn real_cgroups_hold_a_task_that_escaped_its_process_group_and_kill_it() {
    let root = format!("strata-test-{}", std::process::id());
    let Some(layout) = real_layout(&root) else {
        return;
    };
    let cgroup = layout.create("escape", LIMITS).unwrap();
    let _cleanup = Cleanup(cgroup.clone(), layout.clone());
    // A shell that starts a daemon in a session of its own, then exits:
    // the daemon is in no process group the agent knows, but in the
    // cgroup the shell was put in before it exec'd.
    let marker = temp("escape").join("daemon.pid");
    let script = format!(
        "read go; setsid sleep 300 & echo $! > {}; wait",
        marker.display()
    );
    let mut shell = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // In the cgroup before it starts anything, as a task is.
    cgroup.add(shell.id()).unwrap();
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !marker.exists() || std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never started"
        );
        std::thread::yield_now();
    }
    let daemon: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let inside = cgroup.processes().unwrap();
    assert!(inside.contains(&daemon), "{daemon} not in {inside:?}");
    cgroup.kill().unwrap();
    shell.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cgroup.processes().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes survived the kill"
        );
        std::thread::yield_now();
    }
    assert!(cgroup.usage().unwrap().cpu_time_ns > 0);
    cgroup.destroy().unwrap();
    let _ = std::fs::remove_dir_all(marker.parent().unwrap());
}

#[test]
fn real_cgroups_count_the_kernels_oom_kill() {
    let root = format!("strata-oom-{}", std::process::id());
    let Some(layout) = real_layout(&root) else {
        return;
    };
    let cgroup = layout
        .create(
            "hog",
            Limits {
                mem_bytes: 32 << 20,
                ..LIMITS
            },
        )
        .unwrap();
    let _cleanup = Cleanup(cgroup.clone(), layout.clone());
    // Held until it is in the cgroup, then takes 256 MiB.
    let mut hog = std::process::Command::new("sh")
        .args([
            "-c",
            "read go; exec python3 -c 'x = bytearray(256 << 20); print(len(x))'",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cgroup.add(hog.id()).unwrap();
    hog.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = hog.wait().unwrap();
    assert!(!status.success(), "it took 256 MiB under a 32 MiB limit");
    let usage = cgroup.usage().unwrap();
    assert!(usage.oom_kills >= 1, "{usage:?}");
    assert!(usage.memory_peak_bytes <= 32 << 20, "{usage:?}");
    cgroup.destroy().unwrap();
}
