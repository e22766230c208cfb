"""From probabilities to masks: per-organ thresholds and removal of small objects."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ftuseg.errors import FtusegError


@dataclass
class Thresholds:
    """A default threshold and minimum object area, with per-organ overrides (tuned out of fold).

    Areas are physical (µm²) so one setting serves images of different pixel sizes.
    """

    threshold: float = 0.5
    min_area_um2: float = 0.0
    organs: dict[str, dict[str, float]] = field(default_factory=dict)
    # holes (background enclosed by one object) up to this area are filled: gland lumens are part of the
    # gland in GlaS/RINGS annotations; inf fills every hole, 0 none
    fill_holes_um2: float = 0.0

    def for_organ(self, organ: str | None) -> tuple[float, float]:
        o = self.organs.get(str(organ), {}) if organ is not None else {}
        return float(o.get("threshold", self.threshold)), float(o.get("min_area_um2", self.min_area_um2))

    def holes_for(self, organ: str | None) -> float:
        o = self.organs.get(str(organ), {}) if organ is not None else {}
        return float(o.get("fill_holes_um2", self.fill_holes_um2))

    def binarize(self, prob: np.ndarray, organ: str | None, pixel_size: float | None) -> np.ndarray:
        """The mask these settings make of ``prob`` for an image of ``organ`` at ``pixel_size`` µm/px."""
        threshold, area = self.for_organ(organ)
        return binarize(prob, threshold, min_area_pixels(area, pixel_size),
                        hole_area_pixels(self.holes_for(organ), pixel_size))

    def save(self, path: str | os.PathLike) -> None:
        from ftuseg.io.atomic import atomic_write

        with atomic_write(path) as fh:
            json.dump(asdict(self), fh, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Thresholds:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise FtusegError(f"{path}: invalid thresholds file ({exc})") from None


def remove_small_objects(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels."""
    if min_area <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels].astype(np.uint8)


def fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill background components that touch no image border and have at most ``max_hole_px`` pixels.

    Background is 4-connected (the dual of 8-connected objects), so a hole is what QuPath draws as one."""
    if max_hole_px <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask == 0).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = stats[:, cv2.CC_STAT_AREA] <= max_hole_px
    fill[0] = False  # label 0 is the foreground itself
    fill[border] = False
    if not fill.any():
        return mask
    out = mask.astype(np.uint8, copy=True)
    out[fill[labels]] = 1
    return out


def min_area_pixels(min_area_um2: float, pixel_size: float | None) -> int:
    if min_area_um2 <= 0:
        return 0
    return int(np.ceil(min_area_um2 / (float(pixel_size) ** 2 if pixel_size else 1.0)))


def hole_area_pixels(fill_holes_um2: float, pixel_size: float | None) -> float:
    """The hole-filling limit in pixels (inf stays inf: fill every hole)."""
    if fill_holes_um2 <= 0:
        return 0
    return fill_holes_um2 / (float(pixel_size) ** 2 if pixel_size else 1.0)


def binarize(prob: np.ndarray, threshold: float, min_area_px: int = 0, max_hole_px: float = 0) -> np.ndarray:
    mask = (prob > threshold).astype(np.uint8)
    return remove_small_objects(fill_small_holes(mask, max_hole_px), min_area_px)
