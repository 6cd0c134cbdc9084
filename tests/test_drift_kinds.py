"""Drift kinds beyond ImageNet-C: geometric and capture pixel kinds, class-mix kinds, and their spec text."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from tests.test_corruptions import mean_abs_diff, smooth_images
from zeal_core.corruptions import (
    DRIFT_KIND_GROUPS,
    IMAGENET_C_ORDER,
    ClassMix,
    DriftSpec,
    apply,
    capture,
    class_mix_info,
    corruption_info,
    drift_kind_groups,
    geometric,
    label_shift,
    list_class_mix_kinds,
    list_corruptions,
    list_drift_kinds,
    supports_unseen_classes,
    unseen,
)
from zeal_core.corruptions.metrics import ssim
from zeal_core.errors import ConfigError

NEW_KINDS = [name for name in list_drift_kinds() if corruption_info(name).group != "imagenet-c"]
RANDOM_NEW = [name for name in NEW_KINDS if corruption_info(name).random]
DETERMINISTIC_NEW = [name for name in NEW_KINDS if not corruption_info(name).random]
DIGITS = tuple(str(digit) for digit in range(10))
IMAGENETTE = ("tench", "English springer", "cassette player", "chain saw", "church", "French horn",
              "garbage truck", "gas pump", "golf ball", "parachute")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images(4, 48, 48)


@pytest.fixture(scope="module")
def images64() -> torch.Tensor:
    return smooth_images(4, 64, 64, seed=1)


def balanced_pool(per_class: int = 60, classes: int = 10, seed: int = 0) -> np.ndarray:
    """Labels of a shuffled pool with ``per_class`` images of each class."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


# -------------------------------------------------------------------------------------- registry, groups


def test_list_corruptions_is_still_exactly_imagenet_c_and_the_new_kinds_are_grouped() -> None:
    assert list_corruptions() == list(IMAGENET_C_ORDER)
    groups = drift_kind_groups()
    assert list(groups) == list(DRIFT_KIND_GROUPS)
    assert groups["imagenet-c"] == list(IMAGENET_C_ORDER)
    assert groups["geometric"] == ["rotation", "zoom", "translation", "perspective"]
    assert set(groups["capture"]) == {"white_balance", "gamma", "exposure", "vignetting", "resize_nearest",
                                      "resize_bilinear", "resize_bicubic", "chroma_subsampling"}
    assert list_drift_kinds() == [name for names in groups.values() for name in names]
    assert list_drift_kinds("geometric") == groups["geometric"]
    for name in NEW_KINDS:
        info = corruption_info(name)
        assert info.group in ("geometric", "capture") and info.family == info.group and info.description
    with pytest.raises(ConfigError, match=r"unknown drift kind group 'optics'.*geometric"):
        list_drift_kinds("optics")


# ---------------------------------------------------------------------------- pixel kinds: the contract


@pytest.mark.parametrize("name", NEW_KINDS)
def test_uint8_batch_keeps_shape_dtype_device_and_changes_images(name: str, images: torch.Tensor) -> None:
    out = apply(images, name, 3, seed=0)
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert mean_abs_diff(out, images) > 0.5, "severity 3 should visibly change the images"


@pytest.mark.parametrize("name", NEW_KINDS)
def test_float_input_in_unit_range_matches_uint8(name: str, images: torch.Tensor) -> None:
    as_float = images.float() / 255.0
    out = apply(as_float, name, 3, seed=0)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert mean_abs_diff(out * 255.0, apply(images, name, 3, seed=0)) < 1.0


@pytest.mark.parametrize("name", NEW_KINDS)
@pytest.mark.parametrize("size", [(8, 8), (37, 50)], ids=["8px", "37x50"])
def test_small_and_odd_sizes_keep_shape(name: str, size: tuple[int, int]) -> None:
    small = smooth_images(2, *size, seed=3)
    for severity in (0.3, 5):
        out = apply(small, name, severity, seed=0)
        assert out.shape == small.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("name", NEW_KINDS)
def test_severity_zero_is_an_identity_copy(name: str, images: torch.Tensor) -> None:
    out = apply(images, name, 0, seed=0)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("name", NEW_KINDS)
