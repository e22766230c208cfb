"""The one route of an image through prediction, whatever the input.

An array in memory (through :class:`~ftuseg.io.readers.ArraySlideReader`), an image file, one region of
a whole slide on this machine or on a Ray worker: each is a box of a :class:`SlideReader` handed to
:class:`RegionPredictor`, which

1. routes the organ (:func:`organ_route`: unknown organs refused, organ specialists chosen, an untuned
   organ refused),
2. reads the box with a halo of one network tile at each model's resolution,
3. runs every member at its own µm/px (:func:`member_window_proba`) and averages them,
4. thresholds, fills holes and drops small objects with the organ's settings (:meth:`OrganRoute.binarize`),
   judged with the halo so an object cut by a region border keeps its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.inference.postprocess import Thresholds, binarize, hole_area_pixels, min_area_pixels
from ftuseg.inference.resample import resize_image, resize_prob, scale_factor, scaled_shape
from ftuseg.inference.sliding_window import KeepFn, blended_windows
from ftuseg.inference.tiling import tile_count

if TYPE_CHECKING:
    from ftuseg.config import RunConfig
    from ftuseg.inference.predictor import Member, Predictor
    from ftuseg.io.readers import SlideReader
    from ftuseg.io.tissue import TissueMap

Box = tuple[int, int, int, int]  # x, y, width, height in level-0 pixels


def known_organs() -> tuple[str, ...]:
    from ftuseg.io.dataset import KNOWN_ORGANS

    return KNOWN_ORGANS


def check_organ(organ: str | None, allow_unknown: bool = False) -> None:
    """Refuse an organ name ftuseg does not know (a typo would silently take another resolution and
    threshold), unless the user said so. No organ at all (None) is allowed: the run's defaults apply."""
    if organ is None or allow_unknown or organ in known_organs():
        return
    raise FtusegError(f"organ {organ!r} is not a known organ ({', '.join(known_organs())}); check the spelling, "
                      "or pass --allow-unknown-organ to predict it with an all-organ model's defaults")


@dataclass(frozen=True)
class OrganRoute:
    """Which members predict an organ and how their mean probability becomes a mask."""

    members: tuple[int, ...]  # indices into the ensemble
    threshold: float
    min_area_um2: float
    fill_holes_um2: float

    @property
    def needs_context(self) -> bool:
        """Object sizes and holes are judged beyond a region's core, on its halo."""
        return self.min_area_um2 > 0 or self.fill_holes_um2 > 0

    def binarize(self, prob: np.ndarray, pixel_size: float | None) -> np.ndarray:
        return binarize(prob, self.threshold, min_area_pixels(self.min_area_um2, pixel_size),
                        hole_area_pixels(self.fill_holes_um2, pixel_size))


def organ_route(cfgs: Sequence[RunConfig], thresholds: Thresholds, organ: str | None,
                allow_unknown: bool = False) -> OrganRoute:
    """The members covering ``organ`` and its post-processing; one clear error when the ensemble cannot
    predict it: unknown organ, no member trained on it, or no tuned threshold for it."""
    check_organ(organ, allow_unknown)
    chosen = tuple(i for i, cfg in enumerate(cfgs) if cfg.covers(organ))
    if not chosen:
        known = sorted({o for cfg in cfgs for o in cfg.organs})
        raise FtusegError(f"organ {organ!r}: no model in this ensemble covers it (they cover {', '.join(known)})")
    if thresholds.organs and str(organ) not in thresholds.organs:
        raise FtusegError(
            f"organ {organ!r} has no tuned threshold in this model (tuned for {', '.join(sorted(thresholds.organs))}); "
            "pass --threshold to use one threshold for every organ"
        )
    thr, min_um2 = thresholds.for_organ(organ)
    return OrganRoute(chosen, thr, min_um2, thresholds.holes_for(organ))


# ------------------------------------------------------------------------------------------------
def member_for_image(member: Member, height: int, width: int, pixel_size: float | None, organ: str | None) -> Member:
    """``member`` with its µm/px fixed for one whole ``height x width`` image (``small_image_zoom``: an image
    smaller than a tile is seen finer); the member itself when nothing changes."""
    cfg = member.cfg.for_image(organ, height, width, pixel_size)
    return member if cfg is member.cfg else replace(member, cfg=cfg)


