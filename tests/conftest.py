"""Shared fixtures: a small synthetic data set, the real ftu-bench (skipped when absent), tiny runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# ONNX exports of shipped models and the measured engine choice go to the user cache: keep tests out of it
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ftuseg-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
FTU_BENCH = Path(os.environ.get("FTU_BENCH", REPO.parent / "shared" / "data" / "ftu-bench"))


@pytest.fixture(scope="session")
def ftu_bench() -> Path:
    """The real annotated data beside the project; tests using it skip cleanly when it is absent."""
    if not (FTU_BENCH / "train.csv").exists():
        pytest.skip(f"ftu-bench not found at {FTU_BENCH}")
    return FTU_BENCH


@pytest.fixture
def data(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic data set, free to corrupt or extend."""
    return Path(shutil.copytree(synth_data, tmp_path / "data"))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small deterministic synthetic data set in the Kaggle layout (train/test, meta.csv)."""
    from ftuseg.synth import SynthSpec, make_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(out, SynthSpec(n_train=12, n_test=4, min_size=96, max_size=160, seed=1))


def tiny_config(**overrides):
    """A fast configuration for tests: ResNet18 U-Net on 64 px inputs."""
    from ftuseg.config import make_config

    base = dict(encoder="resnet18", image_size=64, tile_size=64, batch_size=4, epochs=1, lr=1e-3,
                tiles_per_epoch=8, infer_batch_size=4)
    base.update(overrides)
    preset = base.pop("preset", "seed-512")
    return make_config(preset, **base)


@pytest.fixture(scope="session")
def tiny_run(synth_data, tmp_path_factory) -> Path:
    """A run folder trained for a couple of steps (whole-image mode): a valid model to predict with."""
    from ftuseg.training.trainer import train

    run = tmp_path_factory.mktemp("run") / "seed"
    train(tiny_config(), synth_data, run, progress=False, max_steps=2)
    return run


@pytest.fixture(scope="session")
def tiny_tiled_run(synth_data, tmp_path_factory) -> Path:
    """A run folder in tiled mode (physical resolution), trained for a couple of steps."""
    from ftuseg.training.trainer import train

    run = tmp_path_factory.mktemp("run") / "tiled"
    train(tiny_config(preset="tiled", target_mpp=1.0), synth_data, run, progress=False, max_steps=2)
    return run
