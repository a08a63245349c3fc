"""`vicflow deploy`: a deployment per shipped blueprint whose run form is the blueprint's own inputs, checked
through Prefect's API (the schema the UI renders its form from) and by validating a filled form against it."""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.prefect


def test_each_shipped_blueprint_gets_a_typed_run_form(cli_env):
    import jsonschema
    from prefect import get_client

    with get_client(sync_client=True) as client:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists

        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name="vicflow-forms", type="process"))
    result = run_cli(["deploy", "--pool", "vicflow-forms"], cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "run-blueprint/form-gogs:" in result.stdout and "run-blueprint/form-vch:" in result.stdout
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("run-blueprint/form-gogs")
    schema = deployment.parameter_openapi_schema
    assert deployment.parameters == {"blueprint": "gogs"}
    assert schema["properties"]["blueprint"]["readOnly"] is True
    form = schema["properties"]["inputs"]
    assert (
        form["properties"]["docker_host"]["type"] == "string"
        and form["properties"]["docker_host"]["title"] == "docker_host"
    )
    assert form["properties"]["db_password"]["format"] == "password", "a secret input is a masked field"
    assert form["properties"]["http_port"] == {**form["properties"]["http_port"], "type": "integer", "default": 10080}
    assert {"docker_host", "db_password"} <= set(form["required"]) and "app_host" not in form["required"]
    assert form["properties"]["app_host"]["default"] == "127.0.0.1"
    filled = {
        "blueprint": "gogs",
        "inputs": {
            "docker_host": "tcp://vch:2375",
            "app_host": "vch",
            "db_password": "x",
            "admin_password": "y",
            "http_port": 10080,
        },
    }
    jsonschema.validate(filled, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**filled, "inputs": {**filled["inputs"], "http_port": "ten"}}, schema)
    assert deployment.entrypoint == "vicflow.flows.on_prefect.flow.run_blueprint", (
        "a worker imports it: no source to pull"
    )