def test_effect_grows_with_every_level(name: str, images64: torch.Tensor) -> None:
    clean = images64.float() / 255.0
    outs = [apply(clean, name, level, seed=0) for level in (1, 2, 3, 4, 5)]
    distance = [mean_abs_diff(out, clean) for out in outs]
    similarity = [ssim(out, clean).mean().item() for out in outs]
    rises = all(a < b for a, b in itertools.pairwise(distance))
    falls = all(a > b for a, b in itertools.pairwise(similarity))
    assert rises or falls, f"mean abs diff {distance}, SSIM {similarity}"


@pytest.mark.parametrize("name", NEW_KINDS)
def test_fractional_severity_lies_between_neighbours(name: str, images64: torch.Tensor) -> None:
    clean = images64.float() / 255.0
    effect = {level: mean_abs_diff(apply(clean, name, level, seed=0), clean) for level in (2, 2.5, 3)}
    low, high = sorted((effect[2], effect[3]))
    slack = 0.1 * (high - low) + 1e-4  # parameters interpolate linearly, the effect only roughly
    assert low - slack <= effect[2.5] <= high + slack, effect


@pytest.mark.parametrize("name", NEW_KINDS)
def test_same_seed_same_output(name: str, images: torch.Tensor) -> None:
    assert torch.equal(apply(images, name, 2.5, seed=7), apply(images, name, 2.5, seed=7))


@pytest.mark.parametrize("name", RANDOM_NEW)
def test_different_seeds_differ_for_random_kinds(name: str) -> None:
    batch = smooth_images(16, 32, 32, seed=5)  # 16 images: a random sign agrees on all of them 1 in 65536
    assert not torch.equal(apply(batch, name, 3, seed=1), apply(batch, name, 3, seed=2))


def test_deterministic_new_kinds_ignore_the_seed(images: torch.Tensor) -> None:
    assert DETERMINISTIC_NEW
    for name in DETERMINISTIC_NEW:
        assert torch.equal(apply(images, name, 3, seed=1), apply(images, name, 3, seed=2)), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NEW_KINDS)
def test_cuda_batches_stay_on_the_gpu_and_match_the_cpu(name: str, images: torch.Tensor) -> None:
    gpu = images.cuda()
    out = apply(gpu, name, 3, seed=0)
    assert out.device == gpu.device and out.dtype == torch.uint8 and out.shape == gpu.shape
    assert torch.equal(out, apply(gpu, name, 3, seed=0))
    if name in DETERMINISTIC_NEW:  # random kinds draw from the device's own generator
        assert mean_abs_diff(out.cpu(), apply(images, name, 3, seed=0)) < 1.0


# --------------------------------------------------------------------- pixel kinds: what a level means


@pytest.mark.parametrize("name", ["rotation", "zoom", "translation", "perspective"])
def test_geometric_kinds_leave_a_uniform_image_alone(name: str) -> None:
    flat = torch.full((3, 3, 40, 40), 0.4)  # reflection padding keeps the colour at the edges
    assert torch.allclose(apply(flat, name, 5, seed=0), flat, atol=1e-5)


def _centroid(images: torch.Tensor) -> torch.Tensor:
    weight = images[:, 0]
    rows = torch.arange(images.shape[-2]).view(1, -1, 1).float()
    cols = torch.arange(images.shape[-1]).view(1, 1, -1).float()
    total = weight.sum((1, 2))
    return torch.stack(((weight * rows).sum((1, 2)) / total, (weight * cols).sum((1, 2)) / total), -1)


def test_translation_moves_the_content_by_the_documented_share() -> None:
    spot = torch.zeros(6, 3, 100, 100)
    spot[:, :, 45:55, 45:55] = 1.0  # a centred square: its centroid moves with the content
    moved = apply(spot, "translation", 3, seed=4)
    (share,) = geometric.TRANSLATION_SHARE[3]
    distance = (_centroid(moved) - _centroid(spot)).norm(dim=1)
    assert torch.allclose(distance, torch.full((6,), share * 100), atol=0.5), distance


def test_rotation_turns_a_bar_by_the_documented_angle() -> None:
    bar = torch.zeros(8, 3, 101, 101)
    bar[:, :, 49:52, 10:91] = 1.0  # horizontal bar through the centre
    turned = apply(bar, "rotation", 4, seed=0)[:, 0]
    (degrees,) = geometric.ROTATION_DEGREES[4]
    ys, xs = torch.meshgrid(torch.arange(101.0) - 50, torch.arange(101.0) - 50, indexing="ij")
    for image in turned:
        w = image / image.sum()  # principal axis of the bar's mass
        cxx, cyy, cxy = (w * xs * xs).sum(), (w * ys * ys).sum(), (w * xs * ys).sum()
        angle = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))
        assert abs(abs(angle) - degrees) < 1.0, angle


