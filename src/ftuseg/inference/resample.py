"""Resampling between an image's own pixel grid and the network's physical resolution (µm/px)."""

from __future__ import annotations

import cv2
import numpy as np


def scaled_shape(height: int, width: int, factor: float) -> tuple[int, int]:
    """Shape after scaling by ``factor`` (target px per source px), at least 1x1."""
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def scale_factor(pixel_size: float, target_mpp: float) -> float:
    """Target pixels per source pixel: an image at 0.5 µm/px viewed at 1.0 µm/px shrinks by 2."""
    return float(pixel_size) / float(target_mpp)


def resize_image(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an image to (height, width): area averaging when shrinking, bilinear when enlarging."""
    return _resize_smooth(img, shape)


def _resize_smooth(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if arr.shape[:2] == (h, w):
        return arr
    shrink = h * w < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a binary mask with nearest-neighbour (labels stay labels)."""
    h, w = shape
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def resize_target(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1 mask to the share of each output pixel that it covers (float32 in [0, 1]).

    The same interpolation and half-pixel mapping as :func:`resize_image`, so the target stays aligned with
    its image: OpenCV's nearest neighbour samples the top-left source pixel of each output cell, which shifts
    a mask shrunk 6x by 0.42 output px, and keeps none of the boundary's sub-pixel position.
    """
    out = _resize_smooth(mask.astype(np.float32, copy=False), shape)
    return np.clip(out, 0.0, 1.0, out=out)  # float rounding lands a hair outside [0, 1]


def resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a probability map back to an image's pixel grid (bilinear, half-pixel aligned; area when
    shrinking), the same interpolation as images so a round trip stays aligned."""
    return _resize_smooth(prob, shape)
