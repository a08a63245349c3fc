"""One trace from an event to the vSphere and HTTP calls of the run it starts (issue 30, item 4; docs/tracing.md).

A registry notification POSTed to `vicflow listen --otlp-endpoint` becomes a Prefect event; its trigger starts a
run on `vicflow worker --otlp-endpoint` (a process forked by the worker's fork server). The run's steps open the
vSPC firewall ruleset on the vCenter simulator's hosts (pyVmomi SOAP calls) and make an HTTP call (requests).
Both processes export over OTLP/HTTP to a receiver built on the official OpenTelemetry protobufs
(tests/otlp_receiver.py), and the test follows the parent links: the listener's ``vicflow.event`` span, the
worker's ``vicflow.run``, its ``vicflow.step`` and ``vicflow.attempt`` spans, and the calls under them. The
receiver's raw bytes are searched for the vCenter password, which the run resolved as a secret.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from vicflow.flows.observability import metrics, tracing

from tests import helpers
from tests.otlp_receiver import Receiver, tree
from tests.reliability.test_secret_scan import forms
from tests.test_metrics import _receiving, api, final_run, push, wait_for
from tests.testbed.prefect_stack import BIN, client_env, deploy_on_event, free_port, start, stop

pytestmark = pytest.mark.testbed  # the vCenter simulator and the Prefect harness, with a worker and a listener

BLUEPRINT = """
name: {prefix}-traced
steps:
  - id: open
    uses: firewall
    with:
      server: "{server}"
      user: "{user}"
      password: "${{{{ secrets.trace_vc_password }}}}"
      thumbprint: "{thumbprint}"
      compute_resource: DC0_C0
      action: allow
  - id: call
    uses: http_request
    needs: open
    with: {{url: "http://127.0.0.1:{hook}/hooks/{prefix}", expect_status: [200]}}
"""


@pytest.fixture
def plane(prefect_api, vcsim, tmp_path):
    prefix = f"trace-{uuid.uuid4().hex[:6]}"
    with helpers.hook_server() as (hook, hooked):
        path = tmp_path / "traced.yaml"
        path.write_text(
            BLUEPRINT.format(
                prefix=prefix, server=vcsim.url, user=vcsim.username, thumbprint=vcsim.thumbprint, hook=hook
            )
        )
        env = client_env(prefect_api)
        for name in (metrics.ADDR_ENV, metrics.MULTIPROC_ENV, tracing.ENDPOINT_ENV, tracing.TRACES_ENDPOINT_ENV):
            env.pop(name, None)
        env["OTEL_BSP_SCHEDULE_DELAY"] = "500"  # the listener's batches leave every 0.5 s (the SDK's default is 5 s)
        env["VICFLOW_SECRET_TRACE_VC_PASSWORD"] = vcsim.password
        pool, deployment, repository = f"{prefix}-pool", f"{prefix}-on-push", f"{prefix}/app"
        deploy_on_event(
            tmp_path, env, pool, deployment, path, {"registry.repository": repository}, "registry.image.pushed"
        )
        port, token = free_port(), uuid.uuid4().hex
        (tmp_path / "listen.yaml").write_text(json.dumps({"registry": {"listen": f"127.0.0.1:{port}", "token": token}}))
        with Receiver() as receiver:
            otlp = ["--otlp-endpoint", receiver.endpoint]
            processes = [
                start([str(BIN / "vicflow"), "worker", "--pool", pool, *otlp], env, tmp_path / "worker.log"),
                start([str(BIN / "vicflow"), "listen", "--config", str(tmp_path / "listen.yaml"), *otlp], env, tmp_path / "listen.log"),
            ]  # fmt: skip
            try:
                yield {
                    "api": prefect_api,
                    "deployment": deployment,
                    "repository": repository,
                    "receiver": f"http://127.0.0.1:{port}/events",
                    "token": token,
                    "home": tmp_path,
                    "otlp": receiver,
                    "password": vcsim.password,
                    "hooked": hooked,
                }
            finally:
                for process in reversed(processes):
                    stop(process)


def test_one_trace_from_the_event_through_the_worker_run_to_vsphere_and_http_calls(plane):
    otlp = plane["otlp"]
    [deployment] = [d for d in api(plane, "/deployments/filter") if d["name"] == plane["deployment"]]
    wait_for(lambda: _receiving(plane), 60, "the registry receiver listens", plane["home"] / "listen.log")
    plane["hooked"].clear()
    push(plane)
    runs = wait_for(lambda: api(plane, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}}), 120, "the event starts a run", plane["home"] / "listen.log")  # fmt: skip
    run = final_run(plane, runs[0]["id"])
    assert run["state_type"] == "COMPLETED", run["state"]

    # the listener: one span for the event it emitted
    events = wait_for(
        lambda: otlp.named("vicflow.event"), 60, "the listener exports its span", plane["home"] / "listen.log"
    )
    [event] = [e for e in events if e.attributes["vicflow.event.name"] == "registry.image.pushed"]
    assert event.service == "vicflow-listen" and event.kind == "producer" and event.parent_id == ""
    assert event.attributes["vicflow.event.source"] == "registry"
    assert plane["repository"] in event.attributes["vicflow.event.resource"]
    # the run's event parameter carries the listener's span as its traceparent
    traceparent = requests.get(f"{plane['api']}/flow_runs/{run['id']}", timeout=30).json()["parameters"]["event"]["payload"]["traceparent"]  # fmt: skip
    assert traceparent.split("-")[1:3] == [event.trace_id, event.span_id]

    # the worker's run process: its run span is the event span's child, in the same trace
    [traced] = wait_for(
        lambda: otlp.named("vicflow.run"), 60, "the run exports its spans", plane["home"] / "worker.log"
    )
    assert (traced.trace_id, traced.parent_id, traced.kind) == (event.trace_id, event.span_id, "consumer")
    assert traced.service == "vicflow-run" and traced.attributes["vicflow.run.id"] == run["id"]
    assert traced.attributes["vicflow.run.state"] == "completed"
    spans = [s for s in otlp.snapshot() if s.trace_id == event.trace_id]
    by_id = {s.span_id: s for s in spans}
    steps = {s.attributes["vicflow.step.id"]: s for s in spans if s.name == "vicflow.step"}
    assert set(steps) == {"open", "call"} and all(s.parent_id == traced.span_id for s in steps.values())
    attempts = {s.attributes["vicflow.step.id"]: s for s in spans if s.name == "vicflow.attempt"}
    assert {k: by_id[s.parent_id] for k, s in attempts.items()} == steps

    # the firewall step's SOAP calls, each a client span under its attempt
    soap = [s for s in spans if s.name.startswith("vsphere ")]
    assert soap and all(s.parent_id == attempts["open"].span_id and s.kind == "client" for s in soap)
    methods = [s.attributes["rpc.method"] for s in soap]
    assert "Login" in methods and methods.count("EnableRuleset") == 3, methods  # the simulator's cluster: 3 hosts
    assert "vsphere SessionManager.Login" in {s.name for s in soap}
    # the HTTP call, a client span under the call step's attempt; its traceparent went with the request
    [get] = [s for s in spans if s.name == "GET"]
    assert get.parent_id == attempts["call"].span_id and get.kind == "client"
    seen = [r["headers"].get("traceparent") or "" for r in plane["hooked"]]
    assert seen and seen[0].split("-")[1:3] == [get.trace_id, get.span_id]

    # no span the receiver got holds the vCenter password, in any form
    sent = b"".join(otlp.bodies)
    assert not [form for form in forms(plane["password"]) if form in sent]
    print("\n" + tree(spans, event))
