//! A container's root filesystem: its image's layers under an overlay
//! mount with a writable layer of its own, or a copy of them where
//! overlayfs cannot be mounted.

use std::path::{Path, PathBuf};

use super::layer::{is_whiteout, remove_any};

/// How a root filesystem was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Overlay,
    Copy,
}

/// Makes the root filesystem of `layers` (bottom first) at
/// `dir/rootfs`, with its writable layer in `dir` (`upper`, `work`).
pub fn make(layers: &[PathBuf], dir: &Path) -> Result<Made, String> {
    let rootfs = dir.join("rootfs");
    for sub in [&rootfs, &dir.join("upper"), &dir.join("work")] {
        std::fs::create_dir_all(sub).map_err(|e| format!("cannot make {}: {e}", sub.display()))?;
    }
    match overlay(layers, dir) {
        Ok(()) => Ok(Made::Overlay),
        Err(error) => {
            tracing::info!(%error, "overlayfs unavailable for a container; copying its layers");
            for layer in layers {
                apply(layer, &rootfs)?;
            }
            Ok(Made::Copy)
        }
    }
}

fn overlay(layers: &[PathBuf], dir: &Path) -> Result<(), String> {
    // Each layer through a descriptor (`/proc/self/fd/N`): short names,
    // so a mount's one page of options holds an image's every layer, and
    // none of `:` or `,` that separate them. overlayfs lists the top
    // layer first.
    let mut held = Vec::with_capacity(layers.len());
    let mut lower = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        let fd = rustix::fs::open(
            layer,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("cannot open layer {}: {e}", layer.display()))?;
        lower.push(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ));
        held.push(fd);
    }
    let upper = dir.join("upper");
    let work = dir.join("work");
    let (Some(upper), Some(work)) = (upper.to_str(), work.to_str()) else {
        return Err("the container's directory is not UTF-8".into());
    };
    if upper.contains([':', ',']) || work.contains([':', ',']) {
        return Err("the container's directory cannot be named to overlayfs".into());
    }
    let options = format!(
        "lowerdir={},upperdir={upper},workdir={work}",
        lower.join(":")
    );
    if options.len() >= 4096 {
        return Err("too many layers for one overlay mount's options".into());
    }
    let options =
        std::ffi::CString::new(options).map_err(|_| "a layer path holds NUL".to_owned())?;
    let mounted = rustix::mount::mount(
        "overlay",
        dir.join("rootfs"),
        "overlay",
        rustix::mount::MountFlags::NODEV,
        Some(options.as_c_str()),
    )
    .map_err(|e| format!("cannot mount overlayfs: {e}"));
    drop(held);
    mounted
}

/// Applies layer `layer` (overlayfs's format) onto the tree at `target`:
/// whiteouts remove, opaque directories replace.
fn apply(layer: &Path, target: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(layer).map_err(|e| format!("cannot read {}: {e}", layer.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", layer.display()))?;
        let from = entry.path();
        let to = target.join(entry.file_name());
        let metadata = std::fs::symlink_metadata(&from)
            .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        if is_whiteout(&metadata) {
            remove_any(&to)?;
            continue;
        }
        copy_one(&from, &to, &metadata)?;
        if metadata.is_dir() {
            let opaque = rustix::fs::getxattr(&from, "trusted.overlay.opaque", &mut [0u8; 1])
                .is_ok_and(|read| read == 1);
            if opaque {
                remove_any(&to)?;
                copy_one(&from, &to, &metadata)?;
            }
            apply(&from, &to)?;
        }
    }
    Ok(())
}

/// Copies one entry (not a directory's contents), with its mode and
/// owner.
fn copy_one(from: &Path, to: &Path, metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let failed =
        |e: std::io::Error| format!("cannot copy {} to {}: {e}", from.display(), to.display());
    let existing = std::fs::symlink_metadata(to).ok();
    if metadata.is_dir() {
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            remove_any(to)?;
        }
        if !to.is_dir() {
            std::fs::create_dir(to).map_err(failed)?;
        }
    } else {
        if existing.is_some() {
            remove_any(to)?;
        }
        if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(from).map_err(failed)?;
            std::os::unix::fs::symlink(target, to).map_err(failed)?;
        } else if metadata.is_file() {
            std::fs::copy(from, to).map_err(failed)?;
        } else {
            // Devices, fifos and sockets an image carries are made again.
            let file_type = rustix::fs::FileType::from_raw_mode(metadata.mode());
            rustix::fs::mknodat(
                rustix::fs::CWD,
                to,
                file_type,
                rustix::fs::Mode::from_raw_mode(metadata.mode()),
                metadata.rdev(),
            )
            .map_err(|e| failed(e.into()))?;
        }
    }
    std::os::unix::fs::lchown(to, Some(metadata.uid()), Some(metadata.gid())).map_err(failed)?;
    if !metadata.file_type().is_symlink() {
        std::fs::set_permissions(
            to,
            std::fs::Permissions::from_mode(metadata.mode() & 0o7777),
        )
        .map_err(failed)?;
    }
    Ok(())
}

