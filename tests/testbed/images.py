"""Test images built from Debian packages (there is no Docker Hub here).

One minimal bookworm root is debootstrapped once and cached as a tarball keyed by its package
list; it is imported as a base image, the files under tests/testbed/rootfs/ are copied on top,
and each test image is that base with its own CMD/ENTRYPOINT.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from tests.testbed import REPO, STATE, TestbedError, say

SUITE = "bookworm"
MIRROR = os.environ.get("VICFLOW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "postgresql-15",
    "docker-registry",
    "python3-minimal",
    "python3-psycopg2",
    "busybox",
    "ca-certificates",
    # Harbor 1.1's stand-ins: harbor-log (rsyslog), nginx, and the ui's token service (JWT, RS256)
    "rsyslog",
    "nginx-light",
    "python3-jwt",
    "python3-cryptography",
    "python3-cffi-backend",  # provides the virtual python3-cffi-backend-api-* that debootstrap cannot resolve
    "git",  # Gogs' install checks `git` on PATH (exec.LookPath in routers/install.go, internal/route/install.go)
)
OVERLAY = REPO / "tests" / "testbed" / "rootfs"
TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/postgresql/15/man",
)


def gogs_image(version: str, app_ver: str = "", healthcheck: bool = False) -> str:
    """The gogs/gogs image's shape: GOGS_CUSTOM, user git (uid 1000, home /data/git: docker/build.sh at 0.11.19,
    docker/build/finalize.sh and start.sh's PUID at 0.13.4), ports 22 and 3000; the stand-in plays ``version``."""
    env = f"GOGS_STANDIN_VERSION={version} GOGS_CUSTOM=/data/gogs" + (
        f" GOGS_STANDIN_APP_VER={app_ver}" if app_ver else ""
    )
    check = (  # the Dockerfile's `curl -o /dev/null -sS http://localhost:3000/healthcheck`; Debian's busybox here
        "HEALTHCHECK CMD busybox wget -q -O /dev/null http://localhost:3000/healthcheck || exit 1\n"
        if healthcheck
        else ""
    )
    return (
        f"ENV {env}\n"
        "RUN useradd --uid 1000 --user-group --home-dir /data/git --no-create-home --shell /bin/bash "
        "--comment 'Gogs Git User' git\n"
        f"WORKDIR /app/gogs\nEXPOSE 22 3000\n{check}"
        'CMD ["/usr/local/bin/gogs-standin"]'
    )


# Like vmware/registry, the binary is the ENTRYPOINT, so Harbor's `command: ["serve", "/etc/registry/config.yml"]`
# runs it with Harbor's own (mounted) config.  Both are Debian's distribution 2.8.2, whose default validation refuses
# a foreign-layer manifest; 2.6.1-photon carries, in the image, an allowance that accepts it.  This reproduces the
# seed's symptom, not its cause: distribution v2.6.0 and v2.6.1 validate foreign-layer URLs only when configured to,
# and Harbor 1.1.1's config does not (docs/decisions.md, "Harbor 1.1.1 on the test bed").
REGISTRY = 'ENTRYPOINT ["/usr/bin/docker-registry"]\nCMD ["serve", "/etc/docker/registry/{}.yml"]\nEXPOSE 5000'
ALLOW_FOREIGN = "ENV REGISTRY_VALIDATION_MANIFESTS_URLS_ALLOW='[\"^https?://\"]'\n"
IMAGES: dict[str, str] = {
    "vicflow-test/busybox:latest": 'CMD ["busybox", "sh"]',
    "vicflow-test/postgres:15": "ENV PGDATA=/var/lib/postgresql/data\nSTOPSIGNAL SIGINT\nEXPOSE 5432\n"
    'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]',
    # gogs/gogs at a release (tests/testbed/rootfs/usr/local/lib/gogs_standin); 0.13.4's Dockerfile adds a HEALTHCHECK
    "vicflow-test/gogs:0.11.19": gogs_image("0.11.19"),
    "vicflow-test/gogs:0.13.4": gogs_image("0.13.4", healthcheck=True),
    # Two builds of 0.11.19 whose APP_VER (gogs.go) reads 1.0 and 1.1, as a site's own builds would be tagged:
    # the footer tells them apart, for upgrade, rollback and redeploy tests (0.13 ignores 0.11's app.ini keys).
    "vicflow-test/app:1.0": gogs_image("0.11.19", app_ver="1.0"),
    "vicflow-test/app:1.1": gogs_image("0.11.19", app_ver="1.1"),
    "vicflow-test/registry:photon-2.6.0": REGISTRY.format("photon-2.6.0"),
    "vicflow-test/registry:2.6.1-photon": ALLOW_FOREIGN + REGISTRY.format("2.6.1-photon"),
    # Broken on purpose, for rollback tests: exits at once / runs but never answers on 5000 (whatever the command).
    "vicflow-test/registry:broken-exits": 'ENTRYPOINT ["/bin/sh", "-c", "echo \'configuration error: registry '
    'stand-in broken on purpose\' >&2; exit 1", "--"]\nEXPOSE 5000',
    "vicflow-test/registry:broken-silent": 'ENTRYPOINT ["/usr/local/bin/vicflow-sleep"]\nEXPOSE 5000',
    # Answers /v2/ but refuses every push: distribution's own read-only maintenance mode (what Harbor sets
    # during garbage collection), on the image that would otherwise accept the seed's manifest.
    "vicflow-test/registry:2.6.1-readonly": "ENV REGISTRY_STORAGE_MAINTENANCE_READONLY='{\"enabled\": true}'\n"
    + ALLOW_FOREIGN
    + REGISTRY.format("2.6.1-photon"),
    # Harbor 1.1.1 (tests/testbed/harbor.py): log = rsyslog, ui = the token service, adminserver = the settings,
    # proxy = Debian's nginx (OpenSSL allowing the TLS 1.1 Harbor's nginx.conf asks for), and the services that only
    # need to run (mysql, jobservice, notary) share one stand-in.
    "vicflow-test/harbor-log:v1.1.1": 'ENTRYPOINT ["rsyslogd", "-n", "-f", "/etc/rsyslog-harbor.conf"]\nEXPOSE 514',
    "vicflow-test/harbor-ui:v1.1.1": 'ENTRYPOINT ["/usr/local/bin/harbor-ui-standin"]\nEXPOSE 80',
    "vicflow-test/harbor-adminserver:v1.1.1": 'ENTRYPOINT ["/usr/local/bin/harbor-adminserver-standin"]\nEXPOSE 80',
    "vicflow-test/harbor-standin:v1.1.1": 'ENTRYPOINT ["/usr/local/bin/vicflow-sleep"]',
    "vicflow-test/nginx:1.11.5-patched": "ENV OPENSSL_CONF=/etc/ssl/openssl-harbor-nginx.cnf\nSTOPSIGNAL SIGQUIT\n"
    'EXPOSE 80 443\nCMD ["nginx", "-g", "daemon off;"]',
}


