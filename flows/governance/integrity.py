"""Hashes that show an edit: the audit trail's records, chained, and the resume journal's steps.

Each link is SHA-256 over the previous link and the record's canonical JSON; with a key (``VICFLOW_AUDIT_KEY``,
kept like any secret) it is HMAC-SHA256, so someone who edits a record cannot compute the links again without
the key. Without a key an edit is still found unless whoever made it also recomputed every later link.

A running run saves its journal at every step's end; its seal is kept up to date (``Seal``) rather than computed
anew: only the entries that changed are serialised and hashed again, then the link over the whole.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Collection
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
    """``document`` (a resume journal) with its seal: one link per step, by step id, then one over the rest."""
    return Seal(key() if secret is None else secret).update(document)


class Seal:
    """The seal of one journal as it changes: a link per step over its entry (made again only for the entries
    that changed), and one over the rest of the journal and every step's link, so a removed step shows too.
    The steps' links are not chained to each other: a chain by step id had to be hashed again from the first
    changed step on, at every save (quadratic in the steps: 100 hashes a save at 200 steps)."""

    FORM = 2  # 1: the steps' links chained by step id (before December 2026); its journals are not resumed

    def __init__(self, secret: bytes | None):
        self.secret = secret
        self.links: dict[str, str] = {}  # each step's link, by step id

    def update(self, document: dict[str, Any], changed: Collection[str] | None = None) -> dict[str, Any]:
        """``document`` with its seal; ``changed``: the steps whose entries changed since the last update (None:
        any may have)."""
        body = {k: v for k, v in document.items() if k != "seal"}
        steps = body.get("steps", {})
        if changed is None or any(step_id not in steps for step_id in self.links):
            self.links, changed = {}, steps
        for step_id in {*changed, *(steps.keys() - self.links.keys())}:
            self.links[step_id] = link(GENESIS, {"step": step_id, **steps[step_id]}, self.secret)
        # in sorted order: a store may give the keys back in another (PostgreSQL's jsonb orders them by length)
        links = {step_id: self.links[step_id] for step_id in sorted(steps)}
        rest = {k: v for k, v in body.items() if k != "steps"}
        seal = {
            "alg": algorithm(self.secret),
            "form": self.FORM,
            "steps": links,
            "document": link(GENESIS, {"rest": rest, "steps": links}, self.secret),
        }
        return {**body, "seal": seal}


def check_journal(document: dict[str, Any], ref: str, secret: bytes | None = None) -> None:
    """Raise ``TamperedError`` naming what does not match the journal's seal (``ref``: the run resumed)."""
    secret = key() if secret is None else secret
    hint = "the journal of a run is written by vicflow only: start the run again without --resume"
    seal = document.get("seal")
    if not isinstance(seal, dict):
        raise TamperedError(f"the journal of run {ref} has no seal: it was not written by this vicflow", hint)
    if seal.get("form", 1) != Seal.FORM:
        raise TamperedError(
            f"the journal of run {ref} was sealed by an earlier vicflow (seal form {seal.get('form', 1)}, this one "
            f"reads form {Seal.FORM})",
            "start the run again without --resume",
        )
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
        raise TamperedError(f"the journal of run {ref} was edited: its blueprint, state, outputs or steps", hint)


class SealedJournal:
    """A run's journal (``FileJournal``, ``PrefectJournal``) whose every save is sealed and whose every load is
    checked against its seal: a journal edited since is refused on resume (``TamperedError``)."""

    def __init__(self, journal: Any):
        self.journal = journal
        self.seals: dict[str, Seal] = {}  # by run id: the seal each run's saves keep up to date

    def save(self, run_id: str, document: dict[str, Any], changed: Collection[str] | None = None) -> None:
        """Save ``document`` sealed; ``changed``: the steps whose entries changed since this run's last save
        (None: any may have)."""
        secret = key()
        seal = self.seals.get(run_id)
        if seal is None or seal.secret != secret:
            seal = self.seals[run_id] = Seal(secret)
        self.journal.save(run_id, seal.update(document, changed))

    def load(self, ref: str) -> dict[str, Any]:
        document = self.journal.load(ref)
        check_journal(document, ref)
        return document
