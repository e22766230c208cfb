"""Where a protocol run's Dice goes, object by object: found, missed and spurious FTUs per data source.

A per-image Dice of 0.5 can be a glomerulus missed, a false one found, or every outline a little off; the
recipe's next change depends on which. For each fold of a ``recipe_folds.py`` results JSON this re-predicts
the family's held-out images with the run's own model, TTA and tuned post-processing (the JSON's
``tta_tuned`` scoring), checks that every image's Dice equals the one the JSON recorded, and splits each image
with ``ftuseg.metrics.object_errors``: objects matched at IoU > 0.5, missed, spurious, and the error pixels of
Dice by where they lie (inside spurious or missed objects, or at the boundary of matched ones).
``dice_without_spurious`` is each image's Dice had its spurious objects not been predicted (or had they been
annotated): what false objects cost, an upper bound on what removing them could buy.

    python benchmarks/recipe_folds.py --minutes 20 --folds 0,1,2,3,4 --tta d4 --tune-post \\
        --out benchmarks/results/recipe_folds_fast.json
    python benchmarks/object_errors.py --results benchmarks/results/recipe_folds_fast.json \\
        --runs benchmarks/results/runs/recipe_folds --family glomeruli \\
        --out benchmarks/results/object_errors_fast.json --overlays /tmp/overlays

``--overlays DIR`` also writes, for the worst images, a PNG with the annotation in green and the prediction in
red (outside the repository: the images stay in ftu-bench).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import DEFAULT_DATA, INFERENCE_ONLY, machine, peak_rss_mib, rescore, scored_model, write_json

ERROR_TERMS = ("truth_objects", "pred_objects", "matched", "missed", "spurious",
               "tp_px", "fp_spurious_px", "fp_boundary_px", "fn_missed_px", "fn_boundary_px")


def dice_of(terms: dict, drop: tuple[str, ...] = ()) -> float:
    """Dice from ``object_errors``' pixel terms, leaving out the error terms in ``drop``."""
    wrong = sum(terms[k] for k in ("fp_spurious_px", "fp_boundary_px", "fn_missed_px", "fn_boundary_px")
                if k not in drop)
    total = 2 * terms["tp_px"] + wrong
    return 1.0 if total == 0 else 2 * terms["tp_px"] / total


def worst_images(per_image: pd.DataFrame, n: int) -> list[dict]:
    """The fold's ``n`` lowest-Dice images with their object counts: the ones the overlays draw."""
    cols = ["id", "data_source", "group", "dice", "dice_without_spurious", *ERROR_TERMS]
    return per_image.nsmallest(n, "dice")[cols].to_dict("records")


def summarise_errors(per_image: pd.DataFrame) -> dict:
    """Sums of the counts and pixel terms with the mean Dice, with and without spurious objects."""
    sums = {k: int(per_image[k].sum()) for k in ERROR_TERMS}
    wrong = sum(sums[k] for k in ("fp_spurious_px", "fp_boundary_px", "fn_missed_px", "fn_boundary_px"))
    return {"n_images": int(len(per_image)), "mean_dice": float(per_image["dice"].mean()),
            "mean_dice_without_spurious": float(per_image["dice_without_spurious"].mean()), **sums,
            # each share: the fraction of all Dice error pixels of these images that lie there
            **{f"share_{k[:-3]}": (sums[k] / wrong if wrong else 0.0)
               for k in ("fp_spurious_px", "fp_boundary_px", "fn_missed_px", "fn_boundary_px")}}


