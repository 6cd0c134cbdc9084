"""How a set of images looks, in the few terms that decide whether a classifier will recognise them: colour or
greyscale, light or dark background, brightness, size.

The upload page says what the active model expects (from its training images) and warns when a batch looks
different: white-on-black digits given to a model trained on dark ink on white paper score 0 %, and the
reason is plain from these numbers before any test runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GREY_TOLERANCE = 8  # grey levels (of 255) by which the channels of a "greyscale" pixel may differ
BORDER_FRACTION = 0.125  # the outer ring (this share of each side) that stands for an image's background
LIGHT, DARK = 0.6, 0.4  # background luminance (0-1) above which it is light, below which it is dark
MOST = 0.8  # share of images that makes a property the set's ("light backgrounds")
SOME = 0.2  # share of a batch with an unexpected property that is worth a warning
SAMPLE = 512  # images looked at (evenly spaced) when a set is larger


@dataclass(frozen=True)
class Appearance:
    """Summary of a set of images (shares are over images, luminance and brightness in [0, 1])."""

    n: int  # images looked at
    height: int  # px, as stored
    width: int  # px, as stored
    greyscale: float  # share of images whose three channels agree everywhere (within GREY_TOLERANCE)
    light_background: float  # share of images whose border is light (luminance > LIGHT)
    dark_background: float  # share of images whose border is dark (luminance < DARK)
    brightness: float  # mean luminance over all pixels

    @property
    def colour(self) -> str:
        """"greyscale", "colour" or "mixed colour and greyscale"."""
        if self.greyscale >= MOST:
            return "greyscale"
        return "colour" if self.greyscale <= 1 - MOST else "mixed colour and greyscale"

    @property
    def background(self) -> str:
        """"light", "dark" or "mixed" (the background of most images)."""
        if self.light_background >= MOST:
            return "light"
        return "dark" if self.dark_background >= MOST else "mixed"

    def describe(self) -> str:
        """One phrase, e.g. "greyscale, dark content on a light background"."""
        if self.background == "light":
            return f"{self.colour}, dark content on a light background"
        if self.background == "dark":
            return f"{self.colour}, light content on a dark background"
        return f"{self.colour}, with varied backgrounds"


def describe_appearance(images: torch.Tensor) -> Appearance:
    """The ``Appearance`` of uint8 images (N x 3 x H x W); up to ``SAMPLE`` of them, evenly spaced.

    Raises:
        ValueError: Not a non-empty N x 3 x H x W batch.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty N x 3 x H x W batch, got shape {tuple(images.shape)}")
    step = max(1, images.shape[0] // SAMPLE)
    batch = images[::step][:SAMPLE].to(torch.int16)
    spread = (batch.max(dim=1).values - batch.min(dim=1).values).flatten(1).max(dim=1).values
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R BT.601 luma
    luminance = (batch.float() * weights).sum(dim=1) / 255.0  # N x H x W
    height, width = luminance.shape[1:]
    ring_h, ring_w = max(1, round(height * BORDER_FRACTION)), max(1, round(width * BORDER_FRACTION))
    border = torch.ones(height, width, dtype=torch.bool)
    border[ring_h:height - ring_h, ring_w:width - ring_w] = False
    background = luminance[:, border].mean(dim=1)
    return Appearance(
        n=int(batch.shape[0]), height=int(height), width=int(width),
        greyscale=float((spread <= GREY_TOLERANCE).float().mean()),
        light_background=float((background > LIGHT).float().mean()),
        dark_background=float((background < DARK).float().mean()),
        brightness=float(luminance.mean()))


def appearance_differences(expected: Appearance, actual: Appearance) -> list[str]:
    """How ``actual`` (e.g. an upload) differs from ``expected`` (the training images), in plain phrases;
    empty when nothing stands out. A difference that only part of ``actual`` shows (a mixed batch) is given
    with its share."""
    differences = []
    for mostly, opposite, other_share in (("light", "dark", actual.dark_background),
                                          ("dark", "light", actual.light_background)):
        if expected.background == mostly and other_share >= SOME:
            who = "" if other_share >= MOST else f"{other_share:.0%} of them: "
            differences.append(f"{who}{opposite} backgrounds where the model saw {mostly} ones "
                               "(inverted colours?)")
    in_colour = 1.0 - actual.greyscale
    if expected.colour == "greyscale" and in_colour >= SOME:
        who = "" if in_colour >= MOST else f"{in_colour:.0%} of them: "
        differences.append(f"{who}colour images where the model saw greyscale ones")
    elif expected.colour == "colour" and actual.greyscale >= SOME:
        who = "" if actual.greyscale >= MOST else f"{actual.greyscale:.0%} of them: "
        differences.append(f"{who}greyscale images where the model saw colour ones")
    if abs(actual.brightness - expected.brightness) > 0.3 and not differences:
        lighter = "brighter" if actual.brightness > expected.brightness else "darker"
        differences.append(f"much {lighter} images (mean brightness {actual.brightness:.0%} against "
                           f"{expected.brightness:.0%})")
    return differences
