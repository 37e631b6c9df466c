//! Tasks in images, run by a real OCI runtime (runc) on this machine's
//! real cgroups: an image built here from Debian's busybox-static into an
//! OCI layout and a `docker save` archive, and served by a registry on
//! loopback. They need root and runc (CI installs it and must run them);
//! elsewhere they say so and pass.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::isolated::{Isolated, STRATA, may_isolate, sandbox_of, until};

const IMAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images");

/// Whether containers can run here (root, runc, busybox-static); in CI
/// they must.
fn may_contain(test: &str) -> bool {
    if !may_isolate(test) {
        return false;
    }
    let present = Path::new("/bin/busybox").is_file()
        && strata_agent::oci::OciRuntime::find(Some("runc"), Path::new("/")).is_ok();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install runc and busybox-static for the container tests"
        );
        eprintln!("{test}: skipped, runc or busybox-static is missing");
    }
    present
}

/// The test image, built into `dir`: an OCI layout (`dir/layout`) and a
/// `docker save` archive (`dir/image.tar`).
fn build_image(dir: &Path) -> (PathBuf, PathBuf) {
    let layout = dir.join("layout");
    let archive = dir.join("image.tar");
    let built = Command::new("python3")
        .arg(Path::new(IMAGES).join("make_image.py"))
        .arg(&layout)
        .arg("--docker-archive")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    (layout, archive)
}

/// What the agent keeps for containers with images, in its work dir.
fn agent_dir(cluster: &Isolated, name: &str) -> PathBuf {
    Path::new(&cluster.agent_work).join(name)
}

/// Nothing of a container is left: no bundle, no overlay mount under the
/// agent's work dir, nothing the runtime knows, no cgroup.
fn assert_nothing_left(cluster: &Isolated) {
    cluster.assert_no_cgroup_left();
    let containers = agent_dir(cluster, "containers");
    until("every bundle to go", || {
        std::fs::read_dir(&containers)
            .map_or(true, |mut entries| entries.next().is_none())
            .then_some(())
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&cluster.agent_work),
        "a mount is left under the agent's work dir:\n{mounts}"
    );
    let listed = Command::new("runc")
        .args(["--root"])
        .arg(agent_dir(cluster, "runtime"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "{listed:?}"
    );
}

/// A task in the image sees the image's root filesystem (its second
/// layer's whiteout applied), not the host's; its sandbox is at
/// /mnt/mesos/sandbox; its exit status is reported; a task over its
/// memory fails for it; the same image from a `docker save` archive
/// runs; nothing is left after.
#[test]
fn a_task_runs_in_its_image_and_nothing_is_left() {
    if !may_contain("image") {
        return;
    }
    let cluster = Isolated::start("image", "cgroups,namespaces", "cpus:2;mem:1024");
    let (layout, archive) = build_image(&cluster.dir);
    let script = "cat /etc/image-release /etc/motd; \
        test -e /etc/removed || echo whiteout-applied; \
        test -e /usr/bin/python3 || echo not-the-host; \
        echo sandbox=$MESOS_SANDBOX variable=$IMAGE_VARIABLE cwd=$(pwd); \
        echo written > $MESOS_SANDBOX/out; exit 3";
    let image = layout.to_str().unwrap();
    let (_task, lines) =
        cluster.execute("in-image", "cpus:0.5;mem:64", script, &["--image", image]);
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    let failed = common::read_until(&lines, "TASK_FAILED");
    assert!(failed.contains("status 3"), "{failed}");
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
    for wanted in [
        "strata test image",
        "from the second layer",
        "whiteout-applied",
        "not-the-host",
        "sandbox=/mnt/mesos/sandbox variable=from-the-image cwd=/mnt/mesos/sandbox",
    ] {
        assert!(stdout.contains(wanted), "{wanted:?} not in {stdout}");
    }
    assert_eq!(
        std::fs::read_to_string(sandbox.join("out")).unwrap(),
        "written\n"
    );
    // Operators see the image.
    let tasks = Command::new(STRATA)
        .args(["tasks", "--master", &cluster.address])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&tasks.stdout);
    assert!(
        table.lines().next().unwrap().ends_with("IMAGE")
            && table
                .lines()
                .any(|row| row.starts_with("in-image ") && row.ends_with(image)),
        "{table}"
    );

    // Over its memory, in the image: the kernel's OOM kill, read from the
    // container's cgroup the runtime kept.
    let hog = "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived";
    let (_hog, lines) = cluster.execute("hog", "cpus:0.5;mem:32", hog, &["--image", image]);
    let failed = common::read_until(&lines, "TASK_FAILED");
    assert!(
        failed.contains("reason=REASON_CONTAINER_LIMITATION_MEMORY"),
        "{failed}"
    );

    // The same image as a `docker save` archive; the layers are those
    // already unpacked (the archive names them by their diff_ids).
    let (_archived, lines) = cluster.execute(
        "archived",
        "cpus:0.5;mem:64",
        "cat /etc/motd",
        &["--image", archive.to_str().unwrap()],
    );
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    common::read_until(&lines, "TASK_FINISHED");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "from the second layer\n"
    );
    assert_nothing_left(&cluster);
}

/// The registry the test serves from `layout`: its address, and the
/// blobs it was asked for, as they come.
fn serve_registry(
    layout: &Path,
) -> (
    common::KillOnDrop,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let mut registry = Command::new("python3")
        .arg(Path::new(IMAGES).join("registry.py"))
        .arg(layout)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::lines_of(registry.stdout.take().unwrap());
    let port = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    (
        common::KillOnDrop(registry),
        format!("127.0.0.1:{}", port.trim()),
        lines,
    )
}

