//! The task launcher: one small process per agent work directory that
//! starts the agent's tasks, is their parent, and outlives the agent, so a
//! task survives its agent and its end is still known.
//!
//! A task's process cannot be waited for by an agent that was restarted:
//! it is no longer the agent's child, and only its parent learns its exit
//! status. So the agent asks the launcher (the `strata` binary's
//! `task-launcher` subcommand, started by the first agent that needs it)
//! to start each task's command, in the task's own process group, and the
//! launcher reports each end. Ends the agent has not taken note of are
//! kept, so an agent that was down meanwhile learns them when it comes
//! back. One long-lived launcher costs a message per task, where a monitor
//! process per task would cost an exec per task.
//!
//! The agent talks to it over a Unix socket in the abstract namespace,
//! named after the work directory (the launcher accepts only its own
//! user), on two connections: requests (start a command; the answer is
//! its pid) and events (what runs, then every end). Each connection
//! opens with the launcher's secret (`meta/task-launcher.secret` in the
//! work directory, mode 0600): a process of the same user that cannot
//! read the agent's files (a task) can neither start commands nor take
//! the agent's events. Messages are framed and bounded by the runtime's
//! codec. A lost events connection is opened again, and what ended
//! meanwhile is learnt then; only a launcher that cannot be reached
//! again loses its tasks.
//!
//! Tasks of frameworks that do not checkpoint die with the agent: when the
//! requests connection that started them closes, the launcher kills their
//! groups, and once each ended, whatever is left in its container's
//! cgroup, and removes the cgroup (its agent is not there to). Each
//! task's group is killed once its command ends, so nothing it started
//! outlives it. The launcher leaves when no agent is connected
//! and no task of its runs, or, with ends nobody collected, after
//! [`UNCLAIMED_ENDS_KEPT`] without an agent.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use strata_runtime::codec::{self, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::command_executor::{signal_group, spawn_in_group};

/// The launcher's subcommand in the `strata` binary.
pub const SUBCOMMAND: &str = "task-launcher";

/// How long a launcher with no agent and no running task keeps the ends
/// nobody collected (Mesos's agent `--recovery_timeout`).
pub const UNCLAIMED_ENDS_KEPT: Duration = Duration::from_secs(15 * 60);

/// Largest message either side accepts (a command with its environment).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How long the agent waits for an answer from the launcher.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A command to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Program then arguments, as bytes.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment.
    pub environment: Vec<(Vec<u8>, Vec<u8>)>,
    pub directory: PathBuf,
    /// Files for its standard output and error (created if missing).
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Killed when the agent that asked goes away (its framework does not
    /// checkpoint).
    pub dies_with_agent: bool,
    /// Whom to run it as; the launcher's own user when `None`.
    pub run_as: Option<crate::users::RunAs>,
    /// Its cgroup and namespaces.
    pub confinement: crate::command_executor::Confinement,
}

/// What the agent (or anyone on its socket) sends the launcher.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ToLauncher {
    /// Opens a requests connection.
    Requests {
        secret: Vec<u8>,
    },
    /// Opens an events connection; the newest gets the events.
    Events {
        secret: Vec<u8>,
    },
    Launch(Box<Launch>),
    /// The agent has taken note of the end of `pid`.
    Forget {
        pid: i32,
    },
    /// Signal the process group of `pid`, if its leader was not reaped
    /// yet (only the launcher, its parent, knows that for sure).
    Signal {
        pid: i32,
        signal: i32,
    },
}

/// What the launcher sends the agent.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum FromLauncher {
    Launched {
        pid: i32,
    },
    NotLaunched {
        message: String,
    },
    /// First on an events connection: the tasks that still run, and the
    /// ends nobody took note of yet (pid, wait status).
    Tasks {
        running: Vec<i32>,
        ended: Vec<(i32, i32)>,
    },
    Ended {
        pid: i32,
        wait_status: i32,
    },
}

/// A short name for `work_dir` (its canonical path), the same from every
/// process and build: what tells apart the launchers and the cgroups of
/// several agents on one machine.
pub fn work_dir_key(work_dir: &Path) -> String {
    let path = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_owned());
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The launcher's protocol: part of its socket's name, so an agent of
/// another protocol (after an upgrade) starts a launcher of its own
/// instead of sending one that outlived its agent what it cannot read.
/// 2: launches carry their confinement (cgroup, namespaces).
/// 3: the confinement names the cgroup, which the launcher removes when
/// the container outlives its agent's connection.
pub const PROTOCOL_VERSION: u32 = 3;

/// The abstract socket name of the launcher for `work_dir`.
pub fn socket_name(work_dir: &Path) -> String {
    format!(
        "strata-task-launcher-v{PROTOCOL_VERSION}-{}",
        work_dir_key(work_dir)
    )
}

/// Bytes in the launcher's secret.
const SECRET_BYTES: usize = 32;

/// Where the launcher of `work_dir` keeps its secret.
pub fn secret_path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("task-launcher.secret")
}

