//! What operators see of an agent: `/health`, `/state`, `/metrics`,
//! `/monitor/statistics`, and its sandboxes' files.
//!
//! Like the master, the agent publishes a [`State`] snapshot (every usage
//! sample, each second) and the endpoints serve the latest one. The file
//! endpoints read sandboxes directly: `path` is relative to the agent's
//! sandbox root, `<work>/agents/<agent>/` (the part of a sandbox path
//! after it, as `/state` gives each task's `sandbox`). Absolute paths, any
//! `..` component, symbolic links that lead out of the root and a last
//! component that is a link are refused with 403, anything but a regular
//! file is refused for reading ([`open_confined`]); reads are at most
//! [`MAX_READ`] bytes and run off the agent's thread.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use std::sync::Arc;

use serde::Serialize;
use strata_api::metrics::Metric;
use strata_runtime::http::{Request, Response, SharedJson};
use tokio::sync::watch;

/// Most bytes one `/files/read` returns.
pub const MAX_READ: u64 = 1 << 20;

/// An agent at one moment: the typed view every reader shares.
pub type State = strata_api::views::AgentState;

/// Where the agent publishes its snapshots.
pub type Publisher = Arc<watch::Sender<Option<Arc<State>>>>;

/// A publisher and the receiving end [`routes`] reads.
pub fn channel() -> (Publisher, watch::Receiver<Option<Arc<State>>>) {
    let (sender, receiver) = watch::channel(None);
    (Arc::new(sender), receiver)
}

/// Why a sandbox path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRefusal {
    /// 400: not a relative path of normal components, or not the kind of
    /// file asked for.
    Malformed(String),
    /// 403: it leads out of the sandbox root, or ends in a symbolic link.
    Outside,
    /// 404: nothing there.
    Missing,
    /// 403: an executor's credentials (its `.tls` folder), which only the
    /// executor itself reads.
    Private,
}

/// The folder of an executor's sandbox holding its certificate and key.
pub const CREDENTIALS_DIR: &str = ".tls";

/// What [`open_confined`] is to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

/// Opens `path` (relative to `root`) inside `root`, in one step the
/// kernel checks (`openat2` with `RESOLVE_BENEATH`): a symbolic link on
/// the way may not lead out of the root, the last component is never
/// followed (`O_NOFOLLOW`), and the open never blocks (`O_NONBLOCK`: a
/// FIFO a task left in its sandbox opens at once and is then refused as
/// not a regular file). A task swapping components for links while the
/// agent reads cannot make it open anything outside.
pub fn open_confined(root: &Path, path: &str, kind: Kind) -> Result<std::fs::File, PathRefusal> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let relative = Path::new(path);
    if relative.is_absolute() {
        return Err(PathRefusal::Malformed(
            "the path must be relative to the sandbox root".into(),
        ));
    }
    for component in relative.components() {
        match component {
            Component::Normal(name) if name == CREDENTIALS_DIR => {
                return Err(PathRefusal::Private);
            }
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(PathRefusal::Outside),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathRefusal::Malformed("the path must be relative".into()));
            }
        }
    }
    let root = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| PathRefusal::Missing)?;
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if kind == Kind::Directory {
        flags |= OFlags::DIRECTORY;
    }
    let target = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let fd = rustix::fs::openat2(
        &root,
        target,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|error| match error {
        rustix::io::Errno::XDEV => PathRefusal::Outside,
        rustix::io::Errno::LOOP => PathRefusal::Outside,
        rustix::io::Errno::NOTDIR => PathRefusal::Malformed("not a directory".into()),
        _ => PathRefusal::Missing,
    })?;
    let file = std::fs::File::from(fd);
    let metadata = file.metadata().map_err(|_| PathRefusal::Missing)?;
    match kind {
        Kind::File if !metadata.file_type().is_file() => Err(PathRefusal::Malformed(
            "not a regular file (only sandbox files are served)".into(),
        )),
        _ => Ok(file),
    }
}

