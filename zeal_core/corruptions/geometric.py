"""Geometric drift kinds: the camera is turned, zoomed, moved or tilted (group ``geometric``).

Every kind is one batched ``grid_sample`` per batch (bilinear): an affine grid for rotation, zoom and
translation, a per-image homography for perspective. Each image gets its own random direction (sign of the
angle, direction of the shift, position of the crop, axis of the tilt) from the registry's seeded generator;
the severity sets the magnitude.

Padding is **reflection**: a camera that is turned or moved sees more of the same scene, and mirrored
content is the closest stand-in we have for it. Zeros would add black wedges and border padding smeared
streaks, both of which a detector flags at once for reasons unrelated to the geometry.

What each level means (sizes are shares of the image side, so a level means the same at every resolution;
levels in between interpolate linearly):

=====  ==========  ===================================  =======================  ===========
level  rotation    zoom: magnification (crop side)      translation (of the      perspective
                                                        shorter side)            (tilt)
=====  ==========  ===================================  =======================  ===========
0      0 deg       1x (the whole image)                 0                        0 deg
1      4 deg       1.15x (87 % of the side)             4 %                      12 deg
2      8 deg       1.35x (74 %)                         8 %                      25 deg
3      12 deg      1.6x (62.5 %)                        12 %                     38 deg
4      18 deg      1.85x (54 %)                         17 %                     45 deg
5      25 deg      2.2x (45 %)                          23 %                     52 deg
=====  ==========  ===================================  =======================  ===========

Perspective: the scene plane is tilted about a random in-plane axis through the centre and seen from one
image side away (focal length = that distance, a ~53 degree field of view), so the centre stays put, the near
edge grows and the far edge shrinks (a keystone). Up to ~54 degrees the whole view stays in front of the
horizon. The levels were set with ``python -m benchmarks drift-kinds`` so that level 3 costs the shared
Imagenette model about what ImageNet-C's level 3 costs (docs/drift_kinds.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zeal_core.corruptions._ops import level_params
from zeal_core.corruptions.registry import register_corruption

GROUP = "geometric"
PADDING = "reflection"  # see the module docstring

# Level 0 rows are the identity; levels 1-5 the calibrated magnitudes.
ROTATION_DEGREES = ((0.0,), (4.0,), (8.0,), (12.0,), (18.0,), (25.0,))  # in-plane angle, sign random
ZOOM_FACTOR = ((1.0,), (1.15,), (1.35,), (1.6,), (1.85,), (2.2,))  # magnification: crop side = side / zoom
TRANSLATION_SHARE = ((0.0,), (0.04,), (0.08,), (0.12,), (0.17,), (0.23,))  # shift / shorter side
TILT_DEGREES = ((0.0,), (12.0,), (25.0,), (38.0,), (45.0,), (52.0,))  # scene plane tilted away, axis random
TILT_DISTANCE = 1.0  # camera-to-plane distance (= focal length) in image sides: a ~53 degree field of view


def _random_signs(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """+1 or -1 per image, from the seeded generator."""
    return torch.randint(0, 2, (n,), generator=generator, device=device).float().mul_(2.0).sub_(1.0)


def _affine_sample(images: torch.Tensor, matrices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Resample every image through its own inverse affine map, given in pixels about the image centre.

    Args:
        images: N x C x H x W float.
        matrices: N x 2 x 2; the output pixel at (u, v) (pixels right/down of the centre) samples the input
            at ``matrices @ (u, v) + offsets``.
        offsets: N x 2, pixels.
    """
    h, w = images.shape[-2:]
    # normalised coordinates (align_corners=False) are pixels about the centre divided by the half side
    half = torch.tensor([w / 2.0, h / 2.0], device=images.device)
    theta = torch.empty(images.shape[0], 2, 3, device=images.device)
    theta[:, :, :2] = matrices * half.view(1, 1, 2) / half.view(1, 2, 1)
    theta[:, :, 2] = offsets / half
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=PADDING, align_corners=False)


@register_corruption("geometric", "camera rolled: the image rotated about its centre, either direction",
                     group=GROUP)
