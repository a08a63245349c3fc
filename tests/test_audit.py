"""The audit trail and the resume journal's seal (flows/governance): an edited or removed record is named."""

from __future__ import annotations

import json

import pytest
from vicflow.flows.governance import integrity
from vicflow.flows.governance.audit import AuditLog

KEY = b"audit-key-for-the-test"


def trail(tmp_path, secret=KEY) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl", secret=secret)
    log.append(
        "policy", "vicflow plan", "run-1", "full-stack", "a1b2c3d4e5f60718", detail={"decision": "require_approval"}
    )
    log.append("approval", "alice", "run-1", "full-stack", "a1b2c3d4e5f60718", comment="change window CHG-1")
    log.append("rejection", "bob", "run-2", "vch", "0f1e2d3c4b5a6978", comment="not today")
    log.append("resume", "carol", "run-3", "gogs", comment="resumes run-1")
    log.append("cancellation", "alice", "run-2", "vch")
    return log


def rewrite(log: AuditLog, edit) -> None:
    records = log.records()
    edit(records)
    log.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def test_an_untouched_trail_verifies_and_each_record_says_who_when_and_which_plan(tmp_path):
    log = trail(tmp_path)
    result = log.verify()
    assert result.ok and result.records == 5 and result.head == log.records()[-1]["hash"]
    approval = log.records()[1]
    assert {k: approval[k] for k in ("seq", "event", "who", "run_id", "plan_hash", "comment")} == {
        "seq": 2,
        "event": "approval",
        "who": "alice",
        "run_id": "run-1",
        "plan_hash": "a1b2c3d4e5f60718",
        "comment": "change window CHG-1",
    }
    assert approval["time"].endswith("Z") and approval["prev"] == log.records()[0]["hash"]


def test_an_edited_record_is_named(tmp_path):
    log = trail(tmp_path)
    rewrite(log, lambda records: records[1].update(who="mallory"))
    problems = log.verify().problems
    assert len(problems) == 1
    assert problems[0].startswith("record 2 (approval by mallory at ") and "was edited" in problems[0]


def test_an_edit_whose_hash_was_computed_again_without_the_key_is_found(tmp_path):
    log = trail(tmp_path)

    def forge(records):
        records[2]["comment"] = "approved after all"
        records[2]["hash"] = integrity.link(
            records[2]["prev"], {k: v for k, v in records[2].items() if k != "hash"}, None
        )

    rewrite(log, forge)
    problems = log.verify().problems
    assert problems[0].startswith("record 3 (rejection by bob at ") and "was edited" in problems[0]
    assert problems[1].startswith("record 4 (resume by carol at ") and "does not chain to record 3" in problems[1]


def test_a_removed_record_is_named_in_the_middle_and_at_the_end(tmp_path):
    log = trail(tmp_path)
    rewrite(log, lambda records: records.pop(2))
    assert log.verify().problems == [f"record 3 removed before {_described(log.records()[2])}: the chain is broken"]
    log = trail(tmp_path / "end")
    rewrite(log, lambda records: records.pop())
    assert log.verify().problems == ["record 5 was removed from the end (the head file says 5 records)"]


def _described(record) -> str:
    return f"record {record['seq']} ({record['event']} by {record['who']} at {record['time']}, run {record['run_id']})"


def test_a_trail_kept_with_a_key_does_not_verify_without_it(tmp_path):
    log = trail(tmp_path)
    problems = AuditLog(log.path, secret=b"").verify().problems
    assert len(problems) == 5 and "chained with hmac-sha256, and VICFLOW_AUDIT_KEY is not set here" in problems[0]


def test_secrets_never_reach_the_trail(tmp_path):
    from vicflow.plugins import masking

    masking.add_secret("s3cret-comment-value")
    log = AuditLog(tmp_path / "audit.jsonl", secret=KEY)
    log.append("approval", "alice", comment="password is s3cret-comment-value")
    assert "s3cret-comment-value" not in log.path.read_text() and log.verify().ok


