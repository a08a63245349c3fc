"""Gogs' English messages, from conf/locale/locale_en-US.ini at each tag, and i18n's Tr.

go-ini drops the backquotes of a value such as `` ` cannot be empty.` ``.  Tr (vendor/github.com/Unknwon/i18n/
i18n.go, the same in 0.13) looks ``section.key`` up; a key the locale does not have comes back without its
section, which is why a form field with no locale name shows as its Go name ("DbType cannot be empty.").
"""

from __future__ import annotations

from .release import Release

# Keys whose text is the same at both tags.
_COMMON = {
    "install.install": "Installation",
    "install.title": "Install Steps For First-time Run",
    "install.app_name": "Application Name",
    "install.admin_name": "Username",
    "install.admin_password": "Password",
    "install.admin_email": "Admin Email",
    "install.mailer_user": "Sender Email",
    "install.err_empty_db_path": "SQLite3 database path cannot be empty.",
    "install.no_admin_and_disable_registration": "You cannot disable registration without creating an admin account.",
    "install.err_empty_admin_password": "Admin password cannot be empty.",
    "install.sqlite3_not_available": "Your release version does not support SQLite3, please download the official "
    "binary version from %s, NOT the gobuild version.",
    "install.invalid_db_setting": "Database setting is not correct: %v",
    "install.invalid_repo_path": "Repository root path is invalid: %v",
    "install.invalid_log_root_path": "Log root path is invalid: %v",
    "install.run_user_not_match": "Run user isn't the current user: %s -> %s",
    "install.invalid_admin_setting": "Admin account setting is invalid: %v",
    "install.install_success": "Welcome! We're glad that you chose Gogs, have fun and take care.",
    "form.AdminEmail": "Admin email",
    "form.require_error": " cannot be empty.",
    "form.min_size_error": " must contain at least %s characters.",
    "form.max_size_error": " must contain at most %s characters.",
    "form.email_error": " is not a valid email address.",
    "form.url_error": " is not a valid URL.",
    "form.include_error": " must contain substring '%s'.",
    "form.unknown_error": "Unknown error:",
    "form.password_not_match": "Password and confirm password are not same.",
    "page": "Page",
    "template": "Template",
    "website": "Website",
}

_TEXTS = {
    "0.11.19": {
        **_COMMON,
        "version": "Version",  # the footer's "Version: ..."; gone from the 0.13 locale with the footer version
        "install.test_git_failed": "Fail to test 'git' command: %v",
        "install.smtp_host_missing_port": "SMTP Host is missing port in address.",
        "install.save_config_failed": "Fail to save configuration: %v",
        "form.alpha_dash_error": " must be valid alpha or numeric or dash(-_) characters.",
        "form.alpha_dash_dot_error": " must be valid alpha or numeric or dash(-_) or dot characters.",
        "form.size_error": " must be size %s.",
    },
    "0.13.4": {
        **_COMMON,
        "install.test_git_failed": "Failed to test 'git' command: %v",
        "install.smtp_host_missing_port": "SMTP Host port missing from address.",
        "install.save_config_failed": "Failed to save configuration: %v",
        "install.init_failed": "Failed to initialize application: %v",
        "form.alpha_dash_error": " must be alphanumeric or dash(-_) characters.",
        "form.alpha_dash_dot_error": " must be alphanumeric or dash(-_) or dot characters.",
        "form.size_error": " size must be %s.",
    },
}


def tr(release: Release, key: str, *args: object) -> str:
    """i18n.Tr: the message for ``key`` (or the key without its section), formatted like Go's Sprintf."""
    text = _TEXTS[release.version].get(key, key.partition(".")[2] or key)
    if args:
        text = text.replace("%v", "%s") % tuple(str(a) for a in args)
    return text
