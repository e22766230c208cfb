"""What a minutes budget buys: the trainer's own tiles/s, end to end (tile loading in its worker, augmentation,
forward, backward, AdamW), for each recipe family on ftu-bench, in this tree and optionally in another one.

Each measurement is a child process training one family's fold-0 recipe config from the ImageNet encoder for
``--epochs`` epochs (``--max-steps``-style stop, no out-of-fold scoring); tiles/s counts training epochs only,
validation excluded. With ``--baseline-src`` the other tree's ``src`` is timed in the same rounds, alternating
with this one, so load drift on the machine hits both alike.

    git worktree add /tmp/before <commit> && \\
    python benchmarks/train_throughput.py --baseline-src /tmp/before/src --epochs 2 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA, REPO, RESULTS, machine, write_json


def child(args: argparse.Namespace) -> None:
    """One timed training run in this process (whatever ``ftuseg`` PYTHONPATH selects); prints a JSON line."""
    import numpy as np
    import torch

    import ftuseg
    from ftuseg.training.augment import augment_batch
    from ftuseg.training.recipe import recipe_config
    from ftuseg.training.trainer import train

    # val_every past the run (0 would mean the same here, but not to an older tree)
    cfg = recipe_config(args.family, fold=0, num_workers=args.num_workers, epochs=args.epochs, val_every=10**6,
                        tiles_per_epoch=args.tiles_per_epoch)
    # the trainer's augmentation alone, on one batch of the family's tiles (median of 10 after 3 warm-ups)
    x = torch.rand(cfg.batch_size, 3, cfg.tile_size, cfg.tile_size) * 255
    y = (torch.rand(cfg.batch_size, 1, cfg.tile_size, cfg.tile_size) < 0.3).float()
    gen, times = torch.Generator().manual_seed(0), []
    for _ in range(13):
        t = time.perf_counter()
        augment_batch(x, y, cfg.augment, gen)
        times.append(time.perf_counter() - t)
    augment_ms = float(np.median(times[3:])) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, args.data, Path(tmp) / "run", progress=False, save_oof_probs=False)
    hist = res.history
    secs = [h["epoch_seconds"] for h in hist]
    print(json.dumps({"ftuseg": str(Path(ftuseg.__file__).parents[1]), "steps": res.steps,
                      "tiles_per_s": res.steps * cfg.batch_size / sum(secs), "augment_ms_per_batch": augment_ms,
                      "tiles_per_s_per_epoch": [round(h["tiles_per_s"], 3) for h in hist],
                      "epoch_seconds": secs}))


def between_epochs(recipe_json: Path) -> dict:
    """Seconds a recipe_folds.py run spent between training epochs (checkpoint writes; validation on the
    inner split where it validated), per family over its fold runs: what intermediate validation costs a budget."""
    folds = json.loads(recipe_json.read_text())["folds"]
    out: dict = {}
    for fold in folds.values():
        for spec in fold["specialists"]:
            family = "glomeruli" if "kidney" in spec["organs"] else "glands"
            hist, rec = spec["history"], out.setdefault(family, {"validated": [], "not_validated": [],
                                                                 "budget_seconds": 0.0})
            rec["budget_seconds"] += hist[-1]["elapsed_seconds"]
            for prev, h in zip(hist, hist[1:-1], strict=False):  # the last epoch's validation is after the budget
                gap = h["elapsed_seconds"] - prev["elapsed_seconds"] - h["epoch_seconds"]
                rec["validated" if h["val_dice"] is not None else "not_validated"].append(gap)
    return {family: {"intermediate_validations": len(r["validated"]),
                     "seconds_per_validation": sum(r["validated"]) / max(1, len(r["validated"])),
                     "seconds_between_other_epochs": sum(r["not_validated"]) / max(1, len(r["not_validated"])),
                     "validation_share_of_budget": sum(r["validated"]) / r["budget_seconds"]}
            for family, r in out.items()}


def commit_of(src: Path) -> str:
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                           text=True).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--families", default="glands,glomeruli")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per measurement (32 steps each)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tiles-per-epoch", type=int, default=256, help="the recipe's 256: 32 steps of 8 tiles")
    ap.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (recipe_folds.py uses 1)")
    ap.add_argument("--baseline-src", type=Path, help="another tree's src/ to time beside this one")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    ap.add_argument("--recipe-json", type=Path, action="append", default=[],
                    help="a recipe_folds.py JSON: report the time its fold runs spent validating between epochs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.family = args.child
        return child(args)
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}")

    trees = {"this": REPO / "src"}
    if args.baseline_src:
        trees = {"baseline": args.baseline_src.resolve(), **trees}
    before = machine()
    runs: list[dict] = []
    for r in range(args.rounds):
        for family in args.families.split(","):
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
                cmd = [sys.executable, __file__, "--child", family, "--data", str(args.data),
                       "--epochs", str(args.epochs), "--num-workers", str(args.num_workers),
                       "--tiles-per-epoch", str(args.tiles_per_epoch)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} ({src}) {family}: {done.stderr.strip().splitlines()[-1]}")
                rec = json.loads(done.stdout.strip().splitlines()[-1])
                runs.append({"round": r, "family": family, "tree": name, **rec})
                print(f"round {r} {family:10s} {name:8s} {rec['tiles_per_s']:.2f} tiles/s, augment "
                      f"{rec['augment_ms_per_batch']:.0f} ms/batch, per epoch "
                      f"{rec['tiles_per_s_per_epoch']}", flush=True)
    summary = {}
    for family in args.families.split(","):
        mine = {name: [x for x in runs if x["family"] == family and x["tree"] == name] for name in trees}
        summary[family] = {name: sum(x["tiles_per_s"] for x in rs) / len(rs) for name, rs in mine.items()}
        summary[family]["augment_ms_per_batch"] = {name: sum(x["augment_ms_per_batch"] for x in rs) / len(rs)
                                                   for name, rs in mine.items()}
        if "baseline" in trees:
            summary[family]["speedup"] = summary[family]["this"] / summary[family]["baseline"]
    out = {"benchmark": "train_throughput", "epochs": args.epochs, "tiles_per_epoch": args.tiles_per_epoch,
           "rounds": args.rounds,
           "num_workers": args.num_workers, "trees": {k: {"src": str(v), "commit": commit_of(v)}
                                                      for k, v in trees.items()},
           "tiles_per_s": summary, "runs": runs,
           "between_epochs": {p.name: between_epochs(p) for p in args.recipe_json},
           "machine": before, "machine_after": machine()}
    write_json(args.out, out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
