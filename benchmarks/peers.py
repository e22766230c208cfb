"""Per-image inference time: ftuseg beside a plain per-tile loop and MONAI, same model, same image, one run.

    python benchmarks/peers.py [--rounds 5]          # the README's run (idle machine)

Cases (each one network, one image, the network's own µm/px, tile, overlap and batch):
  glands-he       the shipped colon/prostate model (EfficientNet-Lite0 U-Net, 256 px tiles at 1 µm/px) on the
                  1600x1200 ftu-bench image below declared as colon at 0.5 µm/px (800x600 at the network)
  glomeruli-pas   the shipped kidney model (384 px tiles at 4 µm/px) on that real kidney image (hbk-92, locked
                  fold 4, at its own 1.0 µm/px: 400x300 at the network); Dice against its annotation is reported
  r34-512         (--cases r34-512) the geometry of an earlier review: an untrained ResNet34 U-Net, 512 px tiles
                  at 1 µm/px, on the same image declared at 0.4 µm/px

Contenders, each timed end to end per image (resample to the network's µm/px, every tile, blending,
resample back, threshold at 0.5), round-robin over --rounds rounds, median kept:
  ftuseg                 ``Predictor.predict_image`` with ``--engine auto`` (the CLI default): the engine it
                         measured fastest on this CPU; its first-use cost (ONNX export + timing) is reported apart
  ftuseg torch fp32 / onnxruntime / torch bf16   the same path with each engine forced
  plain loop             a fresh, unconverted copy of the model: NCHW fp32, ``no_grad``, one tile at a time, the
                         minimal grid of tiles at the same overlap, overlaps averaged
  MONAI                  ``monai.inferers.sliding_window_inference`` (Gaussian, same overlap and batch) on a fresh
                         copy of the model, NCHW fp32, ``no_grad``

TIAToolbox would be the whole-slide peer, but no release installs beside this project's torch (2.1.3 requires
torch<2.13; recorded in the JSON). Each contender's mask is compared with ftuseg's (Dice agreement).
Writes benchmarks/results/peers.json with the machine, load averages before and after, and per-image cost
breakdown of ftuseg's path (resample in, network, tiling + blending, resample back, threshold).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import DEFAULT_DATA, RESULTS, machine, write_json

KIDNEY_IMAGE = "hbk-92"  # a locked-fold (fold 4) HuBMAP kidney image: never trained on by the shipped model
TIATOOLBOX_NOTE = ("not installable here: tiatoolbox 2.1.3 (latest) depends on torch<2.13.0,>=2.5.0 and "
                   "torchvision<0.28; this project runs torch 2.14.1")


def plain_loop(model: torch.nn.Module, scaled: np.ndarray, tile: int, overlap: float) -> np.ndarray:
    """What a user writes first: one tile at a time, the minimal grid, overlaps averaged."""
    from ftuseg.inference.tiling import TileGrid

    h, w = scaled.shape[:2]
    ph, pw = max(h, tile), max(w, tile)
    img = np.pad(scaled, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect") if (ph, pw) != (h, w) else scaled
    acc = np.zeros((ph, pw), np.float32)
    cnt = np.zeros((ph, pw), np.float32)
    with torch.no_grad():
        for y, x in TileGrid.from_overlap(ph, pw, tile, overlap).positions():
            t = torch.from_numpy(np.ascontiguousarray(img[y : y + tile, x : x + tile])).permute(2, 0, 1)[None].float()
            acc[y : y + tile, x : x + tile] += torch.sigmoid(model(t))[0, 0].numpy()
            cnt[y : y + tile, x : x + tile] += 1
    return (acc / cnt)[:h, :w]


def monai_window(model: torch.nn.Module, scaled: np.ndarray, tile: int, overlap: float, batch: int) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.ascontiguousarray(scaled)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        logits = sliding_window_inference(x, (tile, tile), batch, model, overlap=overlap, mode="gaussian")
    return torch.sigmoid(logits)[0, 0].numpy()


def peer_predict(fn, model, cfg, image: np.ndarray, pixel_size: float, organ: str | None) -> np.ndarray:
    """A peer's whole path: resample in (the same cv2 call as ftuseg), its window, resample back, threshold."""
    from ftuseg.inference.resample import resize_image, resize_prob, scale_factor, scaled_shape

    h, w = image.shape[:2]
    scaled = resize_image(image, scaled_shape(h, w, scale_factor(pixel_size, cfg.mpp_for(organ))))
    prob = fn(model, scaled)
    return resize_prob(prob, (h, w)) > 0.5


