"""The seed's random-uniform baseline: every cell of the mask is foreground with probability 1/2."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ftuseg.io.dataset import expected_shape
from ftuseg.rle import encode_rle


def random_mask(shape: tuple[int, int], rng: np.random.Generator, cell: int = 1, p: float = 0.5) -> np.ndarray:
    """Uniformly random mask; ``cell > 1`` draws one value per ``cell x cell`` block.

    Blocks keep the expected Dice of per-pixel noise (each pixel is still foreground with probability
    ``p``) but make the RLE orders of magnitude shorter, so submissions stay small.
    """
    h, w = shape
    coarse = rng.random(((h + cell - 1) // cell, (w + cell - 1) // cell)) < p
    if cell > 1:
        coarse = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)
    return coarse[:h, :w].astype(np.uint8)


def random_baseline(table: pd.DataFrame, seed: int = 0, cell: int = 32) -> pd.DataFrame:
    """A submission (id, rle) of random masks; each image's mask depends only on (seed, id)."""
    rows = []
    for _, row in table.iterrows():
        shape = expected_shape(row, default=_image_shape(row))
        rng = np.random.default_rng([seed, zlib.crc32(str(row["id"]).encode())])
        rows.append({"id": row["id"], "rle": encode_rle(random_mask(shape, rng, cell))})
    return pd.DataFrame(rows, columns=["id", "rle"])


def _image_shape(row: pd.Series) -> tuple[int, int] | None:
    if "image_path" not in row or pd.isna(row.get("image_path")):
        return None
    from ftuseg.io.images import read_image

    return read_image(row["image_path"]).shape[:2]
