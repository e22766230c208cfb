"""What machine a figure was measured on: CPU model and vector extensions, threads, load.

Machines differ by ~9x in training speed (native bf16 or not), so every run folder and every benchmark
JSON records these facts beside its figures.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# /proc/cpuinfo flag -> the name figures are reported under
_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16",
          "amx_tile": "AMX", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI"}


@lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the vector extensions of interest that it has) from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break
    return model, tuple(name for flag, name in _FLAGS.items() if flag in flags)


def default_threads() -> int:
    """Threads a CPU engine uses, known without importing torch: OMP_NUM_THREADS when set (Ray sets it per
    actor), else the physical cores this process may run on (torch's own default)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _physical_cores()


@lru_cache(maxsize=1)
def _physical_cores() -> int:
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores, cpu, phys = set(), None, "0"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                cpu = int(value)
            elif key == "physical id":
                phys = value
            elif key == "core id" and cpu in allowed:
                cores.add((phys, value))
    except (OSError, ValueError):
        pass
    return len(cores) or len(allowed) or 1


def cuda_possible() -> bool:
    """Whether a CUDA device might be present, answered without importing torch when it cannot be: no
    NVIDIA driver, no CUDA (torch is asked only when it is loaded already or a driver exists)."""
    import sys

    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    if not Path("/proc/driver/nvidia/version").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def machine_info() -> dict:
    """CPU model and flags, cores, torch threads, native bf16, CUDA device, load average (1/5/15 min)."""
    import torch

    from ftuseg.inference.engine import cpu_has_native_bf16

    model, flags = cpu_model_and_flags()
    info = {"cpu_model": model, "cpu_flags": list(flags), "native_bf16": cpu_has_native_bf16(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info
