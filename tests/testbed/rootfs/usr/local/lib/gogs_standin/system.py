"""What InstallPost asks the system: the current user, ``git`` on PATH, the repository and log roots."""

from __future__ import annotations

import os
import pwd
import shutil

from .release import Release


def current_username(release: Release) -> str:
    """pkg/user/user.go CurrentUsername (0.11.19): $USER, else $USERNAME; internal/osutil/osutil.go (0.13.4)
    falls back to the account of the process.  The image's s6 script and start.sh export USER=git."""
    name = os.environ.get("USER") or os.environ.get("USERNAME") or ""
    if not name and release.version != "0.11.19":
        try:
            name = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            name = ""
    return name


def git_missing() -> str | None:
    """exec.LookPath("git"): the error text when no ``git`` is on PATH."""
    if shutil.which("git"):
        return None
    return 'exec: "git": executable file not found in $PATH'


def mkdir_all(path: str) -> str | None:
    """os.MkdirAll(path, os.ModePerm): None, or Go's *PathError text ("mkdir <path>: <reason>")."""
    if os.path.isdir(path):
        return None
    if os.path.exists(path):
        return f"mkdir {path}: not a directory"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"mkdir {exc.filename or path}: {(exc.strerror or str(exc)).lower()}"
    return None
