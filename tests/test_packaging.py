"""What `pip install vicflow` (a built wheel, not this editable checkout) ships: every package of flows/ and plugins/."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_under_flows_and_plugins_is_in_the_wheel():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {name: setuptools["package-dir"][name] for name in setuptools["packages"]}
    for top, dotted in (("flows", "vicflow.flows"), ("plugins", "vicflow.plugins")):
        for init in sorted((REPO / top).rglob("__init__.py")):
            folder = init.parent.relative_to(REPO)
            name = ".".join([dotted, *folder.parts[1:]])
            assert shipped.get(name) == str(folder), (
                f"{folder}/ is a package that a built wheel leaves out: add {name!r} to [tool.setuptools] packages "
                f"and {name!r} = {str(folder)!r} to package-dir in pyproject.toml"
            )
