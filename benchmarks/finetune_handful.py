"""What a handful of a lab's own annotated images buys: fine-tuning a shipped model (--init-from).

The shipped glomeruli model never saw ftu-bench's locked fold 4. Its AIDPATH images (another lab and
scanner than HuBMAP, and the model's weakest source) are split in two halves by image (each image is its
own group); the model is fine-tuned on one half and scored on the other, then the other way round, so
every image is scored once by a model that never saw it. The zero-shot model is scored on the same images.
The fine-tuning recipe is fixed in advance (nothing is chosen on these images): 3 epochs of 128 tiles,
LR 3e-4 one-cycle, last checkpoint, threshold 0.5.

    python benchmarks/finetune_handful.py --source benchmarks/results/runs/zoo/glomeruli-pas
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from _common import DEFAULT_DATA, RESULTS, machine, summarise, write_json

LOCKED_FOLD = 4


def subset_folder(data: Path, ids: list[str], out: Path) -> Path:
    """A Kaggle-layout folder holding only ``ids`` (images symlinked, never copied)."""
    table = pd.read_csv(data / "train.csv")
    (out / "train_images").mkdir(parents=True, exist_ok=True)
    table[table["id"].astype(str).isin(ids)].to_csv(out / "train.csv", index=False)
    for f in (data / "train_images").iterdir():
        if f.stem in ids and not (out / "train_images" / f.name).exists():
            (out / "train_images" / f.name).symlink_to(f.resolve())
    return out


def score(model_dir: Path, cfg, table: pd.DataFrame) -> pd.DataFrame:
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import evaluate_images

    model, run_cfg = load_run_model(model_dir, "best")
    scores, _ = evaluate_images(TorchTileFn(model, "cpu"), run_cfg, table, progress=False)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--source", default="glomeruli-pas", help="shipped model name or run folder to fine-tune")
    ap.add_argument("--source-name", default="AIDPATH", help="data_source of the lab to adapt to")
    ap.add_argument("--work", type=Path, default=RESULTS / "runs" / "finetune")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to measure")

    from ftuseg.config import make_config
    from ftuseg.io.dataset import load_table
    from ftuseg.training.splits import grouped_folds
    from ftuseg.training.trainer import train
    from ftuseg.zoo.finetune import finetune_config, resolve_source

    table = load_table(args.data, "train", need_rle=True)
    folds = grouped_folds(table, 5)
    lab = table[(folds == LOCKED_FOLD) & (table["data_source"] == args.source_name)].sort_values("id")
    if len(lab) < 4:
        raise SystemExit(f"only {len(lab)} {args.source_name} images in fold {LOCKED_FOLD}")
    ids = lab["id"].astype(str).tolist()
    halves = [ids[0::2], ids[1::2]]
    t0 = time.perf_counter()
    results: dict = {"benchmark": "finetune_handful", "source": str(args.source), "lab": args.source_name,
                     "locked_fold": LOCKED_FOLD, "machine_before": machine(), "halves": halves, "runs": []}
    source_dir = resolve_source(args.source)
    zero = score(source_dir, make_config(), lab)
    tuned_parts = []
    for k, (fit_ids, test_ids) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
        data_k = subset_folder(args.data, fit_ids, args.work / f"data{k}")
        cfg = finetune_config(str(source_dir), epochs=3, tiles_per_epoch=128, lr=3e-4, val_fraction=0.0,
                              fold=None, max_minutes=None, num_workers=1, val_every=10_000)
        run = args.work / f"run{k}"
        t1 = time.perf_counter()
        res = train(cfg, data_k, run, progress=True)
        scored = score(run, cfg, lab[lab["id"].astype(str).isin(test_ids)])
        tuned_parts.append(scored)
        results["runs"].append({"fit": fit_ids, "test": test_ids, "steps": res.steps,
                                "tiles": res.steps * cfg.batch_size, "train_seconds": time.perf_counter() - t1})
    tuned = pd.concat(tuned_parts)
    results["zero_shot"] = {**summarise(zero), "per_image": zero.to_dict("records")}
    results["fine_tuned"] = {**summarise(tuned), "per_image": tuned.to_dict("records")}
    results["machine_after"] = machine()
    results["wall_seconds"] = time.perf_counter() - t0
    write_json(RESULTS / "finetune_handful.json", results)
    print(f"{args.source_name} ({len(lab)} images): zero-shot {zero['dice'].mean():.3f}, "
          f"fine-tuned on {len(halves[0])} images {tuned['dice'].mean():.3f}")


if __name__ == "__main__":
    main()
