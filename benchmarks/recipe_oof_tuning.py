"""The recipe's post-processing step as ``ftuseg fit`` runs it: tuned on out-of-fold predictions of other folds.

``recipe_folds.py --tune-post`` tunes each fold's threshold, minimum area and hole filling on that run's
small inner selection split. ``ftuseg fit`` instead tunes on the out-of-fold probabilities of every fold.
This script measures that step without letting any reported image choose its own setting: it re-predicts
each fold's held-out images with the best checkpoints that recipe_folds.py left in ``--runs`` (with and
without flip TTA), then
- for pooled fold k in 0-3: tunes on the out-of-fold probabilities of the other pooled folds, applies to k;
- for locked fold 4: tunes on all of folds 0-3 (what ``ftuseg fit`` would ship), applies to fold 4 once.
Writes benchmarks/results/recipe_oof_tuning.json.

    python benchmarks/recipe_folds.py --minutes 20 --folds 0,1,2,3,4 --tta --tune-post   # first
    python benchmarks/recipe_oof_tuning.py
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, write_json

LOCKED_FOLD = 4
OUT = RESULTS / "recipe_oof_tuning.json"


def predict_heldout(run_dir: Path, data: Path, tta: bool) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict]:
    """A fold run's held-out rows, their probabilities (uint8, 1/255 steps) and per-image Dice at 0.5."""
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import evaluate_images, split_table

    model, cfg = load_run_model(run_dir, "best")
    table, _, val_idx = split_table(cfg, data)
    heldout = table.iloc[val_idx]
    scores, probs = evaluate_images(TorchTileFn(model, "cpu", tta=tta), cfg, heldout, keep_proba=True)
    u8 = {k: np.clip(np.rint(p * 255), 0, 255).astype(np.uint8) for k, p in probs.items()}
    return heldout, u8, {str(r["id"]): r for r in scores.to_dict("records")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "recipe_folds")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    from ftuseg.inference.threshold_tuning import tune_on_probs
    from ftuseg.io.dataset import read_row_truth
    from ftuseg.metrics import roi_dice

    runs = sorted(p for p in args.runs.glob("*-fold*") if (p / "best.pt").exists())
    folds = sorted({int(p.name.rsplit("fold", 1)[1]) for p in runs})
    if LOCKED_FOLD not in folds or len(folds) < 3:
        raise SystemExit(f"{args.runs}: needs recipe_folds.py's runs of folds 0-3 and locked fold {LOCKED_FOLD}")
    t0, before = time.perf_counter(), machine()
    results: dict = {"benchmark": "recipe_oof_tuning", "runs": str(args.runs), "folds": folds,
                     "locked_fold": LOCKED_FOLD, "machine_before": before, "scores": {}}
    for tta in (False, True):
        name = "tta" if tta else "no_tta"
        rows, probs, raw, fold_of = [], {}, {}, {}
        for run in runs:
            k = int(run.name.rsplit("fold", 1)[1])
            heldout, p, scores = predict_heldout(run, args.data, tta)
            rows.append(heldout)
            probs.update(p)
            raw.update(scores)
            fold_of.update({i: k for i in p})
        table = pd.concat(rows, ignore_index=True)
        ids = table["id"].astype(str).to_numpy()
        tuned_recs, settings = [], {}
        for k in folds:
            # pooled folds: tuned on the other pooled folds; the locked fold: on all of folds 0-3
            source = [f for f in folds if f != k and f != LOCKED_FOLD]
            tune_rows = table[np.isin([fold_of[i] for i in ids], source)]
            thresholds, _ = tune_on_probs({i: probs[i] for i in tune_rows["id"].astype(str)}, tune_rows)
            settings[str(k)] = {"tuned_on_folds": source, **asdict(thresholds)}
            for _, row in table[[fold_of[i] == k for i in ids]].iterrows():
                prob = probs[str(row["id"])]
                truth, roi = read_row_truth(row, prob.shape)
                mask = thresholds.binarize(prob.astype(np.float32) / 255, row.get("organ"), float(row["pixel_size"]))
                tuned_recs.append({**raw[str(row["id"])], "fold": k, "dice": roi_dice(mask, truth, roi)})
        untuned = [{**raw[i], "fold": fold_of[i]} for i in ids]
        table_rows = []
        for label, recs in (("threshold 0.5", untuned), ("tuned on other folds' OOF", tuned_recs)):
            pooled = [r for r in recs if r["fold"] != LOCKED_FOLD]
            locked = [r for r in recs if r["fold"] == LOCKED_FOLD]
            table_rows += [pooled_row(f"pooled folds 0-3, {label}", pooled),
                           pooled_row(f"locked fold {LOCKED_FOLD}, {label}", locked)]
        results["scores"][name] = {"table": table_rows, "settings": settings, "per_image_tuned": tuned_recs,
                                   "per_image_untuned": untuned}
        print(name, pd.DataFrame(table_rows).set_index("method").round(3).T.to_string(), flush=True)
    results.update({"wall_seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(),
                    "machine_after": machine()})
    write_json(OUT, results)


if __name__ == "__main__":
    main()
