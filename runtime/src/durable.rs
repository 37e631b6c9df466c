//! Small files that must survive a crash whole: agents' checkpoints and
//! the master's registry.
//!
//! [`write_atomically`] writes to a temporary file beside the target,
//! syncs it, renames it over the target and syncs the directory, so after
//! a crash at any point the file holds either the old contents or the new
//! ones, never a torn mix. [`read_bounded`] refuses files larger than the
//! caller expects before reading them, so a corrupt or hostile file cannot
//! make the reader allocate without limit.
//!
//! What keeps such files (the master's registry, an agent's checkpoints)
//! is given a [`Disk`]: the real one, or in simulations a [`SimDisk`] that
//! keeps what is written in memory, shared by every incarnation of the
//! simulated node that owns it. A write returns only once it is durable,
//! so a simulated crash (which can only happen between two steps of the
//! single-threaded simulation) keeps every completed write and nothing
//! else, which is what the real disk promises. The free functions are
//! the real disk's.
//!
//! A file written from more than one thread (the master's registry,
//! written in the background, by a master that its supervisor may have
//! replaced while a write was under way) is written with a
//! [`WriteTicket`], taken when the write is decided: each such write has
//! a temporary file of its own, they are put in place one at a time, and
//! one whose ticket is older than a write already put in place is refused
//! rather than landing over newer contents.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// An in-memory disk for simulated nodes. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
}

impl SimDisk {
    /// Every file on the disk, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().keys().cloned().collect()
    }

    /// Removes everything (a disk replaced by an empty one).
    pub fn wipe(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Vec<u8>>> {
        self.files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where durable files go: the real disk (the default) or a simulated
/// one. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    simulated: Option<SimDisk>,
}

impl Disk {
    /// The machine's disk.
    pub fn real() -> Disk {
        Disk::default()
    }

    /// A simulated disk.
    pub fn simulated(disk: &SimDisk) -> Disk {
        Disk {
            simulated: Some(disk.clone()),
        }
    }

    /// Whether this is a simulated disk.
    pub fn is_simulated(&self) -> bool {
        self.simulated.is_some()
    }

    /// [`write_atomically`] on this disk.
    pub fn write_atomically(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        match &self.simulated {
            Some(disk) => {
                disk.lock().insert(path.to_owned(), contents.to_vec());
                Ok(())
            }
            None => write_atomically(path, contents),
        }
    }

    /// A place in the order of this process's writes to `path`, taken
    /// now, for [`Disk::write_in_order`].
    pub fn ticket(&self, path: &Path) -> WriteTicket {
        let order = match &self.simulated {
            // A simulation writes where it decides to, in order.
            Some(_) => None,
            None => {
                let mut orders = file_orders()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Some(orders.entry(path.to_owned()).or_default().clone())
            }
        };
        let number = order.as_ref().map_or(0, |order| {
            order
                .taken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1
        });
        WriteTicket {
            path: path.to_owned(),
            number,
            order,
        }
    }

    /// [`Disk::write_atomically`] to the ticket's path, refused (and the
    /// file left as it is) if a write with a later ticket was put in
    /// place already. The contents go to a temporary file of the ticket's
    /// own and are synced first; only putting it in place (the rename and
    /// the directory's sync) waits for another write of the file in this
    /// process to be put in place, so a write that hangs on its data
    /// holds back no other.
    pub fn write_in_order(&self, ticket: WriteTicket, contents: &[u8]) -> io::Result<()> {
        let Some(order) = &ticket.order else {
            return self.write_atomically(&ticket.path, contents);
        };
        let aside = write_aside(&ticket.path, &format!("tmp.{}", ticket.number), contents)?;
        let mut written = order
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written > ticket.number {
            drop(written);
            let _ = fs::remove_file(&aside);
            return Err(io::Error::other(format!(
                "{} was written by a later write already; this one is out of date",
                ticket.path.display()
            )));
        }
        // Set first: a rename that happened before its directory's sync
        // failed holds this write's contents, which no older one may
        // replace.
        *written = ticket.number;
        put_in_place(&aside, &ticket.path)
    }

    /// [`read_bounded`] on this disk.
    pub fn read_bounded(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let Some(disk) = &self.simulated else {
            return read_bounded(path, limit);
        };
        let files = disk.lock();
        let bytes = files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} bytes is more than the {limit} this file may hold",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes.clone())
    }

    /// [`remove_if_present`] on this disk.
    pub fn remove_if_present(&self, path: &Path) -> io::Result<()> {
        match &self.simulated {
            Some(disk) => {
                disk.lock().remove(path);
                Ok(())
            }
            None => remove_if_present(path),
        }
    }

    /// [`list_dirs`] on this disk.
    pub fn list_dirs(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let Some(disk) = &self.simulated else {
            return list_dirs(dir);
        };
        // Directories are implied by the files under them.
        let mut found: Vec<PathBuf> = disk
            .lock()
            .keys()
            .filter_map(|path| {
                let rest = path.strip_prefix(dir).ok()?;
                let mut parts = rest.components();
                let first = parts.next()?;
                parts.next()?;
                Some(dir.join(first))
            })
            .collect();
        found.dedup();
        Ok(found)
    }

    /// Whether a file is at `path` on this disk.
    pub fn exists(&self, path: &Path) -> bool {
        match &self.simulated {
            Some(disk) => disk.lock().contains_key(path),
            None => path.exists(),
        }
    }

    /// [`remove_dir_all`] on this disk.
    pub fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match &self.simulated {
            Some(disk) => {
                disk.lock().retain(|path, _| !path.starts_with(dir));
                Ok(())
            }
            None => remove_dir_all(dir),
        }
    }

    /// Removes a directory if it is empty (a simulated disk has no empty
    /// directories); anything else is left as it is.
    pub fn remove_empty_dir(&self, dir: &Path) {
        if self.simulated.is_none() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Creates `dir` and its missing parents durably: each new directory's
/// entry is fsynced in its parent, so a crash cannot lose a directory
/// whose files were themselves synced.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    create_dir_all_syncing(dir, &mut |parent| fs::File::open(parent)?.sync_all())
}

