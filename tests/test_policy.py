"""Blast radius and policy as code on plans (flows/governance): the shipped example policy, and broken policies as
located errors, never a silent allow. Pure logic: Rego evaluated by regopy, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from vicflow.flows.governance import blast_radius, policy

EXAMPLE = Path(__file__).resolve().parent.parent / "policies" / "example"


def firewall_rows(hosts: int, step: str = "firewall") -> list[dict]:
    return [
        {
            "step": step,
            "action": "update",
            "target": f"esx{i:02}",
            "detail": "vSPC: disabled -> enabled",
            "kind": "host_firewall",
        }
        for i in range(hosts)
    ]


def decide(rows: list[dict]) -> policy.Outcome:
    radius = blast_radius.of(rows)
    return policy.Policy(EXAMPLE).evaluate(policy.document("site", None, rows, radius.to_dict()))


def test_blast_radius_counts_distinct_targets_by_kind_and_lists_what_it_cannot_count():
    rows = [
        *firewall_rows(3),
        *firewall_rows(2, step="firewall-again"),  # the same two hosts: counted once
        {"step": "firewall", "action": "none", "target": "esx09", "detail": "already enabled", "kind": "host_firewall"},
        {"step": "vch", "action": "create", "target": "vch02", "detail": "vApp, endpoint VM", "kind": "vch"},
        {"step": "app", "action": "recreate", "target": "gogs/gogs", "detail": "image changed", "kind": "container"},
        {"step": "app", "action": "create", "target": "gogs/db", "detail": "no container yet", "kind": "container"},
        {"step": "app", "action": "create", "target": "gogs_data", "detail": "volume", "kind": "volume"},
        {"step": "down", "action": "delete", "target": "old_data", "detail": "volume (data is lost)", "kind": "volume"},
        {
            "step": "swap",
            "action": "update",
            "target": "harbor/docker-compose.yml",
            "detail": "image a -> b",
            "kind": "registry_image",
        },
        {
            "step": "swap",
            "action": "update",
            "target": "registry",
            "detail": "compose down + up",
        },  # no kind: not counted
        {"step": "web", "action": "unknown", "target": "web", "detail": "depends on outputs known after apply"},
        {"step": "check", "action": "error", "target": "check", "detail": "connection refused"},
    ]
    radius = blast_radius.of(rows)
    assert {k: v for k, v in radius.counts.items() if v} == {
        "esxi_hosts_firewall": 3,
        "vchs_created": 1,
        "containers_created": 1,
        "containers_replaced": 1,
        "volumes_created": 1,
        "volumes_removed": 1,
        "registry_images_swapped": 1,
    }
    assert radius.not_yet_known == ["web"] and radius.not_planned == ["check"]
    assert ("ESXi hosts whose firewall changes", "3") in radius.lines()
    assert ("known only after apply (a lower bound)", "web") in radius.lines()


def test_more_than_eight_hosts_firewalls_needs_approval_and_eight_do_not():
    nine = decide(firewall_rows(9))
    assert nine.decision == "require_approval"
    assert nine.messages == {"approval": ["9 ESXi hosts' firewalls would change (more than 8)"]}
    assert decide(firewall_rows(8)).decision == "allow"


def test_deleting_a_volume_store_is_denied_and_deny_wins_over_approval_and_warn():
    rows = [
        {"step": "rm", "action": "delete", "target": "vch02", "detail": "endpoint VM", "kind": "vch"},
        {
            "step": "rm",
            "action": "delete",
            "target": "ds/vols:default",
            "detail": "volume store",
            "kind": "volume_store",
        },
        {"step": "down", "action": "delete", "target": "gogs_data", "detail": "volume", "kind": "volume"},
    ]
    outcome = decide(rows)
    assert outcome.decision == "deny"
    assert outcome.lines() == [
        "deny: step rm would delete volume store ds/vols:default: never delete a volume store",
        "approval: step rm would delete VCH vch02",
        "warn: 1 volume(s) would be removed with their data",
    ]
    kept = [{**rows[1], "action": "none"}]  # vch_delete without force keeps its volume stores
    assert decide(kept).decision == "allow"


def test_a_warning_alone_lets_the_run_go_on():
    rows = [{"step": "down", "action": "delete", "target": "gogs_data", "detail": "volume", "kind": "volume"}]
    assert decide(rows).decision == "warn"


def test_a_policy_that_does_not_parse_is_an_error_at_its_file_line_and_column(tmp_path):
    (tmp_path / "ok.rego").write_text('package vicflow.plan\n\nimport rego.v1\n\nwarn contains "x" if true\n')
    bad = tmp_path / "bad.rego"
    bad.write_text(
        "package vicflow.plan\n\nimport rego.v1\n\ndeny contains msg if {\n  input.blast_radius.vchs_created >\n}\n"
    )
    with pytest.raises(policy.PolicyError) as caught:
        policy.Policy(tmp_path)
    assert str(caught.value).startswith(f"{bad}:6:35: ")
    assert caught.value.hint and "Rego v1" in caught.value.hint


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "no .rego file in it"),
        (
            {"other.rego": 'package site\n\nimport rego.v1\n\ndeny contains "x" if true\n'},
            "no file declares package vicflow.plan",
        ),
    ],
)
def test_an_empty_policy_or_one_without_the_package_is_an_error_not_an_allow(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(policy.PolicyError, match=message):
        policy.Policy(tmp_path)


def test_a_rule_that_is_not_a_set_of_messages_fails_evaluation_instead_of_allowing(tmp_path):
    (tmp_path / "p.rego").write_text(
        "package vicflow.plan\n\nimport rego.v1\n\ndeny := true if input.blast_radius.vchs_created > 0\n"
    )
    loaded = policy.Policy(tmp_path)
    with pytest.raises(policy.PolicyError, match="rule 'deny' must be a set of message strings"):
        loaded.evaluate(policy.document("site", None, [], {"vchs_created": 1}))


def test_a_rule_with_conflicting_values_fails_evaluation(tmp_path):
    (tmp_path / "p.rego").write_text(
        "package vicflow.plan\n\nimport rego.v1\n\nlimit := 1 if true\n\nlimit := 2 if true\n"
    )
    with pytest.raises(policy.PolicyError, match="could not be evaluated"):
        policy.Policy(tmp_path).evaluate(policy.document("site", None, [], {}))


def test_a_missing_policy_directory_is_an_error(tmp_path):
    with pytest.raises(policy.PolicyError, match="no such directory"):
        policy.Policy(tmp_path / "nope")


def test_a_result_regopy_cannot_read_back_is_a_policy_error_with_the_way_around_it(tmp_path):
    """regopy 1.5.2 (rego-cpp) returns sprintf("%s", [concat(", ", input...)]) with its quotes unescaped, and its
    own JSON parse fails: that is a PolicyError saying how to write the message, never an internal error. The
    example policy's not-yet-known warning is written the way around it."""
    (tmp_path / "site.rego").write_text(
        "package vicflow.plan\n\nimport rego.v1\n\n"
        'warn contains msg if { msg := sprintf("later: %s", [concat(", ", input.blast_radius.not_yet_known)]) }\n'
    )
    unknown = [{"step": "vch", "action": "unknown", "target": "vch", "detail": "known after firewall apply"}]
    radius = blast_radius.of(unknown).to_dict()
    with pytest.raises(policy.PolicyError, match="could not be read back from rego-cpp") as raised:
        policy.Policy(tmp_path).evaluate(policy.document("site", None, unknown, radius))
    assert 'concat("", [' in raised.value.hint
    outcome = policy.Policy(EXAMPLE).evaluate(policy.document("site", None, unknown, radius))
    assert outcome.decision == "warn"
    assert outcome.messages == {"warn": ["known only after apply, so not counted: vch"]}
