"""``${{ secrets.name }}``: where a secret's value comes from, and that it is masked once read."""

from __future__ import annotations

import os
from typing import Any, cast

from vicflow.plugins import masking
from vicflow.plugins.step import StepError


class Secrets:
    """A Prefect Secret block, else the VICFLOW_SECRET_<NAME> variable; every value read is masked."""

    def __getitem__(self, name: str) -> str:
        variable = "VICFLOW_SECRET_" + name.upper().replace("-", "_")
        env = os.environ.get(variable)
        if env is not None:
            value = env
        else:
            try:
                from prefect.blocks.system import Secret

                # _sync: Prefect's own switch to the blocking call (its type stubs do not name it)
                value = cast(Any, Secret).load(name, _sync=True).get()
            except Exception as exc:  # ValueError: no such block; anything else: Prefect could not be asked
                why = "there is no Secret block by that name" if isinstance(exc, ValueError) else type(exc).__name__
                raise StepError(
                    f"secret {name!r} is not set: no {variable} variable, and {why}",
                    f"create it with: prefect block create secret (name {name!r}), or set {variable}",
                ) from None
        masking.add_secret(value)
        _names[value] = name
        return value


_names: dict[str, str] = {}  # value -> the name it was read under (a child run gets the name, not the value)


def reference_to(value: Any) -> str | None:
    """``${{ secrets.NAME }}`` for a value that was read as secret NAME in this process; else None."""
    name = _names.get(value) if isinstance(value, str) else None
    return f"${{{{ secrets.{name} }}}}" if name else None
