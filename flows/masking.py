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
    if isinstance(text, str) and len(text) >= 3:  # masking "a" would destroy every log line
        with _lock:
            _secrets.add(text)
    install_log_filter()


def mask(value: Any) -> Any:
    """``value`` with every known secret replaced (strings, and strings inside dicts and lists)."""
    if isinstance(value, str):
        for secret in sorted(_secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {mask(k): mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


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
