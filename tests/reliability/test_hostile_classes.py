"""Issue 27's classes of hostile input (tests/reliability/classes.py), drawn by hypothesis: every case ends
cleanly (our own located error or success, within the time, memory and output bounds, no traceback, nothing
printed raw, no secret in clear).

Each case runs in a forked child (a hang or a memory bomb is counted, not fatal). ``make test`` draws
CI_EXAMPLES per class; ``make fuzz`` (VICFLOW_FUZZ=full) 10,000 per class; ``make check``
(VICFLOW_FUZZ=quick) 30; VICFLOW_FUZZ_CASES sets any count.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.reliability import classes

CI_EXAMPLES = 100
EXAMPLES = int(
    os.environ.get("VICFLOW_FUZZ_CASES")
    or {"full": 10_000, "quick": 30}.get(os.environ.get("VICFLOW_FUZZ", ""), CI_EXAMPLES)
)


@pytest.fixture(autouse=True)
def no_server(monkeypatch, tmp_path):
    """Cases run the CLI as a user without a Prefect server would (a case that wants one sets its URL)."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(classes.Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("name", list(classes.CLASSES))
def test_every_case_of_the_class_ends_cleanly(name):
    seen = {"cases": 0, "worst": 0.0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.generate],  # no shrinking: every case is a process; the failing case's label says enough
    )
    @given(st.data())
    def check(data):
        case = classes.CLASSES[name](classes.hypothesis_draw(data))
        outcome = classes.isolated(case)
        seen["cases"] += 1
        seen["worst"] = max(seen["worst"], outcome.seconds)
        assert outcome.clean, f"{case.label}: {outcome.why}"
        assert outcome.markers == 0

    check()
    print(f"\n{name}: {seen['cases']} cases, 0 unclean, worst {seen['worst']:.2f} s")
