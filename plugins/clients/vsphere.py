"""The vSphere connection shared by the vSphere steps: a pinned SHA-1 thumbprint, one session per run.

Without a thumbprint the step fails and shows the thumbprint the server presented, with the exact
parameter to add (the seed's run-it-once-and-copy-the-thumbprint trick, made explicit).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
from pydantic import Field, model_validator
from vicflow.plugins import masking
from vicflow.plugins.step import Params, PermanentError, TransientError

Logger = logging.Logger | logging.LoggerAdapter


class VSphereParams(Params):
    """Connection settings; each falls back to VSPHERE_SERVER / _USER / _PASSWORD / _THUMBPRINT."""

    server: str | None = Field(
        None, description="vCenter host, host:port, https://host/sdk, or vic-machine's target form host/Datacenter"
    )
    user: str | None = None
    password: str | None = Field(None, description="use ${{ secrets.name }}")
    thumbprint: str | None = Field(None, description="SHA-1 of the server certificate, AB:CD:...")
    insecure: bool = Field(False, description="skip certificate checks (logged as a warning)")
    connect_timeout_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _target_form(self):
        """vic-machine's ``--target host/Datacenter``: the datacenter moves to ``datacenter``, never dropped."""
        if not self.server:
            return self
        host, dc = split_target(self.server)
        if dc is None:
            return self
        if "datacenter" not in type(self).model_fields:
            raise ValueError(
                f"server {self.server!r} names datacenter {dc!r}, which this step does not use: set server: {host}"
            )
        current = getattr(self, "datacenter", None)
        if current not in (None, dc):
            raise ValueError(
                f"server {self.server!r} names datacenter {dc!r} but datacenter is {current!r}: "
                f"set server: {host} and keep datacenter: {current}, or drop datacenter"
            )
        self.server = host
        self.datacenter = dc
        return self


T = TypeVar("T")

# A reset, a refused or timed-out connection, an EOF in TLS, a half-read answer: the network, not the
# request. Worth another try once the connection is back.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


def until_back(fn: Callable[[], T], budget: float, logger: Logger, what: str) -> T:
    """``fn()``, called again after connection failures until ``budget`` seconds have passed.

    For cleanup and rollback, which must outlast a short cut instead of giving up at its first error.
    """
    deadline = time.monotonic() + budget
    delay = 0.5
    while True:
        try:
            return fn()
        except (*CONNECTION_ERRORS, TransientError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: %s; trying again in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _setting(params: VSphereParams, name: str) -> str | None:
    return getattr(params, name) or os.environ.get(f"VSPHERE_{name.upper()}")


def split_target(server: str) -> tuple[str, str | None]:
    """``host[:port][/sdk]`` -> (that, None); vic-machine's ``host/Datacenter`` -> (host, Datacenter)."""
    parts = urlsplit(server if "://" in server else f"https://{server}")
    path = unquote(parts.path).strip("/")
    if path in ("", "sdk"):
        return server, None
    base = f"{parts.scheme}://{parts.netloc}" if "://" in server else parts.netloc
    return base, path


def split_server(server: str) -> tuple[str, int]:
    host, dc = split_target(server)
    if dc is not None:  # e.g. from VSPHERE_SERVER, which no validator saw
        raise PermanentError(
            f"the vSphere server {server!r} names datacenter {dc!r} (vic-machine's host/Datacenter form)",
            f"set server: {host} and datacenter: {dc}",
        )
    parts = urlsplit(server if "://" in server else f"https://{server}")
    return parts.hostname or server, parts.port or 443


def normalise(thumbprint: str) -> str:
    digits = thumbprint.replace(":", "").replace(" ", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def seen_thumbprint(host: str, port: int, timeout: float) -> str:
    """SHA-1 of the certificate the server presents (no trust decision is made here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise TransientError(
            f"cannot reach vSphere at {host}:{port}: {exc}", "check the server address and that it answers HTTPS"
        ) from None
    return normalise(hashlib.sha1(der).hexdigest())


class Sessions:
    """One logged-in ServiceInstance per (server, user) for a run; ``close()`` logs them out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], object] = {}

    def get(self, params: VSphereParams, logger: Logger):
        server, user, _ = _credentials(params)
        with self._lock:
            key = (server, user)
            if key not in self._sessions:
                self._sessions[key] = login(params, logger)
            return self._sessions[key]

    def close(self, budget: float = 10.0) -> list[str]:
        """Log every session out (retrying a cut connection for ``budget`` s); returns what stays logged in."""
        with self._lock:
            sessions, self._sessions = dict(self._sessions), {}
        return [left for (server, user), si in sessions.items() if (left := logout(si, server, user, _log, budget))]


_log = logging.getLogger("vicflow.vsphere")