/// The launcher's secret for `work_dir`, made on first use: random bytes
/// in a file only this user can read. A file someone else owns or could
/// read is refused.
///
/// The launcher and the agent may both make it at once: each writes its
/// own temporary file and links it into place, so the secret's path only
/// ever names a whole file and the first link wins.
pub fn secret(work_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = secret_path(work_dir);
    if let Some(dir) = path.parent() {
        strata_runtime::durable::create_dir_all(dir)?;
    }
    if !path.exists() {
        let draft = path.with_extension(format!(
            "secret.new-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&draft)?;
            let mut bytes = vec![0u8; SECRET_BYTES];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            Ok::<_, std::io::Error>(bytes)
        })();
        let linked = written.and_then(|bytes| std::fs::hard_link(&draft, &path).map(|()| bytes));
        let _ = std::fs::remove_file(&draft);
        match linked {
            Ok(bytes) => {
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                return Ok(bytes);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    let metadata = std::fs::symlink_metadata(&path)?;
    let me = rustix::process::geteuid().as_raw();
    if !metadata.is_file() || metadata.uid() != me || metadata.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a file of this user's that nobody else can read",
                path.display()
            ),
        ));
    }
    let bytes = strata_runtime::durable::read_bounded(&path, SECRET_BYTES as u64)?;
    if bytes.len() != SECRET_BYTES {
        // Not one this code wrote whole (it links only whole files):
        // the next launcher and agent make a new one.
        std::fs::remove_file(&path)?;
        return Err(std::io::Error::other(format!(
            "{} was incomplete and has been removed; try again",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn address(name: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

fn frame(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    codec::message_frame(message, MAX_MESSAGE_BYTES)
        .map(|frame| frame.to_vec())
        .map_err(std::io::Error::other)
}

/// Reads whole messages from a blocking stream.
struct Reader<R> {
    stream: R,
    decoder: FrameDecoder,
}

impl<R: Read> Reader<R> {
    fn new(stream: R) -> Self {
        Reader {
            stream,
            decoder: FrameDecoder::new(MAX_MESSAGE_BYTES),
        }
    }

    fn next(&mut self) -> std::io::Result<FromLauncher> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(body) = self.decoder.next_frame().map_err(std::io::Error::other)? {
                return codec::decode("launcher message", &body).map_err(std::io::Error::other);
            }
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.decoder.push(&chunk[..read]);
        }
    }
}

/// Reads whole messages from an async stream; `None` at its end.
async fn next_message<T: serde::de::DeserializeOwned>(
    stream: &mut (impl AsyncReadExt + Unpin),
    decoder: &mut FrameDecoder,
) -> std::io::Result<Option<T>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(body) = decoder.next_frame().map_err(std::io::Error::other)? {
            let message =
                codec::decode("launcher message", &body).map_err(std::io::Error::other)?;
            return Ok(Some(message));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            decoder.finish().map_err(std::io::Error::other)?;
            return Ok(None);
        }
        decoder.push(&chunk[..read]);
    }
}

// ---------------------------------------------------------------------
// The agent's side.

/// What the agent knows of its launcher's tasks.
#[derive(Default)]
struct Known {
    /// Tasks the launcher runs, as it said when the agent connected, and
    /// those started since.
    running: BTreeSet<i32>,
    /// Ends not yet claimed by [`Launcher::end_of`].
    ended: BTreeMap<i32, i32>,
    waiting: BTreeMap<i32, oneshot::Sender<std::io::Result<ExitStatus>>>,
    /// Why the launcher is lost, once it is.
    lost: Option<String>,
    /// The agent gave this connection up: its events are not reopened.
    given_up: bool,
}

struct Connection {
    requests: UnixStream,
    answers: Reader<UnixStream>,
    known: Arc<Mutex<Known>>,
    /// The events socket, read elsewhere: shut down when this connection
    /// is given up, so its reader ends and fails whoever waits.
    events: UnixStream,
}

impl Drop for Connection {
    fn drop(&mut self) {
        known(self).given_up = true;
        let _ = self.events.shutdown(std::net::Shutdown::Both);
    }
}

/// The agent's handle on its task launcher.
#[derive(Clone)]
pub struct Launcher {
    program: PathBuf,
    work_dir: PathBuf,
    connection: Arc<Mutex<Option<Connection>>>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl Launcher {
    /// Connects to the launcher of `work_dir`, starting `program` as one
    /// when none runs. Must be called within a tokio runtime: the events
    /// are read by a task on it.
    pub fn connect(program: &Path, work_dir: &Path) -> std::io::Result<Launcher> {
        let launcher = Launcher {
            program: program.to_owned(),
            // The launcher runs in `/`: it is told where, not how to get there.
            work_dir: std::path::absolute(work_dir)?,
            connection: Arc::new(Mutex::new(None)),
        };
        launcher.reconnect()?;
        Ok(launcher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reconnect(&self) -> std::io::Result<()> {
        let name = socket_name(&self.work_dir);
        let secret = secret(&self.work_dir)?;
        let mut attempt = 0;
        let connection = loop {
            match open(&name, &secret) {
                Ok(connection) => break connection,
                Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(error);
                }
                // A launcher leaving as this one arrived may still hold
                // the name for a moment.
                Err(error) if attempt == 3 => return Err(error),
                Err(_) => {
                    attempt += 1;
                    start_launcher(&self.program, &self.work_dir)?;
                    std::thread::sleep(Duration::from_millis(5 * (attempt - 1)));
                }
            }
        };
        *self.lock() = Some(connection);
        Ok(())
    }

    /// Starts `launch`; its pid (the leader of its own process group).
    pub fn launch(&self, launch: Launch) -> Result<i32, String> {
        let request = frame(&ToLauncher::Launch(Box::new(launch))).map_err(|e| e.to_string())?;
        let lost = self.lock().as_ref().is_none_or(|c| known(c).lost.is_some());
        if lost {
            self.reconnect()
                .map_err(|e| format!("cannot reach the task launcher: {e}"))?;
        }
        let mut guard = self.lock();
        let Some(connection) = guard.as_mut() else {
            return Err("no task launcher".into());
        };
        let answer = connection
            .requests
            .write_all(&request)
            .and_then(|()| connection.answers.next());
        let problem = match answer {
            // Never a group to signal: 1 would mean every process.
            Ok(FromLauncher::Launched { pid }) if pid > 1 => {
                let mut known = known(connection);
                if !known.ended.contains_key(&pid) {
                    known.running.insert(pid);
                }
                return Ok(pid);
            }
            Ok(FromLauncher::NotLaunched { message }) => return Err(message),
            Ok(other) => format!("the task launcher answered {other:?}"),
            Err(error) => format!("the task launcher did not answer: {error}"),
        };
        // Given up on: its tasks are lost with it (their waiters hear so
        // when its events end), and the next launch connects afresh.
        *guard = None;
        Err(problem)
    }

    /// Whether the launcher runs `pid` or holds its end.
    pub fn knows(&self, pid: i32) -> bool {
        self.lock().as_ref().is_some_and(|connection| {
            let known = known(connection);
            known.running.contains(&pid) || known.ended.contains_key(&pid)
        })
    }

    /// How the launcher's task `pid` ended, if it has ended already (it is
    /// then taken: [`Launcher::end_of`] no longer sees it). The launcher
    /// keeps it until told to [`Launcher::forget`] it.
    pub fn take_end(&self, pid: i32) -> Option<ExitStatus> {
        let status = self
            .lock()
            .as_ref()
            .and_then(|connection| known(connection).ended.remove(&pid))?;
        Some(ExitStatus::from_raw(status))
    }

    /// How the launcher's task `pid` ends; an error if the launcher is
    /// lost first (its tasks are then no one's to wait for). The launcher
    /// keeps the end until told to [`Launcher::forget`] it.
    pub fn end_of(
        &self,
        pid: i32,
    ) -> impl std::future::Future<Output = std::io::Result<ExitStatus>> + use<> {
        let (sender, receiver) = oneshot::channel();
        match self.lock().as_ref() {
            None => {
                let _ = sender.send(Err(std::io::Error::other("the task launcher is lost")));
            }
            Some(connection) => {
                let mut known = known(connection);
                if let Some(status) = known.ended.remove(&pid) {
                    let _ = sender.send(Ok(ExitStatus::from_raw(status)));
                } else if let Some(why) = &known.lost {
                    let _ = sender.send(Err(std::io::Error::other(why.clone())));
                } else {
                    known.waiting.insert(pid, sender);
                }
            }
        }
        async move {
            receiver
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the task launcher is lost")))
        }
    }

    /// Asks the launcher to signal the group of its task `pid`: it does
    /// so only while it has not reaped the task, so a recycled number is
    /// never signalled.
    pub fn signal(&self, pid: i32, signal: Signal) {
        let message = ToLauncher::Signal {
            pid,
            signal: signal.as_raw(),
        };
        if let (Some(connection), Ok(message)) = (self.lock().as_mut(), frame(&message)) {
            let _ = connection.requests.write_all(&message);
        }
    }

    /// Tells the launcher the end of `pid` is recorded: a restarted agent
    /// will not ask for it.
    pub fn forget(&self, pid: i32) {
        if let (Some(connection), Ok(message)) =
            (self.lock().as_mut(), frame(&ToLauncher::Forget { pid }))
        {
            let _ = connection.requests.write_all(&message);
        }
    }
}

fn known(connection: &Connection) -> std::sync::MutexGuard<'_, Known> {
    connection
        .known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connects to the launcher, which must run as this user: anyone can
/// bind a name in the abstract namespace.
fn connect(address: &SocketAddr) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect_addr(address)?;
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    if peer.uid != rustix::process::geteuid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the task launcher's socket is held by another user (uid {})",
                peer.uid.as_raw()
            ),
        ));
    }
    Ok(stream)
}

