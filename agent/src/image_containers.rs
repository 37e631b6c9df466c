//! Containers whose command runs in an image: the image provisioned by
//! the store, a root filesystem made of it, a bundle written for the OCI
//! runtime, and all of it removed when the container ends.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_protocol::{CommandInfo, ContainerInfo};
use tracing::{info, warn};

use crate::cgroups::Cgroup;
use crate::containerizer::{ContainerId, LaunchError};
use crate::images::{ImageStore, rootfs};
use crate::oci::{BindMount, Bundle, OciRuntime, SANDBOX_PATH};
use crate::users::RunAs;

/// The PATH a container gets when its image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An agent's means to run containers with images.
#[derive(Debug)]
pub struct ImageContainers {
    pub store: ImageStore,
    pub runtime: OciRuntime,
    /// Bundles, one directory per container.
    dir: PathBuf,
    /// Where absolute host paths of volumes may be (canonical).
    volume_dirs: Vec<PathBuf>,
}

/// A container running in an image, until it is cleaned up (once).
#[derive(Debug, Clone)]
pub struct ImageRun {
    pub digest: String,
    /// Its layers' keys, pinned against collection while it runs.
    layers: Vec<String>,
    done: Arc<AtomicBool>,
}

/// What starts a prepared container.
#[derive(Debug)]
pub struct Prepared {
    pub argv: Vec<OsString>,
    pub environment: BTreeMap<OsString, OsString>,
    pub run: ImageRun,
}

/// How an agent runs containers with images (its flags).
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// `runc`, `crun` or a path; runc if installed, else crun, when `None`.
    pub runtime: Option<String>,
    pub cache_bytes: u64,
    pub ca_bundle: PathBuf,
    /// Where images named by a path on the agent may be.
    pub image_dirs: Vec<PathBuf>,
    /// Where absolute host paths of volumes may be.
    pub volume_dirs: Vec<PathBuf>,
}

impl Default for ImageOptions {
    fn default() -> ImageOptions {
        ImageOptions {
            runtime: None,
            cache_bytes: crate::images::DEFAULT_CACHE_BYTES,
            ca_bundle: PathBuf::from(crate::images::registry::DEFAULT_CA_BUNDLE),
            image_dirs: Vec::new(),
            volume_dirs: Vec::new(),
        }
    }
}

impl ImageContainers {
    /// The image containers of the agent of `work_dir`.
    pub fn open(work_dir: &Path, options: &ImageOptions) -> Result<ImageContainers, String> {
        let runtime = OciRuntime::find(options.runtime.as_deref(), &work_dir.join("runtime"))?;
        let store = ImageStore::open(
            &work_dir.join("images"),
            &crate::images::StoreOptions {
                max_bytes: options.cache_bytes,
                ca_bundle: options.ca_bundle.clone(),
                image_dirs: options.image_dirs.clone(),
            },
        )?;
        // Bundles hold tasks' environments, and root filesystems their
        // images' setuid files: root's alone, as the runtime's state.
        let dir = work_dir.join("containers");
        for private in [&dir, &runtime.state_dir] {
            crate::users::make_private(private)
                .map_err(|e| format!("cannot make {}: {e}", private.display()))?;
        }
        let volume_dirs = options
            .volume_dirs
            .iter()
            .filter_map(|allowed| std::fs::canonicalize(allowed).ok())
            .collect();
        Ok(ImageContainers {
            store,
            runtime,
            dir,
            volume_dirs,
        })
    }

