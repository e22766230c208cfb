"""``--engine auto`` on a CPU: time the engines on this machine, keep the fastest, remember the answer.

Which engine wins depends on the CPU and the network, not on a rule: on one 2-core AVX-512/AMX Xeon,
onnxruntime ran an EfficientNet-Lite0 U-Net 2.2-2.6x faster than torch fp32 (depthwise convolutions), while
on other machines torch's oneDNN kernels have won for ResNets. So the first prediction with a network shape
on a machine times both engines on one batch of random tiles (after a warm-up call each, median of three
calls, interleaved so a busy moment hurts both) and stores the winner in the user cache, keyed by the CPU
model and flags, threads, library versions and the network's shape. Later runs read the answer (no timing).
Both engines compute in fp32 and agree to ~1e-5, so the choice changes speed, never masks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ftuseg.inference.sliding_window import TileFn

CACHE_FILE = "engine_choice.json"


def cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftuseg" / CACHE_FILE


def engine_key(cfg, tta: bool | str) -> str:
    """What the winner depends on: CPU, threads, library versions and the network's shape (not its weights).
    Computed without importing torch, so that a later run can find its answer and stay torch-free."""
    from importlib.metadata import PackageNotFoundError, version

    from ftuseg.hardware import cpu_model_and_flags, default_threads

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    cpu, flags = cpu_model_and_flags()
    parts = [cpu, "+".join(sorted(flags)), f"threads={default_threads()}", f"torch={ver('torch')}",
             f"ort={ver('onnxruntime')}", cfg.arch, cfg.encoder, f"dw={cfg.decoder_width}",
             f"px={input_px(cfg)}", f"batch={cfg.infer_batch_size}", f"tta={tta if tta == 'd4' else bool(tta)}"]
    return "|".join(str(p) for p in parts)


def input_px(cfg) -> int:
    """Side of the network's input: a tile (tiled runs) or the resized whole image (the seed)."""
    return cfg.infer_tile() if cfg.mode == "tiled" else cfg.image_size


def time_engines(engines: dict[str, TileFn], tiles: np.ndarray, calls: int = 3) -> dict[str, float]:
    """Median seconds per call of each engine on ``tiles``, after one warm-up call each, interleaved."""
    for fn in engines.values():
        fn(tiles)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(calls):
        for name, fn in engines.items():
            t = time.perf_counter()
            fn(tiles)
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, record: dict) -> None:
    from ftuseg.io.atomic import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = record
        with atomic_write(path) as fh:
            json.dump(data, fh, indent=1)
    except OSError:
        pass  # a read-only home: the choice is measured again next time, nothing else changes


def cached_record(cfg, tta: bool | str, cache: Path | None = None) -> dict:
    """What an earlier timing stored for this CPU and network (``engine``, ``seconds_per_batch``), or {}."""
    record = _read_cache(cache or cache_file()).get(engine_key(cfg, tta))
    return record if isinstance(record, dict) else {}


def cached_engine(cfg, tta: bool | str, cache: Path | None = None) -> str | None:
    """The engine measured fastest earlier for this CPU and network, or None when it was never timed."""
    return cached_record(cfg, tta, cache).get("engine")


def choose_engine(cfg, tta: bool | str, builders: dict[str, Callable[[], TileFn]],
                  cache: Path | None = None) -> tuple[str, TileFn, dict]:
    """(name, tile function, record) of the fastest engine among ``builders`` (name -> constructor) for this
    CPU and network; the record holds the timings and whether they came from the cache. A builder that
    fails (e.g. a model onnxruntime cannot take) drops out; the first builder is the fallback."""
    path = cache or cache_file()
    record = cached_record(cfg, tta, path)
    if record.get("engine") in builders:
        name = record["engine"]
        try:
            return name, builders[name](), {**record, "cached": True}
        except Exception:  # noqa: BLE001 - a cached winner that no longer builds is timed again below
            pass
    built: dict[str, TileFn] = {}
    for name, build in builders.items():
        try:
            built[name] = build()
        except Exception:  # noqa: BLE001 - an engine that cannot run this model is simply not a candidate
            continue
    if len(built) < 2:  # nothing to compare, so nothing to remember
        name = next(iter(built), next(iter(builders)))
        fn = built[name] if built else builders[name]()
        return name, fn, {"engine": name, "cached": False, "seconds_per_batch": {}}
    size = input_px(cfg)
    tiles = np.random.default_rng(0).integers(0, 256, (max(1, cfg.infer_batch_size), size, size, 3), dtype=np.uint8)
    seconds = time_engines(built, tiles)
    name = min(seconds, key=seconds.get)
    record = {"engine": name, "seconds_per_batch": {n: round(s, 4) for n, s in seconds.items()},
              "batch": int(tiles.shape[0]), "tile_px": int(size), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_cache(path, engine_key(cfg, tta), record)
    return name, built[name], {**record, "cached": False}
