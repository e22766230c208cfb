"""The competition metric: per-image Dice, averaged over images, with breakdowns."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


def dice_score(pred: np.ndarray, truth: np.ndarray, empty_score: float = 1.0) -> float:
    """Dice 2|X∩Y| / (|X|+|Y|) of two binary masks; ``empty_score`` when both are empty."""
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return float(empty_score)
    inter = int(np.count_nonzero(p & t))
    return 2.0 * inter / total


def inside_roi(pred: np.ndarray, truth: np.ndarray, roi: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of ``pred`` and ``truth`` inside ``roi`` (None: every pixel). Outside the ROIs of a
    partially annotated image nothing is annotated, so neither side may count there."""
    if roi is None:
        return pred, truth
    if roi.shape != truth.shape:
        raise ValueError(f"ROI shape {roi.shape} differs from the mask {truth.shape}")
    return pred[roi], truth[roi]


def roi_dice(pred: np.ndarray, truth: np.ndarray, roi: np.ndarray | None, empty_score: float = 1.0) -> float:
    """Dice counting only pixels inside ``roi`` (None: the whole image), as validation scores images."""
    return dice_score(*inside_roi(pred, truth, roi), empty_score=empty_score)


def mean_dice(scores: Iterable[float]) -> float:
    """Mean of per-image Dice scores (the competition's aggregate)."""
    arr = np.asarray(list(scores), dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def dice_breakdown(per_image: pd.DataFrame, by: Iterable[str] = ("organ", "data_source")) -> dict:
    """Summarise a per-image table (column ``dice`` plus grouping columns) into nested dicts.

    Returns ``{"mean_dice": ..., "n_images": ..., "by_organ": {...}, "by_data_source": {...}}``.
    """
    out: dict = {"mean_dice": mean_dice(per_image["dice"]), "n_images": int(len(per_image))}
    for col in by:
        if col not in per_image.columns:
            continue
        groups = per_image.groupby(per_image[col].fillna("unknown").astype(str))["dice"]
        out[f"by_{col}"] = {
            str(k): {"mean_dice": float(v.mean()), "n_images": int(v.size)} for k, v in groups
        }
    return out
