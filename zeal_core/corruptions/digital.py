"""Digital family: brightness, contrast, saturate, elastic transform, pixelate and JPEG compression."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zeal_core.corruptions._ops import (
    gaussian_blur,
    level_params,
    reference_grid,
    resize,
    spatial_scale,
    uniform,
)
from zeal_core.corruptions.registry import register_corruption

BRIGHTNESS = ((0.0,), (0.1,), (0.2,), (0.3,), (0.4,), (0.5,))  # added to HSV value
CONTRAST = ((1.0,), (0.4,), (0.3,), (0.2,), (0.1,), (0.05,))  # factor on the distance to the channel mean
# (factor on HSV saturation, then added): levels 1-2 desaturate, 3-5 oversaturate; so between levels 2 and 3
# the factor passes through 1 and the image briefly looks clean again (ImageNet-C's definition)
SATURATE = ((1.0, 0.0), (0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
ELASTIC_ALPHA = ((0.0,), (12.5,), (16.25,), (21.25,), (25.0,), (30.0,))  # 250 * (0.05 ... 0.12)
ELASTIC_SIGMA = 0.01  # smoothing sigma of the displacement noise, as a fraction of the side
ELASTIC_MAX = 0.005  # range of the raw uniform displacement noise, as a fraction of the height
PIXELATE = ((1.0,), (0.6,), (0.5,), (0.4,), (0.3,), (0.25,))  # down-sampling factor (relative, no scaling)
JPEG_QUALITY = (25.0, 18.0, 15.0, 10.0, 7.0)  # libjpeg quality per level 1-5

# JPEG standard (ITU T.81 Annex K) quantisation tables for quality 50
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
)


def _hsv_value_and_chroma(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value = images.amax(dim=1, keepdim=True)
    chroma = value - images.amin(dim=1, keepdim=True)
    return value, chroma


@register_corruption("digital", "brighter image: HSV value raised", random=False)
def brightness(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (shift,) = level_params(BRIGHTNESS, severity)
    value, _ = _hsv_value_and_chroma(images)
    new_value = (value + shift).clamp(0.0, 1.0)
    # same hue and saturation: every channel scales with the value; black pixels become gray
    scaled = images * (new_value / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(images))


@register_corruption("digital", "lower contrast: pulled towards the channel means", random=False)
def contrast(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (factor,) = level_params(CONTRAST, severity)
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


@register_corruption("digital", "HSV saturation scaled: washed out (1-2), oversaturated (3-5)", random=False)
def saturate(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    factor, offset = level_params(SATURATE, severity)
    value, chroma = _hsv_value_and_chroma(images)
    saturation = chroma / value.clamp_min(1e-12)
    new_saturation = (saturation * factor + offset).clamp(0.0, 1.0)
    # HSV -> RGB with hue and value kept: channel = V - (V - channel) * S' / S
    recoloured = value - (value - images) * (new_saturation / saturation.clamp_min(1e-12))
    # gray pixels have hue 0 (red) in scikit-image, so an added saturation tints them red as in ImageNet-C
    gray_pixels = torch.cat([value, value * (1 - new_saturation), value * (1 - new_saturation)], dim=1)
    return torch.where(chroma > 0, recoloured, gray_pixels)


@register_corruption("digital", "local elastic warping of the image grid")
def elastic_transform(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    (alpha,) = level_params(ELASTIC_ALPHA, severity)
    n, _, h, w = images.shape
    grid_h, grid_w = reference_grid(images)
    # displacement field on the 224 px grid with imagecorruptions' constants, in 224 px pixels
    limit = grid_h * ELASTIC_MAX
    noise = uniform((n, 2, grid_h, grid_w), -limit, limit, generator, images.device)
    field = gaussian_blur(noise, ELASTIC_SIGMA * min(grid_h, grid_w), truncate=3.0, mode="reflect") * alpha
    field = resize(field, (h, w)) * spatial_scale(images)  # to this image's pixels
    dy, dx = field[:, 0], field[:, 1]
    rows = torch.arange(h, device=images.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=images.device, dtype=torch.float32).view(1, 1, w)
    # grid_sample wants x, y in [-1, 1] with align_corners=True mapping -1/1 to the edge pixel centres
    grid_x = (cols + dx) * (2.0 / max(w - 1, 1)) - 1.0
    grid_y = (rows + dy) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _box_windows(big: int, small: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's BOX down-sampling windows: output pixel i averages the inputs whose centres lie within its cell.

    PIL takes input x when ``(x + 0.5 - centre) / scale`` is in (-0.5, 0.5], among the candidates
    ``[int(centre - scale / 2 + 0.5), int(centre + scale / 2 + 0.5))``.

    Returns:
        (start, stop) input indices per output pixel, stop exclusive.
    """
    scale = big / small
    centres = (torch.arange(small, dtype=torch.float64, device=device) + 0.5) * scale
    half = 0.5 * scale
    first = torch.maximum(torch.floor(centres - 0.5 - half) + 1, torch.trunc(centres - half + 0.5))
    last = torch.minimum(torch.floor(centres - 0.5 + half) + 1, torch.trunc(centres + half + 0.5))
    start = first.clamp(0, big - 1).long()
    stop = last.clamp(1, big).long()
    return start, torch.maximum(stop, start + 1)


