"""Does tile loading keep up with the model? Tiles/s of the tiled sampler alone vs training steps alone.

    python benchmarks/tile_loading.py [--tile-size 256 --target-mpp 2.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import DEFAULT_DATA, RESULTS, machine, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--target-mpp", type=float, default=2.0)
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--tiles", type=int, default=64)
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}")

    from ftuseg.config import make_config
    from ftuseg.io.dataset import load_table
    from ftuseg.models.factory import build_model
    from ftuseg.training.augment import augment_batch
    from ftuseg.training.datasets import TileDataset
    from ftuseg.training.losses import BCEDiceLoss

    cfg = make_config("tiled", tile_size=args.tile_size, target_mpp=args.target_mpp, encoder=args.encoder)
    table = load_table(args.data, "train", need_rle=True)
    ds = TileDataset(table, cfg, length=args.tiles, cache_size=8)
    t = time.perf_counter()
    batch = [ds[i] for i in range(args.tiles)]
    load_s = time.perf_counter() - t
    x = torch.stack([b[0] for b in batch[: cfg.batch_size]])
    y = torch.stack([b[1] for b in batch[: cfg.batch_size]])
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(4):
        augment_batch(x, y, "full", gen)
    aug_s = (time.perf_counter() - t) / 4
    model = build_model(cfg).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = BCEDiceLoss()
    steps = 3
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
        opt.step()
    step_s = (time.perf_counter() - t) / steps
    out = {"benchmark": "tile_loading", "tile_size": args.tile_size, "target_mpp": args.target_mpp,
           "encoder": args.encoder, "batch_size": cfg.batch_size,
           "loading_tiles_per_s_one_process": args.tiles / load_s,
           "augment_ms_per_batch": aug_s * 1000, "train_tiles_per_s": cfg.batch_size / step_s,
           "machine": machine()}
    out["loading_to_training_ratio"] = out["loading_tiles_per_s_one_process"] / out["train_tiles_per_s"]
    write_json(RESULTS / "tile_loading.json", out)
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items() if k != "machine"})


if __name__ == "__main__":
    main()
