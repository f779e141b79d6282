"""SD result bytes: the 64-bit perceptual hash of each image, and the SD match rule (PROTOCOL.md, Hashes).

The pipeline is spelled out in numpy so that every node and the relay compute the same bits whatever
their Pillow version:
  grey = 0.299 R + 0.587 G + 0.114 B (float64)
  -> 64x64 by a bilinear (triangle) filter widened by the scale factor when shrinking, so that every
     source pixel contributes (plain 2x2-tap bilinear would hash a few sampled pixels, not the image)
  -> 2-D DCT-II (unnormalized) -> top-left 8x8 in row-major order
  -> coefficients rounded to 1e-6, so float noise from a different BLAS cannot flip a bit
  -> threshold = element 32 of the 64 sorted coefficients; bit (63 - i) set where coefficient i > it.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.fft import dctn

HASH_SIZE = 8
RESIZE_TO = 64
PHASH_BYTES = HASH_SIZE * HASH_SIZE // 8
DEFAULT_DISTANCE_THRESHOLD = 5
_ROUND_DECIMALS = 6


# The largest image a task may ask for (2048x2048, cluster/protocol/sd.py), with room for a refiner's.
MAX_IMAGE_PIXELS = 2 * 2048 * 2048


@lru_cache(maxsize=32)
def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """A (dst, src) matrix whose rows are normalized triangle-filter weights (half-pixel centres)."""
    scale = src / dst
    support = max(scale, 1.0)  # widen the filter when shrinking, as an antialiasing bilinear does
    centres = (np.arange(dst) + 0.5) * scale
    pixel_centres = np.arange(src) + 0.5
    distance = np.abs(pixel_centres[None, :] - centres[:, None]) / support
    weights = np.clip(1.0 - distance, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def grey_array(image: Image.Image) -> np.ndarray:
    """The image's luma as float64, from its RGB channels (alpha and palettes resolved by Pillow)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of an image, as an unsigned int."""
    grey = grey_array(image)
    height, width = grey.shape
    small = _resize_matrix(height, RESIZE_TO) @ grey @ _resize_matrix(width, RESIZE_TO).T
    coefficients = dctn(small, type=2, norm=None)[:HASH_SIZE, :HASH_SIZE].reshape(-1)
    coefficients = np.round(coefficients, _ROUND_DECIMALS) + 0.0  # + 0.0 folds -0.0 into 0.0
    threshold = np.sort(coefficients)[32]
    value = 0
    for i, coefficient in enumerate(coefficients):
        if coefficient > threshold:
            value |= 1 << (63 - i)
    return value


def phash_bytes(png_bytes: bytes) -> bytes:
    """The 8 big-endian bytes of the pHash of an encoded image (PNG, or anything Pillow reads).

    The image's size is read from its header first: one above ``MAX_IMAGE_PIXELS`` is refused before its
    pixels are decoded (a 34 KiB all-black 6000x6000 PNG would take 1.5 GB)."""
    with Image.open(io.BytesIO(png_bytes)) as image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels")
        return phash(image).to_bytes(PHASH_BYTES, "big")


def sd_result(images: list[bytes]) -> bytes:
    """The on-chain result of an SD task: each image's pHash in index order, concatenated.

    ValueError, naming the image, when there is none or one does not decode.
    """
    if not images:
        raise ValueError("an SD result needs at least one image")
    return b"".join(_indexed_phash(index, png) for index, png in enumerate(images))


def _indexed_phash(index: int, png: bytes) -> bytes:
    try:
        return phash_bytes(png)
    except Exception as exc:  # Pillow raises many types for bytes that are no image
        raise ValueError(f"image {index} is not a readable image: {type(exc).__name__}: {exc}") from None


def hamming_distance(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def sd_results_match(a: bytes, b: bytes, distance_threshold: int = DEFAULT_DISTANCE_THRESHOLD) -> bool:
    """The SD rule of the chain: equal lengths, a multiple of 8, each 8-byte pair under the threshold."""
    if len(a) != len(b) or len(a) == 0 or len(a) % PHASH_BYTES:
        return False
    return all(
        hamming_distance(a[i : i + PHASH_BYTES], b[i : i + PHASH_BYTES]) < distance_threshold
        for i in range(0, len(a), PHASH_BYTES)
    )


def gpt_results_match(a: bytes, b: bytes) -> bool:
    """The chain's GPT rule: the result bytes are equal."""
    return a == b
