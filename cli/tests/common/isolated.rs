//! A master and an isolating agent on this machine's real cgroups, for
//! the isolation and container tests. They need root (CI runs as root
//! and must run them); elsewhere they say so and pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// Whether this test may create cgroups and namespaces (root); in CI it
/// must.
pub fn may_isolate(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the isolation tests as root"
        );
        eprintln!("{test}: skipped, cgroups and namespaces need root");
    }
    root
}

/// A master and one agent isolating with `isolation`, its cgroups under
/// a root of this test's own; the agent's flags kept to start it again.
pub struct Isolated {
    pub dir: PathBuf,
    pub work: String,
    pub agent_work: String,
    pub master: strata_integration::ChildNode,
    pub agent: Option<strata_integration::ChildNode>,
    pub address: String,
    pub cgroups_root: String,
    pub agent_flags: Vec<String>,
}

impl Isolated {
    pub fn start(test: &str, isolation: &str, resources: &str) -> Isolated {
        let (dir, work, agent_work) = super::work_dirs(test);
        let master = super::start_master(&work);
        let address = master.pid.addr().to_string();
        let cgroups_root = format!("strata-test-{test}-{}", std::process::id());
        let agent_flags = [
            "--isolation",
            isolation,
            "--cgroups-root",
            &cgroups_root,
            "--cgroups-enable-cfs",
            "--cgroups-pids-max",
            "64",
            "--resources",
            resources,
            // Images the container tests build go in the test's directory.
            "--image-dirs",
            dir.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec();
        let mut cluster = Isolated {
            dir,
            work,
            agent_work,
            master,
            agent: None,
            address,
            cgroups_root,
            agent_flags,
        };
        cluster.start_agent();
        cluster
    }

    pub fn start_agent(&mut self) {
        let flags: Vec<&str> = self.agent_flags.iter().map(String::as_str).collect();
        self.agent = Some(super::start_agent_with(
            &self.address,
            &self.agent_work,
            &flags,
        ));
    }

    /// `strata execute` of one task; its status lines.
    pub fn execute(
        &self,
        name: &str,
        resources: &str,
        command: &str,
        extra: &[&str],
    ) -> (super::KillOnDrop, Receiver<String>) {
        let mut framework = Command::new(STRATA)
            .args(["execute", "--master", &self.address, "--name", name])
            .args(["--command", command, "--resources", resources])
            .args(["--work-dir", &self.work, "--timeout", "120"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = super::lines_of(framework.stdout.take().unwrap());
        (super::KillOnDrop(framework), lines)
    }

    /// The memory hierarchy's directory of this test's cgroups root.
    pub fn memory_root(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/memory").join(&self.cgroups_root)
    }

    /// The containers' cgroups that exist now (one subtree per agent
    /// work directory under the root).
    pub fn containers(&self) -> Vec<PathBuf> {
        let Ok(agents) = std::fs::read_dir(self.memory_root()) else {
            return Vec::new();
        };
        agents
            .flatten()
            .filter(|agent| agent.path().is_dir())
            .flat_map(|agent| std::fs::read_dir(agent.path()).unwrap().flatten())
            .map(|container| container.path())
            .filter(|path| path.is_dir())
            .collect()
    }

    /// Waits up to 30 s for every container's cgroup to be gone.
    pub fn assert_no_cgroup_left(&self) {
        until("every container's cgroup to go", || {
            self.containers().is_empty().then_some(())
        });
    }

    pub fn agent_http(&self) -> String {
        self.agent.as_ref().unwrap().pid.addr().to_string()
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = self.agent.take();
        // What a failed test left: killed, then its cgroups removed.
        let subtree = format!(
            "{}/{}",
            self.cgroups_root,
            strata_agent::launcher::work_dir_key(Path::new(&self.agent_work))
        );
        if let Ok(layout) = strata_agent::cgroups::Layout::detect(Path::new("/proc"), &subtree) {
            for name in layout.existing().unwrap_or_default() {
                let cgroup = layout.open(&name);
                let deadline = Instant::now() + Duration::from_secs(10);
                while cgroup.processes().is_ok_and(|pids| !pids.is_empty())
                    && Instant::now() < deadline
                {
                    let _ = cgroup.kill();
                    std::thread::yield_now();
                }
                let _ = cgroup.destroy();
            }
            let _ = layout.remove_root();
        }
        // What an OCI runtime made in the hierarchies the agent does not
        // use (empty parents of its containers' cgroups), deepest first.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in hierarchies.flatten() {
                remove_empty_tree(&hierarchy.path().join(&self.cgroups_root));
            }
        }
        let _ = &self.master;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the empty cgroups at and below `dir`, deepest first.
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Waits up to 30 s for `found` to find something.
pub fn until<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(thing) = found() {
            return thing;
        }
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::yield_now();
    }
}

/// The sandbox a TASK_RUNNING line names.
pub fn sandbox_of(running: &str) -> PathBuf {
    PathBuf::from(running.split_once("running in ").unwrap().1)
}

/// One raw HTTP GET; the status code and the body.
pub fn get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}
