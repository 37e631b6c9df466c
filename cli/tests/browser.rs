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

#[test]
fn the_web_ui_follows_a_task_in_a_real_browser() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script_dir = manifest.join("tests/browser");
    if let Some(reason) = missing_tools(&script_dir) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: {reason}"
        );
        eprintln!("skipping the browser test: {reason}");
        return;
    }
    let shots: PathBuf = manifest.join("../target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = std::env::temp_dir().join(format!("strata-browser-{}", std::process::id()));
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
