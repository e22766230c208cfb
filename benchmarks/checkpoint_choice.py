"""Which checkpoint a fold run keeps: the best on its inner selection split, against its last one.

Re-scores finished fold runs (``<family>-fold<k>`` folders from recipe_folds.py) on their held-out folds at
threshold 0.5, no TTA, from both checkpoints, and records which validation the inner split chose and when
(epoch, step, the one-cycle LR then). Trains nothing. The locked fold 4 is refused: nothing is chosen on it.

    python benchmarks/checkpoint_choice.py --runs benchmarks/results/runs/recipe_folds_area_targets \
        benchmarks/results/runs/recipe_folds_glands_decoder_lr --out benchmarks/results/checkpoint_choice.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from accuracy import pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, score_run, write_json

LOCKED_FOLD = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="folders of recipe_folds.py fold runs")
    ap.add_argument("--folds", default="0,1,2,3", help="folds to score (never the locked fold 4)")
    ap.add_argument("--out", type=Path, default=RESULTS / "checkpoint_choice.json")
    args = ap.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    if LOCKED_FOLD in folds:
        raise SystemExit(f"--folds: fold {LOCKED_FOLD} is locked; nothing is chosen on it")
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    import pandas as pd

    from ftuseg.models.checkpoint import load_checkpoint

    results: dict = {"benchmark": "checkpoint_choice", "folds": folds, "runs": {}, "machine_before": machine()}
    t0 = time.perf_counter()
    for root in args.runs:
        for k in folds:
            for run_dir in sorted(root.glob(f"*-fold{k}")):
                if not all((run_dir / f).exists() for f in ("best.pt", "last.pt", "metrics.csv")):
                    raise SystemExit(f"{run_dir}: no best.pt, last.pt and metrics.csv to compare")
                # the run's own epoch log; the kept checkpoint says which step it is
                log = pd.read_csv(run_dir / "metrics.csv")
                history = log.astype(object).where(log.notna(), None).to_dict("records")
                best = load_checkpoint(run_dir / "best.pt")
                res = score_run(args.data, run_dir, variants=(("last", "last", "model", False),))
                chosen = next(h for h in history if h["step"] == best["step"])
                results["runs"][str(run_dir)] = {
                    "fold": k, "chosen": {key: chosen[key] for key in ("epoch", "step", "lr", "val_dice")},
                    "last": {key: history[-1][key] for key in ("epoch", "step", "lr", "val_dice")},
                    "validations": [(h["epoch"], h["val_dice"]) for h in history if h["val_dice"] is not None],
                    "best_dice": res["no_tta"]["mean_dice"], "last_dice": res["last"]["mean_dice"],
                    "per_image_best": res["no_tta"]["per_image"], "per_image_last": res["last"]["per_image"],
                }
                print(run_dir.name, chosen["epoch"], history[-1]["epoch"],
                      round(res["no_tta"]["mean_dice"], 4), round(res["last"]["mean_dice"], 4), flush=True)
    # pooled per runs folder: each held-out image once per folder, from its family's run
    results["table"] = []
    for root in args.runs:
        mine = [r for path, r in results["runs"].items() if Path(path).parent == root]
        for which in ("best", "last"):
            recs = [p for r in mine for p in r[f"per_image_{which}"]]
            results["table"].append(pooled_row(f"{root.name}: {which} checkpoint, pooled folds "
                                               f"{','.join(map(str, folds))}", recs))
    results["wall_seconds"] = time.perf_counter() - t0
    results["machine_after"] = machine()
    write_json(args.out, results)
    for row in results["table"]:
        print(row["method"], {k: round(v, 4) for k, v in row.items() if k != "method"})


if __name__ == "__main__":
    main()
