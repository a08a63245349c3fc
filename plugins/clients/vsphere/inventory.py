"""vSphere inventory reads on a logged-in session: lookups by name and path, and bulk property reads
(PropertyCollector)."""

from __future__ import annotations

from typing import Any, NamedTuple

from vicflow.plugins.clients.vsphere.connection import content
from vicflow.plugins.clients.vsphere.errors import vsphere_errors
from vicflow.plugins.clients.vsphere.tasks import TaskFailed, wait_task
from vicflow.plugins.errors import PermanentError, TransientError


def walk(si, root, hops: list[tuple], props: dict) -> dict[str, dict]:
    """moId -> {obj, **props} for ``root`` and everything reachable from it through ``hops``, in one call.

    ``hops`` are (type, property) pairs the PropertyCollector follows, recursively, e.g.
    (vim.Folder, "childEntity"); ``props`` maps a type to the properties read from objects of that type.
    One RetrieveContents instead of a round trip per object, name and parent (each costs a WAN latency).
    """
    from pyVmomi import vmodl

    query = vmodl.query.PropertyCollector
    names = [f"{kind.__name__}.{path}" for kind, path in hops]
    select = [query.SelectionSpec(name=name) for name in names]
    spec = query.FilterSpec(
        objectSet=[
            query.ObjectSpec(
                obj=root,
                selectSet=[
                    query.TraversalSpec(name=name, type=kind, path=path, skip=False, selectSet=select)
                    for name, (kind, path) in zip(names, hops, strict=True)
                ],
            )
        ],
        propSet=[query.PropertySpec(type=kind, pathSet=paths) for kind, paths in props.items()],
    )
    found = content(si).propertyCollector.RetrieveContents([spec])
    return {item.obj._moId: {"obj": item.obj, **{p.name: p.val for p in item.propSet}} for item in found}


def datacenter(si, name: str | None):
    """The named datacenter, or the only one; the error lists those that exist."""
    from pyVmomi import vim

    nodes = walk(si, content(si).rootFolder, [(vim.Folder, "childEntity")], {vim.Datacenter: ["name"]})
    found = {node["name"]: node["obj"] for node in nodes.values() if isinstance(node["obj"], vim.Datacenter)}
    if name is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise PermanentError(f"{len(found)} datacenters exist; say which", f"set datacenter: one of {sorted(found)}")
    if name in found:
        return found[name]
    raise PermanentError(f"datacenter {name!r} not found", f"datacenters: {', '.join(sorted(found)) or 'none'}")


def _objects(si, root, types: list):
    view = content(si).viewManager.CreateContainerView(root, types, True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


class Compute(NamedTuple):
    pool: object  # the resource pool VMs go into
    cluster: object  # the cluster or compute resource that owns it
    hosts: list  # the cluster's hosts
    host_props: dict = {}  # noqa: RUF012 - moId -> the host_props asked for (read in the same call), read-only


def compute_resource(si, dc, path: str, host_props: list[str] | None = None) -> Compute:
    """Resolve like vic-machine: a resource pool path first, else a cluster or compute resource.

    For a cluster, its root pool; for a pool, the cluster that owns it. The datacenter's host tree
    is read in one call, and paths are built from it; ``host_props`` of every host are read in that call too.
    """
    from pyVmomi import vim

    hops = [
        (vim.Datacenter, "hostFolder"),
        (vim.Folder, "childEntity"),
        (vim.ComputeResource, "resourcePool"),
        (vim.ResourcePool, "resourcePool"),
    ]
    props = {
        vim.Datacenter: ["name", "hostFolder"],
        vim.Folder: ["name", "parent"],
        vim.ComputeResource: ["name", "parent", "host"],
        vim.ResourcePool: ["name", "parent", "owner"],
    }
    if host_props:
        hops.append((vim.ComputeResource, "host"))
        props[vim.HostSystem] = host_props
    tree = walk(si, dc, hops, props)
    dc_name, host_folder = tree[dc._moId]["name"], tree[dc._moId]["hostFolder"]

    def below(moid: str) -> str:
        node = tree.get(moid)
        if node is None or moid == host_folder._moId or "parent" not in node:
            return ""
        parent = below(node["parent"]._moId) if node["parent"] is not None else ""
        return f"{parent}/{node['name']}" if parent else node["name"]

    for moid, node in tree.items():
        node["path"] = below(moid)
    wanted = path.strip("/").removeprefix(f"{dc_name}/host/")
    pools = [
        n for n in tree.values() if isinstance(n["obj"], vim.ResourcePool) and not isinstance(n["obj"], vim.VirtualApp)
    ]
    computes = [n for n in tree.values() if isinstance(n["obj"], vim.ComputeResource)]
    matches = [n for n in pools if wanted in (n["path"], n["name"])]
    if not matches:
        matches = [n for n in computes if wanted in (n["path"], n["name"])]
        matches = [next(p for p in pools if p["parent"]._moId == c["obj"]._moId) for c in matches]
    if not matches:
        known = sorted(n["path"] for n in computes)
        raise PermanentError(
            f"compute resource {path!r} not found in datacenter {dc_name}",
            f"clusters and hosts: {', '.join(known)}; a pool is CLUSTER/Resources/POOL",
        )
    if len(matches) > 1:
        paths = sorted(n["path"] for n in matches)
        raise PermanentError(
            f"compute resource {path!r} is ambiguous: {', '.join(paths)}",
            "give the full path, e.g. CLUSTER/Resources/POOL",
        )
    owner = matches[0]["owner"]
    hosts = list(tree[owner._moId]["host"])
    read = {h._moId: tree[h._moId] for h in hosts if h._moId in tree} if host_props else {}
    return Compute(matches[0]["obj"], owner, hosts, read)


def _named(items, name: str, kind: str, dc):
    for item in items:
        if item.name == name:
            return item
    raise PermanentError(
        f"{kind} {name!r} not found in datacenter {dc.name}", f"{kind}s: {', '.join(sorted(i.name for i in items))}"
    )


def datastore(dc, name: str):
    return _named(dc.datastore, name, "datastore", dc)


def network(dc, name: str):
    return _named(dc.network, name, "network", dc)


def path_exists(ds, path: str, timeout: float = 300) -> bool:
    """Whether ``[datastore] path`` exists (the datastore browser answers FileNotFound otherwise)."""
    from pyVmomi import vim

    try:
        # a pattern that matches no file: only the folder's existence is asked (and the 0.24 simulator
        # crashes listing a folder's files without a search spec)
        spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=[".vicflow-exists-check"])
        wait_task(ds.browser.SearchDatastore_Task(datastorePath=path, searchSpec=spec), f"look for {path}", timeout)
        return True
    except TaskFailed as exc:
        if isinstance(exc.fault, vim.fault.FileNotFound):
            return False
        raise


