"""Many users at once: concurrent Chromium sessions on one app server, with retrain jobs running beside them.

Usage: ``python -m benchmarks load [--sessions 5] [--steps 4] [--burst 3] [--retrains 2] [--json]``
(exit code 1 when a check failed; the reasons are in ``problems``)

Starts ``streamlit run app.py`` with its own temporary data, models and state folders (a small digits model
is trained into them first), then drives Debian's Chromium with Playwright, one browser context (its own
cookies, its own Streamlit session) per user:

- each of ``sessions`` users opens the Drift Lab on a corruption and seed of its own, then moves its
  severity slider ``steps`` times, one key press at a time, and times each *drift check*: from the key press
  to the page showing the new spec's results with the script idle;
- then presses the key ``burst`` times without waiting (a fast drag) and checks that the page settles on
  the slider's final value, never on an intermediate one (a stale answer), and still shows it 2 s later;
- meanwhile one more user clicks Retrain ``retrains`` times on the Retrain page (the jobs must queue and run
  one after another in the worker process), and a thread polls the server's health endpoint.

Every user arrives at the same moment on a fresh server, the case that once made most of them fail with
"cannot import name '_lab' from 'pages'" (a rerun raised inside an import; pages now live in app_pages/).
Afterwards every user's page must show app.py's sidebar and its own spec, and its drifted accuracy must
equal the one computed in this process for that spec; the registry must list every new version, each
loadable and a child of the seeded model. The result holds the correctness checks (``ok`` and
``problems``) and the timings: p50/p95/max
of a drift check under load, of a health check, and the same drift check measured alone (a baseline, after
the load, in the same server and browser).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, seed_model, start_app, stop_app
from zeal_core.errors import ConfigError

# Cheap corruptions, one per user, so that every user's answers differ from the others'.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "contrast", "brightness", "saturate",
               "jpeg_compression", "pixelate")
START_SEVERITY = 1.0  # severity each user starts from; a key press moves the slider by 0.25
SEVERITY_STEP = 0.25  # the Drift Lab's slider step
WAIT_S = 600.0  # s allowed for any one wait (a loaded 2-core machine is slow, a hung one is a failure)
HEALTH_EVERY_S = 0.25  # s between health probes
CLICK_WAIT_S = 120.0  # s for a Retrain click to show up as a queued job
BURST_SETTLE_S = 2.0  # s a page must keep showing the burst's last value (no stale rerun replacing it)


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0-1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    """Count, p50, p95 and max of some timings (seconds, rounded to ms)."""
    return {"count": len(values), "p50_s": round(percentile(values, 0.5), 3),
            "p95_s": round(percentile(values, 0.95), 3), "max_s": round(max(values, default=float("nan")), 3)}


def spec_text(corruption: str, severity: float) -> str:
    """The Drift Lab's spec text for one corruption on every image (fraction 1 is left out)."""
    return f"{corruption}:{severity:g}"


class HealthProbe(threading.Thread):
    """Polls ``/_stcore/health`` in the background and keeps every answer's latency (a failure counts)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/_stcore/health"
        self.latencies: list[float] = []
        self.failures = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            begin = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    response.read()
                self.latencies.append(time.monotonic() - begin)
            except OSError:
                self.failures += 1
            self.stopped.wait(HEALTH_EVERY_S)


async def _script_idle(page: Any, settle_s: float = 0.3) -> None:
    """Until the app's script has not been running for ``settle_s`` seconds."""
    deadline = time.monotonic() + WAIT_S
    quiet_since = None
    running = page.locator('[data-testid="stApp"][data-test-script-state="running"]')
    while time.monotonic() < deadline:
        if await running.count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the app kept running for {WAIT_S:.0f} s")


async def _shown_spec(page: Any) -> str:
    """The spec the Drift Lab's results are for (the code span of the "Drift spec" caption)."""
    box = page.locator('[data-testid="stCaptionContainer"]', has_text="Drift spec").locator("code").first
    return (await box.inner_text()).strip() if await box.count() else ""


async def _drifted_accuracy(page: Any) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text="Drifted accuracy")
    return (await metric.locator('[data-testid="stMetricValue"]').inner_text()).strip()


