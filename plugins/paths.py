"""A parameter that names a file: written relative to the blueprint, read from anywhere.

``BlueprintFile`` marks such a parameter. When the engine validates a step's parameters it passes the
blueprint's folder as pydantic's validation context, and a relative value becomes that folder's file, so a
step opens the file the blueprint's author meant whatever the worker's working directory is. Without a
context (a static check of the blueprint, an event source's config) the value is kept as written.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

BASE_DIR = "base_dir"  # the key of the validation context the engine passes


def _against_base_dir(value: str, info: ValidationInfo) -> str:
    base = (info.context or {}).get(BASE_DIR) if isinstance(info.context, dict) else None
    if base is None or not value or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


BlueprintFile = Annotated[str, AfterValidator(_against_base_dir)]