/// [`create_dir_all`] with the directory sync passed in, for tests.
fn create_dir_all_syncing(
    dir: &Path,
    sync: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => {}
            // Another process made it meanwhile: it syncs it.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => continue,
            Err(error) => return Err(error),
        }
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync(parent)?;
    }
    Ok(())
}

/// A place in the order of one process's writes to one file; see
/// [`Disk::ticket`].
#[derive(Debug)]
pub struct WriteTicket {
    path: PathBuf,
    number: u64,
    order: Option<Arc<FileOrder>>,
}

impl WriteTicket {
    /// The file it is a place in the order of.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writes of one file in this process: tickets taken, and the ticket
/// of the last write put in place (its lock is held while one is).
#[derive(Debug, Default)]
struct FileOrder {
    taken: std::sync::atomic::AtomicU64,
    written: Mutex<u64>,
}

/// Every file written with tickets in this process (a few: each master's
/// registry).
fn file_orders() -> &'static Mutex<HashMap<PathBuf, Arc<FileOrder>>> {
    static ORDERS: OnceLock<Mutex<HashMap<PathBuf, Arc<FileOrder>>>> = OnceLock::new();
    ORDERS.get_or_init(Mutex::default)
}

/// Writes `contents` to `path` atomically and durably, creating the
/// parent directories.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let aside = write_aside(path, "tmp", contents)?;
    put_in_place(&aside, path)
}

/// Writes and syncs `contents` to a temporary file beside `path` (its
/// name and `.{suffix}`), creating the parent directories; its path. A
/// write that fails takes its temporary file away again (a full disk
/// retried is not filled further by each try's part).
fn write_aside(path: &Path, suffix: &str, contents: &[u8]) -> io::Result<PathBuf> {
    create_dir_all(parent_of(path)?)?;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".");
    aside.push(suffix);
    let aside = PathBuf::from(aside);
    let written = fs::File::create(&aside).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(aside),
        Err(error) => {
            let _ = fs::remove_file(&aside);
            Err(error)
        }
    }
}

/// Renames `aside` over `path` and syncs the directory; `aside` is taken
/// away if it was not renamed.
fn put_in_place(aside: &Path, path: &Path) -> io::Result<()> {
    if let Err(error) = fs::rename(aside, path) {
        let _ = fs::remove_file(aside);
        return Err(error);
    }
    fs::File::open(parent_of(path)?)?.sync_all()
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))
}

/// Reads `path` whole if it holds at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes is more than the {limit} this file may hold"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow after the size check; read no more than allowed.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than the {limit} bytes this file may hold"),
        ));
    }
    Ok(bytes)
}

/// Takes an exclusive lock on `path` (created with its directories if
/// absent), held for as long as the returned file is open; `Ok(None)`
/// when another process holds it. Work directories are locked this way
/// so two daemons never share one.
pub fn lock_exclusive(path: &Path) -> io::Result<Option<fs::File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Removes a file; one that is already gone is no error.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// The directories directly in `dir`, sorted; none if `dir` is absent.
pub fn list_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error),
        Ok(listing) => {
            let mut found: Vec<PathBuf> = listing
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect();
            found.sort();
            Ok(found)
        }
    }
}

