"""Secret values never leave the process in clear: logs, artifacts, events and errors are masked.

Every secret value a run resolves (``${{ secrets.x }}``, ``secret`` inputs, a token a step got) is added to one
process-wide set; a logging filter on every handler and ``mask()`` on everything published replace it with
``***``. A secret rarely travels as typed: requests percent-encodes it in a URL, Prefect stores messages as
JSON, an error quotes it with ``repr``, Basic auth sends it in base64. So each secret is known in every
encoding it is likely to take (``forms``), and one regular expression finds them all in one pass.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_LENGTH = 3  # masking "a" would destroy every log line
MIN_BASE64 = 6  # a base64 fragment of a shorter secret is too short to mask without false hits
MIN_PIECE = 6  # a piece of a secret cut by a URL parser, masked too when at least this long
_DELIMITERS = frozenset("/\\?#@\n\r\t \"'")
# What each encoder leaves unquoted: urllib's quote (none, or "/"), requests (requests.utils.requote_uri, with
# "%" when the text holds valid escapes), urllib3 (parse_url: a path's and a query's characters, RFC 3986).
_URL_SAFE = (
    "",
    "/",
    "!#$%&'()*+,/:;=?@[]~",
    "!#$&'()*+,/:;=?@[]~",
    "!$&'()*+,;=:@/",
    "!$&'()*+,;=:@/%",
    "!$&'()*+,;=:@/?",
    "!$&'()*+,;=:@/?%",
    "/?=&",  # a path and query string quoted by hand (quote(url, safe="/?=&")), as in a retry error's url
)
_HEX_ESCAPE = re.compile(r"%[0-9A-F]{2}")
_ANY_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")  # RFC 3986

_secrets: dict[str, set[str]] = {}  # secret -> its forms
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def forms(secret: str) -> set[str]:
    """Every form of ``secret``: ``encoded``; in base64 at each of the three alignments it can have inside a longer
    value (``user:secret`` in Basic auth); and the encoded forms of the pieces a URL parser may cut it into."""
    found = encoded(secret)
    found |= _base64_forms(secret.encode("utf-8", "surrogatepass"))
    if not secret.isascii() and all(ord(c) < 256 for c in secret):  # requests encodes Basic auth as latin-1
        found |= _base64_forms(secret.encode("latin-1"))
    for piece in pieces(secret):
        found |= encoded(piece)
    return {form for form in found if len(form) >= MIN_LENGTH}


def pieces(secret: str) -> set[str]:
    """What a URL parser leaves of ``secret`` when it cuts it at a delimiter (urllib3 ends a host at a backslash, ``/``,
    ``?``, ``#``, a user at ``@``; a newline or a space ends a line or a word): the parts before, between and
    after the delimiters, of MIN_PIECE characters or more."""
    cuts = [i for i, c in enumerate(secret) if c in _DELIMITERS]
    if not cuts:
        return set()
    found = set()
    for i in cuts:
        found |= {secret[:i], secret[i + 1 :]}
    for start, end in zip([-1, *cuts], [*cuts, len(secret)], strict=True):
        found.add(secret[start + 1 : end])
    return {piece for piece in found if len(piece) >= MIN_PIECE}


def encoded(secret: str) -> set[str]:
    """``secret`` as it may appear in text: as is, percent-encoded (quote, quote_plus, requests' own, each
    with lower-case hex too, and encoded twice), ``repr``-escaped (either quote style, once and twice),
    HTML-escaped, and each of those JSON-escaped."""
    found = {secret, html.escape(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    # requests first decodes the escapes of unreserved characters the text already holds ("%41" -> "A";
    # requests.utils.unquote_unreserved), then quotes the rest
    for text in {secret, _ANY_ESCAPE.sub(_unreserved, secret)}:
        for safe in _URL_SAFE:
            quoted = quote(text, safe=safe)
            found |= {quoted, quote(quoted, safe=safe), _HEX_ESCAPE.sub(lambda m: m.group(0).lower(), quoted)}
    for text in (secret, repr(secret)[1:-1]):
        found |= {repr(text)[1:-1], repr(text + '"')[1:-2], repr(text + "'")[1:-2]}
    for _ in range(2):  # a JSON document inside a JSON string (a logged request body) escapes twice
        for text in list(found):
            found |= {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    return found


def _unreserved(escape: re.Match[str]) -> str:
    """An escape of an unreserved character decoded, as requests does; any other escape kept."""
    char = chr(int(escape.group(1), 16))
    return char if char in _UNRESERVED else escape.group(0)


def _base64_forms(data: bytes) -> set[str]:
    """The base64 characters that depend on ``data`` alone, whatever comes before or after it."""
    if len(data) < MIN_BASE64:
        return set()
    found = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0")
        first = -(-8 * offset // 6)  # the first character whose 6 bits all come from data
        last = (8 * (offset + len(data))) // 6  # one past the last such character
        fragment = encoded[first:last].decode()
        found |= {fragment, fragment.replace("+", "-").replace("/", "_")}  # standard and URL-safe alphabets
    return found


def add_secret(value: Any) -> None:
    """Mask ``value`` from now on; a list, tuple, set or dict adds each value it holds."""
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if isinstance(text, dict | list | tuple | set | frozenset):
        for item in text.values() if isinstance(text, dict) else text:
            add_secret(item)
        return
    if isinstance(text, int | float) and not isinstance(text, bool):  # a PIN or a numeric password
        text = str(text)
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    if isinstance(text, str) and len(text) >= MIN_LENGTH and text != MASK:
        global _pattern
        with _lock:
            if text not in _secrets:
                _secrets[text] = forms(text)
                every = set().union(*_secrets.values())
                _pattern = re.compile("|".join(re.escape(f) for f in sorted(every, key=len, reverse=True)))
    install_log_filter()


def known() -> int:
    """How many secrets are masked (they are only ever added): a value masked when fewer were may show one."""
    return len(_secrets)


def is_secret(text: str) -> bool:
    """Whether ``text`` holds a known secret (in any of its forms)."""
    pattern = _pattern
    return pattern is not None and isinstance(text, str) and pattern.search(text) is not None


def mask(value: Any) -> Any:
    """``value`` with every known secret replaced: strings, numbers, bytes, and what dicts, lists, tuples and
    sets hold; any other object whose text shows a secret becomes that text, masked."""
    pattern = _pattern
    if pattern is None or value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    if isinstance(value, int | float):
        return MASK if str(value) in _secrets else value
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
        masked = mask(text)
        return masked if masked != text else value
    if isinstance(value, dict):
        return {mask(k): mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask(v) for v in value]
    text = str(value)
    masked = mask(text)
    return masked if masked != text else value


class MaskingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = mask(message), ()
        if record.exc_info:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


_filter = MaskingFilter()


def install_log_filter() -> None:
    """Put the filter on every handler that exists now (called again as runs start)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _filter not in handler.filters:
                handler.addFilter(_filter)
