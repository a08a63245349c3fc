"""requests' exceptions mapped into vicflow's error tree, once, where they leave the transport.

The model is httpx's ``map_exceptions`` (httpx/_transports/default.py): the transport catches the library's
exceptions and raises the caller's own, the original kept as ``__cause__``. Here that transport is
``MappedAdapter``, a requests ``HTTPAdapter`` whose ``send`` maps; a session that mounts it (``session()``,
the HTTP step, the registry client, vSphere's datastore uploads) raises only the tree's errors:

=======================================================  ==========================================
requests raises                                           the tree's error
=======================================================  ==========================================
``SSLError`` (a CA that does not verify, a TLS alert)     ``TLSRejected`` (permanent)
``SSLError`` of an EOF or a reset (a cut)                 ``ConnectionLost`` (transient)
``ConnectionError``, ``Timeout``, ``ChunkedEncodingError`` ``ConnectionLost`` (transient)
any other ``RequestException`` (invalid URL, header)      ``InvalidRequest`` (permanent)
=======================================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
import requests.adapters
from vicflow.plugins.errors import ConnectionLost, InvalidRequest, TLSRejected

TLS_HINT = "set ca to the CA that signed the server's certificate"


@contextmanager
def requests_errors(method: str, url: str) -> Iterator[None]:
    """Map what requests raises in the block (see the module's table); ``method`` and ``url`` name the call."""
    try:
        yield
    except requests.exceptions.SSLError as exc:  # before ConnectionError, which it derives from
        if _cut(exc):
            raise ConnectionLost(f"{method} {url}: the TLS connection was cut: {_short(exc)}") from exc
        raise TLSRejected(f"TLS verification of {url} failed: {_short(exc)}", TLS_HINT) from exc
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise ConnectionLost(f"{method} {url}: {type(exc).__name__}: {_short(exc)}") from exc
    except requests.RequestException as exc:
        raise InvalidRequest(f"{method} {url}: {type(exc).__name__}: {_short(exc)}") from exc


def _cut(exc: BaseException) -> bool:
    """A TLS error that is a connection cut, not a refused certificate: an EOF or a reset mid-handshake or
    mid-answer (ssl.SSLEOFError, as a vCenter cut or a restarting server gives), which requests reports as an
    SSLError all the same."""
    text = str(exc)
    return any(sign in text for sign in ("EOF occurred", "UNEXPECTED_EOF", "Connection reset"))


def _short(exc: BaseException) -> str:
    return str(exc)[:200]


class MappedAdapter(requests.adapters.HTTPAdapter):
    """requests' transport, whose failures leave as the tree's errors (``requests_errors``)."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        with requests_errors(request.method or "", request.url or ""):
            response = super().send(request, stream, timeout, verify, cert, proxies)
            if not stream:  # the body is read here, not later in Session.send, so a cut in it is mapped too
                _ = response.content
            return response


def mount(session: requests.Session, adapter: MappedAdapter | None = None) -> requests.Session:
    """``session`` with ``adapter`` (a plain ``MappedAdapter`` by default) for http:// and https://."""
    adapter = adapter or MappedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def session(verify: bool | str = True) -> requests.Session:
    """A requests session that raises the tree's errors, ignores the environment's proxy and CA settings
    (REQUESTS_CA_BUNDLE would otherwise replace a pinned CA, requests#3829), and verifies with ``verify``."""
    made = mount(requests.Session())
    made.trust_env = False
    made.verify = verify
    return made