def test_zoom_magnifies_by_the_documented_factor() -> None:
    spot = torch.zeros(4, 3, 96, 96)
    spot[:, :, 40:56, 40:56] = 1.0
    zoomed = apply(spot, "zoom", 5, seed=0)
    (factor,) = geometric.ZOOM_FACTOR[5]
    area = zoomed[:, 0].sum((1, 2)) / spot[:, 0].sum((1, 2))  # the square's area grows by factor^2
    # the random crop may cut part of the square off, never adds to it; crops that keep it whole show it all
    assert area.max() == pytest.approx(factor**2, rel=0.03) and (area <= factor**2 * 1.03).all()


def test_perspective_keeps_the_centre_and_bends_straight_edges() -> None:
    images = smooth_images(4, 64, 64, seed=2).float() / 255.0
    tilted = apply(images, "perspective", 4, seed=0)
    assert (tilted[..., 31:33, 31:33] - images[..., 31:33, 31:33]).abs().max() < 0.05  # the axis' centre
    assert mean_abs_diff(tilted, images) > 0.02


def test_white_balance_tints_grey_warmer_or_cooler_and_keeps_its_luminance() -> None:
    grey = torch.full((16, 3, 8, 8), 0.5)
    out = apply(grey, "white_balance", 3, seed=0)
    red_minus_blue = out[:, 0, 0, 0] - out[:, 2, 0, 0]
    assert (red_minus_blue > 0.05).any() and (red_minus_blue < -0.05).any()  # both directions drawn
    luminance = sum(w * capture.srgb_to_linear(out[:, c]) for c, w in enumerate(capture._LUMA))
    assert torch.allclose(luminance, capture.srgb_to_linear(grey[:, 0]), atol=0.01)
    warm = capture.white_gains(capture.shifted_kelvin(60.0, warmer=True))
    assert capture.shifted_kelvin(60.0, warmer=True) == pytest.approx(1e6 / (1e6 / 6500 + 60))
    assert warm[0] > 1.0 > warm[2] and capture.white_gains(6500.0) == pytest.approx((1.0, 1.0, 1.0))


def test_gamma_and_exposure_follow_their_documented_curves() -> None:
    mid = torch.full((16, 3, 4, 4), 0.5)
    (exponent,) = capture.GAMMA[3]
    values = apply(mid, "gamma", 3, seed=0)[:, 0, 0, 0]
    assert all(min(abs(v - 0.5**exponent), abs(v - 0.5 ** (1 / exponent))) < 1e-5 for v in values.tolist())
    (stops,) = capture.EXPOSURE_STOPS[2]
    linear = capture.srgb_to_linear(apply(mid, "exposure", 2, seed=0)[:, 0, 0, 0])
    ratio = linear / capture.srgb_to_linear(torch.tensor(0.5))
    assert all(min(abs(r - 2**stops), abs(r - 2**-stops)) < 1e-3 for r in ratio.tolist())


def test_vignetting_darkens_the_corners_by_the_documented_share() -> None:
    white = torch.ones(1, 3, 101, 101)
    for level in (1, 3, 5):
        out = capture.srgb_to_linear(apply(white, "vignetting", level))
        (corner,) = capture.VIGNETTING_CORNER[level]
        assert out[0, :, 50, 50].min() > 0.99 and out[0, :, 0, 0].max() == pytest.approx(corner, abs=0.01)
        # the cos^4 law in between: pixel (75, 75) is 25 px right and down of the centre
        k_squared = corner ** -0.5 - 1
        radius_squared = (25**2 + 25**2) / (50.5**2 + 50.5**2)  # 1 at the corners
        assert out[0, 0, 75, 75] == pytest.approx((1 + k_squared * radius_squared) ** -2, abs=0.01)


def test_chroma_subsampling_keeps_luma_and_blurs_colour(images64: torch.Tensor) -> None:
    clean = images64.float() / 255.0
    out = apply(clean, "chroma_subsampling", 4)
    luma = torch.tensor(capture._RGB_TO_YCC[0]).view(1, 3, 1, 1)
    changed = ((out - clean).abs().amax(1, keepdim=True) > 0)
    inside = (out > 0).all(1, keepdim=True) & (out < 1).all(1, keepdim=True)  # not clipped
    assert changed.any() and inside.float().mean() > 0.5
    luma_change = (out * luma).sum(1, keepdim=True) - (clean * luma).sum(1, keepdim=True)
    assert luma_change[inside].abs().max() < 1e-4