def member_window_proba(member: Member, image: np.ndarray, pixel_size: float | None, organ: str | None,
                        out_box: Box | None = None,
                        keep_for: Callable[[tuple[int, int]], KeepFn | None] | None = None,
                        extent: tuple[float, float, float, float] | None = None,
                        ) -> tuple[np.ndarray, int, int]:
    """One member's probability on ``out_box`` of ``image`` (default: all of it) in the image's own pixel
    grid; returns (prob, tiles in the grids, tiles skipped). ``keep_for(scaled_hw)`` may skip tiles. With
    multi-scale TTA (``cfg.tta_scales``) the image is predicted at each scale and the probabilities are
    averaged in the output grid.

    ``extent`` (x, y, width, height, floats): when ``image`` is a coarser pyramid level, the area it covers
    in the output grid, which ``out_box`` then refers to (``pixel_size`` is the level's own)."""
    cfg = member.cfg
    h, w = image.shape[:2]
    out_box = out_box or (0, 0, w, h)
    if cfg.mode == "whole":
        # The seed: squash the whole image to image_size x image_size, predict, stretch back.
        small = resize_image(image, (cfg.image_size, cfg.image_size))
        full = resize_prob(member.tile_fn(small[None])[0], (h, w))
        ox, oy, ow, oh = out_box
        return np.ascontiguousarray(full[oy : oy + oh, ox : ox + ow]), 1, 0
    if pixel_size is None:
        raise ValueError("tiled models need the image's pixel size")
    acc, total, skipped = None, 0, 0
    for mpp in cfg.scaled_mpps(organ):
        scaled = resize_image(image, scaled_shape(h, w, scale_factor(pixel_size, mpp)))
        keep_fn = keep_for(scaled.shape[:2]) if keep_for is not None else None
        prob_s, t, s = blended_windows(member.tile_fn, scaled, cfg.infer_tile(), cfg.overlap, cfg.infer_batch_size,
                                       cfg.blend, margin=cfg.infer_margin_px(), keep_fn=keep_fn)
        prob = _to_extent(prob_s, extent, out_box) if extent is not None else _to_grid(prob_s, (h, w), out_box)
        total, skipped = total + t, skipped + s
        acc = prob if acc is None else acc + prob
    if len(cfg.tta_scales) > 1:
        acc /= len(cfg.tta_scales)
    return acc, total, skipped


