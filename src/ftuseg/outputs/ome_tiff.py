"""Tiled, pyramidal OME-TIFF written from a disk-backed array without holding the image in memory.

Level 0 is streamed tile row by tile row from the source (a zarr array); each coarser level is a 2x
reduction of the previous one, kept in a temporary zarr store beside the output, so memory is bounded
by a strip of tiles whatever the slide size. Levels go into SubIFDs (OME-TIFF 6 pyramid layout) that
QuPath, Bio-Formats and tifffile read as one multi-resolution image.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ftuseg.io.atomic import atomic_path

_NAMESPACE = uuid.UUID("0b5b2f3e-8f4e-4d8f-9d7e-4a9b0c1d2e3f")


def _reduce2(block: np.ndarray, reduce: str) -> np.ndarray:
    """2x2 reduction; odd edges are padded (zeros for max, edge values for mean)."""
    h, w = block.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        block = np.pad(block, ((0, ph), (0, pw)), mode="constant" if reduce == "max" else "edge")
    b = block.reshape(block.shape[0] // 2, 2, block.shape[1] // 2, 2)
    if reduce == "max":
        return b.max(axis=(1, 3))
    return np.rint(b.mean(axis=(1, 3), dtype=np.float32)).astype(block.dtype)


def _downsample(src: Any, work: Path, name: str, reduce: str, block: int) -> Any:
    import zarr

    h, w = src.shape
    nh, nw = math.ceil(h / 2), math.ceil(w / 2)
    dst = zarr.open_array(store=str(work / name), mode="w", shape=(nh, nw), chunks=(block, block),
                          dtype=src.dtype, fill_value=0)
    step = 2 * block
    for y in range(0, h, step):
        for x in range(0, w, step):
            part = np.asarray(src[y : y + step, x : x + step])
            dst[y // 2 : y // 2 + math.ceil(part.shape[0] / 2), x // 2 : x // 2 + math.ceil(part.shape[1] / 2)] = (
                _reduce2(part, reduce))
    return dst


def _tiles(arr: Any, tile: int) -> Iterator[np.ndarray]:
    """Tiles in row-major order, each padded to (tile, tile); one strip of tiles in memory at a time."""
    h, w = arr.shape
    for y in range(0, h, tile):
        strip = np.asarray(arr[y : y + tile, :])
        for x in range(0, w, tile):
            t = strip[:, x : x + tile]
            if t.shape != (tile, tile):
                t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])))
            yield np.ascontiguousarray(t)


def write_ome_tiff(
    source: Any,
    path: str | os.PathLike,
    pixel_size: float | None,
    *,
    name: str = "mask",
    tile: int = 512,
    reduce: str = "max",
    compression: str = "zlib",
    min_level_size: int | None = None,
) -> Path:
    """Write a 2-D array-like (numpy or zarr) as a tiled pyramidal OME-TIFF, atomically.

    ``reduce``: "max" for label masks (small objects stay visible at low zoom), "mean" for
    probabilities. ``pixel_size`` (µm/px of level 0) goes into OME PhysicalSizeX/Y and the TIFF
    resolution tags of every level.
    """
    import tifffile

    h, w = (int(s) for s in source.shape)
    dtype = np.dtype(source.dtype)
    min_level_size = min_level_size or tile
    path = Path(path)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.levels.", dir=path.parent))
    try:
        levels = [source]
        while max(levels[-1].shape) > min_level_size:
            levels.append(_downsample(levels[-1], work, f"level{len(levels)}", reduce, block=max(tile, 1024)))
        metadata: dict[str, Any] = {
            "axes": "YX",
            "Name": name,
            # A UUID derived from the content description keeps reruns byte-identical.
            "UUID": str(uuid.uuid5(_NAMESPACE, f"{name}/{h}x{w}/{pixel_size}/{dtype}")),
        }
        res_kw: dict[str, Any] = {}
        if pixel_size:
            metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeXUnit="µm",
                            PhysicalSizeY=pixel_size, PhysicalSizeYUnit="µm")
            res_kw = {"resolution": (1e4 / pixel_size, 1e4 / pixel_size), "resolutionunit": "CENTIMETER"}
        common = dict(tile=(tile, tile), dtype=dtype, compression=compression, photometric="minisblack")
        with atomic_path(path, suffix=".ome.tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
            tw.write(_tiles(levels[0], tile), shape=(h, w), subifds=len(levels) - 1, metadata=metadata,
                     software="ftuseg", **res_kw, **common)
            for i, lvl in enumerate(levels[1:], start=1):
                kw: dict[str, Any] = {}
                if pixel_size:
                    f = 2**i
                    kw = {"resolution": (1e4 / (pixel_size * f), 1e4 / (pixel_size * f)),
                          "resolutionunit": "CENTIMETER"}
                tw.write(_tiles(lvl, tile), shape=tuple(lvl.shape), subfiletype=1, metadata=None, **kw, **common)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return path
