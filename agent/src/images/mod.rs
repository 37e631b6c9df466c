//! The agent's image store: images from an OCI image layout directory, a
//! `docker save` or OCI archive, or a Docker Registry API v2 registry;
//! layers checked against their digests, unpacked once (whiteouts in
//! overlayfs's format), cached by digest under a size bound and
//! collected least recently used first.
//!
//! All of it is blocking IO, for tokio's blocking pool. Pulls run one at
//! a time (a second task of an image waits for the first's pull and
//! finds it cached).

pub mod layer;
pub mod reference;
pub mod registry;
pub mod rootfs;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use layer::{Compression, Expected, sha256};
use reference::{ImageSource, Reference};
use registry::{MAX_DOCUMENT_BYTES, Registry};

/// The default bound on the unpacked layers an agent keeps.
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// The most layers an image may have (overlayfs takes a few hundred).
pub const MAX_LAYERS: usize = 128;

/// What an image says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `NAME=value`.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
}

/// An image ready to run: its layers unpacked, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its identity: the manifest's digest (a `docker save` image's:
    /// its configuration's).
    pub digest: String,
    pub layers: Vec<PathBuf>,
    pub config: RunConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedImage {
    /// Layer keys (digests), bottom first.
    layers: Vec<String>,
    config: RunConfig,
    last_used_ms: u64,
}

/// An unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedLayer {
    /// The bytes its files take.
    bytes: u64,
    /// The digest of its tar (the image configuration's `diff_ids`): an
    /// image whose configuration says otherwise does not reuse it.
    diff_id: String,
}

/// What the store keeps on disk (`catalog.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    /// Images by identity.
    images: BTreeMap<String, CachedImage>,
    /// Names an image was asked for by, and the identity they led to.
    names: BTreeMap<String, String>,
    /// Unpacked layers by key.
    layers: BTreeMap<String, CachedLayer>,
    /// Images containers run in, and how many (not kept on disk: the
    /// agent holds its containers' images again when it recovers them).
    #[serde(skip)]
    in_use: BTreeMap<String, usize>,
    /// Layers pulls under way use, and how many: never collected.
    #[serde(skip)]
    pinned: BTreeMap<String, usize>,
}

impl Catalog {
    fn total_bytes(&self) -> u64 {
        self.layers.values().map(|layer| layer.bytes).sum()
    }
}

/// An agent's images.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    max_bytes: u64,
    /// Where images named by a path may be (canonical).
    image_dirs: Vec<PathBuf>,
    registry: Registry,
    catalog: Mutex<Catalog>,
    /// Images being pulled, by what they were asked for: a second ask
    /// waits for the first's pull (and finds it cached); others go on.
    pulling: Mutex<std::collections::BTreeSet<String>>,
    pulled: std::sync::Condvar,
    /// Whether collection may run (see [`ImageStore::start_collecting`]).
    collecting: std::sync::atomic::AtomicBool,
}

/// The most pulls under way at once.
const MAX_PULLS: usize = 2;

/// How long one pull may take, all of its layers together.
const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn hex_of(digest: &str) -> Result<&str, String> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))
}

/// Options of an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The most bytes of unpacked layers kept (besides images in use).
    pub max_bytes: u64,
    /// The CAs (PEM) trusted for registries spoken to over HTTPS.
    pub ca_bundle: PathBuf,
    /// Where images named by a path on the agent may be.
    pub image_dirs: Vec<PathBuf>,
}

/// Removes the pull of `name` from those under way, and wakes whoever
/// waits for it, however the pull ends.
struct Pulling<'a> {
    store: &'a ImageStore,
    name: String,
}

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.store
            .pulling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.name);
        self.store.pulled.notify_all();
    }
}

