"""The check service: the one way every caller checks a batch, records it, and lets the policy act.

::

    service = CheckService()                                   # the lab's profile (``settings`` command)
    reference = service.reference("active")                    # loaded from disk, or fitted once and kept
    outcome = service.check_files(["incoming/"])               # screen, decode, check, record, policy, alert
    outcome = service.check_and_record(images, file_names=...) # the upload page
    report = service.check("gaussian_noise:3", n=200)          # the Drift Lab (a simulated batch)

The Drift Lab, Your own images, ``check`` on the command line, the monitor, the DVC stage and the
benchmarks ask it for their reference, so the same images get the same p-values and decision everywhere.
After a check is stored (``zeal_core.history.store_check``) the service asks the retrain policy whether it
fires (``zeal_core.history.policy.decide``), queues the adaptation job itself, and sends at most one alert
per check to the lab's webhook (``zeal_core.service.alerts``): the history only stores.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeal_core.errors import Cancelled, ConfigError, DataError, ZealError
from zeal_core.progress import ProgressCallback
from zeal_core.reference import CheckReport, FittedReference, get_reference
from zeal_core.service.alerts import AlertResult, alert_payload, send_webhook
from zeal_core.service.lab import LabSettings, load_lab_settings
from zeal_core.service.profile import DEFAULT_PROFILE, CheckProfile, get_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckOutcome:
    """One check and what followed it."""

    report: CheckReport  # the check itself
    check_id: int | None = None  # its row in the history (None: not recorded)
    history: str | None = None  # the history database it was recorded in
    policy: dict[str, Any] | None = None  # the adaptation job the retrain policy queued, if it fired
    alert: AlertResult | None = None  # the webhook call made for it (None: nothing to send or no hook)
    diagnosis_error: str | None = None  # why the diagnosis could not be fitted, if it could not
    seconds: float | None = None  # wall time of the whole call
    record_error: str | None = None  # why recording failed (damaged, read-only, locked history), if it did
    sampled: dict[str, Any] | None = None  # the seeded subset checked of a batch over the cap (None: all)

    @property
    def recorded(self) -> bool:
        """Whether the check is in the history."""
        return self.check_id is not None

    def to_dict(self) -> dict[str, Any]:
        """What happened after the check (the report itself is ``report.to_dict()``)."""
        values: dict[str, Any] = {"recorded": self.recorded, "sampled": self.sampled, "policy": self.policy,
                                  "alert": None if self.alert is None else self.alert.to_dict()}
        if self.check_id is not None:
            values.update(check_id=self.check_id, history=self.history)
        if self.record_error is not None:
            values["record_error"] = self.record_error
        return values


class CheckService:
    """Checks batches under one profile against kept references; records, decides, alerts."""

    def __init__(self, profile: CheckProfile | str | None = None, *, overrides: dict[str, Any] | None = None,
                 registry: Any = None, history: Any = None, queue: Any = None,
                 device: str | torch.device = "auto", progress: ProgressCallback | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """Args:
        profile: A profile, a registered profile's name, or None for the lab's choice (``LabSettings``).
        overrides: Explicit changes to it (None values ignored), named in every report's settings.
        registry: The model registry; default the one in ``models_dir()``.
        history: A ``HistoryStore`` or its path; default ``state_dir()/history/history.sqlite``.
        queue: The ``JobQueue`` the policy submits to; default the one in the state folder.
        device: Where models run.
        progress: Receives fitting, warm-up and decoding events.
        sleep: How alert retries wait (tests pass a recorder).
        """
        self._profile_choice = profile
        self._overrides = dict(overrides or {})
        self._registry = registry
        self._history = history
        self._queue = queue
        self.device = device
        self.progress = progress
        self._sleep = sleep
        self._profile: CheckProfile | None = None

    # ------------------------------------------------------------------------------------------ setup

    @property
    def registry(self) -> Any:
        """The model registry."""
        if self._registry is None:
            from zeal_core.models.registry import ModelRegistry

            self._registry = ModelRegistry()
        return self._registry

    @property
    def history(self) -> Any:
        """The ``HistoryStore`` checks are recorded in (opened on first use)."""
        from zeal_core.history import HistoryStore

        if not isinstance(self._history, HistoryStore):
            self._history = HistoryStore(self._history)
        return self._history

    def lab_settings(self) -> LabSettings:
        """The lab's stored settings (profile choice, webhook); the defaults, with a warning, when the
        history cannot be read (damaged, locked): a fault of the history never stops a check."""
        try:
            return load_lab_settings(self.history)
        except ConfigError:  # settings stored but invalid: the user must fix them
            raise
        except ZealError as error:
            log.warning("warning: the lab's settings cannot be read (%s); using the default profile %r "
                        "and no alerts", error, DEFAULT_PROFILE)
            return LabSettings()

    @property
    def profile(self) -> CheckProfile:
        """The settings every check of this service uses (resolved once)."""
        if self._profile is None:
            choice = self._profile_choice
            if isinstance(choice, CheckProfile):
                base = choice
            elif isinstance(choice, str):
                base = get_profile(choice)
            else:
                base = self.lab_settings().check_profile()
            self._profile = base.with_overrides(self._overrides)
        return self._profile

    # ----------------------------------------------------------------------------------------- checks

    def reference(self, version: str = "active", dataset: str | None = None,
                  split: str = "val") -> FittedReference:
        """The fitted reference of ``version`` under the profile: cached in the process, kept on disk.

        Args:
            version: The model version ("active", "latest" or an id).
            dataset: Its dataset; default the model's.
            split: "val" (held out, every check) or "train" (the ``drift`` command's in-sample view).
        """
        profile = self.profile
        config = profile.reference_config()
        if split != config.split:
            config = dataclasses.replace(config, split=split)
        return get_reference(version, dataset, config, device=self.device,
                             registry=self.registry, progress=self.progress, settings=profile.describe())

    def warm(self, reference: FittedReference) -> str | None:
        """Load or fit the diagnosis now (once per model; kept on disk). Never raises for a failed fit: the
        decision and the estimate do not depend on it, so the reason is returned and logged instead."""
        try:
            reference.warm_label_free(progress=self.progress)
        except (KeyboardInterrupt, Cancelled):
            raise
        except Exception as error:  # a check goes on without its diagnosis
            log.warning("diagnosis unavailable: %s: %s", type(error).__name__, error)
            return f"{type(error).__name__}: {error}"
        return None

    def check(self, sample: Any, *, version: str = "active", dataset: str | None = None,
              parts: Sequence[str] | None = None, wait_for_diagnosis: bool = False,
              reference: FittedReference | None = None, **options: Any) -> CheckReport:
        """Check ``sample`` (a drift spec or its text, uint8 images, or Embeddings) under the profile.

        Args:
            sample: What to check (see ``FittedReference.check``).
            version: The model version ("active", "latest" or an id).
            dataset: Its dataset; default the model's.
            parts: What to compute; default the profile's parts.
            wait_for_diagnosis: Fit the diagnosis first if needed (the command line); otherwise a check
                lists it under ``pending`` until a warm-up has run (pages warm it in the background).
            reference: The reference to use (from ``reference()``), to skip looking it up again.
            **options: ``n``, ``seed``, ``labels``, ``file_names``, ``skipped``, ``source``, ``timings``,
                ``projection``, ``detectors`` for ``FittedReference.check``.
        """
        return self._check(sample, version, dataset, parts, wait_for_diagnosis, reference, options)[0]

    def _check(self, sample: Any, version: str, dataset: str | None, parts: Sequence[str] | None,
               wait_for_diagnosis: bool, reference: FittedReference | None,
               options: dict[str, Any]) -> tuple[CheckReport, str | None]:
        reference = reference if reference is not None else self.reference(version, dataset)
        wanted = list(parts if parts is not None else self.profile.parts)
        error = None
        if wait_for_diagnosis and "diagnosis" in wanted and reference.label_free.can_warm:
            error = self.warm(reference)
            if error:
                wanted.remove("diagnosis")
        return reference.check(sample, parts=wanted, **options), error

    def record(self, report: CheckReport, *, images: torch.Tensor | None = None, origin: str = "api",
               max_side: int | None = None, reference: FittedReference | None = None) -> CheckOutcome:
        """Store a check of a real batch (and its images), let the retrain policy decide, send the alert.

        Args:
            report: The check.
            images: Its images (uint8), kept for a later adaptation; None keeps none.
            origin: "cli", "upload" or "api".
            max_side: Largest side (px) the images are kept at; default the model's input size.
            reference: The reference it was checked against (for the model's input size).
        """
        from zeal_core.history import store_check

        if max_side is None:
            max_side = reference.source.card.model_config.image_size \
                if reference is not None and reference.source is not None else 224
        try:
            check_id = store_check(report, images=images, origin=origin, store=self.history,
                                   max_side=max_side)
        except (KeyboardInterrupt, Cancelled):
            raise
        except Exception as error:  # the decision stands: a fault of the history is never a result
            reason = str(error) if isinstance(error, ZealError) else _unexpected(error)
            log.warning("warning: the check was not recorded in the history: %s", reason)
            return CheckOutcome(report=report, record_error=reason, alert=self._alert(report, None, None))
        action = self._apply_policy(report)
        alert = self._alert(report, check_id, action)
        return CheckOutcome(report=report, check_id=check_id, history=str(self.history.path), policy=action,
                            alert=alert)

    def check_and_record(self, images: torch.Tensor, *, version: str = "active", record: bool = True,
                         origin: str = "api", wait_for_diagnosis: bool = False,
                         parts: Sequence[str] | None = None, **options: Any) -> CheckOutcome:
        """Check real images and (with ``record``) store the check, decide and alert: one call.

        Args:
            images: uint8 N x 3 x H x W (decode files with ``zeal_core.data.decode_paths`` first).
            version: The model version.
            record: Keep the check in the history (and let the policy and the alert act).
            origin: "cli", "upload" or "api".
            wait_for_diagnosis: See ``check``.
            parts: What to compute; default the profile's.
            **options: ``file_names``, ``skipped``, ``source``, ``timings``, ``labels``, ``projection``.
        """
        start = time.perf_counter()
        reference = self.reference(version)
        report, error = self._check(images, version, None, parts, wait_for_diagnosis, reference, options)
        outcome = self.record(report, images=images, origin=origin, reference=reference) if record \
            else CheckOutcome(report=report)
        return CheckOutcome(**{**outcome.__dict__, "diagnosis_error": error,
                               "seconds": time.perf_counter() - start})

    def check_files(self, patterns: Sequence[str], *, version: str = "active", record: bool = True,
                    origin: str = "cli", wait_for_diagnosis: bool = True,
                    parts: Sequence[str] | None = None, max_images: int | None = None) -> CheckOutcome:
        """Find, screen, decode, check and record image files (the ``check`` command's whole flow).

        Files that cannot be images are named and left out before the model is loaded. A batch of more
        than ``max_images`` files is checked on a seeded random subset (the profile's seed), said in the
        outcome's ``sampled`` and the report's source.

        Args:
            max_images: The cap; default ``ZEAL_MAX_CHECK_N`` (``zeal_core.settings``).

        Raises:
            DataError: Fewer than 2 readable images (the message lists why files were left out).
            ConfigError: A cap under 2.
        """
        from zeal_core.data.files import decode_paths, find_images, sample_paths
        from zeal_core.service.files import screen_images
        from zeal_core.settings import get_settings

        start = time.perf_counter()
        limit = max_images if max_images is not None else get_settings().max_check_n
        if limit < 2:
            raise ConfigError(f"--max-images {limit}: a check needs at least 2 images (30 or more for power)")
        paths, problems = find_images(patterns)
        if not paths:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in problems) or "nothing given"
            raise DataError(f"no image files to check ({reasons}): name files, folders or globs such as "
                            "'incoming/*.jpg'")
        paths, sampled = sample_paths(paths, limit, self.profile.seed)
        candidates, refused = screen_images(paths)
        skipped = problems + refused
        _require_two(len(candidates), len(paths), skipped)
        reference = self.reference(version)
        mark = time.perf_counter()
        images, kept, undecodable = decode_paths(candidates, reference.image_size, progress=self.progress)
        skipped += undecodable
        _require_two(images.shape[0], len(paths), skipped)
        outcome = self.check_and_record(images, version=version, record=record, origin=origin,
                                        wait_for_diagnosis=wait_for_diagnosis, parts=parts, file_names=kept,
                                        skipped=skipped, timings={"decode": time.perf_counter() - mark},
                                        source=sampled["source"] if sampled else None)
        seconds = time.perf_counter() - start
        return CheckOutcome(**{**outcome.__dict__, "sampled": sampled, "seconds": seconds})

    # ------------------------------------------------------------------------------ policy and alerts

    def _history_path(self) -> str:
        """The history database's path, without opening it (it may be the thing that is broken)."""
        from zeal_core.history import HistoryStore, default_path

        if isinstance(self._history, HistoryStore):
            return str(self._history.path)
        return str(self._history or default_path())

    def _apply_policy(self, report: CheckReport) -> dict[str, Any] | None:
        """Queue the adaptation job when the retrain policy fires for this check's model."""
        from zeal_core.history.policy import JOB_KIND, decide, note_queued

        if report.version is None:
            return None
        decision = decide(self.history, report.version, report.dataset)
        if decision is None:
            return None
        if self._queue is None:
            from zeal_core.jobs import JobQueue

            self._queue = JobQueue()
        job = self._queue.submit(JOB_KIND, decision.job_params(str(self.history.path)))
        return note_queued(self.history, decision, job.id)

    def _alert(self, report: CheckReport, check_id: int | None,
               action: dict[str, Any] | None) -> AlertResult | None:
        """At most one webhook call per check: for a queued adaptation, else for a drift decision."""
        try:
            settings = self.lab_settings()
        except ConfigError as error:  # invalid stored settings: say so, the check stands
            log.warning("warning: no alert sent: %s", error)
            return None
        event = "policy" if action else ("drift" if report.drift else None)
        if event is None or not settings.webhook_url or event not in settings.alert_on:
            return None
        payload = alert_payload(event, report, check_id, action, self._history_path())
        result = send_webhook(settings.webhook_url, payload, event=event, retries=settings.webhook_retries,
                              timeout_s=settings.webhook_timeout_s, sleep=self._sleep)
        if not result.sent:
            log.warning("alert to %s not sent after %d attempt(s): %s", result.target, result.attempts,
                        result.error)
        return result


def _unexpected(error: BaseException) -> str:
    """One line for an error that is not the lab's own (as the command line prints it)."""
    from zeal_core.cli import unexpected_error_text

    return unexpected_error_text(error)


def _require_two(count: int, total: int, skipped: list[tuple[str, str]]) -> None:
    """DataError unless at least two images are left."""
    if count >= 2:
        return
    listed = "; ".join(f"{Path(name).name}: {reason}" for name, reason in skipped[:5])
    unread = f" ({listed})" if listed else ""
    raise DataError(f"only {count} image(s) could be read from the {total} file(s) given{unread}: a check "
                    "needs at least 2 images, 30 or more for power; name more files, folders or globs, e.g. "
                    "`zeal check incoming/`")
