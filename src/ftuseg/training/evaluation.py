"""Scoring a model on whole images (validation, held-out folds) and saving out-of-fold probabilities."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ftuseg.config import RunConfig
from ftuseg.inference.predictor import Member, member_proba
from ftuseg.io.atomic import atomic_write
from ftuseg.io.dataset import read_row_image, read_row_truth
from ftuseg.metrics import roi_dice


def evaluate_images(
    tile_fn, cfg: RunConfig, table: pd.DataFrame, progress: bool = False, keep_proba: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-image Dice at each image's own resolution (threshold ``cfg.threshold``); on a partially annotated
    image (ROI annotations) only the pixels inside its ROIs count."""
    from tqdm.auto import tqdm

    member = Member(tile_fn, cfg)
    rows, probs = [], {}
    for _, row in tqdm(table.iterrows(), total=len(table), desc="validate", unit="img", disable=not progress,
                       leave=False):
        img = read_row_image(row)
        truth, roi = read_row_truth(row, img.shape[:2])
        prob = member_proba(member, img, float(row["pixel_size"]), row.get("organ"))
        pred = prob > cfg.threshold
        dice = roi_dice(pred, truth, roi)
        rows.append({"id": row["id"], "organ": row.get("organ"), "data_source": row.get("data_source"),
                     "dice": dice})
        if keep_proba:
            probs[str(row["id"])] = prob
    return pd.DataFrame(rows), probs


def save_prob_maps(folder: Path, probs: dict[str, np.ndarray]) -> None:
    """Probabilities (floats in [0, 1], or uint8 already) as ``<folder>/<id>.npz``, one uint8 array ``prob``
    in 1/255 steps each, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, prob in probs.items():
        q = prob if prob.dtype == np.uint8 else np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, prob=q)
        with atomic_write(folder / f"{image_id}.npz", "wb") as fh:
            fh.write(buf.getvalue())


def save_oof(run_dir: Path, probs: dict[str, np.ndarray], scores: pd.DataFrame) -> None:
    """Out-of-fold probabilities (uint8, 1/255 steps) for threshold tuning, plus their Dice table."""
    save_prob_maps(run_dir / "oof", probs)
    with atomic_write(run_dir / "oof_dice.csv") as fh:
        scores.to_csv(fh, index=False)
