"""The audit trail: who approved, rejected, resumed or cancelled which plan, and what policy said of it.

Records are JSON lines in one file (``VICFLOW_AUDIT_LOG``, default ``<state dir>/audit.jsonl``), appended under
an exclusive lock, each chained to the one before it by ``integrity.link`` (keyed with ``VICFLOW_AUDIT_KEY``).
A file beside it (``.head``) holds the last record's number and hash, so removing the newest records shows too.
``verify`` names the first record that was edited, and where records were removed. docs/decisions.md says why
a file (which can be made append-only with ``chattr +a`` and shipped off the host) and not Prefect artifacts.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vicflow.flows.governance import integrity
from vicflow.plugins import masking

EVENTS = ("approval", "rejection", "policy", "resume", "cancellation")
LOG_ENV = "VICFLOW_AUDIT_LOG"


def default_path() -> Path:
    configured = os.environ.get(LOG_ENV)
    if configured:
        return Path(configured)
    state = os.environ.get("VICFLOW_STATE_DIR", Path.home() / ".local" / "state" / "vicflow")
    return Path(state) / "audit.jsonl"


def this_process() -> str:
    """``user@host`` of this process: who decided, when no one answered a form (--approve, a policy, a resume)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # a container's uid with no passwd entry
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@dataclass
class Verification:
    path: Path
    records: int = 0
    head: str = integrity.GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def describe(record: dict[str, Any]) -> str:
    """``record 3 (approval by alice at 2026-12-03T06:10:00Z, run 7dfe00b0)``: how verify names a record."""
    who = record.get("who") or "?"
    run = f", run {record['run_id']}" if record.get("run_id") else ""
    return f"record {record.get('seq', '?')} ({record.get('event', '?')} by {who} at {record.get('time', '?')}{run})"


class AuditLog:
    def __init__(self, path: str | Path | None = None, secret: bytes | None = None):
        self.path = Path(path) if path else default_path()
        self.secret = integrity.key() if secret is None else secret

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    def append(
        self,
        event: str,
        who: str,
        run_id: str = "",
        blueprint: str = "",
        plan_hash: str = "",
        comment: str = "",
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add one record (masked: a secret never reaches the trail) and return it."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}; one of {', '.join(EVENTS)}")
        body = {
            "event": event,
            "who": who,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "run_id": run_id,
            "blueprint": blueprint,
            "plan_hash": plan_hash,
            "comment": comment,
            "detail": detail or {},
        }
        body = masking.mask(body)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "r+", encoding="utf-8") as log:
            fcntl.flock(log, fcntl.LOCK_EX)  # one writer at a time: the chain never forks
            last = self._last(log)
            record = {"seq": last.get("seq", 0) + 1, **body, "prev": last.get("hash", integrity.GENESIS)}
            record["alg"] = integrity.algorithm(self.secret)
            record["hash"] = integrity.link(record["prev"], _body(record), self.secret)
            log.seek(0, os.SEEK_END)
            log.write(json.dumps(record, sort_keys=True) + "\n")
            log.flush()
            os.fsync(log.fileno())
            self._write_head(record)
        return record

    def _last(self, log) -> dict[str, Any]:
        log.seek(0)
        last: dict[str, Any] = {}
        for line in log:
            if line.strip():
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:
                    continue  # verify reports it; the next record chains to the last readable one
        return last

    def _write_head(self, record: dict[str, Any]) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(json.dumps({"seq": record["seq"], "hash": record["hash"]}) + "\n")
        os.replace(tmp, self.head_path)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def verify(self) -> Verification:
        """Every record's hash and link checked in order; the head file checked against the last one."""
        result = Verification(self.path)
        if not self.path.exists():
            if self.head_path.exists():
                result.problems.append(f"{self.path} is gone, and its head file says it had records")
            return result
        previous: dict[str, Any] = {"seq": 0, "hash": integrity.GENESIS}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                result.problems.append(f"line {number} of {self.path} is not a record: it was edited")
                continue
            self._check(record, previous, result)
            previous = record
            result.records += 1
        result.head = previous["hash"]
        self._check_head(previous, result)
        return result

    def _check(self, record: dict[str, Any], previous: dict[str, Any], result: Verification) -> None:
        if record.get("alg") != integrity.algorithm(self.secret):
            have = "set" if self.secret else "not set"
            result.problems.append(
                f"{describe(record)} is chained with {record.get('alg')}, and {integrity.KEY_ENV} is {have} here"
            )
            return
        if record.get("hash") != integrity.link(str(record.get("prev")), _body(record), self.secret):
            result.problems.append(f"{describe(record)} was edited: its hash does not match its contents")
        expected = previous.get("seq", 0) + 1
        seq = record.get("seq")
        if isinstance(seq, int) and seq > expected:
            gone = f"record {expected}" if seq == expected + 1 else f"records {expected} to {seq - 1}"
            result.problems.append(f"{gone} removed before {describe(record)}: the chain is broken")
        elif seq != expected or record.get("prev") != previous.get("hash"):
            result.problems.append(
                f"{describe(record)} does not chain to record {expected - 1}: that record was edited and its hash "
                "computed again, or replaced"
            )

    def _check_head(self, last: dict[str, Any], result: Verification) -> None:
        if not self.head_path.exists():
            if result.records:
                result.problems.append(f"{self.head_path} is missing: removed records at the end cannot be ruled out")
            return
        head = json.loads(self.head_path.read_text() or "{}")
        first = last.get("seq", 0) + 1
        if head.get("seq", 0) >= first:
            gone = f"record {first} was" if head["seq"] == first else f"records {first} to {head['seq']} were"
            result.problems.append(f"{gone} removed from the end (the head file says {head['seq']} records)")
        elif head.get("hash") != last.get("hash"):
            result.problems.append(f"the last record does not match the head file ({self.head_path})")


def _body(record: dict[str, Any]) -> dict[str, Any]:
    """What a record's hash covers: everything but the hash itself (its seq and prev link included)."""
    return {k: v for k, v in record.items() if k != "hash"}