impl ImageStore {
    /// The store in `dir` (made private to the agent's user). What an
    /// earlier life left half done is removed; an unreadable catalog is
    /// logged and its layers left alone (containers may run on them).
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<ImageStore, String> {
        crate::users::make_private(dir)
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        for sub in ["layers", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot make {}: {e}", dir.join(sub).display()))?;
        }
        let path = dir.join("catalog.json");
        let disk = strata_runtime::durable::Disk::real();
        let (mut catalog, trusted): (Catalog, bool) = match disk.read_bounded(&path, 64 << 20) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(catalog) => (catalog, true),
                Err(error) => {
                    warn!(path = %path.display(), %error, "the image catalog is unreadable; its layers are left in place, unused");
                    (Catalog::default(), false)
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (Catalog::default(), true)
            }
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let layers_dir = dir.join("layers");
        catalog
            .layers
            .retain(|key, _| hex_of(key).is_ok_and(|hex| layers_dir.join(hex).is_dir()));
        let layers = &catalog.layers;
        catalog
            .images
            .retain(|_, image| image.layers.iter().all(|key| layers.contains_key(key)));
        let images = &catalog.images;
        catalog
            .names
            .retain(|_, digest| images.contains_key(digest));
        // Layers on disk the catalog does not list (a catalog that was
        // unreadable, or a write lost): kept, counted, reused by no image
        // (no diff_id), and collected like any unused layer once the agent
        // has taken back its containers (which pin theirs).
        if let Ok(entries) = std::fs::read_dir(&layers_dir) {
            for entry in entries.flatten() {
                let key = format!("sha256:{}", entry.file_name().to_string_lossy());
                if hex_of(&key).is_ok() && !catalog.layers.contains_key(&key) {
                    let bytes = tree_bytes(&entry.path());
                    catalog.layers.insert(
                        key,
                        CachedLayer {
                            bytes,
                            diff_id: String::new(),
                        },
                    );
                } else if hex_of(&key).is_err() {
                    let _ = layer::remove_any(&entry.path());
                }
            }
        }
        if !trusted {
            // Kept for a person to look at, not written over.
            let aside = dir.join(format!("catalog.json.unreadable-{}", now_ms()));
            let _ = std::fs::rename(&path, &aside);
        }
        let image_dirs = options
            .image_dirs
            .iter()
            .filter_map(|allowed| match std::fs::canonicalize(allowed) {
                Ok(canonical) => Some(canonical),
                Err(error) => {
                    warn!(dir = %allowed.display(), %error, "an image directory is not there; ignored");
                    None
                }
            })
            .collect();
        let store = ImageStore {
            dir: dir.to_owned(),
            max_bytes: options.max_bytes,
            image_dirs,
            registry: Registry::new(&options.ca_bundle),
            catalog: Mutex::new(catalog),
            pulling: Mutex::default(),
            pulled: std::sync::Condvar::new(),
            collecting: std::sync::atomic::AtomicBool::new(false),
        };
        store.save(&store.catalog());
        Ok(store)
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, catalog: &Catalog) {
        let path = self.dir.join("catalog.json");
        let written = serde_json::to_vec(catalog)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                strata_runtime::durable::Disk::real().write_atomically(&path, &bytes)
            });
        if let Err(error) = written {
            warn!(path = %path.display(), %error, "cannot write the image catalog");
        }
    }

    fn layer_dir(&self, key: &str) -> PathBuf {
        self.dir
            .join("layers")
            .join(key.strip_prefix("sha256:").unwrap_or(key))
    }

    /// The unpacked layers' bytes.
    pub fn cached_bytes(&self) -> u64 {
        self.catalog().total_bytes()
    }

    /// The image `image` names (see [`reference::parse`]), fetched and
    /// unpacked if not cached, and held (in use) until [`Self::release`].
    pub fn provision(&self, image: &str) -> Result<Image, String> {
        let source = match reference::parse(image)? {
            ImageSource::Path(path) => ImageSource::Path(self.allowed(&path)?),
            registry => registry,
        };
        let name = match &source {
            ImageSource::Registry(reference) => Some(reference.to_string()),
            // A layout's index is read each time (it may have changed); an
            // archive is known by its size and time.
            ImageSource::Path(path) if path.is_file() => {
                std::fs::metadata(path).ok().and_then(|metadata| {
                    let modified = metadata.modified().ok()?;
                    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                    Some(format!(
                        "{}@{}:{}",
                        path.display(),
                        since.as_nanos(),
                        metadata.len()
                    ))
                })
            }
            ImageSource::Path(_) => None,
        };
        if let Some(name) = &name
            && let Some(held) = self.hold_named(name)
        {
            return Ok(held);
        }
        // Known by what it resolves to (`busybox` and
        // `docker.io/library/busybox:latest` are one pull).
        let key = match (&name, &source) {
            (Some(name), _) => name.clone(),
            (None, ImageSource::Path(path)) => path.display().to_string(),
            (None, ImageSource::Registry(reference)) => reference.to_string(),
        };
        let _pulling = self.pull(&key);
        if let Some(name) = &name
            && let Some(held) = self.hold_named(name)
        {
            return Ok(held);
        }
        let scratch = self.dir.join("tmp").join(format!("{:016x}", rand_u64()));
        let mut pinned = Vec::new();
        let result = self.fetch(&source, &scratch, &mut pinned);
        let _ = std::fs::remove_dir_all(&scratch);
        let mut catalog = self.catalog();
        for key in pinned {
            if let Some(count) = catalog.pinned.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    catalog.pinned.remove(&key);
                }
            }
        }
        let (digest, layers, config) = match result {
            Ok(fetched) => fetched,
            Err(error) => {
                // What it unpacked before it failed goes when unused.
                self.collect(&mut catalog);
                self.save(&catalog);
                return Err(error);
            }
        };
        catalog.images.insert(
            digest.clone(),
            CachedImage {
                layers: layers.clone(),
                config: config.clone(),
                last_used_ms: now_ms(),
            },
        );
        if let Some(name) = name {
            catalog.names.insert(name, digest.clone());
        }
        *catalog.in_use.entry(digest.clone()).or_default() += 1;
        self.collect(&mut catalog);
        self.save(&catalog);
        Ok(Image {
            digest,
            layers: layers.iter().map(|key| self.layer_dir(key)).collect(),
            config,
        })
    }

    /// Waits until no pull of `image` is under way and fewer than
    /// [`MAX_PULLS`] are (each may fill the cache's bound in scratch
    /// space), then marks one.
    fn pull(&self, image: &str) -> Pulling<'_> {
        let mut pulling = self
            .pulling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while pulling.contains(image) || pulling.len() >= MAX_PULLS {
            pulling = self
                .pulled
                .wait(pulling)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        pulling.insert(image.to_owned());
        Pulling {
            store: self,
            name: image.to_owned(),
        }
    }

    /// `path` (an image named by a path) made canonical; an error unless
    /// it is in one of the agent's image directories.
    fn allowed(&self, path: &Path) -> Result<PathBuf, String> {
        let canonical = std::fs::canonicalize(path)
            .map_err(|_| format!("image {} not found on the agent", path.display()))?;
        if !self.image_dirs.iter().any(|dir| canonical.starts_with(dir)) {
            return Err(format!(
                "image {} is not in a directory the agent reads images from (--image-dirs)",
                path.display()
            ));
        }
        Ok(canonical)
    }

    fn hold_named(&self, name: &str) -> Option<Image> {
        let mut catalog = self.catalog();
        let digest = catalog.names.get(name)?.clone();
        // Its last use is written with the next change of the catalog:
        // a cached launch does not wait for the disk.
        self.touch(&mut catalog, &digest)
    }

    /// Marks cached image `digest` used now and in use once more; `None`
    /// (and forgotten) if a layer of it is gone from the disk.
    fn touch(&self, catalog: &mut Catalog, digest: &str) -> Option<Image> {
        let cached = catalog.images.get(digest)?;
        let layers: Vec<PathBuf> = cached
            .layers
            .iter()
            .map(|key| self.layer_dir(key))
            .collect();
        if !layers.iter().all(|layer| layer.is_dir()) {
            warn!(image = %digest, "a cached image lost a layer; it is fetched again");
            catalog.images.remove(digest);
            catalog.names.retain(|_, known| known != digest);
            return None;
        }
        let cached = catalog.images.get_mut(digest)?;
        cached.last_used_ms = now_ms();
        let image = Image {
            digest: digest.to_owned(),
            layers,
            config: cached.config.clone(),
        };
        *catalog.in_use.entry(digest.to_owned()).or_default() += 1;
        Some(image)
    }

    /// Holds image `digest` for a container the agent took back.
    pub fn hold(&self, digest: &str) {
        let mut catalog = self.catalog();
        *catalog.in_use.entry(digest.to_owned()).or_default() += 1;
    }

    /// Pins layers `keys` (a container's, read from its bundle) against
    /// collection until [`Self::unpin`]: a container keeps its layers
    /// even if the catalog lost its image.
    pub fn pin(&self, keys: &[String]) {
        let mut catalog = self.catalog();
        for key in keys {
            *catalog.pinned.entry(key.clone()).or_default() += 1;
        }
    }

    /// Undoes [`Self::pin`].
    pub fn unpin(&self, keys: &[String]) {
        let mut catalog = self.catalog();
        for key in keys {
            if let Some(count) = catalog.pinned.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    catalog.pinned.remove(key);
                }
            }
        }
    }

    /// The layer keys of image `digest`, bottom first.
    pub fn layer_keys(&self, digest: &str) -> Vec<String> {
        self.catalog()
            .images
            .get(digest)
            .map(|image| image.layers.clone())
            .unwrap_or_default()
    }

    /// Lets collection run: once the agent has taken back its containers
    /// (and pinned their layers), not before.
    pub fn start_collecting(&self) {
        self.collecting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut catalog = self.catalog();
        self.collect(&mut catalog);
        self.save(&catalog);
    }

    /// A container of image `digest` is gone; unused images may go once
    /// the cache is over its bound.
    pub fn release(&self, digest: &str) {
        let mut catalog = self.catalog();
        if let Some(count) = catalog.in_use.get_mut(digest) {
            *count -= 1;
            if *count == 0 {
                catalog.in_use.remove(digest);
            }
        }
        self.collect(&mut catalog);
        self.save(&catalog);
    }

    /// Drops the least recently used images not in use while the layers
    /// take more than the bound, then the layers no image uses and no
    /// pull has pinned.
    fn collect(&self, catalog: &mut Catalog) {
        if !self.collecting.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        while catalog.total_bytes() > self.max_bytes {
            let Some(oldest) = catalog
                .images
                .iter()
                .filter(|(digest, _)| !catalog.in_use.contains_key(*digest))
                .min_by_key(|(_, image)| image.last_used_ms)
                .map(|(digest, _)| digest.clone())
            else {
                break;
            };
            info!(image = %oldest, "image collected from the cache");
            catalog.images.remove(&oldest);
            catalog.names.retain(|_, digest| *digest != oldest);
            self.sweep(catalog);
        }
        self.sweep(catalog);
    }

    /// Removes the layers no image uses and no pull has pinned.
    fn sweep(&self, catalog: &mut Catalog) {
        let used: std::collections::BTreeSet<&String> = catalog
            .images
            .values()
            .flat_map(|image| &image.layers)
            .collect();
        let unused: Vec<String> = catalog
            .layers
            .keys()
            .filter(|key| !used.contains(key) && !catalog.pinned.contains_key(*key))
            .cloned()
            .collect();
        for key in unused {
            if let Err(error) = layer::remove_any(&self.layer_dir(&key)) {
                warn!(%error, "cannot remove an unused layer");
            }
            catalog.layers.remove(&key);
        }
    }

    /// Fetches and unpacks what `source` names (work files in `scratch`),
    /// pinning the layers it uses (in `pinned`) against collection: the
    /// image's identity, layer keys and run configuration.
    fn fetch(
        &self,
        source: &ImageSource,
        scratch: &Path,
        pinned: &mut Vec<String>,
    ) -> Result<(String, Vec<String>, RunConfig), String> {
        let deadline = std::time::Instant::now() + PULL_TIMEOUT;
        let plan = match source {
            ImageSource::Registry(reference) => self.registry_plan(reference)?,
            ImageSource::Path(path) if path.is_dir() => layout_plan(path)?,
            ImageSource::Path(path) if path.is_file() => {
                let unpacked = scratch.join("archive");
                unpack_archive(path, &unpacked, self.max_bytes)?;
                let unpacked = std::fs::canonicalize(&unpacked)
                    .map_err(|e| format!("cannot read the unpacked archive: {e}"))?;
                if unpacked.join("index.json").is_file() {
                    layout_plan(&unpacked)?
                } else if unpacked.join("manifest.json").is_file() {
                    docker_archive_plan(&unpacked)?
                } else {
                    return Err(format!(
                        "{} is neither an OCI archive (index.json) nor a docker save archive (manifest.json)",
                        path.display()
                    ));
                }
            }
            ImageSource::Path(path) => {
                return Err(format!(
                    "image {} is neither a directory nor a file",
                    path.display()
                ));
            }
        };
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&plan.config)
            .map_err(|e| format!("the image configuration is malformed: {e}"))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != plan.layers.len() {
            return Err(format!(
                "the image has {} layers and its configuration {} diff_ids",
                plan.layers.len(),
                diff_ids.len()
            ));
        }
        let mut keys = Vec::with_capacity(plan.layers.len());
        // What the image's layers take unpacked, together: at most the
        // cache's bound.
        let mut left = self.max_bytes;
        for (index, (layer, diff_id)) in plan.layers.iter().zip(diff_ids).enumerate() {
            let key = layer.digest.clone().unwrap_or_else(|| diff_id.clone());
            hex_of(&key)?;
            let dir = self.layer_dir(&key);
            let cached = {
                let mut catalog = self.catalog();
                *catalog.pinned.entry(key.clone()).or_default() += 1;
                pinned.push(key.clone());
                catalog
                    .layers
                    .get(&key)
                    .is_some_and(|cached| cached.diff_id == *diff_id)
                    && dir.is_dir()
            };
            if !cached {
                let target = scratch.join(format!("layer-{index}"));
                let blob = (layer.open)()?;
                let expected = Expected {
                    digest: layer.digest.clone(),
                    size: layer.size,
                    diff_id: Some(diff_id.clone()),
                    compression: layer.compression,
                    max_bytes: left,
                    deadline: Some(deadline),
                };
                let bytes = layer::unpack(blob, &expected, &target)
                    .map_err(|e| format!("layer {key}: {e}"))?;
                left = left.saturating_sub(bytes);
                let mut catalog = self.catalog();
                let placed = catalog
                    .layers
                    .get(&key)
                    .is_some_and(|cached| cached.diff_id == *diff_id)
                    && dir.is_dir();
                // Another pull may have placed it meanwhile: that one
                // stays (containers may use it already).
                if !placed {
                    layer::remove_any(&dir)?;
                    // On the disk before the catalog names it.
                    if let Ok(fd) = rustix::fs::open(
                        &target,
                        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                        rustix::fs::Mode::empty(),
                    ) {
                        let _ = rustix::fs::syncfs(&fd);
                    }
                    std::fs::rename(&target, &dir)
                        .map_err(|e| format!("cannot keep layer {key}: {e}"))?;
                    catalog.layers.insert(
                        key.clone(),
                        CachedLayer {
                            bytes,
                            diff_id: diff_id.clone(),
                        },
                    );
                    self.save(&catalog);
                }
            }
            keys.push(key);
        }
        let run = config
            .config()
            .as_ref()
            .map(|run| RunConfig {
                env: run.env().clone().unwrap_or_default(),
                entrypoint: run.entrypoint().clone().unwrap_or_default(),
                cmd: run.cmd().clone().unwrap_or_default(),
                working_dir: run.working_dir().clone().filter(|dir| !dir.is_empty()),
            })
            .unwrap_or_default();
        Ok((plan.identity, keys, run))
    }

    fn registry_plan(&self, reference: &Reference) -> Result<Plan<'_>, String> {
        let (mut bytes, media_type) = self.registry.manifest(reference, &reference.reference)?;
        if let Some(digest) = reference.digest()
            && sha256(&bytes) != digest
        {
            return Err(format!(
                "digest mismatch: {reference}'s manifest is {}",
                sha256(&bytes)
            ));
        }
        if is_index(&media_type, &bytes) {
            let chosen = choose_manifest(&bytes)?;
            let (manifest, _) = self.registry.manifest(reference, &chosen)?;
            if sha256(&manifest) != chosen {
                return Err(format!(
                    "digest mismatch: manifest {chosen} is {}",
                    sha256(&manifest)
                ));
            }
            bytes = manifest;
        }
        let registry = &self.registry;
        manifest_plan(
            sha256(&bytes),
            &bytes,
            |digest| {
                let mut config = Vec::new();
                registry
                    .blob(reference, digest)?
                    .take(MAX_DOCUMENT_BYTES + 1)
                    .read_to_end(&mut config)
                    .map_err(|e| format!("cannot read the image configuration: {e}"))?;
                Ok(config)
            },
            // The registry is borrowed: a blob is asked for when needed.
            |digest| {
                let reference = reference.clone();
                Box::new(move || Ok(Box::new(registry.blob(&reference, &digest)?) as Box<dyn Read>))
            },
        )
    }
}

