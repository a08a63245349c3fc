"""Hash chains that show an edit: the audit trail's records and the resume journal's steps.

Each link is SHA-256 over the previous link and the record's canonical JSON; with a key (``VICFLOW_AUDIT_KEY``,
kept like any secret) it is HMAC-SHA256, so someone who edits a record cannot compute the links again without
the key. Without a key an edit is still found unless whoever made it also recomputed every later link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from vicflow.plugins.errors import VicflowError

KEY_ENV = "VICFLOW_AUDIT_KEY"
GENESIS = "0" * 64  # the link before the first


class TamperedError(VicflowError):
    """A record or a journal does not match its hashes: it was edited, or something was removed."""


def key() -> bytes | None:
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


def algorithm(secret: bytes | None) -> str:
    return "hmac-sha256" if secret else "sha256"


def canonical(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces (as the hashes need it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def link(previous: str, body: Any, secret: bytes | None) -> str:
    """The hash that chains ``body`` to ``previous``."""
    data = previous.encode() + b"\n" + canonical(body)
    if secret:
        return hmac.new(secret, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- the journal


def seal_journal(document: dict[str, Any], secret: bytes | None = None) -> dict[str, Any]:
    """``document`` (a resume journal) with its seal: one link per step, by step id, then the rest."""
    secret = key() if secret is None else secret
    body = {k: v for k, v in document.items() if k != "seal"}
    steps: dict[str, str] = {}
    previous = GENESIS
    # in sorted order: a store may give the keys back in another (PostgreSQL's jsonb orders them by length)
    for step_id, entry in sorted(body.get("steps", {}).items()):
        previous = steps[step_id] = link(previous, {"step": step_id, **entry}, secret)
    rest = {k: v for k, v in body.items() if k != "steps"}
    seal = {"alg": algorithm(secret), "steps": steps, "document": link(previous, rest, secret)}
    return {**body, "seal": seal}


def check_journal(document: dict[str, Any], ref: str, secret: bytes | None = None) -> None:
    """Raise ``TamperedError`` naming what does not match the journal's seal (``ref``: the run resumed)."""
    secret = key() if secret is None else secret
    hint = "the journal of a run is written by vicflow only: start the run again without --resume"
    seal = document.get("seal")
    if not isinstance(seal, dict):
        raise TamperedError(f"the journal of run {ref} has no seal: it was not written by this vicflow", hint)
    if seal.get("alg") != algorithm(secret):
        raise TamperedError(
            f"the journal of run {ref} is sealed with {seal.get('alg')}, and {KEY_ENV} is "
            f"{'set' if secret else 'not set'} here",
            f"resume with the same {KEY_ENV} as the run had",
        )
    expected = seal_journal(document, secret)["seal"]
    for step_id in seal.get("steps", {}):
        if step_id not in expected["steps"]:
            raise TamperedError(f"the journal of run {ref} was edited: step {step_id!r} was removed from it", hint)
    for step_id, value in expected["steps"].items():
        if seal.get("steps", {}).get(step_id) != value:
            raise TamperedError(f"the journal of run {ref} was edited: the entry of step {step_id!r}", hint)
    if seal.get("document") != expected["document"]:
        raise TamperedError(f"the journal of run {ref} was edited: its blueprint, state or outputs", hint)


class SealedJournal:
    """A run's journal (``FileJournal``, ``PrefectJournal``) whose every save is sealed and whose every load is
    checked against its seal: a journal edited since is refused on resume (``TamperedError``)."""

    def __init__(self, journal: Any):
        self.journal = journal

    def save(self, run_id: str, document: dict[str, Any]) -> None:
        self.journal.save(run_id, seal_journal(document))

    def load(self, ref: str) -> dict[str, Any]:
        document = self.journal.load(ref)
        check_journal(document, ref)
        return document