def ftuseg_breakdown(predictor, image: np.ndarray, pixel_size: float, organ: str | None) -> dict:
    """Seconds per stage of ftuseg's path for one image (the stages ``member_window_proba`` runs)."""
    from ftuseg.inference.resample import resize_image, resize_prob, scale_factor, scaled_shape
    from ftuseg.inference.sliding_window import blended_windows

    member = predictor.members_for(organ)[0]
    cfg = member.cfg
    net = {"s": 0.0}

    def timed(tiles):
        t = time.perf_counter()
        out = member.tile_fn(tiles)
        net["s"] += time.perf_counter() - t
        return out

    h, w = image.shape[:2]
    t0 = time.perf_counter()
    scaled = resize_image(image, scaled_shape(h, w, scale_factor(pixel_size, cfg.mpp_for(organ))))
    t1 = time.perf_counter()
    prob_s, tiles, _ = blended_windows(timed, scaled, cfg.tile_size, cfg.overlap, cfg.infer_batch_size, cfg.blend,
                                       margin=cfg.infer_margin_px())
    t2 = time.perf_counter()
    prob = resize_prob(prob_s, (h, w))
    t3 = time.perf_counter()
    predictor.binarize(prob, organ, pixel_size)
    t4 = time.perf_counter()
    return {"resample_in": t1 - t0, "network": net["s"], "tiling_and_blending": t2 - t1 - net["s"],
            "resample_back": t3 - t2, "threshold_and_postprocess": t4 - t3, "tiles": tiles,
            "network_px": list(scaled.shape[:2])}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    from ftuseg.metrics import dice_score

    return round(dice_score(a, b), 4)


def make_r34_run(root: Path) -> Path:
    from ftuseg.config import make_config
    from ftuseg.models.checkpoint import save_checkpoint
    from ftuseg.models.factory import build_model

    torch.manual_seed(0)
    cfg = make_config("tiled", encoder="resnet34", encoder_weights=None, tile_size=512, target_mpp=1.0,
                      overlap=0.5, infer_batch_size=8)
    run = root / "r34-512"
    run.mkdir(parents=True)
    save_checkpoint(run / "best.pt", build_model(cfg), cfg)
    return run


