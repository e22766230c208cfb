"""Slide readers behind one interface: region reads at any pyramid level, thumbnails, pixel size.

``open_slide`` picks the backend from the file name: tifffile + zarr for (Big)TIFF / pyramidal OME-TIFF
(lazy tile reads, nothing decoded until a region asks for it), Pillow for png/jpg/bmp (small images,
decoded once), and OpenSlide for vendor formats (svs/ndpi/mrxs/...) when the ``ftuseg[wsi]`` extra is
installed. Coordinates follow OpenSlide: ``dimensions`` is (width, height); regions are (x, y, w, h).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ftuseg.errors import FtusegError, ImageReadError
from ftuseg.io.images import TIFF_EXTENSIONS, check_image_file, to_rgb_uint8, uint16_shift
from ftuseg.io.pixel_size import description_mpp, ome_mpp, pillow_file_mpp, plausible_mpp, tiff_tag_mpp

__all__ = ["ArraySlideReader", "OpenSlideReader", "PillowSlideReader", "SlideReader", "TiffSlideReader",
           "is_slide_file", "open_slide", "plausible_mpp", "slide_stem"]

PILLOW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
OPENSLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
SLIDE_EXTENSIONS = (*TIFF_EXTENSIONS, *PILLOW_EXTENSIONS, *OPENSLIDE_EXTENSIONS)
WSI_EXTRA_HINT = "pip install 'ftuseg[wsi]'"

BACKGROUND = 255  # value of pixels outside the slide (white glass)


def slide_stem(path: str | os.PathLike) -> str:
    """File name without its image extension (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    lower = name.lower()
    for ext in sorted(SLIDE_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def is_slide_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SLIDE_EXTENSIONS)


class SlideReader:
    """Base class: subclasses fill ``level_dimensions`` / ``mpp`` and implement ``_read``.

    ``read_region`` clips to the slide and fills the outside with white, so callers may ask for
    boxes that hang over the edge.
    """

    path: Path
    level_dimensions: list[tuple[int, int]]  # (width, height) per level, largest first
    mpp: float | None  # micrometres per level-0 pixel, None when the file does not say

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.level_dimensions = []
        self.mpp = None

    # -- geometry --------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def width(self) -> int:
        return self.level_dimensions[0][0]

    @property
    def height(self) -> int:
        return self.level_dimensions[0][1]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        w0, h0 = self.dimensions
        return [((w0 / w) + (h0 / h)) / 2.0 for w, h in self.level_dimensions]

    # -- pixels ----------------------------------------------------------------------------
    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of an in-bounds box of ``level``."""
        raise NotImplementedError

    def read_region(self, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the box at (x, y) of size (w, h), all in ``level``'s pixels."""
        if not 0 <= level < self.level_count:
            raise FtusegError(f"{self.path}: level {level} does not exist (the slide has {self.level_count})")
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {w}x{h}")
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(lw, x + w), min(lh, y + h)
        if x0 == x and y0 == y and x1 == x + w and y1 == y + h:
            return self._read(x, y, w, h, level)
        out = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(x0, y0, x1 - x0, y1 - y0, level)
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """The smallest level that is still at least as detailed as ``downsample``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.001:
                best = i
        return best

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Whole slide shrunk so its longer side is at most ``max_size`` (never enlarged).

        Read from the coarsest sufficient pyramid level and shrunk block by block, so a slide without
        a pyramid is streamed rather than loaded whole.
        """
        w0, h0 = self.dimensions
        target = max(w0, h0) / max_size
        level = self.best_level_for_downsample(max(1.0, target))
        lw, lh = self.level_dimensions[level]
        k = max(lw, lh) / max_size
        if k <= 1:
            return self.read_region(0, 0, lw, lh, level)
        out_w, out_h = max(1, round(lw / k)), max(1, round(lh / k))
        if lw * lh <= 4096 * 4096:
            return cv2.resize(self.read_region(0, 0, lw, lh, level), (out_w, out_h), interpolation=cv2.INTER_AREA)
        # Integer factor per block keeps block edges aligned; a final small resize fixes the size.
        ki = math.ceil(k)
        block = ki * max(1, 2048 // ki)
        bw, bh = math.ceil(lw / ki), math.ceil(lh / ki)
        small = np.empty((bh, bw, 3), dtype=np.uint8)
        for by in range(0, lh, block):
            for bx in range(0, lw, block):
                w, h = min(block, lw - bx), min(block, lh - by)
                tile = self.read_region(bx, by, w, h, level)
                tw, th = math.ceil(w / ki), math.ceil(h / ki)
                small[by // ki : by // ki + th, bx // ki : bx // ki + tw] = cv2.resize(
                    tile, (tw, th), interpolation=cv2.INTER_AREA)
        if (bw, bh) != (out_w, out_h):
            small = cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_AREA)
        return small

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        pass

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {self.width}x{self.height}, "
                f"levels={self.level_count}, mpp={self.mpp})")


