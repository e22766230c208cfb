"""``rle``: the Kaggle run-length encoding of the mask (``--out submission.csv`` gathers these)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ftuseg.io.atomic import atomic_write
from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.rle import encode_rle


@register("rle")
def write(out: SlideOutput) -> Path:
    path = out.slide_dir / "rle.csv"
    with atomic_write(path) as fh:
        fh.write(f"id,rle\n{out.stem},{encode_rle(np.asarray(out.mask[:, :]))}\n")
    return path