/// What an image is made of, before it is fetched.
struct Plan<'a> {
    identity: String,
    /// The image configuration's bytes, checked.
    config: Vec<u8>,
    layers: Vec<PlannedLayer<'a>>,
}

struct PlannedLayer<'a> {
    digest: Option<String>,
    size: Option<u64>,
    compression: Compression,
    open: Opener<'a>,
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type.contains("index") || media_type.contains("manifest.list") {
        return true;
    }
    // Without a media type, an index is what has `manifests`.
    media_type.is_empty()
        && serde_json::from_slice::<serde_json::Value>(bytes)
            .is_ok_and(|value| value.get("manifests").is_some())
}

/// This host's architecture in OCI's words.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The digest of the manifest in index `bytes` for this host (linux and
/// its architecture; an entry without a platform fits any).
fn choose_manifest(bytes: &[u8]) -> Result<String, String> {
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| format!("the image index is malformed: {e}"))?;
    let fits = |descriptor: &&oci_spec::image::Descriptor| match descriptor.platform() {
        None => true,
        Some(platform) => {
            platform.os().to_string() == "linux"
                && platform.architecture().to_string() == host_architecture()
        }
    };
    index
        .manifests()
        .iter()
        .find(fits)
        .map(|descriptor| descriptor.digest().to_string())
        .ok_or_else(|| {
            format!(
                "the image has no manifest for linux/{} among {}",
                host_architecture(),
                index.manifests().len()
            )
        })
}

