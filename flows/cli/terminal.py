"""What the CLI prints: the one output layer between vicflow and a terminal (or a pipe, or a file).

User text (step ids, URLs, error messages, values) is shown, never obeyed: terminal control characters (ESC and
so OSC and CSI sequences, the other C0 and C1 controls, bidi overrides and isolates, zero-width characters) are
shown as ``\\x1b`` / ``\\u202e``, a byte that was not UTF-8 as ``\\xff``, and rich never parses it as markup
(``[/]`` in a URL is text). Every field is cut at a bound, and each stream at MAX_STREAM_BYTES, so a blueprint
cannot make a command print megabytes. A closed pipe (``vicflow schema | head``) ends the command quietly; a
full disk is one error line (cli.main handles both).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

MAX_FIELD = 2_000  # characters of one value shown in text output (a message, a URL, a table cell)
MAX_JSON_STRING = 10_000  # characters of one string in --output json
MAX_STREAM_BYTES = 4 * 2**20  # of one command's stdout or stderr
# C0 controls but tab and newline, DEL and the C1 controls, bidi embeddings/overrides/isolates and marks, zero-width
# characters and the BOM, the line and paragraph separators, and lone surrogates (bytes that were not UTF-8)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte as it was
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: Any, limit: int | None = MAX_FIELD) -> str:
    """``text`` safe to print: control characters shown escaped, cut at ``limit`` characters."""
    text = text if isinstance(text, str) else str(text)
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return _UNSAFE.sub(_shown, text)


def text(value: Any, limit: int | None = MAX_FIELD):
    """A rich Text of user text: printed as it is, never parsed as markup."""
    from rich.text import Text  # the CLI imports this module: +32 ms (rich)

    return Text(clean(value, limit))


def markup(value: Any, limit: int | None = MAX_FIELD) -> str:
    """User text to put inside rich markup of our own (``f"[red]{markup(error)}[/]"``)."""
    from rich.markup import escape  # the CLI imports this module: +26 ms (rich)

    return escape(clean(value, limit))


def for_json(value: Any) -> Any:
    """``value`` for ``--output json``: every string cut at MAX_JSON_STRING characters (json.dumps escapes the
    control characters itself)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_JSON_STRING else f"{value[:MAX_JSON_STRING]}... ({len(value):,} characters)"
    if isinstance(value, dict):
        return {for_json(k): for_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [for_json(v) for v in value]
    return value


class CappedStream:
    """A text stream that stops after MAX_STREAM_BYTES, saying so once."""

    def __init__(self, stream: TextIO, name: str):
        self.stream, self.name, self.written, self.cut = stream, name, 0, False

    def write(self, data: str) -> int:
        if self.cut:
            return len(data)
        if self.written + len(data) > MAX_STREAM_BYTES:
            self.cut = True
            self.stream.write(data[: max(0, MAX_STREAM_BYTES - self.written)])
            self.stream.write(f"\nvicflow: {self.name} cut at {MAX_STREAM_BYTES // 2**20} MiB\n")
            return len(data)
        self.written += len(data)
        return self.stream.write(data)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding...: the stream's own
        return getattr(self.stream, name)


def install() -> None:
    """Cap stdout and stderr of this command; a byte that is not UTF-8 is printed escaped, never an error."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, CappedStream):
            continue
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
        setattr(sys, name, CappedStream(stream, name))


class CleanFilter(logging.Filter):
    """Log lines on the terminal (``-v``) with their control characters shown, not obeyed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg, record.args = clean(message, None), ()
        return True


def say(kind: str, message: str, hint: str | None = None) -> None:
    """One error line (and its hint) on stderr."""
    print(f"vicflow: {kind}: {clean(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {clean(hint)}", file=sys.stderr)