def _credentials(params: VSphereParams) -> tuple[str, str, str]:
    server, user, password = (_setting(params, n) for n in ("server", "user", "password"))
    missing = [n for n, v in (("server", server), ("user", user), ("password", password)) if not v]
    if missing:
        variables = ", ".join(f"VSPHERE_{name.upper()}" for name in missing)
        raise PermanentError(
            f"vSphere {', '.join(missing)} not set",
            f"give them to the step (with: {', '.join(missing)}; the shipped blueprints take them as inputs: "
            f"--set {missing[0]}=...), or set {variables}",
        )
    masking.add_secret(password)
    return server, user, password


def login(params: VSphereParams, logger: Logger):
    """A new logged-in session (the caller logs it out: ``logout``)."""
    server, user, password = _credentials(params)
    return _login(
        server, user, password, _setting(params, "thumbprint"), params.insecure, params.connect_timeout_seconds, logger
    )


def logout(si, server: str, user: str, logger: Logger, budget: float = 10.0) -> str | None:
    """Log out, retrying a cut connection; returns a line for the run's report if the session stays."""
    try:
        until_back(lambda: content(si).sessionManager.Logout(), budget, logger, f"log out of {server}")
        return None
    except Exception as exc:
        logger.warning("could not log out of %s: %s", server, exc)
        return (
            f"vSphere session of {user} on {server} (log out failed: {type(exc).__name__}) - "
            "it ends at vCenter's idle-session timeout (30 min by default), or: govc session.rm KEY"
        )


@contextlib.contextmanager
def fresh_session(params: VSphereParams, logger: Logger, leftovers: list[str]):
    """A session of its own, logged out afterwards: cleanup after a cut must not depend on the run's session."""
    server, user, _ = _credentials(params)
    si = login(params, logger)
    try:
        yield si
    finally:
        left = logout(si, server, user, logger)
        if left:
            leftovers.append(left)


def _mismatch(host: str, expected: str, seen: str) -> PermanentError:
    return PermanentError(
        f"certificate thumbprint mismatch for {host}: expected {expected}, the server presented {seen}; "
        "refusing to connect",
        "if the vCenter certificate was replaced on purpose, update the thumbprint; otherwise "
        "something is intercepting the connection",
    )


class PinnedContext(ssl.SSLContext):
    """TLS that accepts exactly one certificate, by SHA-1 (no CA chain), on every connection made with it.

    That is pyvmomi's API-version discovery and every connection of the session's pool, reconnects
    included. pyvmomi's own thumbprint check runs only when CA verification fails, which never happens
    with verification off (how a self-signed vCenter is reached), so it cannot be relied on.
    """

    pinned_host: str
    pinned_thumbprint: str
    io_timeout: float

    @classmethod
    def of(cls, host: str, thumbprint: str, timeout: float) -> PinnedContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.pinned_host, context.pinned_thumbprint, context.io_timeout = host, thumbprint, timeout
        return context

    def wrap_socket(self, sock, *args, **kwargs):
        if sock.gettimeout() is None:  # pyvmomi's version discovery sets none
            sock.settimeout(self.io_timeout)
        tls = super().wrap_socket(sock, *args, **kwargs)
        seen = normalise(hashlib.sha1(tls.getpeercert(binary_form=True)).hexdigest())
        if seen != self.pinned_thumbprint:
            tls.close()
            raise _mismatch(self.pinned_host, self.pinned_thumbprint, seen)
        return tls


def pinned_session(host: str, thumbprint: str | None, timeout: float) -> requests.Session:
    """A requests session to vCenter's other HTTPS interfaces (the datastore's /folder) that accepts the
    same one certificate as the API session (``PinnedContext``); ``thumbprint`` None only when the step
    said ``insecure: true``."""
    session = requests.Session()
    session.trust_env = False
    session.verify = False  # the pinned SHA-1 is checked instead of a CA chain
    if thumbprint:
        session.mount("https://", _PinnedAdapter(PinnedContext.of(host, normalise(thumbprint), timeout)))
    return session


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, context: PinnedContext):
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self.context
        return super().init_poolmanager(*args, **kwargs)