/// The image pulled from a registry on loopback (a bearer token asked for
/// on its challenge): two tasks of it share one pull of its layers, a
/// manifest list naming it needs none; a registry that is not there, an
/// image that is not, and a corrupted layer each fail the task with
/// REASON_CONTAINER_PREPARATION_FAILED and a message naming the cause;
/// nothing is left after.
#[test]
fn images_are_pulled_cached_and_refused_when_bad() {
    if !may_contain("registry") {
        return;
    }
    let cluster = Isolated::start("registry", "cgroups,namespaces", "cpus:2;mem:1024");
    let (layout, _) = build_image(&cluster.dir);
    let (_registry, address, blobs) = serve_registry(&layout);
    let refused = |name: &str, image: &str, cause: &str| {
        let (_task, lines) = cluster.execute(name, "cpus:0.5;mem:64", "true", &["--image", image]);
        let failed = common::read_until(&lines, "TASK_FAILED");
        assert!(
            failed.contains("reason=REASON_CONTAINER_PREPARATION_FAILED") && failed.contains(cause),
            "{failed}"
        );
    };
    // A corrupted copy of the layout: its big layer's bytes changed.
    let corrupt = cluster.dir.join("corrupt");
    std::fs::create_dir_all(corrupt.join("blobs/sha256")).unwrap();
    for entry in std::fs::read_dir(&layout).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), corrupt.join(entry.file_name())).unwrap();
        }
    }
    for entry in std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if bytes.len() > 1000 {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
        }
        std::fs::write(corrupt.join("blobs/sha256").join(entry.file_name()), bytes).unwrap();
    }
    // First, before its good twin is cached under the same digests.
    refused("corrupt", corrupt.to_str().unwrap(), "digest mismatch");
    let image = format!("{address}/test/busybox:1.0");
    let (_pair, lines) = cluster.execute(
        "pair",
        "cpus:0.5;mem:64",
        "cat /etc/motd",
        &["--image", &image, "--instances", "2"],
    );
    common::read_until(&lines, "TASK_FINISHED");
    common::read_until(&lines, "TASK_FINISHED");
    let listed = |index: &str| {
        let (_task, lines) = cluster.execute(
            index,
            "cpus:0.5;mem:64",
            "true",
            &["--image", &format!("{address}/test/busybox:index")],
        );
        common::read_until(&lines, "TASK_FINISHED");
    };
    listed("listed");
    let fetched: Vec<String> = blobs.try_iter().collect();
    // The configuration for each name, each layer once.
    let layers: Vec<&String> = fetched
        .iter()
        .filter(|line| {
            let digest = line
                .trim_start_matches("blob ")
                .trim_start_matches("sha256:");
            std::fs::metadata(layout.join("blobs/sha256").join(digest))
                .unwrap()
                .len()
                > 1000
        })
        .collect();
    assert_eq!(layers.len(), 1, "the big layer once: {fetched:?}");
    assert_eq!(
        fetched.len(),
        4,
        "config twice, two layers once: {fetched:?}"
    );
    let unpacked = std::fs::read_dir(agent_dir(&cluster, "images/layers"))
        .unwrap()
        .count();
    assert_eq!(unpacked, 2);

    refused("unreachable", "127.0.0.1:1/test/busybox", "unreachable");
    refused("unknown-path", "/nonexistent/image", "not found");
    refused("outside", "/etc", "--image-dirs");
    assert_nothing_left(&cluster);
    let tmp = agent_dir(&cluster, "images/tmp");
    assert!(std::fs::read_dir(&tmp).map_or(true, |mut entries| entries.next().is_none()));
}

/// A task in an image keeps running while its agent is killed and comes
/// back; the agent takes it back and kills it through the runtime and
/// its cgroup; nothing is left.
#[test]
fn a_container_outlives_its_agent_and_is_killed_after() {
    if !may_contain("outlives") {
        return;
    }
    let mut cluster = Isolated::start("outlives", "cgroups,namespaces", "cpus:2;mem:1024");
    let (layout, _) = build_image(&cluster.dir);
    let (_runner, lines) = cluster.execute(
        "runner",
        "cpus:0.5;mem:64",
        "echo started; exec sleep 600",
        &["--image", layout.to_str().unwrap(), "--checkpoint"],
    );
    let sandbox = sandbox_of(&common::read_until(&lines, "TASK_RUNNING"));
    until("the task to start", || {
        std::fs::read_to_string(sandbox.join("stdout"))
            .ok()
            .filter(|out| out.contains("started"))
    });
    let mut agent = cluster.agent.take().unwrap();
    agent.kill().unwrap();
    drop(agent);
    let runtime = agent_dir(&cluster, "runtime");
    let state = || {
        let listed = Command::new("runc")
            .arg("--root")
            .arg(&runtime)
            .args(["list", "--format", "json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).into_owned()
    };
    assert!(state().contains("\"running\""), "{}", state());
    cluster.start_agent();
    // Back, the agent still watches it: a kill reaches it.
    let killed = Command::new(STRATA)
        .args(["kill", "runner", "--master", &cluster.address])
        .args(["--work-dir", &cluster.work])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    common::read_until(&lines, "TASK_KILLED");
    assert_nothing_left(&cluster);
}
