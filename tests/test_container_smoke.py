"""The pure parts of the container smoke walk (benchmarks/container.py); the walk itself needs Docker."""

from __future__ import annotations

import pytest

from benchmarks.container import SERVER_PATH, SmokeFailure, closing_line, to_mib


@pytest.mark.parametrize(("text", "mib"), [("710.2MiB", 710.2), ("1.5GiB", 1536.0), ("512KiB", 0.5),
                                           ("2048B", 2048 / 2**20), (" 793MiB ", 793.0)])
def test_docker_stats_memory_in_mib(text, mib):
    assert to_mib(text) == pytest.approx(mib)


def test_unreadable_memory_figure_fails_the_smoke():
    with pytest.raises(SmokeFailure, match="memory figure"):
        to_mib("n/a")


@pytest.mark.parametrize(("shown", "leaks"), [
    ("place imagenette2-160.tgz at /app/data/raw/imagenette2-160.tgz", True),
    ("history kept in /home/zeal/.zeal/history.sqlite", True),
    ("This demo offers no image folders: the built-in datasets work", False),
    ("see docs/deploy.md and http://127.0.0.1:8501/app/x", False),
])
def test_server_paths_are_recognised(shown, leaks):
    assert bool(SERVER_PATH.search(shown)) is leaks


def test_closing_line_names_every_target():
    line = closing_line({"build_s": 434.1, "image_mb": 1913, "cold_start_s": 3.7, "first_render_s": 24.7,
                         "train_s": 152.3, "drift_lab_s": 45.7, "slider_s": 6.8, "memory_mib": 793.0,
                         "uid": 10001, "health": "healthy"})
    assert line.startswith("docker smoke OK: build 434 s, image 1913 MB, healthy after 3.7 s")
    assert "train 152.3 s" in line and "memory 793 MiB" in line and "uid 10001" in line
