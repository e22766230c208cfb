"""DDP on CPU (gloo): 2 processes via ``ftuseg train --nproc 2`` and via torchrun directly.

Checks that the replicas are bit-identical after training (per-rank parameter/buffer checksums written at
each epoch's end by tests/hooks/sitecustomize.py, loaded into every rank through PYTHONPATH), that the
DistributedSampler splits the data (half the steps per epoch),
that the rank-0 checkpoint loads and predicts in a single process, and that a resumed DDP run ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# 8 tiles per epoch, batch 2: one process takes 4 steps per epoch, each of 2 processes takes 2
COMMON = ["--preset", "tiled", "--encoder", "resnet18", "--tile-size", "64", "--batch-size", "2",
          "--tiles-per-epoch", "8", "--lr", "1e-3", "--augment", "full", "--device", "cpu", "--quiet"]


HOOKS = Path(__file__).parent / "hooks"


def _env(checks: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", FTUSEG_TEST_DDP_CHECKSUMS=str(checks),
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _checksums(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_two_processes_identical_replicas_resume_and_single_process_load(synth_data, tmp_path):
    import torch

    from ftuseg.models.checkpoint import load_checkpoint, load_run_model
    from ftuseg.training.distributed import state_checksums

    # (1) uninterrupted: 2 epochs with `ftuseg train --nproc 2`
    full, checks_full = tmp_path / "full", tmp_path / "checks_full"
    _run([sys.executable, "-m", "ftuseg", "train", str(synth_data), "--out", str(full), "--epochs", "2",
          "--nproc", "2", *COMMON], _env(checks_full))
    r0, r1 = _checksums(checks_full)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["params"] == r1["params"], "DDP replicas diverged"
    assert r0["buffers"] == r1["buffers"], "BatchNorm statistics differ between replicas"
    # the rank-0 checkpoint is a plain single-process checkpoint equal to the replicas
    ckpt = load_checkpoint(full / "last.pt")
    assert ckpt["step"] == 4  # 2 epochs x (8 tiles / 2 ranks / batch 2)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    model, cfg = load_run_model(full, "last")
    assert state_checksums(model)["params"] == r0["params"]
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()

    # (2) interrupted after epoch 1, then resumed: plain torchrun this time
    part, checks_part = tmp_path / "part", tmp_path / "checks_part"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "ftuseg", "train", str(synth_data), "--out", str(part), "--epochs", "2", *COMMON]
    _run([*torchrun, "--max-steps", "2"], _env(checks_part))
    assert load_checkpoint(part / "last.pt")["step"] == 2
    _run([*torchrun, "--resume"], _env(checks_part))
    p0, p1 = _checksums(checks_part)
    assert p0["params"] == p1["params"] and load_checkpoint(part / "last.pt")["step"] == 4
    assert p0["params"] == r0["params"], "resumed DDP run differs from the uninterrupted one"
    assert p0["buffers"] == r0["buffers"]
