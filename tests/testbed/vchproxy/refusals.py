"""The Engine API operations VIC 1.1.1's personality refuses, with its own words and the file that says them.

Each row: the HTTP method, the path (without the /vX.Y prefix), the message, and the source file of
vmware/vic at v1.1.1 under lib/apiservers/engine/backends/. The message's status is Docker's rule for an error
without one (vic.status_for): all of these are 500s.
"""

from __future__ import annotations

import re

from tests.testbed.vchproxy import vic

NAME = r"[^/]+"
IMAGE = r".+"  # the router's {name:.*}: an image name holds slashes
SWARM = f"{vic.PRODUCT} does not yet support Docker Swarm"
PLUGINS = f"{vic.PRODUCT} does not yet support plugins"

# (methods, path pattern, message, source file)
REFUSED: list[tuple[tuple[str, ...], str, str, str]] = [
    (("POST",), r"/build", "BuildFromContext", "build.go"),
    (("GET",), rf"/containers/{NAME}/archive", "ContainerArchivePath", "container.go"),
    (("HEAD",), rf"/containers/{NAME}/archive", "ContainerStatPath", "container.go"),
    (("PUT",), rf"/containers/{NAME}/archive", "ContainerExtractToDir", "container.go"),
    (("GET",), rf"/containers/{NAME}/export", "ContainerExport", "container.go"),
    (("POST",), rf"/containers/{NAME}/pause", "ContainerPause", "container.go"),
    (("POST",), rf"/containers/{NAME}/unpause", "ContainerUnpause", "container.go"),
    (("POST",), rf"/containers/{NAME}/update", "ontainerUpdate", "container.go"),  # VIC's typo, kept
    (("GET",), rf"/containers/{NAME}/changes", "ontainerChanges", "container.go"),  # VIC's typo, kept
    (("GET",), rf"/containers/{NAME}/top", "ContainerTop", "container.go"),
    (("POST",), r"/containers/prune", "ContainersPrune", "container.go"),
    (("POST",), r"/volumes/prune", "VolumesPrune", "volume.go"),
    (("POST",), r"/images/prune", "image.ImagesPrune", "image.go"),
    (("POST",), r"/networks/prune", "NetworksPrune", "network.go"),
    (("POST",), rf"/networks/{NAME}/disconnect", "network.DisconnectContainerFromNetwork", "network.go"),
    (("POST",), r"/commit", "image.Commit", "image.go"),
    (("GET",), rf"/images/{IMAGE}/history", "image.History", "image.go"),
    (("POST",), r"/images/load", "image.LoadImage", "image.go"),
    (("GET",), r"/images/get", "image.ExportImage", "image.go"),
    (("GET",), rf"/images/{IMAGE}/get", "image.ExportImage", "image.go"),
    (("POST",), rf"/images/{IMAGE}/push", "image.PushImage", "image.go"),
    (("GET",), r"/images/search", "image.SearchRegistryForImages", "image.go"),
    (("GET",), r"/system/df", "SystemDiskUsage", "system.go"),
    (("GET", "POST"), rf"/containers/{NAME}/checkpoints", "checkpointing", "checkpoint.go"),
    (("DELETE",), rf"/containers/{NAME}/checkpoints/{NAME}", "checkpointing", "checkpoint.go"),
]
REFUSED_WHOLE: list[tuple[str, str, str]] = [  # every operation under these paths
    (r"/(swarm|services|nodes|tasks|secrets)(/.*)?", SWARM, "swarm.go"),
    (r"/plugins(/.*)?", PLUGINS, "plugins.go"),
]
_COMPILED = [(methods, re.compile(f"^{path}$"), op, source) for methods, path, op, source in REFUSED]
_WHOLE = [(re.compile(f"^{path}$"), message, source) for path, message, source in REFUSED_WHOLE]


COPY = re.compile(rf"^/containers/{NAME}/copy$")


def refusal(method: str, path: str, query: dict[str, list[str]], version: str) -> vic.VicError | None:
    """VIC's error for ``method path``, or None when the personality implements it."""
    if method == "POST" and COPY.match(path):  # vendor/.../router/container/copy.go: gone since 1.24
        if vic.version_tuple(version) >= (1, 24):
            return vic.VicError(404, "")
        return vic.not_implemented("ContainerCopy")
    for methods, pattern, operation, _ in _COMPILED:
        if method in methods and pattern.match(path):
            return vic.not_implemented(operation)
    for pattern, message, _ in _WHOLE:
        if pattern.match(path):
            return vic.plain(message)
    if method == "POST" and path == "/images/create" and query.get("fromSrc"):
        return vic.not_implemented("image.ImportImage")  # image.go: docker import
    return None
