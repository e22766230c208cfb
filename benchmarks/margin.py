"""What the inference border margin buys: out-of-fold Dice and time with and without it, one run.

ftuseg reflect-pads an image by ``infer_margin`` of a tile before the sliding window, so border pixels see
context on every side; the minimal grid (MONAI's and nnU-Net's) covers the image exactly. On a 1200 px image
with 512 px tiles at 50% overlap that is 25 tiles against 16. This scores both on ftu-bench images no model
saw: each fold's held-out images with that fold's recipe models (benchmarks/recipe_folds.py, folds 0-3 only:
fold 4 is locked, no setting is chosen on it), the same models and engine for every margin.

    python benchmarks/margin.py --margins 0.25,0.125,0      # the README's run (after recipe_folds.py)

Writes benchmarks/results/margin.json: per margin, mean Dice per data source, tiles and seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from _common import DEFAULT_DATA, RESULTS, machine, write_json

LOCKED_FOLD = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "recipe_folds")
    ap.add_argument("--folds", default="0,1,2,3")
    ap.add_argument("--margins", default="0.25,0.125,0")
    args = ap.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    if LOCKED_FOLD in folds:
        raise SystemExit("fold 4 is locked: no inference setting is chosen on it")
    margins = [float(m) for m in args.margins.split(",")]

    from ftuseg.inference.predictor import Member, Predictor
    from ftuseg.inference.resample import scale_factor, scaled_shape
    from ftuseg.inference.tiling import tile_count
    from ftuseg.io.dataset import read_row_image, read_row_mask
    from ftuseg.metrics import dice_score
    from ftuseg.training.trainer import split_table

    recs, seconds = [], {m: 0.0 for m in margins}
    tiles = {m: 0 for m in margins}
    before = machine()
    for k in folds:
        for run in sorted(args.runs.glob(f"*-fold{k}")):
            base = Predictor.from_runs([run], device="cpu", engine="onnxruntime")
            cfg = base.members[0].cfg
            table, _, val_idx = split_table(cfg, args.data)
            held = table.iloc[val_idx]
            held = held[[cfg.covers(o) for o in held["organ"]]]
            variants = {m: Predictor([Member(base.members[0].tile_fn, cfg.replace(infer_margin=m))], base.thresholds)
                        for m in margins}
            for _, row in held.iterrows():
                img = read_row_image(row)
                truth = read_row_mask(row, img.shape[:2])
                px, organ = float(row["pixel_size"]), str(row["organ"])
                for m, pred in variants.items():
                    t = time.perf_counter()
                    mask = pred.predict_mask(img, px, organ)
                    seconds[m] += time.perf_counter() - t
                    c = pred.members[0].cfg
                    sh, sw = scaled_shape(*img.shape[:2], scale_factor(px, c.mpp_for(organ)))
                    tiles[m] += tile_count(sh, sw, c.tile_size, c.overlap, c.infer_margin_px())
                    recs.append({"fold": k, "id": row["id"], "organ": organ, "data_source": row["data_source"],
                                 "margin": m, "dice": dice_score(mask, truth)})
            print(run.name, len(held), "images", flush=True)
    df = pd.DataFrame(recs)
    table = {}
    for m in margins:
        d = df[df["margin"] == m]
        table[str(m)] = {"all": float(d["dice"].mean()), "n_images": int(len(d)),
                         **{f"source={s}": float(v) for s, v in d.groupby("data_source")["dice"].mean().items()},
                         "tiles": tiles[m], "seconds": round(seconds[m], 1)}
    ref = df[df["margin"] == margins[0]].set_index(["fold", "id"])["dice"]
    for m in margins[1:]:
        diff = df[df["margin"] == m].set_index(["fold", "id"])["dice"] - ref
        table[str(m)]["per_image_delta_vs_first"] = {"mean": float(diff.mean()), "min": float(diff.min()),
                                                     "max": float(diff.max())}
    out = {"benchmark": "margin", "folds": folds, "margins": margins, "engine": "onnxruntime", "table": table,
           "machine_before": before, "machine_after": machine(), "per_image": recs}
    write_json(RESULTS / "margin.json", out)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
