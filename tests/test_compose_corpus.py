"""Parse, without running, every compose file of tests/data/compose-corpus (real projects' shapes).

The first line of each says what must happen: `# expect: ok`, `# expect: unsupported 'KEY' at L:C`,
`# expect: vic 'KEY' at L:C` (loads for an ordinary engine; on a VCH, VIC 1.1's refusal of KEY at L:C), or
`# expect: error at L:C: MESSAGE` (refused for ordinary engines too, with a message that starts so).
`NAME.override.yml` is merged over `NAME.yml`, as `docker compose -f NAME.yml -f NAME.override.yml`;
`NAME.before.yml` is loaded before it (Harbor's `-f docker-compose.notary.yml -f docker-compose.yml`).
"""

import re
from pathlib import Path

import pytest
from vicflow.plugins.compose.errors import ComposeError
from vicflow.plugins.compose.project import load_project

CORPUS = Path(__file__).parent / "data" / "compose-corpus"
FILES = sorted(p for p in CORPUS.rglob("*.yml") if not p.name.endswith((".override.yml", ".before.yml")))
ENV = {"KC_PASSWORD": "kc"}


def test_the_corpus_is_large_enough():
    assert len(FILES) >= 45


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_compose_file_loads_or_names_the_unsupported_key(path):
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    before = path.with_name(path.stem + ".before.yml")
    files = [str(before)] if before.exists() else []
    files.append(str(path))
    override = path.with_name(path.stem + ".override.yml")
    if override.exists():
        files.append(str(override))
    if expect == "ok":
        project = load_project(files, project_name=path.stem, environment=ENV, use_os_environ=False)
        assert project.services and all(s.image for s in project.services.values())
        return
    if expect.startswith("error at "):
        where, message = expect.removeprefix("error at ").split(": ", 1)
        with pytest.raises(ComposeError) as info:
            load_project(files, project_name=path.stem, environment=ENV, use_os_environ=False)
        assert str(info.value).startswith(f"{path}:{where}: {message}"), str(info.value)
        return
    kind, key, line, column = re.fullmatch(r"(unsupported|vic) '(\w+)' at (\d+):(\d+)", expect).groups()
    if kind == "vic":
        load_project(files, project_name=path.stem, environment=ENV, use_os_environ=False)
    with pytest.raises(ComposeError) as info:
        load_project(files, project_name=path.stem, environment=ENV, use_os_environ=False, vch=kind == "vic")
    message = f"unsupported key '{key}'" if kind == "unsupported" else f"VIC 1.1 does not support '{key}'"
    assert str(info.value).startswith(f"{path}:{line}:{column}: {message}"), str(info.value)


def test_override_merges_in_order():
    base = CORPUS / "29-override-base.yml"
    project = load_project([str(base), str(base.with_name("29-override-base.override.yml"))], use_os_environ=False)
    web = project.services["web"]
    assert web.image == "example/web:1.1-dev"
    assert web.environment == {"LOG_LEVEL": "debug", "FEATURE_X": "false"}
    assert [(p.published, p.target) for p in web.ports] == [(8080, 80), (9229, 9229)]
    assert [m.source.rsplit("/", 1)[1] for m in web.mounts] == ["conf-dev"]


def test_details_of_real_shapes():
    seed = load_project([str(CORPUS / "33-seed-gogs-vic.yml")], use_os_environ=False)
    assert seed.levels() == [["gogsdb"], ["gogs"]]
    assert seed.volumes["gogsvol1"].driver == "vsphere"
    shop = load_project([str(CORPUS / "02-django-postgres-redis.yml")], use_os_environ=False)
    assert shop.services["web"].environment["SECRET_KEY"] == "not-a-real-key"
    assert shop.services["web"].depends_on == {"db": "service_healthy", "cache": "service_started"}
    assert shop.services["db"].healthcheck["Interval"] == 5_000_000_000
    rabbit = load_project([str(CORPUS / "12-rabbitmq-cluster-ports-range.yml")], use_os_environ=False)
    assert [p.published for p in rabbit.services["rabbit"].ports][-3:] == [25672, 25673, 25674]
    v2 = load_project([str(CORPUS / "16-v2-format.yml")], use_os_environ=False)
    assert v2.services["redis"].stop_grace_period == 90
    assert v2.services["app"].extra_hosts == ["somehost:162.242.195.82", "otherhost:50.31.209.229"]
    edge = load_project([str(CORPUS / "05-traefik-external-network.yml")], use_os_environ=False)
    assert edge.networks["proxy"].name == "edge-proxy" and edge.networks["proxy"].external


