"""Decode images of any supported format into RGB uint8 arrays (H, W, 3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ftuseg.errors import ImageReadError

IMAGE_EXTENSIONS = (".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS = (".tiff", ".tif", ".ome.tif", ".ome.tiff", ".btf")


def to_rgb_uint8(img: np.ndarray, source: str = "image") -> np.ndarray:
    """Convert grayscale / RGBA / planar / 16-bit / float arrays to contiguous RGB uint8 (H, W, 3)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)  # planar (C, H, W) TIFF
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ImageReadError(f"{source}: unsupported image shape {img.shape}")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> uint16_shift(img)).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            scale = 255.0 if float(np.nanmax(img, initial=0)) <= 1.0 else 1.0
            img = np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
        elif img.dtype == bool:
            img = img.astype(np.uint8) * 255
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    channels = img.shape[-1]
    if channels == 1:
        img = np.repeat(img, 3, axis=-1)
    elif channels == 2:  # gray + alpha
        img = np.repeat(img[..., :1], 3, axis=-1)
    elif channels >= 4:
        img = img[..., :3]  # drop alpha (slides have no meaningful transparency)
    elif channels != 3:
        raise ImageReadError(f"{source}: unsupported number of channels {channels}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageReadError(f"{source}: image is empty ({img.shape[0]}x{img.shape[1]})")
    return np.ascontiguousarray(img)


def uint16_shift(img: np.ndarray) -> int:
    """Bits to drop to bring 16-bit pixels to 8: 12-bit scanners store values < 4096 in 16-bit containers,
    and dropping 8 bits would leave them almost black."""
    return 4 if img.max(initial=0) < 4096 else 8


def is_tiff(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TIFF_EXTENSIONS)


def check_image_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after one clear error if it is missing, a folder or empty."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: image file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: image file is empty (0 bytes)")
    return path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a whole image file as RGB uint8 (H, W, 3). Raises :class:`ImageReadError` on failure."""
    path = check_image_file(path)
    try:
        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                img = tif.series[0].levels[0].asarray() if tif.series else tif.asarray()
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # force decoding so truncated files fail here, not later
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    img = np.asarray(im)
                    if im.mode == "I":
                        img = img.astype(np.uint16) if img.max(initial=0) < 65536 else img
                elif im.mode in ("RGB", "L", "RGBA", "LA"):
                    img = np.asarray(im)
                else:
                    img = np.asarray(im.convert("RGB"))
    except ImageReadError:
        raise
    except Exception as exc:  # decoders raise many types; the user needs the file and reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(
            f"{path}: cannot decode image ({reason}); the file is truncated, corrupt or not an image"
        ) from exc
    return to_rgb_uint8(img, source=str(path))
