"""The Install form as go-macaron/binding fills and checks it, and Gogs' validate() words the first error.

The struct is pkg/form/user.go (0.11.19) / internal/form/user.go (0.13.4): field order, kinds and rules below are
theirs.  Filling (binding.go mapForm/setWithProperType, vendored 2016 rev at 0.11.19, v1.2.0 at 0.13.4) takes the
first value of each key; a text that is no integer or boolean leaves the zero value and no error Gogs sees
(0.11.19's binding loses the error: mapForm appends to a copy; 0.13.4's keeps it in binding.Errors, but Gogs'
validate() only gets validateStruct's errors and InstallPost only asks c.HasError()).  So ``ssh_port=abc``
installs with SSH disabled (SSHPort 0), in both releases.

Checking (binding.go validateStruct/validateField) goes field by field, rule by rule; Gogs' validate()
(pkg/form/form.go, internal/form/form.go) words only the first error: the field's locale name (its ``locale``
tag, else ``form.<GoName>``) followed by the rule's message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .messages import tr
from .release import Release

# binding.go AlphaDashDotPattern `[^\d\w-_\.]`: Go's RE2 \d and \w are ASCII only
_ALPHA_DASH_DOT = re.compile(r"[^0-9A-Za-z_\-.]")
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.ParseInt(s, 10, 64)
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # strconv.ParseBool; "on" is binding's own
_INT64 = 2**63


@dataclass(frozen=True)
class Field:
    go: str  # the Go field name (errors name it; the form name is binding's SetNameMapper(com.ToSnakeCase))
    form: str
    kind: str = "string"  # string | int | bool
    rules: tuple[str, ...] = ()
    locale: str = ""


_DB = (
    Field("DbType", "db_type", rules=("Required",)),
    Field("DbHost", "db_host"),
    Field("DbUser", "db_user"),
    Field("DbPasswd", "db_passwd"),
    Field("DbName", "db_name"),
)
_DB_TAIL = (Field("SSLMode", "ssl_mode"), Field("DbPath", "db_path"))
_GENERAL = (
    Field("AppName", "app_name", rules=("Required",), locale="install.app_name"),
    Field("RepoRootPath", "repo_root_path", rules=("Required",)),
    Field("RunUser", "run_user", rules=("Required",)),
    Field("Domain", "domain", rules=("Required",)),
    Field("SSHPort", "ssh_port", kind="int"),
    Field("UseBuiltinSSHServer", "use_builtin_ssh_server", kind="bool"),
    Field("HTTPPort", "http_port", rules=("Required",)),
    Field("AppUrl", "app_url", rules=("Required",)),
    Field("LogRootPath", "log_root_path", rules=("Required",)),
    Field("EnableConsoleMode", "enable_console_mode", kind="bool"),
)
_OPTIONAL = (
    Field("SMTPHost", "smtp_host"),
    Field("SMTPFrom", "smtp_from"),
    Field("SMTPUser", "smtp_user", rules=("OmitEmpty", "MaxSize(254)"), locale="install.mailer_user"),
    Field("SMTPPasswd", "smtp_passwd"),
    Field("RegisterConfirm", "register_confirm", kind="bool"),
    Field("MailNotify", "mail_notify", kind="bool"),
    Field("OfflineMode", "offline_mode", kind="bool"),
    Field("DisableGravatar", "disable_gravatar", kind="bool"),
    Field("EnableFederatedAvatar", "enable_federated_avatar", kind="bool"),
    Field("DisableRegistration", "disable_registration", kind="bool"),
    Field("EnableCaptcha", "enable_captcha", kind="bool"),
    Field("RequireSignInView", "require_sign_in_view", kind="bool"),
    Field("AdminName", "admin_name", rules=("OmitEmpty", "AlphaDashDot", "MaxSize(30)"), locale="install.admin_name"),
    Field("AdminPasswd", "admin_passwd", rules=("OmitEmpty", "MaxSize(255)"), locale="install.admin_password"),
    Field("AdminConfirmPasswd", "admin_confirm_passwd"),
    Field(
        "AdminEmail",
        "admin_email",
        rules=("OmitEmpty", "MinSize(3)", "MaxSize(254)", "Include(@)"),
        locale="install.admin_email",
    ),
)
# 0.13.4 adds DbSchema after DbName and DefaultBranch after EnableConsoleMode (internal/form/user.go)
FIELDS = {
    "0.11.19": _DB + _DB_TAIL + _GENERAL + _OPTIONAL,
    "0.13.4": _DB
    + (Field("DbSchema", "db_schema"),)
    + _DB_TAIL
    + _GENERAL
    + (Field("DefaultBranch", "default_branch"),)
    + _OPTIONAL,
}
_ZERO: dict[str, Any] = {"string": "", "int": 0, "bool": False}


def fill(release: Release, posted: Mapping[str, list[str]]) -> dict[str, Any]:
    """mapForm: each field from the first value of its key, converted as setWithProperType does."""
    values: dict[str, Any] = {}
    for field in FIELDS[release.version]:
        given = posted.get(field.form)
        values[field.form] = _convert(field.kind, given[0]) if given else _ZERO[field.kind]
    return values


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        text = text or "0"
        if _GO_INT.fullmatch(text) and -_INT64 <= int(text) < _INT64:
            return int(text)
        return 0  # "Value could not be parsed as integer": an error Gogs never shows (see the module's doc)
    if kind == "bool":
        return text == "on" or text in _GO_TRUE
    return text


def first_error(release: Release, values: Mapping[str, Any]) -> str | None:
    """validateStruct then Gogs' validate(): the message of the first rule a field breaks, or None."""
    for field in FIELDS[release.version]:
        broken = _broken_rule(field, values[field.form])
        if broken:
            name = tr(release, field.locale) if field.locale else tr(release, f"form.{field.go}")
            return name + _rule_message(release, *broken)
    return None


def _broken_rule(field: Field, value: Any) -> tuple[str, str] | None:
    """(rule, its argument) of the first rule ``value`` breaks; the rest of a field's rules are skipped then."""
    for rule in field.rules:
        name, _, arg = rule.partition("(")
        arg = arg.rstrip(")")
        if name == "OmitEmpty" and value == _ZERO[field.kind]:
            return None
        if _breaks(name, arg, value, field.kind):
            return name, arg
    return None


def _breaks(name: str, arg: str, value: Any, kind: str) -> bool:
    text = str(value)
    if name == "Required":
        return value == _ZERO[kind]
    if name == "AlphaDashDot":
        return _ALPHA_DASH_DOT.search(text) is not None
    if name == "MaxSize":
        return len(text) > int(arg)  # utf8.RuneCountInString
    if name == "MinSize":
        return len(text) < int(arg)
    if name == "Include":
        return arg not in text
    return False


_RULE_KEYS = {
    "Required": "form.require_error",
    "AlphaDashDot": "form.alpha_dash_dot_error",
    "MaxSize": "form.max_size_error",
    "MinSize": "form.min_size_error",
    "Include": "form.include_error",
}


def _rule_message(release: Release, rule: str, arg: str) -> str:
    key = _RULE_KEYS[rule]
    return tr(release, key, arg) if "%s" in tr(release, key) else tr(release, key)