def test_harbor_1_1_in_the_seeds_order():
    main = CORPUS / "harbor-1.1" / "35-harbor-1.1.yml"
    project = load_project([str(main.with_name("35-harbor-1.1.before.yml")), str(main)], use_os_environ=False)
    assert project.name == "harbor-11" and len(project.services) == 10
    ui, signer, server = (project.services[s] for s in ("ui", "notary-signer", "notary-server"))
    assert ui.image == "vmware/harbor-ui:__version__" and set(ui.networks) == {"harbor", "harbor-notary"}
    assert signer.networks["notary-sig"] == ["notarysigner"]
    assert server.entrypoint == "/usr/bin/env sh" and server.command.startswith("-c ")
    assert project.services["registry"].host["LogConfig"] == {
        "Type": "syslog",
        "Config": {"syslog-address": "tcp://127.0.0.1:1514", "tag": "registry"},
    }
    assert project.services["notary-db"].environment["MYSQL_ALLOW_EMPTY_PASSWORD"] == '"true"'
    assert [p.published for p in project.services["proxy"].ports] == [80, 443]


def test_yaml_anchors_and_x_extensions():
    airflow = load_project([str(CORPUS / "37-airflow-x-common.yml")], use_os_environ=False)
    init = airflow.services["airflow-init"]
    assert init.image == "apache/airflow:2.7.1" and init.user == "50000:0"
    assert init.environment["_AIRFLOW_DB_MIGRATE"] == "true" and "AIRFLOW__CORE__EXECUTOR" in init.environment
    assert init.depends_on == {"postgres": "service_healthy"}


def _compose(tmp_path, text: str) -> str:
    path = tmp_path / "compose.yml"
    path.write_text(text)
    return str(path)


def test_compose_spec_keys_docker_compose_honours_outside_swarm(tmp_path):
    """deploy resources and restart_policy, secrets and configs from files, a network's ipam: as the Engine
    API's settings (tests/test_compose.py reads them back from a real engine)."""
    (tmp_path / "pw.txt").write_text("secret\n")
    (tmp_path / "site.conf").write_text("server {}\n")
    path = _compose(
        tmp_path,
        "services:\n"
        "  web:\n"
        "    image: nginx\n"
        "    restart: always\n"
        "    mem_limit: 1g\n"
        "    deploy:\n"
        "      resources:\n"
        "        limits: {cpus: '0.5', memory: 256M, pids: 100}\n"
        "        reservations: {memory: 64M}\n"
        "      restart_policy: {condition: on-failure, max_attempts: 3}\n"
        "    secrets: [pw, {source: pw, target: again}, {source: pw, target: /etc/pw}]\n"
        "    configs: [site, {source: site, target: /etc/nginx/conf.d/default.conf}]\n"
        "    networks: [back]\n"
        "secrets:\n  pw: {file: ./pw.txt}\n"
        "configs:\n  site: {file: site.conf}\n"
        "networks:\n"
        "  back:\n"
        "    ipam: {config: [{subnet: 10.99.0.0/24, ip_range: 10.99.0.128/25, gateway: 10.99.0.1}]}\n",
    )
    project = load_project([path], use_os_environ=False)
    web = project.services["web"]
    assert web.host["Memory"] == 256 * 2**20, "deploy's limit replaces mem_limit, as in docker compose"
    assert (web.host["NanoCpus"], web.host["PidsLimit"], web.host["MemoryReservation"]) == (5 * 10**8, 100, 64 * 2**20)
    assert web.restart == "on-failure:3", "deploy.restart_policy replaces restart:"
    mounts = [(m.type, m.source, m.target, m.read_only) for m in web.mounts]
    pw, site = str(tmp_path / "pw.txt"), str(tmp_path / "site.conf")
    assert mounts == [
        ("bind", pw, "/run/secrets/pw", True),
        ("bind", pw, "/run/secrets/again", True),
        ("bind", pw, "/etc/pw", True),
        ("bind", site, "/site", True),
        ("bind", site, "/etc/nginx/conf.d/default.conf", True),
    ]
    assert project.networks["back"].ipam == {
        "Driver": "default",
        "Config": [{"Subnet": "10.99.0.0/24", "IPRange": "10.99.0.128/25", "Gateway": "10.99.0.1",
                    "AuxiliaryAddresses": None}],
        "Options": None,
    }  # fmt: skip
    assert project.warnings == []


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("    deploy: {replicas: 2}\n", "4:24: deploy.replicas of 'web' is 2: vicflow runs one container per service"),
        (
            "    deploy: {resources: {reservations: {devices: []}}}\n",
            "4:41: unsupported key 'devices' in deploy.resources.reservations",
        ),
        ("    deploy: {restart_policy: {condition: sometimes}}\n", "4:42: restart_policy condition 'sometimes'"),
        ("    deploy: {resources: {limits: {memory: lots}}}\n", "4:43: invalid resources.limits.memory of 'web'"),
        ("    deploy: {resources: {limits: {cpu: 1}}}\n", "4:35: unknown key 'cpu' in deploy.resources.limits"),
        ("    secrets: [nope]\n", "4:15: service 'web' uses undeclared secret 'nope'"),
        ("    secrets: [{target: x}]\n", "4:15: a secret of 'web' needs source: (its name)"),
        ("secrets:\n  s: {external: true}\n", "5:7: unsupported key 'external' in secret 's'"),
        ("secrets:\n  s: {environment: TOKEN}\n", "5:7: unsupported key 'environment' in secret 's'"),
        ("configs:\n  c: {name: x}\n", "5:6: config 'c' has no file:"),
        ("configs:\n  c: {file: ./missing.conf}\n", "5:13: the file of config 'c' does not exist"),
        ("networks:\n  n: {ipam: {config: [{subnet: x, range: y}]}}\n", "5:35: unknown key 'range' in an ipam pool"),
    ],
)
def test_compose_spec_keys_that_are_wrong_or_swarm_only_are_located_errors(tmp_path, snippet, message):
    path = _compose(tmp_path, "services:\n  web:\n    image: nginx\n" + snippet)
    with pytest.raises(ComposeError) as info:
        load_project([path], use_os_environ=False)
    assert str(info.value).startswith(f"{path}:{message}"), str(info.value)


