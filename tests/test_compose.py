"""compose_up / compose_down / health_check against the test bed's real dockerd and images."""

from __future__ import annotations

import pathlib
import re
import textwrap
import time
import uuid

import pytest
import requests
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.builtin.http_request import HttpRequest
from vicflow.plugins.compose.errors import ComposeError
from vicflow.plugins.compose.project import load_project
from vicflow.plugins.errors import PermanentError, TransientError

from tests import stepkit
from tests.helpers import free_port, gogs_first_run, wait_http
from tests.testbed.prefect_stack import clean_gogs

pytestmark = pytest.mark.docker
PLAIN = "tcp://127.0.0.1:2375"
VCH = "tcp://127.0.0.2:2375"  # the test bed's VCH-shaped endpoint (tests/testbed/vchproxy.py)


@pytest.fixture
def gogs(docker_engine, docker_images):
    """Parameters that deploy the seed's gogs compose file on the VCH endpoint, and cleanup."""
    clean_gogs()  # the compose file names its containers: the demo's gogs project would hold the names
    http_port, ssh_port = free_port(), free_port()
    params = dict(
        docker_host=VCH,
        files=["gogs/docker-compose.yml"],
        project=f"gogs{uuid.uuid4().hex[:6]}",
        use_os_environ=False,
        environment={
            "GOGS_IMAGE": "vicflow-test/app:1.0",
            "POSTGRES_IMAGE": "vicflow-test/postgres:15",
            "GOGS_DB_PASSWORD": "gogs-pw-1",
            "GOGS_PUBLISH_IP": "127.0.0.2",
            "GOGS_HTTP_PORT": str(http_port),
            "GOGS_SSH_PORT": str(ssh_port),
        },
    )
    params["url"] = f"http://127.0.0.2:{http_port}"
    yield params
    url = params.pop("url")
    del url
    stepkit.apply(ComposeDown, **{k: v for k, v in params.items() if k != "volume_driver"}, volumes=True)


def up(params, ctx=None):
    return stepkit.apply(ComposeUp, ctx, **{k: v for k, v in params.items() if k != "url"})


def ids(outputs):
    return {c["service"]: c["id"] for c in outputs["containers"]}


def install(gogs):
    """Gogs' first run, with the shipped blueprint's own first_run parameters."""
    wait_http(f"{gogs['url']}/install", timeout=120)  # (its /healthcheck is a 500 until installed: 0.11.19)
    deadline = time.monotonic() + 60
    while True:  # Postgres may still be initialising: Gogs then shows its form with the connection error
        try:
            return stepkit.apply(HttpRequest, **gogs_first_run(gogs["url"], gogs["environment"]["GOGS_DB_PASSWORD"]))
        except PermanentError as exc:
            if "Database setting is not correct" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def version(gogs) -> str:
    """The Gogs version its pages show (0.11's footer: "© 2017 Gogs Version: 1.0 Page: ..."), once installed."""
    page = wait_http(f"{gogs['url']}/", timeout=120).text
    return re.search(r"Gogs Version: (\S+)", page).group(1)


