//! Checkpoint writes in batches that share one fsync.
//!
//! Handling one input can mean several checkpoint writes (a task's update
//! stream and its state, a framework's description), each of which would
//! cost a file fsync and a directory fsync to be durable on its own. The
//! agent instead commits a batch: the batch is appended to a journal
//! (`meta/checkpoints.journal`, one record with a checksum) and the
//! journal is fsynced once; then the files are written without syncing.
//! A crash of the machine may lose those file writes, never the journal:
//! a restarted agent replays the journal over the files before it reads
//! them (a torn last record is a batch that was never committed, and the
//! agent acted on nothing of it). Once the journal grows past
//! [`COMPACT_BYTES`], the files it covers are synced and it starts over.
//!
//! Nothing the agent sends or starts depends on a batch before the batch
//! is committed: the shell commits before carrying out any effect that
//! leaves the agent.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_runtime::durable;

/// The journal's file in a work directory.
pub fn path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("checkpoints.journal")
}

/// A journal this long is compacted after its next commit.
pub const COMPACT_BYTES: u64 = 1 << 20;

/// Largest journal read back: far past what compaction lets it reach;
/// a larger one is refused as foreign.
const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// Largest record read back; a longer one is a torn or foreign tail.
const MAX_RECORD_BYTES: u32 = 64 << 20;

/// A batch's changes go into records of about this many bytes at most
/// (one change may make a record longer, up to 64 MiB).
pub const RECORD_BYTES: usize = 8 << 20;

/// The bytes of a record holding `ops`.
fn record(ops: &[&Op]) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(ops)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length <= MAX_RECORD_BYTES)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a change too large to journal")
        })?;
    let mut record = Vec::with_capacity(payload.len() + 12);
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&checksum(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// One change to the checkpoint files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The file at `path` holds `contents`.
    Write { path: PathBuf, contents: String },
    /// No file at `path`; its directory goes too once empty, with
    /// `prune`.
    Remove { path: PathBuf, prune: bool },
    /// No directory at `path`, nor anything in it.
    RemoveDir { path: PathBuf },
}

impl Op {
    /// The file or directory it changes.
    pub fn path(&self) -> &Path {
        match self {
            Op::Write { path, .. } | Op::Remove { path, .. } | Op::RemoveDir { path } => path,
        }
    }

    /// About how many bytes it takes in a record.
    fn weight(&self) -> usize {
        let contents = match self {
            Op::Write { contents, .. } => contents.len(),
            Op::Remove { .. } | Op::RemoveDir { .. } => 0,
        };
        // JSON escapes may double the contents.
        2 * contents + self.path().as_os_str().len() + 64
    }
}

/// FNV-1a: tells a whole record from a torn one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Applies `op` to the files, syncing them when `sync`.
fn apply(op: &Op, sync: bool) -> io::Result<()> {
    match op {
        Op::Write { path, contents } if sync => {
            durable::write_atomically(path, contents.as_bytes())
        }
        Op::Write { path, contents } => {
            let dir = path.parent().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no parent directory")
            })?;
            // Not synced either: the journal holds the write until the
            // compaction syncs the directories too.
            fs::create_dir_all(dir)?;
            let mut aside = path.as_os_str().to_owned();
            aside.push(".tmp");
            fs::write(&aside, contents)?;
            fs::rename(&aside, path)
        }
        Op::Remove { path, prune } => {
            durable::remove_if_present(path)?;
            if *prune && let Some(dir) = path.parent() {
                let _ = fs::remove_dir(dir);
            }
            Ok(())
        }
        Op::RemoveDir { path } => durable::remove_dir_all(path),
    }
}