def is_gone(exc: BaseException) -> bool:
    """The object or file is not there (any more): nothing to remove."""
    from pyVmomi import vim, vmodl

    gone = (vim.fault.NotFound, vim.fault.FileNotFound, vmodl.fault.ManagedObjectNotFound)
    return isinstance(exc, gone) or isinstance(getattr(exc, "fault", None), gone)


def find_vm(si, dc, name: str):
    from pyVmomi import vim

    return next((vm for vm in _objects(si, dc.vmFolder, [vim.VirtualMachine]) if vm.name == name), None)


def find_vapp_or_pool(si, dc, name: str):
    from pyVmomi import vim

    return next((p for p in _objects(si, dc.hostFolder, [vim.ResourcePool]) if p.name == name), None)


def _filter(objects: list, kind, paths: list[str]):
    from pyVmomi import vmodl

    query = vmodl.query.PropertyCollector
    return query.FilterSpec(
        objectSet=[query.ObjectSpec(obj=o) for o in objects], propSet=[query.PropertySpec(type=kind, pathSet=paths)]
    )


def collect(si, objects: list, kind, paths: list[str]) -> dict[str, dict]:
    """Read ``paths`` of many objects in one PropertyCollector call, keyed by managed object id."""
    if not objects:
        return {}
    found = content(si).propertyCollector.RetrieveContents([_filter(objects, kind, paths)])
    return {item.obj._moId: {p.name: p.val for p in item.propSet} for item in found}


VIM = "{urn:vim25}"


def collect_xml(si, objects: list, kind, paths: list[str], page_size: int | None = None) -> dict[str, dict]:
    """Like ``collect``, but each value is the XML element of the answer, not a pyvmomi object.

    For reads that are large and need little: pyvmomi builds a typed object for every element, and
    64 hosts' firewall rulesets are 50,000 elements and 0.35 s of CPU to read one boolean a host.
    ElementTree reads the same answer in a few ms. A non-200 answer is asked again through pyvmomi,
    which raises the server's fault as usual. Big answers come in pages (``page_size``, or the server's).
    """
    from xml.etree import ElementTree

    from pyVmomi import vmodl

    if not objects:
        return {}
    query = vmodl.query.PropertyCollector
    collector, stub = content(si).propertyCollector, si._stub
    found: dict[str, dict] = {}
    call: tuple[str, list[Any]] | None = (
        "RetrievePropertiesEx",
        [[_filter(objects, kind, paths)], query.RetrieveOptions(maxObjects=page_size)],
    )
    while call:
        body = stub.SerializeRequest(collector, query._GetMethodInfo(call[0]), call[1])
        conn = stub.GetConnection()  # the session's pool: same cookie, pinned thumbprint and timeout
        try:
            headers = {"Cookie": stub.cookie, "SOAPAction": stub.versionId, "Content-Type": "text/xml; charset=UTF-8"}
            with vsphere_errors(getattr(stub, "host", "vSphere")):  # bypasses InvokeMethod: mapped here
                conn.request("POST", stub.path, body, headers)
                response = conn.getresponse()
                data = response.read()
        except BaseException:
            conn.close()
            raise
        stub.ReturnConnection(conn)
        if response.status != 200:
            getattr(collector, call[0])(*call[1])  # raises the fault, as a pyvmomi call would
            raise TransientError(f"vSphere answered {call[0]} with HTTP {response.status}")
        result = ElementTree.fromstring(data).find(f".//{VIM}returnval")
        if result is None:
            break
        for item in result.iterfind(f"{VIM}objects"):
            props = found.setdefault(item.findtext(f"{VIM}obj") or "", {})
            for prop in item.iterfind(f"{VIM}propSet"):
                props[prop.findtext(f"{VIM}name") or ""] = prop.find(f"{VIM}val")
        token = result.findtext(f"{VIM}token")
        call = ("ContinueRetrievePropertiesEx", [token]) if token else None
    return found
