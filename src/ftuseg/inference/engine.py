"""Turn a network into a tile function: batches of uint8 tiles in, probabilities out.

Speed choices, measured with a ResNet34 U-Net on 512 px tiles on this project's 2-core AVX-512 CPU
(an earlier benchmarks/throughput.py run, withdrawn; profile: convolutions ~60% of the time, the unfused BatchNorm,
ReLU, add, concat and upsampling the other ~40%): ``inference_mode``, channels_last and batches of tiles.
On a busy machine (other processes, several Ray workers) batch 8 in channels_last ran 2.1x faster than a
per-tile NCHW loop, whose many small parallel regions suffer most from contention; on an idle machine
the two were within ~20%. bf16 autocast on CPU (native AVX512-BF16/AMX only) was 1.2-2x faster and kept
the masks (247 ftu-bench images, trained ResNet34: mean Dice 0.3968 fp32 vs 0.3969 bf16, mask agreement
0.999) but moves single probabilities by up to ~0.06, so it is opt-in on CPU (``precision="bf16"``);
onnxruntime (``ftuseg.inference.onnx_engine``) is faster still in fp32. On CUDA, autocast (bf16, else
fp16) stays on as before. ``compile=True`` wraps the model in ``torch.compile`` (minutes of compilation
on a small CPU: only for long runs; not measured here).
"""

from __future__ import annotations

import numpy as np
import torch

from ftuseg.inference.sliding_window import TileFn, tta_transforms


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older builds without the probe
        return False


def autocast_dtype(device: torch.device, precision: str = "auto", amp: bool = True) -> torch.dtype | None:
    """The autocast dtype for inference, or None for plain fp32.

    ``auto``: bf16 (else fp16) on CUDA when ``amp``; fp32 on CPU (bf16 is faster there but not exact).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "auto" and not amp:
            return None
        if precision == "fp16" or not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    return None  # auto on CPU, fp16 on CPU (slow there), other devices


class TorchTileFn:
    """Runs an ``FTUNet`` on tile batches with ``inference_mode``, channels_last and optional TTA
    (``tta``: True or "flip" for 4 flips, "d4" for the 8 flips and transposes of a square tile)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", tta: bool | str = False,
                 amp: bool = True, precision: str = "auto", compile: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = True
        self.model = self.model.to(memory_format=torch.channels_last)
        self.transforms = tta_transforms(tta)
        self.dtype = autocast_dtype(self.device, precision, amp)
        self.amp = self.dtype is not None
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        # uint8 crosses to the device (4x less traffic than float32) and is converted there
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        acc = None
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.amp):
            for transpose, dims in self.transforms:
                xi = x.transpose(-2, -1).contiguous(memory_format=torch.channels_last) if transpose else x
                xi = xi.flip(dims) if dims else xi
                p = torch.sigmoid(self.forward(xi).float())
                p = p.flip(dims) if dims else p
                p = p.transpose(-2, -1) if transpose else p
                acc = p if acc is None else acc + p
        out = (acc / len(self.transforms))[:, 0]
        return out.cpu().numpy().astype(np.float32, copy=False)


def as_tile_fn(model: torch.nn.Module, device: torch.device | str = "cpu", tta: bool | str = False) -> TileFn:
    return TorchTileFn(model, device=device, tta=tta)
