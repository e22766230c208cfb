"""The embedded end-to-end demo: synth -> baseline -> lr-find -> train -> predict -> evaluate."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ftuseg.baseline import random_baseline
from ftuseg.config import make_config
from ftuseg.evaluate import evaluate_files, format_summary
from ftuseg.inference.predictor import Predictor, predict_table
from ftuseg.io.atomic import atomic_write
from ftuseg.io.dataset import load_table
from ftuseg.synth import SynthSpec, make_synthetic_dataset
from ftuseg.training.trainer import run_lr_find, train


def run_demo(out_dir: str | os.PathLike, epochs: int | None = None, progress: bool = True,
             spec: SynthSpec = SynthSpec()) -> dict:
    """Run every step of the seed pipeline; returns the two Dice scores and timings (also as JSON)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if progress:
            print(f"[demo] {msg}", file=sys.stderr, flush=True)

    data = make_synthetic_dataset(out / "data", spec)
    say(f"1/6 synthetic data: {spec.n_train} train + {spec.n_test} test images in {data}")
    test = load_table(data, "test")
    with atomic_write(out / "baseline.csv") as fh:
        random_baseline(test, seed=0).to_csv(fh, index=False)
    _, base = evaluate_files(out / "baseline.csv", data / "test_solution.csv")
    say(f"2/6 random baseline: mean Dice {base['mean_dice']:.4f}")

    cfg = make_config("demo", epochs=epochs)
    lr = run_lr_find(cfg, data, out / "lr_find.png", num_iter=30, progress=progress)
    say(f"3/6 lr-find: suggested {lr.suggestion:.3g} (plot {out / 'lr_find.png'})")
    t_train = time.perf_counter()
    res = train(cfg.replace(lr=lr.suggestion), data, out / "run", progress=progress)
    train_s = time.perf_counter() - t_train
    say(f"4/6 trained {res.epochs} epochs in {train_s:.0f} s (best val Dice {res.best_dice:.4f})")
    predictor = Predictor.from_runs([out / "run"])
    sub, _ = predict_table(predictor, test, progress=progress)
    with atomic_write(out / "submission.csv") as fh:
        sub.to_csv(fh, index=False)
    say(f"5/6 predicted {len(sub)} test images -> {out / 'submission.csv'}")
    _, model = evaluate_files(out / "submission.csv", data / "test_solution.csv")
    say("6/6 evaluation of the model on the synthetic test set:\n" + format_summary(model))
    result = {"baseline_dice": base["mean_dice"], "model_dice": model["mean_dice"],
              "by_organ": model.get("by_organ", {}), "lr": lr.suggestion, "train_seconds": train_s,
              "seconds": time.perf_counter() - t0}
    with atomic_write(out / "demo_result.json") as fh:
        json.dump(result, fh, indent=2)
    return result


# A HuBMAP kidney image of ftu-bench's locked fold 4, which the shipped glomeruli model never saw
SHIPPED_DEMO_IMAGE = "hbk-92"
SHIPPED_DEMO_MODEL = "glomeruli-pas"


def run_shipped_demo(data_dir: str | os.PathLike, out_dir: str | os.PathLike, image_id: str = SHIPPED_DEMO_IMAGE,
                     model: str = SHIPPED_DEMO_MODEL, progress: bool = True) -> dict:
    """The shipped model on real tissue, as a pathologist runs it: ``ftuseg predict --model NAME IMAGE
    --out-dir OUT`` (QuPath GeoJSON, overlay, mask), then the mask scored against the image's truth."""
    import cv2
    import numpy as np

    from ftuseg.cli import main as cli_main
    from ftuseg.errors import FtusegError
    from ftuseg.io.dataset import read_row_mask
    from ftuseg.metrics import dice_score

    table = load_table(data_dir, "train", need_rle=True)
    rows = table[table["id"].astype(str) == image_id]
    if rows.empty:
        raise FtusegError(f"{data_dir}: no image {image_id!r} in train.csv")
    row = rows.iloc[0]
    out = Path(out_dir)
    argv = ["predict", "--model", model, str(row["image_path"]), "--organ", str(row["organ"]),
            "--pixel-size", f"{float(row['pixel_size']):g}", "--out-dir", str(out),
            "--formats", "geojson,overlay,png"]
    if progress:
        print("[demo] shipped model on real tissue: ftuseg " + " ".join(argv), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    if cli_main(argv if progress else ["-q", *argv]) != 0:
        raise FtusegError(f"the shipped-model demo failed on {row['image_path']}")
    seconds = time.perf_counter() - t0
    folder = out / Path(str(row["image_path"])).stem
    pred = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    truth = read_row_mask(row, pred.shape)
    geojson = json.loads((folder / f"{folder.name}.geojson").read_text())
    features = geojson["features"] if isinstance(geojson, dict) else geojson
    n_true = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)[0] - 1
    result = {"model": model, "image": image_id, "organ": str(row["organ"]), "dice": dice_score(pred, truth),
              "objects_predicted": len(features), "objects_true": int(n_true), "seconds": seconds,
              "outputs": str(folder)}
    with atomic_write(out / "shipped_demo.json") as fh:
        json.dump(result, fh, indent=2)
    return result
