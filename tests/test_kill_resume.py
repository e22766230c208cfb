"""SIGKILL ``ftuseg train`` at several points (mid-epoch and mid-checkpoint-write); after every kill the files
on disk load, and ``--resume`` continues from the last complete checkpoint to the same end as a run that was
never interrupted.

Killing *during* a checkpoint write is made deterministic by tests/hooks/sitecustomize.py, loaded into the
child through PYTHONPATH: ``FTUSEG_TEST_PAUSE_BEFORE_RENAME`` makes every atomic write whose name matches
``FTUSEG_TEST_PAUSE_MATCH`` announce itself on stderr and sleep after its temp file is complete but before
the rename; the test kills the process while it sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ftuseg.config import load_config
from ftuseg.models.checkpoint import load_checkpoint

EPOCHS = 4
STEPS_PER_EPOCH = 2  # 8 training images (12 minus a validation group of 4), batch 4
FLAGS = ["--encoder", "resnet18", "--image-size", "64", "--batch-size", "4", "--lr", "1e-3", "--epochs", str(EPOCHS),
         "--seed", "5", "--device", "cpu", "-q"]
MARKER = "ftuseg-test: pause before rename "
HOOKS = Path(__file__).parent / "hooks"


def _train_cmd(data: Path, run: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "ftuseg", "train", str(data), "--out", str(run), *FLAGS,
            *(["--resume"] if resume else [])]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTUSEG_TEST_")}
    env.update(extra, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])))
    return env


def run_and_kill(data: Path, run: Path, resume: bool, match: str, nth: int, pause: float,
                 after: float = 0.0, timeout: float = 240.0) -> list[str]:
    """Start training, wait for the ``nth`` atomic write of a file named ``match``, then SIGKILL it.

    With a long ``pause`` the kill lands while that write's temp file is complete but not yet renamed;
    with ``pause=0`` and ``after > 0`` it lands that long after the write, i.e. in the next epoch.
    Returns the names announced before the kill.
    """
    env = _env(FTUSEG_TEST_PAUSE_BEFORE_RENAME=str(pause), FTUSEG_TEST_PAUSE_MATCH=match)
    proc = subprocess.Popen(_train_cmd(data, run, resume), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"training ended before write {nth} of {match}; saw {seen}")
            if line.startswith(MARKER):
                seen.append(Path(line[len(MARKER):].strip()).name)
                if seen.count(match) == nth:
                    break
        time.sleep(after)
        assert proc.poll() is None, "training finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return seen


def assert_loadable(run: Path) -> dict:
    """Whatever a kill left behind: every file that exists loads; returns a summary of the state."""
    state: dict = {"last_epoch": None, "metrics_epochs": []}
    if (run / "config.yaml").exists():
        load_config(run / "config.yaml")
    if (run / "split.json").exists():
        json.loads((run / "split.json").read_text())
    for name in ("last.pt", "best.pt"):
        if (run / name).exists():
            ckpt = load_checkpoint(run / name)
            assert ckpt["model"] and "epoch" in ckpt
            if name == "last.pt":
                state["last_epoch"] = int(ckpt["epoch"])
                state["last_step"] = int(ckpt["step"])
                assert len(ckpt["history"]) == ckpt["epoch"] + 1
    if (run / "metrics.csv").exists():
        m = pd.read_csv(run / "metrics.csv")
        assert {"epoch", "step", "train_loss", "val_dice"} <= set(m.columns)
        state["metrics_epochs"] = m["epoch"].tolist()
        assert state["metrics_epochs"] == list(range(1, len(m) + 1))
    return state


def finish(data: Path, run: Path, resume: bool = True) -> None:
    res = subprocess.run(_train_cmd(data, run, resume), capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.slow
def test_kill_during_training_and_checkpoint_writes_then_resume(synth_data, tmp_path):
    data, run = synth_data, tmp_path / "run"

    # 1. mid-write of the very first checkpoint: nothing complete yet, so nothing may look complete
    run_and_kill(data, run, resume=False, match="last.pt", nth=1, pause=60)
    s = assert_loadable(run)
    assert s["last_epoch"] is None and not (run / "last.pt").exists()
    assert list(run.glob(".last.pt.*.tmp")), "the kill should have landed between temp file and rename"

    # 2. resume starts from scratch; kill while best.pt is written: last.pt of epoch 1 is complete
    run_and_kill(data, run, resume=True, match="best.pt", nth=1, pause=60)
    s = assert_loadable(run)
    assert s["last_epoch"] == 0 and s["last_step"] == STEPS_PER_EPOCH

    # 3. resume continues at epoch 2; kill mid-epoch 3, 0.3 s after epoch 2's metrics row (on a very fast
    #    machine epoch 3 may already be saved by then; the invariants below hold either way)
    run_and_kill(data, run, resume=True, match="metrics.csv", nth=1, pause=0, after=0.3)
    s = assert_loadable(run)
    assert s["last_epoch"] in (1, 2) and s["metrics_epochs"][:2] == [1, 2]
    assert len(s["metrics_epochs"]) in (s["last_epoch"], s["last_epoch"] + 1)  # the log lags by at most one epoch
    done = s["last_epoch"]

    # 4. resume after it; kill while the next last.pt is being replaced: the old one must survive
    run_and_kill(data, run, resume=True, match="last.pt", nth=1, pause=60)
    s = assert_loadable(run)
    assert s["last_epoch"] == done and s["last_step"] == (done + 1) * STEPS_PER_EPOCH

    # 5. resume at epoch 3 again and finish
    finish(data, run)
    s = assert_loadable(run)
    assert s["last_epoch"] == EPOCHS - 1 and s["last_step"] == EPOCHS * STEPS_PER_EPOCH
    assert s["metrics_epochs"] == list(range(1, EPOCHS + 1))

    # the temp files the kills left are hidden, never read, and can be tidied away
    from ftuseg.io.atomic import remove_stale_temps

    assert remove_stale_temps(run, "last.pt") >= 1 and not list(run.glob(".last.pt.*.tmp"))

    # an uninterrupted run with the same seed ends at the same weights: no step was lost or repeated
    ref = tmp_path / "reference"
    finish(data, ref, resume=False)
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(ref / "last.pt")
    assert a["step"] == b["step"]
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=0, atol=0, msg=f"{k} differs after kill + resume")