def rotation(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (degrees,) = level_params(ROTATION_DEGREES, severity)
    angles = torch.deg2rad(_random_signs(images.shape[0], generator, images.device) * degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # content turned by +angle: each output pixel samples the input turned back by -angle
    matrices = torch.stack((torch.stack((cos, sin), -1), torch.stack((-sin, cos), -1)), -2)
    return _affine_sample(images, matrices, torch.zeros(images.shape[0], 2, device=images.device))


@register_corruption("geometric", "tighter framing: a random crop of side / zoom, resized back", group=GROUP)
def zoom(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (factor,) = level_params(ZOOM_FACTOR, severity)
    n, _, h, w = images.shape
    scale = 1.0 / factor
    eye = torch.eye(2, device=images.device).expand(n, 2, 2) * scale
    # the crop's centre is uniform over the positions that keep the crop inside the image
    room = torch.tensor([w / 2.0, h / 2.0], device=images.device) * (1.0 - scale)
    centres = (torch.rand(n, 2, generator=generator, device=images.device) * 2.0 - 1.0) * room
    return _affine_sample(images, eye, centres)


@register_corruption("geometric", "camera moved: the image shifted in a random direction", group=GROUP)
def translation(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (share,) = level_params(TRANSLATION_SHARE, severity)
    n, _, h, w = images.shape
    distance = share * min(h, w)
    angles = torch.rand(n, generator=generator, device=images.device) * (2.0 * math.pi)
    shift = torch.stack((torch.cos(angles), torch.sin(angles)), -1) * distance
    eye = torch.eye(2, device=images.device).expand(n, 2, 2)
    return _affine_sample(images, eye, -shift)  # content moves by +shift: sample from -shift


def _tilt_homographies(n: int, degrees: float, distance: float, generator: torch.Generator,
                       device: torch.device) -> torch.Tensor:
    """N x 3 x 3 maps from scene-plane points (u, v, 1) to the tilted view's pixels (homogeneous).

    The plane is rotated by ``degrees`` about an axis in the plane through the image centre (random
    direction per image), and seen by a pinhole camera ``distance`` pixels away with focal length
    ``distance``: at zero tilt the view is the input image itself.
    """
    axis_angle = torch.rand(n, generator=generator, device=device) * (2.0 * math.pi)
    ax, ay = torch.cos(axis_angle), torch.sin(axis_angle)
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    # Rodrigues' rotation about the unit axis (ax, ay, 0): the columns for the plane's u and v directions
    r11, r12 = cos + ax * ax * (1 - cos), ax * ay * (1 - cos)
    r21, r22 = ax * ay * (1 - cos), cos + ay * ay * (1 - cos)
    r31, r32 = -ay * sin, ax * sin
    zeros, ones = torch.zeros_like(ax), torch.ones_like(ax)
    rows = (
        torch.stack((r11, r12, zeros), -1),
        torch.stack((r21, r22, zeros), -1),
        torch.stack((r31 / distance, r32 / distance, ones), -1),
    )
    return torch.stack(rows, -2)


@register_corruption("geometric", "perspective: the scene seen at a tilt (keystone), random axis",
                     group=GROUP)
def perspective(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (degrees,) = level_params(TILT_DEGREES, severity)
    n, _, h, w = images.shape
    device = images.device
    distance = TILT_DISTANCE * max(h, w)
    inverse = torch.linalg.inv(_tilt_homographies(n, degrees, distance, generator, device))
    # output pixel centres about the image centre, homogeneous: H*W x 3
    u = torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2.0
    v = torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2.0
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    points = torch.stack((grid_u, grid_v, torch.ones_like(grid_u)), -1).view(1, h * w, 3)
    source = points @ inverse.transpose(1, 2)  # N x H*W x 3: scene-plane points = input pixels
    depth = source[..., 2:].clamp_min(1e-6)  # only a tilt of 90 degrees or more reaches 0
    grid = source[..., :2] / depth / torch.tensor([w / 2.0, h / 2.0], device=device)
    return F.grid_sample(images, grid.view(n, h, w, 2), mode="bilinear", padding_mode=PADDING,
                         align_corners=False)