/// Unmounts (if mounted) the root filesystem in `dir` and the volumes
/// staged in `dir/volumes`, then removes `dir`; nothing is removed while
/// anything in it stays mounted (it would reach into a volume's host
/// directory).
pub fn remove(dir: &Path) -> Result<(), String> {
    let mut mounted = vec![dir.join("rootfs")];
    if let Ok(entries) = std::fs::read_dir(dir.join("volumes")) {
        mounted.extend(entries.flatten().map(|entry| entry.path()));
    }
    for point in mounted {
        match rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => {}
            // Not a mount point (a copy), or gone already.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
            Err(error) => {
                return Err(format!(
                    "cannot unmount {} (left in place): {error}",
                    point.display()
                ));
            }
        }
    }
    remove_any(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers applied as copies: a whiteout removes what a lower layer
    /// had, an opaque directory hides its lower contents, files, links and
    /// modes come through; both ways agree.
    #[test]
    fn a_copy_applies_whiteouts_and_opaque_directories_as_overlayfs_does() {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root: whiteouts are devices only root makes"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("strata-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (lower, upper) = (dir.join("lower"), dir.join("upper-layer"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("var/cache")).unwrap();
        std::fs::write(lower.join("etc/gone"), "lower").unwrap();
        std::fs::write(lower.join("etc/kept"), "lower").unwrap();
        std::fs::write(lower.join("var/cache/old"), "lower").unwrap();
        std::os::unix::fs::symlink("kept", lower.join("etc/link")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("var/cache")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
        rustix::fs::setxattr(
            upper.join("var/cache"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::fs::write(upper.join("var/cache/new"), "upper").unwrap();
        std::fs::write(upper.join("etc/kept"), "upper").unwrap();
        let layers = [lower.clone(), upper.clone()];
        let check = |rootfs: &Path| {
            assert!(!rootfs.join("etc/gone").exists());
            assert_eq!(
                std::fs::read_to_string(rootfs.join("etc/kept")).unwrap(),
                "upper"
            );
            assert_eq!(
                std::fs::read_to_string(rootfs.join("etc/link")).unwrap(),
                "upper"
            );
            assert!(!rootfs.join("var/cache/old").exists());
            assert_eq!(
                std::fs::read_to_string(rootfs.join("var/cache/new")).unwrap(),
                "upper"
            );
        };
        // As copies.
        let copied = dir.join("copied/rootfs");
        std::fs::create_dir_all(&copied).unwrap();
        for layer in &layers {
            apply(layer, &copied).unwrap();
        }
        check(&copied);
        // As overlayfs mounts them.
        let container = dir.join("container");
        assert_eq!(make(&layers, &container).unwrap(), Made::Overlay);
        check(&container.join("rootfs"));
        remove(&container).unwrap();
        assert!(!container.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