/// An events connection, its first message read: what runs, what ended.
struct Events {
    stream: UnixStream,
    decoder: FrameDecoder,
    running: Vec<i32>,
    ended: Vec<(i32, i32)>,
}

/// Opens an events connection.
fn open_events(address: &SocketAddr, secret: &[u8]) -> std::io::Result<Events> {
    let mut events = connect(address)?;
    events.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    events.write_all(&frame(&ToLauncher::Events {
        secret: secret.to_vec(),
    })?)?;
    let mut reader = Reader::new(events.try_clone()?);
    match reader.next()? {
        FromLauncher::Tasks { running, ended } => Ok(Events {
            stream: events,
            decoder: reader.decoder,
            running,
            ended,
        }),
        other => Err(std::io::Error::other(format!(
            "the task launcher began with {other:?}"
        ))),
    }
}

/// Opens both connections and starts reading events.
fn open(name: &str, secret: &[u8]) -> std::io::Result<Connection> {
    let address = address(name)?;
    let mut requests = connect(&address)?;
    requests.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    requests.write_all(&frame(&ToLauncher::Requests {
        secret: secret.to_vec(),
    })?)?;
    let events = open_events(&address, secret)?;
    let known = Arc::new(Mutex::new(Known {
        running: events.running.iter().copied().collect(),
        ended: events.ended.iter().copied().collect(),
        ..Known::default()
    }));
    let kept = events.stream.try_clone()?;
    let reading = ReadingEvents {
        address,
        secret: secret.to_vec(),
        known: known.clone(),
    };
    tokio::spawn(reading.run(events.stream, events.decoder));
    Ok(Connection {
        answers: Reader::new(requests.try_clone()?),
        requests,
        known,
        events: kept,
    })
}

