"""Low-resolution tissue detection, so whole-slide inference skips empty glass.

Stained tissue is coloured and glass is grey-white, so saturation separates them: Otsu on the
(median-filtered) saturation of a thumbnail, with the threshold clamped so that a slide that is all
tissue (Otsu would split pale from dark stain) or all glass (Otsu would split noise) keeps its tissue.
The mask is then dilated generously: missing tissue costs accuracy, keeping glass only costs time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ftuseg.io.readers import SlideReader

# Saturation (0-255) bounds for the Otsu threshold: below MIN is scanner noise on glass, above MAX
# would start discarding pale but real tissue (lung, fat, mucosa).
MIN_SATURATION = 12
MAX_SATURATION = 25


def detect_tissue(rgb: np.ndarray, dilate_px: int = 2) -> np.ndarray:
    """Boolean tissue mask of a (small) RGB uint8 image."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    sat = cv2.medianBlur(hsv[..., 1], 5) if min(rgb.shape[:2]) >= 5 else hsv[..., 1]
    otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = float(np.clip(otsu, MIN_SATURATION, MAX_SATURATION))
    # Dark, unsaturated pixels (nuclei-dense hematoxylin, some stains) are tissue too; black scan
    # borders (value near 0) are not.
    val = hsv[..., 2]
    mask = (sat > thr) | ((val < 150) & (val > 20))
    if dilate_px > 0 and mask.any():
        k = 2 * dilate_px + 1
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    return mask


@dataclass
class TissueMap:
    """A tissue mask over the whole slide at low resolution, queried with level-0 boxes."""

    mask: np.ndarray  # bool (th, tw)
    scale_x: float  # level-0 pixels per mask pixel
    scale_y: float

    def __post_init__(self) -> None:
        m = self.mask.astype(np.int32)
        # Summed-area table: any box query costs four lookups.
        self._sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), dtype=np.int64)
        self._sat[1:, 1:] = m.cumsum(0).cumsum(1)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _cells(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        th, tw = self.mask.shape
        x, y, w, h = (boxes[:, i].astype(np.float64) for i in range(4))
        x0 = np.clip(np.floor(x / self.scale_x), 0, tw).astype(np.int64)
        y0 = np.clip(np.floor(y / self.scale_y), 0, th).astype(np.int64)
        x1 = np.clip(np.ceil((x + w) / self.scale_x), 0, tw).astype(np.int64)
        y1 = np.clip(np.ceil((y + h) / self.scale_y), 0, th).astype(np.int64)
        return x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)

    def tissue_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """Number of tissue mask pixels touched by each level-0 box (n, 4) = (x, y, w, h)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x0, y0, x1, y1 = self._cells(boxes)
        s = self._sat
        return s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]

    def has_tissue(self, boxes: np.ndarray) -> np.ndarray:
        """Whether each level-0 box (n, 4) touches any tissue."""
        return self.tissue_pixels(boxes) > 0


def tissue_map(reader: SlideReader, max_size: int = 2048, dilate_um: float = 50.0,
               pixel_size: float | None = None) -> TissueMap:
    """Detect tissue on a thumbnail of ``reader``; dilate by ``dilate_um`` when the pixel size is known."""
    thumb = reader.thumbnail(max_size)
    sx = reader.width / thumb.shape[1]
    sy = reader.height / thumb.shape[0]
    dilate_px = 2
    if pixel_size:
        dilate_px = max(2, int(round(dilate_um / (pixel_size * sx))))
    return TissueMap(detect_tissue(thumb, dilate_px=dilate_px), sx, sy)