def _login(
    server: str, user: str, password: str, thumbprint: str | None, insecure: bool, timeout: float, logger: Logger
):
    from pyVim.connect import SmartStubAdapter
    from pyVmomi import vim

    host, port = split_server(server)
    if insecure:
        logger.warning("insecure: true - the certificate of %s is not checked; pin its thumbprint instead", host)
    elif not thumbprint:
        seen = seen_thumbprint(host, port, timeout)
        raise PermanentError(
            f"Failed to verify certificate for target={host} (thumbprint={seen})",
            f'after checking it against your vCenter, add  thumbprint: "{seen}"  to the step\'s with: '
            "(or set VSPHERE_THUMBPRINT)",
        )
    try:
        stub = SmartStubAdapter(  # reads the API version first, then makes no connection until the first call
            host=host,
            port=port,
            sslContext=None if insecure else PinnedContext.of(host, normalise(thumbprint), timeout),
            disableSslCertValidation=insecure,
            httpConnectionTimeout=int(max(1, timeout)),
            connectionPoolTimeout=-1,
        )
        si = vim.ServiceInstance("ServiceInstance", stub)
        _contents[stub] = si.RetrieveContent()
        _contents[stub].sessionManager.Login(user, password, None)
        return si
    except vim.fault.InvalidLogin:
        raise PermanentError(
            f"vSphere refused the login of user {user!r} at {host}",
            "check the user and password (secrets are masked in logs)",
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise TransientError(f"cannot connect to vSphere at {host}:{port}: {exc}") from None


def service_instance(params: VSphereParams, resources: dict[str, Any], logger: Logger):
    """The run's session for these settings, logging in on first use (``resources``: shared by the run's steps,
    closed at its end)."""
    sessions = resources.setdefault("vsphere", Sessions())
    return sessions.get(params, logger)


# ---------------------------------------------------------------------------------------------- inventory

_contents: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a session's stub -> its ServiceContent


def content(si):
    """The ServiceContent of a session, fetched once (every ``si.content`` read is a round trip)."""
    if si._stub not in _contents:
        _contents[si._stub] = si.RetrieveContent()
    return _contents[si._stub]


def _task_fields(task) -> dict:
    """state, error and result of a task, read without the rest of TaskInfo.

    Reading only these paths is lighter, and avoids TaskInfo fields that some servers fill with
    an unexpected type (the 0.24 simulator's DeleteDatastoreFile_Task sets entity to the FileManager).
    """
    from pyVmomi import vim, vmodl

    collector = content(vim.ServiceInstance("ServiceInstance", task._stub)).propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.Task, pathSet=["info.state", "info.error", "info.result"]
            )
        ],
    )
    found = collector.RetrieveContents([spec])
    return {prop.name: prop.val for prop in found[0].propSet} if found else {}


def wait_task(task, what: str, timeout: float = 300):
    """Wait up to ``timeout`` s for a vSphere task; its fault becomes a PermanentError naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        fields = _task_fields(task)
        state = fields.get("info.state")
        if state == "success":
            return fields.get("info.result")
        if state == "error":
            fault = fields.get("info.error")
            error = PermanentError(f"{what} failed: {getattr(fault, 'msg', None) or type(fault).__name__}")
            error.fault = fault  # for callers that accept some faults (e.g. FileNotFound when removing)
            raise error
        if time.monotonic() > deadline:
            raise TransientError(f"{what} did not finish in time (task {task._moId} is {state})")
        time.sleep(0.2)


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

    found = walk(si, content(si).rootFolder, [(vim.Folder, "childEntity")], {vim.Datacenter: ["name"]})
    found = {node["name"]: node["obj"] for node in found.values() if isinstance(node["obj"], vim.Datacenter)}
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


def compute_resource(si, dc, path: str) -> Compute:
    """Resolve like vic-machine: a resource pool path first, else a cluster or compute resource.

    For a cluster, its root pool; for a pool, the cluster that owns it. The datacenter's host tree
    is read in one call, and paths are built from it.
    """
    from pyVmomi import vim

    tree = walk(
        si,
        dc,
        [
            (vim.Datacenter, "hostFolder"),
            (vim.Folder, "childEntity"),
            (vim.ComputeResource, "resourcePool"),
            (vim.ResourcePool, "resourcePool"),
        ],
        {
            vim.Datacenter: ["name", "hostFolder"],
            vim.Folder: ["name", "parent"],
            vim.ComputeResource: ["name", "parent", "host"],
            vim.ResourcePool: ["name", "parent", "owner"],
        },
    )
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
    return Compute(matches[0]["obj"], owner, list(tree[owner._moId]["host"]))


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
    except PermanentError as exc:
        if isinstance(getattr(exc, "fault", None), vim.fault.FileNotFound):
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
    call = ("RetrievePropertiesEx", [[_filter(objects, kind, paths)], query.RetrieveOptions(maxObjects=page_size)])
    while call:
        body = stub.SerializeRequest(collector, query._GetMethodInfo(call[0]), call[1])
        conn = stub.GetConnection()  # the session's pool: same cookie, pinned thumbprint and timeout
        try:
            headers = {"Cookie": stub.cookie, "SOAPAction": stub.versionId, "Content-Type": "text/xml; charset=UTF-8"}
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
            props = found.setdefault(item.findtext(f"{VIM}obj"), {})
            for prop in item.iterfind(f"{VIM}propSet"):
                props[prop.findtext(f"{VIM}name")] = prop.find(f"{VIM}val")
        token = result.findtext(f"{VIM}token")
        call = ("ContinueRetrievePropertiesEx", [token]) if token else None
    return found
