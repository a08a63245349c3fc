"""One input pipeline: a run's input values from every source, in one order, rendered, then typed.

``vicflow run`` calls :func:`prepare` once, before Prefect starts (a mistake is exit 2), and hands the flow run
what it prepared; a deployment's flow run calls it itself. The sources, in order:

1. the ``--inputs`` file, then ``--set NAME=VALUE`` (later wins), or the flow's ``inputs`` parameter;
2. the site Variable (``inputs_from``) for the declared inputs those leave out;
3. the blueprint's defaults for what is still missing.

Then every value that is an expression is rendered (``${{ secrets.x }}``, ``${{ event.* }}``), and only then
coerced to its declared type and checked: an ``integer`` input may be ``${{ secrets.port }}``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from vicflow.flows.language import expressions
from vicflow.flows.language.problems import Problem, capped, short
from vicflow.flows.language.references import VALUE_ROOTS, expression_problems
from vicflow.flows.language.secrets import Secrets
from vicflow.flows.language.spec import Blueprint, InputSpec, type_problem
from vicflow.plugins import masking, yamlpos
from vicflow.plugins.errors import ExpressionError, InputsError, StepError
from vicflow.plugins.hints import did_you_mean, listing

log = logging.getLogger("vicflow.inputs")


@dataclass
class Prepared:
    """``values`` are what steps see; ``given`` is what was given explicitly, secret values wrapped
    (``SecretStr``) so that Prefect hides them in the flow run's parameters."""

    values: dict[str, Any]
    given: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Value:
    raw: Any
    where: tuple[str, int, int]  # file, line, column of the value, for the problem's location


