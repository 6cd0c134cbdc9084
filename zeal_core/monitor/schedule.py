"""Drift schedules of a simulated stream: which drift spec each batch gets, in a one-line text form.

``clean*10,gaussian_noise:3*20`` is ten clean batches then twenty noisy ones. A spec may hold one range
``a..b`` that ramps linearly over its segment (a severity, or the share of affected images after ``@``).
Every spec the drift kinds accept works, class mixes included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zeal_core.errors import ConfigError

MAX_BATCHES = 2000  # a schedule longer than this is refused (a typo such as "*10000" would run for hours)

# "spec*count"; spec may hold one range "a..b" (severity or fraction) that ramps over the segment's batches.
_SEGMENT = re.compile(r"^(?P<spec>[^*]+?)\s*\*\s*(?P<count>\d+)$")
_RANGE = re.compile(r"(?P<low>\d+(?:\.\d+)?)\.\.(?P<high>\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Schedule:
    """Which drift spec each batch of the stream gets, as segments of consecutive batches."""

    segments: tuple[tuple[str, int], ...]  # (drift spec text, possibly with one "a..b" ramp; batches)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``"clean*10,gaussian_noise:3*20"``: comma-separated ``spec*batches`` segments.

        A spec may hold one range that ramps linearly over its segment: ``gaussian_noise:1..5*10`` (severity
        1 to 5) or ``contrast:4@0.1..1*10`` (share of affected images 10 % to 100 %). A segment without
        ``*count`` is one batch.

        Raises:
            ConfigError: Empty schedule, bad count, or a spec the corruptions module rejects.
        """
        from zeal_core.corruptions import DriftSpec

        if not isinstance(text, str) or not text.strip():
            raise ConfigError("empty schedule: write e.g. 'clean*10,gaussian_noise:3*20'")
        segments = []
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            match = _SEGMENT.match(part)
            spec, count = (match["spec"].strip(), int(match["count"])) if match else (part, 1)
            if count < 1:
                raise ConfigError(f"schedule segment {part!r}: the batch count must be at least 1")
            for probe in _expand(spec, 2):  # both ends of a ramp must be valid specs
                try:
                    DriftSpec.parse(probe)
                except ConfigError as error:
                    raise ConfigError(f"schedule segment {part!r}: {error}") from None
            segments.append((spec, count))
        if not segments:
            raise ConfigError("empty schedule: write e.g. 'clean*10,gaussian_noise:3*20'")
        schedule = cls(tuple(segments))
        if len(schedule) > MAX_BATCHES:
            raise ConfigError(f"schedule has {len(schedule)} batches; at most {MAX_BATCHES} are allowed")
        return schedule

    @classmethod
    def sudden(cls, spec: str, before: int = 10, after: int = 20) -> Schedule:
        """``before`` clean batches, then ``after`` batches of ``spec`` at once."""
        return cls.parse(f"clean*{before},{spec}*{after}")

    @classmethod
    def gradual(cls, corruption: str, severity: float = 5.0, before: int = 10, ramp: int = 20,
                after: int = 10, by: str = "severity") -> Schedule:
        """Clean, then a ramp (of severity from 0.5 to ``severity``, or of the affected share from 10 % to
        100 %, ``by="fraction"``), then ``after`` batches at full strength."""
        if by == "severity":
            ramp_spec = f"{corruption}:0.5..{severity:g}"
        elif by == "fraction":
            ramp_spec = f"{corruption}:{severity:g}@0.1..1"
        else:
            raise ConfigError(f"gradual drift by {by!r}: use 'severity' or 'fraction'")
        return cls.parse(f"clean*{before},{ramp_spec}*{ramp},{corruption}:{severity:g}*{after}")

    @classmethod
    def recurring(cls, spec: str, clean: int = 10, drifted: int = 10, cycles: int = 3) -> Schedule:
        """``cycles`` times: ``clean`` clean batches, then ``drifted`` batches of ``spec``."""
        if cycles < 1:
            raise ConfigError(f"recurring drift needs at least 1 cycle, got {cycles}")
        return cls.parse(",".join([f"clean*{clean},{spec}*{drifted}"] * cycles))

    @classmethod
    def mixed(cls, specs: list[str], batches: int = 30, clean: int = 0) -> Schedule:
        """``clean`` clean batches, then ``batches`` batches cycling through ``specs`` one batch each (a
        stream whose drift changes from batch to batch: several cameras, sites or sources interleaved)."""
        if not specs:
            raise ConfigError("a mixed schedule needs at least one drift spec")
        cycle = [specs[index % len(specs)] for index in range(batches)]
        return cls.parse(",".join(([f"clean*{clean}"] if clean else []) + [f"{spec}*1" for spec in cycle]))

    @property
    def text(self) -> str:
        """Canonical text form (``Schedule.parse(s.text) == s``)."""
        return ",".join(f"{spec}*{count}" for spec, count in self.segments)

    def __len__(self) -> int:
        return sum(count for _, count in self.segments)

    def batches(self) -> list[str]:
        """The drift spec text of every batch, ramps expanded."""
        out: list[str] = []
        for spec, count in self.segments:
            out.extend(_expand(spec, count))
        return out


def _expand(spec: str, count: int) -> list[str]:
    """``count`` spec texts for a segment; a range ``a..b`` ramps linearly from ``a`` (first) to ``b``."""
    match = _RANGE.search(spec)
    if match is None:
        return [spec] * count
    low, high = float(match["low"]), float(match["high"])
    texts = []
    for index in range(count):
        value = low if count == 1 else low + (high - low) * index / (count - 1)
        texts.append(spec[:match.start()] + f"{round(value, 4):g}" + spec[match.end():])
    return texts

