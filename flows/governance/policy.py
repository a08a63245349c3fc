"""Policy as code on plans: Rego policies (evaluated by regopy, the Python binding of Microsoft's rego-cpp).

A policy is a directory of ``*.rego`` files whose rules live in package ``vicflow.plan`` (Rego v1 syntax).
Three rules give the outcome, each a set of messages:

    deny contains msg if { ... }        the run stops before any step applies
    approval contains msg if { ... }    an approval gate is inserted before the first step
    warn contains msg if { ... }        shown, and the run goes on

The outcome is the most severe rule with a message (deny, then require approval, then warn); none: allow.
The input document is the plan (``input.rows``: step, action, target, detail, kind), its blast radius
(``input.blast_radius``) and the blueprint's name and target. A policy that does not load or evaluate is a
``PolicyError`` (exit 2) naming the file, line and column: never a silent allow.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicflow.plugins.errors import ConfigError

PACKAGE = "vicflow.plan"
RULES = {"deny": "deny", "approval": "require_approval", "warn": "warn"}  # rule -> decision, most severe first
DECISIONS = ("allow", "warn", "require_approval", "deny")  # by severity
HINT = "write the policy in Rego v1: package vicflow.plan, then e.g. deny contains msg if { ... } (docs/policy.md)"

# regopy's error: (error 17:/path/file.rego|44|1 (errormsg 24:Invalid boolean operator) ...): file|offset|length
ERROR_AT = re.compile(r"\(error \d+:(?P<file>[^|\n]*)\|(?P<offset>\d+)\|\d+")
ERROR_MSG = re.compile(r"\(errormsg \d+:(?P<msg>[^\n]*?)\)\s*$", re.MULTILINE)


SITE_ENV = "VICFLOW_POLICY"  # the site's policy on a worker (or for `vicflow`): a run's parameter cannot replace it


def for_run(given: str | None) -> tuple[str | None, str | None]:
    """The policy a run applies, and a note when the one it was ``given`` is not it: the site's (``VICFLOW_POLICY``,
    set where runs execute) wins, since a run form's parameter could otherwise be cleared to skip it."""
    site = os.environ.get(SITE_ENV)
    if not site:
        return given, None
    if given and Path(given).resolve() != Path(site).resolve():
        return site, f"policy {given} is not applied: {SITE_ENV} sets the site's policy, {site}"
    return site, None


class PolicyError(ConfigError):
    """A policy that does not load or cannot be evaluated: the run (or plan) never goes on without it."""


@dataclass(frozen=True)
class Outcome:
    decision: str  # allow | warn | require_approval | deny
    messages: dict[str, list[str]] = field(default_factory=dict)  # rule -> its messages, sorted
    policy: str = ""  # the policy's directory
    digest: str = ""  # of its sources: which policy decided

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "messages": self.messages, "policy": self.policy, "digest": self.digest}

    def lines(self) -> list[str]:
        """One line per message, most severe first: ``deny: never delete a volume store (step vch)``."""
        return [f"{rule}: {message}" for rule in RULES for message in self.messages.get(rule, [])]


def _located(path: Path, text: str, error: str) -> str:
    """regopy's error as ``file:line:column: message``, from the byte offset it gives."""
    found = ERROR_AT.search(error)
    message = ERROR_MSG.search(error)
    why = message.group("msg") if message else error.strip().splitlines()[0]
    if not found:
        return f"{path}: {why}"
    before = text.encode()[: int(found.group("offset"))].decode(errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"{found.group('file') or path}:{line}:{column}: {why}"


class Policy:
    """The ``*.rego`` files of a directory, checked when loaded."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            what = "not a directory" if self.directory.exists() else "no such directory"
            raise PolicyError(f"policy {self.directory}: {what}", "pass the directory of the .rego files")
        self.files = sorted(self.directory.rglob("*.rego"))
        if not self.files:
            raise PolicyError(f"policy {self.directory}: no .rego file in it (an empty policy is no policy)", HINT)
        self.sources = {path: path.read_text(encoding="utf-8", errors="replace") for path in self.files}
        hashed = hashlib.sha256()
        for path, text in self.sources.items():
            hashed.update(f"{path.relative_to(self.directory)}\0{text}\0".encode())
        self.digest = hashed.hexdigest()[:16]
        self._interpreter()  # every file parsed now: a broken policy fails before any plan
        if not any(
            re.search(rf"^\s*package\s+{re.escape(PACKAGE)}\s*$", t, re.MULTILINE) for t in self.sources.values()
        ):
            raise PolicyError(f"policy {self.directory}: no file declares package {PACKAGE}", HINT)

    def _interpreter(self) -> Any:
        # Imported only when a policy is loaded (measured): loading rego-cpp's library takes 0.2 s and reserves
        # 256 GiB of address space for its allocator, so under a `ulimit -v` the import aborts the process.
        # Every vicflow command without a policy must not pay or risk that.
        import regopy

        interpreter = regopy.Interpreter()
        interpreter.log_level = regopy.LogLevel.NONE  # errors come back as exceptions, not on stdout
        for path, text in self.sources.items():
            try:
                interpreter.add_module(str(path), text)
            except regopy.RegoError as exc:
                raise PolicyError(_located(path, text, str(exc)), HINT) from None
        return interpreter

    def evaluate(self, document: dict[str, Any]) -> Outcome:
        """The outcome of the policy for ``document`` (the plan, its blast radius, the blueprint)."""
        import regopy  # loaded by _interpreter already (see there)

        interpreter = self._interpreter()
        try:
            interpreter.set_input(document)
            output = interpreter.query(f"data.{PACKAGE}")
        except regopy.RegoError as exc:
            raise PolicyError(f"policy {self.directory} could not be evaluated: {exc}", HINT) from None
        except ValueError as exc:  # regopy parses rego-cpp's result as JSON, and rego-cpp wrote it wrong
            raise PolicyError(
                f"policy {self.directory}: its result could not be read back from rego-cpp (regopy: {exc}); "
                "regopy 1.5 writes a message made by sprintf of a string that concat() built from input values "
                "with its quotes unescaped",
                'build such a message with concat: msg := concat("", ["steps: ", concat(", ", input.x)])',
            ) from None
        if not output.ok():
            raise PolicyError(
                f"policy {self.directory} could not be evaluated (a complete rule with conflicting values, or a "
                "built-in's error)",
                "evaluate it with the plan as input (vicflow plan --output json) to find the rule",
            )
        values = output.results[0].expressions[0] if output.results and output.results[0].expressions else {}
        messages = {rule: self._messages(rule, values.get(rule)) for rule in RULES}
        messages = {rule: found for rule, found in messages.items() if found}
        decision = next((RULES[rule] for rule in RULES if rule in messages), "allow")
        return Outcome(decision, messages, str(self.directory), self.digest)

    def _messages(self, rule: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise PolicyError(
                f"policy {self.directory}: rule {rule!r} must be a set of message strings, got {type(value).__name__}",
                f"write it as: {rule} contains msg if {{ ... msg := sprintf(...) }}",
            )
        return sorted(value)


def document(blueprint: str, target: str | None, rows: list[dict[str, Any]], radius: dict[str, Any]) -> dict[str, Any]:
    """The policy's input: what the plan would do, counted and row by row."""
    return {"blueprint": blueprint, "target": target, "rows": rows, "blast_radius": radius}
