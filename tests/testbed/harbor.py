"""Harbor 1.1 as the VIC 1.1 appliance runs it, on the test bed's dockerd.

Harbor's own compose files (``harbor/docker-compose.tpl`` and ``harbor/docker-compose.notary.yml``, byte for
byte as goharbor/harbor has them) are written to ``<state>/harbor/`` with only these changes:

- image names point at the stand-in images (tests/testbed/images.py);
- host paths (``/data``, ``/var/log/harbor/``) point into the state directory;
- published ports are bound to 127.0.0.1 (this machine's rule), 80/443 on HTTP_PORT/HTTPS_PORT.

Beside them, what Harbor's ``prepare`` script generates: ``common/config/`` with the registry's config (token
auth, notifications to ui, delete enabled), the token key pair (``ui/private_key.pem``, ``registry/root.crt``),
nginx's config and certificate (signed by a CA generated here: the appliance CA), and the env files.
``python -m tests.testbed harbor`` starts it; the project is ``harbor`` (the folder's name), as on the appliance.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from vicflow.plugins.clients import certs
from vicflow.plugins.step import StepError

from tests.testbed import STATE, TestbedError, say

UPSTREAM = Path(__file__).parent / "harbor"
HTTPS_PORT = int(os.environ.get("VICFLOW_HARBOR_HTTPS_PORT", "18443"))
HTTP_PORT = int(os.environ.get("VICFLOW_HARBOR_HTTP_PORT", "18080"))
ADMIN_PASSWORD = "Harbor12345"  # harbor.cfg's default harbor_admin_password
STANDIN = "vicflow-test/harbor-standin:v1.1.1"
IMAGES = {
    "vmware/harbor-log:__version__": "vicflow-test/harbor-log:v1.1.1",
    "vmware/registry:photon-2.6.0": "vicflow-test/registry:photon-2.6.0",
    "vmware/harbor-db:__version__": STANDIN,
    "vmware/harbor-adminserver:__version__": STANDIN,
    "vmware/harbor-ui:__version__": "vicflow-test/harbor-ui:v1.1.1",
    "vmware/harbor-jobservice:__version__": STANDIN,
    "nginx:1.11.5": "vicflow-test/nginx:1.11.5",
    "vmware/notary-photon:server-0.5.0": STANDIN,
    "vmware/notary-photon:signer-0.5.0": STANDIN,
    "vmware/mariadb-photon:10.2.8": STANDIN,
}


@dataclass
class Harbor:
    root: Path
    url: str  # the public HTTPS URL (nginx)
    ca: str  # the appliance CA that signed nginx's certificate
    files: list[str]  # in the seed's order: -f docker-compose.notary.yml -f docker-compose.yml
    project: str = "harbor"
    user: str = "admin"
    password: str = ADMIN_PASSWORD

    @property
    def log_dir(self) -> Path:
        return self.root / "log"


def substitutions(root: Path) -> list[tuple[str, str]]:
    """The only changes made to Harbor's files (a test checks nothing else differs)."""
    return [
        *((f"image: {old}\n", f"image: {new}\n") for old, new in IMAGES.items()),
        (" /data", f" {root}/data"),
        (" /var/log/harbor/", f" {root}/log/"),
        ("- 1514:514\n", "- 127.0.0.1:1514:514\n"),
        ("- 80:80\n", f"- 127.0.0.1:{HTTP_PORT}:80\n"),
        ("- 443:443\n", f"- 127.0.0.1:{HTTPS_PORT}:443\n"),
    ]


def render(text: str, root: Path) -> str:
    for old, new in substitutions(root):
        text = text.replace(old, new)
    return text


