"""Per-organ threshold and minimum object area, tuned on out-of-fold probabilities.

Each fold run saves its validation images' probabilities (``oof/<id>.npz``, uint8 in 1/255 steps).
Together the folds cover every training image once, so the tuned values are never fitted on data a
model saw in training. On partially annotated images (ROI annotations) Dice counts only the pixels
inside the ROIs, as validation does: outside them nothing is annotated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.inference.postprocess import (
    Thresholds,
    fill_small_holes,
    hole_area_pixels,
    min_area_pixels,
    remove_small_objects,
)
from ftuseg.io.dataset import expected_shape, load_table, read_row_truth
from ftuseg.metrics import inside_roi, roi_dice

THRESHOLD_GRID = np.round(np.arange(0.1, 0.91, 0.05), 2)
MIN_AREA_GRID_UM2 = (0.0, 50.0, 200.0, 800.0, 2000.0)
FILL_HOLES_GRID_UM2 = (0.0, 500.0, 5000.0, float("inf"))


def load_prob_maps(folder: Path) -> dict[str, np.ndarray]:
    """The probabilities (uint8) that ``save_prob_maps`` wrote to ``folder``, by image id."""
    probs: dict[str, np.ndarray] = {}
    for f in sorted(folder.glob("*.npz")):
        with np.load(f) as z:
            probs[f.stem] = z["prob"]
    return probs


def load_oof(run_dirs: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities (uint8) by image id, gathered from every run folder."""
    probs: dict[str, np.ndarray] = {}
    for run in run_dirs:
        folder = Path(run) / "oof"
        if not folder.is_dir():
            raise FtusegError(f"{run}: no out-of-fold predictions (oof/); train with --fold k or --folds all")
        probs.update(load_prob_maps(folder))
    if not probs:
        raise FtusegError("no out-of-fold predictions found")
    return probs


def dice_curve(prob_u8: np.ndarray, truth: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Dice at every threshold of ``grid`` in one pass, from histograms of foreground/background probs."""
    t = truth.astype(bool).ravel()
    p = prob_u8.ravel()
    fg = np.bincount(p[t], minlength=256)
    allp = np.bincount(p, minlength=256)
    # predicted positive: prob > threshold  <=> u8 value > floor(threshold * 255)
    cut = np.floor(grid * 255).astype(int) + 1
    tp = np.array([fg[c:].sum() for c in cut])
    pred = np.array([allp[c:].sum() for c in cut])
    denom = pred + t.sum()
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def tune_thresholds(
    run_dirs: Sequence[str | os.PathLike], data_dir: str | os.PathLike, save: bool = True,
    threshold_grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[Thresholds, pd.DataFrame]:
    """Choose a global and a per-organ (threshold, min area, hole filling) maximising mean out-of-fold Dice.

    Returns the thresholds and a table of the OOF Dice before (0.5, no min area) and after tuning per organ.
    With ``save`` the result is written to ``thresholds.json`` in every run folder.
    """
    probs = load_oof(run_dirs)
    table = load_table(data_dir, "train", need_rle=True, need_images=False)
    table = table[table["id"].astype(str).isin(probs)]
    if table.empty:
        raise FtusegError(f"{data_dir}: none of the out-of-fold ids are in train.csv")
    result, report = tune_on_probs(probs, table, source="oof", threshold_grid=threshold_grid)
    if save:
        for run in run_dirs:
            result.save(Path(run) / "thresholds.json")
    return result, report


def tune_on_probs(
    probs: dict[str, np.ndarray], table: pd.DataFrame, source: str = "probs",
    threshold_grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[Thresholds, pd.DataFrame]:
    """:func:`tune_thresholds` on probabilities in memory (uint8 in 1/255 steps, or floats in [0, 1]) for the
    rows of ``table``: e.g. a fold run's inner selection split, which the reported fold never sees.

    ``threshold_grid`` are the thresholds tried (the recipe keeps 0.5: see
    ``ftuseg.training.recipe.RECIPE_THRESHOLDS``); ``dice_at_0.5`` in the report is always at 0.5.
    """
    grid = np.round(np.asarray(threshold_grid, dtype=float), 4)
    if grid.size == 0 or (grid <= 0).any() or (grid >= 1).any():
        raise FtusegError(f"threshold grid must be values in (0, 1), got {list(threshold_grid)}")
    items = []
    for _, row in table.iterrows():
        shape = expected_shape(row)
        p = probs[str(row["id"])]
        if p.dtype != np.uint8:
            p = np.clip(np.rint(p * 255), 0, 255).astype(np.uint8)
        if p.shape != shape:
            raise FtusegError(f"{source}/{row['id']}: shape {p.shape} differs from the image {shape}")
        truth, roi = read_row_truth(row, shape)
        items.append((row, p, truth, roi))
    # the plain 0.5 is always scored: it is the baseline that tuning must beat
    full = np.union1d(grid, [0.5])
    curves = np.stack([dice_curve(*inside_roi(p, t, roi), full) for _, p, t, roi in items])  # (images, thresholds)
    organs = np.array([str(r["organ"]) for r, _, _, _ in items])
    default_i = int(np.searchsorted(full, 0.5))
    tried = np.isin(full, grid)

    def best_threshold(sel: np.ndarray) -> float:
        means = np.where(tried, curves[sel].mean(0), -np.inf)
        return float(full[int(np.argmax(means))])

    def best_post(sel: np.ndarray, thr: float) -> tuple[float, float, float]:
        """(min area, hole limit, mean Dice): holes are filled before small objects are dropped, as at
        prediction; the grid is small, so every pair is scored."""
        # post-processing sees the whole image, as at prediction; only the score is limited to the ROIs
        chosen = [(r, (p > thr * 255).astype(np.uint8), t, roi)
                  for (r, p, t, roi), s in zip(items, sel, strict=True) if s]
        best = (0.0, 0.0, -1.0)
        for holes in FILL_HOLES_GRID_UM2:
            filled = [(r, fill_small_holes(m, hole_area_pixels(holes, float(r["pixel_size"]))), t, roi)
                      for r, m, t, roi in chosen]
            for area in MIN_AREA_GRID_UM2:
                d = float(np.mean([roi_dice(remove_small_objects(m, min_area_pixels(area, float(r["pixel_size"]))),
                                            t, roi) for r, m, t, roi in filled]))
                if d > best[2] + 1e-9:  # ties keep the simpler (earlier, smaller) setting
                    best = (area, holes, d)
        return best

    everything = np.ones(len(items), bool)
    g_thr = best_threshold(everything)
    g_area, g_holes, _ = best_post(everything, g_thr)
    result = Thresholds(threshold=g_thr, min_area_um2=g_area, fill_holes_um2=g_holes)
    report = []
    for organ in sorted(set(organs)):
        sel = organs == organ
        thr = best_threshold(sel)
        area, holes, tuned = best_post(sel, thr)
        result.organs[organ] = {"threshold": thr, "min_area_um2": area, "fill_holes_um2": holes}
        report.append({"organ": organ, "n_images": int(sel.sum()), "dice_at_0.5": float(curves[sel, default_i].mean()),
                       "threshold": thr, "min_area_um2": area, "fill_holes_um2": holes, "dice_tuned": tuned})
    return result, pd.DataFrame(report)
