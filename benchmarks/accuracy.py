"""Accuracy: seed-512 vs tiled under the SAME wall-clock budget on ftu-bench's grouped folds.

For each requested fold, trains both presets with the same budget on the same grouped split and
scores the held-out images (out-of-fold) for: random baseline, seed-512, tiled, tiled + flip TTA.
Writes benchmarks/results/accuracy.json and accuracy.md (mean Dice per organ and per data source).

    python benchmarks/accuracy.py --minutes 20 --folds 0,1,2 \
        --specialists "kidney;largeintestine,prostate"                 # what the README reports
    python benchmarks/accuracy.py --minutes 20 --folds 3 --specialists "kidney;largeintestine,prostate" \
        --append --reuse-seed                                          # one more fold, pooled

``--specialists`` trains the tiled model as organ specialists, one run per ;-separated group, sharing the
budget equally or by the ``:weight`` after each group; each scores its own organs' held-out images
(disjoint).

The tiled run here is CPU-sized (256 px tiles at 2 µm/px, colon at 1 µm/px, kidney at 6 µm/px); pass
--tiled-args to change it, e.g. --tiled-args 'tile_size=512,target_mpp=1.0,organ_mpp={"kidney":3.0}'.
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

# kidney at 6 µm/px: a 256 px tile then spans 1.5 mm, the context that tells a glomerulus from the capsule
CPU_TILED = {"tile_size": 256, "target_mpp": 2.0, "organ_mpp": {"largeintestine": 1.0, "kidney": 6.0}, "batch_size": 8,
             "tiles_per_epoch": 256, "num_workers": 1, "lr": 1e-3, "val_every": 10_000, "infer_batch_size": 8}


def parse_overrides(text: str) -> dict:
    """``k=v,k=v`` where v is a number, a word, or JSON (whose own commas are kept: split at depth 0 only)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    out: dict = {}
    for part in filter(None, (p.strip() for p in parts)):
        k, v = (s.strip() for s in part.split("=", 1))
        out[k] = json.loads(v) if v[:1] in "[{" else _number_or_word(v)
    return out


def _number_or_word(v: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def write_seed_parity(seed: dict, cfg, data: Path, minutes: float) -> None:
    """Write a seed-512 fold-0 result as seed_parity.json (its training is identical to seed_parity.py's)."""
    wall = seed["train_seconds"] + seed["no_tta"]["predict_seconds"]
    record = {**seed_parity_record(seed, cfg, data, minutes, wall), "written_by": "benchmarks/accuracy.py"}
    write_json(RESULTS / "seed_parity.json", record)


def parse_specialists(text: str) -> list[tuple[list[str], float]]:
    """``'kidney:2;largeintestine,prostate:1'`` -> organ groups with their share of the budget (default equal)."""
    groups = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        organs, _, weight = part.partition(":")
        groups.append(([o.strip() for o in organs.split(",") if o.strip()], float(weight or 1)))
    if not groups:
        return [([], 1.0)]
    total = sum(w for _, w in groups)
    return [(organs, w / total) for organs, w in groups]


def reused_seed(old: dict, fold: int, args: argparse.Namespace) -> dict | None:
    """The seed-512 result of ``fold`` from an earlier accuracy.json or seed_parity.json (same budget and folds);
    None where there is none (it is then trained)."""
    if (old.get("budget_minutes"), old.get("n_folds")) == (args.minutes, args.n_folds) and str(fold) in old["folds"]:
        return old["folds"][str(fold)]["seed"]
    parity = RESULTS / "seed_parity.json"
    if parity.exists():
        seed = json.loads(parity.read_text())
        if (seed["fold"], seed["budget_minutes"], seed["n_folds"]) == (fold, args.minutes, args.n_folds):
            return seed
    return None


def merge_specialists(parts: list[dict], groups: list[list[str]], scores: tuple[str, ...] = ("no_tta", "tta")) -> dict:
    """One result from organ specialists: each scored its own organs' held-out images (disjoint)."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {"preset": "tiled", "specialists": [{"organs": g, **p} for g, p in zip(groups, parts, strict=True)],
                 "train_seconds": sum(p["train_seconds"] for p in parts)}
    for name in scores:
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
    return pd.DataFrame([pooled_row(name, recs) for name, recs in methods.items()])


def pooled_row(method: str, per_image: list[dict]) -> dict:
    """One table row: mean per-image Dice overall, per organ and per data source."""
    df = pd.DataFrame(per_image)
    row = {"method": method, "all": df["dice"].mean()}
    row.update({f"organ={k}": v for k, v in df.groupby("organ")["dice"].mean().items()})
    row.update({f"source={k}": v for k, v in df.groupby("data_source")["dice"].mean().items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget per model per fold")
    ap.add_argument("--folds", default="0", help="comma list of fold indices of --n-folds grouped folds")
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--tiled-args", default="", help="overrides for the tiled run, k=v,k=v")
    ap.add_argument("--specialists", default="",
                    help="train the tiled model as organ specialists that share the budget, e.g. "
                         "'kidney;largeintestine,prostate' (equal shares) or 'kidney:2;largeintestine,prostate:1' "
                         "(one run per ;-group, routed by organ at prediction)")
    ap.add_argument("--reuse-seed", action="store_true",
                    help="reuse seed-512 results of the same fold and budget from accuracy.json or seed_parity.json "
                         "where there are any (they do not depend on the tiled settings); train the others")
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
    old = json.loads((RESULTS / "accuracy.json").read_text()) if (RESULTS / "accuracy.json").exists() else {}
    if args.append and old:
        same = ("budget_minutes", "n_folds", "tiled_overrides", "specialists")
        if any(old.get(key) != results[key] for key in same):
            raise SystemExit(f"--append: accuracy.json was run with other settings ({', '.join(same)} must match)")
        results["folds"] = old["folds"]
    shares = parse_specialists(args.specialists)
    groups = [organs for organs, _ in shares]
    for k in [int(f) for f in args.folds.split(",")]:
        common = dict(fold=k, n_folds=args.n_folds, max_minutes=args.minutes, epochs=10_000)
        seed_cfg = make_config("seed-512", lr=1e-3, val_every=2, **common)
        seed = reused_seed(old, k, args) if args.reuse_seed else None
        if seed is None:
            seed = train_and_score(seed_cfg, args.data, args.runs / f"seed-512-fold{k}")
            if k == 0:  # the same run as benchmarks/seed_parity.py (same config, fold and budget): keep both current
                write_seed_parity(seed, seed_cfg, args.data, args.minutes)
        parts = []
        for organs, share in shares:
            cfg_g = make_config("tiled", **{**common, **tiled_over, "organs": organs,
                                           "max_minutes": args.minutes * share})
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
