#!/usr/bin/env python3
"""Builds a test image from Debian's busybox-static: an OCI image layout
(two gzipped layers, the second with a whiteout) and, with --docker-archive,
the same image as a `docker save` archive.

usage: make_image.py LAYOUT_DIR [--docker-archive FILE] [--tag TAG] [--with-binary PATH]

--with-binary adds PATH as /bin/NAME with the shared libraries `ldd` says it
needs, at their own paths.
"""
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ls", "cat", "echo", "id", "sleep", "head", "tr", "wc",
           "mount", "ps", "hostname", "true", "false", "test", "env", "stat", "touch", "rm"]


def tar_bytes(entries):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if kind == "exe" else 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def binary_entries(path):
    """PATH as /bin/NAME, and the libraries ldd names, their directories first."""
    entries = [("bin/" + os.path.basename(path), "exe", open(path, "rb").read())]
    found = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    dirs = set()
    for library in re.findall(r"(/\S+) \(0x", found):
        parts = library.strip("/").split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
        entries.append(("/".join(parts), "exe", open(os.path.realpath(library), "rb").read()))
    return [(d, "dir", None) for d in sorted(dirs)] + entries


def layers(extra):
    busybox = open(BUSYBOX, "rb").read()
    base = [("bin", "dir", None), ("bin/busybox", "exe", busybox)]
    base += [("bin/" + applet, "link", "busybox") for applet in APPLETS]
    base += [("etc", "dir", None),
             ("etc/image-release", "file", b"strata test image\n"),
             ("etc/removed", "file", b"the upper layer removes this\n"),
             ("tmp", "dir", None), ("proc", "dir", None), ("dev", "dir", None), ("sys", "dir", None)]
    for path in extra:
        base += binary_entries(path)
    upper = [("etc", "dir", None), ("etc/.wh.removed", "file", b""),
             ("etc/motd", "file", b"from the second layer\n")]
    return [tar_bytes(base), tar_bytes(upper)]


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    args = sys.argv[1:]
    layout = args[0]
    archive = args[args.index("--docker-archive") + 1] if "--docker-archive" in args else None
    tag = args[args.index("--tag") + 1] if "--tag" in args else "latest"
    extra = [args[i + 1] for i, arg in enumerate(args) if arg == "--with-binary"]
    tars = layers(extra)
    blobs = {}
    compressed = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Env": ["PATH=/bin", "IMAGE_VARIABLE=from-the-image"],
                   "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo the image's own command"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in tars]},
    }).encode()
    blobs[digest(config)] = config
    for blob in compressed:
        blobs[digest(blob)] = blob
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(blob), "size": len(blob)} for blob in compressed],
    }).encode()
    blobs[digest(manifest)] = manifest
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    for name, data in blobs.items():
        with open(os.path.join(layout, "blobs", "sha256", name.split(":")[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    if archive:
        entries = [("manifest.json", "file", json.dumps([{
            "Config": "config.json", "RepoTags": ["test:" + tag],
            "Layers": ["layer%d/layer.tar" % i for i in range(len(tars))]}]).encode()),
            ("config.json", "file", config)]
        for i, t in enumerate(tars):
            entries.append(("layer%d" % i, "dir", None))
            entries.append(("layer%d/layer.tar" % i, "file", t))
        with open(archive, "wb") as f:
            f.write(tar_bytes(entries))
    print(digest(manifest))


if __name__ == "__main__":
    main()