@pytest.mark.parametrize("name", ["resize_nearest", "resize_bilinear", "resize_bicubic"])
def test_resize_chains_differ_by_interpolation(name: str, images64: torch.Tensor) -> None:
    others = [other for other in ("resize_nearest", "resize_bilinear", "resize_bicubic") if other != name]
    out = apply(images64, name, 3)
    assert all(not torch.equal(out, apply(images64, other, 3)) for other in others)


# ----------------------------------------------------------------------------------------- spec text


SPEC_TEXTS = [
    *(f"{name}:3" for name in NEW_KINDS),
    "label_shift:3",
    "label_shift[boost=0/3]:4",
    "label_shift[drop=tench/English_springer]:5",
    "label_shift[keep=1]:2.5",
    "unseen_classes:2",
    "unseen_classes[from=7/8]:1.25",
    "label_shift[boost=0/3]:3+rotation:2@0.5",
    "unseen_classes:1+fog:2+white_balance:1.5@0.3",
]


@pytest.mark.parametrize("text", SPEC_TEXTS)
def test_every_kind_round_trips_through_its_text(text: str) -> None:
    spec = DriftSpec.parse(text)
    assert spec.text == text and DriftSpec.parse(spec.text) == spec
    assert hash(DriftSpec.parse(text)) == hash(spec)
    assert not spec.is_clean


def test_mixed_spec_fields() -> None:
    spec = DriftSpec.parse(" label_shift[ boost = 0/ 3 ]:3 + rotation:2 @ 50% ")
    assert spec.text == "label_shift[boost=0/3]:3+rotation:2@0.5"
    assert spec.steps == (("rotation", 2.0),) and spec.fraction == 0.5
    assert spec.class_mix == ClassMix("label_shift", 3.0, "boost", ("0", "3"))
    assert spec.pixel_spec == DriftSpec.parse("rotation:2@0.5")
    for name, severity in spec.steps:  # what existing code does with a spec: pixel pairs only
        assert name in list_drift_kinds() and severity == 2.0
    # the class-mix step may come anywhere in the text or among the steps; its canonical place is first
    assert DriftSpec.parse("rotation:2+label_shift[boost=0/3]:3@0.5") == spec
    assert DriftSpec((("rotation", 2), ("label_shift[boost=0/3]", 3)), 0.5) == spec
    assert DriftSpec((("rotation", 2),), 0.5, ClassMix("label_shift", 3, "boost", ("0", "3"))) == spec


def test_clean_and_normalisation_with_a_class_mix() -> None:
    assert DriftSpec.parse("label_shift:0+rotation:0").is_clean
    assert DriftSpec.parse("label_shift:0+rotation:0").text == "clean"
    only_mix = DriftSpec.parse("label_shift[drop=2]:5")
    assert not only_mix.is_clean and only_mix.steps == () and only_mix.fraction == 1.0
    assert only_mix.affected_count(10) == 0 and not only_mix.affected_mask(10).any()
    assert DriftSpec.parse("label_shift[drop=2]:5@0.3") == only_mix  # the fraction is about pixels
    assert DriftSpec.parse("label_shift[drop=2]:5+fog:2@0") == only_mix
    spaced = DriftSpec.parse("label_shift[drop=English springer]:1")
    assert spaced.class_mix.classes == ("English_springer",)
    assert spaced.text == "label_shift[drop=English_springer]:1"
    assert DriftSpec.clean().class_mix is None and DriftSpec.clean().is_clean


def test_a_class_mix_leaves_the_pixels_alone(images: torch.Tensor) -> None:
    assert torch.equal(DriftSpec.parse("label_shift:4").apply(images, seed=3), images)
    mixed = DriftSpec.parse("label_shift:4+gamma:3")
    assert torch.equal(mixed.apply(images, seed=3), DriftSpec.parse("gamma:3").apply(images, seed=3))