    /// Container `id`'s bundle directory.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Provisions `container`'s image for container `id` and writes its
    /// bundle: its command (`command`, or the image's), environment and
    /// user, its sandbox and volumes, its cgroup. Nothing is left behind
    /// when it fails.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        id: &ContainerId,
        container: &ContainerInfo,
        command: &CommandInfo,
        extra_environment: &BTreeMap<String, String>,
        sandbox: &Path,
        run_as: Option<&RunAs>,
        cgroup: &Cgroup,
        own_network: bool,
    ) -> Result<Prepared, LaunchError> {
        let Some(name) = &container.image else {
            return Err(LaunchError::preparation("the container names no image"));
        };
        let image = self
            .store
            .provision(name)
            .map_err(|e| LaunchError::preparation(format!("cannot provision image {name}: {e}")))?;
        let layers = self.store.layer_keys(&image.digest);
        self.store.pin(&layers);
        let run = ImageRun {
            digest: image.digest.clone(),
            layers,
            done: Arc::default(),
        };
        let bundle = self.bundle(id.as_str());
        let prepared = (|| {
            std::fs::create_dir_all(&bundle)
                .map_err(|e| format!("cannot make {}: {e}", bundle.display()))?;
            std::fs::write(bundle.join("image"), &image.digest)
                .map_err(|e| format!("cannot write {}: {e}", bundle.join("image").display()))?;
            std::fs::write(bundle.join("layers"), run.layers.join("\n"))
                .map_err(|e| format!("cannot write {}: {e}", bundle.join("layers").display()))?;
            rootfs::make(&image.layers, &bundle)?;
            let args = arguments(command, &image.config)?;
            let env = environment(
                &image.config.env,
                extra_environment,
                command,
                sandbox,
                run_as,
            );
            let volumes = volumes(container, sandbox, &self.volume_dirs, run_as, &bundle)?;
            let cgroups_path = self.runtime.cgroups_path(
                &cgroup
                    .hierarchy_path()
                    .map_err(|e| format!("cannot name the container's cgroup: {e}"))?,
            );
            crate::oci::write_config(
                &bundle,
                &Bundle {
                    rootfs: bundle.join("rootfs"),
                    args,
                    env,
                    cwd: SANDBOX_PATH.into(),
                    uid: run_as.map_or_else(|| rustix::process::geteuid().as_raw(), |r| r.uid),
                    gid: run_as.map_or_else(|| rustix::process::getegid().as_raw(), |r| r.gid),
                    groups: run_as.map(|r| r.groups.clone()).unwrap_or_default(),
                    sandbox: sandbox.to_owned(),
                    volumes,
                    cgroups_path,
                    own_network,
                },
            )
        })();
        if let Err(message) = prepared {
            self.end(id.as_str(), &run);
            return Err(LaunchError::preparation(message));
        }
        let environment = BTreeMap::from([(OsString::from("PATH"), OsString::from(DEFAULT_PATH))]);
        Ok(Prepared {
            argv: self.runtime.run_argv(&bundle, id.as_str()),
            environment,
            run,
        })
    }

    /// Cleans up after container `id` (once, however often asked): the
    /// runtime's state, the root filesystem and bundle, the hold on the
    /// image. Blocking.
    pub fn end(&self, id: &str, run: &ImageRun) {
        if run.done.swap(true, Ordering::SeqCst) {
            return;
        }
        self.remove(id);
        self.store.unpin(&run.layers);
        self.store.release(&run.digest);
    }

    fn remove(&self, id: &str) {
        if let Err(error) = self.runtime.delete(id) {
            warn!(container = id, %error, "the OCI runtime cannot delete a container");
        }
        if let Err(error) = rootfs::remove(&self.bundle(id)) {
            warn!(container = id, %error, "cannot remove a container's root filesystem");
        }
    }

    /// Container `id`'s image run, if it has a bundle (an earlier life of
    /// the agent started it), its image held again.
    pub fn recover(&self, id: &str) -> Option<ImageRun> {
        let digest = std::fs::read_to_string(self.bundle(id).join("image")).ok()?;
        let digest = digest.trim().to_owned();
        let layers: Vec<String> = std::fs::read_to_string(self.bundle(id).join("layers"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        self.store.hold(&digest);
        self.store.pin(&layers);
        Some(ImageRun {
            digest,
            layers,
            done: Arc::default(),
        })
    }

    /// Removes what containers not in `known` left: the runtime's
    /// containers and bundles. Blocking.
    pub fn clean_up_unknown(&self, known: &[String]) {
        let mut ids: Vec<String> = self.runtime.list().unwrap_or_else(|error| {
            warn!(%error, "cannot list the OCI runtime's containers");
            Vec::new()
        });
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            ids.extend(
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned()),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids.into_iter().filter(|id| !known.contains(id)) {
            info!(container = %id, "removing an image container this agent no longer knows");
            self.remove(&id);
        }
        // Every container the agent knows pinned its layers by now.
        self.store.start_collecting();
    }
}

/// The container's argv: a shell command in the image's `/bin/sh`, a
/// command with its arguments, or (a command with no value) the image's
/// entrypoint with the command's arguments or else the image's cmd.
fn arguments(
    command: &CommandInfo,
    image: &crate::images::RunConfig,
) -> Result<Vec<String>, String> {
    let args: Vec<String> = if command.shell {
        vec!["/bin/sh".into(), "-c".into(), command.value.clone()]
    } else if command.value.is_empty() {
        let rest = if command.arguments.len() > 1 {
            command.arguments[1..].to_vec()
        } else {
            image.cmd.clone()
        };
        image.entrypoint.iter().cloned().chain(rest).collect()
    } else {
        std::iter::once(command.value.clone())
            .chain(command.arguments.iter().skip(1).cloned())
            .collect()
    };
    if args.is_empty() || args[0].is_empty() {
        return Err("neither the command nor the image names what to run".into());
    }
    Ok(args)
}

/// The container's environment: the image's, then the agent's and the
/// command's (host sandbox paths in them made the container's), and the
/// sandbox's variables.
fn environment(
    image: &[String],
    extra: &BTreeMap<String, String>,
    command: &CommandInfo,
    sandbox: &Path,
    run_as: Option<&RunAs>,
) -> Vec<String> {
    let mut variables: BTreeMap<String, String> = image
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    variables
        .entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    let host = sandbox.to_string_lossy().into_owned();
    for (name, value) in extra.iter().chain(&command.environment) {
        let value = match value.strip_prefix(&host) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                format!("{SANDBOX_PATH}{rest}")
            }
            _ => value.clone(),
        };
        variables.insert(name.clone(), value);
    }
    for name in ["MESOS_SANDBOX", "STRATA_SANDBOX", "HOME"] {
        variables.insert(name.into(), SANDBOX_PATH.into());
    }
    if let Some(run_as) = run_as {
        variables.insert("USER".into(), run_as.user.clone());
        variables.insert("LOGNAME".into(), run_as.user.clone());
    }
    variables
        .into_iter()
        .filter(|(name, value)| {
            !name.is_empty() && !name.contains(['=', '\0']) && !value.contains('\0')
        })
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// The container's volumes, each bind-mounted (by the agent, from a
/// descriptor reached through no link) on a staging directory in the
/// bundle, which only root can reach, for the runtime to mount: an
/// absolute host path must be in one of `volume_dirs`; a relative one is
/// a directory in the sandbox, made (for `run_as`) when missing.
fn volumes(
    container: &ContainerInfo,
    sandbox: &Path,
    volume_dirs: &[PathBuf],
    run_as: Option<&RunAs>,
    bundle: &Path,
) -> Result<Vec<BindMount>, String> {
    container.validate()?;
    let staging = bundle.join("volumes");
    let mut mounts = Vec::new();
    for (index, volume) in container.volumes.iter().enumerate() {
        let failed = |e: String| format!("volume {}: {e}", volume.host_path);
        let fd = if volume.host_path.starts_with('/') {
            let host =
                std::fs::canonicalize(&volume.host_path).map_err(|e| failed(e.to_string()))?;
            if !volume_dirs.iter().any(|dir| host.starts_with(dir)) {
                return Err(failed(
                    "host paths are mounted only from the agent's --volume-dirs".into(),
                ));
            }
            let relative = host.strip_prefix("/").unwrap_or(&host).to_owned();
            directory_fd(Path::new("/"), &relative, None).map_err(failed)?
        } else {
            directory_fd(sandbox, Path::new(&volume.host_path), run_as).map_err(failed)?
        };
        let target = staging.join(index.to_string());
        std::fs::create_dir_all(&target).map_err(|e| failed(e.to_string()))?;
        let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        rustix::mount::mount_bind(source.as_str(), &target)
            .map_err(|e| failed(format!("cannot stage its mount: {e}")))?;
        mounts.push(BindMount {
            host: target,
            container: PathBuf::from(&volume.container_path),
            read_only: volume.read_only,
        });
    }
    Ok(mounts)
}

