"""Harbor 1.1.1 as the VIC 1.1 appliance runs it, on the test bed's dockerd.

``harbor/`` holds goharbor/harbor v1.1.1's own files, unchanged (a test checks their git blob ids against those
of v1.1.1's tree): ``make/docker-compose.tpl``, ``make/docker-compose.notary.yml`` and the
``make/common/templates/`` that ``make/prepare`` renders.  ``prepare()`` does what a release install does:

- the Makefile's ``modify_composefile``: ``docker-compose.tpl`` becomes ``docker-compose.yml`` with
  ``__version__`` replaced by ``VERSIONTAG`` (``git describe --tags`` = ``v1.1.1`` for a release build);
- ``make/prepare --with-notary`` with ``HARBOR_CFG``: ``common/config/`` rendered from the templates with
  Python's ``string.Template``, as prepare does; the token key pair and the notary alias generated
  (``customize_crt = on``); nginx's certificate is signed by a CA generated here (the appliance CA).

Then the test bed changes the two compose files in these ways only (a test checks that nothing else differs):
image names point at the stand-in images (tests/testbed/images.py), the host paths ``/data`` and
``/var/log/harbor/`` point into the state directory, and the published ports 80, 443 and 4443 are bound to
127.0.0.1 on HTTP_PORT, HTTPS_PORT and NOTARY_PORT (this machine's rule; 1514 already is).
``python -m tests.testbed harbor`` starts it; the project is ``harbor`` (the folder's name), as on the appliance.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import string
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from vicflow.plugins.clients import certs
from vicflow.plugins.errors import StepError

# Harbor lives beside its engine: the test bed's folder, or a pytest-xdist worker's own (tests/testbed/hosts.py)
from tests.testbed import ENGINE_STATE as STATE
from tests.testbed import TestbedError, say

UPSTREAM = Path(__file__).parent / "harbor"
TAG, COMMIT = "v1.1.1", "7b0646760cc54c77c8394d0d8879c98310684835"  # goharbor/harbor; the files' blob ids are
# recorded in tests/test_registry_swap.py, which checks them
VERSIONTAG = "v1.1.1"
HTTPS_PORT = int(os.environ.get("VICFLOW_HARBOR_HTTPS_PORT", "18443"))
HTTP_PORT = int(os.environ.get("VICFLOW_HARBOR_HTTP_PORT", "18080"))
NOTARY_PORT = int(os.environ.get("VICFLOW_HARBOR_NOTARY_PORT", "14443"))
ADMIN_PASSWORD = "Harbor12345"  # harbor.cfg's default harbor_admin_password
STANDIN = "vicflow-test/harbor-standin:v1.1.1"
IMAGES = {
    "vmware/harbor-log:v1.1.1": "vicflow-test/harbor-log:v1.1.1",
    "vmware/registry:photon-2.6.0": "vicflow-test/registry:photon-2.6.0",
    "vmware/harbor-db:v1.1.1": STANDIN,
    "vmware/harbor-adminserver:v1.1.1": "vicflow-test/harbor-adminserver:v1.1.1",
    "vmware/harbor-ui:v1.1.1": "vicflow-test/harbor-ui:v1.1.1",
    "vmware/harbor-jobservice:v1.1.1": STANDIN,
    "vmware/nginx:1.11.5-patched": "vicflow-test/nginx:1.11.5-patched",
    "vmware/notary-photon:server-0.5.0": STANDIN,
    "vmware/notary-photon:signer-0.5.0": STANDIN,
    "vmware/harbor-notary-db:mariadb-10.1.10": STANDIN,
}
# make/harbor.cfg at v1.1.1 (its defaults), as the appliance sets it: https on this host with its certificate
HARBOR_CFG = {
    "hostname": f"127.0.0.1:{HTTPS_PORT}",
    "ui_url_protocol": "https",
    "db_password": "root123",
    "max_job_workers": "3",
    "customize_crt": "on",
    "ssl_cert": "/data/cert/server.crt",
    "ssl_cert_key": "/data/cert/server.key",
    "secretkey_path": "/data",
    "admiral_url": "NA",
    "email_identity": "",
    "email_server": "smtp.mydomain.com",
    "email_server_port": "25",
    "email_username": "sample_admin@mydomain.com",
    "email_password": "abc",
    "email_from": "admin <sample_admin@mydomain.com>",
    "email_ssl": "false",
    "harbor_admin_password": ADMIN_PASSWORD,
    "auth_mode": "db_auth",
    "ldap_url": "ldaps://ldap.mydomain.com",
    "ldap_basedn": "ou=people,dc=mydomain,dc=com",
    "ldap_uid": "uid",
    "ldap_scope": "3",
    "ldap_timeout": "5",
    "self_registration": "on",
    "token_expiration": "30",
    "project_creation_restriction": "everyone",
    "verify_remote_cert": "on",
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
        """The host's /var/log/harbor/: harbor-log writes ``<date>/<service>.log`` there."""
        return self.root / "log"

    def log(self, service: str) -> str:
        """What ``service`` logged, all days together."""
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob(f"*/{service}.log")))


