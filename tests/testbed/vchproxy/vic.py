"""What VIC 1.1.1's Docker personality says and how it says it: names, versions, error texts and status codes.

Each constant names the file of vmware/vic at tag v1.1.1 it comes from (read with
``git --git-dir=/work/.mirror/vmware+vic/repo show v1.1.1:<file>``).
"""

from __future__ import annotations

import re

# cmd/docker/main.go: productName; lib/apiservers/engine/backends/backends.go: PortLayerName() is
# "<product> <ShortVersion> Backend Engine"; pkg/version/version.go: ShortVersion() is "<Version>-<BuildNumber>-<GitCommit>".
# The commit is the tag's (56a309f); the build number is the release build's, set by CI (not in the source).
PRODUCT = "vSphere Integrated Containers"
RELEASE = "v1.1.1"
GIT_COMMIT = "56a309f"
BUILD_NUMBER = "10711"
SHORT_VERSION = f"{RELEASE}-{BUILD_NUMBER}-{GIT_COMMIT}"
PORTLAYER_NAME = f"{PRODUCT} {SHORT_VERSION} Backend Engine"

# pkg/version/version.go
API_VERSION = "1.25"  # DockerAPIVersion, and DockerDefaultVersion
MIN_API_VERSION = "1.19"  # DockerMinimumVersion
GO_VERSION = "go1.8.3"  # .drone.yml builds with golang:1.8
BUILD_TIME = "Fri Jun 16 18:41:27 2017"  # version.BuildDate (set by CI) in time.ANSIC, as system.go formats it

VERSION_PATH = re.compile(r"^/v(\d+(?:\.\d+)*)(/.*)$")  # vendor/.../api/server/server.go: versionMatcher


class VicError(Exception):
    """An error as the personality returns it: ``status`` and Docker's ``{"message": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def status_for(message: str) -> int:
    """The status Docker's API server gives an error that carries none (a plain ``fmt.Errorf``):
    vendor/github.com/docker/docker/api/server/httputils/errors.go, GetHTTPErrorStatusCode."""
    text = message.lower()
    for keyword, code in (
        ("not found", 404),
        ("no such", 404),
        ("bad parameter", 400),
        ("no command", 400),
        ("conflict", 409),
        ("impossible", 406),
        ("wrong login/password", 401),
        ("unauthorized", 401),
        ("hasn't been activated", 403),
        ("this node", 503),
    ):
        if keyword in text:
            return code
    return 500


def plain(message: str) -> VicError:
    """A ``fmt.Errorf`` of the personality: its status comes from its words."""
    return VicError(status_for(message), message)


def not_implemented(operation: str) -> VicError:
    """The error "<product> does not yet implement <Op>" (container.go, image.go, volume.go, network.go, system.go,
    build.go, checkpoint.go): a plain error, so a 500."""
    return plain(f"{PRODUCT} does not yet implement {operation}")


def internal(message: str) -> VicError:
    """errors.go InternalServerError: a 500 prefixed "Server error from portlayer: "."""
    return VicError(500, f"Server error from portlayer: {message}")


def bad_request(message: str) -> VicError:
    """errors.go BadRequestError: a 400 prefixed "Bad request error from portlayer: "."""
    return VicError(400, f"Bad request error from portlayer: {message}")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def json_errors(version: str | None) -> bool:
    """httputils/errors.go apiVersionSupportsJSONErrors: JSON bodies after 1.23 (or with no version in the path),
    plain text before."""
    return version is None or version_tuple(version) > version_tuple("1.23")


def check_version(version: str | None) -> None:
    """vendor/.../api/server/middleware/version.go as VIC 1.1.1 vendors it: only a too old client is refused.
    (That copy has no "client is newer than server" check: a newer client's request is served.)"""
    if version is not None and version_tuple(version) < version_tuple(MIN_API_VERSION):
        raise VicError(
            400,
            f"client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
        )


def size(num_bytes: float) -> str:
    """go-units BytesSize ("%.4g %s", binary units), as system.go prints the VCH's memory."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    index = 0
    while num_bytes >= 1024 and index < len(units) - 1:
        num_bytes /= 1024
        index += 1
    return f"{num_bytes:.4g} {units[index]}"
