"""Resampling between an image's own pixel grid and the network's physical resolution (µm/px)."""

from __future__ import annotations

from collections.abc import Callable

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


def resize_prob(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a probability map back to an image's pixel grid (bilinear, half-pixel aligned; area when
    shrinking), the same interpolation as images so a round trip stays aligned."""
    return _resize_smooth(prob, shape)


def window_at_tile_scale(
    arr: np.ndarray, y0: int, x0: int, src: int, tile: int, resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
) -> np.ndarray:
    """The ``src x src`` window at (y0, x0) resampled to ``tile x tile``, reflect-padded where it leaves ``arr``.

    Only the part inside ``arr`` is resampled, and the padding is added at tile scale: at coarse µm/px the
    window is many times the tile (1536 source px for a 256 px tile at 6 µm/px), and padding it at source
    scale first would cost more than the whole rest of the sample.
    """
    h, w = arr.shape[:2]
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + src), min(w, x0 + src)
    scale = tile / src
    # where the inside part lands in the tile (rounded; at least one tile pixel)
    ty0, tx0 = int(round((ys - y0) * scale)), int(round((xs - x0) * scale))
    ty1 = min(tile, max(ty0 + 1, int(round((ye - y0) * scale))))
    tx1 = min(tile, max(tx0 + 1, int(round((xe - x0) * scale))))
    ty0, tx0 = min(ty0, ty1 - 1), min(tx0, tx1 - 1)
    inner = resize(arr[ys:ye, xs:xe], (ty1 - ty0, tx1 - tx0))
    if (ty0, tx0, ty1, tx1) == (0, 0, tile, tile):
        return inner
    return _pad_reflect(inner, ty0, tile - ty1, tx0, tile - tx1)


def _pad_reflect(arr: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    pads = [(top, bottom), (left, right)] + [(0, 0)] * (arr.ndim - 2)
    small = min(arr.shape[:2])
    mode = "reflect" if small > 1 and max(top, bottom, left, right) < small else "symmetric"
    return np.pad(arr, pads, mode=mode)

