"""How ``up`` converges a project: compose_up's options besides the engine and the files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RegistryAuth(BaseModel):
    """Credentials for pulls from a private registry (a Harbor project that is not public)."""

    model_config = ConfigDict(extra="forbid")

    username: str
    password: str = Field(description="use ${{ secrets.name }}")
    registry: str | None = Field(
        None, description="the registry host they are for, e.g. harbor.domain.sddc (default: all)"
    )


class UpOptions(BaseModel):
    """How ``up`` converges a project (compose_up's parameters besides the engine and the files)."""

    model_config = ConfigDict(extra="forbid")

    remove_orphans: bool = False
    volume_driver: str | None = Field(
        None, description="override the driver of every volume (e.g. local on an engine without the vsphere driver)"
    )
    pull: Literal["missing", "always", "never"] = "missing"
    parallel: int = Field(8, ge=1, le=64, description="containers created at once within a level")
    registry_auth: RegistryAuth | None = Field(None, description="credentials for pulling from a private registry")
    recreate: Literal["changed", "never"] = Field(
        "changed",
        description="changed: replace a container whose configuration or image changed; never: only create what is "
        "missing and start what is stopped (a heal must not undo a newer deployment)",
    )