def prepare(
    document: Blueprint,
    *,
    file: str | Path | None = None,
    sets: tuple[str, ...] | list[str] = (),
    inputs: dict[str, Any] | None = None,
    variable: str | None = None,
    event: dict[str, Any] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> Prepared:
    """The run's input values; raises InputsError listing every problem (unknown, missing, mistyped)."""
    source = document.path or "<blueprint>"
    given: dict[str, _Value] = {}
    if file is not None:
        given.update(_from_file(Path(file)))
    given.update(_from_sets(sets))
    given.update({k: _Value(v, (source, 1, 1)) for k, v in (inputs or {}).items()})
    problems = [
        Problem(
            *value.where,
            f"unknown input {short(name)}",
            f"{did_you_mean(name, document.inputs)}declared inputs: {listing(document.inputs) or 'none'}",
        )
        for name, value in given.items()
        if name not in document.inputs
    ]
    site = {k: v for k, v in _from_variable(document, variable, logger or log).items() if k not in given}
    _mask_secrets(document, [*given.items(), *site.items()])
    values: dict[str, Any] = {}
    context = {"secrets": Secrets(), "event": event or {}}
    for name, spec in document.inputs.items():
        value = given.get(name) or site.get(name)
        if value is None and spec.default is None and spec.is_required:
            problems.append(
                Problem(
                    source,
                    *document.input_place(name),
                    f"missing required input {name!r}",
                    f"pass it with --set {name}=... or --inputs FILE ({spec.description or spec.type})",
                )
            )
            continue
        if value is None and spec.default is None:
            values[name] = None  # an optional input left out
            continue
        if value is None:
            value = _Value(spec.default, (source, *document.input_place(name)))
        typed, problem = _render_and_type(name, spec, value, context)
        if problem:
            problems.append(problem)
        else:
            values[name] = typed
    if problems:
        raise InputsError(capped(problems))
    for name, spec in document.inputs.items():
        if spec.type == "secret" and values.get(name) is not None:
            masking.add_secret(str(values[name]))
    return Prepared(values, wrap_secrets(document, {k: v.raw for k, v in given.items()}))


def _mask_secrets(document: Blueprint, values: list[tuple[str, _Value]]) -> None:
    """The values given for secret inputs are masked before anything may quote them (a reference such as
    ``${{ secrets.db }}`` is not a secret: its value is masked when it is read)."""
    for name, value in values:
        raw = value.raw.get_secret_value() if _is_secret(value.raw) else value.raw
        if name in document.inputs and document.inputs[name].type == "secret" and not _is_reference(raw):
            masking.add_secret(raw)


def wrap_secrets(document: Blueprint, given: dict[str, Any]) -> dict[str, Any]:
    """Secret inputs' values as ``SecretStr`` (numbers too: a PIN is a secret)."""
    return {
        k: SecretStr(str(v))
        if k in document.inputs and document.inputs[k].type == "secret" and v is not None and not _is_secret(v)
        else v
        for k, v in given.items()
    }


def _is_secret(value: Any) -> bool:
    return hasattr(value, "get_secret_value")


SECRET_NOT_A_REFERENCE = (
    "what was given is one ${{ ... }} that does not evaluate as a reference (not shown: it may be the secret)"
)
SECRET_HINT = "give the secret itself, or one whole ${{ secrets.NAME }}"
SECRET_LOOKUP = re.compile(r"\$\{\{\s*secrets\.[A-Za-z0-9_-]{1,128}\s*\}\}")  # names a secret: safe to quote


def _render_and_type(name: str, spec: InputSpec, value: _Value, context: dict) -> tuple[Any, Problem | None]:
    raw = value.raw.get_secret_value() if _is_secret(value.raw) else value.raw
    file, line, col = value.where
    secret = spec.type == "secret"
    if expressions.has_expression(raw) and (not secret or _is_reference(raw)):  # a secret itself is never rendered
        found = expression_problems(raw, VALUE_ROOTS, {})
        if found and secret:  # it may be the secret itself, shaped like a reference: the message never quotes it
            return None, Problem(file, line, col, f"input {name!r}: {SECRET_NOT_A_REFERENCE}", SECRET_HINT)
        if found:
            return None, Problem(file, line, col, masking.mask(f"input {name!r}: {found[0][0]}"), found[0][1])
        try:
            raw = expressions.render(raw, context)
        except (ExpressionError, StepError) as exc:  # StepError: a secret that is not set
            if secret and not SECRET_LOOKUP.fullmatch(raw.strip()):
                return None, Problem(file, line, col, f"input {name!r}: {SECRET_NOT_A_REFERENCE}", SECRET_HINT)
            return None, Problem(file, line, col, masking.mask(f"input {name!r}: {exc}"), exc.hint or "")
    if secret:
        masking.add_secret(raw)
    typed = coerce(spec, raw)
    problem = type_problem(name, spec, typed, raw)
    if problem:
        return None, Problem(file, line, col, masking.mask(problem), f"pass it as --set {name}=<{spec.type}>")
    if spec.enum is not None and typed not in spec.enum:
        got = "a secret value" if secret else short(typed)
        choices = "the values listed in the blueprint" if secret else short(spec.enum, 300)
        return None, Problem(file, line, col, masking.mask(f"input {name!r} must be one of {choices}, got {got}"))
    return typed, None


def _is_reference(value: Any) -> bool:
    """A secret input given as one whole ``${{ ... }}`` (``${{ secrets.db }}``): a reference, rendered. Anything
    else given for a secret input is the secret itself, taken as it is, even when it holds ``${{``."""
    return (
        isinstance(value, str)
        and expressions.EXPR_RE.fullmatch(value.strip()) is not None
        and (value.count("${{") == 1)
    )


def coerce(spec: InputSpec, value: Any) -> Any:
    """Text into the declared type, as YAML reads it (``--set port=2375`` gives an int)."""
    if not isinstance(value, str) or spec.type in ("string", "secret"):
        return value
    try:
        parsed = yamlpos.load(value).data
    except yamlpos.YAMLSyntaxError:
        return value
    if spec.type == "number" and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    return parsed


def _from_file(path: Path) -> dict[str, _Value]:
    try:
        text = yamlpos.read_text(path, "inputs file")
    except yamlpos.YAMLSyntaxError as exc:
        raise InputsError([Problem(str(path), exc.line, exc.column, str(exc), exc.hint or "")]) from None
    try:
        located = yamlpos.load(text)
    except yamlpos.YAMLSyntaxError as exc:
        raise InputsError([Problem(str(path), exc.line, exc.column, f"YAML syntax error: {exc}")]) from None
    loaded = located.data or {}
    if not isinstance(loaded, dict):
        raise InputsError([Problem(str(path), 1, 1, "an inputs file is a mapping of name: value")])
    values = {}
    for key, value in loaded.items():
        line, col = located.where((key,), key=True)
        if not isinstance(key, str):
            raise InputsError(
                [Problem(str(path), line, col, f"input names are text; {short(key)} is not", "quote the name")]
            )
        values[key] = _Value(value, (str(path), *located.where((key,))))
    return values


def _from_sets(items: tuple[str, ...] | list[str]) -> dict[str, _Value]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputsError([Problem("--set", 1, 1, f"--set {short(item)}: expected NAME=VALUE")])
        bad = _not_utf8(item)
        if bad is not None:
            raise InputsError(
                [Problem("--set", 1, bad + 1, f"--set {short(name)}: the value is not UTF-8", "pass UTF-8 text")]
            )
        values[name.strip()] = _Value(value, ("--set", 1, 1))
    return values


def _not_utf8(text: str) -> int | None:
    """Where the command line held a byte that is not UTF-8 (Python keeps it as a lone surrogate), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def _from_variable(document: Blueprint, variable: str | None, logger) -> dict[str, _Value]:
    """The site Variable's values that ``document`` declares.

    One site Variable serves every deployment of a site (gogs wants db_password, gogs-health does not), so a
    value the blueprint does not declare is ignored and named in the log; an unknown input given directly
    (``inputs``, ``--set``) is still an error.
    """
    if not variable:
        return {}
    from prefect.variables import Variable  # `vicflow plan` runs without Prefect: +2.2 s (python -X importtime)

    where = f"variable:{variable}"
    value = Variable.get(variable, default=None)
    if value is None:
        hint = 'create it: prefect variable set NAME \'{"docker_host": "tcp://..."}\''
        raise InputsError([Problem(where, 1, 1, f"Prefect Variable {variable!r} not found", hint)])
    site = json.loads(value) if isinstance(value, str) else dict(value)
    ignored = sorted(set(site) - set(document.inputs))
    if ignored:
        logger.info(
            "site Variable %r: %s not used by blueprint %r (it declares %s)",
            variable,
            ", ".join(ignored),
            document.name,
            ", ".join(sorted(document.inputs)) or "no inputs",
        )
    return {k: _Value(v, (where, 1, 1)) for k, v in site.items() if k in document.inputs}
