"""The competition metric: per-image Dice, averaged over images, with breakdowns; object-level errors beside it."""

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


def object_errors(pred: np.ndarray, truth: np.ndarray, roi: np.ndarray | None = None,
                  iou_match: float = 0.5) -> dict[str, int]:
    """Where an image's Dice goes, object by object (8-connected components of each mask).

    A predicted object and a true one match when their IoU exceeds ``iou_match``; above 0.5 a match is
    one-to-one without any assignment step (two objects cannot both overlap a third by more than half its
    union). Counts: ``truth_objects``, ``pred_objects``, ``matched``, ``missed`` (true objects without a
    match), ``spurious`` (predicted objects without one). Dice's error pixels split by where they lie:
    ``fp_spurious_px`` / ``fn_missed_px`` inside unmatched objects, ``fp_boundary_px`` / ``fn_boundary_px``
    around matched ones, so ``2*tp_px / (2*tp_px + fp_* + fn_*)`` is the image's Dice. Outside ``roi``
    (a partially annotated image) nothing counts, as in ``roi_dice``.
    """
    import cv2

    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    if not 0.5 <= iou_match < 1:
        raise ValueError(f"iou_match must be in [0.5, 1) for one-to-one matches, got {iou_match}")
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    if roi is not None:
        if roi.shape != truth.shape:
            raise ValueError(f"ROI shape {roi.shape} differs from the mask {truth.shape}")
        p, t = p & roi, t & roi
    n_p, lab_p = cv2.connectedComponents(p.astype(np.uint8), connectivity=8)
    n_t, lab_t = cv2.connectedComponents(t.astype(np.uint8), connectivity=8)
    # overlaps only of the (pred, true) object pairs that touch: a noisy mask has thousands of objects
    both = p & t
    pairs, inter = np.unique(lab_p[both].astype(np.int64) * n_t + lab_t[both], return_counts=True)
    pi, ti = np.divmod(pairs, n_t)
    area_p, area_t = np.bincount(lab_p.ravel(), minlength=n_p), np.bincount(lab_t.ravel(), minlength=n_t)
    good = inter / (area_p[pi] + area_t[ti] - inter) > iou_match
    p_matched, t_matched = np.zeros(n_p, bool), np.zeros(n_t, bool)
    p_matched[pi[good]] = True
    t_matched[ti[good]] = True
    fp_by_pred = np.bincount(lab_p[p & ~t], minlength=n_p)  # predicted pixels on true background, per object
    fn_by_true = np.bincount(lab_t[t & ~p], minlength=n_t)
    p_matched, t_matched, fp_by_pred, fn_by_true = p_matched[1:], t_matched[1:], fp_by_pred[1:], fn_by_true[1:]
    return {"truth_objects": n_t - 1, "pred_objects": n_p - 1, "matched": int(t_matched.sum()),
            "missed": int((~t_matched).sum()), "spurious": int((~p_matched).sum()),
            "tp_px": int(inter.sum()),
            "fp_spurious_px": int(fp_by_pred[~p_matched].sum()), "fp_boundary_px": int(fp_by_pred[p_matched].sum()),
            "fn_missed_px": int(fn_by_true[~t_matched].sum()), "fn_boundary_px": int(fn_by_true[t_matched].sum())}


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
