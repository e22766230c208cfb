"""Does tile loading keep up with the model? Tiles/s of the tiled sampler alone vs training steps alone.

Training steps are timed in fp32 (NCHW and channels_last) and in the trainer's own precision
(bf16 autocast + channels_last on CPUs with native bf16, see ``ftuseg.training.trainer.train_autocast``).

    python benchmarks/tile_loading.py [--tile-size 256 --target-mpp 2.0 --organ-mpp kidney=6,largeintestine=1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import DEFAULT_DATA, RESULTS, machine, write_json
from ftuseg.cli._common import parse_mapping


def train_tiles_per_s(cfg, x: torch.Tensor, y: torch.Tensor, channels_last: bool, dtype, steps: int = 4) -> float:
    """Tiles/s of AdamW steps on one fixed batch (after one warm-up step for oneDNN's primitives)."""
    from ftuseg.models.factory import build_model
    from ftuseg.training.losses import BCEDiceLoss

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg).train().to(memory_format=fmt)
    xb = x.contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = BCEDiceLoss()
    t = 0.0
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(xb)
        loss_fn(logits.float(), y).backward()
        opt.step()
    return x.shape[0] * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--target-mpp", type=float, default=2.0)
    ap.add_argument("--organ-mpp", type=parse_mapping, default="kidney=6,largeintestine=1",
                    help="per-organ µm/px, as in benchmarks/accuracy.py's tiled run ('' for none)")
    ap.add_argument("--encoder", default="resnet34")
    ap.add_argument("--tiles", type=int, default=64)
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}")

    from ftuseg.config import make_config
    from ftuseg.io.dataset import load_table
    from ftuseg.training.augment import augment_batch
    from ftuseg.training.datasets import TileDataset

    cfg = make_config("tiled", tile_size=args.tile_size, target_mpp=args.target_mpp, organ_mpp=args.organ_mpp,
                      encoder=args.encoder)
    table = load_table(args.data, "train", need_rle=True)
    ds = TileDataset(table, cfg, length=args.tiles)
    t = time.perf_counter()
    batch = [ds[i] for i in range(args.tiles)]
    load_s = time.perf_counter() - t
    t = time.perf_counter()  # the same tiles again, every image already decoded: windowing + resampling only
    for i in range(args.tiles):
        ds[i]
    warm_s = time.perf_counter() - t
    x = torch.stack([b[0] for b in batch[: cfg.batch_size]])
    y = torch.stack([b[1] for b in batch[: cfg.batch_size]])
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(4):
        augment_batch(x, y, "full", gen)
    aug_s = (time.perf_counter() - t) / 4
    # training steps alone, in each precision/layout; "trainer" is what ftuseg.training.train uses here
    from ftuseg.training.trainer import train_autocast

    use_amp, amp_dtype = train_autocast(cfg, torch.device("cpu"))
    variants = {"fp32_nchw": (False, None), "fp32_channels_last": (True, None),
                "trainer": (True, amp_dtype if use_amp else None)}
    train_rates = {name: train_tiles_per_s(cfg, x, y, channels_last, dtype)
                   for name, (channels_last, dtype) in variants.items()}
    out = {"benchmark": "tile_loading", "tile_size": args.tile_size, "target_mpp": args.target_mpp,
           "organ_mpp": args.organ_mpp, "cache_mib_per_worker": ds.cache_bytes / 2**20,
           "encoder": args.encoder, "batch_size": cfg.batch_size,
           "loading_tiles_per_s_one_process": args.tiles / load_s,
           "loading_tiles_per_s_decoded_images_cached": args.tiles / warm_s,
           "augment_ms_per_batch": aug_s * 1000,
           "train_tiles_per_s": train_rates["trainer"],
           "trainer_autocast": str(amp_dtype).replace("torch.", "") if use_amp else "none (fp32)",
           "train_tiles_per_s_by_variant": train_rates,
           "machine": machine()}
    out["loading_to_training_ratio"] = out["loading_tiles_per_s_one_process"] / out["train_tiles_per_s"]
    write_json(RESULTS / "tile_loading.json", out)
    print({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items() if k != "machine"})


if __name__ == "__main__":
    main()
