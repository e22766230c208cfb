"""onnxruntime tile function: the same call contract as :class:`~ftuseg.inference.engine.TorchTileFn`.

uint8 tiles (B, T, T, 3) in, float32 probabilities (B, T, T) out. On this project's CPU onnxruntime ran a
ResNet34 U-Net 1.5-1.7x faster than ftuseg's torch fp32 path (it fuses Conv+BatchNorm+ReLU, which eager
torch runs as separate memory-bound passes; benchmarks/results/throughput.json) with the same numbers
(max |logit diff| ~1e-5), which is why ``--engine auto`` should pick it on CPU (:func:`default_engine`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ftuseg.errors import FtusegError
from ftuseg.inference.engine import TTA_FLIPS

ONNX_DIMS = {(): (), (-1,): (2,), (-2,): (1,), (-2, -1): (1, 2)}  # TTA flips in NHWC numpy axes


class OnnxTileFn:
    """An onnxruntime session over an exported FTUNet (see :mod:`ftuseg.export`)."""

    def __init__(self, onnx_path: str | os.PathLike, tta: bool = False, threads: int | None = None,
                 device: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise FtusegError("--engine onnxruntime needs the onnxruntime package (pip install onnxruntime)") from None
        self.path = Path(onnx_path)
        if not self.path.exists():
            raise FtusegError(f"{self.path}: ONNX model not found")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # follow torch's thread count (OMP_NUM_THREADS, Ray's per-actor CPUs) instead of every core
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise FtusegError(f"{self.path}: cannot load ONNX model ({msg})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.flips = TTA_FLIPS if tta else ((),)

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, tta: bool = False, which: str = "best",
                threads: int | None = None, device: str = "cpu") -> OnnxTileFn:
        """The run's ``model.onnx``, exported on demand (atomically) when missing or older than the checkpoint.

        ``run_dir`` may also be a checkpoint file or an ``.onnx`` file.
        """
        from ftuseg.export import default_onnx_path, export_run
        from ftuseg.models.checkpoint import resolve_checkpoint

        run_dir = Path(run_dir)
        if run_dir.suffix == ".onnx":
            return cls(run_dir, tta=tta, threads=threads, device=device)
        ckpt = resolve_checkpoint(run_dir, which)
        onnx_path = default_onnx_path(ckpt)
        if _stale(onnx_path, ckpt) and not _stale(cache_path(ckpt), ckpt):
            onnx_path = cache_path(ckpt)  # exported earlier from a read-only run folder
        if _stale(onnx_path, ckpt):
            # several processes (Ray actors) may get here at once: each writes its own temp file and renames
            # it into place, so readers only ever see a complete model
            try:
                export_run(ckpt, onnx_path, check=False)
            except FtusegError as exc:
                if "not writable" not in str(exc):
                    raise
                onnx_path = cache_path(ckpt)  # a read-only run folder (shared model store): the user cache
                onnx_path.parent.mkdir(parents=True, exist_ok=True)
                export_run(ckpt, onnx_path, check=False)
        return cls(onnx_path, tta=tta, threads=threads, device=device)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        acc = None
        for dims in self.flips:
            axes = ONNX_DIMS[dims]
            t = np.flip(tiles, axis=axes) if axes else tiles
            x = np.ascontiguousarray(t.transpose(0, 3, 1, 2), dtype=np.float32)
            logits = self._logits(x)[:, 0]
            p = torch.sigmoid(torch.from_numpy(logits)).numpy()
            if axes:
                p = np.flip(p, axis=axes)
            acc = p if acc is None else acc + p
        out = acc / len(self.flips) if len(self.flips) > 1 else acc
        return np.ascontiguousarray(out, dtype=np.float32)


def _stale(onnx_path: Path, ckpt: Path) -> bool:
    return not onnx_path.exists() or onnx_path.stat().st_mtime < ckpt.stat().st_mtime


def cache_path(ckpt: Path) -> Path:
    """Where the ONNX export of a checkpoint in a read-only folder goes: keyed by its path, size and time."""
    import hashlib

    st = ckpt.stat()
    key = hashlib.sha256(f"{ckpt.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftuseg" / "onnx"
    return root / f"{key}.onnx"


def default_engine(device: str | torch.device = "auto") -> str:
    """The engine ``--engine auto`` should use: onnxruntime on CPU (measured 1.5-1.7x faster than torch fp32
    with the same numbers, benchmarks/results/throughput.json), torch on GPUs."""
    import importlib.util

    dev = str(device)
    on_cpu = dev == "cpu" or (dev == "auto" and not torch.cuda.is_available())
    return "onnxruntime" if on_cpu and importlib.util.find_spec("onnxruntime") is not None else "torch"