def run_case(name: str, run_dir: Path, image: np.ndarray, pixel_size: float, organ: str | None,
             truth: np.ndarray | None, rounds: int) -> dict:
    from ftuseg.inference.engine import TorchTileFn, cpu_has_native_bf16
    from ftuseg.inference.engine_choice import cached_record
    from ftuseg.inference.predictor import Member, Predictor
    from ftuseg.models.checkpoint import load_run_model

    t = time.perf_counter()
    default = Predictor.from_runs([run_dir], device="cpu", engine="auto")  # engine choice measured here
    first_use = time.perf_counter() - t
    cfg = default.members[0].cfg
    choice = cached_record(cfg, cfg.tta)
    forced = {"ftuseg torch fp32": Predictor.from_runs([run_dir], device="cpu", engine="torch"),
              "ftuseg onnxruntime": Predictor.from_runs([run_dir], device="cpu", engine="onnxruntime")}
    if cpu_has_native_bf16():
        model_bf16, _ = load_run_model(run_dir)
        forced["ftuseg torch bf16"] = Predictor([Member(TorchTileFn(model_bf16, "cpu", precision="bf16"), cfg)],
                                               default.thresholds)
    fresh_plain, _ = load_run_model(run_dir)  # never passed to TorchTileFn: NCHW, as loaded
    fresh_monai, _ = load_run_model(run_dir)
    tile, overlap, batch = cfg.tile_size, cfg.overlap, cfg.infer_batch_size

    contenders = {"ftuseg": lambda: default.predict_image(image, pixel_size, organ)[0],
                  **{k: (lambda p=p: p.predict_image(image, pixel_size, organ)[0]) for k, p in forced.items()},
                  "plain loop": lambda: peer_predict(lambda m, s: plain_loop(m, s, tile, overlap), fresh_plain, cfg,
                                                     image, pixel_size, organ),
                  "MONAI": lambda: peer_predict(lambda m, s: monai_window(m, s, tile, overlap, batch), fresh_monai,
                                                cfg, image, pixel_size, organ)}
    masks = {k: fn() for k, fn in contenders.items()}  # warm-up round (allocations, ORT graphs)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    breakdowns = []
    for _ in range(rounds):
        for k, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
        breakdowns.append(ftuseg_breakdown(default, image, pixel_size, organ))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {}
    for k in contenders:
        rows[k] = {"seconds_median": round(med[k], 3), "seconds_all": [round(v, 3) for v in times[k]],
                   "mask_agreement_with_ftuseg": dice(masks[k], masks["ftuseg"]),
                   "ftuseg_speedup": round(med[k] / med["ftuseg"], 2)}
        if truth is not None:
            rows[k]["dice_vs_truth"] = dice(masks[k], truth)
    stages = {s: round(statistics.median(b[s] for b in breakdowns), 4) for s in breakdowns[0]
              if s not in ("tiles", "network_px")}
    return {"run": str(run_dir), "encoder": cfg.encoder, "image_px": list(image.shape[:2]), "pixel_size": pixel_size,
            "organ": organ, "network_mpp": cfg.mpp_for(organ), "tile": tile, "overlap": overlap, "batch": batch,
            "ftuseg_engine": choice.get("engine"), "engine_timing_seconds_per_batch": choice.get("seconds_per_batch"),
            "ftuseg_first_use_seconds": round(first_use, 2), "ftuseg_tiles": breakdowns[0]["tiles"],
            "network_px": breakdowns[0]["network_px"], "ftuseg_stage_seconds": stages, "contenders": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", default="glands-he,glomeruli-pas")
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    import monai

    from ftuseg.io.dataset import load_table, read_row_image, read_row_mask
    from ftuseg.zoo.registry import model_dir

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ftuseg-peers-")  # first use measured from scratch
    table = load_table(args.data, split="train", need_rle=True).set_index("id", drop=False)
    row = table.loc[KIDNEY_IMAGE]
    image = read_row_image(row)
    truth = read_row_mask(row, image.shape[:2])
    result: dict = {"benchmark": "peers", "rounds": args.rounds, "monai": monai.__version__,
                    "tiatoolbox": TIATOOLBOX_NOTE, "image": KIDNEY_IMAGE, "machine_before": machine(), "cases": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"glands-he": (model_dir("glands-he"), 0.5, "largeintestine", None),
                "glomeruli-pas": (model_dir("glomeruli-pas"), float(row["pixel_size"]), "kidney", truth),
                "r34-512": (None, 0.4, None, None)}
        for name in args.cases.split(","):
            run_dir, px, organ, tr = runs[name]
            run_dir = run_dir or make_r34_run(Path(tmp))
            result["cases"][name] = run_case(name, Path(run_dir), image, px, organ, tr, args.rounds)
            c = result["cases"][name]["contenders"]
            print(name, {k: (v["seconds_median"], v["ftuseg_speedup"]) for k, v in c.items()}, flush=True)
    result["machine_after"] = machine()
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
