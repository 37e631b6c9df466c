//! Small files that must survive a crash whole: agents' checkpoints and
//! the master's registry.
//!
//! [`write_atomically`] writes to a temporary file beside the target,
//! syncs it, renames it over the target and syncs the directory, so after
//! a crash at any point the file holds either the old contents or the new
//! ones, never a torn mix. [`read_bounded`] refuses files larger than the
//! caller expects before reading them, so a corrupt or hostile file cannot
//! make the reader allocate without limit.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// Writes `contents` to `path` atomically and durably, creating the
/// parent directories.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    fs::create_dir_all(dir)?;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = std::path::PathBuf::from(aside);
    let mut file = fs::File::create(&aside)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&aside, path)?;
    fs::File::open(dir)?.sync_all()
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

#[cfg(test)]
mod tests {
    use super::*;

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