async def _wait_for_spec(page: Any, expected: str) -> None:
    """Until the page shows the results for ``expected`` and its script is idle.

    Raises:
        RuntimeError: The page shows an exception instead (at once, not after ``WAIT_S``).
        TimeoutError: Neither within ``WAIT_S`` seconds.
    """
    deadline = time.monotonic() + WAIT_S
    error = page.locator('[data-testid="stException"]')
    while time.monotonic() < deadline:
        if await error.count():
            text = " ".join((await error.first.inner_text()).split())
            raise RuntimeError(f"the Drift Lab shows an exception instead of {expected!r}: {text[:300]}")
        if await _shown_spec(page) == expected:
            await _script_idle(page, settle_s=0.05)
            if await _shown_spec(page) == expected:  # a queued rerun may have replaced it meanwhile
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the Drift Lab did not show {expected!r} within {WAIT_S:.0f} s "
                       f"(it shows {await _shown_spec(page)!r})")


async def _slider_value(page: Any, corruption: str) -> float:
    slider = page.locator(f'input[type="range"][aria-label="{corruption} severity"]')
    await _one_left(slider)  # a full rerun (the curves arriving) briefly shows the old slider beside the new
    return float(await slider.input_value())


async def _user(browser: Any, url: str, user: int, corruption: str, n: int, steps: int, burst: int,
                record: dict[str, Any]) -> None:
    """One Drift Lab user: open, ``steps`` timed single steps, then a burst of ``burst`` key presses."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    severity = START_SEVERITY
    begin = time.monotonic()
    await page.goto(f"{url}/drift_lab?spec={spec_text(corruption, severity)}&n={n}&seed={record['seed']}")
    await _wait_for_spec(page, spec_text(corruption, severity))
    record["cold_s"] = time.monotonic() - begin
    # app.py's sidebar status: absent when a fresh server ran the page file on its own (old app_pages/ mode).
    record["through_app"] = await page.locator('[data-testid="stSidebar"]').get_by_text("Device:").count() > 0
    slider = page.locator(f'input[type="range"][aria-label="{corruption} severity"]')
    for _ in range(steps):
        severity += SEVERITY_STEP
        await _one_left(slider)
        await slider.focus()
        begin = time.monotonic()
        await page.keyboard.press("ArrowRight")
        await _wait_for_spec(page, spec_text(corruption, severity))
        record["checks_s"].append(time.monotonic() - begin)
    await _one_left(slider)
    await slider.focus()
    for _ in range(burst):  # a fast drag: every press asks for a rerun while the last one still runs
        await page.keyboard.press("ArrowRight")
        severity += SEVERITY_STEP
    record["expected_spec"] = spec_text(corruption, severity)
    try:  # the page must end on the last value; a stale rerun finishing later would replace it
        await _wait_for_spec(page, record["expected_spec"])
        await asyncio.sleep(BURST_SETTLE_S)
    except TimeoutError:
        pass
    record["final_slider"] = await _slider_value(page, corruption)
    record["shown_spec"] = await _shown_spec(page)
    record["shown_accuracy"] = await _drifted_accuracy(page)
    record["url"] = page.url
    record["exceptions"] = await page.locator('[data-testid="stException"]').count()
    record["page"] = page


async def _one_left(locator: Any) -> None:
    """Until exactly one element matches ``locator`` (stale copies of a rerun gone, the new one drawn)."""
    deadline = time.monotonic() + WAIT_S
    while await locator.count() != 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{await locator.count()} elements still match {locator} after {WAIT_S:.0f} s")
        await asyncio.sleep(0.05)


async def _retrain_form_state(page: Any) -> dict[str, Any]:
    """What the Retrain page showed when a click queued no job: the spec box and any messages."""
    box = page.get_by_role("textbox", name="Drift spec")
    alerts = page.locator('[data-testid="stAlert"]')
    return {"spec_box": await box.input_value() if await box.count() else None,
            "messages": [" ".join(text.split())[:200] for text in await alerts.all_inner_texts()]}


def _retrain_jobs() -> int:
    """Retrain jobs in the server's job folder (this process points at the same state folder)."""
    from zeal_core.jobs import JobQueue

    return sum(job.kind == "retrain" for job in JobQueue().list())