/// Syncs the files at `paths` (those that exist), then every directory
/// above them up to `root`, each once: what makes writes and removals
/// made without syncing as durable as the journal that held them.
fn sync_all(paths: &BTreeSet<PathBuf>, root: &Path) -> io::Result<()> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        match fs::File::open(path) {
            Ok(file) if file.metadata()?.is_file() => file.sync_all()?,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut dir = path.parent();
        while let Some(at) = dir {
            dirs.insert(at.to_owned());
            if at == root || !at.starts_with(root) {
                break;
            }
            dir = at.parent();
        }
    }
    // Deepest first, so an entry is synced after what it names.
    for dir in dirs.iter().rev() {
        match fs::File::open(dir) {
            Ok(file) => file.sync_all()?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The journal of one work directory.
#[derive(Debug)]
pub struct Journal {
    root: PathBuf,
    path: PathBuf,
    file: Option<fs::File>,
    bytes: u64,
    /// Files written or removed since the journal last started over.
    touched: BTreeSet<PathBuf>,
    /// A journalled change could not be applied to the files: the journal
    /// must not start over (a restart replays it).
    unapplied: bool,
    /// Past this length it is compacted ([`COMPACT_BYTES`]).
    compact_bytes: u64,
}

impl Journal {
    /// The journal of `work_dir`; nothing is read or written yet.
    pub fn new(work_dir: &Path) -> Journal {
        Journal {
            root: work_dir.to_owned(),
            path: path(work_dir),
            file: None,
            bytes: 0,
            touched: BTreeSet::new(),
            unapplied: false,
            compact_bytes: COMPACT_BYTES,
        }
    }

    /// Replays what the journal holds over the files, durably, and starts
    /// it over: how a restarted agent finds every committed batch. A torn
    /// or damaged tail ends the replay (what follows was never
    /// committed). Returns how many records were replayed (a batch is one
    /// record unless it is large).
    pub fn replay(&mut self) -> io::Result<usize> {
        let bytes = match durable::read_bounded(&self.path, MAX_JOURNAL_BYTES) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut replayed = 0;
        let mut rest = &bytes[..];
        let mut paths = BTreeSet::new();
        while let Some(ops) = next_record(&mut rest) {
            for op in &ops {
                apply(op, true)?;
                paths.insert(op.path().to_owned());
            }
            replayed += 1;
        }
        // Removals are durable too before the journal lets them go.
        sync_all(&paths, &self.root)?;
        self.start_over()?;
        Ok(replayed)
    }

    /// Commits `ops` as one batch: journalled with one fsync (in records
    /// of at most [`RECORD_BYTES`] each), then applied to the files. On an
    /// error nothing of the batch stays in the journal.
    pub fn commit(&mut self, ops: &[Op]) -> io::Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        let mut chunk: Vec<&Op> = Vec::new();
        let mut size = 0;
        for op in ops {
            let weight = op.weight();
            if !chunk.is_empty() && size + weight > RECORD_BYTES {
                records.extend(record(&chunk)?);
                chunk.clear();
                size = 0;
            }
            chunk.push(op);
            size += weight;
        }
        records.extend(record(&chunk)?);
        let before = self.bytes;
        let file = self.file()?;
        if let Err(error) = file.write_all(&records).and_then(|()| file.sync_data()) {
            // A torn record would hide every later batch from a replay.
            let _ = file.set_len(before);
            let _ = file.sync_all();
            return Err(error);
        }
        self.bytes = before + records.len() as u64;
        for op in ops {
            self.touched.insert(op.path().to_owned());
        }
        for op in ops {
            if let Err(error) = apply(op, false) {
                self.unapplied = true;
                return Err(error);
            }
        }
        if self.bytes >= self.compact_bytes && !self.unapplied {
            self.compact()?;
        }
        Ok(())
    }

    /// Syncs every file the journal covers, then starts it over.
    pub fn compact(&mut self) -> io::Result<()> {
        sync_all(&self.touched, &self.root)?;
        self.touched.clear();
        self.start_over()
    }

    fn start_over(&mut self) -> io::Result<()> {
        let file = self.file()?;
        file.set_len(0)?;
        file.sync_all()?;
        self.bytes = 0;
        Ok(())
    }

    fn file(&mut self) -> io::Result<&mut fs::File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                durable::create_dir_all(dir)?;
            }
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)?;
            // Its entry in the directory is durable before any record.
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            self.bytes = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the journal is not open"))
    }
}