# ------------------------------------------------------------------------------------------------
class TiffSlideReader(SlideReader):
    """TIFF / BigTIFF / OME-TIFF through tifffile's zarr store: only the tiles a region touches are decoded.

    Pyramid levels come from tifffile's series levels (SubIFDs, OME, SVS-like page pyramids); when a
    file stores its levels as separate series of proportionally smaller images, those are used too.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        import tifffile

        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # tifffile raises many types for broken files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImageReadError(f"{self.path}: cannot open TIFF ({reason})") from None
        try:
            self._setup()
        except Exception:
            self._tif.close()
            raise

    def _setup(self) -> None:
        tif = self._tif
        if not tif.series:
            raise ImageReadError(f"{self.path}: TIFF holds no image")
        base = tif.series[0]
        axes = base.axes.upper()
        if "Y" not in axes or "X" not in axes:
            raise ImageReadError(f"{self.path}: TIFF image has no Y/X axes (axes {base.axes})")
        self._axes = axes
        levels = list(base.levels)
        self._sources: list[tuple[Any, int | None]] = [(base, i) for i in range(len(levels))]
        shapes = [lvl.shape for lvl in levels]
        if len(levels) == 1:
            # Pyramids written as separate series (one per level): accept proportionally smaller images.
            h0, w0 = base.shape[axes.index("Y")], base.shape[axes.index("X")]
            extra = []
            for s in tif.series[1:]:
                if s.axes.upper() != axes or len(s.levels) != 1:
                    continue
                h, w = s.shape[axes.index("Y")], s.shape[axes.index("X")]
                if h < h0 and w < w0 and abs((w0 / w) - (h0 / h)) / (w0 / w) < 0.02:
                    extra.append((w, h, s))
            for _, _, s in sorted(extra, key=lambda t: -t[0]):
                self._sources.append((s, None))
                shapes.append(s.shape)
        yi, xi = axes.index("Y"), axes.index("X")
        self.level_dimensions = [(int(s[xi]), int(s[yi])) for s in shapes]
        self._zarr: dict[int, Any] = {}
        page = base.pages[0] if base.pages and base.pages[0] is not None else tif.pages[0]
        mpp_sources = (
            ("OME PhysicalSizeX", ome_mpp(tif.ome_metadata) if tif.is_ome else None),
            ("TIFF XResolution", tiff_tag_mpp(page)),
            ("ImageDescription MPP", description_mpp(getattr(page, "description", None))),
        )
        for name, value in mpp_sources:
            if value is None:
                continue
            if plausible_mpp(value) is None:
                warnings.warn(f"{self.path}: ignoring implausible pixel size {value:.4g} µm/px from {name}",
                              stacklevel=3)
                continue
            self.mpp = float(value)
            self.mpp_source = name
            break
        self._shift: int | None = None  # 16-bit: one scaling per slide, not per region

    def _array(self, level: int) -> Any:
        if level not in self._zarr:
            import zarr

            series, lvl = self._sources[level]
            store = series.aszarr(level=lvl) if lvl is not None else series.aszarr()
            self._zarr[level] = zarr.open(store, mode="r")
        return self._zarr[level]

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        arr = self._array(level)
        index: list[slice | int] = []
        kept: list[str] = []
        for ax in self._axes:
            if ax == "Y":
                index.append(slice(y, y + h))
            elif ax == "X":
                index.append(slice(x, x + w))
            elif ax in ("S", "C") and "S" not in kept and "C" not in kept:
                index.append(slice(None))
            else:
                index.append(0)  # time, z, extra channel axes: first plane
                continue
            kept.append(ax)
        try:
            data = np.asarray(arr[tuple(index)])
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImageReadError(f"{self.path}: cannot decode region x={x} y={y} {w}x{h} ({reason})") from None
        order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept) if a not in ("Y", "X")]
        data = np.transpose(data, order) if len(order) == data.ndim else data
        if data.dtype == np.uint16:
            if self._shift is None:  # from the smallest level: one scaling per slide, not per region
                self._shift = uint16_shift(np.asarray(self._array(self.level_count - 1)))
            data = (data >> self._shift).astype(np.uint8)
        return to_rgb_uint8(data, source=str(self.path))

    def close(self) -> None:
        self._zarr.clear()
        self._tif.close()


class PillowSlideReader(SlideReader):
    """png / jpg / bmp: small images, decoded once and held in memory."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        from ftuseg.io.images import read_image

        self._image = read_image(self.path)
        self.level_dimensions = [(int(self._image.shape[1]), int(self._image.shape[0]))]
        self.mpp = pillow_file_mpp(self.path)
        self.mpp_source = "dpi"

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return self._image[y : y + h, x : x + w]

    def close(self) -> None:
        self._image = np.empty((0, 0, 3), np.uint8)