async def _retrainer(browser: Any, url: str, retrains: int, record: dict[str, Any]) -> None:
    """One Retrain-page user who clicks Retrain ``retrains`` times (the jobs queue behind each other).

    Each click waits until its job is on disk before the next: two clicks within one script run count once
    in Streamlit (the second interrupts the run the first started), as a double-click should. A click that
    made no job within ``CLICK_WAIT_S`` is repeated and counted in ``click_retries``.
    """
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    await page.goto(f"{url}/retrain")
    button = page.get_by_role("button", name="Retrain", exact=True)
    record["click_retries"] = 0
    for index in range(retrains):
        await _script_idle(page)
        await _one_left(button)  # a rerun briefly shows the old form beside the new one
        for _attempt in range(3):
            await button.click()
            deadline = time.monotonic() + CLICK_WAIT_S
            while _retrain_jobs() <= index and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if _retrain_jobs() > index:
                break
            record["click_retries"] += 1
            record.setdefault("click_failures", []).append(await _retrain_form_state(page))
    record["clicked"] = retrains + record["click_retries"]
    await context.close()


async def _drive(url: str, sessions: int, steps: int, burst: int, retrains: int, n: int,
                 first_seed: int = 0) -> dict[str, Any]:
    """Every user (and the retrainer) at once; ``first_seed`` keeps later rounds on one server uncached."""
    from playwright.async_api import async_playwright

    users = [{"user": index, "seed": first_seed + index, "corruption": CORRUPTIONS[index % len(CORRUPTIONS)],
              "checks_s": []} for index in range(sessions)]
    retrainer: dict[str, Any] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tasks = [_user(browser, url, record["user"], record["corruption"], n, steps, burst, record)
                 for record in users]
        if retrains:
            tasks.append(_retrainer(browser, url, retrains, retrainer))
        begin = time.monotonic()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        load_s = time.monotonic() - begin
        errors = [f"{type(outcome).__name__}: {outcome}" for outcome in outcomes
                  if isinstance(outcome, BaseException)]

        # Baseline: the same kind of drift check by one user alone, in the same server and browser.
        alone: list[float] = []
        first = next((record for record in users if "page" in record), None)
        if first is not None:
            page = first["page"]
            slider = page.locator(f'input[type="range"][aria-label="{first["corruption"]} severity"]')
            severity = await _slider_value(page, first["corruption"])
            for _ in range(steps):
                severity += SEVERITY_STEP
                await _one_left(slider)
                await slider.focus()
                begin = time.monotonic()
                await page.keyboard.press("ArrowRight")
                await _wait_for_spec(page, spec_text(first["corruption"], severity))
                alone.append(time.monotonic() - begin)
        await browser.close()
    for record in users:
        record.pop("page", None)
    return {"users": users, "retrainer": retrainer, "errors": errors, "load_s": load_s, "alone_s": alone}


def _expected_accuracy(version: str, corruption: str, severity: float, n: int, seed: int) -> str:
    """The drifted accuracy the Drift Lab should show for this user's final spec, computed in this process
    by a reference fitted here (not the server's)."""
    from zeal_core.reference import ReferenceConfig, fit_reference

    reference = fit_reference(version, config=ReferenceConfig(detectors=("ks",)), device="cpu")
    report = reference.check(spec_text(corruption, severity), n=n, seed=seed, parts=("detectors",))
    return f"{report.accuracy:.1%}"


