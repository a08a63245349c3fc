"""The blueprint's models (pydantic): inputs, steps, retries; their JSON Schema and the type rules of inputs."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, WithJsonSchema, field_validator
from vicflow.flows.language import expressions
from vicflow.flows.language.problems import short

ID_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


INPUT_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "list": list,
    "object": dict,
    "secret": str,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(Strict):
    type: Literal["string", "integer", "number", "boolean", "list", "object", "secret"] = "string"
    description: str = ""
    default: Any = None
    required: bool | None = Field(None, description="default: required when there is no default")
    enum: list[Any] | None = None

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class Backoff(Strict):
    """Exponential delays: base * factor**n, capped at max, each spread by +/- jitter (a fraction)."""

    base: float = Field(1.0, ge=0)
    factor: float = Field(2.0, ge=1)
    max: float = Field(300.0, ge=0)
    jitter: float = Field(0.0, ge=0, le=1)


class Approval(Strict):
    """A human "yes" before the step: the run publishes the plan of the step and of what depends on it,
    pauses, and applies only that plan."""

    message: str = Field("apply this plan?", description="what the approver is asked, shown with the plan")
    timeout_seconds: float = Field(3600, gt=0, description="no answer by then cancels the run")


class StepSpec(Strict):
    id: str = Field(pattern=ID_RE, description="letters, digits and _; referenced as steps.<id>")
    uses: str = Field(description="a registered step type (vicflow plugins lists them)")
    name: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: Annotated[  # one id or a list of them (the validator makes it a list)
        list[str],
        WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
    ] = Field(default_factory=list)
    if_: str | bool | None = Field(None, alias="if")
    for_each: str | list[Any] | None = None
    max_parallel: int = Field(4, ge=1, le=256, description="concurrency bound of a for_each fan-out")
    retries: int = Field(0, ge=0, le=100)
    retry_delay_seconds: float | list[float] | Backoff = 0
    timeout_seconds: float | None = Field(None, gt=0)
    approval: Approval | None = Field(
        None, description="pause for a human approval of this step's plan (and of the steps that depend on it)"
    )
    on_failure: Literal["rollback", "keep", "continue"] = Field(
        "rollback",
        description="rollback: undo completed steps; keep: fail without undoing; continue: tolerate",
    )
    on: Literal["process", "pool"] = Field(
        "process",
        description="uses: blueprint:NAME only. process: a subflow here; pool: a child flow run on the work pool",
    )

    _where: tuple = PrivateAttr(("steps", 0))  # its place in the file (section, index): problems point there

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Blueprint(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="lower-case letters, digits and -")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    target: str | None = Field(
        None,
        description="what runs must not touch at the same time, e.g. ${{ inputs.docker_host }}/gogs; "
        "runs with the same rendered target queue behind each other (default: the blueprint name)",
    )
    on_error: list[StepSpec] = Field(
        default_factory=list,
        description="steps that run when the run fails, after the rollback; they see ${{ run.error }} and "
        "${{ run.failed_step }}",
    )
    finally_: list[StepSpec] = Field(
        default_factory=list, alias="finally", description="steps that run at the end of every run"
    )
    defaults: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per step type, with: values every step of that type gets; a step's own with: keys win",
    )
    outputs: dict[str, Any] = Field(
        default_factory=dict,
        description="the run's results, e.g. url: http://${{ steps.vch.outputs.client_ip }}:10080 "
        "(rendered at the end, shown in the summary, returned by the flow)",
    )
    path: str | None = Field(None, exclude=True)
    _input_places: dict[str, tuple[int, int]] = PrivateAttr(default_factory=dict)  # name -> line, column
    _child_types: dict[str, Any] = PrivateAttr(default_factory=dict)  # step id -> type (uses: blueprint:...)
    _located: Any = PrivateAttr(None)  # the positions of the file's values (yamlpos.Located, without its data)

    def place(self, path: tuple) -> tuple[int, int]:
        """The line and column of the value at ``path`` in the file (or of its closest parent)."""
        return self._located.where(path) if self._located is not None else (1, 1)

    def input_place(self, name: str) -> tuple[int, int]:
        """Where input ``name`` is declared in the file (a missing value points there)."""
        return self._input_places.get(name, (1, 1))

    def step_type(self, step_id: str, step_types: dict[str, Any]) -> Any:
        """The type of step ``step_id``: a registered one, or the child blueprint a ``uses: blueprint:`` runs."""
        return self._child_types.get(step_id) or step_types.get(self.step(step_id).uses)

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in itertools.chain(self.steps, self.on_error, self.finally_) if s.id == step_id)

    @property
    def all_steps(self) -> list[StepSpec]:
        """steps, then on_error, then finally: every step a run may start."""
        return [*self.steps, *self.on_error, *self.finally_]


def if_expression(condition: str | bool | None):
    """``if:`` as the engine evaluates it: a bare string is an expression."""
    if isinstance(condition, str) and "${{" not in condition:
        return "${{ " + condition + " }}"
    return condition


def dependencies(step: StepSpec) -> list[str]:
    """Explicit ``needs`` plus every step whose outputs the step references."""
    deps = list(step.needs)
    try:
        for chain in expressions.references([step.with_, if_expression(step.if_), step.for_each]):
            if chain[0] == "steps" and len(chain) > 1 and chain[1] not in deps:
                deps.append(chain[1])
    except expressions.ExpressionError:
        pass  # reported by check_references
    return deps


def type_problem(name: str, spec: InputSpec, value: Any, given: Any = None) -> str | None:
    expected = INPUT_TYPES[spec.type]
    wrong_number = spec.type in ("integer", "number") and isinstance(value, bool)
    if spec.type != "secret" and (not isinstance(value, expected) or wrong_number):
        shown = "the secret value" if spec.type == "secret" else short(value if given is None else given)
        article = "an" if spec.type[0] in "aeiou" else "a"
        return f"input {name!r} must be {article} {spec.type}, got {shown}"
    return None


def json_schema(step_types: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of blueprints (``vicflow schema``), for editors' completion and checks.

    With ``step_types`` (name -> StepType), ``uses`` is one of them and each step's ``with:`` is checked
    against its type's Params (an if/then per type): unknown keys and wrong types are marked, required ones
    are not (``defaults:`` may give them). A parameter may always be a ``${{ }}`` expression."""
    schema = Blueprint.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vicflow blueprint"
    schema.get("properties", {}).pop("path", None)
    if step_types:
        step = schema["$defs"]["StepSpec"]
        uses = step["properties"]["uses"]
        uses["anyOf"] = [
            {"enum": sorted(step_types)},
            {"type": "string", "pattern": "^blueprint:.+", "description": "another blueprint (shipped name or file)"},
        ]
        step["allOf"] = [_with_schema(name, cls.Params, schema["$defs"]) for name, cls in sorted(step_types.items())]
    return schema


EXPRESSION = {"type": "string", "pattern": r"\$\{\{", "description": "a ${{ }} expression, rendered at run time"}


def _with_schema(name: str, params: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    """if uses is ``name`` then with: is ``params`` (its nested models under ``defs``, prefixed with ``name``)."""
    model = params.model_json_schema(by_alias=True, ref_template=f"#/$defs/{name}.{{model}}")
    for key, nested in model.pop("$defs", {}).items():
        defs[f"{name}.{key}"] = nested
    properties = {k: {"anyOf": [v, EXPRESSION]} for k, v in model.get("properties", {}).items()}
    # no "required": a blueprint's defaults: may give what a step's with: leaves out
    with_ = {"type": "object", "properties": properties, "additionalProperties": False}
    return {"if": {"properties": {"uses": {"const": name}}}, "then": {"properties": {"with": with_}}}
