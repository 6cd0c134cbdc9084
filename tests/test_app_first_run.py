"""First run on a fresh checkout: navigation, "No model yet", one click to a background train job."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from app_pages._ui import KEY_JOB_PREFIX, TRAIN_BUTTON_LABEL
from tests.conftest import ROOT
from zeal_core.jobs import JobQueue
from zeal_core.models.registry import ModelRegistry

TIMEOUT_S = 120  # s per script run; the CPU is shared with other work


def texts(at: AppTest) -> str:
    """Every markdown, subheader and caption of the last run, joined (for 'is this on the page')."""
    parts = [element.value for element in (*at.markdown, *at.subheader, *at.caption, *at.title)]
    return "\n".join(str(part) for part in parts)


def test_app_navigation_lists_every_page_and_sidebar_status() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert at.title[0].value == "Zeal Drift Lab"  # Home is the default page
    sidebar = "\n".join(element.value for element in at.sidebar.markdown)
    assert "digits" in sidebar and "none yet" in sidebar and "cpu" in sidebar
    for page in ("app_pages/model.py", "app_pages/retrain.py", "app_pages/upload.py"):
        at.switch_page(page).run()
        assert not at.exception, page
        assert "No model yet" in texts(at) or at.info, page


def test_first_run_button_queues_one_train_job_and_shows_progress() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert "No model yet" in texts(at)
    button = next(b for b in at.button if b.label == TRAIN_BUTTON_LABEL)
    button.click().run()
    assert not at.exception
    queue = JobQueue()
    jobs = queue.list()
    try:
        assert [job.kind for job in jobs] == ["train"]
        assert jobs[0].params["dataset"] == "digits"
        assert at.session_state[KEY_JOB_PREFIX + "train"] == jobs[0].id
        # The page now polls the job instead of offering the button again, so no second job can start.
        assert all(b.label != TRAIN_BUTTON_LABEL for b in at.button)
        assert at.get("progress") or at.success or at.warning
        at.run()
        assert len(queue.list()) == 1
    finally:
        queue.cancel(jobs[0].id)
        queue.wait(jobs[0].id, timeout_s=60)


def test_finished_train_job_becomes_the_active_model() -> None:
    queue = JobQueue()
    job = queue.submit("train", {"dataset": "digits", "epochs": 1, "max_seconds": 2.0})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.session_state[KEY_JOB_PREFIX + "train"] = job.id
    at.run()
    deadline = time.monotonic() + 240
    while ModelRegistry().get_active() is None and time.monotonic() < deadline:
        assert not at.exception
        time.sleep(1.0)
        at.run()
    finished = queue.get(job.id)
    assert finished.status == "done", finished.error
    assert ModelRegistry().get_active() == finished.result["version"]
    at.run()
    assert "No model yet" not in texts(at)
    version = finished.result["version"]
    assert any(element.value == f"`{version}`" for element in at.markdown)  # Home's model card, in full