def test_monitor_schedules_ramp_a_class_mix_severity() -> None:
    from zeal_core.monitor import Schedule

    schedule = Schedule.parse("clean*2,label_shift[boost=0/3]:1..5*5,unseen_classes:2+rotation:1..3*3")
    specs = [DriftSpec.parse(text) for text in schedule.batches()]
    assert [spec.class_mix.severity for spec in specs[2:7]] == [1, 2, 3, 4, 5]
    assert {spec.class_mix.classes for spec in specs[2:7]} == {("0", "3")}
    assert [spec.steps for spec in specs[7:]] == [(("rotation", 1.0),), (("rotation", 2.0),),
                                                 (("rotation", 3.0),)]
    assert Schedule.parse(schedule.text) == schedule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labl_shift:3", r"unknown corruption 'labl_shift'.*rotation.*chroma_subsampling.*label_shift, "
                         r"unseen_classes"),
        ("label_shift[zap=1]:3", "unknown mode 'zap': choose one of boost, drop, keep"),
        ("unseen_classes[boost=1]:3", "unknown mode 'boost': choose one of from"),
        ("label_shift[boost=]:3", "an empty class"),
        ("label_shift[boost=1//2]:3", "an empty class"),
        ("label_shift[=1]:3", "needs a mode"),
        ("label_shift[boost]:3", "needs a mode"),
        ("label_shift[boost=1]x:3", "write kind\\[mode=class/class\\]"),
        ("label_shift[boost=a..b]:3", "reserves"),
        ("label_shift[boost=1/1]:3", "repeats a class"),
        ("fog[boost=1]:2", "only goes with a class-mix kind"),
        ("label_shift:2+unseen_classes:1", "at most one class-mix step"),
        ("label_shift:6", "severity for label_shift must be in \\[0, 5\\]"),
        ("rotation:-1", "severity for rotation must be in \\[0, 5\\]"),
        ("label_shift[boost=0]:high", "not a number"),
    ],
)
def test_bad_class_mix_text_is_a_clear_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DriftSpec.parse(text)


def test_class_mix_registry() -> None:
    assert list_class_mix_kinds() == ["label_shift", "unseen_classes"]
    assert [mode for mode, _ in class_mix_info("label_shift").modes] == ["boost", "drop", "keep"]
    assert class_mix_info("unseen_classes").unseen and not class_mix_info("label_shift").unseen
    with pytest.raises(ConfigError, match="unknown class-mix kind 'x': choose one of label_shift, unseen"):
        class_mix_info("x")
    with pytest.raises(ConfigError, match="need a mode"):
        ClassMix("label_shift", 2, None, ("0",))
    with pytest.raises(ConfigError, match="must be a tuple"):
        ClassMix("label_shift", 2, "boost", "03")  # type: ignore[arg-type]
    assert ClassMix("label_shift", 2, "boost", ["0", "3"]).classes == ("0", "3")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- drawing


@pytest.mark.parametrize(("split_size", "n", "seed"),
                         [(449, 30, 0), (449, 224, 3), (3925, 500, 11), (10, 1, 5)])
def test_draw_without_a_class_mix_is_the_old_draw(split_size: int, n: int, seed: int) -> None:
    from zeal_core.embed import draw_positions, part_positions

    pool = part_positions(split_size, "sample")
    labels = np.arange(len(pool)) % 10
    for text in ("clean", "fog:3@0.5", "rotation:2"):
        positions = DriftSpec.parse(text).draw_positions(labels, n, seed, class_names=DIGITS)
        assert np.array_equal(pool[positions], draw_positions(split_size, n, seed=seed, part="sample"))
        same = DriftSpec.parse(text).draw_positions(labels, n, seed, class_names=DIGITS, known_classes=DIGITS)
        assert np.array_equal(same, positions)


def test_draws_are_distinct_sorted_seeded_and_of_size_n() -> None:
    labels = balanced_pool()
    for text in ("clean", "label_shift:3", "label_shift[boost=4]:2", "unseen_classes:3"):
        spec = DriftSpec.parse(text)
        known = DIGITS[:7] if spec.class_mix and spec.class_mix.kind == "unseen_classes" else None
        first = spec.draw_positions(labels, 120, 5, class_names=DIGITS, known_classes=known)
        assert len(first) == 120 and len(np.unique(first)) == 120 and np.all(np.diff(first) > 0)
        assert first.min() >= 0 and first.max() < len(labels)
        again = spec.draw_positions(labels, 120, 5, class_names=DIGITS, known_classes=known)
        assert np.array_equal(first, again)
        assert not np.array_equal(first, spec.draw_positions(labels, 120, 6, class_names=DIGITS,
                                                             known_classes=known))


