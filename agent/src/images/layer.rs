//! Layers: checked against their digests while they are read, unpacked
//! once into a directory in overlayfs's format (a whiteout is a 0/0
//! character device, an opaque directory has `trusted.overlay.opaque`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// A reader that hashes (sha256) and counts what passes through it, and
/// fails past `limit` bytes.
pub struct Hashing<R> {
    inner: R,
    context: ring::digest::Context,
    read: u64,
    limit: u64,
    /// When reading must have ended.
    deadline: Option<std::time::Instant>,
}

impl<R> std::fmt::Debug for Hashing<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashing").field("read", &self.read).finish()
    }
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R, limit: u64) -> Hashing<R> {
        Hashing {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            read: 0,
            limit,
            deadline: None,
        }
    }

    /// Reads what is left (to the limit), then gives the digest
    /// (`sha256:…`) and the bytes read.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((digest_text(self.context.finish().as_ref()), self.read))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self
            .deadline
            .is_some_and(|deadline| std::time::Instant::now() > deadline)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the pull took longer than it may",
            ));
        }
        let read = self.inner.read(buf)?;
        self.read += read as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(format!(
                "more than the {} bytes expected",
                self.limit
            )));
        }
        self.context.update(&buf[..read]);
        Ok(read)
    }
}

/// `sha256:` and the hex of `digest`.
pub fn digest_text(digest: &[u8]) -> String {
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The sha256 digest of `bytes`, as `sha256:…`.
pub fn sha256(bytes: &[u8]) -> String {
    digest_text(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// Told by its first bytes (layers in a `docker save` archive).
    Sniff,
}

/// The compression of a layer of media type `media_type`; an error for
/// layers Strata does not unpack.
pub fn compression_of(media_type: &str) -> Result<Compression, String> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        other => Err(format!("unsupported layer media type {other:?}")),
    }
}

/// What a layer must be.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The blob's digest and size, as its manifest says.
    pub digest: Option<String>,
    pub size: Option<u64>,
    /// The unpacked tar's digest (the image configuration's `diff_ids`).
    pub diff_id: Option<String>,
    pub compression: Compression,
    /// The most bytes its files may take unpacked.
    pub max_bytes: u64,
    /// When reading it must have ended.
    pub deadline: Option<std::time::Instant>,
}

/// Unpacks layer `blob` into `target` (made here), checking it as
/// `expected` says; the bytes its files take. On an error `target` may
/// hold part of it: the caller removes it.
pub fn unpack(blob: impl Read, expected: &Expected, target: &Path) -> Result<u64, String> {
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot make {}: {e}", target.display()))?;
    let mut compressed = Hashing::new(blob, expected.size.unwrap_or(u64::MAX));
    compressed.deadline = expected.deadline;
    let (unpacked, diff) = {
        let mut head = [0u8; 2];
        let compression = match expected.compression {
            Compression::Sniff => {
                // Peeked through a chain so the bytes still count.
                let read = read_up_to(&mut compressed, &mut head)
                    .map_err(|e| format!("cannot read the layer: {e}"))?;
                if read == 2 && head == [0x1f, 0x8b] {
                    Compression::Gzip
                } else {
                    Compression::None
                }
            }
            known => known,
        };
        let peeked: &[u8] = if expected.compression == Compression::Sniff {
            &head
        } else {
            &[]
        };
        let chained = peeked.chain(&mut compressed);
        let decoded: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(chained)),
            _ => Box::new(chained),
        };
        // The tar itself may hold some more than its files (headers,
        // padding): bounded at twice the files' bound.
        let mut tarred = Hashing::new(decoded, expected.max_bytes.saturating_mul(2));
        let unpacked = unpack_tar(&mut tarred, target, expected.max_bytes).and_then(|unpacked| {
            let diff = tarred
                .finish()
                .map_err(|e| format!("cannot read the layer: {e}"))?;
            Ok((unpacked, diff.0))
        });
        match unpacked {
            Ok(unpacked) => unpacked,
            Err(error) => {
                // A blob that is not what its manifest says is the cause
                // to name, rather than what unpacking it ran into.
                if let Some(wanted) = &expected.digest
                    && let Ok((digest, _)) = compressed.finish()
                    && digest != *wanted
                {
                    return Err(format!(
                        "digest mismatch: the layer is {digest}, its manifest says {wanted} ({error})"
                    ));
                }
                return Err(error);
            }
        }
    };
    let (digest, size) = compressed
        .finish()
        .map_err(|e| format!("cannot read the layer: {e}"))?;
    if let Some(wanted) = &expected.digest
        && *wanted != digest
    {
        return Err(format!(
            "digest mismatch: the layer is {digest}, its manifest says {wanted}"
        ));
    }
    if let Some(wanted) = expected.size
        && wanted != size
    {
        return Err(format!(
            "size mismatch: the layer has {size} bytes, its manifest says {wanted}"
        ));
    }
    if let Some(wanted) = &expected.diff_id
        && *wanted != diff
    {
        return Err(format!(
            "digest mismatch: the layer unpacks to {diff}, its image says {wanted}"
        ));
    }
    Ok(unpacked)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// The most entries (files, directories, links) one layer may have.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// The most an extension entry of a layer tar (a PAX header, a GNU long
