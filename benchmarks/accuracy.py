"""Accuracy: seed-512 vs tiled under the SAME wall-clock budget on ftu-bench's grouped folds.

For each requested fold, trains both presets with the same budget on the same grouped split and
scores the held-out images (out-of-fold) for: random baseline, seed-512, tiled, tiled + flip TTA.
Writes benchmarks/results/accuracy.json and accuracy.md (mean Dice per organ and per data source).

    python benchmarks/accuracy.py --minutes 20 --folds 0 --tiled-args fg_fraction=0.2 \
        --specialists "kidney;largeintestine,prostate"              # what the README reports
    python benchmarks/accuracy.py --minutes 20 --folds 0,1,2,3,4    # full out-of-fold (5x the time)

``--specialists`` trains the tiled model as organ specialists that share the budget equally (one run
per ;-separated group); each scores its own organs' held-out images, which are disjoint.

The tiled run here is CPU-sized (256 px tiles at 2 µm/px, colon at 1 µm/px); pass --tiled-args to
change it, e.g. --tiled-args "tile_size=512,target_mpp=1.0".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from _common import (
    DEFAULT_DATA,
    RESULTS,
    machine,
    peak_rss_mib,
    seed_parity_record,
    summarise,
    train_and_score,
    write_json,
)

CPU_TILED = {"tile_size": 256, "target_mpp": 2.0, "organ_mpp": {"largeintestine": 1.0}, "batch_size": 8,
             "tiles_per_epoch": 256, "num_workers": 1, "lr": 1e-3, "val_every": 10_000, "infer_batch_size": 8}


def parse_overrides(text: str) -> dict:
    out: dict = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=", 1)
        out[k.strip()] = json.loads(v) if v[:1] in "[{" else (float(v) if v.replace(".", "", 1).isdigit() else v)
        if isinstance(out[k.strip()], float) and out[k.strip()].is_integer() and k.strip() != "target_mpp":
            out[k.strip()] = int(out[k.strip()])
    return out


def write_seed_parity(seed: dict, cfg, data: Path, minutes: float) -> None:
    """Write a seed-512 fold-0 result as seed_parity.json (its training is identical to seed_parity.py's)."""
    wall = seed["train_seconds"] + seed["no_tta"]["predict_seconds"]
    record = {**seed_parity_record(seed, cfg, data, minutes, wall), "written_by": "benchmarks/accuracy.py"}
    write_json(RESULTS / "seed_parity.json", record)


def merge_specialists(parts: list[dict], groups: list[list[str]]) -> dict:
    """One result from organ specialists: each scored its own organs' held-out images (disjoint)."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {"preset": "tiled", "specialists": [{"organs": g, **p} for g, p in zip(groups, parts, strict=True)],
                 "train_seconds": sum(p["train_seconds"] for p in parts)}
    for name in ("no_tta", "tta"):
        recs = [r for p in parts for r in p[name]["per_image"]]
        out[name] = summarise(pd.DataFrame(recs))
        out[name]["per_image"] = recs
        out[name]["predict_seconds"] = sum(p[name]["predict_seconds"] for p in parts)
    return out


def table_rows(results: dict) -> pd.DataFrame:
    """Pool per-image Dice over folds, then mean by organ and data source for each method."""
    methods = {"random baseline": [], "seed-512": [], "tiled": [], "tiled + TTA": []}
    for fold in results["folds"].values():
        methods["random baseline"] += fold["baseline_per_image"]
        methods["seed-512"] += fold["seed"]["no_tta"]["per_image"]
        methods["tiled"] += fold["tiled"]["no_tta"]["per_image"]
        methods["tiled + TTA"] += fold["tiled"]["tta"]["per_image"]
    rows = []
    for name, recs in methods.items():
        df = pd.DataFrame(recs)
        row = {"method": name, "all": df["dice"].mean()}
        row.update({f"organ={k}": v for k, v in df.groupby("organ")["dice"].mean().items()})
        row.update({f"source={k}": v for k, v in df.groupby("data_source")["dice"].mean().items()})
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget per model per fold")
    ap.add_argument("--folds", default="0", help="comma list of fold indices of --n-folds grouped folds")
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--tiled-args", default="", help="overrides for the tiled run, k=v,k=v")
    ap.add_argument("--specialists", default="",
                    help="train the tiled model as organ specialists sharing the budget equally, e.g. "
                         "'kidney;largeintestine,prostate' (one run per ;-group, routed by organ at prediction)")
    ap.add_argument("--reuse-seed", action="store_true",
                    help="reuse benchmarks/results/seed_parity.json for the seed-512 model (same fold and budget)")
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs")
    ap.add_argument("--append", action="store_true",
                    help="add these folds to the existing accuracy.json (same budget and settings) and pool them")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.baseline import random_baseline
    from ftuseg.config import make_config
    from ftuseg.evaluate import score_submission
    from ftuseg.training.trainer import split_table

    t0 = time.perf_counter()
    tiled_over = {**CPU_TILED, **parse_overrides(args.tiled_args)}
    results: dict = {"benchmark": "accuracy", "budget_minutes": args.minutes, "n_folds": args.n_folds,
                     "tiled_overrides": tiled_over, "specialists": args.specialists,
                     "folds": {}, "machine": machine(), "data": str(args.data)}
    if args.append and (RESULTS / "accuracy.json").exists():
        old = json.loads((RESULTS / "accuracy.json").read_text())
        same = ("budget_minutes", "n_folds", "tiled_overrides", "specialists")
        if any(old.get(key) != results[key] for key in same):
            raise SystemExit(f"--append: accuracy.json was run with other settings ({', '.join(same)} must match)")
        results["folds"] = old["folds"]
    for k in [int(f) for f in args.folds.split(",")]:
        common = dict(fold=k, n_folds=args.n_folds, max_minutes=args.minutes, epochs=10_000)
        seed_cfg = make_config("seed-512", lr=1e-3, val_every=2, **common)
        parity = RESULTS / "seed_parity.json"
        if args.reuse_seed and parity.exists():
            seed = json.loads(parity.read_text())
            if (seed["fold"], seed["budget_minutes"]) != (k, args.minutes):
                raise SystemExit("seed_parity.json was run with another fold or budget; drop --reuse-seed")
        else:
            seed = train_and_score(seed_cfg, args.data, args.runs / f"seed-512-fold{k}")
            if k == 0:  # the same run as benchmarks/seed_parity.py (same config, fold and budget): keep both current
                write_seed_parity(seed, seed_cfg, args.data, args.minutes)
        groups = [g.split(",") for g in args.specialists.split(";") if g] or [[]]
        parts = []
        for organs in groups:
            cfg_g = make_config("tiled", **{**common, **tiled_over, "organs": organs,
                                           "max_minutes": args.minutes / len(groups)})
            name = f"tiled-{'+'.join(organs)}-fold{k}" if organs else f"tiled-fold{k}"
            parts.append(train_and_score(cfg_g, args.data, args.runs / name, tta=True))
        tiled = merge_specialists(parts, groups)
        table, _, val_idx = split_table(seed_cfg, args.data)
        val = table.iloc[val_idx]
        base = score_submission(random_baseline(val, seed=0), val)
        results["folds"][str(k)] = {
            "seed": seed, "tiled": tiled, "baseline": summarise(base),
            "baseline_per_image": base[["id", "organ", "data_source", "dice"]].to_dict("records"),
        }
    summary = table_rows(results)
    results["table"] = summary.to_dict("records")
    results["wall_seconds"] = time.perf_counter() - t0
    results["peak_rss_mib"] = peak_rss_mib()
    write_json(RESULTS / "accuracy.json", results)
    text = markdown_table(summary)
    (RESULTS / "accuracy.md").write_text(text + "\n")
    print(text)


def markdown_table(summary: pd.DataFrame) -> str:
    """Rows: overall / organ / data source; columns: methods (mean Dice, 3 decimals)."""
    t = summary.set_index("method").T
    lines = ["| | " + " | ".join(t.columns) + " |", "|---|" + "---:|" * len(t.columns)]
    for name, row in t.iterrows():
        lines.append(f"| {name} | " + " | ".join("" if pd.isna(v) else f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