def users(gogs, timeout: float = 60) -> list[str]:
    """Gogs' users, read from Postgres (a 500 while Postgres is still starting after an up: asked again);
    searched by a keyword (Gogs lists none for an empty one)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{gogs['url']}/api/v1/users/search", params={"q": "gogs"}, timeout=10)
        if answer.status_code != 500 or time.monotonic() > deadline:
            return [u["username"] for u in answer.json()["data"]]
        time.sleep(0.5)


def test_gogs_comes_up_answers_and_keeps_data_across_down_and_up(gogs, docker_client):
    outputs, _ = up(gogs)
    assert sorted(outputs["created"]) == ["gogs", "gogsdb"]
    install(gogs)
    assert users(gogs) == ["gogsadmin"], "the admin account is a row in Postgres"

    labels = docker_client.containers.list(filters={"label": f"com.docker.compose.project={gogs['project']}"})
    assert {c.labels["com.docker.compose.service"] for c in labels} == {"gogs", "gogsdb"}
    app = docker_client.containers.get("gogsapp")
    assert app.labels["com.docker.compose.oneoff"] == "False"
    assert app.labels["com.docker.compose.container-number"] == "1"
    assert app.labels["com.docker.compose.project.config_files"].endswith("blueprints/gogs/docker-compose.yml")
    assert len(app.labels["com.docker.compose.config-hash"]) == 64
    assert app.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"

    down = {k: v for k, v in gogs.items() if k not in ("url", "volume_driver")}
    removed, _ = stepkit.apply(ComposeDown, **down)
    assert sorted(removed["removed_containers"]) == ["gogsapp", "gogsdb"]
    assert removed["removed_volumes"] == []
    up(gogs)
    assert version(gogs) == "1.0", "still installed: app.ini is on the gogsvol2 volume"
    assert users(gogs) == ["gogsadmin"], "and the database kept its rows"


def test_rerun_recreates_nothing_and_a_changed_env_recreates_one_service(gogs):
    first, _ = up(gogs)
    second, ctx = up(gogs)
    assert ids(second) == ids(first)
    assert sorted(second["unchanged"]) == ["gogs", "gogsdb"] and ctx.changed is False

    gogs["environment"]["GOGS_IMAGE"] = "vicflow-test/app:1.1"
    third, _ = up(gogs)
    assert third["recreated"] == ["gogs"] and third["unchanged"] == ["gogsdb"]
    assert ids(third)["gogsdb"] == ids(first)["gogsdb"] and ids(third)["gogs"] != ids(first)["gogs"]
    install(gogs)
    assert version(gogs) == "1.1"


def test_plan_lists_create_recreate_and_unchanged(gogs):
    params = {k: v for k, v in gogs.items() if k != "url"}
    planned = stepkit.plan(ComposeUp, **params)
    assert {c.target.split("/")[1]: c.action for c in planned if c.kind == "container"} == {
        "gogs": "create",
        "gogsdb": "create",
    }
    project = params["project"]
    assert sorted((c.action, c.target) for c in planned if c.kind == "volume") == [
        ("create", f"{project}_gogsvol1"),
        ("create", f"{project}_gogsvol2"),
    ]
    up(gogs)
    params["environment"] = {**params["environment"], "GOGS_IMAGE": "vicflow-test/app:1.1"}
    planned = stepkit.plan(ComposeUp, **params)
    assert {c.target.split("/")[1]: c.action for c in planned if c.kind == "container"} == {
        "gogs": "recreate",
        "gogsdb": "none",
    }
    assert [c for c in planned if c.kind == "volume"] == []  # created by the first up


def test_rollback_restores_the_replaced_container(gogs, docker_client):
    up(gogs)
    install(gogs)
    gogs["environment"]["GOGS_IMAGE"] = "vicflow-test/app:1.1"
    outputs, ctx = up(gogs)
    assert outputs["recreated"] == ["gogs"]
    assert version(gogs) == "1.1"
    stepkit.rollback(ComposeUp, ctx, **{k: v for k, v in gogs.items() if k != "url"})
    assert version(gogs) == "1.0"
    assert docker_client.containers.get("gogsapp").labels["com.docker.compose.project"] == gogs["project"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def test_two_files_merge_in_order(tmp_path, docker_engine, docker_images, docker_client):
    project = f"merge{uuid.uuid4().hex[:6]}"
    base = _write(
        tmp_path,
        "base.yml",
        """
        services:
          box:
            image: vicflow-test/busybox:latest
            command: ["sleep", "600"]
            stop_signal: SIGKILL
            environment: {A: "1", B: "base"}
            labels: {tier: base}
        """,
    )
    override = _write(
        tmp_path,
        "override.yml",
        """
        services:
          box:
            environment: {B: "override", C: "3"}
            labels: {extra: "yes"}
        """,
    )
    outputs, _ = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[base, override], project=project)
    container = docker_client.containers.get(outputs["containers"][0]["id"])
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert (env["A"], env["B"], env["C"]) == ("1", "override", "3")
    assert container.labels["tier"] == "base" and container.labels["extra"] == "yes"
    assert container.labels["com.docker.compose.project.config_files"] == f"{base},{override}"
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_depends_on_service_healthy_waits_for_the_healthcheck(tmp_path, docker_engine, docker_images, docker_client):
    project = f"healthy{uuid.uuid4().hex[:6]}"
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          slow:
            image: vicflow-test/busybox:latest
            command: ["sh", "-c", "sleep 3; touch /tmp/ready; sleep 600"]
            stop_signal: SIGKILL
            healthcheck:
              test: ["CMD", "test", "-f", "/tmp/ready"]
              interval: 1s
              retries: 30
          after:
            image: vicflow-test/busybox:latest
            command: ["sleep", "600"]
            stop_signal: SIGKILL
            depends_on:
              slow: {condition: service_healthy}
        """,
    )
    stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project)
    slow = docker_client.containers.get(f"{project}-slow-1")
    after = docker_client.containers.get(f"{project}-after-1")
    assert slow.attrs["State"]["Health"]["Status"] == "healthy"
    health_log = slow.attrs["State"]["Health"]["Log"]
    first_pass = min(entry["End"] for entry in health_log if entry["ExitCode"] == 0)
    assert after.attrs["State"]["StartedAt"] > first_pass
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("    deploy: {replicas: 2}\n", r"compose.yml:5:24: deploy.replicas of 'web' is 2: vicflow runs one container"),
        ("    imgae: x\n", r"compose.yml:5:5: unknown key 'imgae' in service 'web'"),
        ("    ports: ['80:80:80:80']\n", r"compose.yml:5:13: invalid port '80:80:80:80'"),
        ("    restart: sometimes\n", r"compose.yml:5:14: restart policy 'sometimes' is not one of"),
        ("    volumes: ['data:/data']\n", r"compose.yml:5:15: named volume 'data' is not declared"),
        ("    networks: [front]\n", r"compose.yml:5:15: service 'web' uses undeclared network 'front'"),
        (
            "    environment: {X: '${MISSING:?the admin password}'}\n",
            r"compose.yml:5:22: required variable MISSING is "
            r"missing: the admin password",
        ),
        (
            "    build: .\n",
            r"compose.yml:5:5: unsupported key 'build' in service 'web'\n  hint: vicflow never runs a build",
        ),
        ("    logging: {driver: syslog, opts: {}}\n", r"compose.yml:5:31: unknown key 'opts' in logging of 'web'"),
        ("    mem_limit: lots\n", r"compose.yml:5:16: invalid mem_limit of 'web': not a size"),
        (
            "    volumes: ['../../../etc:/host-etc']\n",
            r"compose.yml:5:15: bind mount '../../../etc:/host-etc' leaves the project folder",
        ),
        (
            "    ports: ['1-65535:1-65535']\n",
            r"compose.yml:5:13: invalid port '1-65535:1-65535': '1-65535' spans 65535 ports",
        ),
    ],
)
def test_unknown_and_invalid_keys_give_a_precise_error(tmp_path, snippet, message):
    path = _write(
        tmp_path,
        "compose.yml",
        "services:\n  web:\n    image: vicflow-test/busybox:latest\n    command: ['true']\n" + snippet,
    )
    with pytest.raises(ComposeError, match=message):
        stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project="bad", use_os_environ=False, pull="never")