def test_what_docker_compose_ignores_outside_swarm_is_a_warning(tmp_path):
    (tmp_path / "pw.txt").write_text("secret\n")
    path = _compose(
        tmp_path,
        "services:\n  web:\n    image: nginx\n"
        "    deploy:\n"
        "      placement: {constraints: [node.role==manager]}\n"
        "      resources: {reservations: {cpus: '0.25'}}\n"
        "      restart_policy: {delay: 5s}\n"
        "    secrets: [{source: pw, mode: 0400}]\n"
        "secrets:\n  pw: {file: pw.txt}\n",
    )
    warnings = load_project([path], use_os_environ=False).warnings
    assert [w.split(": ", 1)[0].removeprefix(path + ":") for w in warnings] == ["5:7", "6:34", "7:24", "8:15"]
    assert "deploy.placement of 'web' is ignored" in warnings[0]
    assert "deploy.resources.reservations.cpus of 'web' is ignored" in warnings[1]
    assert "deploy.restart_policy.delay of 'web' is ignored" in warnings[2]
    assert "uid, gid and mode of secret 'pw' ('web') are ignored" in warnings[3]


# VIC 1.1.1 (lib/apiservers/engine/backends/, see plugins/compose/vch_rules.py): what a VCH cannot honour
VCH_REFUSALS = [
    ("    deploy: {resources: {limits: {cpus: '1'}}}\n", "4:35", "does not honour deploy.resources.limits.cpus"),
    ("    deploy: {resources: {limits: {pids: 10}}}\n", "4:35", "does not honour deploy.resources.limits.pids"),
    ("    deploy: {resources: {reservations: {memory: 1g}}}\n", "4:41", "does not honour deploy.resources.reserv"),
    ("    deploy: {restart_policy: {condition: any}}\n", "4:14", "does not honour deploy.restart_policy of 'web'"),
    ("    secrets: [pw]\nsecrets:\n  pw: {file: pw.txt}\n", "4:5", "cannot mount the secrets of 'web'"),
    ("    configs: [c]\nconfigs:\n  c: {file: pw.txt}\n", "4:5", "cannot mount the configs of 'web'"),
    (
        "networks:\n  n: {ipam: {config: [{subnet: 10.1.0.0/24}, {subnet: 10.2.0.0/24}]}}\n",
        "5:22",
        "does not honour the ipam of network 'n': at most one ipam config supported",
    ),
    ("networks:\n  n: {ipam: {driver: dhcp}}\n", "5:14", "does not honour ipam driver of network 'n'"),
    ("networks:\n  n: {ipam: {config: [{aux_addresses: {a: 10.0.0.5}}]}}\n", "5:24", "does not honour ipam aux"),
]


