"""``${{ secrets.name }}``: where a secret's value comes from, and that it is masked once read."""

from __future__ import annotations

import os
import re
import sys
from typing import Any, cast

from vicflow.flows.language.links import configured_api_url
from vicflow.plugins import masking
from vicflow.plugins.errors import StepError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # a Prefect block name and an environment variable's tail


class Secrets:
    """A Prefect Secret block, else the VICFLOW_SECRET_<NAME> variable; every value read is masked.

    Without a Prefect server (no PREFECT_API_URL, not in a flow run) only the variable is read: asking Prefect
    would start a temporary server for one lookup (10 s, and its log lines), and there would be no block in it.
    """

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str) or not NAME_RE.match(name):
            shown = repr(name[:40]) + "..." if isinstance(name, str) and len(name) > 40 else repr(name)
            raise StepError(
                f"{shown} is not a secret's name",
                "a secret's name is 1 to 128 letters, digits, - and _: ${{ secrets.db_password }}",
            )
        variable = "VICFLOW_SECRET_" + name.upper().replace("-", "_")
        env = os.environ.get(variable)
        if env is not None:
            value = env
        elif not _prefect_server():
            raise StepError(
                f"secret {name!r} is not set: no {variable} variable, and no Prefect server to hold a Secret block "
                "(PREFECT_API_URL is not set)",
                f"set {variable}, or set PREFECT_API_URL to the server that holds the Secret block {name!r}",
            )
        else:
            value = _from_block(name, variable)
        masking.add_secret(value)
        _names[value] = name
        return value


def _prefect_server() -> bool:
    """Whether a Prefect server is there to ask: PREFECT_API_URL is set (in the environment or the active
    Prefect profile), or this is a flow run (whose temporary server the run started)."""
    if configured_api_url():
        return True
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext  # imported already (checked above): costs nothing

    return FlowRunContext.get() is not None


def _from_block(name: str, variable: str) -> Any:
    try:
        from prefect.blocks.system import Secret  # only for a secret not in the environment: +2.2 s (Prefect)

        # _sync: Prefect's own switch to the blocking call (its type stubs do not name it)
        return cast(Any, Secret).load(name, _sync=True).get()
    except Exception as exc:  # ValueError: no such block; anything else: Prefect could not be asked
        why = "there is no Secret block by that name" if isinstance(exc, ValueError) else type(exc).__name__
        raise StepError(
            f"secret {name!r} is not set: no {variable} variable, and {why}",
            f"create it with: prefect block create secret (name {name!r}), or set {variable}",
        ) from None


_names: dict[str, str] = {}  # value -> the name it was read under (a child run gets the name, not the value)


def reference_to(value: Any) -> str | None:
    """``${{ secrets.NAME }}`` for a value that was read as secret NAME in this process; else None."""
    name = _names.get(value) if isinstance(value, str) else None
    return f"${{{{ secrets.{name} }}}}" if name else None