def test_tls_endpoint(tmp_path, docker_engine, docker_images, docker_client):
    project = f"tls{uuid.uuid4().hex[:6]}"
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          box: {image: "vicflow-test/busybox:latest", command: ["sleep", "600"], stop_signal: SIGKILL}
        """,
    )
    outputs, _ = stepkit.apply(
        ComposeUp, docker_host=docker_engine.tls_url, cert_path=docker_engine.cert_dir, files=[path], project=project
    )
    assert outputs["containers"][0]["state"] == "running"
    stepkit.apply(ComposeDown, docker_host=docker_engine.tls_url, cert_path=docker_engine.cert_dir, project=project)


def test_missing_volume_driver_says_which_and_how_to_override(tmp_path, docker_engine, docker_images):
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          db: {image: "vicflow-test/busybox:latest", volumes: ["data:/data"]}
        volumes:
          data: {driver: vsphere}
        """,
    )
    with pytest.raises(PermanentError) as info:
        stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=f"nodriver{uuid.uuid4().hex[:6]}")
    assert "no volume driver 'vsphere'" in str(info.value)
    assert "volume_driver: local" in info.value.hint


def test_a_failing_volume_driver_is_not_called_missing():
    """Regression: ``A and B or C`` made every error that mentions a driver read "the engine has no volume driver"."""
    from vicflow.plugins.compose.deploy import no_such_volume_driver

    assert no_such_volume_driver('error looking up volume plugin vsphere: plugin "vsphere" not found')
    assert not no_such_volume_driver("create gogs_data: VolumeDriver.Create: datastore VMFS01 is full")


