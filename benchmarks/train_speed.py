"""What makes a CPU training step cheaper: one run, one machine, every variant side by side.

Times full training steps (forward, BCE + soft Dice, backward, AdamW) on random batches of 8 tiles, no
data loading (benchmarks/tile_loading.py measures that), for:
  encoder        ResNet34 vs EfficientNet-Lite0 (tf_ padding, as the ImageNet weights need)
  precision      fp32 NCHW, fp32 channels_last, bf16 autocast channels_last (only where the CPU has
                 native bf16: AVX512-BF16 / AMX; emulated bf16 is skipped as slower by design)
  decoder width  1.0 vs 0.5 (decoder channels halved)
  tile size      256 px vs 192 px covering the same field of view at 4/3 the µm/px
  torch.compile  on each encoder's best eager 256 px variant, where it compiles (the compilation itself,
                 ~100 s on 2 cores, is not counted)
  kidney         EfficientNet-Lite0 at 384 px, the recipe's kidney tile when the README's run was made
                 (today's is 320 px at 3 µm/px)
Reports tiles/s and field of view per second (tile area in units of a 256 px tile), the machine's CPU
model and flags, threads and load before and after. Writes benchmarks/results/train_speed.json (or --out).

    python benchmarks/train_speed.py --steps 4                                                  # Xeon, AMX
    python benchmarks/train_speed.py --steps 4 --out benchmarks/results/train_speed_epyc.json   # EPYC, no AMX

The first README run compiled only the fastest eager variant of either encoder (ResNet34 there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import RESULTS, machine, write_json


def time_steps(cfg, tile: int, steps: int, channels_last: bool, bf16: bool, compile_model: bool = False) -> float:
    """Seconds per training step (median of ``steps`` after two warm-up steps)."""
    from ftuseg.models.factory import build_model
    from ftuseg.training.losses import BCEDiceLoss

    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = BCEDiceLoss()
    x = (torch.rand(8, 3, tile, tile) * 255).contiguous(memory_format=fmt)
    y = (torch.rand(8, 1, tile, tile) > 0.7).float()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = step_model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_speed.json", help="results JSON")
    args = ap.parse_args()

    from ftuseg.config import make_config
    from ftuseg.inference.engine import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    precisions = [("fp32 NCHW", False, False), ("fp32 channels_last", True, False)]
    if native_bf16:
        precisions.append(("bf16 channels_last", True, True))
    variants = []
    for encoder in ("resnet34", "tu-tf_efficientnet_lite0"):
        for label, cl, bf16 in precisions:
            variants.append(dict(encoder=encoder, precision=label, channels_last=cl, bf16=bf16, decoder_width=1.0,
                                 tile=256))
        best_cl, best_bf16 = precisions[-1][1], precisions[-1][2]
        variants.append(dict(encoder=encoder, precision=precisions[-1][0], channels_last=best_cl, bf16=best_bf16,
                             decoder_width=0.5, tile=256))
        variants.append(dict(encoder=encoder, precision=precisions[-1][0], channels_last=best_cl, bf16=best_bf16,
                             decoder_width=1.0, tile=192))
    # the recipe's kidney tile of the README's run: 384 px at 4 µm/px (its two-resolution rival, a 256 px
    # tile with a x4 context encoder, was timed here at commit ccfb9c2 and removed with it: README, "Kidney
    # at full detail")
    label, cl, bf16 = precisions[-1]
    variants.append(dict(encoder="tu-tf_efficientnet_lite0", precision=label, channels_last=cl, bf16=bf16,
                         decoder_width=1.0, tile=384))
    results = {"benchmark": "train_speed", "batch": 8, "steps": args.steps, "machine_before": machine(),
               "native_bf16": native_bf16, "variants": []}
    for v in variants:
        cfg = make_config("tiled", encoder=v["encoder"], decoder_width=v["decoder_width"], tile_size=v["tile"])
        s = time_steps(cfg, v["tile"], args.steps, v["channels_last"], v["bf16"])
        rec = {**v, "seconds_per_step": s, "tiles_per_s": 8 / s, "fov_per_s": 8 / s * (v["tile"] / 256) ** 2}
        results["variants"].append(rec)
        print(f"{v['encoder']:26s} {v['precision']:20s} width {v['decoder_width']} tile {v['tile']}: "
              f"{rec['tiles_per_s']:.2f} tiles/s", flush=True)
    for encoder in () if args.no_compile else ("resnet34", "tu-tf_efficientnet_lite0"):
        best = max((r for r in results["variants"] if r["tile"] == 256 and r["decoder_width"] == 1.0
                    and r["encoder"] == encoder), key=lambda r: r["tiles_per_s"])
        cfg = make_config("tiled", encoder=encoder, tile_size=256)
        try:
            s = time_steps(cfg, 256, args.steps, best["channels_last"], best["bf16"], compile_model=True)
            rec = {**best, "compiled": True, "seconds_per_step": s, "tiles_per_s": 8 / s, "fov_per_s": 8 / s}
        except Exception as exc:  # no compiler toolchain, unsupported op: record why
            rec = {**best, "compiled": True, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        results["variants"].append(rec)
        print(f"{encoder:26s} torch.compile:", rec.get("tiles_per_s", rec.get("error")), flush=True)
    results["machine_after"] = machine()
    write_json(args.out, results)


if __name__ == "__main__":
    main()