/// Removes a directory and everything in it; an absent one is no error.
pub fn remove_dir_all(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_disk_keeps_writes_in_memory() {
        let root = Path::new("/sim/durable-test");
        let file = root.join("meta/registry.json");
        let simulated = SimDisk::default();
        let disk = Disk::simulated(&simulated);
        disk.write_atomically(&file, b"one").unwrap();
        disk.write_atomically(&file, b"two").unwrap();
        assert_eq!(disk.read_bounded(&file, 16).unwrap(), b"two");
        assert!(disk.read_bounded(&file, 2).is_err());
        assert!(!file.exists(), "nothing reaches the real disk");
        assert!(read_bounded(&file, 16).is_err());
        assert_eq!(simulated.paths(), vec![file.clone()]);
        disk.remove_if_present(&file).unwrap();
        assert_eq!(
            disk.read_bounded(&file, 16).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Directories are implied by files; removing one removes them.
        disk.write_atomically(&root.join("a/x/f"), b"1").unwrap();
        disk.write_atomically(&root.join("a/y/g"), b"2").unwrap();
        disk.write_atomically(&root.join("a/top"), b"3").unwrap();
        assert_eq!(
            disk.list_dirs(&root.join("a")).unwrap(),
            vec![root.join("a/x"), root.join("a/y")]
        );
        assert!(disk.exists(&root.join("a/top")));
        disk.remove_dir_all(&root.join("a/x")).unwrap();
        assert_eq!(
            disk.list_dirs(&root.join("a")).unwrap(),
            vec![root.join("a/y")]
        );
        assert_eq!(simulated.paths().len(), 2);
        // A clone shares the disk; wiping empties it.
        Disk::simulated(&simulated.clone())
            .remove_dir_all(root)
            .unwrap();
        assert!(simulated.paths().is_empty());
    }

    #[test]
    fn new_directories_are_synced_in_their_parents() {
        let root = std::env::temp_dir().join(format!("strata-durable-dirs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let mut synced = Vec::new();
        let dir = root.join("a/b/c");
        create_dir_all_syncing(&dir, &mut |parent| {
            synced.push(parent.to_owned());
            Ok(())
        })
        .unwrap();
        assert!(dir.is_dir());
        assert_eq!(synced, vec![root.clone(), root.join("a"), root.join("a/b")]);
        synced.clear();
        create_dir_all_syncing(&dir, &mut |parent| {
            synced.push(parent.to_owned());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_write_older_than_one_made_is_refused_and_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("strata-ordered-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("registry.json");
        let disk = Disk::real();
        let (first, second, third) = (disk.ticket(&path), disk.ticket(&path), disk.ticket(&path));
        disk.write_in_order(second, b"second").unwrap();
        let refused = disk.write_in_order(first, b"first").unwrap_err();
        assert!(refused.to_string().contains("out of date"), "{refused}");
        assert_eq!(read_bounded(&path, 100).unwrap(), b"second");
        disk.write_in_order(third, b"third").unwrap();
        assert_eq!(read_bounded(&path, 100).unwrap(), b"third");
        // Another file keeps an order of its own: its ticket, taken
        // before a later one of the first file, still writes after it.
        let other = dir.join("other.json");
        let (early, later) = (disk.ticket(&other), disk.ticket(&path));
        disk.write_in_order(later, b"fourth").unwrap();
        disk.write_in_order(early, b"other").unwrap();
        assert_eq!(read_bounded(&other, 100).unwrap(), b"other");
        // One that cannot be put in place (the file is a directory) fails.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(disk.write_in_order(disk.ticket(&blocked), b"x").is_err());
        fs::remove_dir_all(&blocked).unwrap();
        // No write leaves its temporary file behind, refused, failed or
        // not.
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["other.json", "registry.json"]);
        // A simulated disk writes in the order it is asked to.
        let sim = Disk::simulated(&SimDisk::default());
        let (early, late) = (sim.ticket(&path), sim.ticket(&path));
        sim.write_in_order(late, b"late").unwrap();
        sim.write_in_order(early, b"early").unwrap();
        assert_eq!(sim.read_bounded(&path, 100).unwrap(), b"early");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_replace_whole_and_reads_are_bounded() {
        let dir = std::env::temp_dir().join(format!("strata-durable-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("deep").join("state.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(read_bounded(&path, 6).unwrap(), b"second");
        assert!(!dir.join("deep").join("state.json.tmp").exists());
        let error = read_bounded(&path, 5).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        remove_if_present(&path).unwrap();
        remove_if_present(&path).unwrap();
        let lock = dir.join("lock");
        let held = lock_exclusive(&lock).unwrap();
        assert!(held.is_some());
        assert!(lock_exclusive(&lock).unwrap().is_none(), "held already");
        drop(held);
        assert!(lock_exclusive(&lock).unwrap().is_some(), "free again");
        fs::remove_dir_all(&dir).unwrap();
    }
}