def _realised(spec: DriftSpec, labels: np.ndarray, n: int, seed: int, names=DIGITS, known=None) -> np.ndarray:
    positions = spec.draw_positions(labels, n, seed, class_names=names, known_classes=known)
    return np.bincount(labels[positions], minlength=len(names)) / n


@pytest.mark.parametrize("text", ["label_shift[boost=3]:1", "label_shift[boost=3]:3",
                                  "label_shift[boost=0/9]:2", "label_shift[drop=1/2]:2.5",
                                  "label_shift[keep=5/6/7]:4", "label_shift:2", "label_shift:5"])
def test_label_shift_samples_follow_the_target_shares(text: str) -> None:
    n = 250
    labels = balanced_pool(per_class=n, seed=1)  # every class could fill the whole sample
    spec = DriftSpec.parse(text)
    for seed in range(20):  # every draw, not only their average: the quotas are split by largest remainder
        target = spec.target_proportions(labels, DIGITS, seed)
        assert target.sum() == pytest.approx(1.0) and (target >= 0).all()
        assert np.abs(_realised(spec, labels, n, seed) - target).max() <= 1.0 / n + 1e-12


def test_boost_drop_and_keep_mean_what_their_docstrings_say() -> None:
    labels = balanced_pool(per_class=100)
    boost = DriftSpec.parse("label_shift[boost=3]:3").target_proportions(labels, DIGITS, 0)
    assert boost[3] == pytest.approx(8 / 17) and boost[0] == pytest.approx(1 / 17)
    half = DriftSpec.parse("label_shift[drop=3]:2.5").target_proportions(labels, DIGITS, 0)
    assert half[3] == pytest.approx(0.5 / 9.5)
    gone = DriftSpec.parse("label_shift[drop=tench]:5")
    assert gone.target_proportions(labels, IMAGENETTE, 0)[0] == 0.0
    assert 0 not in labels[gone.draw_positions(labels, 500, 0, class_names=IMAGENETTE)]  # knocked out
    kept = DriftSpec.parse("label_shift[keep=English_springer/9]:5")
    assert set(labels[kept.draw_positions(labels, 150, 0, class_names=IMAGENETTE)]) == {1, 9}
    assert DriftSpec.parse("label_shift[boost=3]:0").is_clean


def test_a_boost_the_pool_cannot_fill_takes_all_it_has_and_renormalises() -> None:
    labels = balanced_pool(per_class=20)  # 200 images, 20 of class 3
    spec = DriftSpec.parse("label_shift[boost=3]:5")  # wants 32 / 41 = 78 % of class 3
    counts = np.bincount(labels[spec.draw_positions(labels, 100, 0, class_names=DIGITS)], minlength=10)
    assert counts[3] == 20 and counts.sum() == 100
    assert counts[[0, 1, 2, 4, 5, 6, 7, 8, 9]].max() - counts[[0, 1, 2, 4, 5, 6, 7, 8, 9]].min() <= 1
    assert len(spec.draw_positions(labels, 200, 0, class_names=DIGITS)) == 200  # the whole pool
    knocked = DriftSpec.parse("label_shift[drop=0/1/2/3/4/5/6/7]:5")  # 40 images left
    with pytest.raises(ConfigError, match="hold only 40 in the pool: use n <= 40"):
        knocked.draw_positions(labels, 41, 0, class_names=DIGITS)
    with pytest.raises(ConfigError, match="leaves no class"):
        everything = DriftSpec.parse(f"label_shift[drop={'/'.join(DIGITS)}]:5")
        everything.draw_positions(labels, 5, 0, class_names=DIGITS)


def test_random_prior_is_seeded_and_gets_more_uneven_with_severity() -> None:
    labels = balanced_pool()
    prior = DriftSpec.parse("label_shift:3")
    first = prior.target_proportions(labels, DIGITS, 4)
    assert np.array_equal(first, prior.target_proportions(labels, DIGITS, 4))
    assert not np.allclose(first, prior.target_proportions(labels, DIGITS, 5))
    spread = []
    for level in (0.5, 1, 2, 3, 4, 5):
        spec = DriftSpec.parse(f"label_shift:{level}")
        targets = np.array([spec.target_proportions(labels, DIGITS, seed) for seed in range(200)])
        spread.append(np.abs(targets - 0.1).sum(1).mean())  # mean L1 distance from the pool's mix
    assert all(a < b for a, b in itertools.pairwise(spread)), spread
    # at level 1 the concentration is 10 per class: the prior's L1 distance is small; at 5 (0.1) it is large
    assert spread[1] < 0.35 and spread[-1] > 1.4
    assert label_shift.concentration(3) == pytest.approx(1.0) and label_shift.concentration(0) == math.inf