fn parse_manifest(bytes: &[u8]) -> Result<oci_spec::image::ImageManifest, String> {
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("the image manifest is malformed: {e}"))?;
    if manifest.layers().len() > MAX_LAYERS {
        return Err(format!("the image has more than {MAX_LAYERS} layers"));
    }
    Ok(manifest)
}

/// What opens file `path` to read, when it is needed.
fn file_opener(path: PathBuf) -> Box<dyn Fn() -> Result<Box<dyn Read>, String>> {
    Box::new(move || {
        std::fs::File::open(&path)
            .map(|file| Box::new(std::io::BufReader::new(file)) as Box<dyn Read>)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    })
}

/// Reads at most [`MAX_DOCUMENT_BYTES`] of `path`.
fn read_document(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "{} is larger than {MAX_DOCUMENT_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The bytes the files under `dir` take (at least a block each).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(metadata.len().max(512));
            if metadata.is_dir() {
                total = total.saturating_add(tree_bytes(&entry.path()));
            }
        }
    }
    total
}

/// `root` (canonical) joined with `relative`, as a regular file that is
/// in `root` after every link: what an image's files are read through.
fn file_beneath(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let path = root.join(relative);
    let canonical = std::fs::canonicalize(&path)
        .map_err(|e| format!("{} is missing from the image: {e}", relative.display()))?;
    if !canonical.starts_with(root) {
        return Err(format!("{} leads outside the image", relative.display()));
    }
    if !std::fs::metadata(&canonical).is_ok_and(|metadata| metadata.is_file()) {
        return Err(format!("{} is not a regular file", relative.display()));
    }
    Ok(canonical)
}

