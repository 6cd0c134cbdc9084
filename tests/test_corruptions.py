"""The corruption registry, ``apply`` and ``DriftSpec`` (small images, so the file stays fast)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from zeal_core.corruptions import (
    IMAGENET_C_ORDER,
    DriftSpec,
    apply,
    corruption_info,
    list_corruptions,
    register_corruption,
)
from zeal_core.corruptions.frost_texture import generate_frost_textures
from zeal_core.corruptions.metrics import ssim
from zeal_core.errors import ConfigError

NAMES = list_corruptions()
RANDOM_NAMES = [name for name in NAMES if corruption_info(name).random]
# ImageNet-C's saturate desaturates at levels 1-2 and oversaturates at 3-5, so between 2 and 3 its factor
# passes through 1 (the clean image): its effect at 2.5 is not between those at 2 and 3 by definition
NOT_MONOTONE_BETWEEN_2_AND_3 = {"saturate"}


def smooth_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Photo-like uint8 test images: coarse colour noise up-sampled (smooth regions) plus a little detail."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, 6, 6), generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    detail = torch.rand((n, 3, height // 3, width // 3), generator=generator)
    detail = F.interpolate(detail, size=(height, width))
    images = 0.85 * images + 0.15 * detail
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images(4, 48, 48)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def test_registry_has_all_imagenet_c_corruptions_in_order() -> None:
    assert list(IMAGENET_C_ORDER) == NAMES
    families = {corruption_info(name).family for name in NAMES}
    assert families == {"noise", "blur", "weather", "digital"}
    for name in NAMES:
        info = corruption_info(name)
        assert info.name == name and info.description


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="registered twice"):
        @register_corruption("noise", "a second gaussian_noise")
        def gaussian_noise(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
            return images


@pytest.mark.parametrize("name", NAMES)
def test_uint8_batch_keeps_shape_dtype_and_changes_images(name: str, images: torch.Tensor) -> None:
    out = apply(images, name, 3, seed=0)
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert mean_abs_diff(out, images) > 0.5, "severity 3 should visibly change the images"


@pytest.mark.parametrize("name", NAMES)
def test_float_input_in_unit_range_matches_uint8(name: str, images: torch.Tensor) -> None:
    as_float = images.float() / 255.0
    out = apply(as_float, name, 3, seed=0)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    # the same computation as on uint8, up to the final rounding (and rare threshold flips)
    assert mean_abs_diff(out * 255.0, apply(images, name, 3, seed=0)) < 2.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(32, 32), (37, 50)], ids=["32px", "37x50"])
def test_small_and_odd_sizes_keep_shape(name: str, size: tuple[int, int]) -> None:
    small = smooth_images(2, *size, seed=3)
    out = apply(small, name, 5, seed=0)
    assert out.shape == small.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_an_identity_copy(name: str, images: torch.Tensor) -> None:
    out = apply(images, name, 0, seed=0)
    assert torch.equal(out, images)
    assert out.data_ptr() != images.data_ptr()


@pytest.fixture(scope="module")
def images64() -> torch.Tensor:
    return smooth_images(4, 64, 64, seed=1)


@pytest.mark.parametrize("name", NAMES)
def test_effect_grows_with_severity(name: str, images64: torch.Tensor) -> None:
    # 64 px: at smaller sizes glass blur's scaled displacement rounds to one pixel at every level, and its
    # level 3 (three shuffle passes) is then stronger than level 5 (two)
    images = images64
    # saturate desaturates at 1-2 and oversaturates at 3-5: two directions, so only 3 -> 4 -> 5 must grow
    levels = (3, 4, 5) if name == "saturate" else (1, 3, 5)
    outs = {level: apply(images, name, level, seed=0) for level in levels}
    similarity = [ssim(outs[level], images).mean().item() for level in levels]
    distance = [mean_abs_diff(outs[level], images) for level in levels]
    ssim_falls = similarity[0] > similarity[1] > similarity[2]
    distance_rises = distance[0] < distance[1] < distance[2]
    assert ssim_falls or distance_rises, f"SSIM {similarity}, mean abs diff {distance}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name: str, images: torch.Tensor) -> None:
    assert torch.equal(apply(images, name, 2.5, seed=7), apply(images, name, 2.5, seed=7))


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_different_seed_different_output(name: str, images: torch.Tensor) -> None:
    assert not torch.equal(apply(images, name, 3, seed=1), apply(images, name, 3, seed=2))


def test_deterministic_corruptions_ignore_the_seed(images: torch.Tensor) -> None:
    for name in set(NAMES) - set(RANDOM_NAMES):
        assert torch.equal(apply(images, name, 3, seed=1), apply(images, name, 3, seed=2)), name


@pytest.mark.parametrize("name", sorted(set(NAMES) - NOT_MONOTONE_BETWEEN_2_AND_3))
def test_interpolated_severity_lies_between_neighbours(name: str, images: torch.Tensor) -> None:
    # float images avoid rounding; the same seed gives the same random draws at every severity
    clean = images.float() / 255.0
    effect = {level: mean_abs_diff(apply(clean, name, level, seed=0), clean) for level in (2, 2.5, 3)}
    low, high = sorted((effect[2], effect[3]))
    slack = 0.15 * (high - low) + 0.03 * high + 1e-3  # parameters interpolate, the effect only roughly
    assert low - slack <= effect[2.5] <= high + slack, effect


def test_saturate_passes_through_clean_between_levels_2_and_3(images: torch.Tensor) -> None:
    clean = images.float() / 255.0
    effect = {level: mean_abs_diff(apply(clean, "saturate", level), clean) for level in (2, 2.4737, 3)}
    # factor 0.1 at 2 and 2.0 at 3: 1.0 (no change) at 2 + 0.9 / 1.9
    assert effect[2.4737] < 0.1 * min(effect[2], effect[3])


@pytest.mark.parametrize("bad", ["not_a_corruption", "Gaussian_Noise", ""])
def test_unknown_name_is_a_config_error(bad: str, images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="unknown corruption"):
        apply(images, bad, 1)
    with pytest.raises(ConfigError, match="gaussian_noise"):  # the message lists the known names
        corruption_info(bad)


@pytest.mark.parametrize("severity", [6, -0.5, 5.0001, math.nan, math.inf, "three"])
def test_severity_outside_zero_to_five_is_a_config_error(severity: object, images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match=r"severity for fog"):
        apply(images, "fog", severity)  # type: ignore[arg-type]


def test_bad_image_tensors_are_config_errors(images: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="N x 3 x H x W"):
        apply(images[:, :1], "fog", 1)
    with pytest.raises(ConfigError, match="N x 3 x H x W"):
        apply(images[0], "fog", 1)
    with pytest.raises(ConfigError, match="uint8 or float"):
        apply(images.long(), "fog", 1)


def test_empty_batch_passes_through() -> None:
    empty = torch.zeros((0, 3, 32, 32), dtype=torch.uint8)
    assert apply(empty, "snow", 3).shape == empty.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_batches_stay_on_the_gpu(name: str, images: torch.Tensor) -> None:
    gpu = images.cuda()
    out = apply(gpu, name, 3, seed=0)
    assert out.device == gpu.device and out.dtype == torch.uint8 and out.shape == gpu.shape
    assert torch.equal(out, apply(gpu, name, 3, seed=0))


def test_frost_textures_are_deterministic_and_in_range() -> None:
    first, second = generate_frost_textures(64), generate_frost_textures(64)
    assert torch.equal(first, second)
    assert first.shape == (5, 3, 64, 64) and first.min() >= 0 and first.max() <= 1
    assert first.std(dim=(2, 3)).min() > 0.02  # textured, not flat


def test_ssim_is_one_for_identical_and_falls_with_noise(images: torch.Tensor) -> None:
    assert torch.allclose(ssim(images, images), torch.ones(len(images)), atol=1e-5)
    assert (ssim(apply(images, "gaussian_noise", 3), images) < 0.9).all()


# ----------------------------------------------------------------------------------------------- DriftSpec


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("gaussian_noise:3", "gaussian_noise:3"),
        ("fog:2.5+contrast:1@0.3", "fog:2.5+contrast:1@0.3"),
        (" fog:2.50 + contrast:1.0 @ 30% ", "fog:2.5+contrast:1@0.3"),
        ("snow:5@1", "snow:5"),
        ("clean", "clean"),
        ("CLEAN", "clean"),
        ("fog:0", "clean"),
        ("fog:3@0", "clean"),
        ("fog:0+contrast:2", "contrast:2"),
        ("pixelate:1.23456", "pixelate:1.2346"),
    ],
)
def test_drift_spec_text_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    spec = DriftSpec.parse(text)
    assert spec.text == canonical and str(spec) == canonical
    assert DriftSpec.parse(spec.text) == spec
    assert hash(DriftSpec.parse(spec.text)) == hash(spec)


def test_drift_spec_fields_and_clean() -> None:
    spec = DriftSpec.parse("fog:2.5+contrast:1@0.3")
    assert spec.steps == (("fog", 2.5), ("contrast", 1.0)) and spec.fraction == 0.3
    assert not spec.is_clean
    assert DriftSpec.clean().is_clean and DriftSpec.clean().text == "clean"
    assert DriftSpec.parse("clean") == DriftSpec.clean() == DriftSpec((("fog", 0),), 0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty drift spec"),
        ("fog", "must be name:severity"),
        ("fog:", "must be name:severity"),
        ("fog:high", "not a number"),
        ("fog:2+", "must be name:severity"),
        ("fgo:2", "unknown corruption"),
        ("fog:6", "must be in \\[0, 5\\]"),
        ("fog:nan", "must be in \\[0, 5\\]"),
        ("fog:2@1.5", "must be in \\[0, 1\\]"),
        ("fog:2@half", "not a number"),
        ("fog:2@150%", "must be in \\[0, 1\\]"),
    ],
)
def test_bad_drift_spec_text_is_a_clear_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DriftSpec.parse(text)


def test_drift_spec_fields_are_validated() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        DriftSpec((("fog", 1.0),), fraction=-0.1)
    with pytest.raises(ConfigError, match="unknown corruption"):
        DriftSpec((("smoke", 1.0),))


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, 4), (0.3, 2), (0.25, 2), (1.0, 8), (0.05, 0)])
def test_drift_spec_corrupts_a_seeded_subset_of_round_fraction_n(
    fraction: float, expected: int, images: torch.Tensor
) -> None:
    batch = images.repeat(2, 1, 1, 1)  # 8 images
    spec = DriftSpec((("gaussian_noise", 3.0),), fraction)
    mask = spec.affected_mask(len(batch), seed=5)
    assert mask.dtype == torch.bool and int(mask.sum()) == expected
    out = spec.apply(batch, seed=5)
    changed = (out != batch).flatten(1).any(dim=1)
    assert torch.equal(changed, mask)
    assert torch.equal(out, spec.apply(batch, seed=5))
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_affected_subsets_are_nested_and_depend_on_the_seed() -> None:
    small = DriftSpec.parse("fog:1@0.2").affected_mask(50, seed=3)
    large = DriftSpec.parse("fog:1@0.6").affected_mask(50, seed=3)
    assert bool((small <= large).all()) and int(small.sum()) == 10 and int(large.sum()) == 30
    assert not torch.equal(small, DriftSpec.parse("fog:1@0.2").affected_mask(50, seed=4))


def test_drift_spec_applies_steps_in_order(images: torch.Tensor) -> None:
    # both corruptions are deterministic, so the order is the only difference
    forward = DriftSpec.parse("brightness:3+contrast:4").apply(images)
    assert torch.equal(forward, apply(apply(images, "brightness", 3), "contrast", 4))
    assert not torch.equal(forward, DriftSpec.parse("contrast:4+brightness:3").apply(images))


def test_clean_drift_spec_returns_an_equal_copy(images: torch.Tensor) -> None:
    out = DriftSpec.clean().apply(images)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    assert not DriftSpec.clean().affected_mask(4).any()


def test_single_torch_thread_blocks_run_one_at_a_time_and_restore_the_count() -> None:
    import threading
    import time

    from zeal_core.corruptions._ops import single_torch_thread

    before = torch.get_num_threads()
    spans: list[tuple[float, float]] = []

    def session() -> None:
        with single_torch_thread():
            start = time.perf_counter()
            assert torch.get_num_threads() == 1
            time.sleep(0.05)
            spans.append((start, time.perf_counter()))

    sessions = [threading.Thread(target=session) for _ in range(3)]
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join(5)
    spans.sort()
    assert len(spans) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    assert torch.get_num_threads() == before