/// The directory `root`/`relative` opened through no link, each missing
/// component made (given to `owner` when there is one).
fn directory_fd(
    root: &Path,
    relative: &Path,
    owner: Option<&RunAs>,
) -> Result<std::os::fd::OwnedFd, String> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
    for component in relative.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(format!("{} is not plain names", relative.display()));
        };
        let made = match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(error) => return Err(format!("cannot make {}: {error}", name.to_string_lossy())),
        };
        let next = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| {
            format!(
                "{} is a link or not a directory: {e}",
                name.to_string_lossy()
            )
        })?;
        if made && let Some(owner) = owner {
            rustix::fs::fchown(
                &next,
                Some(rustix::process::Uid::from_raw(owner.uid)),
                Some(rustix::process::Gid::from_raw(owner.gid)),
            )
            .map_err(|e| {
                format!(
                    "cannot give {} to {}: {e}",
                    name.to_string_lossy(),
                    owner.user
                )
            })?;
        }
        dir = next;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_runs_its_command_or_its_image_s() {
        let image = crate::images::RunConfig {
            env: vec!["PATH=/opt/bin".into(), "LANG=C".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["--serve".into()],
            working_dir: None,
        };
        let shell = CommandInfo::shell("echo hi");
        assert_eq!(
            arguments(&shell, &image).unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        let own = CommandInfo {
            value: "/bin/ls".into(),
            arguments: vec!["ls".into(), "-l".into()],
            ..CommandInfo::default()
        };
        assert_eq!(arguments(&own, &image).unwrap(), ["/bin/ls", "-l"]);
        let default = CommandInfo::default();
        assert_eq!(arguments(&default, &image).unwrap(), ["/entry", "--serve"]);
        let overridden = CommandInfo {
            arguments: vec!["x".into(), "--once".into()],
            ..CommandInfo::default()
        };
        assert_eq!(
            arguments(&overridden, &image).unwrap(),
            ["/entry", "--once"]
        );
        assert!(arguments(&default, &crate::images::RunConfig::default()).is_err());

        let sandbox = Path::new("/work/sandboxes/s1");
        let extra = BTreeMap::from([
            ("MESOS_SANDBOX".to_owned(), "/work/sandboxes/s1".to_owned()),
            (
                "CREDENTIALS".to_owned(),
                "/work/sandboxes/s1/credentials".to_owned(),
            ),
            ("OTHER".to_owned(), "/work/sandboxes/s10".to_owned()),
        ]);
        let env = environment(&image.env, &extra, &shell, sandbox, None);
        assert!(env.contains(&"PATH=/opt/bin".to_owned()), "{env:?}");
        assert!(
            env.contains(&"MESOS_SANDBOX=/mnt/mesos/sandbox".to_owned()),
            "{env:?}"
        );
        assert!(
            env.contains(&"CREDENTIALS=/mnt/mesos/sandbox/credentials".to_owned()),
            "{env:?}"
        );
        assert!(
            env.contains(&"OTHER=/work/sandboxes/s10".to_owned()),
            "{env:?}"
        );
    }

    #[test]
    fn volumes_stay_in_the_sandbox_or_the_allowed_dirs() {
        if !rustix::process::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("strata-volumes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (sandbox, allowed, bundle) =
            (dir.join("sandbox"), dir.join("allowed"), dir.join("bundle"));
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::create_dir_all(allowed.join("data")).unwrap();
        std::fs::write(allowed.join("data/file"), "allowed").unwrap();
        let allowed = std::fs::canonicalize(&allowed).unwrap();
        let with = |host: &str| ContainerInfo {
            image: Some("busybox".into()),
            volumes: vec![strata_protocol::Volume {
                host_path: host.into(),
                container_path: "/v".into(),
                read_only: true,
            }],
            ..ContainerInfo::default()
        };
        // Made in the sandbox, staged in the bundle for the runtime.
        let mounts = volumes(&with("cache/a"), &sandbox, &[], None, &bundle).unwrap();
        assert!(sandbox.join("cache/a").is_dir());
        assert_eq!(mounts[0].host, bundle.join("volumes/0"));
        assert_eq!(mounts[0].container, PathBuf::from("/v"));
        assert!(mounts[0].read_only);
        std::fs::write(sandbox.join("cache/a/seen"), "").unwrap();
        assert!(bundle.join("volumes/0/seen").exists());
        // A link the task left in its sandbox leads nowhere.
        std::os::unix::fs::symlink("/etc", sandbox.join("escape")).unwrap();
        let error = volumes(&with("escape/x"), &sandbox, &[], None, &bundle).unwrap_err();
        assert!(error.contains("link"), "{error}");
        assert!(!Path::new("/etc/x").exists());
        // Absolute paths: only under the allowed directories.
        let allowed_dirs = [allowed.clone()];
        let error = volumes(&with("/etc"), &sandbox, &allowed_dirs, None, &bundle).unwrap_err();
        assert!(error.contains("--volume-dirs"), "{error}");
        let inside = allowed.join("data");
        let other = dir.join("other");
        let mounts = volumes(
            &with(inside.to_str().unwrap()),
            &sandbox,
            &allowed_dirs,
            None,
            &other,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(mounts[0].host.join("file")).unwrap(),
            "allowed"
        );
        // Removing a bundle unmounts its staged volumes first: what they
        // show stays.
        crate::images::rootfs::remove(&bundle).unwrap();
        crate::images::rootfs::remove(&other).unwrap();
        assert!(sandbox.join("cache/a/seen").exists());
        assert!(allowed.join("data/file").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
