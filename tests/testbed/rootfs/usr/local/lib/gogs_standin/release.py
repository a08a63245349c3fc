"""What differs between the two Gogs releases the stand-in plays (gogs/gogs at the tag named in each field)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    version: str
    # gogs.go: APP_VER (0.11.19) / conf.App.Version (0.13.4); shown by the 0.11 footer and 404 page
    app_ver: str
    # the commit of the tag: Taskfile.yml's BuildCommit (-X ...conf.BuildCommit), in 0.13's head.tmpl asset URLs
    build_commit: str
    # the route file, for log lines that say where a behaviour comes from
    handler: str
    # the Postgres driver Gogs connects with: vendored lib/pq (vendor/vendor.json, rev ae8357db, 2016-10-14) or
    # pgx v5.3.0 (go.mod; internal/db/models.go getEngine registers driver "pgx")
    driver: str
    # the Go that built the image: docker/build-go.sh (1.8) / Dockerfile golang:alpine3.21; net errors differ
    go_net_legacy: bool
    # the Install form's database choices: InstallInit's DbOptions and InstallPost's dbTypes map
    db_types: dict[str, str]
    # conf/app.ini [database] defaults, shown by GET /install before anything is saved
    default_db_option: str
    default_db_host: str
    default_db_user: str
    # /healthcheck before install: models.Ping on a nil engine panics (0.11.19, macaron.Recovery answers 500);
    # 0.13.4's db.Ping says "database not available" (internal/db/models.go)
    ping_without_engine: str | None
    # macaron SetAutoHead(true): 0.13.4's internal/cmd/web.go; 0.11.19 answers HEAD only on /healthcheck
    auto_head: bool
    # tool.AvatarLink: 0.13.4 appends "?d=identicon" (internal/tool/tool.go), 0.11.19 does not (pkg/tool/tool.go)
    gravatar_suffix: str


V0_11_19 = Release(
    version="0.11.19",
    app_ver="0.11.19.0609",
    build_commit="",
    handler="routers/install.go",
    driver="lib/pq",
    go_net_legacy=True,
    db_types={"MySQL": "mysql", "PostgreSQL": "postgres", "MSSQL": "mssql", "SQLite3": "sqlite3", "TiDB": "tidb"},
    default_db_option="MySQL",
    default_db_host="127.0.0.1:3306",
    default_db_user="root",
    ping_without_engine=None,
    auto_head=False,
    gravatar_suffix="",
)

V0_13_4 = Release(
    version="0.13.4",
    app_ver="0.13.4",
    build_commit="d958a47a0e9d8747e399c687fdb3ec64a3b1a736",
    handler="internal/route/install.go",
    driver="pgx",
    go_net_legacy=False,
    db_types={"PostgreSQL": "postgres", "MySQL": "mysql", "SQLite3": "sqlite3"},
    default_db_option="PostgreSQL",
    default_db_host="127.0.0.1:5432",
    default_db_user="gogs",
    ping_without_engine="database not available",
    auto_head=True,
    gravatar_suffix="?d=identicon",
)

RELEASES = {r.version: r for r in (V0_11_19, V0_13_4)}


def current() -> Release:
    """The release GOGS_STANDIN_VERSION names; anything else stops the stand-in with the choices.
    GOGS_STANDIN_APP_VER replaces the version string only, as a build of that release with another APP_VER would
    (the test images vicflow-test/app:1.0 and :1.1 are 0.11.19 so built)."""
    wanted = os.environ.get("GOGS_STANDIN_VERSION", "")
    if wanted not in RELEASES:
        raise SystemExit(f"gogs-standin: GOGS_STANDIN_VERSION={wanted!r}: set it to one of {', '.join(RELEASES)}")
    app_ver = os.environ.get("GOGS_STANDIN_APP_VER")
    return dataclasses.replace(RELEASES[wanted], app_ver=app_ver) if app_ver else RELEASES[wanted]