def _check_jobs_and_registry(seeded: str, retrains: int, wait_s: float) -> tuple[dict[str, Any], list[str]]:
    """Wait for the retrain jobs, then check they ran one at a time and the registry is whole."""
    from zeal_core.jobs import JobQueue
    from zeal_core.models.registry import ModelRegistry

    problems: list[str] = []
    queue = JobQueue()
    deadline = time.monotonic() + wait_s
    jobs = [job for job in queue.list() if job.kind == "retrain"]
    while time.monotonic() < deadline and (len(jobs) < retrains or not all(job.is_final for job in jobs)):
        time.sleep(0.5)
        jobs = [job for job in queue.list() if job.kind == "retrain"]
    if len(jobs) != retrains:
        problems.append(f"{len(jobs)} retrain jobs found, {retrains} clicked")
    for job in jobs:
        if job.status != "done":
            problems.append(f"job {job.id} ended {job.status}: {job.error}")
    ordered = sorted((job for job in jobs if job.started and job.finished), key=lambda job: job.started)
    for earlier, later in itertools.pairwise(ordered):
        if later.started < earlier.finished:  # ISO 8601 UTC text sorts as time
            problems.append(f"jobs {earlier.id} and {later.id} ran at the same time")
    registry = ModelRegistry()
    new_versions = [card for card in registry.list() if card.version != seeded]
    produced = {(job.result or {}).get("version") for job in jobs if job.status == "done"}
    if {card.version for card in new_versions} != produced:
        problems.append(f"registry holds {[c.version for c in new_versions]}, jobs made {sorted(produced)}")
    for card in new_versions:
        if card.parent != seeded:
            problems.append(f"{card.version} has parent {card.parent}, not {seeded}")
        try:
            registry.load(card.version)
        except Exception as error:  # any failure to load means the registry is not consistent
            problems.append(f"{card.version} does not load: {error}")
    info = {"jobs": [{"id": job.id, "status": job.status, "started": job.started, "finished": job.finished,
                      "wall_s": _wall_seconds(job.started, job.finished)} for job in jobs],
            "versions": len(registry.list())}
    return info, problems


def _wall_seconds(started: str | None, finished: str | None) -> float | None:
    """Seconds between two ISO 8601 times (a job's start and end), None when either is missing."""
    from datetime import datetime

    if not started or not finished:
        return None
    return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 1)


def curve(counts: tuple[int, ...] = (1, 2, 5, 10), steps: int = 3, burst: int = 2, n: int = 100,
          port: int = 0) -> dict[str, Any]:
    """Drift-check latency against the number of users (no retrains): one server, one seeded model, the
    same scenario run once per user count, in increasing order. For sizing, not for pass/fail."""
    work = Path(tempfile.mkdtemp(prefix="zeal-bench-curve-"))
    folders = {variable: str(work / sub) for variable, sub in (
        ("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"), ("ZEAL_STATE_DIR", "state"))}
    for folder in folders.values():
        Path(folder).mkdir()
    env = dict(os.environ) | folders
    saved = {variable: os.environ.get(variable) for variable in folders}
    os.environ.update(folders)
    try:
        seed_model(work / "models")
        server, url = start_app(env, work / "streamlit.log", port)
        try:
            rows = []
            for round_index, count in enumerate(counts):
                driven = asyncio.run(_drive(url, count, steps, burst, 0, n, first_seed=1000 * round_index))
                checks = [value for record in driven["users"] for value in record["checks_s"]]
                rows.append({"users": count, "drift_check": summary(checks),
                             "cold_view": summary([record["cold_s"] for record in driven["users"]
                                                   if "cold_s" in record]),
                             "errors": driven["errors"]})
        finally:
            stop_app(server)
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    return {"ok": not any(row["errors"] for row in rows), "steps": steps, "burst": burst, "n": n,
            "cpu_count": os.cpu_count(), "curve": rows}


