#!/usr/bin/env python3
"""A Docker Registry HTTP API v2 on loopback serving one OCI image layout
(read-only), for tests: every repository has the layout's image; tag
`index` answers with the layout's index (a manifest list), other tags and
the manifest's digest with the manifest. Requests need a bearer token from
/token (a 401 challenge says where). Prints its port, then one line per
blob request ("blob DIGEST") on stdout.

usage: registry.py LAYOUT_DIR
"""
import http.server
import json
import os
import sys
import threading

LAYOUT = sys.argv[1]
TOKEN = "test-token-7c1e"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
lock = threading.Lock()


def blob(digest):
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
        return None
    path = os.path.join(LAYOUT, "blobs", "sha256", hex_digest)
    return open(path, "rb").read() if os.path.isfile(path) else None


class Registry(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.startswith("/token"):
            return self.answer(200, json.dumps({"token": TOKEN}).encode())
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            challenge = 'Bearer realm="http://127.0.0.1:%d/token",service="test-registry"' % port
            return self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', headers=[("WWW-Authenticate", challenge)])
        parts = self.path.split("/")
        if self.path == "/v2/":
            return self.answer(200, b"{}")
        if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "manifests":
            index = open(os.path.join(LAYOUT, "index.json"), "rb").read()
            which = parts[-1]
            if which == "index":
                return self.answer(200, index, INDEX)
            manifest_digest = json.loads(index)["manifests"][0]["digest"]
            if which.startswith("sha256:") and which != manifest_digest:
                return self.answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return self.answer(200, blob(manifest_digest), MANIFEST)
        if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "blobs":
            data = blob(parts[-1])
            if data is None:
                return self.answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            with lock:
                print("blob " + parts[-1], flush=True)
            return self.answer(200, data, "application/octet-stream")
        return self.answer(404, b"{}")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
print(server.server_address[1], flush=True)
server.serve_forever()
