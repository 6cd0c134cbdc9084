"""Run the demo image and click through it in Chromium: the smoke test and figures of ``docker_smoke.sh``.

Usage: ``python -m benchmarks container --image zeal-drift-lab:latest [--json] [--screenshots DIR]``

Starts the image with ``docker run`` on a free 127.0.0.1 port (nothing else can reach it), then:

- ``cold_start_s``: from ``docker run`` to ``/_stcore/health`` answering;
- ``first_render_s``: from ``docker run`` to the Home page drawn in the browser (it offers to train);
- ``train_s``: from pressing "Train the default digits model" on Home to the lab opening (the model is
  trained inside the container, in its background job worker);
- ``drift_lab_s``: the first Drift Lab view, and ``slider_s``: one severity step to new p-values;
- the Data page must offer no folder on the server (no "Your image folder" choice, no path box);
- ``memory_mib``: the container's memory after the walk (``docker stats --no-stream``), and its health
  status as Docker sees it (the image's HEALTHCHECK); the app must run as a user other than root, hold
  no test tools, and log no traceback.

The container is stopped and removed in every case. Any failed check raises, so the exit code is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import script_main
from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, detector_table, free_port, wait_idle

TRAIN_TIMEOUT_S = 900.0  # s: training inside a container on 2 busy cores
WAIT_TIMEOUT_S = 300.0  # s: any other wait
TRAIN_BUTTON = "Train the default digits model"  # the start of the Home page's first-run button
FOLDER_CHOICE = "Your image folder"  # the Data page's choice of a folder on the server
SERVER_PATH = re.compile(r"(?<![\w.])/(app|home|opt|tmp|root)/[\w./-]*")  # a path inside the container
TEST_TOOLS = ("pytest", "ruff", "playwright", "imagecorruptions")


class SmokeFailure(RuntimeError):
    """A check of the smoke walk failed (the message says which and what was seen).

    Attributes:
        results: The figures measured before the failure (filled in by ``run``).
    """

    results: dict[str, Any] | None = None


def docker(*args: str, check: bool = True) -> str:
    """Run ``docker ARGS``; returns its stdout (raises SmokeFailure with its stderr on failure)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=WAIT_TIMEOUT_S)
    if check and done.returncode != 0:
        raise SmokeFailure(f"docker {' '.join(args[:2])} failed: {done.stderr.strip()[-1500:]}")
    return done.stdout.strip()