JOURNAL = {
    "blueprint": "gogs",
    "path": "/srv/blueprints/gogs.yaml",
    "state": "failed",
    "outputs": {},
    "steps": {
        "app": {"state": "completed", "params_hash": "aa11", "outputs": {"project": "gogs"}},
        "first_run": {"state": "completed", "params_hash": "bb22", "outputs": {"status": 302}},
        "web": {"state": "failed", "params_hash": "cc33", "outputs": {}},
    },
}


def test_a_sealed_journal_resumes_and_a_tampered_one_is_refused_naming_the_step():
    sealed = integrity.seal_journal(JOURNAL, KEY)
    integrity.check_journal(json.loads(json.dumps(sealed)), "7dfe00b0", KEY)  # as stored and read back

    edited = json.loads(json.dumps(sealed))
    edited["steps"]["first_run"]["state"] = "completed"
    edited["steps"]["web"]["state"] = "completed"  # "web completed": a resume would skip it
    with pytest.raises(
        integrity.TamperedError, match="the journal of run 7dfe00b0 was edited: the entry of step 'web'"
    ):
        integrity.check_journal(edited, "7dfe00b0", KEY)

    removed = json.loads(json.dumps(sealed))
    del removed["steps"]["app"]
    with pytest.raises(integrity.TamperedError, match="step 'app' was removed from it"):
        integrity.check_journal(removed, "7dfe00b0", KEY)

    removed_with_its_link = json.loads(json.dumps(sealed))
    del removed_with_its_link["steps"]["app"], removed_with_its_link["seal"]["steps"]["app"]
    with pytest.raises(integrity.TamperedError, match="its blueprint, state, outputs or steps"):
        integrity.check_journal(removed_with_its_link, "7dfe00b0", KEY)

    older = json.loads(json.dumps(sealed))
    del older["seal"]["form"]  # sealed by a vicflow that chained the steps' links
    with pytest.raises(integrity.TamperedError, match=r"sealed by an earlier vicflow \(seal form 1, this one reads"):
        integrity.check_journal(older, "7dfe00b0", KEY)

    unsealed = {k: v for k, v in sealed.items() if k != "seal"}
    with pytest.raises(integrity.TamperedError, match="has no seal"):
        integrity.check_journal(unsealed, "7dfe00b0", KEY)

    other_path = {**json.loads(json.dumps(sealed)), "path": "/tmp/evil.yaml"}
    with pytest.raises(integrity.TamperedError, match="its blueprint, state, outputs or steps"):
        integrity.check_journal(other_path, "7dfe00b0", KEY)


def test_a_seal_kept_step_by_step_is_the_seal_of_the_whole_journal():
    """A run seals its journal at each step's end, only the entry that changed again (integrity.Seal): each seal
    is the one the whole journal has, in any order the steps end, and an edit of a saved journal is refused."""
    seal = integrity.Seal(KEY)
    pending = {"state": "pending", "params_hash": None, "outputs": {}}
    journal = {**JOURNAL, "state": "running", "steps": {step: dict(pending) for step in JOURNAL["steps"]}}
    saved = seal.update(journal)
    for step_id in ("web", "app", "first_run"):  # not in the seal's order (by step id)
        journal["steps"][step_id] = JOURNAL["steps"][step_id]
        saved = json.loads(json.dumps(seal.update(journal, {step_id})))  # as stored and read back
        assert saved["seal"] == integrity.seal_journal(journal, KEY)["seal"]
        integrity.check_journal(saved, "7dfe00b0", KEY)
    journal["state"] = "failed"  # the run's end: no step changed
    assert seal.update(journal, set())["seal"] == integrity.seal_journal(JOURNAL, KEY)["seal"]

    edited = json.loads(json.dumps(seal.update(journal, set())))
    edited["steps"]["web"]["state"] = "completed"
    with pytest.raises(integrity.TamperedError, match="was edited: the entry of step 'web'"):
        integrity.check_journal(edited, "7dfe00b0", KEY)


def test_a_journal_resealed_without_the_key_is_refused():
    forged = integrity.seal_journal({**JOURNAL, "state": "completed"}, None)
    with pytest.raises(integrity.TamperedError, match="sealed with sha256, and VICFLOW_AUDIT_KEY is set here"):
        integrity.check_journal(forged, "7dfe00b0", KEY)