def test_unseen_class_share_matches_the_severity() -> None:
    labels = balanced_pool(per_class=100)
    known = DIGITS[:6]
    for level in (0.5, 1, 2.5, 5):
        spec = DriftSpec.parse(f"unseen_classes:{level}")
        target = spec.target_proportions(labels, DIGITS, 0, known_classes=known)
        assert target[6:].sum() == pytest.approx(unseen.unseen_share(level)) == pytest.approx(level / 10)
        for seed in range(5):
            realised = _realised(spec, labels, 200, seed, known=known)
            assert abs(realised[6:].sum() - level / 10) <= 1.0 / 200 + 1e-12
    only = DriftSpec.parse("unseen_classes[from=8]:3")
    realised = _realised(only, labels, 200, 0, known=known)
    assert realised[8] == pytest.approx(0.3) and realised[[6, 7, 9]].sum() == 0


def test_other_draws_for_a_subset_model_never_hold_unseen_classes() -> None:
    labels = balanced_pool(per_class=50)
    known = ("0", "1", "2", "3", "4")
    for text in ("clean", "fog:2", "label_shift:4", "label_shift[boost=1]:3", "label_shift[drop=7]:5"):
        spec = DriftSpec.parse(text)
        drawn = labels[spec.draw_positions(labels, 200, 0, class_names=DIGITS, known_classes=known)]
        assert set(drawn) <= {0, 1, 2, 3, 4}, text
        assert spec.target_proportions(labels, DIGITS, 0, known_classes=known)[5:].sum() == 0
    with pytest.raises(ConfigError, match="knows the classes of holds 250"):
        DriftSpec.clean().draw_positions(labels, 251, 0, class_names=DIGITS, known_classes=known)
    with pytest.raises(ConfigError, match=r"not trained on \['7'\].*use unseen_classes"):
        DriftSpec.parse("label_shift[boost=7]:3").draw_positions(labels, 10, 0, class_names=DIGITS,
                                                                  known_classes=known)
    with pytest.raises(ConfigError, match="was trained on \\['1'\\]"):
        DriftSpec.parse("unseen_classes[from=1]:3").draw_positions(labels, 10, 0, class_names=DIGITS,
                                                                    known_classes=known)


def test_unseen_classes_for_a_model_of_every_class_says_which_models_support_it() -> None:
    labels = balanced_pool()
    spec = DriftSpec.parse("unseen_classes:2")
    for known in (None, DIGITS, (*DIGITS, "extra")):
        with pytest.raises(ConfigError, match=r"subset of the dataset's classes.*--classes"):
            spec.draw_positions(labels, 50, 0, class_names=DIGITS, known_classes=known)
    assert supports_unseen_classes(DIGITS, DIGITS[:5]) and not supports_unseen_classes(DIGITS, None)
    assert not supports_unseen_classes(DIGITS, DIGITS)


def test_class_references_resolve_by_name_spaces_as_underscores_or_index() -> None:
    from zeal_core.corruptions.class_mix import resolve_class_list, resolve_classes

    assert list(resolve_classes(["French_horn", "church", "0"], IMAGENETTE)) == [0, 4, 5]
    assert resolve_class_list(["gas pump", " 9", "tench"], IMAGENETTE) == ("gas pump", "parachute", "tench")
    folder = ("10", "2", "a_b", "a b")  # names win over indices; an exact name over a respelled one
    assert list(resolve_classes(["2", "a_b"], folder)) == [1, 2]
    assert list(resolve_classes(["a b"], folder)) == [3] and list(resolve_classes(["3"], folder)) == [3]
    with pytest.raises(ConfigError, match=r"unknown class 'cat'.*0=tench, 1=English_springer"):
        DriftSpec.parse("label_shift[boost=cat]:2").draw_positions(balanced_pool(), 10, 0,
                                                                   class_names=IMAGENETTE)
    with pytest.raises(ConfigError, match="names a class twice"):
        resolve_class_list(["0", "tench"], IMAGENETTE)