def write_overlay(path: Path, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
    import cv2

    out = np.ascontiguousarray(image[..., ::-1])
    for mask, colour in ((truth, (0, 255, 0)), (pred, (0, 0, 255))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, max(2, image.shape[1] // 400))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), out)


def fold_errors(data: Path, run_dir: Path, scoring: dict, tta: bool | str, overlays: Path | None,
                worst: int, spec_config: dict | None = None) -> tuple[pd.DataFrame, float]:
    """Per-image object errors of one fold run's held-out images, re-predicted as ``scoring`` was (with the
    specialist's recorded ``spec_config``); and the largest difference from the Dice ``scoring`` recorded."""
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.io.dataset import read_row_image, read_row_truth
    from ftuseg.training.evaluation import evaluate_images
    from ftuseg.training.trainer import split_table

    # the inference settings the JSON scored with (a run re-scored after the recipe's window changed)
    recorded_cfg = spec_config or {}
    model, cfg = scored_model(run_dir, {f: recorded_cfg[f] for f in INFERENCE_ONLY if f in recorded_cfg})
    table, _, val_idx = split_table(cfg, data)
    heldout = table.iloc[val_idx]
    thresholds = Thresholds(**scoring["thresholds"])
    recorded = {r["id"]: r["dice"] for r in scoring["per_image"]}
    _, probs = evaluate_images(TorchTileFn(model, "cpu", tta=tta), cfg, heldout, progress=True, keep_proba=True)
    records = [{"id": str(row["id"]), "data_source": row.get("data_source"), "group": row.get("group"),
                "recorded_dice": recorded.get(str(row["id"]), float("nan"))} for _, row in heldout.iterrows()]
    per = pd.DataFrame(rescore(thresholds, heldout, probs, records, objects=True))
    per["dice_without_spurious"] = [dice_of(r, drop=("fp_spurious_px",)) for r in per.to_dict("records")]
    if overlays is not None:
        for i in per.nsmallest(worst, "dice").index:  # only these few are binarized again, to draw them
            row = heldout.iloc[i]
            prob = probs[str(row["id"])]
            pred = thresholds.binarize(prob, row.get("organ"), float(row["pixel_size"]))
            write_overlay(overlays / f"{run_dir.name}-{row['id']}.png", read_row_image(row),
                          read_row_truth(row, prob.shape)[0], pred)
    return per, float((per["dice"] - per["recorded_dice"]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, required=True, help="a recipe_folds.py results JSON (with --tune-post)")
    ap.add_argument("--runs", type=Path, required=True, help="its fold run folders (<family>-fold<k>)")
    ap.add_argument("--family", default="glomeruli", help="which specialist family to look at")
    ap.add_argument("--scoring", default="tta_tuned", help="which of the JSON's scorings to reproduce")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every fold in the JSON)")
    ap.add_argument("--overlays", type=Path, default=None, help="write the worst images' overlays here")
    ap.add_argument("--worst", type=int, default=4, help="overlays per fold, and the images listed as worst_images")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    results = json.loads(args.results.read_text())
    if args.family not in results["families"]:
        raise SystemExit(f"{args.results}: no family {args.family!r} (has {', '.join(results['families'])})")
    organs = results["families"][args.family]
    tta = results["tta"] if args.scoring.startswith("tta") else False
    t0 = time.perf_counter()
    out: dict = {"benchmark": "object_errors", "results": str(args.results), "runs": str(args.runs),
                 "family": args.family, "scoring": args.scoring, "tta": tta, "iou_match": 0.5,
                 "locked_fold": results["locked_fold"], "machine_before": machine(), "folds": {}}
    pooled = []
    wanted = None if args.folds is None else set(args.folds.split(","))
    for fold, entry in sorted(results["folds"].items()):
        if wanted is not None and fold not in wanted:
            continue
        spec = next((s for s in entry["specialists"] if s["organs"] == organs), None)
        if spec is None or args.scoring not in spec:
            raise SystemExit(f"{args.results}: fold {fold} has no {args.family} specialist scored {args.scoring!r}")
        per, gap = fold_errors(args.data, args.runs / f"{args.family}-fold{fold}", spec[args.scoring], tta,
                               args.overlays, args.worst, spec.get("config"))
        if gap > 1e-6:
            raise SystemExit(f"fold {fold}: re-predicted Dice differs from {args.results} by {gap:.4f}: not the "
                             "same runs, or not the same machine's arithmetic")
        out["folds"][fold] = {"by_data_source": {str(k): summarise_errors(g) for k, g in per.groupby("data_source")},
                              "by_group": {str(k): summarise_errors(g) for k, g in per.groupby("group")},
                              "max_dice_gap": gap, "worst_images": worst_images(per, args.worst),
                              "per_image": per.to_dict("records")}
        if int(fold) != results["locked_fold"]:
            pooled.append(per)
        print(f"fold {fold}: " + ", ".join(f"{k} {v['mean_dice']:.3f} ({v['spurious']} spurious, {v['missed']} "
                                           f"missed of {v['truth_objects']})"
                                           for k, v in out["folds"][fold]["by_data_source"].items()), flush=True)
        write_json(args.out, out)
    if pooled:
        per = pd.concat(pooled)
        out["pooled"] = {str(k): summarise_errors(g) for k, g in per.groupby("data_source")}
        out["pooled_by_group"] = {str(k): summarise_errors(g) for k, g in per.groupby("group")}
    out.update(wall_seconds=time.perf_counter() - t0, peak_rss_mib=peak_rss_mib(), machine_after=machine())
    write_json(args.out, out)
    print(json.dumps(out.get("pooled", {}), indent=1))


if __name__ == "__main__":
    main()
