"""The check service: one profile everywhere (page, command line, Python), records, the policy, alerts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from zeal_core.cli import main
from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import part_positions
from zeal_core.errors import ConfigError
from zeal_core.history import HistoryPolicy, HistoryStore, save_policy
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.reference import forget_references
from zeal_core.service import (
    CheckService,
    LabSettings,
    alert_text,
    get_profile,
    list_profiles,
    save_lab_settings,
    send_webhook,
    update_lab_settings,
)

FAST = {"bank_n": 20, "permutations": 200}  # small enough for a shared CPU; the same everywhere below


@pytest.fixture()
def version() -> str:
    """A random-init test ResNet on digits, registered and active (its features still move under drift)."""
    forget_references()
    config = ModelConfig(arch="test_resnet", num_classes=10, image_size=32)
    torch.manual_seed(0)
    registry = ModelRegistry()
    card = registry.save(create_model(config), model_config=config, dataset="digits",
                         dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    registry.set_active(card.version)
    return card.version


def held_out(count: int, spec: str = "clean") -> torch.Tensor:
    """Images of the held-out sample half (the reference is drawn from the other half), maybe drifted."""
    images, _ = load_dataset("digits").split("val")
    batch = images[torch.from_numpy(part_positions(images.shape[0], "sample")[:count])]
    parsed = DriftSpec.parse(spec)
    return batch if parsed.is_clean else parsed.apply(batch, seed=0)


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(folder: Path, images: torch.Tensor) -> list[str]:
    """PNG files whose sorted order is the images' order; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images):
        names.append(f"img_{index:03d}.png")
        (folder / names[-1]).write_bytes(png_bytes(image))
    return names


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------ profiles


def test_profiles_are_named_strict_and_reported() -> None:
    assert list_profiles()[:3] == ["standard", "full", "quick"]
    standard = get_profile()
    assert standard.name == "standard" and "c2st" not in standard.detectors and standard.permutations == 1000
    changed = get_profile("standard", {"reference_n": 100, "alpha": None})  # None: not given
    assert changed.reference_n == 100 and changed.overrides == ("reference_n",)
    assert changed.describe()["overrides"] == ["reference_n"] and changed.describe()["profile"] == "standard"
    assert changed.reference_config().detector_options["mmd"] == {"num_permutations": 1000}
    with pytest.raises(ConfigError, match="unknown check profile 'nope'"):
        get_profile("nope")
    with pytest.raises(ConfigError, match="unknown setting"):
        get_profile("standard", {"permutation": 10})
    with pytest.raises(ConfigError, match="unknown detector"):
        get_profile("standard", {"detectors": ("banana",)})