/// The next whole record in `rest`, moving past it; `None` at the end or
/// at a torn or damaged record.
fn next_record(rest: &mut &[u8]) -> Option<Vec<Op>> {
    let mut head = [0u8; 12];
    let mut reader = *rest;
    reader.read_exact(&mut head).ok()?;
    let length = u32::from_le_bytes(head[..4].try_into().ok()?);
    let sum = u64::from_le_bytes(head[4..].try_into().ok()?);
    if length > MAX_RECORD_BYTES || reader.len() < length as usize {
        return None;
    }
    let payload = &reader[..length as usize];
    if checksum(payload) != sum {
        return None;
    }
    let ops = serde_json::from_slice(payload).ok()?;
    *rest = &reader[length as usize..];
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, contents: &str) -> Op {
        Op::Write {
            path: path.to_owned(),
            contents: contents.to_owned(),
        }
    }

    #[test]
    fn committed_batches_survive_lost_file_writes_and_a_torn_tail_does_not_count() {
        let dir = std::env::temp_dir().join(format!("strata-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (a, b, c) = (
            dir.join("f/a.json"),
            dir.join("f/b.json"),
            dir.join("g/c.json"),
        );
        let mut journal = Journal::new(&dir);
        journal
            .commit(&[write(&a, "a1"), write(&b, "b1"), write(&c, "c1")])
            .unwrap();
        journal
            .commit(&[
                write(&a, "a2"),
                Op::Remove {
                    path: b.clone(),
                    prune: false,
                },
                Op::RemoveDir {
                    path: dir.join("g"),
                },
            ])
            .unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "a2");
        assert!(!b.exists() && !c.exists());
        // The machine crashed and the file writes were lost, but the
        // journal was synced; a batch being written is torn at its end.
        fs::write(&a, "a-lost").unwrap();
        fs::write(&b, "b-lost").unwrap();
        let torn = {
            let payload = serde_json::to_vec(&[write(&a, "never")]).unwrap();
            let mut record = (payload.len() as u32).to_le_bytes().to_vec();
            record.extend_from_slice(&checksum(&payload).to_le_bytes());
            record.extend_from_slice(&payload[..payload.len() / 2]);
            record
        };
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(path(&dir))
            .unwrap();
        file.write_all(&torn).unwrap();
        drop(file);

        let mut restarted = Journal::new(&dir);
        assert_eq!(restarted.replay().unwrap(), 2);
        assert_eq!(fs::read_to_string(&a).unwrap(), "a2");
        assert!(!b.exists(), "the removal is replayed too");
        assert_eq!(fs::metadata(path(&dir)).unwrap().len(), 0, "started over");
        // Replaying an empty journal changes nothing.
        assert_eq!(restarted.replay().unwrap(), 0);

        // A damaged record ends the replay there.
        restarted.commit(&[write(&a, "a3")]).unwrap();
        let mut bytes = fs::read(path(&dir)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(path(&dir), &bytes).unwrap();
        fs::write(&a, "a-lost").unwrap();
        assert_eq!(Journal::new(&dir).replay().unwrap(), 0);
        assert_eq!(fs::read_to_string(&a).unwrap(), "a-lost");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_batch_goes_in_several_records_and_comes_back_whole() {
        let dir = std::env::temp_dir().join(format!("strata-journal-big-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let big = "y".repeat(3 << 20);
        let files: Vec<PathBuf> = (0..3)
            .map(|index| dir.join(format!("t{index}.json")))
            .collect();
        let ops: Vec<Op> = files.iter().map(|file| write(file, &big)).collect();
        let mut journal = Journal::new(&dir);
        // Not compacted at once, as it would be: the files' writes may be
        // lost.
        journal.compact_bytes = u64::MAX;
        journal.commit(&ops).unwrap();
        for file in &files {
            fs::write(file, "lost").unwrap();
        }
        assert_eq!(
            Journal::new(&dir).replay().unwrap(),
            3,
            "one record a change"
        );
        for file in &files {
            assert_eq!(fs::read_to_string(file).unwrap().len(), big.len());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_journal_syncs_its_files_and_starts_over() {
        let dir = std::env::temp_dir().join(format!("strata-journal-long-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut journal = Journal::new(&dir);
        let big = "x".repeat(100_000);
        for index in 0..11 {
            journal
                .commit(&[write(&dir.join(format!("t{index}/task.json")), &big)])
                .unwrap();
        }
        assert!(fs::metadata(path(&dir)).unwrap().len() < COMPACT_BYTES);
        assert!(journal.touched.len() < 11);
        fs::remove_dir_all(&dir).unwrap();
    }
}