def test_missing_image_fails_before_anything_changes(tmp_path, docker_engine, docker_client):
    project = f"noimage{uuid.uuid4().hex[:6]}"
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          a: {image: "vicflow-test/busybox:latest", networks: [n]}
          b: {image: "127.0.0.1:1/nowhere/nothing:1", networks: [n]}
        networks:
          n: {}
        """,
    )
    with pytest.raises(PermanentError, match="image 127.0.0.1:1/nowhere/nothing:1 of service 'b'"):
        stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project)
    assert not docker_client.networks.list(names=[f"{project}_n"])
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def test_a_container_name_taken_outside_the_project_is_reported_and_left_alone(
    tmp_path, docker_engine, docker_images, docker_client
):
    project, name = f"taken{uuid.uuid4().hex[:6]}", f"someone-else-{uuid.uuid4().hex[:6]}"
    other = docker_client.containers.create("vicflow-test/busybox:latest", ["sleep", "60"], name=name)
    path = _write(
        tmp_path, "compose.yml", f"services:\n  a: {{image: 'vicflow-test/busybox:latest', container_name: {name}}}\n"
    )
    try:
        with pytest.raises(PermanentError, match=f"container name '{name}' is taken by a container not managed"):
            stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project)
        assert docker_client.containers.get(name).id == other.id, "the other container is untouched"
    finally:
        other.remove(force=True)
        stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_health_check_that_never_passes_fails_at_its_deadline_with_the_last_error():
    port = free_port()
    with pytest.raises(TransientError, match=r"did not pass within 3s .*last error: .*(Connection refused|refused)"):
        stepkit.apply(
            HealthCheck, kind="http", url=f"http://127.0.0.1:{port}/health", deadline_seconds=3, interval_seconds=0.5
        )


def test_health_check_kinds_against_real_services(gogs):
    outputs, _ = up(gogs)
    install(gogs)
    http, _ = stepkit.apply(
        HealthCheck,
        kind="http",
        url=f"{gogs['url']}/healthcheck",
        body_regex="Database connection: OK",
        deadline_seconds=120,
    )
    assert http["attempts"] >= 1 and http["latency_ms"] > 0
    port = int(gogs["url"].rsplit(":", 1)[1])
    tcp, _ = stepkit.apply(HealthCheck, kind="tcp", host="127.0.0.2", port=port)
    assert tcp["detail"] == "connected"
    box, _ = stepkit.apply(
        HealthCheck,
        kind="container",
        container="gogsdb",
        command=["pg_isready", "-h", "127.0.0.1", "-U", "gogsuser", "-d", "gogsdb"],
        docker_host=VCH,
        deadline_seconds=120,
    )
    assert box["detail"].startswith("running")


def test_keys_real_files_use_reach_the_engine(tmp_path, docker_engine, docker_images, docker_client, caplog):
    """Harbor's and other real files' keys become the Engine API's settings; an unset variable warns."""
    project = f"keys{uuid.uuid4().hex[:6]}"
    (tmp_path / "app.env").write_text("# Harbor-style env_file\nFROM_FILE=yes\nOVERRIDDEN=file\n")
    path = _write(
        tmp_path,
        "compose.yml",
        """
        version: '2'
        services:
          box:
            image: vicflow-test/busybox:latest
            entrypoint: /bin/busybox sh
            command: -c "echo started; exec sleep 600"
            stop_signal: SIGKILL
            env_file: [./app.env]
            environment: [OVERRIDDEN=compose, "EMPTY=${NOT_SET_ANYWHERE}"]
            logging:
              driver: json-file
              options: {max-size: 1m, tag: "box"}
            networks:
              back: {aliases: [boxalias]}
            extra_hosts: ["registry.local:10.0.0.5"]
            dns: [127.0.0.11]
            mem_limit: 64m
            cpus: 0.5
            cpu_shares: 512
            cap_drop: [NET_RAW]
            cap_add: [SYS_TIME]
            tmpfs: [/run/scratch:size=1m]
            read_only: true
            init: true
            shm_size: 16m
            tty: true
            stdin_open: true
            ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512}
            sysctls: {net.core.somaxconn: 1024}
            security_opt: [no-new-privileges:true]
        networks:
          back: {}
        """,
    )
    with caplog.at_level("WARNING"):
        stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, use_os_environ=False)
    assert any(
        f"{path}:" in r.getMessage() and "variable NOT_SET_ANYWHERE is not set; using an empty string" in r.getMessage()
        for r in caplog.records
    )
    box = docker_client.containers.get(f"{project}-box-1")
    config, host = box.attrs["Config"], box.attrs["HostConfig"]
    assert config["Entrypoint"] == ["/bin/busybox", "sh"]
    assert config["Cmd"] == ["-c", "echo started; exec sleep 600"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert (env["FROM_FILE"], env["OVERRIDDEN"], env["EMPTY"]) == ("yes", "compose", "")
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "tag": "box"}}
    assert "boxalias" in box.attrs["NetworkSettings"]["Networks"][f"{project}_back"]["Aliases"]
    assert host["ExtraHosts"] == ["registry.local:10.0.0.5"] and host["Dns"] == ["127.0.0.11"]
    assert (host["Memory"], host["NanoCpus"], host["CpuShares"]) == (64 * 2**20, 500_000_000, 512)
    assert (host["CapAdd"], host["CapDrop"]) == (["SYS_TIME"], ["NET_RAW"])
    assert host["Tmpfs"] == {"/run/scratch": "size=1m"}
    assert host["ReadonlyRootfs"] is True and host["Init"] is True and host["ShmSize"] == 16 * 2**20
    assert config["Tty"] is True and config["OpenStdin"] is True
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {"nofile": (1024, 2048), "nproc": (512, 512)}
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"} and host["SecurityOpt"] == ["no-new-privileges:true"]
    deadline = time.monotonic() + 30  # the container runs; its shell prints once it is scheduled
    while "started" not in box.logs().decode() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "started" in box.logs().decode()
    again, ctx = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, use_os_environ=False)
    assert ctx.changed is False and again["unchanged"] == ["box"], "a second run changes nothing"
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_partial_service_completed_by_a_later_file(tmp_path):
    """Harbor's order: the notary file gives ui only an extra network; docker-compose.yml defines ui."""
    notary = _write(
        tmp_path,
        "docker-compose.notary.yml",
        "version: '2'\nservices:\n  ui:\n    networks: [harbor-notary]\n"
        "networks:\n  harbor-notary: {external: false}\n",
    )
    main = _write(
        tmp_path,
        "docker-compose.yml",
        "version: '2'\nservices:\n  ui:\n    image: vmware/harbor-ui\n"
        "    networks: [harbor]\nnetworks:\n  harbor: {external: false}\n",
    )
    ui = load_project([notary, main], use_os_environ=False).services["ui"]
    assert ui.image == "vmware/harbor-ui" and set(ui.networks) == {"harbor", "harbor-notary"}
    with pytest.raises(ComposeError, match=r"docker-compose.notary.yml:4:5: service 'ui' has no image"):
        load_project([notary], use_os_environ=False)