@pytest.mark.parametrize(("snippet", "where", "message"), VCH_REFUSALS)
def test_on_a_vch_what_vic_cannot_honour_is_a_located_error(tmp_path, snippet, where, message):
    (tmp_path / "pw.txt").write_text("secret\n")
    path = _compose(tmp_path, "services:\n  web:\n    image: nginx\n" + snippet)
    load_project([path], use_os_environ=False)  # an ordinary engine takes it
    with pytest.raises(ComposeError) as info:
        load_project([path], use_os_environ=False, vch=True)
    assert str(info.value).startswith(f"{path}:{where}: VIC 1.1 {message}"), str(info.value)


def test_on_a_vch_what_vic_honours_loads():
    """One ipam pool (subnet, ip_range, gateway) and a memory limit are what a VCH reads (network.go,
    container.go); a memory limit below VIC's floor is a warning that says what the container VM gets."""
    project = load_project([str(CORPUS / "49-ipam-static-subnet.yml")], use_os_environ=False, vch=True)
    assert project.networks["back"].ipam["Config"][0]["Subnet"] == "172.28.0.0/16"


def test_on_a_vch_every_healthcheck_is_a_warning_and_service_healthy_an_error(tmp_path):
    """VIC 1.1.1 never reads Config.Healthcheck: a check is dropped (warned about with file:line), and a
    depends_on that waits for healthy could never be met (refused, with what to use instead)."""
    path = _compose(
        tmp_path,
        "services:\n"
        "  db:\n"
        "    image: postgres\n"
        "    healthcheck: {test: [CMD, pg_isready]}\n"
        "    deploy: {resources: {limits: {memory: 200M}}}\n"
        "  cache:\n"
        "    image: redis\n"
        "    healthcheck: {disable: true}\n"
        "  web:\n"
        "    image: nginx\n"
        "    healthcheck: {test: curl -f http://localhost/}\n"
        "    depends_on: [db]\n",
    )
    warnings = load_project([path], use_os_environ=False, vch=True).warnings
    assert warnings == [
        f"{path}:4:5: the healthcheck of 'db' is dropped on a VCH: VIC 1.1.1 never reads a container's Healthcheck, "
        "so it never runs and the container never reports healthy (prove readiness with a health_check step after "
        "compose_up)",
        f"{path}:5:43: 'db' asks for 200 MiB; a VCH gives its container VM 512 MiB (at least 512 MiB, in steps "
        "of 128 MiB)",
        f"{path}:11:5: the healthcheck of 'web' is dropped on a VCH: VIC 1.1.1 never reads a container's "
        "Healthcheck, so it never runs and the container never reports healthy (prove readiness with a health_check "
        "step after compose_up)",
    ]
    assert load_project([path], use_os_environ=False).warnings == [], "an ordinary engine runs them"
    healthy = Path(path).read_text().replace("depends_on: [db]", "depends_on: {db: {condition: service_healthy}}")
    Path(path).write_text(healthy)
    with pytest.raises(ComposeError) as info:
        load_project([path], use_os_environ=False, vch=True)
    assert str(info.value).splitlines()[0] == (
        f"{path}:12:34: service 'web' waits for 'db' to be healthy, which never happens on a VCH: VIC 1.1.1 drops "
        "every healthcheck"
    )
    assert info.value.hint == (
        "write depends_on: [db] (condition: service_started), and after compose_up prove that 'db' is ready with "
        "a health_check step (kind: container with a command run in it, e.g. pg_isready, as a detached exec; "
        "http or tcp for a published port)"
    )


@pytest.mark.parametrize("key", ["secret", "env_file"])
def test_a_file_name_longer_than_the_file_system_allows_is_an_error_at_its_line(tmp_path, key):
    """Found by tests/reliability/test_hostile_input.py: Path.is_file() raises for a name over NAME_MAX (255)."""
    name = "./" + "x" * 300 + ".txt"
    body = "services:\n  db:\n    image: postgres:15\n"
    if key == "secret":
        body += f"secrets:\n  db_password:\n    file: {name}\n"
        where, message = "6:11", "the file of secret 'db_password' cannot be read: File name too long"
    else:
        body += f"    env_file: {name}\n"
        where, message = "4:15", f"env_file '{name[:200]}' of service 'db' cannot be read: File name too long"
    path = tmp_path / "compose.yaml"
    path.write_text(body)
    with pytest.raises(ComposeError) as info:
        load_project([str(path)], project_name="long", use_os_environ=False)
    assert str(info.value).startswith(f"{path}:{where}: {message}"), str(info.value)
