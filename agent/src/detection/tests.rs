//! Detection against literal file contents and fake /proc and /sys trees.
use super::*;
use std::fmt::Debug;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `parse` on `input` and compares with `expected`, an error given
/// by its reason.
fn check<I: Copy + Debug, T: PartialEq + Debug>(
    parse: impl Fn(I) -> Result<T, ParseError>,
    input: I,
    expected: Result<T, &str>,
) {
    let actual = parse(input).map_err(|error| error.reason);
    assert_eq!(actual, expected.map_err(str::to_owned), "input {input:?}");
}

#[test]
fn cpu_max() {
    let no_pair = r#"expected a quota (or "max") and a period"#;
    let cases: &[(&str, Result<Option<u64>, &str>)] = &[
        ("max 100000\n", Ok(None)),
        ("200000 100000\n", Ok(Some(2000))),
        ("150000 100000\n", Ok(Some(1500))),
        ("50000 100000", Ok(Some(500))),
        ("33333 100000", Ok(Some(333))),
        ("18446744073709551615 1", Ok(Some(u64::MAX))),
        (
            "abc 100000",
            Err(r#"the quota "abc" is not a whole number"#),
        ),
        ("0 100000", Err("the quota is zero")),
        ("max 0", Err("the period is zero")),
        ("100000", Err(no_pair)),
        ("", Err(no_pair)),
    ];
    for &(input, expected) in cases {
        check(parse_cpu_max, input, expected);
    }
}

#[test]
fn cfs_quota_and_period() {
    let quotas: &[(&str, Result<Option<u64>, &str>)] = &[
        ("-1\n", Ok(None)),
        ("150000\n", Ok(Some(150_000))),
        ("0\n", Err("a quota of zero allows no cpu time")),
        ("1.5", Err("not a whole number of microseconds")),
    ];
    for &(input, expected) in quotas {
        check(parse_cfs_quota, input, expected);
    }
    let periods: &[(&str, Result<u64, &str>)] = &[
        ("100000\n", Ok(100_000)),
        ("0\n", Err("the period is zero")),
        ("-1\n", Err(r#"the period "-1" is not a whole number"#)),
    ];
    for &(input, expected) in periods {
        check(parse_cfs_period, input, expected);
    }
}

#[test]
fn memory_max() {
    let not_bytes = r#"not "max" or a whole number of bytes"#;
    let cases: &[(&str, Result<Option<u64>, &str>)] = &[
        ("max\n", Ok(None)),
        ("3221225472\n", Ok(Some(3 * GIB))),
        ("9223372036854771712\n", Ok(None)),
        ("1152921504606846975", Ok(Some((1 << 60) - 1))),
        ("-1", Err(not_bytes)),
        ("", Err(not_bytes)),
    ];
    for &(input, expected) in cases {
        check(parse_memory_max, input, expected);
    }
}

#[test]
fn mem_total() {
    let cases: &[(&str, Result<u64, &str>)] = &[
        (
            "MemTotal:    24684096 kB\nMemFree: 1 kB\n",
            Ok(24_684_096 * KIB),
        ),
        ("MemFree: 1 kB\nMemTotal: 1024\n", Ok(1024)),
        ("MemFree: 1 kB\n", Err("no MemTotal line")),
        ("MemTotal: 1 MB\n", Err("expected a number of kB")),
        (
            "MemTotal: 18446744073709551615 kB\n",
            Err("not a whole number of kB that fits in 64 bits"),
        ),
    ];
    for &(input, expected) in cases {
        check(parse_mem_total, input, expected);
    }
}

#[test]
fn cpuinfo() {
    let cases: &[(&str, Option<u64>)] = &[
        (CPUINFO_4, Some(4)),
        ("processor\t: 0\nmodel name\t: Fake\n\n", Some(1)),
        ("\n\nprocessor\t: 0\n\nprocessor\t: 1\n", Some(2)),
        ("", None),
        ("vendor_id : IBM/S390\nprocessor 0: version = FF\n", None),
    ];
    for &(input, expected) in cases {
        assert_eq!(parse_cpuinfo(input), expected, "input {input:?}");
    }
}

#[test]
fn proc_self_cgroup() {
    let v1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n0::/\n";
    let cases: &[(&str, Result<ProcessCgroups, &str>)] = &[
        ("0::/pod/ctr\n", Ok(cgroups(Some("/pod/ctr"), None, None))),
        (
            v1,
            Ok(cgroups(Some("/"), Some("/docker/abc"), Some("/docker/abc"))),
        ),
        ("3:cpuacct:/a\n2:cpuset:/b\n", Ok(cgroups(None, None, None))),
        ("0::/a:b\n", Ok(cgroups(Some("/a:b"), None, None))),
        ("", Ok(cgroups(None, None, None))),
        ("0:/\n", Err("expected hierarchy-id:controllers:path")),
        ("0::relative\n", Err("the cgroup path is not absolute")),
    ];
    for (input, expected) in cases {
        check(parse_proc_self_cgroup, *input, expected.clone());
    }
}

#[test]
fn mountinfo() {
    let escaped = "30 25 0:26 / /my\\040cgroups\\134x rw shared:4 - cgroup2 cgroup2 rw\n";
    let no_separator = r#"expected six fields, then " - " and the filesystem type"#;
    let cases: &[(&str, Result<CgroupMounts, &str>)] = &[
        (
            MOUNTINFO_HYBRID,
            Ok(CgroupMounts {
                unified: Some(mount("/", "/sys/fs/cgroup/unified")),
                cpu: Some(mount("/", "/sys/fs/cgroup/cpu,cpuacct")),
                memory: Some(mount("/", "/sys/fs/cgroup/memory")),
                cpuacct: Some(mount("/", "/sys/fs/cgroup/cpu,cpuacct")),
                ..CgroupMounts::default()
            }),
        ),
        (
            MOUNTINFO_V1_CONTAINER,
            Ok(CgroupMounts {
                unified: None,
                cpu: Some(mount("/docker/abc", "/sys/fs/cgroup/cpu,cpuacct")),
                memory: Some(mount("/docker/abc", "/sys/fs/cgroup/memory")),
                cpuacct: Some(mount("/docker/abc", "/sys/fs/cgroup/cpu,cpuacct")),
                ..CgroupMounts::default()
            }),
        ),
        (
            escaped,
            Ok(CgroupMounts {
                unified: Some(mount("/", "/my cgroups\\x")),
                ..CgroupMounts::default()
            }),
        ),
        ("1 2 3:4 / /x rw - - - -\n", Ok(CgroupMounts::default())),
        ("1 2 3:4 / /x rw cgroup2\n", Err(no_separator)),
    ];
    for (input, expected) in cases {
        check(parse_mountinfo, *input, expected.clone());
    }
}

#[test]
fn cgroup_dirs() {
    let unified = mount("/", "/sys/fs/cgroup");
    let handed_down = mount("/docker/abc", "/sys/fs/cgroup/memory");
    let cases: &[(&CgroupMount, &str, Option<&str>)] = &[
        (&unified, "/a/b", Some("/sys/fs/cgroup/a/b")),
        (&unified, "/", Some("/sys/fs/cgroup")),
        (&unified, "/../sibling", None),
        (&handed_down, "/docker/abc", Some("/sys/fs/cgroup/memory")),
        (
            &handed_down,
            "/docker/abc/x",
            Some("/sys/fs/cgroup/memory/x"),
        ),
        (&handed_down, "/docker/abcd", None),
    ];
    for &(mount, path, expected) in cases {
        let actual = cgroup_dir(mount, Path::new(path));
        assert_eq!(actual, expected.map(PathBuf::from), "{mount:?} {path}");
    }
}

#[test]
fn offer_policies() {
    // total bytes, offered mem MiB, offered disk MiB
    let cases: &[(u64, u64, u64)] = &[
        (0, 0, 0),
        (GIB, 512, 512),
        (2 * GIB - MIB, 1023, 1023),
        (2 * GIB, 1024, 1024),
        (3 * GIB, 2048, 1536),
        (10 * GIB - MIB, 9215, 5119),
        (10 * GIB, 9216, 5120),
        (100 * GIB, 99 * 1024, 95 * 1024),
        (u64::MAX, (u64::MAX - GIB) / MIB, (u64::MAX - 5 * GIB) / MIB),
    ];
    for &(total_bytes, mem_mib, disk_mib) in cases {
        let offered = (offered_mem_mib(total_bytes), offered_disk_mib(total_bytes));
        assert_eq!(offered, (mem_mib, disk_mib), "{total_bytes} bytes");
    }
}

const CPUINFO_4: &str = "processor\t: 0\nmodel name\t: Fake\n\n\
    processor\t: 1\nmodel name\t: Fake\n\n\
    processor\t: 2\nmodel name\t: Fake\n\n\
    processor\t: 3\nmodel name\t: Fake\n\n";
const MOUNTINFO_V2: &str = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
    30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
const MOUNTINFO_HYBRID: &str = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n\
    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
    35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
    41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
const MOUNTINFO_V1_CONTAINER: &str = "\
    700 650 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n\
    701 650 0:31 /docker/abc /sys/fs/cgroup/memory ro master:13 - cgroup cgroup rw,memory\n\
    702 650 0:31 /docker/abc /mnt/again ro master:13 - cgroup cgroup rw,memory\n";

/// What a detection should give: cpus in thousandths and memory in MiB,
/// or the error message.
type Detected<'a> = Result<(u64, u64), &'a str>;

/// The fake /proc/self/mountinfo and /proc/self/cgroup, if any.
type ProcSelf<'a> = Option<(&'a str, &'a str)>;

/// Detects against a fake tree and compares cpus and memory with
/// `expected`; the disk is the temp directory's own filesystem. The tree
/// is a 4-cpu host with 16 GiB whose /proc/self is `proc_self` (mountinfo,
/// cgroup), plus `files`: one file a line, its path then its one line of
/// content. `{root}` in an expected error stands for the fake root.
fn check_detect(proc_self: ProcSelf<'_>, files: &str, expected: Detected<'_>) {
    let mut tree = vec![
        ("/proc/cpuinfo", CPUINFO_4),
        (
            "/proc/meminfo",
            "MemTotal:       16777216 kB\nMemFree: 1 kB\n",
        ),
    ];
    if let Some((mountinfo, cgroup)) = proc_self {
        tree.extend([
            ("/proc/self/mountinfo", mountinfo),
            ("/proc/self/cgroup", cgroup),
        ]);
    }
    for line in files.lines().map(str::trim).filter(|line| !line.is_empty()) {
        tree.push(line.split_once(' ').unwrap_or((line, "")));
    }
    let tree = FakeTree::new(&tree);
    let actual = detect_from(&tree.root, &tree.root).map_err(|error| error.to_string());
    let disk_mib = offered_disk_mib(filesystem_bytes(&tree.root).expect("temp dir size"));
    let expected = expected
        .map(|(cpus_millis, mem_mib)| HostResources {
            cpus_millis,
            mem_mib,
            disk_mib,
        })
        .map_err(|message| message.replace("{root}", &tree.root.display().to_string()));
    assert_eq!(actual, expected, "files {files:?}");
}

#[test]
fn detection_in_a_cgroup_v2_container() {
    let proc_self = Some((MOUNTINFO_V2, "0::/pod/ctr\n"));
    let cases: &[(&str, Detected<'_>)] = &[
        // 1.5 cpus and 3 GiB, of which 1 GiB is kept back.
        (
            "/sys/fs/cgroup/pod/ctr/cpu.max 150000 100000
             /sys/fs/cgroup/pod/ctr/memory.max 3221225472
             /sys/fs/cgroup/pod/cpu.max max 100000
             /sys/fs/cgroup/pod/memory.max max",
            Ok((1500, 2048)),
        ),
        // The pod's tighter limits bind the container too.
        (
            "/sys/fs/cgroup/pod/ctr/cpu.max 150000 100000
             /sys/fs/cgroup/pod/ctr/memory.max max
             /sys/fs/cgroup/pod/cpu.max 50000 100000
             /sys/fs/cgroup/pod/memory.max 1073741824",
            Ok((500, 512)),
        ),
        // Limits above the host's leave the host's figures.
        (
            "/sys/fs/cgroup/pod/ctr/cpu.max 800000 100000
             /sys/fs/cgroup/pod/ctr/memory.max 68719476736",
            Ok((4000, 15360)),
        ),
        ("", Ok((4000, 15360))),
        (
            "/sys/fs/cgroup/pod/ctr/cpu.max abc 100000",
            Err(
                r#"cannot parse "abc 100000" in {root}/sys/fs/cgroup/pod/ctr/cpu.max: the quota "abc" is not a whole number"#,
            ),
        ),
    ];
    for &(files, expected) in cases {
        check_detect(proc_self, files, expected);
    }
}

#[test]
fn detection_in_cgroup_v1() {
    let cgroup = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n";
    let host_view = Some((MOUNTINFO_HYBRID, cgroup));
    let container_view = Some((MOUNTINFO_V1_CONTAINER, cgroup));
    let cases: &[(ProcSelf<'_>, &str, Detected<'_>)] = &[
        (
            host_view,
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us 250000
             /sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us 100000
             /sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes 1073741824
             /sys/fs/cgroup/memory/memory.limit_in_bytes 9223372036854771712",
            Ok((2500, 512)),
        ),
        // A quota without a readable period sets no limit.
        (
            host_view,
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us 250000",
            Ok((4000, 15360)),
        ),
        (
            host_view,
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us -1
             /sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us 100000",
            Ok((4000, 15360)),
        ),
        (
            host_view,
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us 100000
             /sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us 0",
            Err(
                r#"cannot parse "0" in {root}/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us: the period is zero"#,
            ),
        ),
        // Inside a container the mounts show the agent's cgroup as their root.
        (
            container_view,
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us 50000
             /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us 100000
             /sys/fs/cgroup/memory/memory.limit_in_bytes 2147483648",
            Ok((500, 1024)),
        ),
    ];
    for &(proc_self, files, expected) in cases {
        check_detect(proc_self, files, expected);
    }
}

#[test]
fn detection_without_cgroups_or_host_files() {
    let cases: &[(&str, Detected<'_>)] = &[
        // Nothing says which cgroup the agent is in: the host's figures.
        ("", Ok((4000, 15360))),
        (
            "/proc/meminfo MemFree: 1 kB",
            Err(r#"cannot parse "MemFree: 1 kB" in {root}/proc/meminfo: no MemTotal line"#),
        ),
        (
            "/proc/self/cgroup 0:/
             /proc/self/mountinfo",
            Err(
                r#"cannot parse "0:/" in {root}/proc/self/cgroup: expected hierarchy-id:controllers:path"#,
            ),
        ),
    ];
    for &(files, expected) in cases {
        check_detect(None, files, expected);
    }

    let tree = FakeTree::new(&[("/proc/cpuinfo", CPUINFO_4)]);
    let error = detect_from(&tree.root, &tree.root).expect_err("no meminfo");
    let root = tree.root.display();
    let expected =
        format!("cannot read {root}/proc/meminfo: No such file or directory (os error 2)");
    assert_eq!(error.to_string(), expected);
    let error = detect(&tree.root.join("gone")).expect_err("no work dir");
    let expected = format!(
        "cannot measure the filesystem holding {root}/gone: No such file or directory (os error 2)"
    );
    assert_eq!(error.to_string(), expected);
}

/// What this machine (or container) really has; printed so a run with
/// `--nocapture` shows it.
#[test]
fn detection_on_this_machine_is_within_the_host() {
    let work_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let detected = detect(work_dir).expect("detection on this machine");
    println!("detected on this machine: {detected:?}");

    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let listed = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let host_cpus = match listed {
        0 => std::thread::available_parallelism()
            .expect("cpu count")
            .get(),
        listed => listed,
    };
    let meminfo = fs::read_to_string("/proc/meminfo").expect("meminfo");
    let mem_total_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    let stat = rustix::fs::statvfs(work_dir).expect("statvfs");
    let disk_total_mib = stat.f_blocks * stat.f_frsize / MIB;

    let host = (
        host_cpus as u64 * 1000,
        mem_total_kib / 1024,
        disk_total_mib,
    );
    let within = |amount: u64, total: u64| amount > 0 && amount <= total;
    assert!(
        within(detected.cpus_millis, host.0),
        "{detected:?} in {host:?}"
    );
    assert!(within(detected.mem_mib, host.1), "{detected:?} in {host:?}");
    assert!(
        within(detected.disk_mib, host.2),
        "{detected:?} in {host:?}"
    );
}

fn cgroups(unified: Option<&str>, cpu: Option<&str>, memory: Option<&str>) -> ProcessCgroups {
    ProcessCgroups {
        unified: unified.map(PathBuf::from),
        cpu: cpu.map(PathBuf::from),
        memory: memory.map(PathBuf::from),
    }
}

fn mount(root: &str, mount_point: &str) -> CgroupMount {
    CgroupMount {
        root: root.into(),
        mount_point: mount_point.into(),
    }
}

/// A directory under the system temp dir standing for `/`, holding the
/// given files and removed when dropped.
struct FakeTree {
    root: PathBuf,
}

impl FakeTree {
    fn new(files: &[(&str, &str)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("strata-detection-{}-{id}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let tree = Self { root };
        for (path, text) in files {
            let path = tree.root.join(path.trim_start_matches('/'));
            fs::create_dir_all(path.parent().expect("a parent")).expect("fake dir");
            fs::write(&path, text).expect("fake file");
        }
        tree
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
