"""The parameters of the vch steps, as vic-machine 1.1's flags: read by the steps (their ``Params``) and by
the VIC library that validates and builds a VCH from them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from vicflow.plugins.clients.vsphere import connection
from vicflow.plugins.paths import BlueprintFile


class VCHParams(connection.VSphereParams):
    name: str = Field(description="VCH name (the vApp and the endpoint VM)")
    datacenter: str | None = None


class VCHCreateParams(VCHParams):
    compute_resource: str = Field(description="cluster, host or resource pool path")
    image_store: str = Field(description="DATASTORE[/path]; the path defaults to the VCH name")
    volume_stores: list[str] = Field(default_factory=list, description="DATASTORE/path:label, one labelled default")
    bridge_network: str = Field(description="a distributed port group used by no other role")
    public_network: str = "VM Network"
    client_network: str | None = Field(None, description="default: public_network")
    management_network: str | None = Field(None, description="default: public_network")
    dns_servers: list[str] = Field(default_factory=list)
    public_ip: str | None = Field(None, description="static IP/prefix, e.g. 10.0.0.5/24 (needs public_gateway)")
    public_gateway: str | None = None
    registry_ca: list[BlueprintFile] = Field(default_factory=list, description="CA files of registries to trust")
    tls: Literal["no_tls", "tls_noverify", "tls_verify"] = "tls_verify"
    tls_cname: str | None = Field(None, description="common name of the server certificate (tls_verify)")
    cert_path: BlueprintFile | None = Field(None, description="certificate folder (default: ./<name>)")
    cpu: int = Field(1, ge=1, le=64)
    memory_mb: int = Field(2048, ge=512)
    use_resource_pool: bool = Field(False, description="a resource pool instead of a vApp (--use-rp)")
    appliance_iso: BlueprintFile = Field(
        "appliance.iso", validate_default=True, description="path of the appliance ISO to upload"
    )
    bootstrap_iso: BlueprintFile = Field(
        "bootstrap.iso", validate_default=True, description="path of the bootstrap ISO to upload"
    )
    version: str = "v1.1.1"
    appliance_timeout_seconds: float = Field(180, gt=0, description="wait this long for the appliance's IP")
    check_firewall: bool = True
    cleanup_timeout_seconds: float = Field(
        60, gt=0, description="after a failed create, keep trying this long to remove what it built"
    )


class VCHDeleteParams(VCHParams):
    force: bool = Field(False, description="also delete volume stores, and powered-on container VMs")
