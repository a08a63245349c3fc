"""``python -m tests.testbed.vchproxy --listen 127.0.0.2:2375 --socket /run/vicflow-testbed/docker.sock``
[``--config FILE``] [``--tls-cert C --tls-key K [--tls-ca CA]``]: a VCH 1.1.1's Docker API in front of dockerd."""

from __future__ import annotations

import argparse
import signal
import sys

from tests.testbed.vchproxy.config import ConfigFile
from tests.testbed.vchproxy.server import VCHServer, tls_context


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="A VCH 1.1.1's Docker API in front of the test bed's dockerd")
    parser.add_argument("--listen", default="127.0.0.2:2375")
    parser.add_argument("--socket", default="/run/vicflow-testbed/docker.sock")
    parser.add_argument("--config", help="the VCH's configuration (JSON), as tests/testbed/appliance.py writes it")
    parser.add_argument("--tls-cert", help="the VCH's server certificate: serve TLS 1.2 (2376)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca", help="client CA: require client certificates (--tls-verify)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    tls = tls_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    server = VCHServer((host, int(port)), args.socket, ConfigFile(args.config, host), tls)
    scheme = "https" if tls else "http"
    print(f"vchproxy: a VCH 1.1.1's Docker API on {scheme}://{args.listen} -> unix://{args.socket}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main(sys.argv[1:]))
