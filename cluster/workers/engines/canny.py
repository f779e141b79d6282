"""The Canny edge detector in numpy/scipy (OpenCV is not a dependency), for the ControlNet "canny"
preprocessor: Gaussian blur, Sobel gradients, non-maximum suppression, double threshold, hysteresis.

Thresholds are on OpenCV's default scale (L1 gradient magnitude of 8-bit images), so task arguments
such as ``low_threshold=100, high_threshold=200`` mean what they mean with ``cv2.Canny``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
# Neighbour offsets (dy, dx) along the gradient for the 4 quantized directions: 0, 45, 90, 135 degrees.
_DIRECTIONS = ((0, 1), (-1, 1), (1, 0), (1, 1))


def _grey(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _non_max_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45.0) % 4).astype(np.int8)  # 0: horizontal gradient ... 3: 135 degrees
    padded = np.pad(magnitude, 1)
    height, width = magnitude.shape
    keep = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in enumerate(_DIRECTIONS):
        # NOTE: image rows grow downward, so the 45-degree neighbours are (-1, +1) and (+1, -1).
        ahead = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        behind = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        is_max = (magnitude >= ahead) & (magnitude > behind)
        keep |= (sector == index) & is_max
    return np.where(keep, magnitude, 0.0)


def canny_edges(image: Image.Image, low_threshold: int = 100, high_threshold: int = 200) -> np.ndarray:
    """A boolean edge map of ``image`` (True on edges)."""
    if low_threshold > high_threshold:
        low_threshold, high_threshold = high_threshold, low_threshold
    grey = ndimage.gaussian_filter(_grey(image), sigma=1.0, mode="nearest", truncate=2.0)
    gx = ndimage.convolve(grey, _SOBEL_X, mode="nearest")
    gy = ndimage.convolve(grey, _SOBEL_X.T, mode="nearest")
    thin = _non_max_suppression(np.abs(gx) + np.abs(gy), gx, gy)
    weak = thin >= low_threshold
    strong = thin >= high_threshold
    labels, num_labels = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    if num_labels == 0:
        return np.zeros_like(weak)
    connected_to_strong = np.zeros(num_labels + 1, dtype=bool)
    connected_to_strong[np.unique(labels[strong])] = True
    connected_to_strong[0] = False
    return connected_to_strong[labels]


def canny_image(image: Image.Image, low_threshold: int = 100, high_threshold: int = 200) -> Image.Image:
    """White edges on black, three channels: the control image ControlNet canny models expect."""
    edges = canny_edges(image, low_threshold, high_threshold).astype(np.uint8) * 255
    return Image.fromarray(np.stack([edges] * 3, axis=-1))