/// A blob of an OCI layout, by digest.
fn layout_blob(layout: &Path, digest: &str) -> Result<PathBuf, String> {
    file_beneath(
        layout,
        &Path::new("blobs").join("sha256").join(hex_of(digest)?),
    )
}

/// The plan of the image in OCI layout `layout`: its index's manifest
/// for this host (through nested indexes).
fn layout_plan(layout: &Path) -> Result<Plan<'static>, String> {
    let index = file_beneath(layout, Path::new("index.json"))
        .and_then(|index| read_document(&index))
        .map_err(|e| format!("not an OCI image layout: {e}"))?;
    let mut digest = choose_manifest(&index)?;
    let mut bytes = read_document(&layout_blob(layout, &digest)?)?;
    for _ in 0..4 {
        if sha256(&bytes) != digest {
            return Err(format!(
                "digest mismatch: blob {digest} of the layout is {}",
                sha256(&bytes)
            ));
        }
        if !is_index("", &bytes) {
            break;
        }
        digest = choose_manifest(&bytes)?;
        bytes = read_document(&layout_blob(layout, &digest)?)?;
    }
    manifest_plan(
        digest,
        &bytes,
        |digest| read_document(&layout_blob(layout, digest)?),
        // Found when it is needed: a layer already unpacked is not read.
        |digest| {
            let root = layout.to_owned();
            Box::new(move || file_opener(layout_blob(&root, &digest)?)())
        },
    )
}

