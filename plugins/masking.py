"""Secret values never leave the process in clear: logs, artifacts, events and errors are masked.

Every secret value a run resolves (``${{ secrets.x }}``, ``secret`` inputs) is added to one
process-wide set; a logging filter on every handler and ``mask()`` on everything published replace
them with ``***``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()


def add_secret(value: Any) -> None:
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if isinstance(text, int | float) and not isinstance(text, bool):  # a PIN or a numeric password
        text = str(text)
    if isinstance(text, str) and len(text) >= 3:  # masking "a" would destroy every log line
        with _lock:
            _secrets.add(text)
    install_log_filter()


def mask(value: Any) -> Any:
    """``value`` with every known secret replaced: strings, numbers, bytes, and what dicts, lists, tuples and
    sets hold; any other object whose text shows a secret becomes that text, masked."""
    if not _secrets or value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        for secret in sorted(_secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        return value
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
        if not _secrets:
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
