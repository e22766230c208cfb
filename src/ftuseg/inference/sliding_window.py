"""Blended sliding-window prediction over an image held in memory."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ftuseg.inference.tiling import TileGrid, blend_window, pad_to_cover

# (B, T, T, 3) uint8 tiles -> (B, T, T) float32 probabilities
TileFn = Callable[[np.ndarray], np.ndarray]


def sliding_window_predict(
    tile_fn: TileFn,
    image: np.ndarray,
    tile: int,
    overlap: float = 0.5,
    batch_size: int = 8,
    blend: str = "gaussian",
    margin: int | None = None,
) -> np.ndarray:
    """Probability map (H, W) of ``image`` (H, W, 3) from overlapping tiles blended by a window.

    The image is reflect-padded by ``margin`` (default: a quarter tile) so border pixels get context,
    tiles are batched through ``tile_fn``, and overlaps are averaged with weights from
    :func:`blend_window`, which removes seams.
    """
    h, w = image.shape[:2]
    margin = tile // 4 if margin is None else margin
    padded, (top, left) = pad_to_cover(image, tile, margin)
    grid = TileGrid.from_overlap(padded.shape[0], padded.shape[1], tile, overlap)
    weight = blend_window(tile, blend)
    acc = np.zeros(padded.shape[:2], dtype=np.float32)
    wsum = np.zeros(padded.shape[:2], dtype=np.float32)
    positions = grid.positions()
    for i in range(0, len(positions), batch_size):
        chunk = positions[i : i + batch_size]
        batch = np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])
        probs = tile_fn(batch)
        for (y, x), p in zip(chunk, probs, strict=True):
            acc[y : y + tile, x : x + tile] += p * weight
            wsum[y : y + tile, x : x + tile] += weight
    out = acc[top : top + h, left : left + w]
    out /= wsum[top : top + h, left : left + w]
    return out
