"""Every error vicflow raises on purpose, in one tree (as httpx has): catch ``VicflowError`` for all of them.

::

    VicflowError                 root; ``hint`` says how to fix it
    ├── ConfigError              the user's configuration is wrong; the CLI exits 2
    │   ├── BlueprintError       a blueprint file (each problem names file:line:column and step)
    │   ├── InputsError          --set, an inputs file, the site Variable
    │   ├── ListenConfigError    `vicflow listen --config`
    │   ├── ExpressionError      a ${{ }} expression that cannot be parsed or evaluated (a missing secret)
    │   │   └── BudgetError      one that went past its budget: CPU time, or the size of what it builds
    │   ├── YAMLSyntaxError      a YAML file that does not parse
    │   └── PolicyError          a policy that does not load or evaluate (flows/governance/policy.py)
    ├── PluginError              a plugin could not be loaded or registered something invalid; exit 2
    ├── StepError                a step failed
    │   ├── TransientError       worth retrying (a timeout, a restarting server)
    │   │   ├── ConnectionLost   a call's connection was refused, reset, timed out or cut mid-answer (any client)
    │   │   │   └── LoginCut     a vSphere login cut after it was sent (plugins/clients/vsphere/connection.py)
    │   │   └── ServerUnavailable  the server answered that it cannot serve now: a Docker engine's 5xx
    │   └── PermanentError       retrying cannot help (bad input, a refused credential)
    │       ├── TLSRejected      the TLS handshake failed on a certificate (a wrong CA, no client certificate)
    │       ├── RequestRefused   the server refused the request: a Docker engine's 4xx
    │       ├── InvalidRequest   the request could not be made (an invalid URL, too many redirects)
    │       ├── TaskFailed       a vSphere task ended in error (plugins/clients/vsphere/tasks.py)
    │       ├── EngineRestarted  the Docker engine restarted under a step (plugins/clients/dockerapi.py)
    │       ├── ComposeError     a compose file compose_up cannot use (plugins/compose/errors.py)
    │       └── AttemptStillRunning  an attempt past its timeout that does not stop (flows/engine/attempt.py)
    ├── RegistryError            the registry refused us (plugins/clients/registry_api.py)
    │   └── RegistryUnavailable  Harbor's nginx without its upstream (502/503/504): worth another try
    ├── ProbeFailed              one health probe's answer (plugins/builtin/health.py)
    ├── AttemptFailed            an attempt of a step failed (masked), retry or not (flows/engine/attempt.py)
    ├── TamperedError            an audit record or a sealed journal was edited (flows/governance/integrity.py)
    ├── Duplicate                this run's event was taken by another run; it ends Cancelled (flows/events/intake.py)
    └── RunFailed                a run ended with a step that failed for good; exit 1
        └── RunCancelled         an approval said no, or none came, or the run's policy denied it

It lives in ``plugins`` because plugins raise these and may not import the engine (``flows``).

A client library's own exceptions are mapped into this tree once, where they leave the client (httpx's
``map_exceptions``): ``plugins/clients/http.py`` for requests, ``dockerapi.connected`` for the Docker SDK,
the vSphere session's stub for pyVmomi. The original stays as ``__cause__``. So a step type needs no list of
exceptions worth a retry: ``StepType.is_transient`` asks whether it is a ``TransientError``.
"""

from __future__ import annotations

from typing import Any


class VicflowError(Exception):
    """The root.  ``hint`` (optional) tells the user what to do about it."""

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(VicflowError):
    """What the user gave is wrong.  ``problems`` lists each one where it is (file, line, column, step,
    message, hint); a single problem also makes the message."""

    def __init__(self, problems: list[Any] | str, hint: str | None = None):
        if isinstance(problems, str):
            super().__init__(problems, hint)
            self.problems: list[Any] = []
        else:
            super().__init__("\n".join(str(p) for p in problems), hint)
            self.problems = list(problems)


class BlueprintError(ConfigError):
    """A blueprint failed validation; ``problems`` lists every issue."""


class InputsError(ConfigError):
    """The values given for a blueprint's inputs: --set, an inputs file, the site Variable."""


class ListenConfigError(ConfigError):
    """`vicflow listen`'s configuration file."""


class ExpressionError(ConfigError):
    """An expression could not be parsed or evaluated."""


class BudgetError(ExpressionError):
    """An expression went past its budget (CPU time, the size of what it builds or reads): flows/language/budget.py."""


class YAMLSyntaxError(ConfigError):
    """A YAML document that does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int, hint: str = ""):
        super().__init__(message, hint)
        self.line, self.column = line, column


class PluginError(VicflowError):
    """A plugin could not be loaded, or registered something invalid."""


class StepError(VicflowError):
    """A step failed; ``hint`` tells the user how to fix it.  Its text ends in the hint, as users see it
    in a run's summary."""

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class TransientError(StepError):
    """Worth retrying: a timeout, a server that is restarting, a lock held elsewhere."""


class PermanentError(StepError):
    """Retrying cannot help: bad input, a missing object, a refused credential."""


class ConnectionLost(TransientError):
    """A call's connection was refused, reset, timed out, or cut before the whole answer came: the network,
    not the request. Another attempt may find it back."""


class ServerUnavailable(TransientError):
    """The server answered that it cannot serve now (a Docker engine's 5xx while it restarts)."""


class TLSRejected(PermanentError):
    """The TLS handshake failed on a certificate: the CA does not verify the server, or the server wants a
    client certificate it was not given."""


class RequestRefused(PermanentError):
    """The server answered and refused the request (a Docker engine's 4xx): the same request fails again."""


class InvalidRequest(PermanentError):
    """The client could not make the request at all: an invalid URL or header, too many redirects."""


class AttemptFailed(VicflowError):
    """One attempt of a step ended in error (raised by the engine around the step's own error, its message
    masked); ``transient`` says whether another attempt may help. The executor retries it or reports it."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):  # rebuilt with its flag wherever it is unpickled
        return (type(self), (str(self), self.transient))


class AttemptStillRunning(PermanentError, TimeoutError):
    """An attempt passed its deadline and its thread is still running: another attempt would run beside it."""


class RunFailed(VicflowError):
    """The run failed; ``summary`` (masked by whoever raises it) is the dict a successful run returns."""

    def __init__(self, summary: dict[str, Any]):
        self.summary = summary
        failed = [s for s in summary["steps"] if s["state"] in ("failed", "timed_out")]
        detail = "; ".join(f"{s['id']}: {s['error']}" for s in failed) or summary.get("error", "")
        super().__init__(f"blueprint {summary['blueprint']!r} failed: {detail}")

    def __reduce__(self):  # Prefect pickles the exception: rebuild it from the summary, not the message
        return (type(self), (self.summary,))


class RunCancelled(RunFailed):
    """An approval was refused or not given in time: nothing behind the gate ran, nothing was rolled back."""

    def __init__(self, summary: dict[str, Any]):
        VicflowError.__init__(self, f"blueprint {summary['blueprint']!r} cancelled: {summary.get('error', '')}")
        self.summary = summary


__all__ = [
    "AttemptFailed",
    "AttemptStillRunning",
    "BlueprintError",
    "BudgetError",
    "ConfigError",
    "ConnectionLost",
    "ExpressionError",
    "InputsError",
    "InvalidRequest",
    "ListenConfigError",
    "PermanentError",
    "PluginError",
    "RequestRefused",
    "RunCancelled",
    "RunFailed",
    "ServerUnavailable",
    "StepError",
    "TLSRejected",
    "TransientError",
    "VicflowError",
    "YAMLSyntaxError",
]