def _to_extent(prob_s: np.ndarray, extent: tuple[float, float, float, float], out_box: Box) -> np.ndarray:
    """Resample a prediction covering ``extent`` of the output grid onto ``out_box`` of that grid (bilinear,
    the half-pixel mapping of ``cv2.resize``)."""
    ex, ey, ew, eh = extent
    ox, oy, ow, oh = out_box
    fx, fy = prob_s.shape[1] / ew, prob_s.shape[0] / eh
    m = np.array([[fx, 0, (ox - ex + 0.5) * fx - 0.5], [0, fy, (oy - ey + 0.5) * fy - 0.5]], dtype=np.float64)
    return cv2.warpAffine(prob_s, m, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _to_grid(prob_s: np.ndarray, box_hw: tuple[int, int], out_box: Box) -> np.ndarray:
    """Resample a prediction of a whole read box (at network scale) onto a sub-box of it at full resolution.

    Uses the same half-pixel mapping as ``cv2.resize`` so that the full box matches ``resize_prob``.
    """
    bh, bw = box_hw
    ox, oy, ow, oh = out_box
    if (ox, oy, ow, oh) == (0, 0, bw, bh) or prob_s.shape[0] > bh or prob_s.shape[1] > bw:
        full = resize_prob(prob_s, (bh, bw))
        return np.ascontiguousarray(full[oy : oy + oh, ox : ox + ow])
    return _to_extent(prob_s, (0, 0, bw, bh), out_box)


class RegionPredictor:
    """Predicts boxes of one image (array, file or slide) with one predictor, for one organ."""

    def __init__(self, predictor: Predictor, reader: SlideReader, pixel_size: float | None, organ: str | None,
                 tissue: TissueMap | None = None, n_regions: int = 1):
        self.predictor = predictor
        self.reader = reader
        self.pixel_size = pixel_size
        self.organ = organ
        self.tissue = tissue
        # organ specialists are routed here, once per image, each at its µm/px for this image's size
        self.members = [member_for_image(m, reader.height, reader.width, pixel_size, organ)
                        for m in predictor.members_for(organ)]
        self.halo = 0
        for m in self.members:  # one network tile of context at each model's resolution (its coarsest scale)
            if m.cfg.mode == "tiled" and pixel_size is not None:
                coarsest = max(m.cfg.scaled_mpps(organ))
                self.halo = max(self.halo, math.ceil(m.cfg.infer_tile() / scale_factor(pixel_size, coarsest)))
        whole = [m for m in self.members if m.cfg.mode != "tiled"]
        self.level, self.level_downsample = self._pyramid_level(whole)
        if n_regions > 1 and whole:
            raise FtusegError(
                f"{reader.path}: a {reader.width}x{reader.height} image needs {n_regions} regions but the model "
                f"predicts whole images (mode={whole[0].cfg.mode}); use a tiled run or a larger region size"
            )

    def _pyramid_level(self, whole: list) -> tuple[int, tuple[float, float]]:
        """The coarsest pyramid level still at least as fine as every member needs, and its downsample
        (x, y): a model at 4 µm/px on a 0.5 µm/px slide reads the 8x level, 1/64 of the pixels to decode."""
        if whole or self.pixel_size is None or self.reader.level_count < 2 or not self.members:
            return 0, (1.0, 1.0)
        want = min(min(m.cfg.scaled_mpps(self.organ)) / self.pixel_size for m in self.members)
        level = self.reader.best_level_for_downsample(want)
        (w0, h0), (lw, lh) = self.reader.level_dimensions[0], self.reader.level_dimensions[level]
        return level, (w0 / lw, h0 / lh)

    def read_box(self, box: Box) -> Box:
        x, y, w, h = box
        x0, y0 = max(0, x - self.halo), max(0, y - self.halo)
        x1 = min(self.reader.width, x + w + self.halo)
        y1 = min(self.reader.height, y + h + self.halo)
        return x0, y0, x1 - x0, y1 - y0

    def probability(self, box: Box, with_halo: bool = False) -> tuple[np.ndarray | None, Box, int, int]:
        """Mean probability of the members on ``box`` (on its read box ``with_halo``), the read box, tiles
        total and tiles skipped; None when the tissue map says the read box is glass."""
        rb = self.read_box(box)
        rx, ry, rw, rh = rb
        if self.tissue is not None and not self.tissue.has_tissue(np.array([rb]))[0]:
            n = self._tile_count(rb)
            return None, rb, n, n
        out_box = (0, 0, rw, rh) if with_halo else (box[0] - rx, box[1] - ry, box[2], box[3])
        img, pixel_size, extent = self._read(rb)
        absolute = (rx, ry, rw, rh) if extent is None else (rx + extent[0], ry + extent[1], extent[2], extent[3])
        acc = None
        total = skipped = 0
        for m in self.members:
            prob, t, s = member_window_proba(m, img, pixel_size, self.organ, out_box,
                                             lambda hw, a=absolute: self._keep_fn(a, hw), extent)
            total, skipped = total + t, skipped + s
            acc = prob if acc is None else acc + prob
        if len(self.members) > 1:
            acc /= len(self.members)
        return acc, rb, total, skipped

    def _read(self, rb: Box) -> tuple[np.ndarray, float | None, tuple[float, float, float, float] | None]:
        """Pixels of the read box: level 0, or the covering box of the chosen pyramid level with its pixel size
        and the area it covers relative to the read box."""
        rx, ry, rw, rh = rb
        if self.level == 0:
            return self.reader.read_region(rx, ry, rw, rh), self.pixel_size, None
        dx, dy = self.level_downsample
        lx0, ly0 = math.floor(rx / dx), math.floor(ry / dy)
        lx1, ly1 = math.ceil((rx + rw) / dx), math.ceil((ry + rh) / dy)
        img = self.reader.read_region(lx0, ly0, lx1 - lx0, ly1 - ly0, self.level)
        extent = (lx0 * dx - rx, ly0 * dy - ry, (lx1 - lx0) * dx, (ly1 - ly0) * dy)
        return img, self.pixel_size * (dx + dy) / 2.0, extent

    def predict(self, box: Box) -> tuple[np.ndarray | None, np.ndarray | None, int, int]:
        """(mask, prob) of ``box`` (None when it holds no tissue), tiles total, tiles skipped."""
        route = self.predictor.route(self.organ)
        prob, rb, total, skipped = self.probability(box, with_halo=route.needs_context)
        if prob is None:
            return None, None, total, skipped
        mask = route.binarize(prob, self.pixel_size)
        if route.needs_context:
            cx, cy, cw, ch = box[0] - rb[0], box[1] - rb[1], box[2], box[3]
            mask, prob = mask[cy : cy + ch, cx : cx + cw], prob[cy : cy + ch, cx : cx + cw]
        return mask, prob, total, skipped

    def _tile_count(self, rb: Box) -> int:
        total = 0
        for m in self.members:
            if m.cfg.mode == "tiled":
                for mpp in m.cfg.scaled_mpps(self.organ):
                    sh, sw = scaled_shape(rb[3], rb[2], scale_factor(self.pixel_size, mpp))
                    total += tile_count(sh, sw, m.cfg.infer_tile(), m.cfg.overlap, m.cfg.infer_margin_px())
            else:
                total += 1
        return total

    def _keep_fn(self, area: tuple[float, float, float, float], scaled_hw: tuple[int, int]) -> KeepFn | None:
        """Tiles to run: those the tissue map says hold tissue; ``area`` is what the scaled image covers, in
        level-0 coordinates."""
        if self.tissue is None:
            return None
        rx, ry, rw, rh = area
        fy, fx = scaled_hw[0] / rh, scaled_hw[1] / rw
        tissue = self.tissue

        def keep(positions: list[tuple[int, int]], top: int, left: int, tile: int) -> np.ndarray:
            pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
            boxes = np.stack([rx + (pos[:, 1] - left) / fx, ry + (pos[:, 0] - top) / fy,
                              np.full(len(pos), tile / fx), np.full(len(pos), tile / fy)], axis=1)
            return tissue.has_tissue(boxes)

        return keep


def whole_box(reader: SlideReader) -> Box:
    return 0, 0, reader.width, reader.height