/// How many times a lost events connection is opened again before the
/// launcher is taken as lost.
const EVENTS_REOPEN_ATTEMPTS: u32 = 5;

/// What reading a launcher's events needs to open them again.
struct ReadingEvents {
    address: SocketAddr,
    secret: Vec<u8>,
    known: Arc<Mutex<Known>>,
}

impl ReadingEvents {
    async fn run(self, first: UnixStream, decoder: FrameDecoder) {
        let mut current = Some((first, decoder));
        let why = loop {
            let Some((stream, decoder)) = current.take() else {
                break "the task launcher's events could not be opened again".to_owned();
            };
            let lost = match read_events(stream, decoder, &self.known).await {
                Ok(lost) => lost,
                Err(why) => break why,
            };
            let given_up = self
                .known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .given_up;
            if given_up {
                break format!("the agent gave the task launcher up ({lost})");
            }
            tracing::warn!(cause = %lost, "task launcher events lost; opening them again");
            for attempt in 0..EVENTS_REOPEN_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                if let Ok(events) = open_events(&self.address, &self.secret) {
                    self.resync(&events);
                    current = Some((events.stream, events.decoder));
                    break;
                }
            }
        };
        tracing::warn!(cause = %why, "task launcher lost; the tasks it ran are lost with it");
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, waiter) in std::mem::take(&mut known.waiting) {
            let _ = waiter.send(Err(std::io::Error::other(why.clone())));
        }
        known.lost = Some(why);
    }

    /// Takes in what a reopened events connection says: ends that came
    /// meanwhile go to their waiters; a waited-for task the launcher no
    /// longer knows is lost.
    fn resync(&self, events: &Events) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known.running = events.running.iter().copied().collect();
        for (pid, wait_status) in &events.ended {
            known.ended.insert(*pid, *wait_status);
        }
        let waiting: Vec<i32> = known.waiting.keys().copied().collect();
        for pid in waiting {
            if let Some(status) = known.ended.remove(&pid) {
                if let Some(waiter) = known.waiting.remove(&pid) {
                    let _ = waiter.send(Ok(ExitStatus::from_raw(status)));
                }
            } else if !known.running.contains(&pid)
                && let Some(waiter) = known.waiting.remove(&pid)
            {
                let _ = waiter.send(Err(std::io::Error::other(
                    "the task launcher no longer knows this task",
                )));
            }
        }
    }
}

/// Reads events until the connection ends: `Ok(why)` when it was lost
/// (open it again), `Err(why)` when it cannot be read at all.
async fn read_events(
    events: UnixStream,
    mut decoder: FrameDecoder,
    known: &Arc<Mutex<Known>>,
) -> Result<String, String> {
    let prepared = events
        .set_read_timeout(None)
        .and_then(|()| events.set_nonblocking(true))
        .and_then(|()| tokio::net::UnixStream::from_std(events));
    let mut events =
        prepared.map_err(|error| format!("cannot read the launcher's events: {error}"))?;
    loop {
        match next_message::<FromLauncher>(&mut events, &mut decoder).await {
            Ok(Some(FromLauncher::Ended { pid, wait_status })) => {
                let mut known = known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                known.running.remove(&pid);
                match known.waiting.remove(&pid) {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(ExitStatus::from_raw(wait_status)));
                    }
                    None => {
                        known.ended.insert(pid, wait_status);
                    }
                }
            }
            Ok(Some(other)) => {
                return Ok(format!("the task launcher sent {other:?} out of turn"));
            }
            Ok(None) => return Ok("the task launcher ended its events".to_owned()),
            Err(error) => return Ok(format!("the task launcher's events failed: {error}")),
        }
    }
}

/// Starts `program` as the launcher of `work_dir` and waits until it
/// listens (or finds another one already listening).
fn start_launcher(program: &Path, work_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(work_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work_dir.join("task-launcher.log"))?;
    let mut child = std::process::Command::new(program)
        .arg(SUBCOMMAND)
        .arg("--work-dir")
        .arg(work_dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Out of the agent's group: a terminal's Ctrl-C to the agent does
        // not reach it.
        .process_group(0)
        .spawn()?;
    let mut said = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut said);
    }
    // It stays running; a launcher that found another one exits at once.
    // Reaped here or never: it is re-parented when the agent goes.
    std::thread::spawn(move || child.wait());
    if said.trim() == "ready" || said.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the task launcher said {:?}",
            said.trim()
        )))
    }
}

// ---------------------------------------------------------------------
// The launcher's side.

