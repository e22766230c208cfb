"""Peak memory of whole-slide prediction: a slide, then one of twice the area.

    python benchmarks/wsi_memory.py --model glomeruli-pas --size 24000   # the README's run: a shipped model
    python benchmarks/wsi_memory.py --size 40000 --target-mpp 8          # stress run: untrained ResNet18

With ``--model`` the shipped model runs exactly as a user would run it (``ftuseg predict --model NAME SLIDE
--organ ORGAN --out-dir ...``, engine auto, its own µm/px and tiles). A model's first prediction on a machine
exports it to ONNX and times torch against onnxruntime (torch loaded); every later one finds both in the
user cache and runs on onnxruntime without importing torch. So the run measures, each in its own process:
the first use (a fresh cache, on a 4,000 x 4,000 slide), then the two slides as every later run sees them.
Without ``--model``, the stress configuration:

1. Writes a synthetic pyramidal OME-TIFF (0.5 µm/px, JPEG tiles, SubIFD pyramid) tile by tile: the
   content is a function of the pixel coordinates (tissue-like pink ellipses with texture, darker
   "glomeruli", white glass around), so no level is ever held whole in memory.
2. (stress run) Makes a run folder holding an untrained ResNet18 U-Net (tiled mode, 64 px tiles).
3. Runs ``ftuseg predict RUN SLIDE --out-dir ... --formats geojson,ome-tiff,overlay`` in a child process
   and samples its resident memory (psutil, every 0.1 s) plus the kernel's ru_maxrss for the child.

To fit a 2-core CPU the stress model looks at the slide at ``--target-mpp`` (default 8 µm/px), so the network
computes on ~1/256 of the pixels while reading (the level-0 tiles of every region that holds tissue are
decoded; glass regions are skipped), resampling, stitching, the zarr store, GeoJSON and the pyramidal
OME-TIFF all run at full resolution.
Results: benchmarks/results/wsi_memory.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, machine, write_json

PIXEL_SIZE = 0.5
TILE = 512
GIB = 1024**3
OBJECT_QUANTILE = 0.8


# ------------------------------------------------------------------------------------------------
def _ellipses(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Tissue pieces (cx, cy, a, b) in level-0 pixels; about half the slide is glass."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(max(3, int(6 * width * height / 40000**2))):
        out.append((rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height,
                    rng.uniform(0.08, 0.2) * width, rng.uniform(0.08, 0.2) * height))
    return out


def render(x0: int, y0: int, w: int, h: int, step: int, ellipses: list) -> np.ndarray:
    """RGB of the level whose pixels are ``step`` level-0 pixels wide, at level pixel (x0, y0)."""
    xs = (np.arange(x0, x0 + w, dtype=np.float32) * step)[None, :]
    ys = (np.arange(y0, y0 + h, dtype=np.float32) * step)[:, None]
    tissue = np.zeros((h, w), dtype=bool)
    for cx, cy, a, b in ellipses:
        tissue |= ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 < 1.0
    texture = np.sin(xs / 37.0) * np.cos(ys / 53.0) + 0.5 * np.sin((xs + ys) / 11.0)
    # glomerulus-like disks on a 900 px lattice, radius ~150 px
    gx, gy = (xs % 900) - 450, (ys % 900) - 450
    glom = (gx * gx + gy * gy) < 150.0**2
    img = np.empty((h, w, 3), dtype=np.uint8)
    pink = np.stack([225 + 8 * texture, 160 + 12 * texture, 195 + 8 * texture], axis=-1)
    purple = np.stack([170 + 10 * texture, 90 + 10 * texture, 160 + 10 * texture], axis=-1)
    img[:] = np.where((tissue & glom)[..., None], purple, pink).astype(np.uint8)
    img[~tissue] = (243, 241, 242)
    return img


def write_slide(path: Path, width: int, height: int) -> dict:
    """Pyramidal OME-TIFF written one tile at a time; returns its description."""
    import tifffile

    ell = _ellipses(width, height)
    levels = [(width, height, 1)]
    while max(levels[-1][:2]) > 1024:
        w, h, s = levels[-1]
        levels.append(((w + 1) // 2, (h + 1) // 2, s * 2))

    def tiles(w: int, h: int, step: int):
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                yield render(tx, ty, TILE, TILE, step, ell)  # full tiles; the writer crops the edges

    t0 = time.perf_counter()
    md = {"axes": "YXS", "PhysicalSizeX": PIXEL_SIZE, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": PIXEL_SIZE,
          "PhysicalSizeYUnit": "µm"}
    opts = dict(tile=(TILE, TILE), dtype=np.uint8, photometric="rgb", compression="jpeg")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        w, h, s = levels[0]
        tw.write(tiles(w, h, s), shape=(h, w, 3), subifds=len(levels) - 1, metadata=md, **opts)
        for w, h, s in levels[1:]:
            tw.write(tiles(w, h, s), shape=(h, w, 3), subfiletype=1, **opts)
    return {"path": str(path), "width": width, "height": height, "levels": len(levels),
            "bytes": path.stat().st_size, "write_seconds": round(time.perf_counter() - t0, 1)}


def make_run(run_dir: Path, target_mpp: float, width: int, height: int) -> float:
    """A run folder with an untrained ResNet18 U-Net (the weights do not matter for memory).

    An untrained net outputs a narrow band of probabilities; the threshold is set at the upper
    ``OBJECT_QUANTILE`` of its output on tissue, so the mask has many irregular objects and polygons and
    GeoJSON are exercised as on a real slide (neither one blob nor nothing). Returns the threshold.
    """
    import torch

    from ftuseg.config import make_config
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.inference.predictor import Predictor
    from ftuseg.models.checkpoint import save_checkpoint
    from ftuseg.models.factory import build_model

    torch.manual_seed(0)
    cfg = make_config("tiled", encoder="resnet18", encoder_weights=None, tile_size=64, target_mpp=target_mpp,
                      infer_batch_size=32, overlap=0.5)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    save_checkpoint(run_dir / "best.pt", build_model(cfg, load_weights=False), cfg)
    step = int(round(target_mpp / PIXEL_SIZE))
    side = 384  # a crop of the slide's centre at the network's resolution
    x0, y0 = width // (2 * step) - side // 2, height // (2 * step) - side // 2
    crop = render(x0, y0, side, side, step, _ellipses(width, height))
    prob = Predictor.from_runs([run_dir], device="cpu").predict_proba(crop, target_mpp)
    tissue = crop.min(axis=-1) < 235
    threshold = float(np.quantile(prob[tissue] if tissue.any() else prob, OBJECT_QUANTILE))
    Thresholds(threshold=threshold).save(run_dir / "thresholds.json")
    return threshold


# ------------------------------------------------------------------------------------------------
def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; peak RSS from sampling (psutil, children included) and from the kernel."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    samples = []
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.Error:
                break
            peak = max(peak, rss)
            samples.append((round(time.perf_counter() - t0, 1), rss))
            stop.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out = proc.stdout.read()
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux), not the max over all children
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{out[-3000:]}")
    kernel_peak = usage.ru_maxrss * 1024
    # keep ~60 evenly spaced samples to show the profile is flat over time
    keep = samples[:: max(1, len(samples) // 60)]
    return {"peak_rss_bytes_sampled": peak, "peak_rss_gib_sampled": round(peak / GIB, 3),
            "ru_maxrss_gib": round(kernel_peak / GIB, 3), "seconds": round(time.perf_counter() - t0, 1),
            "rss_profile_mib": [(t, round(r / 2**20)) for t, r in keep], "log_tail": out[-600:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/ftuseg_wsi_bench", help="scratch folder (slides are ~1-2 GB)")
    ap.add_argument("--target-mpp", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=40000)
    ap.add_argument("--model", help="a shipped model (ftuseg models), run as a user would; default: the stress run")
    ap.add_argument("--organ", default="kidney", help="the organ passed with --model")
    ap.add_argument("--target-gib", type=float, default=1.0, help="the peak RSS the run must stay under")
    ap.add_argument("--out", type=Path, help="results JSON (default: wsi_memory.json, or wsi_memory_stress.json)")
    ap.add_argument("--keep", action="store_true", help="keep the slides and outputs")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.model:
        from ftuseg.zoo.registry import model_dir

        env["XDG_CACHE_HOME"] = str(work / "cache")  # first use (ONNX export, engine timing) is measured
        shutil.rmtree(work / "cache", ignore_errors=True)
        cfg_text = (model_dir(args.model) / "config.yaml").read_text()
        model_args = ["--model", args.model, "--organ", args.organ]
        network = {"model": f"shipped {args.model}", "organ": args.organ, "config": cfg_text}
        out_path = args.out or RESULTS / "wsi_memory.json"
    else:
        run = work / "run"
        threshold = make_run(run, args.target_mpp, args.size, args.size)
        model_args = [str(run)]
        network = {"model": "untrained U-Net/ResNet18", "tile_size": 64, "target_mpp": args.target_mpp,
                   "threshold": round(threshold, 5),
                   "threshold_rule": f"{OBJECT_QUANTILE:.0%} quantile of the untrained net's output on tissue",
                   "note": f"stress run: the network sees the slide at {args.target_mpp} µm/px to fit a 2-core CPU; "
                           "reading, resampling, stitching, the zarr store and all outputs are full size"}
        out_path = args.out or RESULTS / "wsi_memory_stress.json"
    result = {"benchmark": "wsi_memory", "machine": machine(), "pixel_size_um": PIXEL_SIZE, "network": network,
              "formats": "geojson,ome-tiff,overlay", "region_size": 4096, "target_peak_gib": args.target_gib,
              "slides": []}
    sizes = [(f"{args.size // 1000}k", (args.size, args.size)), ("2x_area", (args.size, 2 * args.size))]
    if args.model:
        sizes.insert(0, ("first_use_4k", (4000, 4000)))
    for name, (w, h) in sizes:
        slide = work / f"slide_{name}.ome.tif"
        print(f"[wsi_memory] writing {w}x{h} slide ...", flush=True)
        desc = write_slide(slide, w, h)
        out_dir = work / f"out_{name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "ftuseg", "predict", *model_args, str(slide), "--out-dir", str(out_dir),
               "--formats", "geojson,ome-tiff,overlay", "--quiet"]
        print(f"[wsi_memory] predicting {name} ...", flush=True)
        m = measure(cmd, env)
        import json

        res = json.loads((out_dir / slide.name.replace(".ome.tif", "") / "result.json").read_text())
        entry = {"name": name, **desc, **m, "n_objects": res["n_objects"], "tiles_total": res["tiles_total"],
                 "tiles_skipped": res["tiles_skipped"],
                 "skipped_fraction": round(res["tiles_skipped"] / max(1, res["tiles_total"]), 4),
                 "output_bytes": {k: os.path.getsize(v) for k, v in res["outputs"].items()}}
        result["slides"].append(entry)
        print(f"[wsi_memory] {name}: peak RSS {entry['peak_rss_gib_sampled']:.2f} GiB (sampled), "
              f"{entry['ru_maxrss_gib']:.2f} GiB (kernel), {entry['seconds']:.0f} s, "
              f"{entry['skipped_fraction']:.0%} tiles skipped", flush=True)
        if not args.keep:
            slide.unlink()
            shutil.rmtree(out_dir, ignore_errors=True)
    a, b = (s["peak_rss_gib_sampled"] for s in result["slides"] if not s["name"].startswith("first_use"))
    result["peak_ratio_2x_over_1x"] = round(b / a, 3)
    result["passes"] = bool(max(a, b) < args.target_gib and b / a < 1.15)
    write_json(out_path, result)
    print(f"[wsi_memory] peaks {a:.2f} / {b:.2f} GiB (ratio {b / a:.2f}); passes={result['passes']}")


if __name__ == "__main__":
    main()
