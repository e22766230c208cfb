"""Small pictures for people: a downsampled image with the predicted outlines, and PNG masks."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_write

# Beyond this a single PNG is impractical to open; the OME-TIFF mask is the format for slides.
PNG_MAX_PIXELS = 20_000 * 20_000


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB or single-channel uint8 image as PNG, atomically."""
    img = image
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise FtusegError(f"{path}: PNG encoding failed")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())
    return Path(path)


def write_png_mask(path: str | os.PathLike, mask: Any) -> Path:
    """0/255 PNG of a 2-D mask (numpy or zarr); refuses slides too large for one PNG."""
    h, w = mask.shape
    if h * w > PNG_MAX_PIXELS:
        raise FtusegError(f"{path}: a {w}x{h} mask is too large for PNG; use the ome-tiff format")
    m = (np.asarray(mask[:, :]) > 0).astype(np.uint8) * 255
    return write_png(path, m)


def mask_thumbnail(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (h, w) reduction of a large 2-D mask (numpy or zarr) where any foreground shows.

    Read block by block with an integer reduction factor, then resized to the exact ``shape``.
    """
    H, W = (int(s) for s in mask.shape)
    th, tw = shape
    k = max(1, math.floor(min(H / th, W / tw)))
    bh, bw = math.ceil(H / k), math.ceil(W / k)
    small = np.zeros((bh, bw), dtype=np.uint8)
    block = k * max(1, 2048 // k)
    for y in range(0, H, block):
        for x in range(0, W, block):
            part = np.asarray(mask[y : y + block, x : x + block]) > 0
            ph, pw = (-part.shape[0]) % k, (-part.shape[1]) % k
            if ph or pw:
                part = np.pad(part, ((0, ph), (0, pw)))
            red = part.reshape(part.shape[0] // k, k, part.shape[1] // k, k).any(axis=(1, 3))
            small[y // k : y // k + red.shape[0], x // k : x // k + red.shape[1]] = red
    if small.shape != (th, tw):
        small = cv2.resize(small, (tw, th), interpolation=cv2.INTER_NEAREST)
    return small > 0


def draw_overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0),
                 thickness: int | None = None, fill_alpha: float = 0.15) -> np.ndarray:
    """``image`` (RGB) with ``mask`` outlines drawn on it and the inside lightly tinted."""
    out = image.copy()
    m = mask.astype(np.uint8)
    if not m.any():
        return out
    if fill_alpha > 0:
        tint = np.array(color, dtype=np.float32)
        sel = m > 0
        out[sel] = np.clip(out[sel] * (1 - fill_alpha) + tint * fill_alpha, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    thickness = thickness or max(1, round(max(image.shape[:2]) / 700))
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness, lineType=cv2.LINE_AA)
    return out


def write_overlay(path: str | os.PathLike, thumb: np.ndarray, mask: Any,
                  color: tuple[int, int, int] = (0, 255, 0)) -> Path:
    """Overlay PNG: the thumbnail of the image with the (full-size) mask's outlines."""
    small = mask_thumbnail(mask, thumb.shape[:2])
    return write_png(path, draw_overlay(thumb, small, color))