/// Reads the launcher's arguments after the subcommand: `--work-dir DIR`.
pub fn parse_arguments(arguments: impl IntoIterator<Item = OsString>) -> Result<PathBuf, String> {
    let arguments: Vec<OsString> = arguments.into_iter().collect();
    match arguments.as_slice() {
        [flag, dir] if flag == "--work-dir" && !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => Err("usage: task-launcher --work-dir DIR".into()),
    }
}

/// Runs the launcher of the agent work directory `work_dir`; returns the
/// process's exit code. Prints `ready` on stdout once it listens.
pub fn run(work_dir: &Path) -> i32 {
    let name = socket_name(work_dir);
    let listener = match address(&name).and_then(|address| UnixListener::bind_addr(&address)) {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            // Another launcher serves this work directory.
            return 0;
        }
        Err(error) => {
            eprintln!("strata {SUBCOMMAND}: cannot listen on {name}: {error}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata {SUBCOMMAND}: cannot start: {error}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let work_dir = work_dir.to_owned();
        match serve(listener, &work_dir, UNCLAIMED_ENDS_KEPT, || {
            println!("ready");
            let _ = std::io::stdout().flush();
        })
        .await
        {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("strata {SUBCOMMAND}: {error}");
                1
            }
        }
    })
}

/// What the launcher's connections and children tell its loop.
enum Input {
    Message(u64, ToLauncher),
    Closed(u64),
    /// A child exited and is not reaped yet: its group id cannot be
    /// anyone else's until it is.
    Exited(i32, tokio::process::Child),
    /// Its exit cannot be watched through a pidfd: it can only be waited
    /// for, which reaps it.
    Unwatched(i32, tokio::process::Child),
    /// An unwatched child was reaped: its group's number may be someone
    /// else's by now.
    Reaped(i32, std::io::Result<ExitStatus>),
    /// The cgroup of a container whose agent went away is gone.
    Removed,
}

struct Child {
    /// The requests connection whose end kills it, if any.
    dies_with: Option<u64>,
    /// Its container's cgroup: removed here when the container ends after
    /// the agent that would have removed it went away.
    cgroup: Option<crate::cgroups::Cgroup>,
}

