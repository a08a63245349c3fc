"""A VCH 1.1's Docker API in front of the test bed's dockerd: what vicflow meets on a real VCH.

``python -m tests.testbed.vchproxy --listen 127.0.0.2:2375 --socket /run/vicflow-testbed/docker.sock``

What it changes, each from VIC 1.1 (``../shared/reference/vic-facts.md`` and vmware/vic's engine backends):

- API version 1.25: a request for a newer version gets Docker's own 400 "client is newer than server".
- ``/info`` and ``/version`` describe a VCH: Driver "vSphere Integrated Containers v1.1.1 Backend Engine",
  ID "vSphere Integrated Containers", the VCH's name, its volume stores as volume plugins.
- ``exec`` and ``build`` are refused with VIC's error ("vSphere Integrated Containers does not implement
  container.ContainerExecCreate"), as a 500 with Docker's ``{"message": ...}`` body.
- ``/events`` answers 200 and then nothing, ever: VIC's ``SubscribeToEvents`` returns an empty stream.  A client
  cannot tell a quiet engine from a VCH there; it has to ask ``/info``.

Everything else is passed to dockerd, streamed both ways (logs, pulls and waits stream as they come).
Hijacked connections (attach) are not supported; vicflow does not attach.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "1.25"
PRODUCT = "vSphere Integrated Containers"
VERSION = "v1.1.1-10711-8b1a8fb"
VERSION_RE = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
REFUSED = [
    (re.compile(r"^/containers/[^/]+/exec$"), "container.ContainerExecCreate"),
    (re.compile(r"^/exec/[^/]+/(start|resize|json)$"), "container.ContainerExecStart"),
    (re.compile(r"^/build$"), "image.BuildFromContext"),
]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 300):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Docker/1.13.1 (linux)"
    upstream: str = "/run/vicflow-testbed/docker.sock"
    name: str = "vch-test"

    def log_message(self, fmt, *args):
        print(f"vchproxy: {self.address_string()} {fmt % args}", flush=True)

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    # ---- replies
    def _json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _upstream(self, method: str, path: str, body: bytes | None = None):
        conn = UnixConnection(self.upstream)
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "transfer-encoding", "connection")
        }
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn.request(method, path, body=body, headers=headers)
        return conn, conn.getresponse()

    def _handle(self) -> None:
        path = self.path
        match = VERSION_RE.match(path)
        if match:
            asked = (int(match.group(1)), int(match.group(2)))
            if asked > tuple(map(int, API_VERSION.split("."))):
                self._body()
                return self._json(
                    400,
                    {
                        "message": f"client is newer than server (client API version: {asked[0]}.{asked[1]}, "
                        f"server API version: {API_VERSION})"
                    },
                )
            path = match.group(3)
        bare = path.split("?", 1)[0]
        for pattern, operation in REFUSED:
            if pattern.match(bare):
                self._body()
                return self._json(500, {"message": f"{PRODUCT} does not implement {operation}"})
        if bare == "/events":
            return self._silent_events()
        if bare == "/info":
            return self._info()
        if bare == "/version":
            return self._version()
        self._relay(self.path)

    def _relay(self, path: str) -> None:
        body = self._body()
        conn, response = self._upstream(self.command, path, body)
        try:
            self.send_response(response.status)
            bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
            chunked = not bodiless and (
                response.getheader("Transfer-Encoding", "").lower() == "chunked"
                or response.getheader("Content-Length") is None
            )
            for key, value in response.getheaders():
                if key.lower() in ("transfer-encoding", "connection", "content-length", "server"):
                    continue
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif response.getheader("Content-Length") is not None:
                self.send_header("Content-Length", response.getheader("Content-Length"))
            self.end_headers()
            if bodiless:
                return
            while True:
                data = response.read1(65536) if chunked else response.read(65536)
                if not data:
                    break
                if chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()

    def _info(self) -> None:
        conn, response = self._upstream("GET", "/info")
        info = json.loads(response.read())
        conn.close()
        volumes = ["default"]
        info.update(
            {
                "ID": PRODUCT,
                "Name": self.name,
                "Driver": f"{PRODUCT} {VERSION} Backend Engine",
                "ExecutionDriver": f"{PRODUCT} {VERSION} Backend Engine",
                "ServerVersion": VERSION,
                "OperatingSystem": "VMware Photon OS/Linux",
                "LoggingDriver": "",
                "CgroupDriver": "",
                "DockerRootDir": "",
                "SystemStatus": [
                    [f"{PRODUCT} Backend Engine", "RUNNING"],
                    ["VCH CPU limit", "2000 MHz"],
                    ["VCH memory limit", "4.000 GiB"],
                    ["VolumeStores", " ".join(volumes)],
                ],
                "Plugins": {"Volume": ["vsphere", "local"], "Network": ["bridge"], "Authorization": None},
            }
        )
        self._json(200, info)

    def _version(self) -> None:
        self._json(
            200,
            {
                "Version": VERSION,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.19",
                "GitCommit": "8b1a8fb",
                "GoVersion": "go1.7.5",
                "Os": "linux",
                "Arch": "amd64",
                "KernelVersion": "4.4.41-1.ph1-esx",
                "Experimental": False,
            },
        )

    def _silent_events(self) -> None:
        """VIC's SubscribeToEvents: an empty stream that stays open and never carries an event."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while not self.server.stopping.is_set():  # type: ignore[attr-defined]
            time.sleep(0.5)
            try:
                if self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    return  # the client went away
            except BlockingIOError:
                continue
            except OSError:
                return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.2:2375")
    parser.add_argument("--socket", default="/run/vicflow-testbed/docker.sock")
    parser.add_argument("--name", default="vch-test")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    Handler.upstream, Handler.name = args.socket, args.name
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.stopping = threading.Event()  # type: ignore[attr-defined]
    print(f"vchproxy: a VCH 1.1's Docker API on tcp://{args.listen} -> unix://{args.socket}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
