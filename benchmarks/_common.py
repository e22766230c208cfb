"""Shared helpers for the benchmarks: data location, budgets, peak memory, JSON output."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ftu-bench"
RESULTS = REPO / "benchmarks" / "results"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (and finished children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def machine() -> dict:
    """Facts about the run (CPU model and AVX2/AVX-512/BF16/AMX flags, threads); the load average shows
    whether other jobs shared the CPU meanwhile."""
    from ftuseg.hardware import machine_info

    return machine_info()


def write_json(path: Path, data: dict) -> None:
    from ftuseg.io.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, default=float)


def summarise(per_image: pd.DataFrame) -> dict:
    from ftuseg.metrics import dice_breakdown

    return dice_breakdown(per_image)


def train_and_score(cfg, data: Path, run_dir: Path, tta: bool | str = False, resume: bool = False,
                    tune_post: bool = False, variants: tuple[tuple[str, str, str, bool | str], ...] = (),
                    save_probs: Path | None = None) -> dict:
    """Train ``cfg`` (its fold, its wall-clock budget), then score the best checkpoint on the held-out fold
    (``score_run``)."""
    from ftuseg.training.trainer import train

    t0 = time.perf_counter()
    res = train(cfg, data, run_dir, resume=resume, progress=True, save_oof_probs=False)
    out = {"preset": cfg.preset, "train_seconds": time.perf_counter() - t0, "epochs": res.epochs, "steps": res.steps,
           "lr": res.lr, "history": res.history}
    return {**out, **score_run(data, run_dir, tta=tta, tune_post=tune_post, variants=variants,
                               save_probs=save_probs)}


# inference settings a finished run can be scored under other than those it was trained with: its weights do not
# depend on them (``trained_run`` lets them differ, ``score_run(..., inference=...)`` applies them)
INFERENCE_ONLY = ("infer_tile_size",)


def scored_model(run_dir: Path, inference: dict | None = None):
    """A finished run's best model and config, with ``inference`` (``INFERENCE_ONLY`` settings, e.g. those a
    results JSON recorded for the run) in place of the run's own."""
    from dataclasses import replace

    from ftuseg.models.checkpoint import load_run_model

    model, cfg = load_run_model(run_dir, "best")
    if inference:
        if unknown := set(inference) - set(INFERENCE_ONLY):
            raise SystemExit(f"{run_dir}: {', '.join(sorted(unknown))} change training, not only inference")
        cfg = replace(cfg, **inference).validate()
    return model, cfg


def score_run(data: Path, run_dir: Path, tta: bool | str = False, tune_post: bool = False,
              variants: tuple[tuple[str, str, str, bool | str], ...] = (), save_probs: Path | None = None,
              inference: dict | None = None) -> dict:
    """Score a trained run's best checkpoint on its held-out fold, at threshold 0.5 (``no_tta``) and, with
    ``tta``, also with TTA (``tta``: True for flips, or ``"d4"``).

    ``variants`` are further scorings of the same run, each ``(name, checkpoint, weights, tta)``: e.g.
    ``("last_ema", "last", "ema", False)`` scores the moving-average weights of the last checkpoint.

    With ``tune_post`` each scoring (``no_tta``, ``tta``) also gets a ``<name>_tuned`` twin: the same held-out
    probabilities through per-organ threshold (``RECIPE_THRESHOLDS``: 0.5 alone since post_rules_keep_last.json),
    minimum area and hole filling tuned on the run's inner selection split (part of its training folds, never
    the reported one) with the same TTA setting.

    ``save_probs`` keeps each scoring's probabilities (uint8, 1/255 steps) as ``<save_probs>/<name>/<id>.npz``,
    the selection split's too under ``tune_post``, so that post-processing rules can be compared later
    without predicting again (benchmarks/post_rules.py).

    ``inference`` overrides the run's ``INFERENCE_ONLY`` settings (e.g. ``{"infer_tile_size": 512}``)."""
    from dataclasses import asdict

    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.threshold_tuning import tune_on_probs
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.evaluation import save_prob_maps
    from ftuseg.training.recipe import RECIPE_THRESHOLDS
    from ftuseg.training.trainer import evaluate_images, selection_split, split_table

    model, run_cfg = scored_model(run_dir, inference)
    table, train_idx, val_idx = split_table(run_cfg, data)
    select_idx = selection_split(run_cfg, table, train_idx)[1] if tune_post else np.arange(0)
    if tune_post and len(select_idx) == 0:
        raise SystemExit(f"{run_dir}: no inner selection split to tune post-processing on")
    out: dict = {}
    heldout = table.iloc[val_idx]
    for name, use_tta in (("no_tta", False), ("tta", tta)) if tta else (("no_tta", False),):
        tile_fn = TorchTileFn(model, "cpu", tta=use_tta)
        t1 = time.perf_counter()
        scores, probs = evaluate_images(tile_fn, run_cfg, heldout, progress=True,
                                        keep_proba=tune_post or save_probs is not None)
        if save_probs is not None:
            save_prob_maps(save_probs / name, probs)
        out[name] = summarise(scores)
        out[name]["predict_seconds"] = time.perf_counter() - t1
        out[name]["per_image"] = scores.to_dict("records")
        if tune_post:
            select = table.iloc[select_idx]
            _, select_probs = evaluate_images(tile_fn, run_cfg, select, keep_proba=True)
            if save_probs is not None:
                save_prob_maps(save_probs / name, select_probs)
            thresholds, report = tune_on_probs(select_probs, select, source="selection split",
                                               threshold_grid=RECIPE_THRESHOLDS)
            tuned = rescore(thresholds, heldout, probs, out[name]["per_image"])
            out[f"{name}_tuned"] = {**summarise(pd.DataFrame(tuned)), "per_image": tuned,
                                    "predict_seconds": out[name]["predict_seconds"], "thresholds": asdict(thresholds),
                                    "tuning": report.to_dict("records"), "tuned_on": select["id"].tolist()}
    for name, which, weights, use_tta in variants:
        # the best raw weights are already loaded; other variants come from their checkpoint
        variant = model if (which, weights) == ("best", "model") else load_run_model(run_dir, which, weights)[0]
        t1 = time.perf_counter()
        scores, _ = evaluate_images(TorchTileFn(variant, "cpu", tta=use_tta), run_cfg, heldout, progress=True)
        out[name] = {**summarise(scores), "predict_seconds": time.perf_counter() - t1,
                     "checkpoint": which, "weights": weights, "tta": use_tta, "per_image": scores.to_dict("records")}
    return out