def upstream_text(path: str) -> str:
    """A file of goharbor/harbor v1.1.1 by its path there (``make/...``)."""
    return (UPSTREAM / path.removeprefix("make/")).read_text()


def compose_yml() -> str:
    """The Makefile's modify_composefile: docker-compose.tpl with ``__version__`` replaced by VERSIONTAG."""
    return upstream_text("make/docker-compose.tpl").replace("__version__", VERSIONTAG)


def substitutions(root: Path) -> list[tuple[str, str]]:
    """The test bed's changes to Harbor's compose files (a test checks that nothing else differs)."""
    return [
        *((f"image: {old}\n", f"image: {new}\n") for old, new in IMAGES.items()),
        (" /data", f" {root}/data"),
        (" /var/log/harbor/", f" {root}/log/"),
        ("- 80:80\n", f"- 127.0.0.1:{HTTP_PORT}:80\n"),
        ("- 443:443\n", f"- 127.0.0.1:{HTTPS_PORT}:443\n"),
        ("- 4443:4443\n", f"- 127.0.0.1:{NOTARY_PORT}:4443\n"),
    ]


def render(text: str, root: Path) -> str:
    for old, new in substitutions(root):
        text = text.replace(old, new)
    return text


def _random(length: int) -> str:
    """prepare's secrets: letters and digits."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def _kept_secret(path: Path, length: int) -> str:
    """prepare's _get_secret: read the file, or create it (mode 0600)."""
    if not path.is_file():
        path.write_text(_random(length))
        path.chmod(0o600)
    return path.read_text()


