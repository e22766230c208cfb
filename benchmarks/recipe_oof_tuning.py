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
from recipe_folds import LOCKED_FOLD

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, rescore, write_json

OUT = RESULTS / "recipe_oof_tuning.json"
SCORINGS = (("no_tta", False), ("tta", True))


def predict_heldout(run_dir: Path, data: Path) -> tuple[pd.DataFrame, dict[str, tuple[dict, dict]]]:
    """A fold run's held-out rows and, per scoring (no TTA, TTA), their probabilities (uint8, 1/255 steps)
    by id and their per-image Dice records at threshold 0.5 by id."""
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import evaluate_images, split_table

    model, cfg = load_run_model(run_dir, "best")
    table, _, val_idx = split_table(cfg, data)
    heldout = table.iloc[val_idx]
    out = {}
    for name, tta in SCORINGS:
        scores, probs = evaluate_images(TorchTileFn(model, "cpu", tta=tta), cfg, heldout, keep_proba=True)
        u8 = {k: np.clip(np.rint(p * 255), 0, 255).astype(np.uint8) for k, p in probs.items()}
        out[name] = (u8, {str(r["id"]): r for r in scores.to_dict("records")})
    return heldout, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "recipe_folds")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    from ftuseg.inference.threshold_tuning import tune_on_probs

    runs = sorted(p for p in args.runs.glob("*-fold*") if (p / "best.pt").exists())
    folds = sorted({int(p.name.rsplit("fold", 1)[1]) for p in runs})
    if LOCKED_FOLD not in folds or len(folds) < 3:
        raise SystemExit(f"{args.runs}: needs recipe_folds.py's runs of folds 0-3 and locked fold {LOCKED_FOLD}")
    t0, before = time.perf_counter(), machine()
    results: dict = {"benchmark": "recipe_oof_tuning", "runs": str(args.runs), "folds": folds,
                     "locked_fold": LOCKED_FOLD, "machine_before": before, "scores": {}}
    predicted = [(int(run.name.rsplit("fold", 1)[1]), *predict_heldout(run, args.data)) for run in runs]
    table = pd.concat([rows.assign(fold=k) for k, rows, _ in predicted], ignore_index=True)
    for name, _ in SCORINGS:
        probs = {i: p for _, _, by_name in predicted for i, p in by_name[name][0].items()}
        raw = {i: {**r, "fold": k} for k, _, by_name in predicted for i, r in by_name[name][1].items()}
        tuned_recs, settings = [], {}
        for k in folds:
            # pooled folds: tuned on the other pooled folds; the locked fold: on all of folds 0-3
            source = [f for f in folds if f != k and f != LOCKED_FOLD]
            tune_rows = table[table["fold"].isin(source)]
            thresholds, _ = tune_on_probs({i: probs[i] for i in tune_rows["id"].astype(str)}, tune_rows)
            settings[str(k)] = {"tuned_on_folds": source, **asdict(thresholds)}
            rows = table[table["fold"] == k]
            tuned_recs += rescore(thresholds, rows, probs, [raw[i] for i in rows["id"].astype(str)])
        untuned = [raw[i] for i in table["id"].astype(str)]
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