/// name or link) may hold: the tar crate reads those whole into memory.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// A reader that watches a tar stream's blocks go by (without changing
/// them) and fails on an extension entry over [`MAX_EXTENSION_BYTES`], so
/// no layer makes the agent hold more than that in memory for one. To
/// stay in step with the tar crate without parsing as it does, it refuses
/// what would make the two disagree on where entries start: PAX `size`
/// records (files over 8 GiB) and GNU sparse entries. Every entry's data
/// then takes its header's size, for both.
struct TarGuard<R> {
    inner: R,
    phase: Phase,
    /// The header being read.
    block: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    /// An entry's data and padding: bytes left, and whether they are a PAX
    /// header's records (looked at for a `size`).
    Data {
        left: u64,
        pax: bool,
    },
    /// After the end-of-archive block, where the tar crate stops reading.
    Trailer,
}

fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        // Base-256: big-endian, the top bit of the first byte a flag.
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<R: Read> TarGuard<R> {
    fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            phase: Phase::Header,
            block: Vec::with_capacity(512),
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Trailer => return Ok(()),
                Phase::Header => {
                    let wanted = 512 - self.block.len();
                    let taken = wanted.min(bytes.len());
                    self.block.extend_from_slice(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if self.block.len() == 512 {
                        let block = std::mem::take(&mut self.block);
                        self.header(&block)?;
                    }
                }
                Phase::Data { left, pax } => {
                    let taken = (left.min(bytes.len() as u64)) as usize;
                    // A record anywhere in a PAX header that could set a
                    // size (conservatively: the text ` size=`).
                    if pax && bytes[..taken].windows(6).any(|window| window == b" size=") {
                        return Err("the layer's tar sets a file size in a PAX header (files over 8 GiB are not supported)".into());
                    }
                    bytes = &bytes[taken..];
                    let left = left - taken as u64;
                    self.phase = if left == 0 {
                        Phase::Header
                    } else {
                        Phase::Data { left, pax }
                    };
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, block: &[u8]) -> Result<(), String> {
        if block.iter().all(|byte| *byte == 0) {
            self.phase = Phase::Trailer;
            return Ok(());
        }
        let size = tar_number(&block[124..136])
            .ok_or("the layer is corrupt: a tar header's size is not a number")?;
        let kind = block[156];
        if kind == b'S' {
            return Err("the layer has a GNU sparse file, which Strata does not unpack".into());
        }
        let extension = matches!(kind, b'x' | b'g' | b'L' | b'K' | b'X');
        if extension && size > MAX_EXTENSION_BYTES {
            return Err(format!(
                "the layer has a tar extension header of {size} bytes (at most {MAX_EXTENSION_BYTES})"
            ));
        }
        let left = size.div_ceil(512).saturating_mul(512);
        self.phase = if left == 0 {
            Phase::Header
        } else {
            Phase::Data {
                left,
                pax: matches!(kind, b'x' | b'g'),
            }
        };
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.observe(&buf[..read]).map_err(std::io::Error::other)?;
        Ok(read)
    }
}

/// The name overlayfs gives an opaque directory's marker in a layer tar.
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT: &str = ".wh.";

fn unpack_tar(tarred: impl Read, target: &Path, max_bytes: u64) -> Result<u64, String> {
    let mut archive = tar::Archive::new(TarGuard::new(tarred));
    let root = rustix::process::geteuid().is_root();
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(root);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut total: u64 = 0;
    let mut entries_seen: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("the layer is not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the layer is corrupt: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("the layer is corrupt: {e}"))?
            .into_owned();
        if path
            .components()
            .all(|part| matches!(part, Component::CurDir))
        {
            // The root itself (`./`), which tars made with `-C dir .` hold.
            continue;
        }
        let relative = relative_path(&path)
            .ok_or_else(|| format!("the layer names {} outside its root", path.display()))?;
        // What its data takes, and a block for the entry itself (a
        // directory's block and inode), so millions of empty entries
        // count too; and at most so many entries.
        entries_seen += 1;
        if entries_seen > MAX_ENTRIES {
            return Err(format!("the layer has more than {MAX_ENTRIES} entries"));
        }
        let block = if entry.header().entry_type().is_dir() {
            4096
        } else {
            512
        };
        total = total.saturating_add(entry.size().max(block));
        if total > max_bytes {
            return Err(format!("the layer unpacks to more than {max_bytes} bytes"));
        }
        let name = relative
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        if name == OPAQUE {
            let parent = directory_beneath(target, relative.parent().unwrap_or(Path::new("")))?;
            rustix::fs::setxattr(
                &parent,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| format!("cannot mark {} opaque: {e}", parent.display()))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(format!("the layer has a bad whiteout {}", path.display()));
            }
            let parent = directory_beneath(target, relative.parent().unwrap_or(Path::new("")))?;
            let whiteout = parent.join(hidden);
            remove_any(&whiteout)?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &whiteout,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| format!("cannot make the whiteout {}: {e}", whiteout.display()))?;
            continue;
        }
        let unpacked = entry
            .unpack_in(target)
            .map_err(|e| format!("cannot unpack {}: {}", path.display(), error_chain(&e)))?;
        if !unpacked {
            return Err(format!(
                "the layer names {} outside its root",
                path.display()
            ));
        }
    }
    Ok(total)
}

