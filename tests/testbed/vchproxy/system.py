"""``/info`` and ``/version`` as lib/apiservers/engine/backends/system.go (v1.1.1) builds them."""

from __future__ import annotations

import time
from typing import Any

from tests.testbed.vchproxy import vic
from tests.testbed.vchproxy.config import VCHConfig

# system.go: the custom rows of SystemStatus, each with its leading space (VolumeStores has none)
STATUS_MHZ = " VCH CPU limit"
STATUS_MEMORY = " VCH memory limit"
STATUS_CPU_USAGE = " VCH CPU usage"
STATUS_MEMORY_USAGE = " VCH memory usage"
STATUS_PRODUCT = " VMware Product"
STATUS_OS = " VMware OS"
STATUS_OS_VERSION = " VMware OS version"
VOLUME_STORES = "VolumeStores"
VOLUME_DRIVERS = ("vsphere", "local")  # volume.go supportedVolDrivers; info lists all but "local"


def info(engine: dict[str, Any], config: VCHConfig) -> dict[str, Any]:
    """SystemInfo: counts from the engine behind, everything else the VCH's."""
    status: list[list[str]] = [
        [VOLUME_STORES, " ".join(config.volume_stores)],
        [vic.PORTLAYER_NAME, "RUNNING"],  # what vic-machine's isPortLayerRunning reads (lib/install/management)
        [STATUS_MHZ, f"{config.cpu_mhz} MHz"],
        [STATUS_MEMORY, vic.size(config.memory_mb * 1024 * 1024)],
        [STATUS_CPU_USAGE, "0 MHz"],
        [STATUS_MEMORY_USAGE, vic.size(0)],
        [STATUS_PRODUCT, config.host_product],
        [STATUS_OS, config.host_os],
        [STATUS_OS_VERSION, config.host_os_version],
    ]
    volume_plugins = [d for d in VOLUME_DRIVERS if d != "local"] if config.volume_stores else None
    return {
        "ID": vic.PRODUCT,
        "Containers": engine.get("Containers", 0),
        "ContainersRunning": engine.get("ContainersRunning", 0),
        "ContainersPaused": engine.get("ContainersPaused", 0),
        "ContainersStopped": engine.get("ContainersStopped", 0),
        "Images": engine.get("Images", 0),
        "Driver": vic.PORTLAYER_NAME,
        "DriverStatus": None,
        "SystemStatus": status,
        "Plugins": {
            "Volume": volume_plugins,
            "Network": ["bridge"],
            "Authorization": None,
        },  # bridge: the container networks
        "MemoryLimit": True,
        "SwapLimit": True,
        "KernelMemory": True,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "IPv4Forwarding": True,
        "BridgeNfIptables": True,
        "BridgeNfIp6tables": True,
        "Debug": False,
        "NFd": 0,
        "OomKillDisable": True,
        "NGoroutines": engine.get("NGoroutines", 0),
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "LoggingDriver": "",
        "CgroupDriver": "",
        "NEventsListener": 0,
        "KernelVersion": "",
        "OperatingSystem": config.host_os,
        "OSType": config.host_os,
        "Architecture": "x86_64",
        "IndexServerAddress": "registry-1.docker.io",
        "RegistryConfig": None,
        "NCPU": config.cpu_mhz,  # system.go: NCPU is the VCH's CPU limit in MHz
        "MemTotal": config.memory_mb * 1024 * 1024,
        "DockerRootDir": "",
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": config.name,
        "Labels": None,
        "ExperimentalBuild": False,
        "ServerVersion": vic.SHORT_VERSION,
        "ClusterStore": "",
        "ClusterAdvertise": "",
        "SecurityOptions": None,
        "Runtimes": None,
        "DefaultRuntime": "",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
            "Nodes": 0,
            "Managers": 0,
        },
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
    }


def version() -> dict[str, Any]:
    """SystemVersion: the version without its leading "v", Experimental true, KernelVersion "-"."""
    return {
        "Version": vic.RELEASE.removeprefix("v"),
        "ApiVersion": vic.API_VERSION,
        "MinAPIVersion": vic.MIN_API_VERSION,
        "GitCommit": vic.GIT_COMMIT,
        "GoVersion": vic.GO_VERSION,
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "-",
        "Experimental": True,
        "BuildTime": vic.BUILD_TIME,
    }