def wait_healthy(url: str, container: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Until ``/_stcore/health`` answers "ok"; raises with the container's log if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.1)
        if docker("inspect", "-f", "{{.State.Running}}", container, check=False) != "true":
            break
    raise SmokeFailure(f"the app did not become healthy; its log:\n{docker('logs', container, check=False)}")


def p_values(page: Any) -> list[float]:
    """The p-values of the Drift Lab's detector table ("≤ x (floor)" reads as x)."""
    values = []
    for row in detector_table(page).locator("tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        match = re.search(r"\d[\d.]*(e-?\d+)?", cells[1]) if len(cells) > 1 else None
        if match is None:
            raise SmokeFailure(f"no p-value in the detector table row {cells}")
        values.append(float(match.group(0)))
    if not values or not all(0.0 <= value <= 1.0 for value in values):
        raise SmokeFailure(f"p-values missing or outside [0, 1]: {values}")
    return values


def train_from_home(page: Any, url: str, results: dict[str, Any], started: float,
                    shots: Path | None) -> None:
    """Open Home (first render), press the first-run train button and wait for the lab to open."""
    page.goto(f"{url}/")
    button = page.get_by_role("button", name=re.compile(f"^{re.escape(TRAIN_BUTTON)}"))
    button.wait_for()
    wait_idle(page)
    results["first_render_s"] = time.monotonic() - started
    if shots:
        page.screenshot(path=str(shots / "docker_home_first_run.png"), full_page=True)
    begin = time.monotonic()
    button.click()
    page.get_by_text("What next").wait_for(timeout=TRAIN_TIMEOUT_S * 1000)
    results["train_s"] = time.monotonic() - begin
    wait_idle(page)


def drift_lab(page: Any, url: str, results: dict[str, Any], shots: Path | None) -> None:
    """Open the Drift Lab on a mild noise, move its severity slider one step and read new p-values."""
    begin = time.monotonic()
    page.goto(f"{url}/drift_lab?spec=gaussian_noise:1@1&n=200&seed=0")
    detector_table(page).wait_for()
    wait_idle(page)
    results["drift_lab_s"] = time.monotonic() - begin
    before = p_values(page)
    slider = page.locator('input[type="range"][aria-label="gaussian_noise severity"]')
    slider.focus()
    begin = time.monotonic()
    page.keyboard.press("ArrowRight")
    after = before
    while after == before and time.monotonic() - begin < WAIT_TIMEOUT_S:
        time.sleep(0.05)
        after = p_values(page)
    if after == before:
        raise SmokeFailure(f"the p-values did not change when the severity moved: {before}")
    wait_idle(page, settle_s=0.05)
    results["slider_s"] = time.monotonic() - begin - 0.05
    results["p_values_severity_1"] = before
    results["p_values_severity_2"] = p_values(page)
    if shots:
        page.screenshot(path=str(shots / "docker_drift_lab.png"), full_page=True)


def settle_after_input(page: Any) -> None:
    """Wait for the rerun a widget change starts, then for the page to be fully drawn.

    The rerun starts a moment after the input, so a page that is idle just after it may not have begun.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    running = '[data-testid="stApp"][data-test-script-state="running"]'
    with contextlib.suppress(PlaywrightTimeout):  # a quick rerun can start and end between two polls
        page.locator(running).wait_for(timeout=5_000)
    wait_idle(page, settle_s=1.0)
    page.locator('[data-testid="stSkeleton"]').first.wait_for(state="detached")


def data_page(page: Any, url: str, shots: Path | None) -> list[str]:
    """Check that the Data page offers no folder on the server; returns the dataset choices it offers.

    Choosing "Your image folder" must lead to no path box and no folder (the image's ``/app/folders`` is
    empty), and no server path (``/app/...``) may be shown anywhere on the page.
    """
    page.goto(f"{url}/data")
    page.get_by_text("Dataset", exact=True).first.wait_for()
    wait_idle(page)
    page.locator('[data-testid="stSelectbox"]').first.click()
    options = page.locator('[role="option"]').all_inner_texts()
    folder_choice = [option for option in options if FOLDER_CHOICE.lower() in option.lower()]
    if folder_choice:
        page.locator('[role="option"]').filter(has_text=folder_choice[0]).first.click()
        settle_after_input(page)
    else:
        page.keyboard.press("Escape")
    if page.get_by_label("Folder path").count():
        raise SmokeFailure("the Data page takes a typed folder path on the server")
    if page.get_by_label("Image folder").count():
        raise SmokeFailure("the Data page offers image folders, though the image's folder root is empty")
    shown = page.locator('[data-testid="stMain"]').inner_text()
    if SERVER_PATH.search(shown):
        raise SmokeFailure(f"the Data page shows a server path: {SERVER_PATH.search(shown).group(0)}")
    if shots:
        page.screenshot(path=str(shots / "docker_data.png"), full_page=True)
    return options


def inspect_inside(container: str, problems: list[str]) -> dict[str, Any]:
    """What the running container is: its user id, test tools, the zeal command, memory, Docker's health.

    Anything wrong is added to ``problems``.
    """
    user = docker("exec", container, "id", "-u")
    if user == "0":
        problems.append("the app runs as root inside the container")
    probe = f"import importlib.util as u; print([m for m in {TEST_TOOLS!r} if u.find_spec(m)])"
    tools = docker("exec", container, "python", "-c", probe)
    if tools != "[]":
        problems.append(f"test tools are installed in the image: {tools}")
    if docker("exec", container, "zeal", "--help", check=False) == "":
        problems.append("the zeal command does not run in the image")
    stats = json.loads(docker("stats", "--no-stream", "--format", "{{json .}}", container))
    used = stats["MemUsage"].split("/")[0].strip()
    health = docker("inspect", "-f", "{{.State.Health.Status}}", container)
    if health != "healthy":
        problems.append(f"Docker's health check says {health!r}")
    if "Traceback" in (log := docker("logs", container, check=False)):
        problems.append(f"the app logged a traceback:\n{log[-3000:]}")
    return {"uid": int(user), "memory": used, "memory_mib": round(to_mib(used), 1), "health": health}


def to_mib(text: str) -> float:
    """``docker stats``' memory figure ("412.3MiB", "1.2GiB", "900KiB") in MiB."""
    match = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|B)", text.strip())
    if match is None:
        raise SmokeFailure(f"cannot read the memory figure {text!r}")
    scale = {"B": 1 / 2**20, "KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024}
    return float(match.group(1)) * scale[match.group(2)]


def walk(url: str, started: float, shots: Path | None, results: dict[str, Any], problems: list[str]) -> None:
    """Drive the app in Chromium: Home -> train -> Drift Lab -> slider -> Data; adds to ``results``.

    A failed Data page check is added to ``problems`` (the walk goes on: the figures still count); any
    other failure stops the walk.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})  # tall: whole pages in shots
            page.set_default_timeout(WAIT_TIMEOUT_S * 1000)
            train_from_home(page, url, results, started, shots)
            drift_lab(page, url, results, shots)
            try:
                results["datasets_offered"] = data_page(page, url, shots)
            except SmokeFailure as failure:
                problems.append(str(failure))
        finally:
            browser.close()


def run(image: str, shots: Path | None = None, name: str | None = None) -> dict[str, Any]:
    """Start ``image`` as container ``name``, walk through it, inspect it, stop and remove it.

    Returns:
        Every figure (seconds, MB, MiB) and what was read (p-values, dataset choices, user id, health).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = name or f"zeal-smoke-{port}"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    results: dict[str, Any] = {"image": image, "image_mb": round(size / 1e6), "port": port}
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    started = time.monotonic()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8501", image)
    try:
        wait_healthy(url, name)
        results["cold_start_s"] = time.monotonic() - started
        walk(url, started, shots, results, problems)
        results.update(inspect_inside(name, problems))
        begin = time.monotonic()
        docker("stop", name)
        results["stop_s"] = time.monotonic() - begin
        if problems:
            raise SmokeFailure("; ".join(problems))
    except SmokeFailure as failure:
        failure.results = results
        raise
    except Exception as error:  # a timeout or a browser error: the same verdict, with the figures so far
        failure = SmokeFailure(f"{type(error).__name__}: {error}")
        failure.results = results
        raise failure from error
    finally:
        docker("rm", "-f", name, check=False)
    return rounded(results)


def rounded(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with seconds and MiB to 2 decimals, for printing."""
    return {key: round(value, 2) if isinstance(value, float) else value for key, value in results.items()}


def closing_line(results: dict[str, Any]) -> str:
    """One line with the figures, for the end of the smoke script's output."""
    parts = [f"build {results['build_s']:.0f} s"] if results.get("build_s") is not None else []
    parts += [f"image {results['image_mb']} MB", f"healthy after {results['cold_start_s']:.1f} s",
              f"first render {results['first_render_s']:.1f} s", f"train {results['train_s']:.1f} s",
              f"drift lab {results['drift_lab_s']:.1f} s", f"slider {results['slider_s']:.2f} s",
              f"memory {results['memory_mib']:.0f} MiB", f"uid {results['uid']}",
              f"health {results['health']}"]
    return "docker smoke OK: " + ", ".join(parts)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default="zeal-drift-lab:latest", help="the image to run")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for docker_*.png screenshots")
    parser.add_argument("--name", default=None, help="container name (default zeal-smoke-PORT)")
    parser.add_argument("--build-s", type=float, default=None, help="the image's build time, for the report")


def _handler(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return {"build_s": args.build_s, **run(args.image, args.screenshots, args.name)}
    except SmokeFailure as failure:
        failure.results = {"build_s": args.build_s, **(failure.results or {})}
        raise


def _show(results: dict[str, Any]) -> None:
    for key, value in results.items():
        print(f"{key}: {value}")
    print(closing_line(results))


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench container`` to the ``bench`` command."""
    sub = actions.add_parser("container", parents=[parent], help="run the demo image and click through it")
    _add_arguments(sub)
    sub.set_defaults(handler=_handler)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m benchmarks.container``; 1 when a check fails."""
    try:
        return script_main(__doc__.splitlines()[0], _add_arguments, _handler, _show, argv)
    except SmokeFailure as failure:
        for key, value in rounded(failure.results or {}).items():
            print(f"{key}: {value}")
        print(f"docker smoke FAILED: {failure}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
