"""App-wide settings read once from the environment: demo mode, sample sizes and the compute device.

The demo mode (``ZEAL_DEMO=1``) is for small shared hosts such as Streamlit Community Cloud (about 2.7 GB of
memory, a couple of CPU cores, no GPU): it starts on the embedded digits dataset, keeps samples small and
runs on the CPU. Every value can also be set on its own:

- ``ZEAL_DEMO``: ``1``/``true``/``yes``/``on`` turns the demo mode on (default off).
- ``ZEAL_DEFAULT_N``: images per drift sample the pages start with.
- ``ZEAL_MAX_N``: the largest sample a page lets a user ask for.
- ``ZEAL_MAX_EPOCHS``: the most training epochs a page lets a user ask for.
- ``ZEAL_DEVICE``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
- ``ZEAL_DEFAULT_DATASET``: the dataset the pages open with.
- ``ZEAL_TORCH_THREADS``: CPU threads torch may use (0 = torch's own choice).
- ``ZEAL_MAX_CHECK_N``: the most images one check tests; a larger batch is checked on a seeded random
  subset of that size, and the report says so (memory and time stay bounded whatever a user sends).
- ``ZEAL_MAX_UPLOADS``: the most files one upload may hold (the rest are left out, and the page says so).
- ``ZEAL_CHECK_SLOTS``: checks one server runs at once; the others queue (0 = the CPU cores divided by
  torch's threads, so that the running checks' threads add up to the cores).
- ``ZEAL_JOB_NICE``: how much the background job worker yields the CPU to interactive checks (a ``nice``
  increment, 0-19).
- ``ZEAL_JOB_THREADS``: torch threads of the job worker (0 = half the cores, at least one).
- ``ZEAL_DEMO_ALLOW``: in demo mode, the actions a visitor may take (comma-separated names from
  ``DEMO_ACTIONS``, ``all`` or ``none``; default ``DEMO_DEFAULT_ALLOW``). Outside demo mode every action is
  allowed. A shared URL should also set ``ZEAL_FOLDER_ROOTS`` (the folders ``folder:PATH`` may read).

Demo mode shows no server path: no free-text folder or checkpoint path (unless ``server-paths`` is
allowed), folder datasets only from the ``ZEAL_FOLDER_ROOTS`` allow-list, imports only from uploads.

Pages call ``get_settings()`` (cached for the life of the process); tests call ``load_settings(env)``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from zeal_core.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# (normal, demo) defaults. Demo values keep one page's work to a few seconds on two CPU cores and well
# under 1 GB of memory: a 200-image sample of 32 px digits is about 0.6 MB of uint8 and 0.4 MB of features.
DEFAULT_N = (500, 200)  # images per drift sample
MAX_N = (5000, 1000)  # images; the cap a page's slider offers
MAX_EPOCHS = (30, 3)  # training epochs a page may ask for
DEVICE = ("auto", "cpu")  # compute device
DEFAULT_DATASET = ("digits", "digits")  # the embedded dataset needs no download in either mode
TORCH_THREADS = (0, 2)  # CPU threads for torch; 0 leaves torch's own choice
MAX_CHECK_N = (5000, 1000)  # images one check tests at most (a seeded random subset beyond)
MAX_UPLOADS = (2000, 200)  # files one upload may hold
CHECK_SLOTS = (0, 0)  # checks run at once per server; 0 = cores // torch threads
JOB_NICE = (10, 15)  # nice increment of the job worker: retrains yield to the people waiting on a page
JOB_THREADS = (0, 1)  # torch threads of the job worker; 0 = half the cores (at least 1)

# What a visitor of a demo may be allowed to do (ZEAL_DEMO_ALLOW), with what each name covers.
DEMO_ACTIONS = {
    "train-default": "train the default digits model from Home while there is no model (one job at a time)",
    "train": "start training jobs (Model page)",
    "import": "import an uploaded checkpoint as a new version (Model page)",
    "retrain": "start retrain jobs (Retrain page)",
    "monitor": "start simulated-stream jobs (Monitor page)",
    "cancel": "cancel queued or running jobs",
    "activate": "make another version the active one",
    "delete": "delete model versions",
    "policy": "change the retrain policy over the check history",
    "server-paths": "type paths on the server (folder datasets, checkpoints) instead of choosing from "
                    "ZEAL_FOLDER_ROOTS or uploading",
}
# The demo's default: the one costly action a first visitor needs, bounded (only while no model exists).
DEMO_DEFAULT_ALLOW = ("train-default",)


@dataclass(frozen=True)
class AppSettings:
    """Process-wide knobs for the app and long-running work."""

    demo: bool  # demo mode: small, CPU-only, starts on digits (ZEAL_DEMO)
    default_n: int  # images per drift sample a page starts with (ZEAL_DEFAULT_N)
    max_n: int  # largest sample a page offers (ZEAL_MAX_N); default_n <= max_n
    max_epochs: int  # most training epochs a page offers (ZEAL_MAX_EPOCHS)
    device: str  # "auto", "cpu", "cuda" or "cuda:N" (ZEAL_DEVICE)
    default_dataset: str  # dataset the pages open with (ZEAL_DEFAULT_DATASET)
    torch_threads: int  # CPU threads for torch, 0 = torch's choice (ZEAL_TORCH_THREADS)
    max_check_n: int = MAX_CHECK_N[0]  # images one check tests at most (ZEAL_MAX_CHECK_N)
    max_uploads: int = MAX_UPLOADS[0]  # files one upload may hold (ZEAL_MAX_UPLOADS)
    demo_allow: frozenset[str] = frozenset(DEMO_ACTIONS)  # actions allowed in demo mode (ZEAL_DEMO_ALLOW)
    check_slots: int = CHECK_SLOTS[0]  # checks at once per server, 0 = cores // threads (ZEAL_CHECK_SLOTS)
    job_nice: int = JOB_NICE[0]  # nice increment of the job worker, 0-19 (ZEAL_JOB_NICE)
    job_threads: int = JOB_THREADS[0]  # job worker's torch threads, 0 = half the cores (ZEAL_JOB_THREADS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for an "about" panel or a benchmark's header)."""
        values = asdict(self)
        values["demo_allow"] = sorted(self.demo_allow)
        return values

    def allows(self, action: str) -> bool:
        """Whether a visitor may take ``action`` (a ``DEMO_ACTIONS`` name): always outside demo mode.

        Raises:
            ConfigError: An unknown action name (a typo in a page would otherwise allow nothing silently).
        """
        if action not in DEMO_ACTIONS:
            raise ConfigError(f"unknown action {action!r}: use one of {', '.join(DEMO_ACTIONS)}")
        return not self.demo or action in self.demo_allow

    def clamp_n(self, n: int) -> int:
        """``n`` limited to ``[1, max_n]``, for a sample size typed by a user."""
        return max(1, min(int(n), self.max_n))


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {name}={env[name]!r}: use 1 or 0 (true/false, yes/no, on/off)")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={text!r}: use a whole number in {low}..{high}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"environment variable {name}={value}: use a whole number in {low}..{high}")
    return value


