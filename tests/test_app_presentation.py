"""What the pages draw, without running a page: figures (palette, legends, axes), p-value and estimate texts,
captions. Each case is one a new user tripped over (issue 28)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app_pages import _lab, _labelfree
from zeal_core.estimate.base import AccuracyEstimate

DETECTORS = ("mmd", "ks", "cvm", "bbsd", "c2st", "mmd-fuse", "mmd-agg")


@dataclass
class FakeSweep:
    """The parts of a ``SeveritySweep`` the curves figure reads."""

    severities: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)

    def p_values(self) -> dict[str, list[float]]:
        return {name: [0.5 / (1 + index * level) ** (3 * index) for level in self.severities]
                for index, name in enumerate(DETECTORS)}

    def accuracy(self) -> list[float]:
        return [0.99, 0.99, 0.98, 0.96, 0.93, 0.90]

    def estimated_accuracy(self) -> list[tuple[float, float, float]]:
        return [(value, value - 0.03, min(1.0, value + 0.02)) for value in self.accuracy()]


def test_series_styles_differ_in_hue_dash_and_marker() -> None:
    styles = [_lab.series_style(index) for index in range(len(DETECTORS))]
    for part in (lambda s: s["line"]["color"], lambda s: s["line"]["dash"], lambda s: s["marker"]["symbol"]):
        assert len({part(style) for style in styles[:6]}) == 6
    assert len({(s["line"]["color"], s["line"]["dash"], s["marker"]["symbol"]) for s in styles}) == 7
    assert all(style["line"]["color"] in _lab.OKABE_ITO for style in styles)


@pytest.mark.parametrize(("values", "low_at_least", "high_at_most"), [
    ([0.99, 0.98, 0.90], 0.85, 1.02),  # zoomed to the data: not 0-100 %
    ([0.985, 0.99], 0.88, 1.02),  # a flat line still gets a 10-point axis, so noise is not magnified
    ([0.05, 0.5], 0.0, 0.55),
])
def test_accuracy_axis_zooms_to_the_values(values, low_at_least, high_at_most) -> None:
    low, high = _lab.accuracy_range(values)
    assert low_at_least <= low < min(values) and max(values) < high <= high_at_most
    assert high - low >= _lab.MIN_ACCURACY_SPAN - 1e-9


def test_accuracy_axis_without_values_is_the_whole_range() -> None:
    assert _lab.accuracy_range([None]) == [0.0, 1.02]


def test_severity_curves_every_mark_is_explained_and_detectors_look_different() -> None:
    figure = _lab.severity_curves_figure(FakeSweep(), threshold=0.05 / 7, alpha=0.05, marker=3.0,
                                         x_title="severity of fog")
    traces = list(figure.data)
    for trace in traces:  # nothing drawn without a legend entry (the old band drew unexplained dots)
        assert trace.name and trace.showlegend is not False
        if trace.fill == "toself":
            assert trace.mode == "lines"
    detectors = [trace for trace in traces if trace.name in DETECTORS]
    assert len({trace.line.color for trace in detectors}) == len(DETECTORS)
    assert {trace.legend for trace in traces if trace.name not in DETECTORS and "α/k" not in trace.name} \
        == {"legend2"}  # the accuracy panel's own legend
    assert any(trace.name.startswith("α/k = 0.05/7") for trace in traces)  # the dashed line, explained
    assert min(min(trace.y) for trace in detectors) >= _lab.P_SHOWN_FROM  # tiny p-values stay on the axis
    low, high = figure.layout.yaxis2.range
    assert low > 0.5 and high <= 1.02  # the accuracy range that matters is not squashed


def stream_result() -> dict:
    batches = [{"index": index, "p_value": 0.5 if index < 4 else 0.0005, "alarm": 4 <= index < 6,
                "drift_spec": "clean" if index < 4 else "gaussian_noise:5",
                "accuracy_without_policy": 0.98 if index < 4 else 0.75,
                "accuracy_with_policy": 0.98 if index < 6 else 0.95,
                "estimated_accuracy": 0.9, "estimate_low": 0.85, "estimate_high": 0.95}
               for index in range(10)]
    return {"batches": batches, "config": {"alpha": 0.05},
            "retrains": [{"batch_index": 5, "strategy": "bn-adapt"}]}


def test_monitor_stream_band_and_retrain_have_legend_entries_and_the_label_clears_the_line() -> None:
    figure = _lab.stream_figure(stream_result())
    names = {trace.name for trace in figure.data}
    assert {"drifted batches (schedule)", "retrain (policy)", "alarm", "p-value"} <= names
    label = next(item for item in figure.layout.annotations if item.text == "retrain")
    assert label.xanchor == "left" and label.xshift > 0  # beside the dotted line, not over it
    assert not any("reference now follows" in (item.text or "") for item in figure.layout.annotations)


def test_recorded_p_values_at_the_floor_read_as_on_every_page() -> None:
    item = {"detector": "mmd", "p_value": 1 / 501, "details": {"num_permutations": 500}}
    assert _lab.p_value_text(item) == "≤ 0.002 (floor)"
    assert "floor" in _lab.floor_note([item])
    plain = {"detector": "ks", "p_value": 0.2, "details": {}}
    assert _lab.p_value_text(plain) == "0.200" and _lab.floor_note([plain]) == ""


def test_history_time_axis_spans_minutes_for_checks_made_in_minutes() -> None:
    import pandas as pd
    from plotly.subplots import make_subplots

    stamps = ["2026-12-01T10:00:00Z", "2026-12-01T10:02:00Z", "2026-12-01T10:05:00Z"]
    figure = _labelfree.readable_time_axis(make_subplots(rows=2, cols=1), stamps)
    low, high = (pd.Timestamp(value) for value in figure.layout.xaxis.range)
    assert pd.Timedelta(minutes=5) < high - low <= pd.Timedelta(minutes=7)
    single = _labelfree.readable_time_axis(make_subplots(rows=2, cols=1), stamps[:1])
    low, high = (pd.Timestamp(value) for value in single.layout.xaxis.range)
    assert high - low == pd.Timedelta(minutes=1)


def test_class_share_chart_labels_every_class() -> None:
    @dataclass
    class Diagnosis:
        reference_class_proportions: dict
        estimated_class_proportions: dict

    shares = {str(label): 0.1 for label in range(10)}
    figure = _labelfree.proportions_figure(Diagnosis(shares, shares), tuple(str(d) for d in range(10)))
    assert figure.layout.xaxis.type == "category" and figure.layout.xaxis.dtick == 1
    assert list(figure.data[0].x) == [str(d) for d in range(10)]


@pytest.mark.parametrize(("name", "limit"), [("b09_label8.png", 16), ("x.png", 5),
                                            ("a_very_long_production_file_0001.jpeg", 18)])
def test_short_names_keep_their_ends(name: str, limit: int) -> None:
    short = _lab.short_name(name, limit)
    if len(name) <= limit:
        assert short == name
    else:
        assert len(short) <= limit and short.endswith(name[-4:]) and short[0] == name[0] and "…" in short


def estimate(**changes) -> AccuracyEstimate:
    values = {"estimator": "pm-atc", "accuracy": 0.9, "low": 0.84, "high": 0.95, "level": 0.9, "n": 200}
    return AccuracyEstimate(**{**values, **changes})


def test_estimate_caution_names_extrapolation_and_collapsed_intervals() -> None:
    assert _labelfree.estimate_caution(estimate()) is None
    collapsed = _labelfree.estimate_caution(estimate(accuracy=1.0, low=1.0, high=1.0, n=40))
    assert collapsed.startswith("Low information")
    assert "one image in 40" in collapsed
    flagged = estimate(details={"extrapolation": "confidence below every bank shift"})
    assert _labelfree.estimate_caution(flagged).startswith("Extrapolating: confidence below every bank shift")
    assert _labelfree.estimate_caution({**flagged.to_dict()}).startswith("Extrapolating")  # a recorded one
    assert _labelfree.estimate_caution({"low": 0.8, "high": 0.9, "n": 100, "extrapolation": True}) \
        .startswith("Extrapolating: the sample lies outside")
