//! Multi-process tests of Strata over real QUIC on loopback, and what they
//! share: child nodes in their own OS processes that are killed when the
//! test ends, however it ends.

pub mod cluster;
pub mod containers;
pub mod emulator;
pub mod sim;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use strata_runtime::{Process, ProcessContext, Upid};

/// Returns every number to its sender.
#[derive(Debug)]
pub struct NumberEcho;

impl Process for NumberEcho {
    type Message = u64;

    fn handle(&mut self, ctx: &mut ProcessContext<'_, Self>, from: Upid, number: u64) {
        let _ = ctx.send(&from, number);
    }
}

/// The lines `output` produces, as they come, read on a thread of their
/// own.
pub fn lines_of(output: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A child process killed when dropped, however the test or benchmark
/// holding it ends.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` with `args` and returns it with the first line it
/// printed; what it prints later is read and dropped, so it never writes
/// to a closed pipe.
fn spawn_announcing(
    program: &Path,
    args: &[&str],
    stderr: Stdio,
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Ok((child, line))
}

/// A node running in a child OS process, killed on drop.
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
    /// The address the child announced on its first line of output.
    pub pid: Upid,
}

impl ChildNode {
    /// Starts `program` with `args` and reads the address from its first
    /// line of output: the first word shaped like `id@ip:port`. A `strata`
    /// daemon's first line names its address that way.
    pub fn start_daemon(program: &Path, args: &[&str]) -> anyhow::Result<ChildNode> {
        let (mut child, line) = spawn_announcing(program, args, Stdio::null())?;
        let address = line
            .split_whitespace()
            .map(|word| word.trim_end_matches(','))
            .find_map(|word| word.parse::<Upid>().ok());
        match address {
            Some(pid) => Ok(ChildNode { child, pid }),
            None => {
                let _ = child.kill();
                bail!("{} printed no address: {line:?}", program.display())
            }
        }
    }

    /// Starts `program` with `args` and waits for its `ready <upid>` line.
    pub fn start(program: &Path, args: &[&str]) -> anyhow::Result<ChildNode> {
        let (mut child, line) = spawn_announcing(program, args, Stdio::inherit())?;
        let Some(address) = line.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            bail!("child did not announce itself; it printed {line:?}");
        };
        let pid = address.parse()?;
        Ok(ChildNode { child, pid })
    }

    /// The child's operating-system process id.
    pub fn process_id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