def test_recreate_never_starts_what_stopped_and_replaces_nothing(tmp_path, docker_engine, docker_images, docker_client):
    """What a heal runs: a stopped container is started as it is, even when the file now names another image."""
    project = f"heal{uuid.uuid4().hex[:6]}"
    path = _write(
        tmp_path,
        "compose.yml",
        'services:\n  box: {image: "vicflow-test/busybox:latest", command: ["sleep", "600"], stop_signal: SIGKILL}\n',
    )
    first, _ = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project)
    box = docker_client.containers.get(first["containers"][0]["id"])
    box.kill()
    (tmp_path / "compose.yml").write_text(pathlib.Path(path).read_text().replace("busybox:latest", "app:1.0"))
    healed, ctx = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, recreate="never")
    assert healed["started"] == ["box"] and healed["containers"][0]["id"] == box.id
    assert docker_client.containers.get(box.id).attrs["Config"]["Image"] == "vicflow-test/busybox:latest"
    again, ctx = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, recreate="never")
    assert again["unchanged"] == ["box"] and ctx.changed is False
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_a_reported_container_that_the_next_attempt_started_is_no_longer_left_behind(
    tmp_path, docker_engine, docker_images, docker_client
):
    """Found by the restart trials: an attempt cut by a dockerd restart reports the container it could not
    remove; the next attempt starts it, and the run's summary must not list it as left behind any more."""
    project = f"leftover{uuid.uuid4().hex[:6]}"
    path = _write(
        tmp_path, "compose.yml", "services:\n  a: {image: 'vicflow-test/busybox:latest', command: [sleep, '600']}\n"
    )
    created = docker_client.api.create_container(
        "vicflow-test/busybox:latest", ["sleep", "600"], name=f"{project}-a-1",
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "a",
                "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"},
    )  # fmt: skip
    short = created["Id"][:12]
    ctx = stepkit.context(
        "app", leftovers=[f"container {project}-a-1 ({short}) created but not started - the next run starts it"]
    )
    ctx.leftovers.append("volume x: kept, remove it with docker volume rm x")  # not a container line: kept
    try:
        stepkit.apply(ComposeUp, ctx, docker_host=PLAIN, files=[path], project=project)
        assert ctx.leftovers == ["volume x: kept, remove it with docker volume rm x"], ctx.leftovers
    finally:
        stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_compose_spec_keys_reach_the_engine(tmp_path, docker_engine, docker_images, docker_client):
    """secrets and configs from files, a network's ipam, deploy's resources and restart policy: what docker
    compose honours outside swarm, read back from docker inspect (and the secret from inside the container)."""
    project = f"spec{uuid.uuid4().hex[:6]}"
    (tmp_path / "db_password.txt").write_text("not-a-real-password\n")
    (tmp_path / "site.conf").write_text("server { listen 80; }\n")
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          app:
            image: vicflow-test/busybox:latest
            command: ["sh", "-c", "cat /run/secrets/db_password /etc/app/site.conf; exec sleep 600"]
            stop_signal: SIGKILL
            restart: always
            deploy:
              resources:
                limits: {cpus: '0.5', memory: 96M, pids: 64}
                reservations: {memory: 32M}
              restart_policy: {condition: on-failure, max_attempts: 4}
            secrets: [db_password, {source: db_password, target: copy}]
            configs: [{source: site, target: /etc/app/site.conf}]
            networks: [back]
        secrets:
          db_password: {file: ./db_password.txt}
        configs:
          site: {file: ./site.conf}
        networks:
          back:
            ipam:
              config: [{subnet: 10.231.0.0/24, ip_range: 10.231.0.128/25, gateway: 10.231.0.1}]
        """,
    )
    stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, use_os_environ=False)
    try:
        app = docker_client.containers.get(f"{project}-app-1")
        host = app.attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"], host["PidsLimit"], host["MemoryReservation"]) == (
            500_000_000, 96 * 2**20, 64, 32 * 2**20,
        )  # fmt: skip
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 4}
        mounts = {m["Destination"]: (m["Type"], m["Source"], m["RW"]) for m in app.attrs["Mounts"]}
        assert mounts == {
            "/run/secrets/db_password": ("bind", str(tmp_path / "db_password.txt"), False),
            "/run/secrets/copy": ("bind", str(tmp_path / "db_password.txt"), False),
            "/etc/app/site.conf": ("bind", str(tmp_path / "site.conf"), False),
        }
        deadline = time.monotonic() + 30
        while "listen 80" not in app.logs().decode() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert app.logs().decode() == "not-a-real-password\nserver { listen 80; }\n"
        ipam = docker_client.networks.get(f"{project}_back").attrs["IPAM"]
        assert ipam["Config"] == [{"Subnet": "10.231.0.0/24", "IPRange": "10.231.0.128/25", "Gateway": "10.231.0.1"}]
        again, ctx = stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, use_os_environ=False)
        assert ctx.changed is False and again["unchanged"] == ["app"], "a second run changes nothing"
    finally:
        stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)


def test_on_a_vch_compose_up_refuses_what_vic_cannot_honour_before_changing_anything(
    tmp_path, docker_engine, docker_client, caplog
):
    """The VCH endpoint says it is VIC 1.1.1 (docker info): a secret from a file is a located error, every
    healthcheck a warning with file:line, and service_healthy an error that says what to use instead."""
    project = f"vchspec{uuid.uuid4().hex[:6]}"
    (tmp_path / "db_password.txt").write_text("not-a-real-password\n")
    path = _write(
        tmp_path,
        "compose.yml",
        """
        services:
          db:
            image: vicflow-test/busybox:latest
            command: ["sleep", "600"]
            stop_signal: SIGKILL
            secrets: [db_password]
        secrets:
          db_password: {file: ./db_password.txt}
        """,
    )
    with pytest.raises(ComposeError) as info:
        stepkit.apply(ComposeUp, docker_host=VCH, files=[path], project=project, use_os_environ=False)
    assert str(info.value).startswith(f"{path}:6:5: VIC 1.1 cannot mount the secrets of 'db'")
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    stepkit.apply(ComposeUp, docker_host=PLAIN, files=[path], project=project, use_os_environ=False)
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project)

    checked = _write(
        tmp_path,
        "checked.yml",
        """
        services:
          db:
            image: vicflow-test/busybox:latest
            command: ["sleep", "600"]
            stop_signal: SIGKILL
            healthcheck: {test: [CMD, "true"], interval: 2s}
        """,
    )
    with caplog.at_level("WARNING"):
        stepkit.apply(ComposeUp, docker_host=VCH, files=[checked], project=project, use_os_environ=False)
    assert [r.getMessage() for r in caplog.records if "healthcheck" in r.getMessage()] == [
        f"{checked}:6:5: the healthcheck of 'db' is dropped on a VCH: VIC 1.1.1 never reads a container's "
        "Healthcheck, so it never runs and the container never reports healthy (prove readiness with a "
        "health_check step after compose_up)"
    ]
    stepkit.apply(ComposeDown, docker_host=VCH, project=project)

    healthy = _write(
        tmp_path,
        "healthy.yml",
        """
        services:
          db:
            image: vicflow-test/busybox:latest
            healthcheck: {test: [CMD, "true"]}
          web:
            image: vicflow-test/busybox:latest
            depends_on: {db: {condition: service_healthy}}
        """,
    )
    with pytest.raises(ComposeError) as info:
        stepkit.apply(ComposeUp, docker_host=VCH, files=[healthy], project=project, use_os_environ=False)
    assert str(info.value).startswith(f"{healthy}:7:34: service 'web' waits for 'db' to be healthy")
    assert "health_check step" in info.value.hint
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
