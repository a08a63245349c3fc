"""TLS is never turned off behind the user's back: a wrong certificate is refused by every kind of step, and
turning verification off (``insecure``, ``verify_tls: false``, a Docker endpoint without ``tls_verify``) is
logged as a warning. Harbor's proxy refusing a wrong CA is in tests/test_registry_swap.py (pre-flight)."""

from __future__ import annotations

import http.server
import logging
import ssl
import threading

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim
from vicflow.plugins.builtin.firewall import Firewall
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.builtin.http_request import HttpRequest
from vicflow.plugins.clients import certs
from vicflow.plugins.errors import PermanentError, TransientError

from tests import stepkit


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a certificate from a CA of its own; yields (url, its ca.pem)."""
    paths = certs.generate(tmp_path / "server", "127.0.0.1", ["127.0.0.1"], client=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(paths["server_cert"], paths["server_key"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/", paths["ca"]
    server.shutdown()
    server.server_close()


@pytest.fixture
def other_ca(tmp_path):
    return certs.generate(tmp_path / "other", "127.0.0.1", ["127.0.0.1"], client=False)["ca"]


def test_https_steps_refuse_a_wrong_ca_and_log_when_verification_is_off(https_server, other_ca, caplog):
    url, right_ca = https_server
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        stepkit.apply(HealthCheck, kind="http", url=url, ca=other_ca, deadline_seconds=1, interval_seconds=0.2)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        stepkit.apply(HttpRequest, method="GET", url=url)  # the system CAs do not know this server
    assert stepkit.apply(HttpRequest, method="GET", url=url, ca=right_ca)[0]["status"] == 200

    with caplog.at_level(logging.WARNING):
        stepkit.apply(HealthCheck, kind="http", url=url, verify_tls=False, deadline_seconds=5)
        stepkit.apply(HttpRequest, method="GET", url=url, insecure=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("verify_tls: false" in w and url in w for w in warnings), warnings
    assert any("insecure: true" in w and url in w for w in warnings), warnings


@pytest.mark.docker
def test_a_tls_verify_docker_endpoint_refuses_a_wrong_ca_and_no_verify_is_logged(docker_engine, other_ca, caplog):
    engine = docker_engine
    right = {"cert": f"{engine.cert_dir}/cert.pem", "key": f"{engine.cert_dir}/key.pem"}
    check = {"kind": "container", "container": "none", "docker_host": engine.tls_url, "deadline_seconds": 1}
    with pytest.raises(PermanentError, match="TLS handshake with the Docker API at tcp://127.0.0.1:2376 failed"):
        from vicflow.plugins.clients.dockerapi import DockerParams, docker_client

        docker_client(DockerParams(docker_host=engine.tls_url, ca=other_ca, tls_verify=True, **right))
    # it connects, unverified (and finds no container "none")
    with caplog.at_level(logging.WARNING), pytest.raises(TransientError, match="did not pass"):
        stepkit.apply(HealthCheck, **check, tls=True, tls_verify=False, **right)
    assert any(
        "TLS without verification for the Docker API at tcp://127.0.0.1:2376" in r.getMessage() for r in caplog.records
    )


@pytest.mark.vcsim
def test_a_wrong_vsphere_thumbprint_is_refused_before_anything_changes(vcsim, caplog):
    wrong = "AA:" + vcsim.thumbprint[3:] if not vcsim.thumbprint.startswith("AA") else "BB:" + vcsim.thumbprint[3:]
    creds = {"server": vcsim.url, "user": vcsim.username, "password": vcsim.password}
    with pytest.raises(PermanentError, match="thumbprint mismatch .* refusing to connect"):
        stepkit.apply(Firewall, **creds, thumbprint=wrong, compute_resource="DC0_C0", action="allow")
    si = vcsim.connect()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
    rulesets = [r for h in view.view for r in h.configManager.firewallSystem.firewallInfo.ruleset if r.key == "vSPC"]
    assert rulesets and not any(r.enabled for r in rulesets), "vSPC changed although the certificate was wrong"
    Disconnect(si)

    with caplog.at_level(logging.WARNING):
        ctx = stepkit.context()
        stepkit.plan(Firewall, ctx, **creds, insecure=True, compute_resource="DC0_C0")
        ctx.resources["vsphere"].close()
    assert any("insecure: true - the certificate of 127.0.0.1 is not checked" in r.getMessage() for r in caplog.records)


def test_the_datastore_upload_session_pins_the_same_certificate_as_the_api(vcsim):
    """vch_create's ISO upload (the datastore's /folder over HTTPS) uses the API session's pinning."""
    from vicflow.plugins.clients.vsphere import connection, pinning

    host, port = connection.split_server(vcsim.url)
    url = f"https://{host}:{port}/folder"
    assert pinning.pinned_session(host, vcsim.thumbprint, 10).get(url, timeout=10).status_code < 500
    wrong = "AA:" * 19 + "AA"
    with pytest.raises(Exception, match="certificate thumbprint mismatch"):
        pinning.pinned_session(host, wrong, 10).get(url, timeout=10)