def run(sessions: int = 5, steps: int = 4, burst: int = 3, retrains: int = 2, n: int = 100,
        port: int = 0) -> dict[str, Any]:
    """Run the load scenario; returns correctness checks (``ok``, ``problems``) and timings (seconds)."""
    work = Path(tempfile.mkdtemp(prefix="zeal-bench-load-"))
    folders = {variable: str(work / sub) for variable, sub in (
        ("ZEAL_DATA_DIR", "data"), ("ZEAL_MODELS_DIR", "models"), ("ZEAL_STATE_DIR", "state"))}
    saved = {variable: os.environ.get(variable) for variable in folders}
    for folder in folders.values():
        Path(folder).mkdir()
    os.environ.update(folders)  # this process checks the registry and jobs in the same folders
    try:
        return _run_in(work, dict(os.environ), sessions, steps, burst, retrains, n, port)
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def _run_in(work: Path, env: dict[str, str], sessions: int, steps: int, burst: int, retrains: int, n: int,
            port: int) -> dict[str, Any]:
    seeded = seed_model(work / "models")
    server, url = start_app(env, work / "streamlit.log", port)
    probe = HealthProbe(url)
    probe.start()
    try:
        driven = asyncio.run(_drive(url, sessions, steps, burst, retrains, n))
    finally:
        probe.stopped.set()
        probe.join()
    try:
        jobs, problems = _check_jobs_and_registry(seeded, retrains, WAIT_S)
    finally:
        stop_app(server)
    problems = list(driven["errors"]) + problems
    for record in driven["users"]:
        name = f"user {record['user']} ({record['corruption']})"
        if "shown_spec" not in record:
            problems.append(f"{name} did not finish")
            continue
        if record["shown_spec"] != record["expected_spec"]:
            problems.append(f"{name} shows {record['shown_spec']!r}, its slider asks for "
                            f"{record['expected_spec']!r} (a stale answer)")
        severity = float(record["expected_spec"].split(":")[1])
        expected = _expected_accuracy(seeded, record["corruption"], severity, n, record["seed"])
        record["expected_accuracy"] = expected
        if record["shown_accuracy"] != expected:
            problems.append(f"{name} shows drifted accuracy {record['shown_accuracy']}, expected {expected}")
        if not record["through_app"]:
            problems.append(f"{name}: the Drift Lab ran without app.py (no sidebar status)")
        if record["exceptions"]:
            problems.append(f"{name} shows {record['exceptions']} exception(s)")
    if probe.failures:
        problems.append(f"{probe.failures} health checks failed")
    checks = [value for record in driven["users"] for value in record["checks_s"]]
    return {
        "ok": not problems, "problems": problems, "sessions": sessions, "steps": steps, "burst": burst,
        "retrains": retrains, "n": n, "cpu_count": os.cpu_count(), "model": seeded,
        "load_s": round(driven["load_s"], 1),
        "drift_check_under_load": summary(checks),
        "drift_check_alone": summary(driven["alone_s"]),
        "cold_view": summary([record["cold_s"] for record in driven["users"] if "cold_s" in record]),
        "health": summary(probe.latencies) | {"failures": probe.failures},
        "jobs": jobs,
        "retrainer": driven["retrainer"],
        "users": [{key: value for key, value in record.items() if key != "checks_s"}
                  | {"checks_s": [round(value, 3) for value in record["checks_s"]]}
                  for record in driven["users"]],
    }


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=5, help="concurrent Drift Lab users")
    parser.add_argument("--steps", type=int, default=4, help="timed slider steps per user")
    parser.add_argument("--burst", type=int, default=3, help="key presses in the final fast drag")
    parser.add_argument("--retrains", type=int, default=2, help="Retrain clicks by one more user")
    parser.add_argument("--n", type=int, default=100, help="Drift Lab sample size")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--curve", default="", metavar="COUNTS",
                        help="instead: drift-check latency at these user counts, e.g. 1,2,5,10 (no retrains)")


def _handler(args: argparse.Namespace) -> dict[str, Any]:
    if args.curve:
        try:
            counts = tuple(int(part) for part in args.curve.split(","))
        except ValueError:
            counts = ()
        if not counts or min(counts) < 1:  # a user error: exit 2, never the 1 that means "problems found"
            raise ConfigError(f"--curve {args.curve!r}: give user counts of at least 1, such as 1,2,5,10")
        return curve(counts, steps=args.steps, burst=args.burst, n=args.n, port=args.port)
    return run(sessions=args.sessions, steps=args.steps, burst=args.burst, retrains=args.retrains, n=args.n,
               port=args.port)


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench load`` to the ``bench`` command."""
    sub = actions.add_parser("load", parents=[parent], help="concurrent browser sessions + retrain jobs")
    _add_arguments(sub)
    sub.set_defaults(handler=_handler)