/// What opens a layer's blob, when it is needed.
type Opener<'a> = Box<dyn Fn() -> Result<Box<dyn Read>, String> + 'a>;

/// The plan of image `identity` from manifest `bytes`: its configuration
/// as `read_config` reads it (by digest), checked; each layer opened by
/// what `open` makes of its digest.
fn manifest_plan<'a>(
    identity: String,
    bytes: &[u8],
    read_config: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    open: impl Fn(String) -> Opener<'a>,
) -> Result<Plan<'a>, String> {
    let manifest = parse_manifest(bytes)?;
    let config_digest = manifest.config().digest().to_string();
    let config = read_config(&config_digest)?;
    if sha256(&config) != config_digest {
        return Err(format!(
            "digest mismatch: the image configuration is not {config_digest}"
        ));
    }
    let mut layers = Vec::new();
    for descriptor in manifest.layers() {
        let digest = descriptor.digest().to_string();
        hex_of(&digest)?;
        layers.push(PlannedLayer {
            digest: Some(digest.clone()),
            size: Some(descriptor.size()),
            compression: layer::compression_of(descriptor.media_type().as_ref())?,
            open: open(digest),
        });
    }
    Ok(Plan {
        identity,
        config,
        layers,
    })
}

/// The plan of the first image in a `docker save` archive unpacked at
/// `dir`: its `manifest.json` names the configuration and the layer tars
/// (checked against the configuration's diff_ids).
fn docker_archive_plan(dir: &Path) -> Result<Plan<'static>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&read_document(&file_beneath(
        dir,
        Path::new("manifest.json"),
    )?)?)
    .map_err(|e| format!("the archive's manifest.json is malformed: {e}"))?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or("the archive's manifest.json lists no image")?;
    if entry.layers.len() > MAX_LAYERS {
        return Err(format!("the image has more than {MAX_LAYERS} layers"));
    }
    let inside = |name: &str| -> Result<PathBuf, String> {
        let relative = Path::new(name);
        if relative
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)))
        {
            file_beneath(dir, relative)
        } else {
            Err(format!("the archive names {name:?} outside itself"))
        }
    };
    let config = read_document(&inside(&entry.config)?)?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let path = inside(name)?;
        layers.push(PlannedLayer {
            digest: None,
            size: None,
            compression: Compression::Sniff,
            open: file_opener(path),
        });
    }
    Ok(Plan {
        identity: sha256(&config),
        config,
        layers,
    })
}

/// Unpacks archive `path` (a tar, plain or gzipped) into `dir`, at most
/// `max_bytes` of it.
fn unpack_archive(path: &Path, dir: &Path, max_bytes: u64) -> Result<(), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let expected = Expected {
        digest: None,
        size: None,
        diff_id: None,
        compression: Compression::Sniff,
        max_bytes,
        deadline: None,
    };
    layer::unpack(std::io::BufReader::new(file), &expected, dir)
        .map(|_| ())
        .map_err(|e| format!("the archive {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
