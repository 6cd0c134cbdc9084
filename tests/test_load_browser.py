"""Many users at once (``benchmarks.load``): five Chromium sessions on one server plus queued retrains.

Each user moves its own Drift Lab slider (one step at a time, then a fast burst of key presses) while a
sixth clicks Retrain twice. Checked: every page ends on its own slider's spec (no stale answer from an
earlier key press) with the drifted accuracy this process computes for that spec, no page shows an
exception, the health endpoint always answers, the two retrain jobs run one after the other and both
versions land in the registry, loadable, as children of the seeded model. Timings are reported by
``python -m benchmarks load``, never asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.app import CHROMIUM
from benchmarks.load import percentile, run, summary

pytestmark = pytest.mark.browser


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.95) == pytest.approx(4.8)
    assert percentile(values, 1.0) == 5.0
    assert summary([])["count"] == 0


@pytest.mark.timeout(1200)  # s: five browsers, a server and two retrains on 2 shared cores
def test_five_users_and_queued_retrains_each_get_their_own_answers() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    result = run(sessions=5, steps=2, burst=4, retrains=2, n=50)
    assert result["ok"], "\n".join(result["problems"])
    users = result["users"]
    assert len(users) == 5
    assert len({user["shown_spec"] for user in users}) == 5  # five different views, none mixed up
    assert all(user["shown_spec"] == user["expected_spec"] for user in users)
    assert all(user["shown_accuracy"] == user["expected_accuracy"] for user in users)
    assert result["drift_check_under_load"]["count"] == 5 * 2
    assert [job["status"] for job in result["jobs"]["jobs"]] == ["done", "done"]
    assert result["jobs"]["versions"] == 3  # the seeded model and one per retrain
    assert result["health"]["failures"] == 0 and result["health"]["count"] > 0


@pytest.mark.parametrize("counts", ["abc", "0,2", ""])
def test_a_bad_curve_is_a_user_error_not_a_problem_found(counts: str) -> None:
    """Exit 2 with one line (1 means the scenario found problems)."""
    from benchmarks._actions import build_parser
    from zeal_core.cli import run

    assert run(build_parser(), ["load", "--curve", counts or ",", "--json"]) == 2
