"""Just enough of the registry v2 API to prove what the seed needed: schema-2 pushes with foreign layers.

Speaks the distribution token flow that Harbor uses: ``GET /v2/`` answers 401 with
``WWW-Authenticate: Bearer realm=...,service=...``; the realm is asked with the user's Basic credentials for
a token scoped to ``repository:NAME:pull,push``; requests then carry ``Authorization: Bearer``.  A registry
that asks for Basic auth gets the credentials directly.  Hand-written rather than ``oras``: oras-py builds
OCI manifests and would not send a hand-made schema-2 manifest with a foreign layer (docs/decisions.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass

import requests
from vicflow.plugins.clients import http
from vicflow.plugins.errors import TLSRejected, VicflowError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(VicflowError):
    """The registry refused us (credentials, TLS, permissions); the message says which, ``hint`` what to do."""


class RegistryUnavailable(RegistryError):
    """Harbor's nginx answered 502, 503 or 504: the service behind it (registry or ui) is down or starting, as
    after a restart of its engine (restart: always brings each back in its own time). Worth another try."""


GATEWAY_ERRORS = (502, 503, 504)


@dataclass
class PushResult:
    status: int
    accepted: bool
    error_code: str | None
    detail: str
    digest: str | None = None


class Registry:
    """One registry endpoint: TLS settings, credentials, and one cached token per scope."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        ca: str | None = None,
        insecure: bool = False,
        timeout: float = 10,
    ):
        self.base, self.user, self.password, self.timeout = url.rstrip("/"), user, password, timeout
        self.ca = ca
        self.session = http.session(ca if ca else not insecure)  # raises the tree's errors: ConnectionLost ...
        self._challenge: dict[str, str] | None = None
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.session.close()

    # ---- transport
    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except TLSRejected as exc:
            raise RegistryError(
                f"TLS verification of {self.base} failed"
                + (f" with the CA {self.ca}" if self.ca else " with the system's CAs")
                + f": {_reason(exc.__cause__ or exc)}",
                "set registry_ca to the CA that signed the registry's certificate (Harbor's ca.crt on the "
                "appliance), or insecure: true to skip verification",
            ) from exc.__cause__

    def ping(self) -> int:
        """Status of GET /v2/: 200, or 401 when the registry wants authentication."""
        return self._send("GET", f"{self.base}/v2/").status_code

    def challenge(self) -> dict[str, str]:
        """The WWW-Authenticate challenge of /v2/ (``scheme`` plus its parameters; empty if none)."""
        if self._challenge is None:
            response = self._send("GET", f"{self.base}/v2/")
            header = response.headers.get("WWW-Authenticate", "")
            scheme = header.split(" ", 1)[0].lower() if header else ""
            self._challenge = {"scheme": scheme, **dict(CHALLENGE_RE.findall(header))} if header else {}
        return self._challenge

    def token(self, scope: str) -> str | None:
        """A Bearer token for ``scope`` from the challenge's realm (None when the registry needs no token)."""
        challenge = self.challenge()
        if challenge.get("scheme") != "bearer":
            return None
        if scope not in self._tokens:
            body = self._ask_realm(challenge, {"service": challenge.get("service", ""), "scope": scope}).json()
            self._tokens[scope] = body.get("token") or body.get("access_token") or ""
        return self._tokens[scope]

    def login(self) -> None:
        """Check the credentials as ``docker login`` does: ask the realm for a token without a scope.

        A token asked with a scope tells nothing: Harbor 1.1's token service gives wrong credentials an anonymous
        token then (src/ui/service/token/creator.go), and refuses only a request with neither a user nor a scope.
        """
        challenge = self.challenge()
        if challenge.get("scheme") == "bearer" and self.user:
            self._ask_realm(challenge, {"service": challenge.get("service", "")})

    def _ask_realm(self, challenge: dict[str, str], params: dict[str, str]) -> requests.Response:
        auth = None
        if self.user:  # UTF-8 bytes, as docker's Go client sends them (requests would encode a str as latin-1)
            auth = (self.user.encode(), (self.password or "").encode())
        response = self._send("GET", challenge["realm"], params=params, auth=auth)
        if response.status_code == 401:
            raise RegistryError(
                f"the token service {challenge['realm']} refused the credentials of user "
                f"{self.user or '(anonymous)'} (HTTP 401)",
                "check registry_user and registry_password (a Harbor user of the project)",
            )
        if response.status_code != 200:
            error = RegistryUnavailable if response.status_code in GATEWAY_ERRORS else RegistryError
            raise error(
                f"the token service {challenge['realm']} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        return response

    def request(self, method: str, path: str, scope: str, **kwargs) -> requests.Response:
        """``method`` on ``/v2/...`` with the right credentials for ``scope``."""
        headers = dict(kwargs.pop("headers", None) or {})
        token = self.token(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.user:
            kwargs["auth"] = (self.user, self.password or "")
        url = path if path.startswith("http") else f"{self.base}{path}"
        response = self._send(method, url, headers=headers, **kwargs)
        if response.status_code == 401 and token is not None:
            raise RegistryError(
                f"{method} {path}: the registry refused the token for {scope!r} "
                f"({_challenge_error(response) or 'HTTP 401'})",
                "the project must exist and the user must be allowed to push to it (in Harbor: a project member "
                "with the developer role, or an admin)",
            )
        return response

    # ---- operations
    def check_push(self, repo: str) -> None:
        """Prove the credentials may push to ``repo``: open a blob upload and cancel it (nothing is stored)."""
        self.login()
        scope = f"repository:{repo}:pull,push"
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope)
        _expect(start, 202, f"an upload to {repo}")
        # cancelling needs the delete action, which a pusher may lack: the empty upload is then left
        with contextlib.suppress(RegistryError):
            self.request("DELETE", self._location(start), f"repository:{repo}:pull,push,delete")

    def upload_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repo}:pull,push"
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope)
        _expect(start, 202, f"an upload to {repo}")
        location = self._location(start)
        sep = "&" if "?" in location else "?"
        done = self.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _expect(done, 201, f"the blob {digest} in {repo}")
        return digest

    def _location(self, response: requests.Response) -> str:
        location = response.headers["Location"]
        return self.base + location if location.startswith("/") else location

    def put_manifest(self, repo: str, ref: str, manifest: dict) -> PushResult:
        response = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            f"repository:{repo}:pull,push",
            data=json.dumps(manifest),
            headers={"Content-Type": manifest.get("mediaType", MANIFEST_V2)},
        )
        code, detail = None, response.text[:300]
        try:
            errors = response.json().get("errors") or []
            codes = [e.get("code") for e in errors]
            code = next((c for c in codes if c != "UNKNOWN"), codes[0] if codes else None)  # the specific one
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or detail
        except (ValueError, AttributeError):
            pass
        return PushResult(
            response.status_code,
            response.status_code == 201,
            code,
            detail,
            response.headers.get("Docker-Content-Digest"),
        )

    def push_foreign_layer_manifest(self, repo: str, tag: str) -> PushResult:
        """PUT a schema-2 manifest whose only layer is foreign (as a Windows nanoserver image has).

        Harbor 1.1's registry answered MANIFEST_BLOB_UNKNOWN ("manifest blob unknown: blob unknown to
        registry"); a registry that allows foreign-layer URLs answers 201.
        """
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
        config_digest = self.upload_blob(repo, config)
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
        return self.put_manifest(repo, tag, manifest)

    def delete_manifest(self, repo: str, digest: str) -> int:
        return self.request(
            "DELETE", f"/v2/{repo}/manifests/{digest}", f"repository:{repo}:pull,push,delete"
        ).status_code

    def manifest(self, repo: str, ref: str) -> tuple[str, dict]:
        """The stored manifest's media type and body, asking for schema 2 (else distribution converts to 1)."""
        response = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:pull", headers={"Accept": MANIFEST_V2}
        )
        response.raise_for_status()
        return response.headers.get("Content-Type", ""), response.json()

    def blob(self, repo: str, digest: str) -> bytes:
        response = self.request("GET", f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull")
        response.raise_for_status()
        return response.content


def _reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[SSL: [A-Z_]+\][^(')]*", text)
    return match.group(0).strip() if match else text[:200]


def _expect(response: requests.Response, status: int, what: str) -> None:
    """A refused write is a RegistryError naming the registry's own error (and what a 405 means)."""
    if response.status_code == status:
        return
    hint = None
    if response.status_code == 405:
        hint = (
            "the registry is read-only (distribution's storage.maintenance.readonly, which Harbor sets during "
            "garbage collection): it serves pulls and refuses every push"
        )
    error = RegistryUnavailable if response.status_code in GATEWAY_ERRORS else RegistryError
    raise error(
        f"the registry refused {what}: HTTP {response.status_code} {_errors(response) or response.reason}", hint
    )


def _challenge_error(response: requests.Response) -> str:
    found = dict(CHALLENGE_RE.findall(response.headers.get("WWW-Authenticate", "")))
    return found.get("error", "")


def _errors(response: requests.Response) -> str:
    try:
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in response.json().get("errors") or [])
    except ValueError:
        return response.text[:200].strip()


# Plain-URL shortcuts (a registry without TLS settings), as the test bed's smoke tests use them.
def ping(base_url: str, timeout: float = 5, auth=None) -> int:
    user, password = auth or (None, None)
    return Registry(base_url, user, password, timeout=timeout).ping()


def push_foreign_layer_manifest(base_url: str, repo: str, tag: str, timeout: float = 10, auth=None) -> PushResult:
    user, password = auth or (None, None)
    return Registry(base_url, user, password, timeout=timeout).push_foreign_layer_manifest(repo, tag)


def manifest(base_url: str, repo: str, ref: str, timeout: float = 10, auth=None) -> tuple[str, dict]:
    user, password = auth or (None, None)
    return Registry(base_url, user, password, timeout=timeout).manifest(repo, ref)