def prepare(root: Path = STATE / "harbor") -> Harbor:
    """Lay out Harbor's files and generated config afresh (data under ``root/data`` is kept)."""
    config = root / "common" / "config"
    shutil.rmtree(config, ignore_errors=True)
    for sub in (
        "registry",
        "ui",
        "db",
        "adminserver",
        "jobservice",
        "nginx/cert",
        "nginx/conf.d",
        "notary/mysql-initdb.d",
    ):
        (config / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("data/registry", "data/database", "data/config", "data/job_logs", "data/notary-db", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    secretkey = root / "data" / "secretkey"
    if not secretkey.is_file():
        secretkey.write_bytes(os.urandom(16).hex().encode())
    (root / "docker-compose.yml").write_text(render((UPSTREAM / "docker-compose.tpl").read_text(), root))
    (root / "docker-compose.notary.yml").write_text(render((UPSTREAM / "docker-compose.notary.yml").read_text(), root))
    url = f"https://127.0.0.1:{HTTPS_PORT}"
    _token_keys(config)
    (config / "registry" / "config.yml").write_text(REGISTRY_CONFIG.format(ui_url=url))
    tls = certs.generate(root / "ca", "harbor", ["127.0.0.1", "localhost"], client=False)
    shutil.copy(tls["server_cert"], config / "nginx" / "cert" / "server.crt")
    shutil.copy(tls["server_key"], config / "nginx" / "cert" / "server.key")
    (config / "nginx" / "nginx.conf").write_text(NGINX_CONF)
    secret = os.urandom(8).hex()
    (config / "ui" / "env").write_text(
        f"LOG_LEVEL=debug\nCONFIG_PATH=/etc/ui/app.conf\nUI_SECRET={secret}\nJOBSERVICE_SECRET={secret}\n"
        f"GODEBUG=netdns=cgo\nADMIN_SERVER_URL=http://adminserver\nHARBOR_ADMIN_PASSWORD={ADMIN_PASSWORD}\n"
    )
    (config / "ui" / "app.conf").write_text("appname = registry\nrunmode = dev\n\n[dev]\nhttpport = 8080\n")
    (config / "db" / "env").write_text("MYSQL_ROOT_PASSWORD=root123\n")
    (config / "adminserver" / "env").write_text(
        f"PORT=80\nLOG_LEVEL=warning\nEXT_ENDPOINT={url}\nAUTH_MODE=db_auth\nSELF_REGISTRATION=off\n"
        f"HARBOR_ADMIN_PASSWORD={ADMIN_PASSWORD}\nUI_SECRET={secret}\nJOBSERVICE_SECRET={secret}\n"
    )
    (config / "jobservice" / "env").write_text(f"LOG_LEVEL=debug\nUI_SECRET={secret}\nJOBSERVICE_SECRET={secret}\n")
    (config / "jobservice" / "app.conf").write_text("appname = jobservice\nrunmode = dev\n\n[dev]\nhttpport = 80\n")
    (config / "notary" / "signer_env").write_text("NOTARY_SIGNER_DEFAULTALIAS=defaultalias\n")
    for name in ("server-config.json", "signer-config.json"):
        (config / "notary" / name).write_text('{"logging": {"level": "debug"}}\n')
    files = [str(root / "docker-compose.notary.yml"), str(root / "docker-compose.yml")]
    return Harbor(root, url, tls["ca"], files)


def _token_keys(config: Path) -> None:
    """The ui signs tokens with private_key.pem; the registry trusts root.crt (prepare's openssl req -x509)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harbor-token-issuer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    (config / "ui" / "private_key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (config / "registry" / "root.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def start(engine, root: Path = STATE / "harbor", timeout: float = 90) -> Harbor:
    """Harbor up from scratch with photon-2.6.0 (what VIC 1.1 shipped), answering through nginx."""
    from vicflow.plugins.builtin.compose import ComposeUp

    from tests import stepkit

    stop(engine)
    harbor = prepare(root)
    say(f"starting Harbor 1.1 from {', '.join(harbor.files)}")
    try:
        stepkit.apply(ComposeUp, docker_host=engine.plain_url, files=harbor.files, project=harbor.project)
    except StepError as exc:
        raise TestbedError(f"Harbor's compose up failed: {exc}; see the logs under {harbor.log_dir}") from None
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            response = requests.get(f"{harbor.url}/v2/", verify=harbor.ca, timeout=3)
            if response.status_code == 401 and "Bearer" in response.headers.get("WWW-Authenticate", ""):
                say(f"Harbor answers at {harbor.url} (CA {harbor.ca}, user admin / {ADMIN_PASSWORD})")
                return harbor
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TestbedError(
        f"Harbor did not answer at {harbor.url}/v2/ within {timeout:g}s (last: {last}); "
        f"see the logs under {harbor.log_dir}"
    )


def stop(engine) -> None:
    """compose down of the harbor project (its data under the state directory is kept)."""
    from vicflow.plugins.builtin.compose import ComposeDown

    from tests import stepkit

    stepkit.apply(ComposeDown, docker_host=engine.plain_url, project="harbor")


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    layerinfo: inmemory
  filesystem:
    rootdirectory: /storage
  maintenance:
    uploadpurging:
      enabled: false
  delete:
    enabled: true
http:
  addr: :5000
  secret: placeholder
  debug:
    addr: localhost:5001
auth:
  token:
    issuer: harbor-token-issuer
    realm: {ui_url}/service/token
    rootcertbundle: /etc/registry/root.crt
    service: harbor-registry
notifications:
  endpoints:
  - name: harbor
    disabled: false
    url: http://ui:8080/service/notifications
    timeout: 3000ms
    threshold: 5
    backoff: 1s
"""

# Harbor 1.1's nginx.https.conf: /v2/ to the registry, /service/ and / to the ui, port 80 redirected to https.
NGINX_CONF = """\
worker_processes auto;

events {
  worker_connections 1024;
  use epoll;
  multi_accept on;
}

http {
  tcp_nodelay on;
  include /etc/nginx/conf.d/*.upstream.conf;

  # this is necessary for us to be able to disable request buffering in all cases
  proxy_http_version 1.1;

  upstream registry {
    server registry:5000;
  }

  upstream ui {
    server ui:8080;
  }

  log_format timed_combined '$remote_addr - '
    '"$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" '
    '$request_time $upstream_response_time $pipe';

  access_log /dev/stdout timed_combined;

  include /etc/nginx/conf.d/*.server.conf;

  server {
    listen 443 ssl;
    server_tokens off;
    ssl_certificate /etc/nginx/cert/server.crt;
    ssl_certificate_key /etc/nginx/cert/server.key;
    ssl_protocols TLSv1.2;
    ssl_ciphers '!aNULL:kECDH+AESGCM:ECDH+AESGCM:RSA+AESGCM:kECDH+AES:ECDH+AES:RSA+AES:';
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:10m;

    # disable any limits to avoid HTTP 413 for large image uploads
    client_max_body_size 0;

    # required to avoid HTTP 411: see Issue #1486 (https://github.com/docker/docker/issues/1486)
    chunked_transfer_encoding on;

    location / {
      proxy_pass http://ui/;
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_cookie_path / "/; secure";
      proxy_buffering off;
      proxy_request_buffering off;
    }

    location /v1/ {
      return 404;
    }

    location /v2/ {
      proxy_pass http://registry/v2/;
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_request_buffering off;
    }

    location /service/ {
      proxy_pass http://ui/service/;
      proxy_set_header Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_request_buffering off;
    }

    location /service/notifications {
      return 404;
    }
  }
  server {
    listen 80;
    return 301 https://$host$request_uri;
  }
}
"""
