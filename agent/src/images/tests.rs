//! The store against layouts and archives built here.

use std::path::{Path, PathBuf};

use super::layer::sha256;
use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn put(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    digest
}

/// An OCI layout at `layout` of one gzipped layer per entry of `layers`
/// (`media_type` for all), the configuration running `cmd`.
fn layout_of(layout: &Path, layers: &[Vec<u8>], media_type: &str) -> String {
    let blobs: Vec<Vec<u8>> = layers.iter().map(|tar| gzip(tar)).collect();
    let config = serde_json::json!({
        "architecture": host_architecture(),
        "os": "linux",
        "config": {"Env": ["A=1"], "Cmd": ["run"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|t| sha256(t)).collect::<Vec<_>>()},
    })
    .to_string();
    let config_digest = put(layout, config.as_bytes());
    let descriptors: Vec<_> = blobs
        .iter()
        .map(|blob| serde_json::json!({"mediaType": media_type, "digest": put(layout, blob), "size": blob.len()}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    })
    .to_string();
    let manifest_digest = put(layout, manifest.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len(),
        "platform": {"architecture": host_architecture(), "os": "linux"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    manifest_digest
}

fn store(dir: &Path, max_bytes: u64) -> ImageStore {
    let store = ImageStore::open(
        &dir.join("store"),
        &StoreOptions {
            max_bytes,
            ca_bundle: PathBuf::from("/nonexistent"),
            image_dirs: vec![dir.to_owned()],
        },
    )
    .unwrap();
    store.start_collecting();
    store
}

#[test]
fn a_layout_is_unpacked_once_and_held_while_used() {
    let dir = scratch("layout");
    let layout = dir.join("layout");
    let digest = layout_of(
        &layout,
        &[tar_of(&[("a", b"lower")]), tar_of(&[("b", b"upper")])],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let store = store(&dir, 1 << 30);
    let image = store.provision(layout.to_str().unwrap()).unwrap();
    assert_eq!(image.digest, digest);
    assert_eq!(image.layers.len(), 2);
    assert_eq!(std::fs::read(image.layers[0].join("a")).unwrap(), b"lower");
    assert_eq!(std::fs::read(image.layers[1].join("b")).unwrap(), b"upper");
    assert_eq!(image.config.cmd, ["run"]);
    assert_eq!(image.config.env, ["A=1"]);
    // Cached: its layer blobs are no longer needed.
    for layer in &image.layers {
        let hex = layer.file_name().unwrap();
        std::fs::remove_file(layout.join("blobs/sha256").join(hex)).unwrap();
    }
    let again = store.provision(layout.to_str().unwrap()).unwrap();
    assert_eq!(again, image);
    // Known after a restart, too.
    drop(store);
    let reopened = self::store(&dir, 1 << 30);
    assert_eq!(reopened.provision(layout.to_str().unwrap()).unwrap(), image);
    assert!(reopened.cached_bytes() > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_docker_save_archive_runs_and_bad_images_are_refused() {
    let dir = scratch("archive");
    let layer = tar_of(&[("etc/motd", b"archived")]);
    let config = serde_json::json!({
        "architecture": host_architecture(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!([{"Config": "c.json", "Layers": ["l/layer.tar"]}]).to_string();
    let archive = tar_of(&[
        ("manifest.json", manifest.as_bytes()),
        ("c.json", config.as_bytes()),
        ("l/layer.tar", &layer),
    ]);
    std::fs::write(dir.join("image.tar"), &archive).unwrap();
    let store = store(&dir, 1 << 30);
    let image = store
        .provision(dir.join("image.tar").to_str().unwrap())
        .unwrap();
    assert_eq!(image.digest, sha256(config.as_bytes()));
    assert_eq!(
        std::fs::read(image.layers[0].join("etc/motd")).unwrap(),
        b"archived"
    );

    // A layer tar that is not what the configuration says.
    let lying = tar_of(&[
        ("manifest.json", manifest.as_bytes()),
        (
            "c.json",
            config.replace(&sha256(&layer), &sha256(b"x")).as_bytes(),
        ),
        ("l/layer.tar", &layer),
    ]);
    std::fs::write(dir.join("lying.tar"), lying).unwrap();
    let error = store
        .provision(dir.join("lying.tar").to_str().unwrap())
        .unwrap_err();
    assert!(error.contains("digest mismatch"), "{error}");
    // A layer media type Strata does not unpack.
    let zstd = dir.join("zstd");
    layout_of(
        &zstd,
        std::slice::from_ref(&layer),
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let error = store.provision(zstd.to_str().unwrap()).unwrap_err();
    assert!(error.contains("unsupported layer media type"), "{error}");
    // Not there, not an image, and a hostile archive path.
    let error = store.provision("/nonexistent/image").unwrap_err();
    assert!(error.contains("not found"), "{error}");
    std::fs::write(dir.join("junk.tar"), b"not a tar at all").unwrap();
    assert!(
        store
            .provision(dir.join("junk.tar").to_str().unwrap())
            .is_err()
    );
    let escaping = serde_json::json!([{"Config": "../../etc/passwd", "Layers": []}]).to_string();
    std::fs::write(
        dir.join("escaping.tar"),
        tar_of(&[("manifest.json", escaping.as_bytes())]),
    )
    .unwrap();
    let error = store
        .provision(dir.join("escaping.tar").to_str().unwrap())
        .unwrap_err();
    assert!(error.contains("outside"), "{error}");
    // Nothing half done is kept.
    assert_eq!(std::fs::read_dir(dir.join("store/tmp")).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_least_recently_used_image_not_in_use_is_collected_over_the_bound() {
    let dir = scratch("collect");
    let (first, second) = (dir.join("first"), dir.join("second"));
    layout_of(
        &first,
        &[tar_of(&[("f", &[1u8; 3000])])],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    layout_of(
        &second,
        &[tar_of(&[("s", &[2u8; 3000])])],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // Room for one image's 3,000 bytes.
    let store = store(&dir, 4000);
    let one = store.provision(first.to_str().unwrap()).unwrap();
    // Both in use: both kept, over the bound.
    let two = store.provision(second.to_str().unwrap()).unwrap();
    assert!(one.layers[0].is_dir() && two.layers[0].is_dir());
    // The first released: it goes.
    store.release(&one.digest);
    assert!(!one.layers[0].exists());
    assert!(two.layers[0].is_dir());
    assert_eq!(store.cached_bytes(), 3000);
    // Provisioned again, it is fetched again.
    let again = store.provision(first.to_str().unwrap()).unwrap();
    assert!(again.layers[0].is_dir());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_oci_archive_is_its_layout_in_a_tar() {
    let dir = scratch("oci-archive");
    let layout = dir.join("layout");
    let digest = layout_of(
        &layout,
        &[tar_of(&[("hello", b"from an archive")])],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    // The layout's files in one tar, as `skopeo copy oci-archive:` makes.
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", &layout).unwrap();
    std::fs::write(dir.join("image.tar"), builder.into_inner().unwrap()).unwrap();
    let store = store(&dir, 1 << 30);
    let image = store
        .provision(dir.join("image.tar").to_str().unwrap())
        .unwrap();
    assert_eq!(image.digest, digest);
    assert_eq!(
        std::fs::read(image.layers[0].join("hello")).unwrap(),
        b"from an archive"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
