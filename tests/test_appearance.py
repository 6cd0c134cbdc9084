"""``zeal_core.data.appearance``: what a set of images looks like, and how an upload differs from training."""

from __future__ import annotations

import pytest
import torch

from zeal_core.data import load_dataset
from zeal_core.data.appearance import appearance_differences, describe_appearance


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits").images


def test_digits_are_dark_ink_on_light_paper(digits: torch.Tensor) -> None:
    look = describe_appearance(digits)
    assert look.describe() == "greyscale, dark content on a light background"
    assert (look.height, look.width) == (32, 32) and look.n <= 512


def test_inverted_digits_differ_by_their_background(digits: torch.Tensor) -> None:
    expected, inverted = describe_appearance(digits), describe_appearance(255 - digits[:40])
    assert inverted.background == "dark"
    assert appearance_differences(expected, inverted) == [
        "dark backgrounds where the model saw light ones (inverted colours?)"]


def test_held_out_digits_look_like_training_ones(digits: torch.Tensor) -> None:
    first, rest = describe_appearance(digits[:1000]), describe_appearance(digits[1000:])
    assert appearance_differences(first, rest) == []


def test_colour_noise_is_colour_with_varied_backgrounds(digits: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=generator)
    look = describe_appearance(noise)
    assert look.colour == "colour" and look.background == "mixed"
    assert appearance_differences(describe_appearance(digits), look) == [
        "colour images where the model saw greyscale ones"]


def test_darker_photos_of_the_same_kind_are_said_to_be_darker() -> None:
    generator = torch.Generator().manual_seed(1)
    bright = torch.randint(150, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=generator)
    dim = (bright.float() * 0.3).to(torch.uint8)
    differences = appearance_differences(describe_appearance(bright), describe_appearance(dim))
    assert len(differences) == 1 and ("darker" in differences[0] or "dark backgrounds" in differences[0])


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (4, 1, 8, 8), (3, 8, 8)])
def test_bad_batches_are_refused(shape) -> None:
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        describe_appearance(torch.zeros(shape, dtype=torch.uint8))


def test_a_batch_half_inverted_says_which_share(digits: torch.Tensor) -> None:
    batch = torch.cat([255 - digits[:20], digits[20:40]])
    assert appearance_differences(describe_appearance(digits), describe_appearance(batch)) == [
        "50% of them: dark backgrounds where the model saw light ones (inverted colours?)"]
