"""Parse, without running, every compose file of tests/data/compose-corpus (real projects' shapes).

The first line of each says what must happen: `# expect: ok`, `# expect: unsupported 'KEY' at L:C`, or
`# expect: vic 'KEY' at L:C` (loads for an ordinary engine; on a VCH, VIC 1.1's refusal of KEY at L:C).
`NAME.override.yml` is merged over `NAME.yml`, as `docker compose -f NAME.yml -f NAME.override.yml`;
`NAME.before.yml` is loaded before it (Harbor's `-f docker-compose.notary.yml -f docker-compose.yml`).
"""

import re
from pathlib import Path

import pytest
from vicflow.plugins.compose.project import ComposeError, load_project

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
