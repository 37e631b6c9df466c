//! The web UI in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `cli/tests/browser/ui.mjs`) against `strata
//! local`: a task launched with `strata execute` appears RUNNING, then
//! FINISHED without a reload, and its page shows its stdout. Screenshots
//! go to `target/browser/`. `.ci/run` installs Chromium and
//! playwright-core; elsewhere, without them, the test says why and passes
//! unless `CI` is set.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// What the test needs that cargo does not build, if anything is missing.
fn missing_tools(script_dir: &Path) -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !script_dir.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "no playwright-core in {} (npm install there)",
            script_dir.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node".into());
    }
    None
}

/// The scripts' directory and where screenshots go; `None` (the test
/// passes, saying why) when the tools are missing outside CI.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = manifest.join("tests/browser");
    if let Some(reason) = missing_tools(&script_dir) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: {reason}"
        );
        eprintln!("skipping the browser test: {reason}");
        return None;
    }
    let shots: PathBuf = manifest.join("../target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    Some((script_dir, shots))
}

#[test]
fn the_web_ui_follows_a_task_in_a_real_browser() {
    let Some((script_dir, shots)) = browser_tools() else {
        return;
    };
    let dir = common::scratch().join(format!("strata-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let work = dir.to_str().unwrap().to_owned();

    let mut local = Command::new(STRATA)
        .args(["local", "--agents", "1", "--port", "0", "--work-dir", &work])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let local_lines = common::lines_of(local.stdout.take().unwrap());
    let _local = common::KillOnDrop(local);
    let http = common::read_until(&local_lines, "HTTP API");
    let url = http
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let master = url.trim_start_matches("http://").to_owned();

    let mut browser = Command::new("node")
        .arg(script_dir.join("ui.mjs"))
        .args([url.as_str(), shots.to_str().unwrap(), "ui-hello"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let steps = common::lines_of(browser.stdout.take().unwrap());
    let mut browser = common::KillOnDrop(browser);
    common::read_until(&steps, "ready");

    let mut framework = Command::new(STRATA)
        .args([
            "execute",
            "--master",
            &master,
            "--name",
            "ui-hello",
            "--work-dir",
            &work,
        ])
        .args([
            "--command",
            "echo hello from the browser test; mkfifo gate && read line < gate",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = common::lines_of(framework.stdout.take().unwrap());
    let mut framework = common::KillOnDrop(framework);
    let running = common::read_until(&lines, "TASK_RUNNING");
    let sandbox = PathBuf::from(running.split_once("running in ").unwrap().1);
    let _task = common::KillGroupOnDrop::of(common::task_pid(&sandbox));
    common::read_until(&steps, "running");
    std::fs::OpenOptions::new()
        .write(true)
        .open(sandbox.join("gate"))
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    assert_eq!(framework.0.wait().unwrap().code(), Some(0));
    common::read_until(&steps, "finished");
    common::read_until(&steps, "output");
    assert!(browser.0.wait().unwrap().success());
    for shot in [
        "overview",
        "tasks-running",
        "tasks-finished",
        "task",
        "agents",
    ] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}.png");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two masters in ZooKeeper: the UI opened on the standby is redirected
/// to the leader; when the leader is killed, the page moves by itself to
/// the other master once it leads.
#[test]
fn the_web_ui_follows_the_leader_to_another_master() {
    let Some((script_dir, shots)) = browser_tools() else {
        return;
    };
    let (dir, _, _) = common::work_dirs("browser-ha");
    let ensemble = strata_zk::server::LocalEnsemble::start(&dir.join("zookeeper"), 1).unwrap();
    let zk = ensemble.url("/strata/browser");
    let mut masters: Vec<_> = (0..2)
        .map(|index| {
            let home = common::agent_work_dir(&dir, &format!("master-{index}"));
            common::start_master_with(&home, "0", &["--zk", &zk, "--zk-session-timeout", "2s"])
        })
        .collect();
    // The standby: the master whose /state redirects.
    let client: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let standby = loop {
        let found = (0..2).find(|index| {
            client
                .get(&format!("http://{}/state", masters[*index].pid.addr()))
                .call()
                .is_ok_and(|answer| answer.status().as_u16() == 307)
        });
        if let Some(index) = found {
            break index;
        }
        assert!(std::time::Instant::now() < deadline, "no master stood by");
        std::thread::yield_now();
    };
    let leader = 1 - standby;
    let url = format!("http://{}", masters[standby].pid.addr());
    let mut browser = Command::new("node")
        .arg(script_dir.join("ha.mjs"))
        .args([url.as_str(), shots.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = browser.stdin.take().unwrap();
    let steps = common::lines_of(browser.stdout.take().unwrap());
    let mut browser = common::KillOnDrop(browser);
    let shown = common::read_until(&steps, "leader ");
    assert_eq!(
        shown.trim_start_matches("leader "),
        masters[leader].pid.addr().to_string(),
        "the standby sends the page to the leader"
    );
    masters[leader].kill().unwrap();
    input.write_all(b"killed\n").unwrap();
    let moved = common::read_until(&steps, "moved ");
    assert_eq!(
        moved.trim_start_matches("moved "),
        masters[standby].pid.addr().to_string()
    );
    assert!(browser.0.wait().unwrap().success());
    drop(ensemble);
    let _ = std::fs::remove_dir_all(&dir);
}
