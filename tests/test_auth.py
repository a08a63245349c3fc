"""Closed to strangers, the parts that need no server of Prefect's (issue 30, item 6; the HA plane's API behind
haproxy with its auth string and TLS is tests/test_prefect_ha.py).

The registry notification receiver of `vicflow listen`: HTTPS with the operator's certificate (tls_cert / tls_key)
and the bearer token the registry's notification endpoint sends in its ``headers`` (docker/distribution v2.6.1
docs/configuration.md, notifications). A real receiver on loopback, real TLS, a CA made with cryptography
(vicflow.plugins.clients.certs); what a registry sends is the envelope of distribution's notifications/event.go.
The same receiver notified by a real registry over TLS, and the run it starts, is tests/test_events.py.

The CLI's API credential and trust, read from the active Prefect profile as Prefect's client reads them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from pydantic import ValidationError
from vicflow.plugins.builtin.sources import RegistryNotifications
from vicflow.plugins.clients import certs

from tests.helpers import free_port

TOKEN = "receiver-token-" + "7" * 16
PUSH = {
    "id": "tls-1",
    "action": "push",
    "timestamp": "2026-12-03T10:00:00Z",
    "request": {"host": "reg:5000"},
    "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "repository": "gogs/gogs",
        "tag": "1.2",
        "digest": "sha256:def",
    },
}


@pytest.fixture
def tls_receiver(tmp_path):
    """A receiver serving HTTPS on a free port of 127.0.0.1; yields (url, the CA's file, the events it emitted)."""
    paths = certs.generate(tmp_path / "tls", "127.0.0.1", ["127.0.0.1"], client=False)
    port, got = free_port(), []
    config = {
        "listen": f"127.0.0.1:{port}",
        "token": TOKEN,
        "tls_cert": paths["server_cert"],
        "tls_key": paths["server_key"],
    }
    source = RegistryNotifications(config, got.append)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{port}/events"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.post(url, json={"events": []}, headers=bearer(TOKEN), verify=paths["ca"], timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the receiver did not serve within 30 s"
            time.sleep(0.1)
    try:
        yield url, paths["ca"], got
    finally:
        stop.set()
        thread.join(timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.docker.distribution.events.v1+json"}


def test_the_receiver_serves_https_and_refuses_a_notification_without_the_token(tls_receiver, caplog):
    url, ca, got = tls_receiver
    wrong = "Bearer someone-elses-secret-4711"
    with caplog.at_level(logging.INFO):
        assert requests.post(url, json={"events": [PUSH]}, verify=ca, timeout=5).status_code == 401
        assert requests.post(url, json={"events": [PUSH]}, headers={"Authorization": wrong}, verify=ca, timeout=5).status_code == 401  # fmt: skip
        assert got == [], "a refused notification emitted an event"
        assert (
            requests.post(url, json={"events": [PUSH]}, headers=bearer(TOKEN), verify=ca, timeout=5).status_code == 200
        )
    assert [e["event"] for e in got] == ["registry.image.pushed"]
    assert got[0]["resource"]["registry.image"] == "reg:5000/gogs/gogs:1.2"
    said = [r.getMessage() for r in caplog.records]
    assert any("missing bearer token" in m for m in said) and any("wrong bearer token" in m for m in said), said
    assert not any("someone-elses-secret" in m or TOKEN in m for m in said), "a credential reached the log"


def test_plain_http_and_an_untrusting_client_are_refused_at_the_handshake(tls_receiver, caplog):
    url, ca, got = tls_receiver
    with caplog.at_level(logging.WARNING):
        with pytest.raises(requests.ConnectionError):
            requests.post(url.replace("https://", "http://"), json={"events": [PUSH]}, headers=bearer(TOKEN), timeout=5)
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            requests.post(url, json={"events": [PUSH]}, headers=bearer(TOKEN), timeout=5)  # the system's CAs only
    assert got == []
    deadline, failed = time.monotonic() + 10, []
    while len(failed) < 2 and time.monotonic() < deadline:  # the receiver logs in the connection's thread
        failed = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
        time.sleep(0.05)
    assert len(failed) == 2 and all(m.startswith("refused a connection from 127.0.0.1") for m in failed), failed
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_tls_settings_that_cannot_serve_are_config_errors(tmp_path):
    paths = certs.generate(tmp_path / "tls", "127.0.0.1", ["127.0.0.1"], client=False)
    base = {"listen": "127.0.0.1:5080", "token": TOKEN}
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        RegistryNotifications({**base, "tls_cert": paths["server_cert"]}, print)
    with pytest.raises(ValidationError, match=r"cannot load tls_cert .*server-cert.pem with tls_key .*ca.pem"):
        RegistryNotifications({**base, "tls_cert": paths["server_cert"], "tls_key": paths["ca"]}, print)
    with pytest.raises(ValidationError, match=r"cannot load tls_cert .*missing.pem"):
        RegistryNotifications(
            {**base, "tls_cert": str(tmp_path / "missing.pem"), "tls_key": paths["server_key"]}, print
        )
    with pytest.raises(ValidationError, match="at least 8 characters") as short:
        RegistryNotifications({**base, "token": "abc"}, print)
    assert "'abc'" not in str(short.value.errors(include_input=False))


def test_the_cli_reads_the_api_credential_and_trust_from_the_active_profile(tmp_path):
    """`prefect config set` writes PREFECT_API_AUTH_STRING and PREFECT_API_SSL_CERT_FILE to the active profile;
    vicflow's API check reads them there as Prefect's client does (before Prefect is imported, with tomllib)."""
    (tmp_path / "profiles.toml").write_text(
        'active = "prod"\n[profiles.prod]\nPREFECT_API_URL = "https://lb:4200/api"\n'
        'PREFECT_API_AUTH_STRING = "vicflow:from-the-profile"\nPREFECT_API_TLS_INSECURE_SKIP_VERIFY = true\n'
        '[profiles.other]\nPREFECT_API_AUTH_STRING = "not-this-one"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)
    probe = (
        "import sys; from vicflow.flows.language.links import configured; "
        "print([configured(s) for s in ('PREFECT_API_URL', 'PREFECT_API_AUTH_STRING', "
        "'PREFECT_API_TLS_INSECURE_SKIP_VERIFY', 'PREFECT_API_SSL_CERT_FILE')], 'prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['https://lb:4200/api', 'vicflow:from-the-profile', 'true', None] False", out.stderr
    env["PREFECT_API_AUTH_STRING"] = "vicflow:from-the-environment"  # the environment wins, as in Prefect
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert "'vicflow:from-the-environment'" in out.stdout, out.stderr