def finished_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that trained to its end (the trainer writes the steps last)."""
    info = run_dir / "run_info.json"
    return (run_dir / "config.yaml").exists() and (run_dir / "best.pt").exists() and info.exists() \
        and "steps" in json.loads(info.read_text())


def trained_run(cfg, run_dir: Path) -> dict:
    """What ``train_and_score`` records about training, read back from a finished run folder trained with ``cfg``
    (any other config stops the run: its scores would not be those of ``cfg``)."""
    from ftuseg.config import load_config

    info_path, cfg_path = run_dir / "run_info.json", run_dir / "config.yaml"
    if not finished_run(run_dir):
        raise SystemExit(f"{run_dir}: not a finished run (config.yaml, best.pt, run_info.json with the steps "
                         "trained); train it first")
    saved, wanted = load_config(cfg_path).to_dict(), cfg.to_dict()
    changed = sorted(k for k in wanted if saved.get(k) != wanted[k] and k not in INFERENCE_ONLY)
    if changed:
        diffs = ", ".join(f"{k}={saved.get(k)!r}, here {wanted[k]!r}" for k in changed)
        raise SystemExit(f"{run_dir}: trained with another config ({diffs})")
    info = json.loads(info_path.read_text())
    return {"preset": cfg.preset, "train_seconds": info["seconds"], "steps": info["steps"],
            "trained_on": info["machine"]}


def rescore(thresholds, rows: pd.DataFrame, probs: dict[str, np.ndarray], records: list[dict],
            objects: bool = False) -> list[dict]:
    """``records`` (one per row of ``rows``, in order) with the Dice of ``probs`` (float, or uint8 in 1/255
    steps) through ``thresholds``: each organ's threshold, minimum area and hole filling; with ``objects`` also
    the image's ``ftuseg.metrics.object_errors`` terms."""
    from ftuseg.io.dataset import read_row_truth
    from ftuseg.metrics import object_errors, roi_dice

    out = []
    for rec, (_, row) in zip(records, rows.iterrows(), strict=True):
        prob = probs[str(row["id"])]
        if prob.dtype == np.uint8:
            prob = prob.astype(np.float32) / 255
        truth, roi = read_row_truth(row, prob.shape)
        mask = thresholds.binarize(prob, row.get("organ"), float(row["pixel_size"]))
        out.append({**rec, "dice": roi_dice(mask, truth, roi), **(object_errors(mask, truth, roi) if objects else {})})
    return out


def seed_parity_record(seed: dict, cfg, data: Path, minutes: float, wall_seconds: float) -> dict:
    """A seed-512 training result in seed_parity.json's format (seed_parity.py and accuracy.py share it)."""
    return {**seed, "baseline": baseline_scores(cfg, data), "benchmark": "seed_parity", "budget_minutes": minutes,
            "fold": cfg.fold, "n_folds": cfg.n_folds, "wall_seconds": wall_seconds, "peak_rss_mib": peak_rss_mib(),
            "machine": machine(), "data": str(data)}


def baseline_scores(cfg, data: Path) -> dict:
    from ftuseg.baseline import random_baseline
    from ftuseg.evaluate import score_submission
    from ftuseg.training.trainer import split_table

    table, _, val_idx = split_table(cfg, data)
    val = table.iloc[val_idx]
    return summarise(score_submission(random_baseline(val, seed=0), val))


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std())