fn refused(refusal: PathRefusal) -> Response {
    match refusal {
        PathRefusal::Malformed(why) => Response::error(400, &why),
        PathRefusal::Outside => Response::error(
            403,
            "the path leads out of the sandboxes or ends in a symbolic link",
        ),
        PathRefusal::Missing => Response::error(404, "no such file or directory"),
        PathRefusal::Private => Response::error(403, "an executor's credentials are not served"),
    }
}

#[derive(Serialize)]
struct Entry {
    path: String,
    is_dir: bool,
    size: u64,
    mtime_ms: u64,
}

/// Most entries one `/files/browse` lists.
pub const MAX_ENTRIES: usize = 10_000;

fn browse(root: &Path, path: &str) -> Response {
    let dir = match open_confined(root, path, Kind::Directory) {
        Ok(dir) => dir,
        Err(refusal) => return refused(refusal),
    };
    let Ok(listing) = rustix::fs::Dir::read_from(&dir) else {
        return Response::error(400, "not a readable directory");
    };
    let mut entries = Vec::new();
    for entry in listing.flatten() {
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") || name.to_bytes() == CREDENTIALS_DIR.as_bytes()
        {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            break;
        }
        // Entries are looked at, never followed.
        let Ok(stat) = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let name = String::from_utf8_lossy(name.to_bytes()).into_owned();
        let relative = Path::new(path).join(&name);
        let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        entries.push(Entry {
            path: relative.to_string_lossy().into_owned(),
            is_dir: file_type == rustix::fs::FileType::Directory,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_ms: u64::try_from(stat.st_mtime).unwrap_or(0) * 1000
                + stat.st_mtime_nsec / 1_000_000,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    match serde_json::to_vec(&entries) {
        Ok(body) => Response::json(body),
        Err(error) => Response::error(500, &error.to_string()),
    }
}

#[derive(Serialize)]
struct Chunk {
    /// Where the data starts; with `offset=-1`, the file's size.
    offset: u64,
    /// How many bytes of the file `data` holds (it is UTF-8, with invalid
    /// sequences replaced, so it may be longer).
    length: u64,
    data: String,
}

fn read(root: &Path, request: &Request) -> Response {
    let Some(path) = request.param("path") else {
        return Response::error(400, "path is required");
    };
    let mut handle = match open_confined(root, path, Kind::File) {
        Ok(file) => file,
        Err(refusal) => return refused(refusal),
    };
    let number = |name: &str, default: i64| -> Result<i64, Response> {
        match request.param(name) {
            None | Some("") => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| Response::error(400, &format!("{name} must be a number"))),
        }
    };
    let (offset, length) = match (number("offset", 0), number("length", MAX_READ as i64)) {
        (Ok(offset), Ok(length)) => (offset, length),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let size = handle.metadata().map(|meta| meta.len()).unwrap_or(0);
    if offset == -1 {
        return chunk_response(Chunk {
            offset: size,
            length: 0,
            data: String::new(),
        });
    }
    let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
        return Response::error(
            400,
            "offset and length must not be negative (offset -1: the size)",
        );
    };
    let length = length.min(MAX_READ);
    let mut data = Vec::new();
    let read = handle
        .seek(SeekFrom::Start(offset.min(size)))
        .and_then(|_| handle.take(length).read_to_end(&mut data));
    if read.is_err() {
        return Response::error(400, "not a readable file");
    }
    chunk_response(Chunk {
        offset,
        length: data.len() as u64,
        data: String::from_utf8_lossy(&data).into_owned(),
    })
}

fn chunk_response(chunk: Chunk) -> Response {
    match serde_json::to_vec(&chunk) {
        Ok(body) => Response::json(body),
        Err(error) => Response::error(500, &error.to_string()),
    }
}

#[derive(Serialize)]
struct Statistics<'a> {
    framework_id: &'a str,
    executor_id: &'a str,
    statistics: StatisticsValues,
}

#[derive(Serialize)]
struct StatisticsValues {
    #[serde(flatten)]
    usage: strata_api::views::Usage,
    cpus_limit: f64,
    mem_limit_bytes: u64,
}

fn statistics(state: &State) -> Response {
    let rows: Vec<Statistics<'_>> = state
        .tasks
        .iter()
        .filter_map(|task| {
            Some(Statistics {
                framework_id: task.framework_id.as_str(),
                executor_id: task.id.as_str(),
                statistics: StatisticsValues {
                    usage: task.usage?,
                    cpus_limit: task.resources.cpus().as_f64(),
                    mem_limit_bytes: (task.resources.mem_mb().as_f64() * 1024.0 * 1024.0) as u64,
                },
            })
        })
        .collect();
    match serde_json::to_vec(&rows) {
        Ok(body) => Response::json(body),
        Err(error) => Response::error(500, &error.to_string()),
    }
}

/// The agent's metrics, by Apache Mesos's names (`slave/…`; Strata's own
/// in that style).
pub fn metrics(state: &State) -> Vec<Metric> {
    let running = state
        .tasks
        .iter()
        .filter(|task| task.state == strata_protocol::TaskState::Running)
        .count();
    let scalar =
        |resources: &strata_protocol::Resources, name: &str| resources.scalar_total(name).as_f64();
    // A figure summed over the tasks that have it.
    let total = |figure: fn(&strata_api::views::Usage) -> Option<f64>| -> f64 {
        state
            .tasks
            .iter()
            .filter_map(|task| figure(task.usage.as_ref()?))
            .sum()
    };
    vec![
        Metric::gauge("slave/registered", f64::from(u8::from(state.registered))),
        Metric::gauge("slave/tasks_running", running as f64),
        Metric::gauge("slave/tasks", state.tasks.len() as f64),
        Metric::gauge("slave/executors", state.executors.len() as f64),
        Metric::gauge(
            "slave/unacknowledged_updates",
            state.unacknowledged_updates as f64,
        ),
        Metric::gauge("slave/cpus_total", scalar(&state.total, "cpus")),
        Metric::gauge("slave/cpus_used", scalar(&state.allocated, "cpus")),
        Metric::gauge("slave/mem_total", scalar(&state.total, "mem")),
        Metric::gauge("slave/mem_used", scalar(&state.allocated, "mem")),
        // What the running tasks use, from the kernel with cgroups.
        Metric::gauge(
            "slave/tasks_cpus_time_secs",
            total(|u| Some(u.cpus_time_secs)),
        ),
        Metric::gauge(
            "slave/tasks_cpus_throttled_time_secs",
            total(|u| u.cpus_throttled_time_secs),
        ),
        Metric::gauge(
            "slave/tasks_mem_rss_bytes",
            total(|u| Some(u.mem_rss_bytes as f64)),
        ),
        Metric::gauge(
            "slave/tasks_mem_total_bytes",
            total(|u| u.mem_total_bytes.map(|bytes| bytes as f64)),
        ),
        Metric::gauge(
            "slave/tasks_mem_oom_kills",
            total(|u| u.mem_oom_kills.map(|kills| kills as f64)),
        ),
        Metric::gauge("slave/disk_total", scalar(&state.total, "disk")),
        Metric::gauge("slave/disk_used", scalar(&state.allocated, "disk")),
    ]
}

/// Endpoints served without credentials when the agent asks for them:
/// they reveal no task data.
pub const PUBLIC_PATHS: &[&str] = &["/health", "/version", "/metrics", "/metrics/snapshot"];

/// The agent's HTTP endpoints, over its latest snapshot.
pub fn routes(
    snapshots: watch::Receiver<Option<Arc<State>>>,
) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let serialized = SharedJson::default();
    move |request: &Request| {
        if request.method == "POST" {
            return Response::error(405, "these endpoints answer GET and HEAD");
        }
        let Some(state) = snapshots.borrow().clone() else {
            return Response::error(503, "the agent is starting");
        };
        let root = state.sandbox_root.as_deref();
        match (request.path.as_str(), root) {
            ("/health", _) => Response::text("text/plain", "ok\n"),
            ("/version", _) => strata_runtime::http::version(),
            ("/state", _) => serialized.answer(&state),
            ("/metrics", _) => Response::text(
                strata_api::metrics::PROMETHEUS_CONTENT_TYPE,
                strata_api::metrics::prometheus(&metrics(&state)),
            ),
            ("/metrics/snapshot", _) => {
                Response::json(strata_api::metrics::snapshot(&metrics(&state)))
            }
            ("/monitor/statistics", _) => statistics(&state),
            ("/files/browse" | "/files/read", None) => {
                Response::error(404, "this agent has no sandboxes (tasks run in-process)")
            }
            ("/files/browse", Some(root)) => browse(root, request.param("path").unwrap_or("")),
            ("/files/read", Some(root)) => read(root, request),
            _ => Response::error(404, "no such endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_sandbox_root() {
        let dir = std::env::temp_dir().join(format!("strata-confine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("f/run")).unwrap();
        std::fs::write(root.join("f/run/stdout"), b"hi").unwrap();
        std::fs::write(dir.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("f/run/escape")).unwrap();
        std::os::unix::fs::symlink(root.join("f/run/stdout"), root.join("f/run/inside")).unwrap();
        std::os::unix::fs::symlink(&dir, root.join("f/up")).unwrap();
        std::os::unix::fs::symlink("run", root.join("f/alias")).unwrap();
        let open = |path: &str| open_confined(&root, path, Kind::File).map(|_| ());
        assert_eq!(open("f/run/stdout"), Ok(()));
        assert_eq!(open("f/run/escape"), Err(PathRefusal::Outside));
        assert_eq!(
            open("f/run/inside"),
            Err(PathRefusal::Outside),
            "never follows the last link"
        );
        assert_eq!(open("f/up/secret"), Err(PathRefusal::Outside));
        assert_eq!(
            open("f/alias/stdout"),
            Ok(()),
            "a link on the way that stays inside"
        );
        assert_eq!(open("f/../../secret"), Err(PathRefusal::Outside));
        assert_eq!(open("f/nothing"), Err(PathRefusal::Missing));
        assert!(matches!(
            open("/etc/passwd"),
            Err(PathRefusal::Malformed(_))
        ));
        assert!(
            matches!(open("f/run"), Err(PathRefusal::Malformed(_))),
            "a directory"
        );
        assert!(open_confined(&root, "f", Kind::Directory).is_ok());
        assert!(open_confined(&root, "", Kind::Directory).is_ok());
        std::fs::create_dir_all(root.join("f/run/.tls")).unwrap();
        std::fs::write(root.join("f/run/.tls/node-key.pem"), b"key").unwrap();
        assert_eq!(open("f/run/.tls/node-key.pem"), Err(PathRefusal::Private));
        assert_eq!(
            open_confined(&root, "f/run/.tls", Kind::Directory).map(|_| ()),
            Err(PathRefusal::Private)
        );
        let listing = String::from_utf8(browse(&root, "f/run").body.to_vec()).unwrap();
        assert!(!listing.contains(".tls"), "{listing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("strata-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // No writer: a blocking open would wait for ever.
        let refusal = open_confined(&dir, "fifo", Kind::File).unwrap_err();
        assert!(matches!(refusal, PathRefusal::Malformed(_)), "{refusal:?}");
        let request = Request {
            method: "GET".into(),
            path: "/files/read".into(),
            query: vec![("path".into(), "fifo".into())],
            ..Request::default()
        };
        assert_eq!(read(&dir, &request).status, 400);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