/// Serves on `listener` until nothing is left to serve (see the module
/// docs), or nobody is left to serve: no agent and no task, and `work_dir`
/// removed. `ready` runs once it accepts connections.
pub async fn serve(
    listener: UnixListener,
    work_dir: &Path,
    keep_unclaimed: Duration,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let me = rustix::process::geteuid().as_raw();
    ready();
    let (inputs, mut input) = mpsc::unbounded_channel::<Input>();
    // Each connection's messages go out through a queue of its own, so a
    // slow reader never holds up the answers to another.
    let mut writers: BTreeMap<u64, mpsc::UnboundedSender<FromLauncher>> = BTreeMap::new();
    let mut requests: BTreeSet<u64> = BTreeSet::new();
    // Connections that opened with the secret.
    let mut opened: BTreeSet<u64> = BTreeSet::new();
    let secret = secret(work_dir)?;
    let mut events: Option<u64> = None;
    let mut children: BTreeMap<i32, Child> = BTreeMap::new();
    // Children being waited for without a pidfd: no longer signalled.
    let mut unwatched: BTreeMap<i32, Child> = BTreeMap::new();
    let mut ended: BTreeMap<i32, i32> = BTreeMap::new();
    // Cgroups of orphaned containers being removed.
    let mut removing = 0usize;
    // The cgroups of containers that died with their agent and ended
    // before it went, until it takes note of their end: removed here if
    // it goes first.
    let mut unremoved: BTreeMap<i32, (u64, crate::cgroups::Cgroup)> = BTreeMap::new();
    let mut next_connection = 0u64;
    let mut served = false;
    let mut alone_since: Option<tokio::time::Instant> = None;
    loop {
        if served
            && requests.is_empty()
            && children.is_empty()
            && unwatched.is_empty()
            && ended.is_empty()
            && removing == 0
        {
            return Ok(());
        }
        let alone =
            requests.is_empty() && children.is_empty() && unwatched.is_empty() && removing == 0;
        if !alone {
            alone_since = None;
        }
        let lonely_until =
            *alone_since.get_or_insert_with(tokio::time::Instant::now) + keep_unclaimed;
        let idle = async {
            if !alone {
                return std::future::pending::<bool>().await;
            }
            // Checked each second: an agent's work directory removed means
            // nobody will come for the ends kept.
            tokio::time::sleep_until(
                lonely_until.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            )
            .await;
            tokio::time::Instant::now() >= lonely_until || !work_dir.exists()
        };
        let next = tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // Only this user's agent may start commands here.
                if !stream.peer_cred().is_ok_and(|peer| peer.uid() == me) {
                    continue;
                }
                next_connection += 1;
                let id = next_connection;
                let (mut read, mut write) = stream.into_split();
                let (queue, mut queued) = mpsc::unbounded_channel::<FromLauncher>();
                writers.insert(id, queue);
                tokio::spawn(async move {
                    while let Some(message) = queued.recv().await {
                        let Ok(bytes) = frame(&message) else { continue };
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                let inputs = inputs.clone();
                tokio::spawn(async move {
                    let mut decoder = FrameDecoder::new(MAX_MESSAGE_BYTES);
                    while let Ok(Some(message)) = next_message(&mut read, &mut decoder).await {
                        if inputs.send(Input::Message(id, message)).is_err() {
                            return;
                        }
                    }
                    let _ = inputs.send(Input::Closed(id));
                });
                continue;
            }
            next = input.recv() => next,
            leave = idle => {
                if leave {
                    return Ok(());
                }
                continue;
            }
        };
        let Some(next) = next else {
            return Ok(());
        };
        match next {
            Input::Message(id, ToLauncher::Requests { secret: offered })
            | Input::Message(id, ToLauncher::Events { secret: offered })
                if !same_secret(&offered, &secret) =>
            {
                tracing::warn!(
                    connection = id,
                    "a connection without the launcher's secret ignored"
                );
                writers.remove(&id);
            }
            Input::Message(id, ToLauncher::Requests { .. }) => {
                served = true;
                opened.insert(id);
                requests.insert(id);
            }
            Input::Message(id, ToLauncher::Events { .. }) => {
                opened.insert(id);
                if let Some(old) = events.replace(id) {
                    writers.remove(&old);
                }
                let tasks = FromLauncher::Tasks {
                    running: children.keys().copied().collect(),
                    ended: ended.iter().map(|(pid, status)| (*pid, *status)).collect(),
                };
                send(&writers, id, tasks);
            }
            // Nothing else is taken from a connection that did not open
            // with the secret.
            Input::Message(id, _) if !opened.contains(&id) => {
                writers.remove(&id);
            }
            Input::Message(id, ToLauncher::Launch(launch)) => {
                let dies_with = launch.dies_with_agent.then_some(id);
                let cgroup = launch.confinement.cgroup.clone();
                let answer = match start(*launch) {
                    Ok(child) => match child.id().and_then(|pid| i32::try_from(pid).ok()) {
                        Some(pid) => {
                            // A recycled pid's old end is not this one's.
                            ended.remove(&pid);
                            unremoved.remove(&pid);
                            children.insert(pid, Child { dies_with, cgroup });
                            let inputs = inputs.clone();
                            tokio::spawn(async move {
                                let exited = crate::command_executor::wait_for_exit(pid).await;
                                let input = match exited {
                                    Ok(()) => Input::Exited(pid, child),
                                    Err(_) => Input::Unwatched(pid, child),
                                };
                                let _ = inputs.send(input);
                            });
                            FromLauncher::Launched { pid }
                        }
                        None => FromLauncher::NotLaunched {
                            message: "the command ended before it could be tracked".into(),
                        },
                    },
                    Err(message) => FromLauncher::NotLaunched { message },
                };
                send(&writers, id, answer);
            }
            Input::Message(_, ToLauncher::Forget { pid }) => {
                ended.remove(&pid);
                unremoved.remove(&pid);
            }
            Input::Message(_, ToLauncher::Signal { pid, signal }) => {
                // Only an unreaped child's group is surely still its own.
                if children.contains_key(&pid)
                    && let Some(signal) = Signal::from_named_raw(signal)
                {
                    signal_group(pid, signal);
                }
            }
            Input::Closed(id) => {
                writers.remove(&id);
                opened.remove(&id);
                if events == Some(id) {
                    events = None;
                }
                if requests.remove(&id) {
                    for (pid, child) in &mut children {
                        if child.dies_with == Some(id) {
                            signal_group(*pid, Signal::KILL);
                        }
                    }
                    let gone: Vec<i32> = unremoved
                        .iter()
                        .filter(|(_, (connection, _))| *connection == id)
                        .map(|(pid, _)| *pid)
                        .collect();
                    for pid in gone {
                        if let Some((_, cgroup)) = unremoved.remove(&pid) {
                            removing += 1;
                            remove_later(cgroup, &inputs);
                        }
                    }
                }
            }
            Input::Removed => {
                removing = removing.saturating_sub(1);
            }
            Input::Unwatched(pid, mut child) => {
                // It leaves the children first, so no signal reaches its
                // number once it is reaped; then it is waited for.
                if let Some(record) = children.remove(&pid) {
                    unwatched.insert(pid, record);
                }
                let inputs = inputs.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let _ = inputs.send(Input::Reaped(pid, status));
                });
            }
            Input::Exited(..) | Input::Reaped(..) => {
                let (pid, status, child) = match next {
                    Input::Exited(pid, mut child) => {
                        // Nothing the task started outlives it: its group
                        // is killed while the exited leader still holds
                        // the group's number, then the leader is reaped.
                        signal_group(pid, Signal::KILL);
                        let status = child.try_wait().and_then(|status| {
                            status.ok_or_else(|| std::io::Error::other("the task had not exited"))
                        });
                        (pid, status, children.remove(&pid))
                    }
                    Input::Reaped(pid, status) => {
                        tracing::warn!(
                            pid,
                            "a task was reaped without a pidfd; what it left running is not killed"
                        );
                        (pid, status, unwatched.remove(&pid))
                    }
                    _ => continue,
                };
                let Some(child) = child else {
                    continue;
                };
                let wait_status = match status {
                    Ok(status) => status.into_raw(),
                    // Lost track of it: report it killed.
                    Err(_) => Signal::KILL.as_raw(),
                };
                let orphaned = child
                    .dies_with
                    .is_some_and(|connection| !requests.contains(&connection));
                if orphaned {
                    // Nobody will take note of its end or remove its
                    // cgroup but this launcher.
                    if let Some(cgroup) = child.cgroup {
                        removing += 1;
                        remove_later(cgroup, &inputs);
                    }
                    continue;
                }
                if let (Some(connection), Some(cgroup)) = (child.dies_with, child.cgroup) {
                    unremoved.insert(pid, (connection, cgroup));
                }
                ended.insert(pid, wait_status);
                if let Some(id) = events {
                    let message = FromLauncher::Ended { pid, wait_status };
                    send(&writers, id, message);
                }
            }
        }
    }
}