/// An error and its sources, `: `-separated (the tar crate's errors say
/// little without their sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `root`/`relative` as a directory of `root`'s own: each component made
/// when missing, and none a symbolic link (or anything but a directory),
/// so nothing done in it reaches outside `root`. `relative` is plain
/// names.
pub fn directory_beneath(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut dir = root.to_owned();
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return Err(format!(
                "{} is not a plain relative path",
                relative.display()
            ));
        };
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is a link or a file, not a directory",
                    dir.display()
                ));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir)
                    .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            }
            Err(error) => return Err(format!("cannot read {}: {error}", dir.display())),
        }
    }
    Ok(dir)
}

/// `path` as a relative path of plain names (`./` dropped); `None` when
/// it is absolute or goes up.
fn relative_path(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

/// Whether `metadata` is overlayfs's whiteout (a 0/0 character device).
pub fn is_whiteout(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

/// Removes whatever is at `path` (a tree, a file, a link); nothing there
/// is no error.
pub fn remove_any(path: &Path) -> Result<(), String> {
    let result = match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => Err(error),
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    header.set_cksum();
                    builder.append_data(&mut header, path, *bytes).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_cksum();
                    builder.append_data(&mut header, path, &[][..]).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-layer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn expected(blob: &[u8], tar: &[u8]) -> Expected {
        Expected {
            digest: Some(sha256(blob)),
            size: Some(blob.len() as u64),
            diff_id: Some(sha256(tar)),
            compression: Compression::Gzip,
            max_bytes: 1 << 20,
            deadline: None,
        }
    }

    #[test]
    fn a_layer_is_checked_and_unpacked_with_its_whiteouts() {
        let tar = tar_of(&[
            ("etc/", None),
            ("etc/motd", Some(b"hello")),
            ("etc/.wh.passwd", Some(b"")),
            ("var/", None),
            ("var/.wh..wh..opq", Some(b"")),
        ]);
        let blob = gzip(&tar);
        let target = scratch("whiteouts");
        let unpacked = unpack(&blob[..], &expected(&blob, &tar), &target).unwrap();
        // Each entry counts at least a block.
        assert_eq!(unpacked, 2 * 4096 + 3 * 512);
        assert_eq!(std::fs::read(target.join("etc/motd")).unwrap(), b"hello");
        if rustix::process::geteuid().is_root() {
            let whiteout = std::fs::symlink_metadata(target.join("etc/passwd")).unwrap();
            assert!(is_whiteout(&whiteout));
            let opaque =
                rustix::fs::getxattr(target.join("var"), "trusted.overlay.opaque", &mut [0u8; 4]);
            assert_eq!(opaque.ok(), Some(1));
        }
        // The same bytes, told by their first ones.
        let sniffed = scratch("sniffed");
        let mut sniffing = expected(&blob, &tar);
        sniffing.compression = Compression::Sniff;
        unpack(&blob[..], &sniffing, &sniffed).unwrap();
        assert!(sniffed.join("etc/motd").is_file());
        let plain = scratch("plain");
        sniffing.digest = Some(sha256(&tar));
        sniffing.size = Some(tar.len() as u64);
        unpack(&tar[..], &sniffing, &plain).unwrap();
        assert!(plain.join("etc/motd").is_file());
        for dir in [target, sniffed, plain] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn whiteouts_never_reach_through_a_link() {
        let outside = scratch("outside");
        std::fs::create_dir_all(outside.join("etc")).unwrap();
        std::fs::write(outside.join("etc/keep"), "kept").unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        link.set_uid(0);
        link.set_gid(0);
        builder
            .append_link(&mut link, "x", outside.to_str().unwrap())
            .unwrap();
        for name in ["x/etc/.wh.keep", "x/etc/.wh..wh..opq"] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_cksum();
            let mut layer = builder.get_ref().clone();
            let mut one = tar::Builder::new(std::mem::take(&mut layer));
            one.append_data(&mut header, name, &[][..]).unwrap();
            let bytes = one.into_inner().unwrap();
            let target = scratch("through-link");
            let hostile = Expected {
                digest: None,
                size: None,
                diff_id: None,
                compression: Compression::None,
                max_bytes: 1 << 20,
                deadline: None,
            };
            let error = unpack(&bytes[..], &hostile, &target).unwrap_err();
            assert!(error.contains("link or a file"), "{name}: {error}");
            assert_eq!(
                std::fs::read_to_string(outside.join("etc/keep")).unwrap(),
                "kept"
            );
            let _ = std::fs::remove_dir_all(&target);
        }
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn corrupt_mismatched_and_hostile_layers_are_refused() {
        let tar = tar_of(&[("a", Some(b"x"))]);
        let blob = gzip(&tar);
        let target = scratch("refused");
        // A digest that is not the blob's.
        let mut wrong = expected(&blob, &tar);
        wrong.digest = Some(sha256(b"other"));
        let error = unpack(&blob[..], &wrong, &target).unwrap_err();
        assert!(error.contains("digest mismatch"), "{error}");
        // A corrupted byte in the compressed stream.
        let mut corrupt = blob.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        let error = unpack(&corrupt[..], &expected(&blob, &tar), &target).unwrap_err();
        assert!(
            error.contains("mismatch")
                || error.contains("corrupt")
                || error.contains("cannot read"),
            "{error}"
        );
        // Longer than its manifest says.
        let mut short = expected(&blob, &tar);
        short.size = Some(blob.len() as u64 - 1);
        assert!(unpack(&blob[..], &short, &target).is_err());
        // A path that leaves the root, and a bomb past the bound.
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let mut builder = tar::Builder::new(Vec::new());
        header.set_cksum();
        let _ = builder.append_data(&mut header, "ok", &b"z"[..]);
        let mut bytes = builder.into_inner().unwrap();
        // Rewrite the name field to go up, and the checksum with it.
        bytes[..6].copy_from_slice(b"../../");
        let mut raw = tar::Header::new_old();
        raw.as_mut_bytes().copy_from_slice(&bytes[..512]);
        raw.set_cksum();
        bytes[..512].copy_from_slice(raw.as_bytes());
        let hostile = Expected {
            digest: None,
            size: None,
            diff_id: None,
            compression: Compression::None,
            max_bytes: 1 << 20,
            deadline: None,
        };
        let error = unpack(&bytes[..], &hostile, &target).unwrap_err();
        assert!(error.contains("outside its root"), "{error}");
        let big = tar_of(&[("big", Some(&[0u8; 4096]))]);
        let bounded = Expected {
            max_bytes: 1000,
            ..hostile.clone()
        };
        let error = unpack(&big[..], &bounded, &target).unwrap_err();
        assert!(error.contains("more than"), "{error}");
        // A PAX header of 4 MiB (the tar crate would hold it whole).
        let mut huge = tar::Builder::new(Vec::new());
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(4 << 20);
        pax.set_mode(0o644);
        pax.set_uid(0);
        pax.set_gid(0);
        pax.set_cksum();
        huge.append(&pax, &vec![b'a'; 4 << 20][..]).unwrap();
        let huge = huge.into_inner().unwrap();
        let error = unpack(&huge[..], &hostile, &target).unwrap_err();
        assert!(error.contains("extension header"), "{error}");
        // A PAX long name unpacks; a PAX size (which the guard would have
        // to follow as the tar crate does) is refused.
        let long = format!("{}/file", "d".repeat(150));
        let paxed = |records: &[(&str, &[u8])]| {
            let mut paxed = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_size(3);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            paxed
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            header.set_path("short").unwrap();
            header.set_cksum();
            paxed.append(&header, &b"abc"[..]).unwrap();
            paxed.into_inner().unwrap()
        };
        unpack(&paxed(&[("path", long.as_bytes())])[..], &hostile, &target).unwrap();
        assert_eq!(std::fs::read(target.join(&long)).unwrap(), b"abc");
        let sized = paxed(&[("path", long.as_bytes()), ("size", b"3".as_slice())]);
        let error = unpack(&sized[..], &hostile, &target).unwrap_err();
        assert!(error.contains("PAX"), "{error}");
        let _ = std::fs::remove_dir_all(&target);
        assert!(compression_of("application/vnd.oci.image.layer.v1.tar+zstd").is_err());
    }
}
