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
    h, w = shape
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a binary mask with nearest-neighbour (labels stay labels)."""
    h, w = shape
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a probability map back to an image's pixel grid (bilinear, half-pixel aligned)."""
    h, w = shape
    if prob.shape[:2] == (h, w):
        return prob
    shrink = h * w < prob.shape[0] * prob.shape[1]
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
