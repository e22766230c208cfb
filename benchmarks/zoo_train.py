"""Train the shipped models (the model zoo) and score them on ftu-bench's locked fold.

Each zoo model is an organ specialist trained with the pretrained-encoder recipe on folds 0-3 of
ftu-bench's 5 grouped folds; its best checkpoint is chosen on a grouped inner split of those folds, and
locked fold 4, which neither training nor selection ever saw, is scored once at the end (with and
without flip TTA). Writes benchmarks/results/zoo_train.json (machine, budget in minutes, steps and
tiles, per-image and per-source Dice) and leaves the run folders under --runs.

    python benchmarks/zoo_train.py --epochs 18,14 --minutes 60,30   # the README's run
    python benchmarks/zoo_train.py --models glomeruli-pas --epochs 18 --minutes 60 --compare-shipped \
        --out benchmarks/results/zoo_train_kidney3um.json   # a retrained model beside the shipped one

The budget is in epochs of 256 tiles (so other jobs on the machine change the minutes, not the model),
with --minutes as a cap; both are recorded, with the steps and tiles actually spent. With --compare-shipped
the model shipped today under the same name is scored on the same held-out images in the same run
(``shipped``), so that a retrained model replaces it only when it measures better.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, score_run, train_and_score, write_json

LOCKED_FOLD = 4

# zoo model -> the recipe's FTU family (ftuseg.training.recipe: the same recipe as ``ftuseg fit``)
ZOO = {"glomeruli-pas": "glomeruli", "glands-he": "glands"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--epochs", default="20,16", help="training budget per model in epochs of 256 tiles, ZOO order")
    ap.add_argument("--minutes", default="90,60", help="wall-clock cap per model, ZOO order")
    ap.add_argument("--models", default=",".join(ZOO), help="which zoo models to train")
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "zoo")
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo_train.json")
    ap.add_argument("--compare-shipped", action="store_true",
                    help="also score the model shipped today under each name on the same held-out images")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to train")

    from ftuseg.training.recipe import recipe_config

    names = args.models.split(",")
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise SystemExit(f"unknown zoo model(s) {unknown}; choose from {list(ZOO)}")
    # budgets are given in the order of --models
    budgets = dict(zip(names, (float(m) for m in args.minutes.split(",")), strict=False))
    epochs = dict(zip(names, (int(e) for e in args.epochs.split(",")), strict=False))
    out_path = args.out
    results = json.loads(out_path.read_text()) if out_path.exists() else {"benchmark": "zoo_train", "models": {}}
    results["locked_fold"] = LOCKED_FOLD
    for name in names:
        cfg = recipe_config(ZOO[name], fold=LOCKED_FOLD, max_minutes=budgets[name], epochs=epochs[name], num_workers=1)
        t0 = time.perf_counter()
        before = machine()
        res = train_and_score(cfg, args.data, args.runs / name, tta=True)
        info = json.loads((args.runs / name / "run_info.json").read_text())
        res.update({"config": cfg.to_dict(), "budget_minutes": budgets[name], "budget_epochs": epochs[name],
                    "run_info": info,
                    "machine_before": before, "machine_after": machine(), "wall_seconds": time.perf_counter() - t0})
        if args.compare_shipped:
            res["shipped"] = score_shipped(name, cfg, args.data)
        results["models"][name] = res
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(out_path, results)
        print(name, "locked fold 4:", {k: round(v, 3) if isinstance(v, float) else v
                                       for k, v in res["no_tta"].items() if k != "per_image"})
        if args.compare_shipped:
            print(name, "shipped today, locked fold 4:", {k: round(v, 3) if isinstance(v, float) else v
                                                          for k, v in res["shipped"]["no_tta"].items()
                                                          if k != "per_image"})


def score_shipped(name: str, cfg, data: Path) -> dict:
    """The shipped model ``name`` (fp16 weights restored to fp32, its own config) on ``cfg``'s held-out fold,
    threshold 0.5, without and with flip TTA: what a retrained model has to beat."""
    from ftuseg.config import load_config
    from ftuseg.training.trainer import split_table
    from ftuseg.zoo.registry import get_model

    model_info = get_model(name)
    shipped_cfg = load_config(model_info.path / "config.yaml")
    # score_run splits by the shipped model's own config: it must hold out the same images as cfg
    if list(split_table(shipped_cfg, data)[2]) != list(split_table(cfg, data)[2]):
        raise SystemExit(f"{model_info.path}: the shipped model's held-out fold differs from this run's")
    return {"sha256": model_info.sha256, "config": shipped_cfg.to_dict(), **score_run(data, model_info.path, tta=True)}


if __name__ == "__main__":
    main()
