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