@pytest.mark.parametrize("bad", [np.array([0, 1, 10]), np.array([[0, 1]]), np.array([0.5, 1.0]),
                                 np.array([-1, 2])])
def test_bad_pool_labels_are_config_errors(bad: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="pool labels"):
        DriftSpec.parse("label_shift:2").draw_positions(bad, 1, 0, class_names=DIGITS)


def test_bad_n_and_seed_are_config_errors() -> None:
    labels = balanced_pool()
    for n in (0, -3, 601):
        with pytest.raises(ConfigError, match="n"):
            DriftSpec.clean().draw_positions(labels, n, 0, class_names=DIGITS)
    with pytest.raises(ConfigError, match="seed"):
        DriftSpec.parse("label_shift:2").draw_positions(labels, 5, -1, class_names=DIGITS)


# ---------------------------------------------------------------------------- train --classes (CLI)


def test_train_classes_flag_trains_a_subset_model(capsys: pytest.CaptureFixture[str]) -> None:
    from zeal_core.cli import main
    from zeal_core.models.registry import ModelRegistry

    code = main(["train", "--dataset", "digits", "--epochs", "1", "--image-size", "16", "--batch-size", "64",
                 "--device", "cpu", "--classes", "0,1,2", "--json"])
    assert code == 0
    version = json.loads(capsys.readouterr().out)["version"]
    card = ModelRegistry().card(version)
    assert card.class_names == ("0", "1", "2") and card.model_config.num_classes == 3
    assert supports_unseen_classes(DIGITS, card.class_names)
    labels = balanced_pool()
    drawn = DriftSpec.parse("unseen_classes:5").draw_positions(labels, 100, 0, class_names=DIGITS,
                                                              known_classes=card.class_names)
    assert np.isin(labels[drawn], [0, 1, 2]).mean() == pytest.approx(0.5)


def test_train_classes_flag_refuses_an_unknown_class() -> None:
    from zeal_core.commands.train import _chosen_classes

    assert _chosen_classes("digits", "7, 3") == ("7", "3") and _chosen_classes("digits", None) is None
    with pytest.raises(ConfigError, match="unknown class 'seven'"):
        _chosen_classes("digits", "seven,3")


# ------------------------------------------------------------------------------- calibration benchmark


def test_bench_drift_kinds_reports_accuracy_drops_and_verdicts(tmp_path) -> None:
    import argparse

    from benchmarks._harness import finished
    from benchmarks.drift_kinds import run
    from zeal_core.data import load_dataset
    from zeal_core.models.factory import ModelConfig, build_model
    from zeal_core.models.registry import ModelRegistry

    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", num_classes=10, image_size=16)
    model, _ = build_model(config)  # random weights: only the table's shape and arithmetic are checked
    digits = load_dataset("digits")
    card = ModelRegistry().save(model, model_config=config, dataset="digits",
                                dataset_fingerprint=digits.fingerprint, recipe={}, metrics={})
    args = argparse.Namespace(dataset="digits", model=card.version, n=12, kinds=("rotation", "gamma"),
                              severities=(3.0,), no_imagenet_c=False, seed=0, device="cpu",
                              batch_size=12, out=tmp_path / "out" / "drift_kinds_test.json")
    result = finished(run)(args)
    assert result["n"] == 12 and set(result["kinds"]) == {"rotation", "gamma"}
    assert list(result["imagenet_c"]) == list_corruptions()
    for cells in [*result["kinds"].values(), *result["imagenet_c"].values()]:
        assert set(cells) == {"3"}
        for cell in cells.values():
            assert cell["drop"] == pytest.approx(result["clean_accuracy"] - cell["accuracy"], abs=0.02)
    summary = result["imagenet_c_summary"]["3"]
    assert summary["min_drop"] <= summary["q25_drop"] <= summary["median_drop"] <= summary["max_drop"]
    assert set(result["calibration"]) == {"rotation", "gamma"}
    assert set(result["calibration"].values()) <= {"comparable", "in IQR", "in range", "weaker", "stronger"}
    saved = json.loads((tmp_path / "out" / "drift_kinds_test.json").read_text())
    assert saved["kinds"] == result["kinds"]
    assert "| rotation |" in (tmp_path / "out" / "drift_kinds_test.md").read_text()
