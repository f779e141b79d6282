"""pHash on real PNG bytes, and the SD match rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from cluster.protocol.phash import (
    hamming_distance,
    phash,
    phash_bytes,
    sd_result,
    sd_results_match,
)

SIZE = 512


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def flat() -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), (120, 30, 200))


def gradient() -> Image.Image:
    x = np.linspace(0, 255, SIZE)
    return Image.fromarray(np.tile(x, (SIZE, 1)).astype(np.uint8)).convert("RGB")


def radial_gradient() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(x - SIZE * 0.3, y - SIZE * 0.6)
    return Image.fromarray((255 * (r / r.max())).astype(np.uint8)).convert("RGB")


def noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def scene() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (20, 40, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 60, 260, 260), fill=(250, 220, 40))
    draw.rectangle((280, 300, 480, 500), fill=(30, 160, 60))
    draw.polygon([(50, 480), (200, 300), (260, 480)], fill=(200, 60, 50))
    return image


def reencoded_and_blurred(image: Image.Image) -> bytes:
    jpeg = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(1.5)).save(jpeg, "JPEG", quality=85)
    return png(Image.open(io.BytesIO(jpeg.getvalue())))


def reference_phash(image: Image.Image) -> int:
    """An independent, loop-by-loop reading of PROTOCOL.md's pHash over the same 64x64 grey image."""
    from cluster.protocol.phash import _resize_matrix, grey_array

    grey = grey_array(image)
    small = _resize_matrix(grey.shape[0], 64) @ grey @ _resize_matrix(grey.shape[1], 64).T
    n = 64
    k = np.arange(n)
    # DCT-II: X_k = 2 * sum_n x_n cos(pi * k * (2n + 1) / (2N)), applied to rows then columns
    basis = 2 * np.cos(np.pi * np.outer(k, 2 * k + 1) / (2 * n))
    dct = basis @ small @ basis.T
    coefficients = [round(float(dct[u, v]), 6) for u in range(8) for v in range(8)]
    threshold = sorted(coefficients)[32]
    bits = 0
    for i, c in enumerate(coefficients):
        if c > threshold:
            bits |= 1 << (63 - i)
    return bits


@pytest.mark.parametrize("make", [flat, gradient, radial_gradient, scene, lambda: noise(1)])
def test_phash_matches_an_independent_reading_of_the_spec(make):
    image = make()
    assert phash(image) == reference_phash(image)


@pytest.mark.parametrize("make", [flat, gradient, radial_gradient, scene, lambda: noise(1)])
def test_reencoded_and_blurred_images_stay_close(make):
    image = make()
    original = phash_bytes(png(image))
    assert len(original) == 8
    assert phash_bytes(png(image)) == original  # same bytes, same hash
    assert hamming_distance(original, phash_bytes(reencoded_and_blurred(image))) < 5


def test_flat_image_hash_is_stable():
    # only the DC coefficient is non-zero: everything else rounds to 0.0 and is not above the median
    assert phash_bytes(png(flat())) == (1 << 63).to_bytes(8, "big")


def test_rgba_and_grey_inputs_hash_like_their_rgb():
    image = scene()
    assert phash(image.convert("RGBA")) == phash(image)
    assert phash(image.convert("L")) == phash(image.convert("L").convert("RGB"))


@pytest.mark.parametrize(
    ("make_a", "make_b"),
    [(lambda: noise(1), lambda: noise(2)), (scene, radial_gradient), (scene, lambda: noise(3))],
)
def test_different_images_are_far_apart(make_a, make_b):
    assert hamming_distance(phash_bytes(png(make_a())), phash_bytes(png(make_b()))) >= 12


def test_sd_result_concatenates_in_index_order():
    images = [png(scene()), png(noise(1))]
    result = sd_result(images)
    assert result == phash_bytes(images[0]) + phash_bytes(images[1])
    assert sd_result(images[::-1]) == result[8:] + result[:8]
    with pytest.raises(ValueError):
        sd_result([])


def test_phash_refuses_bytes_that_are_not_an_image():
    with pytest.raises(OSError):
        phash_bytes(b"not a png")


def flip_bits(block: bytes, count: int) -> bytes:
    value = int.from_bytes(block, "big")
    for bit in range(count):
        value ^= 1 << (bit * 7 % 64)
    return value.to_bytes(8, "big")


def test_sd_match_rule_threshold_is_strict():
    a = bytes(range(16))
    four_off = a[:8] + flip_bits(a[8:], 4)
    five_off = a[:8] + flip_bits(a[8:], 5)
    assert hamming_distance(a[8:], five_off[8:]) == 5
    assert sd_results_match(a, a)
    assert sd_results_match(a, four_off)
    assert not sd_results_match(a, five_off)
    assert sd_results_match(a, five_off, distance_threshold=6)


@pytest.mark.parametrize(
    ("a", "b"),
    [(b"\x00" * 8, b"\x00" * 16), (b"\x00" * 7, b"\x00" * 7), (b"", b""), (b"\x00" * 12, b"\x00" * 12)],
)
def test_sd_match_rule_refuses_bad_lengths(a: bytes, b: bytes):
    assert not sd_results_match(a, b)