def test_lab_settings_choose_the_profile_for_every_caller(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite")
    assert CheckService(history=store).profile.name == "standard"
    update_lab_settings(store, {"profile": "quick", "profile_overrides": {"alpha": 0.01}})
    profile = CheckService(history=store).profile
    assert profile.name == "quick" and profile.alpha == 0.01 and profile.overrides == ("alpha",)
    assert CheckService("full", history=store).profile.name == "full"  # an explicit choice wins
    with pytest.raises(ConfigError, match="webhook_url"):
        update_lab_settings(store, {"webhook_url": "file:///etc/passwd"})
    with pytest.raises(ConfigError, match="unknown check profile"):
        LabSettings(profile="nope")


# ------------------------------------------------------------------------------ the same answer everywhere


def test_the_same_images_get_the_same_answer_from_the_page_the_cli_and_python(
        version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The upload page (AppTest), ``check`` and ``CheckService.check`` give identical p-values, decisions
    and estimates for the same files: one profile, one kept reference."""
    from streamlit.testing.v1 import AppTest

    update_lab_settings(HistoryStore(), {"profile_overrides": FAST})
    images = held_out(40, "gaussian_noise:2")
    names = write_folder(tmp_path / "batch", images)

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at = at.switch_page("app_pages/upload.py").run()
    files = [(name, (tmp_path / "batch" / name).read_bytes(), "image/png") for name in names]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception
    page = HistoryStore().checks()[-1]
    assert page.origin == "upload" and page.n == 40

    forget_references()  # the command runs as a new caller: it loads the kept reference from disk
    code, out = cli(["check", str(tmp_path / "batch"), "--no-record", "--no-diagnosis"], capsys)
    cli_p = {item["detector"]: item["p_value"] for item in out["detectors"]}

    service = CheckService()
    from zeal_core.data.files import decode_paths

    decoded, _, _ = decode_paths(sorted((tmp_path / "batch").glob("*.png")), 32)
    report = service.check(decoded, version=version, parts=("detectors", "estimates"))
    python_p = {result.detector: result.p_value for result in report.results}

    assert page.p_values == cli_p == python_p and len(cli_p) == len(get_profile().detectors)
    assert page.drift == out["drift"] == report.drift and code == (1 if report.drift else 0)
    assert out["settings"]["profile"] == "standard" and out["settings"]["permutations"] == 200
    assert set(out["settings"]["overrides"]) == set(FAST)
    assert page.report["settings"] == out["settings"] == report.settings
    first = {item["estimator"]: item["accuracy"] for item in out["estimates"]}
    assert first == {estimate.estimator: estimate.accuracy for estimate in report.estimates}
    assert page.estimated_accuracy == out["estimates"][0]["accuracy"]


def test_a_non_image_is_refused_before_the_model_loads(version: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.png").write_text("this is a log line, not a PNG")
    (folder / "b.jpg").write_bytes(b"")
    write_folder(folder / "one", held_out(1))
    loads = []
    monkeypatch.setattr(ModelRegistry, "load", lambda *args, **kwargs: loads.append(1) or 1 / 0)
    code, out = cli(["check", str(folder)], capsys)
    assert code == 2 and "at least 2 images" in out["error"] and not loads
    assert "a.png: not an image" in out["error"] and "b.jpg: empty file" in out["error"]


# ------------------------------------------------------------------------------- records, policy, alerts


class _Hook(BaseHTTPRequestHandler):
    """A loopback webhook: records every JSON body; answers the statuses queued in ``server.answers``."""

    def do_POST(self) -> None:  # http.server's name for the handler
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture()
def hook() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    server.bodies, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret"


def test_the_webhook_is_called_once_per_drifted_check(version: str, tmp_path: Path, hook: HTTPServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    update_lab_settings(HistoryStore(), {"profile_overrides": FAST, "webhook_url": _url(hook)})
    write_folder(tmp_path / "clean", held_out(40))
    write_folder(tmp_path / "noisy", held_out(40, "gaussian_noise:5"))
    code, clean = cli(["check", str(tmp_path / "clean"), "--no-diagnosis"], capsys)
    assert code == 0 and clean["alert"] is None and hook.bodies == []  # no drift: no alert
    code, noisy = cli(["check", str(tmp_path / "noisy"), "--no-diagnosis"], capsys)
    assert code == 1 and len(hook.bodies) == 1
    body = hook.bodies[0]
    assert body["event"] == "drift" and body["check_id"] == noisy["check_id"] and body["decision"]["drift"]
    text = body["text"]
    assert "DRIFT" in text and "img_000.png" in text and "estimated accuracy: " in text
    assert f"{body['estimate']['accuracy']:.1%}" in text and "diagnosis: " in text
    assert noisy["alert"] == {"event": "drift", "sent": True, "attempts": 1, "status": 200, "error": None,
                              "target": f"http://127.0.0.1:{hook.server_address[1]}"}  # no secret path


def test_a_dead_hook_changes_no_exit_code_and_is_retried(version: str, tmp_path: Path, hook: HTTPServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dead = HTTPServer(("127.0.0.1", 0), _Hook)
    port = dead.server_address[1]
    dead.server_close()  # nothing listens there now
    update_lab_settings(HistoryStore(), {"profile_overrides": FAST, "webhook_retries": 2,
                                         "webhook_url": f"http://127.0.0.1:{port}/hook"})
    write_folder(tmp_path / "noisy", held_out(40, "gaussian_noise:5"))
    code, out = cli(["check", str(tmp_path / "noisy"), "--no-diagnosis"], capsys)
    assert code == 1 and out["drift"] is True and out["check_id"] == 1
    assert out["alert"]["sent"] is False and out["alert"]["attempts"] == 3 and out["alert"]["error"]
    # A hook that fails twice and then answers is retried with growing waits, and the alert arrives.
    hook.answers = [503, 500]
    waits: list[float] = []
    result = send_webhook(_url(hook), {"text": "x"}, event="drift", retries=3, sleep=waits.append)
    assert result.sent and result.attempts == 3 and waits == [0.5, 1.0] and len(hook.bodies) == 3
    hook.answers = [404]
    gone = send_webhook(_url(hook), {"text": "x"}, event="drift", retries=3, sleep=waits.append)
    assert not gone.sent and gone.attempts == 1 and gone.status == 404  # a 4xx is not retried


def test_the_service_queues_the_policy_job_and_alerts_it_once(version: str, hook: HTTPServer) -> None:
    from zeal_core.jobs import JobQueue

    store = HistoryStore()
    save_lab_settings(store, LabSettings(profile_overrides=FAST, webhook_url=_url(hook)))
    save_policy(store, HistoryPolicy(enabled=True, alarms_to_retrain=2, window=3, cooldown=3))
    queue = JobQueue()
    submit = queue.submit
    queue.submit = lambda kind, params: submit(kind, params, start_worker=False)
    service = CheckService(queue=queue, sleep=lambda seconds: None)
    outcomes = [service.check_and_record(held_out(30, "contrast:5"), version=version, origin="api",
                                         parts=("detectors", "estimates")) for _ in range(2)]
    assert [outcome.report.drift for outcome in outcomes] == [True, True]
    assert outcomes[0].policy is None and outcomes[1].policy["check_ids"] == [1, 2]
    assert [job.kind for job in queue.list()] == ["adapt-history"]
    assert [event["action"] for event in store.events(version)] == ["queued"]
    assert [body["event"] for body in hook.bodies] == ["drift", "policy"]  # one alert per check
    assert "retrain policy: queued bn-adapt" in hook.bodies[1]["text"]
    assert "retrain policy" in alert_text("policy", outcomes[1].report, 2, outcomes[1].policy)


def test_a_history_that_cannot_be_written_keeps_the_answer_and_the_alert(
        version: str, hook: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording fails (a locked or read-only database): the report stands, the drift alert still goes out,
    the outcome says why nothing was recorded; a damaged database falls back to the default profile."""
    import zeal_core.history
    from zeal_core.history.store import HistoryError

    save_lab_settings(HistoryStore(), LabSettings(profile_overrides=FAST, webhook_url=_url(hook)))

    def locked(*args: object, **kwargs: object) -> int:
        raise HistoryError("the check history is locked by another process: try again")

    with monkeypatch.context() as patch:
        patch.setattr(zeal_core.history, "store_check", locked)
        outcome = CheckService(sleep=lambda seconds: None).check_and_record(
            held_out(30, "gaussian_noise:5"), version=version, parts=("detectors",))
    assert outcome.report.drift and not outcome.recorded and outcome.check_id is None
    assert outcome.to_dict()["record_error"] == "the check history is locked by another process: try again"
    assert outcome.to_dict()["recorded"] is False and outcome.policy is None
    assert [body["event"] for body in hook.bodies] == ["drift"] and hook.bodies[0]["check_id"] is None

    damaged = tmp_path / "history.sqlite"
    damaged.write_bytes(b"not a database " * 300)
    service = CheckService(history=damaged)
    assert service.profile == get_profile("standard")  # the lab's settings cannot be read: the default
    outcome = service.check_and_record(held_out(30), version=version, parts=("detectors",))
    assert outcome.report.settings["profile"] == "standard" and not outcome.recorded
    assert "history repair" in outcome.record_error and outcome.alert is None


def test_the_history_imports_no_job_system() -> None:
    """The history stores; the service submits: importing the history never imports jobs or the monitor."""
    code = ("import sys, zeal_core.history; bad = [m for m in sys.modules if m.startswith(('zeal_core.jobs', "
            "'zeal_core.monitor', 'zeal_core.service'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_settings_command_shows_sets_and_tests_the_hook(hook: HTTPServer,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(["settings"], capsys)
    assert code == 0 and out["settings"]["profile"] == "standard" and set(out["profiles"]) >= {"standard"}
    code, out = cli(["settings", "--set", f"webhook_url={_url(hook)}", "--set", "profile=quick"], capsys)
    assert code == 0 and out["profile"]["profile"] == "quick" and out["settings"]["webhook_url"] == _url(hook)
    code, out = cli(["settings", "--test-alert"], capsys)
    assert code == 0 and out["test_alert"]["sent"] and hook.bodies[-1]["event"] == "test"
    code, out = cli(["settings", "--set", "profile=nope"], capsys)
    assert code == 2 and "unknown check profile" in out["error"]