def _allowed_actions(env: Mapping[str, str]) -> frozenset[str]:
    text = env.get("ZEAL_DEMO_ALLOW", "").strip().lower()
    if not text:
        return frozenset(DEMO_DEFAULT_ALLOW)
    if text == "all":
        return frozenset(DEMO_ACTIONS)
    if text == "none":
        return frozenset()
    names = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(names - set(DEMO_ACTIONS))
    if unknown:
        raise ConfigError(f"environment variable ZEAL_DEMO_ALLOW names unknown action(s) {unknown}: use "
                          f"'all', 'none' or names from {', '.join(DEMO_ACTIONS)}")
    return frozenset(names)


def load_settings(environ: Mapping[str, str] | None = None) -> AppSettings:
    """Read the settings from ``environ`` (default ``os.environ``), filling in mode-dependent defaults.

    Raises:
        ConfigError: A variable holds a value that is not allowed (the message names it and the fix).
    """
    env = os.environ if environ is None else environ
    demo = _flag(env, "ZEAL_DEMO")
    pick = 1 if demo else 0
    max_n = _int(env, "ZEAL_MAX_N", MAX_N[pick], 10, 1_000_000)
    default_n = _int(env, "ZEAL_DEFAULT_N", min(DEFAULT_N[pick], max_n), 10, 1_000_000)
    if default_n > max_n:
        raise ConfigError(f"ZEAL_DEFAULT_N={default_n} is larger than ZEAL_MAX_N={max_n}: lower the first "
                          "or raise the second")
    device = env.get("ZEAL_DEVICE", "").strip().lower() or DEVICE[pick]
    if not _DEVICE.match(device):
        raise ConfigError(f"environment variable ZEAL_DEVICE={device!r}: use auto, cpu, cuda or cuda:N")
    dataset = env.get("ZEAL_DEFAULT_DATASET", "").strip() or DEFAULT_DATASET[pick]
    return AppSettings(
        demo=demo,
        default_n=default_n,
        max_n=max_n,
        max_epochs=_int(env, "ZEAL_MAX_EPOCHS", MAX_EPOCHS[pick], 1, 1000),
        device=device,
        default_dataset=dataset,
        torch_threads=_int(env, "ZEAL_TORCH_THREADS", TORCH_THREADS[pick], 0, 1024),
        max_check_n=_int(env, "ZEAL_MAX_CHECK_N", MAX_CHECK_N[pick], 10, 10_000_000),
        max_uploads=_int(env, "ZEAL_MAX_UPLOADS", MAX_UPLOADS[pick], 1, 1_000_000),
        demo_allow=_allowed_actions(env),
        check_slots=_int(env, "ZEAL_CHECK_SLOTS", CHECK_SLOTS[pick], 0, 1024),
        job_nice=_int(env, "ZEAL_JOB_NICE", JOB_NICE[pick], 0, 19),
        job_threads=_int(env, "ZEAL_JOB_THREADS", JOB_THREADS[pick], 0, 1024),
    )


@functools.lru_cache(maxsize=1)
def get_settings() -> AppSettings:
    """The process's settings, read from the environment on first use and then kept."""
    return load_settings()


def apply_torch_threads(settings: AppSettings | None = None) -> None:
    """Limit torch's CPU threads as the settings say (no-op for 0); call once at app start."""
    chosen = settings or get_settings()
    if chosen.torch_threads > 0:
        import torch

        torch.set_num_threads(chosen.torch_threads)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share; at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def lower_job_priority(settings: AppSettings | None = None) -> dict[str, int]:
    """Make this process a background worker: ``job_nice`` lower priority and ``job_threads`` torch threads,
    so that jobs take the CPU the pages leave. Returns what was set (for the worker's log)."""
    import torch

    chosen = settings or get_settings()
    threads = chosen.job_threads or max(1, cpu_cores() // 2)
    torch.set_num_threads(threads)
    niceness = os.nice(chosen.job_nice) if chosen.job_nice and hasattr(os, "nice") else 0
    return {"threads": threads, "niceness": niceness}
