"""``http_request``: one HTTP call a deployment needs (a first-run form, an API call), made idempotent.

A ``when`` guard request decides whether the call is needed: Gogs answers ``GET /install`` with 200 only
until it is installed, so ``when: {url: .../install, status: [200]}`` makes the install a no-op on a second
run.  ``plan()`` asks the guard and says whether the call would be made.  Redirects are not followed (a 302
is an answer worth checking); the body is never logged, and secret values in it are masked by the engine
like everywhere else.
"""

from __future__ import annotations

import html
import re
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator
from vicflow.plugins import Change, PermanentError, StepContext, StepType, hookimpl
from vicflow.plugins.clients import http
from vicflow.plugins.paths import BlueprintFile
from vicflow.plugins.step import Params

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class Guard(BaseModel):
    """The call is needed when this request answers one of ``status`` (and matches ``body_regex``)."""

    model_config = ConfigDict(extra="forbid")
    url: str
    method: Method = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    status: list[int] = Field(default_factory=lambda: [200], description="statuses that mean 'the call is needed'")
    body_regex: str | None = Field(None, description="and the body matches this")


class HttpRequestParams(Params):
    method: Method = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    form: dict[str, str | int | float | bool] | None = Field(
        None, description="sent as application/x-www-form-urlencoded"
    )
    json_body: Any = Field(None, alias="json", description="sent as application/json")
    ca: BlueprintFile | None = Field(None, description="CA file that verifies an https URL")
    insecure: bool = Field(False, description="do not verify the certificate (logged as a warning)")
    expect_status: list[int] = Field(default_factory=lambda: [200], description="statuses that mean success")
    error_regex: str | None = Field(
        None, description="on an unexpected answer, the first group of this regex on the body is the error shown"
    )
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="name -> 'status', 'header:NAME' or 'json:a.b.0' taken from the response",
    )
    when: Guard | None = Field(None, description="make the call only when this request says it is needed")
    timeout_seconds: float = Field(30, gt=0, description="timeout of each request")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_body(self):
        if self.form is not None and self.json_body is not None:
            raise ValueError("give form or json, not both")
        for name, selector in self.outputs.items():
            if not (selector == "status" or selector.startswith(("header:", "json:"))):
                raise ValueError(f"output {name!r}: {selector!r} is not 'status', 'header:NAME' or 'json:PATH'")
        return self


class HttpRequest(StepType[HttpRequestParams]):
    """One HTTP request with expected statuses, outputs from the response, and an idempotence guard."""

    Params = HttpRequestParams
    outputs = {
        "called": "whether the request was made (false when the guard said it is not needed)",
        "status": "the status of the request (or of the guard when no call was made)",
        "values": "the outputs asked for, by name",
    }

    def plan(self, params: HttpRequestParams, ctx: StepContext) -> list[Change]:
        if params.when is None:
            return [Change("update", f"{params.method} {params.url}", "the request is made on every run")]
        needed, status = self._needed(params, ctx)
        if needed:
            return [Change("update", f"{params.method} {params.url}", f"needed: the guard answered {status}")]
        return [Change("none", f"{params.method} {params.url}", f"not needed: the guard answered {status}")]

    def apply(self, params: HttpRequestParams, ctx: StepContext) -> dict[str, Any]:
        if params.when is not None:
            needed, status = self._needed(params, ctx)
            if not needed:
                ctx.changed = False
                ctx.logger.info("%s %s not needed: %s answered %s", params.method, params.url, params.when.url, status)
                return {"called": False, "status": status, "values": {}}
        response = self._send(params, ctx, params.method, params.url, params.headers, body=True)
        if response.status_code not in params.expect_status:
            raise PermanentError(
                f"{params.method} {params.url} answered {response.status_code}, expected "
                f"{' or '.join(map(str, params.expect_status))}{_error_text(response, params.error_regex)}",
                "the message is the server's; fix the values the step sends, or expect_status",
            )
        ctx.logger.info("%s %s answered %s", params.method, params.url, response.status_code)
        return {"called": True, "status": response.status_code, "values": _extract(response, params.outputs)}

    def _needed(self, params: HttpRequestParams, ctx) -> tuple[bool, int]:
        guard = params.when
        if guard is None:  # no guard: the request is always needed
            return True, 0
        response = self._send(params, ctx, guard.method, guard.url, guard.headers, body=False)
        needed = response.status_code in guard.status
        if needed and guard.body_regex:
            needed = re.search(guard.body_regex, response.text) is not None
        return needed, response.status_code

    def _send(self, params, ctx, method: str, url: str, headers: dict, body: bool) -> requests.Response:
        if params.insecure:
            ctx.logger.warning("insecure: true: the certificate of %s is not verified", url)
        with http.session(params.ca if params.ca else not params.insecure) as session:
            return session.request(  # a refused or cut connection is a ConnectionLost: retried
                method,
                url,
                headers=headers,
                data=params.form if body else None,
                json=params.json_body if body else None,
                allow_redirects=False,
                timeout=ctx.remaining(params.timeout_seconds, params.timeout_seconds),
            )


def _error_text(response: requests.Response, regex: str | None) -> str:
    if regex:
        match = re.search(regex, response.text, re.S)
        if match:
            return f": {html.unescape(re.sub(r'<[^>]+>', '', match.group(1))).strip()[:500]}"
    return f": {response.text.strip()[:200]}" if "json" in response.headers.get("Content-Type", "") else ""


def _extract(response: requests.Response, selectors: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, selector in selectors.items():
        if selector == "status":
            values[name] = response.status_code
        elif selector.startswith("header:"):
            values[name] = response.headers.get(selector.removeprefix("header:"))
        else:
            try:
                value: Any = response.json()
            except ValueError:
                raise PermanentError(f"output {name!r}: the response is not JSON") from None
            for part in filter(None, selector.removeprefix("json:").split(".")):
                try:
                    value = value[int(part)] if isinstance(value, list) else value[part]
                except (KeyError, IndexError, ValueError, TypeError):
                    raise PermanentError(f"output {name!r}: {selector!r} is not in the response") from None
            values[name] = value
    return values


@hookimpl
def register_step_types(register):
    register("http_request", HttpRequest)