/// Kills what is left in `cgroup` and removes it, then says so.
fn remove_later(cgroup: crate::cgroups::Cgroup, inputs: &mpsc::UnboundedSender<Input>) {
    let inputs = inputs.clone();
    tokio::spawn(async move {
        crate::containerizer::remove_ended(cgroup).await;
        let _ = inputs.send(Input::Removed);
    });
}

fn send(
    writers: &BTreeMap<u64, mpsc::UnboundedSender<FromLauncher>>,
    id: u64,
    message: FromLauncher,
) {
    if let Some(writer) = writers.get(&id) {
        let _ = writer.send(message);
    }
}

fn start(launch: Launch) -> Result<tokio::process::Child, String> {
    let argv: Vec<OsString> = launch.argv.into_iter().map(OsString::from_vec).collect();
    let Some(program) = argv.first() else {
        return Err("the command names no executable".into());
    };
    // The files are in a sandbox its task's user may write in: never
    // follow a link planted there, never block on a FIFO, and take only
    // a regular file.
    let open = |path: &Path| {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.metadata() {
            Ok(metadata) if metadata.is_file() => Ok(file),
            _ => Err(format!("{} is not a regular file", path.display())),
        }
    };
    let (stdout, stderr) = (open(&launch.stdout)?, open(&launch.stderr)?);
    let environment = launch
        .environment
        .into_iter()
        .map(|(name, value)| (OsString::from_vec(name), OsString::from_vec(value)));
    spawn_in_group(
        &argv,
        environment,
        &launch.directory,
        stdout,
        stderr,
        launch.run_as.as_ref(),
        &launch.confinement,
    )
    .map_err(|e| format!("cannot start {:?}: {e}", program.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(command: &str, dir: &Path, dies_with_agent: bool) -> Launch {
        Launch {
            argv: ["/bin/sh", "-c", command]
                .iter()
                .map(|part| part.as_bytes().to_vec())
                .collect(),
            environment: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
            directory: dir.to_owned(),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            dies_with_agent,
            run_as: None,
            confinement: Default::default(),
        }
    }

    /// The launcher of `dir`, served on a thread of this test.
    fn serve_here(dir: &Path) -> std::thread::JoinHandle<()> {
        let name = socket_name(dir);
        let listener = UnixListener::bind_addr(&address(&name).unwrap()).unwrap();
        let dir = dir.to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(serve(listener, &dir, Duration::from_secs(5), || {}))
                .unwrap();
        })
    }

    /// Waits for process `pid` to end (through a pidfd), 20 s at most.
    async fn ends(pid: i32) {
        let exited = crate::command_executor::wait_for_exit(pid);
        tokio::time::timeout(Duration::from_secs(20), exited)
            .await
            .expect("the process ends within 20 s")
            .unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn tasks_end_known_to_a_later_connection() {
        let dir = scratch("launcher-ends");
        let name = socket_name(&dir);
        let served = serve_here(&dir);
        let first = Launcher {
            program: PathBuf::from("/nonexistent"),
            work_dir: dir.clone(),
            connection: Arc::new(Mutex::new(Some(
                open(&name, &secret(&dir).unwrap()).unwrap(),
            ))),
        };
        let quick = first
            .launch(launch("echo out; exit 3", &dir, false))
            .unwrap();
        assert_eq!(first.end_of(quick).await.unwrap().code(), Some(3));
        first.forget(quick);
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout")).unwrap(),
            "out\n"
        );
        let missing = first.launch(Launch {
            argv: vec![b"/no/such/program".to_vec()],
            ..launch("", &dir, false)
        });
        assert!(missing.unwrap_err().contains("/no/such/program"));

        // A task that ends while no agent is connected is told to the
        // next connection; one that dies with its agent is killed when
        // the agent's connection closes.
        let gate = dir.join("gate");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &gate,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let kept = first
            .launch(launch(
                &format!("read line < {}", gate.display()),
                &dir,
                false,
            ))
            .unwrap();
        let doomed = first.launch(launch("sleep 60", &dir, true)).unwrap();
        drop(first);
        ends(doomed).await;
        // Opening blocks until the task opens its end.
        std::fs::write(&gate, b"go\n").unwrap();
        ends(kept).await;
        let second = Launcher {
            program: PathBuf::from("/nonexistent"),
            work_dir: dir.clone(),
            connection: Arc::new(Mutex::new(Some(
                open(&name, &secret(&dir).unwrap()).unwrap(),
            ))),
        };
        // The launcher may still be reaping: the end comes as an event.
        assert_eq!(second.end_of(kept).await.unwrap().code(), Some(0));
        // Forgotten, with nobody and nothing left, the launcher leaves.
        second.forget(kept);
        assert!(!second.knows(doomed));
        drop(second);
        served.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The launcher and the agent make the secret at once: both read the
    /// same whole secret, never a file still being written.
    #[test]
    fn a_secret_made_by_many_at_once_is_one_whole_secret() {
        for round in 0..20 {
            let dir = scratch(&format!("launcher-secret-race-{round}"));
            let makers: Vec<_> = (0..4)
                .map(|_| {
                    let dir = dir.clone();
                    std::thread::spawn(move || secret(&dir))
                })
                .collect();
            let secrets: Vec<Vec<u8>> = makers
                .into_iter()
                .map(|maker| maker.join().unwrap().expect("every maker reads the secret"))
                .collect();
            assert_eq!(secrets[0].len(), SECRET_BYTES);
            assert!(secrets.iter().all(|made| *made == secrets[0]));
            let left: Vec<_> = std::fs::read_dir(dir.join("meta"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(left, vec![std::ffi::OsString::from("task-launcher.secret")]);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A process of the agent's user that opens the launcher's socket
    /// itself, with `secret`, asking for events: what a task could try.
    fn intruder(dir: &Path, secret: Vec<u8>) -> UnixStream {
        let mut stream = connect(&address(&socket_name(dir)).unwrap()).unwrap();
        stream
            .write_all(&frame(&ToLauncher::Events { secret }).unwrap())
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn only_the_secret_opens_the_launcher_and_lost_events_are_reopened() {
        let dir = scratch("launcher-secret");
        let served = serve_here(&dir);
        let agent = Launcher {
            program: PathBuf::from("/nonexistent"),
            work_dir: dir.clone(),
            connection: Arc::new(Mutex::new(Some(
                open(&socket_name(&dir), &secret(&dir).unwrap()).unwrap(),
            ))),
        };
        let mode = std::fs::metadata(secret_path(&dir)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let pid = agent
            .launch(launch("sleep 0.5; exit 4", &dir, false))
            .unwrap();
        let ending = agent.end_of(pid);
        // Without the secret: ignored, and it cannot launch either.
        let mut guesser = intruder(&dir, vec![0; SECRET_BYTES]);
        guesser
            .write_all(
                &frame(&ToLauncher::Launch(Box::new(launch(
                    "touch pwned",
                    &dir,
                    false,
                ))))
                .unwrap(),
            )
            .unwrap();
        // With it (as a task that could read the agent's files would):
        // the launcher hands it the events, and the agent takes them back.
        let _thief = intruder(&dir, secret(&dir).unwrap());
        let status = tokio::time::timeout(Duration::from_secs(20), ending)
            .await
            .expect("the end arrives");
        assert_eq!(status.unwrap().code(), Some(4));
        assert!(!dir.join("pwned").exists());
        agent.forget(pid);
        drop(guesser);
        drop(agent);
        let _ = tokio::task::spawn_blocking(move || served.join()).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The launcher signals a group only while its leader is a child it
    /// has not reaped: a number that was its task's and is now someone
    /// else's group is left alone.
    #[tokio::test]
    async fn groups_are_signalled_only_before_their_leader_is_reaped() {
        let dir = scratch("launcher-signals");
        let served = serve_here(&dir);
        let agent = Launcher {
            program: PathBuf::from("/nonexistent"),
            work_dir: dir.clone(),
            connection: Arc::new(Mutex::new(Some(
                open(&socket_name(&dir), &secret(&dir).unwrap()).unwrap(),
            ))),
        };
        let quick = agent.launch(launch("exit 0", &dir, false)).unwrap();
        agent.end_of(quick).await.unwrap();
        // A group the launcher never started, standing in for a reaped
        // task's number given to another process.
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let stranger_pid = i32::try_from(stranger.id()).unwrap();
        agent.signal(stranger_pid, Signal::KILL);
        agent.signal(quick, Signal::KILL);
        // Its own running task is signalled.
        let running = agent.launch(launch("exec sleep 30", &dir, false)).unwrap();
        agent.signal(running, Signal::KILL);
        let status = tokio::time::timeout(Duration::from_secs(20), agent.end_of(running))
            .await
            .expect("the killed task ends")
            .unwrap();
        assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "a stranger's group was signalled"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
        agent.forget(quick);
        agent.forget(running);
        drop(agent);
        let _ = tokio::task::spawn_blocking(move || served.join()).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_launcher_with_nothing_to_do_leaves() {
        // Ends nobody collects are dropped once the work directory goes.
        let dir = scratch("launcher-leaves");
        let served = serve_here(&dir);
        let launcher = Launcher {
            program: PathBuf::from("/nonexistent"),
            work_dir: dir.clone(),
            connection: Arc::new(Mutex::new(Some(
                open(&socket_name(&dir), &secret(&dir).unwrap()).unwrap(),
            ))),
        };
        let pid = launcher.launch(launch("true", &dir, false)).unwrap();
        drop(launcher);
        ends(pid).await;
        std::fs::remove_dir_all(&dir).unwrap();
        served.join().unwrap();
    }

    #[test]
    fn arguments_are_checked() {
        let parse = |args: &[&str]| parse_arguments(args.iter().map(OsString::from));
        assert_eq!(
            parse(&["--work-dir", "/a b"]).unwrap(),
            PathBuf::from("/a b")
        );
        assert!(parse(&["--work-dir", ""]).is_err());
        assert!(parse(&["--work-dir"]).is_err());
        assert!(parse(&[]).is_err());
    }
}
