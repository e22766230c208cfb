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

    def for_organ(self, organ: str | None) -> tuple[float, float]:
        o = self.organs.get(str(organ), {}) if organ is not None else {}
        return float(o.get("threshold", self.threshold)), float(o.get("min_area_um2", self.min_area_um2))

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


def min_area_pixels(min_area_um2: float, pixel_size: float | None) -> int:
    if min_area_um2 <= 0:
        return 0
    return int(np.ceil(min_area_um2 / (float(pixel_size) ** 2 if pixel_size else 1.0)))


def binarize(prob: np.ndarray, threshold: float, min_area_px: int = 0) -> np.ndarray:
    mask = (prob > threshold).astype(np.uint8)
    return remove_small_objects(mask, min_area_px)
