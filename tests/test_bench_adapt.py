"""The adapt benchmark's pure parts: runs below the source, the targets, joining per-setting results, and
the stream cache's reuse of a longer seeded draw."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from benchmarks._adapt_join import join, paired
from benchmarks._adapt_streams import build_stream
from benchmarks.adapt import longest_run_below, per_corruption, targets


def record(corruption: str, accuracy: float, source: float) -> dict:
    return {"corruption": corruption, "accuracy": accuracy, "source": source}


def test_longest_run_below_the_source_counts_consecutive_batches_only() -> None:
    records = [record("a", 0.5, 0.6), record("a", 0.7, 0.6), record("b", 0.4, 0.5), record("b", 0.3, 0.5),
               record("a", 0.6, 0.6)]
    assert longest_run_below(records) == 2
    assert longest_run_below([record("a", 0.6, 0.6)]) == 0  # equal is not below
    assert per_corruption(records) == pytest.approx({"a": 0.6, "b": 0.35})


def row(mean: float, per: dict[str, float], **extra: float) -> dict:
    return {"mean": mean, "per_corruption": per, **extra}


def test_targets_say_met_and_missed_with_their_numbers() -> None:
    table = {"continual": {"source": row(0.5, {"a": 0.5, "b": 0.5}, clean_after=0.70),
                           "tent/plain": row(0.55, {"a": 0.6, "b": 0.5}, clean_after=0.70),
                           "roid": row(0.60, {"a": 0.7, "b": 0.49}, clean_after=0.67)},
             "mixed": {"source": row(0.5, {"a": 0.5, "b": 0.5}, clean_after=0.70, longest_run_below_source=0),
                       "roid": row(0.6, {"a": 0.7, "b": 0.5}, clean_after=0.69, longest_run_below_source=2)}}
    result = targets(table)
    assert result["continual_mean_vs_tent_plain_plus_3"] == {"value": pytest.approx(0.05), "met": True}
    assert result["continual_never_below_source"]["met"] is False
    assert result["continual_never_below_source"]["value"] == {"b": pytest.approx(-0.01)}
    assert result["continual_clean_within_2"]["met"] is False  # 3 points lost
    assert result["mixed_clean_within_2"]["met"] is True
    assert result["mixed_no_collapse"] == {"value": 2, "met": False}


def part(setting: str, accuracies: dict[str, list[float]], n: int = 128) -> dict:
    protocol = {"corruptions": ["a"], "severity": 5.0, "n": n, "batch_size": 64, "seeds": [0],
                "max_clean_drop": 0.02, "gate": True}
    rows = {name: row(sum(values) / len(values), {"a": sum(values) / len(values)}, clean_after=0.7,
                      longest_run_below_source=0, se_images=0.01) for name, values in accuracies.items()}
    return {"machine": {"load_average": [1.0]}, "model": {"version": "m"}, "protocol": protocol,
            "table": {setting: rows}, "seconds": 1.0,
            "per_seed": {"0": {setting: {name: {"batch_accuracy": values}
                                         for name, values in accuracies.items()}}}}


def test_joined_parts_keep_every_setting_and_pair_the_same_batches() -> None:
    continual = part("continual", {"source": [0.5, 0.5, 0.6], "roid": [0.6, 0.7, 0.6]})
    mixed = part("mixed", {"source": [0.5, 0.6], "roid": [0.5, 0.6]})
    result = join([continual, mixed])
    assert list(result["table"]) == ["continual", "mixed"]
    assert "continual_never_below_source" in result["targets"] and "mixed_no_collapse" in result["targets"]
    difference = result["paired_batches"]["continual: roid - source"]
    assert difference["mean"] == pytest.approx(0.1) and difference["batches"] == 3
    assert result["paired_batches"]["mixed: roid - source"]["se"] == 0.0
    assert paired(result["per_seed"], "episodic", "roid", "source") is None
    with pytest.raises(ValueError, match="cannot be joined"):
        join([continual, part("mixed", {"source": [0.5]}, n=256)])


def episodic_part(served: float) -> dict:
    result = part("episodic", {"source": [0.5], "roid": [served]})
    result["table"]["episodic"]["roid"].update(clean_after_passed_min=0.7, clean_source=0.7)
    return result


def test_a_joined_result_joins_again_with_one_setting_rerun() -> None:
    first = join([part("continual", {"source": [0.5, 0.6], "roid": [0.6, 0.7]}), episodic_part(0.48)])
    assert first["targets"]["episodic_never_below_source"]["met"] is False
    rerun = episodic_part(0.5)
    rerun["protocol"]["min_gain_z"] = 1.645  # the rerun's guard declines versions without a credible gain
    again = join([first, rerun])
    assert list(again["table"]) == ["continual", "episodic"] and again["protocol"]["min_gain_z"] == 1.645
    assert again["table"]["continual"] == first["table"]["continual"]
    assert again["targets"]["episodic_never_below_source"]["met"] is True
    assert again["machine"]["load_average"] == {"continual": [1.0], "episodic": [1.0]}
    assert again["seconds"] == {"continual": 1.0, "episodic": 1.0}


@dataclass
class TinyDataset:
    fingerprint: str
    images: torch.Tensor
    labels: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


def test_a_shorter_stream_is_the_prefix_of_a_longer_cached_draw(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    dataset = TinyDataset("fp", torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=generator),
                          torch.arange(40))
    long = build_stream(dataset, "clean", 0.0, 32, seed=0, index=0, size=8, cache=tmp_path)
    short = build_stream(dataset, "clean", 0.0, 16, seed=0, index=0, size=8, cache=tmp_path)
    assert torch.equal(short.images, long.images[:16]) and torch.equal(short.labels, long.labels[:16])
    other = TinyDataset("another", dataset.images, dataset.labels)  # another dataset's cache is not reused
    fresh = build_stream(other, "clean", 0.0, 16, seed=0, index=5, size=8, cache=tmp_path)
    assert not torch.equal(fresh.labels, long.labels[:16])
