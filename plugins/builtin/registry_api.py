"""Just enough of the registry v2 API to prove what the seed needed: schema-2 pushes with foreign layers."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import requests

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


@dataclass
class PushResult:
    status: int
    accepted: bool
    error_code: str | None
    detail: str
    digest: str | None = None


def ping(base_url: str, timeout: float = 5, auth=None) -> int:
    """Status of GET /v2/ (200, or 401 with auth required)."""
    return requests.get(f"{base_url.rstrip('/')}/v2/", timeout=timeout, auth=auth).status_code


def _upload_blob(base: str, repo: str, data: bytes, timeout: float, auth) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=timeout, auth=auth)
    start.raise_for_status()
    location = start.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{sep}digest={digest}",
        data=data,
        timeout=timeout,
        auth=auth,
        headers={"Content-Type": "application/octet-stream"},
    )
    done.raise_for_status()
    return digest


def push_foreign_layer_manifest(base_url: str, repo: str, tag: str, timeout: float = 10, auth=None) -> PushResult:
    """PUT a schema-2 manifest whose only layer is foreign (as a Windows nanoserver image has).

    Harbor 1.1's registry answered MANIFEST_BLOB_UNKNOWN ("manifest blob unknown: blob unknown to
    registry"); a registry that allows foreign-layer URLs answers 201.
    """
    base = base_url.rstrip("/")
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "windows",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(b"vicflow-foreign-layer").hexdigest()],
            },
        }
    ).encode()
    config_digest = _upload_blob(base, repo, config, timeout, auth)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
        "layers": [
            {
                "mediaType": FOREIGN_LAYER,
                "size": 1024,
                "digest": "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest(),
                "urls": ["https://go.microsoft.com/fwlink/?linkid=837858"],
            }
        ],
    }
    response = requests.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=json.dumps(manifest),
        timeout=timeout,
        auth=auth,
        headers={"Content-Type": MANIFEST_V2},
    )
    code = None
    try:
        errors = response.json().get("errors") or []
        codes = [e.get("code") for e in errors]
        code = next((c for c in codes if c != "UNKNOWN"), codes[0] if codes else None)  # the specific one
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.text[:300]
    except ValueError:
        detail = response.text[:300]
    return PushResult(
        response.status_code, response.status_code == 201, code, detail, response.headers.get("Docker-Content-Digest")
    )


def delete_manifest(base_url: str, repo: str, digest: str, timeout: float = 10, auth=None) -> int:
    response = requests.delete(f"{base_url.rstrip('/')}/v2/{repo}/manifests/{digest}", timeout=timeout, auth=auth)
    return response.status_code


def manifest(base_url: str, repo: str, ref: str, timeout: float = 10, auth=None) -> tuple[str, dict]:
    """The stored manifest's media type and body, asking for schema 2 (else distribution converts to 1)."""
    response = requests.get(
        f"{base_url.rstrip('/')}/v2/{repo}/manifests/{ref}", timeout=timeout, auth=auth, headers={"Accept": MANIFEST_V2}
    )
    response.raise_for_status()
    return response.headers.get("Content-Type", ""), response.json()