class ArraySlideReader(SlideReader):
    """An image already in memory behind the slide interface (like TIAToolbox's VirtualWSIReader), so that
    arrays take the same prediction route as files. ``mpp`` is the caller's pixel size (None: unknown)."""

    def __init__(self, image: np.ndarray, mpp: float | None = None, name: str = "<array>"):
        super().__init__(name)
        self._image = to_rgb_uint8(image, source=name)
        self.level_dimensions = [(int(self._image.shape[1]), int(self._image.shape[0]))]
        self.mpp = None if mpp is None else float(mpp)
        self.mpp_source = "caller"

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        if (x, y, w, h) == (0, 0, self.width, self.height):
            return self._image  # the whole image: no copy
        return self._image[y : y + h, x : x + w]


class OpenSlideReader(SlideReader):
    """Vendor formats through OpenSlide (``pip install 'ftuseg[wsi]'``)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        try:
            import openslide
        except ImportError:
            raise FtusegError(
                f"{self.path}: reading {self.path.suffix} slides needs OpenSlide; install it with {WSI_EXTRA_HINT}"
            ) from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImageReadError(f"{self.path}: OpenSlide cannot open the slide ({reason})") from None
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        mpp = self._slide.properties.get("openslide.mpp-x")
        try:
            self.mpp = plausible_mpp(float(mpp)) if mpp is not None else None
            self.mpp_source = "openslide.mpp-x"
        except ValueError:
            self.mpp = None

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        rgba = np.asarray(self._slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h)))
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = BACKGROUND  # transparent = outside the scanned area
        return rgb

    def close(self) -> None:
        self._slide.close()


def open_slide(path: str | os.PathLike) -> SlideReader:
    """The reader for ``path`` chosen by its extension; clear errors for missing/unsupported files."""
    path = check_image_file(path)
    lower = path.name.lower()
    if lower.endswith(TIFF_EXTENSIONS):
        return TiffSlideReader(path)
    if lower.endswith(PILLOW_EXTENSIONS):
        return PillowSlideReader(path)
    if lower.endswith(OPENSLIDE_EXTENSIONS):
        return OpenSlideReader(path)
    raise ImageReadError(
        f"{path}: unsupported image type {path.suffix!r}; expected one of {', '.join(SLIDE_EXTENSIONS)}"
    )