def _template(name: str, dest: Path, **values: object) -> None:
    """prepare's render: string.Template(...).substitute(**kw)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(string.Template(upstream_text(f"make/common/templates/{name}")).substitute(**values))


def _copy(name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(upstream_text(f"make/common/templates/{name}"))


def prepare(root: Path = STATE / "harbor") -> Harbor:
    """Lay out Harbor's files and generated config afresh (data under ``root/data`` is kept)."""
    cfg, config = HARBOR_CFG, root / "common" / "config"
    shutil.rmtree(config, ignore_errors=True)  # prepare's delfile(config_dir)
    for sub in ("registry", "database", "config", "job_logs", "notary-db", "ca_download"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(parents=True, exist_ok=True)
    data = root / "data"  # secretkey_path /data, moved into the state directory
    if (data / "secretkey").is_file() and len((data / "secretkey").read_text()) != 16:
        # prepare refuses it ("secret key's length has to be 16 chars"); an older test bed wrote 32
        say(f"{data / 'secretkey'} is not 16 characters long (an older test bed's): a new one replaces it")
        (data / "secretkey").unlink()
    _kept_secret(data / "secretkey", 16)
    ui_url = f"{cfg['ui_url_protocol']}://{cfg['hostname']}"
    ui_secret, jobservice_secret = _random(16), _random(16)
    (root / "docker-compose.yml").write_text(render(compose_yml(), root))
    notary = upstream_text("make/docker-compose.notary.yml")
    (root / "docker-compose.notary.yml").write_text(render(notary, root))

    tls = certs.generate(root / "ca", "harbor", ["127.0.0.1", "localhost"], client=False)
    cert_dir = config / "nginx" / "cert"
    cert_dir.mkdir(parents=True)
    shutil.copy(tls["server_cert"], cert_dir / Path(cfg["ssl_cert"]).name)
    shutil.copy(tls["server_key"], cert_dir / Path(cfg["ssl_cert_key"]).name)
    ssl = {
        "ssl_cert": f"/etc/nginx/cert/{Path(cfg['ssl_cert']).name}",
        "ssl_cert_key": f"/etc/nginx/cert/{Path(cfg['ssl_cert_key']).name}",
    }
    _template("nginx/nginx.https.conf", config / "nginx" / "nginx.conf", **ssl)
    shared = {"ui_secret": ui_secret, "jobservice_secret": jobservice_secret}
    _template("adminserver/env", config / "adminserver" / "env", **_adminserver_values(cfg, ui_url), **shared)
    _template("ui/env", config / "ui" / "env", **shared)
    _template("registry/config.yml", config / "registry" / "config.yml", ui_url=ui_url)
    _template("db/env", config / "db" / "env", db_password=cfg["db_password"])
    _template("jobservice/env", config / "jobservice" / "env", **shared)
    _copy("jobservice/app.conf", config / "jobservice" / "app.conf")
    _copy("ui/app.conf", config / "ui" / "app.conf")
    _token_keys(config)  # customize_crt = on
    # --with-notary (the notary services are stand-ins: the signer's certificates and the SQL are not needed)
    (config / "notary" / "mysql-initdb.d").mkdir(parents=True)
    shutil.copy(config / "registry" / "root.crt", config / "notary" / "root.crt")
    _copy("notary/signer-config.json", config / "notary" / "signer-config.json")
    _template("notary/server-config.json", config / "notary" / "server-config.json", token_endpoint=ui_url)
    _copy("nginx/notary.upstream.conf", config / "nginx" / "conf.d" / "notary.upstream.conf")
    _template("nginx/notary.server.conf", config / "nginx" / "conf.d" / "notary.server.conf", **ssl)
    _template("notary/signer_env", config / "notary" / "signer_env", alias=_kept_secret(data / "defaultalias", 8))
    files = [str(root / "docker-compose.notary.yml"), str(root / "docker-compose.yml")]
    return Harbor(root, f"https://127.0.0.1:{HTTPS_PORT}", tls["ca"], files)


def _adminserver_values(cfg: dict, ui_url: str) -> dict:
    """The values prepare gives adminserver/env (the LDAP search DN and filter are commented out in harbor.cfg)."""
    return {
        "ui_url": ui_url,
        "auth_mode": cfg["auth_mode"],
        "self_registration": cfg["self_registration"],
        "ldap_url": cfg["ldap_url"],
        "ldap_searchdn": "",
        "ldap_search_pwd": "",
        "ldap_basedn": cfg["ldap_basedn"],
        "ldap_filter": "",
        "ldap_uid": cfg["ldap_uid"],
        "ldap_scope": cfg["ldap_scope"],
        "ldap_timeout": cfg["ldap_timeout"],
        "db_password": cfg["db_password"],
        "email_host": cfg["email_server"],
        "email_port": cfg["email_server_port"],
        "email_usr": cfg["email_username"],
        "email_pwd": cfg["email_password"],
        "email_ssl": cfg["email_ssl"],
        "email_from": cfg["email_from"],
        "email_identity": cfg["email_identity"],
        "harbor_admin_password": cfg["harbor_admin_password"],
        "project_creation_restriction": cfg["project_creation_restriction"],
        "verify_remote_cert": cfg["verify_remote_cert"],
        "max_job_workers": cfg["max_job_workers"],
        "token_expiration": cfg["token_expiration"],
        "admiral_url": cfg["admiral_url"],
        "with_notary": True,  # prepare passes args.notary_mode: the file says WITH_NOTARY=True
    }


def _token_keys(config: Path) -> None:
    """prepare's create_root_cert: ``openssl genrsa 4096`` as ui/private_key.pem, and ``openssl req -new -x509
    -days 3650 -subj /C=/ST=/L=/O=/CN=/`` (an empty subject) as registry/root.crt, the registry's rootcertbundle."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    root_crt = cert.public_bytes(serialization.Encoding.PEM)
    for path, content in ((config / "ui" / "private_key.pem", pem), (config / "registry" / "root.crt", root_crt)):
        path.write_bytes(content)
        path.chmod(0o600)


def start(engine, root: Path = STATE / "harbor", timeout: float = 90) -> Harbor:
    """Harbor up from scratch with photon-2.6.0 (what VIC 1.1 shipped), answering through nginx."""
    from vicflow.plugins.builtin.compose import ComposeUp

    from tests import stepkit

    stop(engine)
    harbor = prepare(root)
    say(f"starting Harbor {TAG} from {', '.join(harbor.files)}")
    try:
        stepkit.apply(ComposeUp, docker_host=engine.plain_url, files=harbor.files, project=harbor.project)
    except StepError as exc:
        raise TestbedError(f"Harbor's compose up failed: {exc}; see the logs under {harbor.log_dir}") from None
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:  # the registry asks for a token, and the ui (it starts after the adminserver answers) serves its page
            registry = requests.get(f"{harbor.url}/v2/", verify=harbor.ca, timeout=3)
            ui = requests.get(f"{harbor.url}/", verify=harbor.ca, timeout=3)
            challenge = registry.headers.get("WWW-Authenticate", "")
            if registry.status_code == 401 and "Bearer" in challenge and ui.status_code == 200:
                say(f"Harbor answers at {harbor.url} (CA {harbor.ca}, user admin / {ADMIN_PASSWORD})")
                return harbor
            last = f"/v2/: HTTP {registry.status_code}, /: HTTP {ui.status_code}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TestbedError(
        f"Harbor did not answer at {harbor.url} within {timeout:g}s (last: {last}); see the logs under {harbor.log_dir}"
    )


def stop(engine) -> None:
    """compose down of the harbor project (its data under the state directory is kept)."""
    from vicflow.plugins.builtin.compose import ComposeDown

    from tests import stepkit

    stepkit.apply(ComposeDown, docker_host=engine.plain_url, project="harbor")