@functools.lru_cache(maxsize=64)
def _box_matrix(big: int, small: int, device: str) -> torch.Tensor:
    """small x big averaging matrix of PIL's BOX windows (a BLAS call beats gathers on CPU)."""
    start, stop = _box_windows(big, small, torch.device("cpu"))
    index = torch.arange(big).view(1, -1)
    inside = (index >= start.view(-1, 1)) & (index < stop.view(-1, 1))
    matrix = inside.double() / (stop - start).double().view(-1, 1)
    return matrix.float().to(device)


@functools.lru_cache(maxsize=64)
def _nearest_indices(big: int, small: int) -> torch.Tensor:
    """Source index per output pixel of PIL's NEAREST up-sampling from ``small`` to ``big`` pixels.

    PIL walks the output with a running sum of the step ``small / big`` from the first pixel centre, so ties
    (e.g. 2.5 * 0.4) fall where that float64 sum puts them; a cumulative sum reproduces it.
    """
    step = small / big
    positions = np.cumsum(np.concatenate(([0.5 * step], np.full(big - 1, step))))
    return torch.from_numpy(np.minimum(positions.astype(np.int64), small - 1))


def _pil_per_image(images: torch.Tensor, transform: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """Run a PIL transform on every image of a uint8 CPU batch (N x 3 x H x W) of the same size.

    Images are split into one contiguous run per torch thread and run in a thread pool: libjpeg and numpy's
    copies release the GIL, so the runs overlap. Each image is moved to and from PIL's H x W x 3 layout on its
    own (a small copy that stays in cache; transposing the whole batch at once is several times slower).
    """
    pixels = images.contiguous().numpy()
    out = np.empty_like(pixels)

    def run(start: int, stop: int) -> None:
        for index in range(start, stop):
            image = Image.fromarray(np.ascontiguousarray(pixels[index].transpose(1, 2, 0)))
            out[index] = np.asarray(transform(image)).transpose(2, 0, 1)

    _in_thread_pool(run, pixels.shape[0])
    return torch.from_numpy(out)


def _in_thread_pool(run: Callable[[int, int], None], count: int) -> None:
    """Call ``run(start, stop)`` on one contiguous share of ``range(count)`` per torch thread, in parallel."""
    workers = max(1, min(torch.get_num_threads(), count))
    bounds = [count * part // workers for part in range(workers + 1)]
    if workers == 1:
        run(0, count)
        return
    futures = [_pool().submit(run, start, stop) for start, stop in itertools.pairwise(bounds)]
    for future in futures:
        future.result()


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """A shared pool for the PIL paths (threads, not processes: the work is in C that releases the GIL)."""
    return ThreadPoolExecutor(max_workers=max(2, torch.get_num_threads()), thread_name_prefix="zeal-pil")


def _pixelate_sizes(images: torch.Tensor, severity: float) -> tuple[int, int]:
    (factor,) = level_params(PIXELATE, severity)
    h, w = images.shape[-2:]
    return max(1, int(h * factor)), max(1, int(w * factor))


_PIL_PRECISION_BITS = 22  # PIL's fixed-point resampling coefficients (32 - 8 - 2 bits)
_PIXELATE_CHUNK = 32  # images per step of the uint8 path (keeps each step's arrays in cache)


@functools.lru_cache(maxsize=64)
def _box_mean_table(length: int) -> torch.Tensor:
    """uint8 mean of ``length`` pixels for every possible sum, rounded as PIL does.

    PIL's coefficient is ``k = round(2^22 / length)`` and its result ``(sum * k + 2^21) >> 22``.
    """
    sums = torch.arange(255 * length + 1, dtype=torch.int64)
    weight = int(0.5 + (1.0 / length) * (1 << _PIL_PRECISION_BITS))
    return ((sums * weight + (1 << (_PIL_PRECISION_BITS - 1))) >> _PIL_PRECISION_BITS).to(torch.uint8)


def _box_rows(planes: torch.Tensor, small: int) -> torch.Tensor:
    """PIL's BOX down-sampling along H of uint8 planes (M x H x W), with PIL's fixed-point rounding."""
    start, stop = _box_windows(planes.shape[1], small, torch.device("cpu"))
    lengths = stop - start
    out = torch.empty(planes.shape[0], small, planes.shape[2], dtype=torch.uint8)
    for length in lengths.unique().tolist():
        rows = torch.nonzero(lengths == length).flatten()
        first = start[rows]
        total = planes.index_select(1, first).to(torch.int32)
        for offset in range(1, length):
            total += planes.index_select(1, first + offset)
        means = _box_mean_table(length).index_select(0, total.view(-1)).view(total.shape)
        out.index_copy_(1, rows, means)
    return out


def _pixelate_uint8(images: torch.Tensor, severity: float) -> torch.Tensor:
    """uint8 CPU path with the reference's pixels: PIL's BOX down (horizontal, then vertical), NEAREST up.

    The whole chunk is one tall single-channel image for PIL's horizontal passes; the vertical passes run in
    torch on contiguous rows. Chunks go to one thread per torch thread: PIL's resampling holds the GIL but
    the torch steps do not, so the two overlap.
    """
    small_h, small_w = _pixelate_sizes(images, severity)
    n, c, h, w = images.shape
    if (small_h, small_w) == (h, w):
        return images.clone()
    pixels = images.contiguous()
    out = torch.empty_like(pixels)
    rows_up = _nearest_indices(h, small_h)

    def run(start: int, stop: int) -> None:
        for first in range(start, stop, _PIXELATE_CHUNK):
            last = min(first + _PIXELATE_CHUNK, stop)
            planes = (last - first) * c
            tall = Image.fromarray(pixels[first:last].numpy().reshape(planes * h, w))
            narrow = np.array(tall.resize((small_w, planes * h), Image.Resampling.BOX))
            small = _box_rows(torch.from_numpy(narrow).view(planes, h, small_w), small_h)
            wide = Image.fromarray(small.numpy().reshape(planes * small_h, small_w))
            wide = np.array(wide.resize((w, planes * small_h), Image.Resampling.NEAREST))
            torch.index_select(torch.from_numpy(wide).view(planes, small_h, w), 1, rows_up,
                               out=out[first:last].view(planes, h, w))

    _in_thread_pool(run, n)
    return out


@register_corruption("digital", "blocky: box down-sampling, nearest up-sampling", random=False,
                     uint8_cpu=_pixelate_uint8)
def pixelate(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    small_h, small_w = _pixelate_sizes(images, severity)
    h, w = images.shape[-2:]
    if (small_h, small_w) == (h, w):
        return images
    device = str(images.device)
    small = _box_matrix(h, small_h, device) @ (images @ _box_matrix(w, small_w, device).T)
    small = torch.round(small * 255.0) / 255.0  # PIL keeps the small image as uint8
    rows = _nearest_indices(h, small_h).to(images.device)
    cols = _nearest_indices(w, small_w).to(images.device)
    return small[..., rows, :][..., cols]


def _quant_table(base: tuple[int, ...], quality: float, device: torch.device) -> torch.Tensor:
    """libjpeg's quality scaling of a base table (8 x 8), quality as a float so levels can interpolate."""
    quality = min(max(quality, 1.0), 100.0)
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    table = torch.tensor(base, dtype=torch.float32, device=device).view(8, 8)
    return torch.floor((table * scale + 50.0) / 100.0).clamp(1.0, 255.0)


@functools.lru_cache(maxsize=8)
def _block_dct(device: str) -> torch.Tensor:
    """64 x 64 matrix of the orthonormal 8 x 8 DCT-II on row-major blocks (JPEG's FDCT normalisation)."""
    k = torch.arange(8, dtype=torch.float64).view(8, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, 8)
    matrix = torch.cos((2 * n + 1) * k * torch.pi / 16) * (2.0 / 8) ** 0.5
    matrix[0] /= 2**0.5
    return torch.kron(matrix, matrix).float().to(device)


# RGB (0-255) -> JFIF YCbCr (offsets added separately) and back
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def _quantise_blocks(planes: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """DCT, quantise, dequantise, inverse DCT on 8 x 8 blocks of level-shifted planes (N x C x H x W)."""
    n, c, h, w = planes.shape
    blocks = planes.view(n, c, h // 8, 8, w // 8, 8).transpose(3, 4).reshape(n, c, h // 8, w // 8, 64)
    step = table.reshape(64)
    coefficients = torch.round((blocks @ dct.T) / step) * step
    restored = (coefficients @ dct).view(n, c, h // 8, w // 8, 8, 8)
    return restored.transpose(3, 4).reshape(n, c, h, w)


def _jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    """A batched baseline JPEG round trip as PIL/libjpeg does it: YCbCr, 4:2:0 chroma, 8 x 8 DCT."""
    n, _, h, w = images.shape
    device = images.device
    pad_h, pad_w = (-h) % 16, (-w) % 16  # whole 16 x 16 MCUs, edges replicated as libjpeg does
    rgb = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images
    big_h, big_w = rgb.shape[-2:]
    to_ycc = torch.tensor(_RGB_TO_YCC, device=device) * 255.0
    ycc = (to_ycc @ rgb.reshape(n, 3, -1)).view(n, 3, big_h, big_w)
    y = torch.round(ycc[:, :1]) - 128.0  # level shift; Cb, Cr are centred on 128 already
    chroma = torch.round(F.avg_pool2d(ycc[:, 1:], 2))  # 2 x 2 down-sampling
    dct = _block_dct(str(device))
    y = _quantise_blocks(y, _quant_table(_LUMA_TABLE, quality, device), dct)
    chroma = _quantise_blocks(chroma, _quant_table(_CHROMA_TABLE, quality, device), dct)
    y = torch.round(y).clamp_(-128.0, 127.0)
    chroma = torch.round(chroma).clamp_(-128.0, 127.0)
    # libjpeg's "fancy" up-sampling is the 3/4, 1/4 triangle filter, i.e. bilinear with half-pixel centres
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat((y + 128.0, chroma), 1)
    to_rgb = torch.tensor(_YCC_TO_RGB, device=device) / 255.0
    out = (to_rgb @ ycc.view(n, 3, -1)).view(n, 3, big_h, big_w)[..., :h, :w]
    return torch.round(out * 255.0) / 255.0


def _jpeg_quality(severity: float) -> float:
    """libjpeg quality for a severity >= 1, interpolated between levels."""
    low = min(int(severity), 4)
    return JPEG_QUALITY[low - 1] + (JPEG_QUALITY[low] - JPEG_QUALITY[low - 1]) * (severity - low)


def _jpeg_pil(images: torch.Tensor, severity: float) -> torch.Tensor:
    """uint8 CPU path: a real JPEG round trip (what the reference does), tables set by quality.

    PIL (libjpeg) encodes; torchvision's libjpeg decoder decodes straight to C x H x W. One thread per torch
    thread takes a share of the images (the decoder releases the GIL, so one thread decodes while another
    encodes). Both use the same libjpeg defaults (islow IDCT, fancy up-sampling), so the pixels are PIL's.
    """
    quality = _jpeg_quality(max(severity, 1.0))
    if quality == int(quality):  # libjpeg's own tables for integer qualities (the reference's call)
        options: dict = {"quality": int(quality)}
    else:  # in between: the tables of the interpolated quality
        options = {"qtables": [_quant_table(base, quality, torch.device("cpu")).int().flatten().tolist()
                               for base in (_LUMA_TABLE, _CHROMA_TABLE)], "subsampling": "4:2:0"}
    decode = _jpeg_decoder()
    if decode is None:
        def round_trip(image: Image.Image) -> Image.Image:
            buffer = BytesIO()
            image.save(buffer, "JPEG", **options)
            buffer.seek(0)
            return Image.open(buffer)

        compressed = _pil_per_image(images, round_trip)
    else:
        planes = images.contiguous().numpy()
        compressed = torch.empty_like(images)

        def run(start: int, stop: int) -> None:
            for first in range(start, stop, _JPEG_CHUNK):
                last = min(first + _JPEG_CHUNK, stop)
                encoded = []
                for image in planes[first:last]:
                    buffer = BytesIO()
                    # RGB from three planes: cheaper than transposing the image to H x W x 3 first
                    rgb = Image.merge("RGB", [Image.fromarray(plane) for plane in image])
                    rgb.save(buffer, "JPEG", **options)
                    encoded.append(torch.frombuffer(buffer.getbuffer(), dtype=torch.uint8))
                torch.stack(decode(encoded), out=compressed[first:last])

        _in_thread_pool(run, planes.shape[0])
    if severity >= 1.0:
        return compressed
    return torch.lerp(images.float(), compressed.float(), severity).round_().to(torch.uint8)


_JPEG_CHUNK = 32  # images encoded, then decoded in one call (a short run keeps the threads interleaved)


@functools.lru_cache(maxsize=1)
def _jpeg_decoder() -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """torchvision's batched JPEG decoder, or None when torchvision is not installed (PIL decodes then)."""
    try:
        from torchvision.io import decode_jpeg
    except ImportError:  # pragma: no cover - torchvision comes with timm
        return None
    return decode_jpeg


@register_corruption("digital", "JPEG compression artefacts (blocks, ringing, colour bleeding)", random=False,
                     uint8_cpu=_jpeg_pil)
def jpeg_compression(images: torch.Tensor, severity: float, generator: torch.Generator) -> torch.Tensor:
    if severity < 1.0:  # no quality is the identity, so below level 1 the clean image is blended in
        return torch.lerp(images, _jpeg(images, JPEG_QUALITY[0]), severity)
    return _jpeg(images, _jpeg_quality(severity))