def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
    return digest.hexdigest()[:12]


def rootfs_tarball() -> Path:
    """The cached debootstrap root for PACKAGES, building it on first use (about a minute)."""
    key = _key(SUITE, *sorted(PACKAGES))
    tarball = STATE / "cache" / f"rootfs-{SUITE}-{key}.tar"
    if tarball.exists():
        say(f"reusing cached root {tarball.name}")
        return tarball
    if not shutil.which("debootstrap"):
        raise TestbedError("debootstrap is not installed: apt-get install debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        root = Path(tmp) / "root"
        say(f"debootstrap {SUITE} with {', '.join(PACKAGES)} (about a minute)")
        started = time.monotonic()
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode:
            raise TestbedError(
                f"debootstrap failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
            )
        for rel in TRIM:
            shutil.rmtree(root / rel, ignore_errors=True)
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball) + ".tmp", "."], check=True, timeout=600)
        os.replace(str(tarball) + ".tmp", tarball)
        say(f"cached {tarball.name} ({tarball.stat().st_size // 2**20} MiB) in {time.monotonic() - started:.0f}s")
    return tarball


def _context(dockerfile: str, with_overlay: bool) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if with_overlay:
            tar.add(OVERLAY, arcname="rootfs")
    buf.seek(0)
    return buf


def _overlay_digest() -> str:
    files = sorted(p for p in OVERLAY.rglob("*") if p.is_file())
    return _key(*(f"{p.relative_to(OVERLAY)}:{p.stat().st_mode & 0o777:o}".encode() + p.read_bytes() for p in files))


def build_all(client) -> list[str]:
    """Build every test image that is missing or out of date; returns the tags."""
    tarball = rootfs_tarball()
    debian = f"vicflow-test/debian:{tarball.stem.rsplit('-', 1)[1]}"
    if not client.images.list(name=debian):
        say(f"docker import {tarball.name} as {debian}")
        with open(tarball, "rb") as data:
            client.api.import_image_from_data(data.read(), repository=debian.split(":")[0], tag=debian.split(":")[1])
    base = f"vicflow-test/base:{_overlay_digest()}"
    if not client.images.list(name=base):
        say(f"building {base} (tests/testbed/rootfs on top of {debian})")
        client.images.build(
            fileobj=_context(f"FROM {debian}\nCOPY rootfs/ /\n", True),
            custom_context=True,
            tag=base,
            rm=True,
            forcerm=True,
        )
    for tag, tail in IMAGES.items():
        key = _key(base, tail)  # a changed Dockerfile line rebuilds the image, not only a changed base
        current = client.images.list(name=tag, filters={"label": f"vicflow.testbed.key={key}"})
        if current:
            continue
        say(f"building {tag}")
        dockerfile = f'FROM {base}\nLABEL vicflow.testbed.base="{base}" vicflow.testbed.key="{key}"\n{tail}\n'
        client.images.build(fileobj=_context(dockerfile, False), custom_context=True, tag=tag, rm=True, forcerm=True)
    return list(IMAGES)
