"""onnxruntime tile function: the same call contract as :class:`~ftuseg.inference.engine.TorchTileFn`.

uint8 tiles (B, T, T, 3) in, float32 probabilities (B, T, T) out. On this project's CPU onnxruntime ran a
ResNet34 U-Net 1.5-1.7x faster than ftuseg's torch fp32 path (it fuses Conv+BatchNorm+ReLU, which eager
torch runs as separate memory-bound passes; an earlier benchmarks/throughput.py run) with the same numbers
(max |logit diff| ~1e-5). ``--engine auto`` does not assume it wins: it times both on the machine
(:mod:`ftuseg.inference.engine_choice`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.inference.sliding_window import tta_transforms

ONNX_DIMS = {(): (), (-1,): (2,), (-2,): (1,), (-2, -1): (1, 2)}  # TTA flips in NHWC numpy axes


# onnxruntime's CPU arena keeps the largest activation set it has seen (~100 MB per 384 px tile of an
# EfficientNet-Lite0 U-Net, rounded up): runs of at most this many pixels bound the process's memory
# (4 tiles of 384 px, 9 of 256 px), which is what lets a whole slide predict in well under 1 GiB.
MAX_RUN_PIXELS = 4 * 384 * 384


class OnnxTileFn:
    """An onnxruntime session over an exported FTUNet (see :mod:`ftuseg.export`).

    A batch larger than ``max_run_pixels`` is run in consecutive chunks (same result, bounded memory)."""

    def __init__(self, onnx_path: str | os.PathLike, tta: bool | str = False, threads: int | None = None,
                 device: str = "cpu", max_run_pixels: int | None = MAX_RUN_PIXELS):
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
        from ftuseg.hardware import default_threads

        opts.intra_op_num_threads = int(threads or default_threads())
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
        self.transforms = tta_transforms(tta)
        self.max_run_pixels = max_run_pixels

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike, tta: bool | str = False, which: str = "best",
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
        onnx_path = fresh_export(ckpt) or default_onnx_path(ckpt)
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
        per_run = len(x) if not self.max_run_pixels else max(1, self.max_run_pixels // (x.shape[2] * x.shape[3]))
        if per_run >= len(x):
            return self.session.run(None, {self.input_name: x})[0]
        return np.concatenate([self.session.run(None, {self.input_name: x[i : i + per_run]})[0]
                               for i in range(0, len(x), per_run)])

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        acc = None
        for transpose, dims in self.transforms:
            axes = ONNX_DIMS[dims]
            t = tiles.transpose(0, 2, 1, 3) if transpose else tiles
            t = np.flip(t, axis=axes) if axes else t
            x = np.ascontiguousarray(t.transpose(0, 3, 1, 2), dtype=np.float32)
            logits = self._logits(x)[:, 0]
            p = sigmoid(logits)
            if axes:
                p = np.flip(p, axis=axes)
            if transpose:
                p = p.transpose(0, 2, 1)
            acc = p if acc is None else acc + p
        out = acc / len(self.transforms) if len(self.transforms) > 1 else acc
        return np.ascontiguousarray(out, dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32 without overflow warnings (equal to torch.sigmoid to ~1e-7)."""
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float32, copy=False)))).astype(np.float32, copy=False)


def fresh_export(ckpt: Path) -> Path | None:
    """An ONNX export of ``ckpt`` no older than it: beside it, else in the user cache (where exports of
    read-only run folders go); None when there is none."""
    from ftuseg.export import default_onnx_path

    return next((p for p in (default_onnx_path(ckpt), cache_path(ckpt)) if not _stale(p, ckpt)), None)


def _stale(onnx_path: Path, ckpt: Path) -> bool:
    return not onnx_path.exists() or onnx_path.stat().st_mtime < ckpt.stat().st_mtime


def cache_path(ckpt: Path) -> Path:
    """Where the ONNX export of a checkpoint in a read-only folder goes: keyed by its path, size and time."""
    import hashlib

    st = ckpt.stat()
    key = hashlib.sha256(f"{ckpt.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftuseg" / "onnx"
    return root / f"{key}.onnx"


def default_engine(device: str | object = "auto") -> str:
    """``onnxruntime`` when ``--engine auto`` may consider it (a CPU with onnxruntime installed; which engine
    then runs is measured by :mod:`ftuseg.inference.engine_choice`), ``torch`` on GPUs."""
    import importlib.util

    dev = str(device)
    from ftuseg.hardware import cuda_possible

    on_cpu = dev == "cpu" or (dev == "auto" and not cuda_possible())
    return "onnxruntime" if on_cpu and importlib.util.find_spec("onnxruntime") is not None else "torch"
