"""Tile grids and blending windows for sliding-window inference."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)  # last tile flush with the edge so every pixel is covered
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Top-left corners of ``tile``-sized windows covering a (height, width) canvas at ``stride``.

    The canvas must be at least ``tile`` in each direction (pad first); every pixel is covered.
    """

    height: int
    width: int
    tile: int
    stride: int

    @classmethod
    def from_overlap(cls, height: int, width: int, tile: int, overlap: float) -> TileGrid:
        stride = max(1, int(round(tile * (1.0 - overlap))))
        return cls(height, width, tile, stride)

    @property
    def ys(self) -> list[int]:
        return _starts(self.height, self.tile, self.stride)

    @property
    def xs(self) -> list[int]:
        return _starts(self.width, self.tile, self.stride)

    def positions(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


@lru_cache(maxsize=16)
def blend_window(tile: int, kind: str = "gaussian", floor: float = 1e-3) -> np.ndarray:
    """A (tile, tile) float32 weight, highest at the centre, strictly positive everywhere.

    ``gaussian``: sigma = tile/8 as in nnU-Net; ``cosine``: a raised-cosine (Hann) window. The floor
    keeps edge pixels (covered by a single tile at image borders) well defined.
    """
    coords = np.arange(tile, dtype=np.float64) + 0.5 - tile / 2.0
    if kind == "gaussian":
        sigma = tile / 8.0
        w1 = np.exp(-0.5 * (coords / sigma) ** 2)
    elif kind == "cosine":
        w1 = np.cos(np.pi * coords / tile) ** 2
    else:
        raise ValueError(f"unknown blend window {kind!r}")
    w = np.outer(w1, w1)
    w = w / w.max()
    return np.maximum(w, floor).astype(np.float32)


def _cover_padding(h: int, w: int, tile: int, margin: int) -> tuple[int, int]:
    """(bottom, right) padding: ``margin``, plus whatever a canvas smaller than one tile lacks."""
    return margin + max(0, tile - (h + 2 * margin)), margin + max(0, tile - (w + 2 * margin))


def tile_count(height: int, width: int, tile: int, overlap: float, margin: int | None = None) -> int:
    """Tiles the sliding window runs on a (height, width) image, without padding it (for reporting)."""
    margin = tile // 4 if margin is None else margin
    bottom, right = _cover_padding(height, width, tile, margin)
    return len(TileGrid.from_overlap(height + margin + bottom, width + margin + right, tile, overlap))


def pad_to_cover(img: np.ndarray, tile: int, margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad by ``margin`` on every side, then at the bottom/right up to ``tile``.

    Returns the padded array and the (top, left) offset of the original image inside it.
    """
    h, w = img.shape[:2]
    bottom, right = _cover_padding(h, w, tile, margin)
    pad = [(margin, bottom), (margin, right)] + [(0, 0)] * (img.ndim - 2)
    # reflect needs at least 2 pixels along an axis; a 1-pixel image can only be repeated
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, pad, mode=mode), (margin, margin)
