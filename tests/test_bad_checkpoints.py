"""Bad checkpoints and encoder weights through the CLI: one clear error naming the file and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from bad_inputs import (
    assert_one_error,
    run_cli,
    train_argv,
    truncate,
)


# ------------------------------------------------------------------------------------------- checkpoints
def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run_copy"))


def test_checkpoint_of_another_architecture(capsys, data, tmp_path, tiny_run):
    run = _copy_run(tiny_run, tmp_path)
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("arch: unet", "arch: fpn"))
    code, _, err = run_cli(capsys, "predict", run, data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(run / "best.pt"), "weights do not fit fpn/resnet18", "trained as unet/resnet18")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-ftuseg"])
def test_corrupt_checkpoint(capsys, data, tmp_path, tiny_run, damage):
    run = _copy_run(tiny_run, tmp_path)
    ckpt = run / "best.pt"
    if damage == "truncated":
        truncate(ckpt)
    elif damage == "garbage":
        ckpt.write_bytes(b"this is not a checkpoint" * 10)
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        torch.save({"weights": [1, 2, 3]}, ckpt)
    code, _, err = run_cli(capsys, "predict", run, data, "--out", tmp_path / "s.csv", "-q")
    line = assert_one_error(code, err, str(ckpt))
    assert "corrupt or unreadable checkpoint" in line or "not an ftuseg checkpoint" in line


def test_corrupt_checkpoint_on_resume(capsys, data, tmp_path, tiny_run):
    run = _copy_run(tiny_run, tmp_path)
    truncate(run / "last.pt")
    code, _, err = run_cli(capsys, *train_argv(data, run, "--resume"))
    assert_one_error(code, err, str(run / "last.pt"), "corrupt or unreadable checkpoint")


def test_encoder_weights_missing(capsys, data, tmp_path):
    missing = tmp_path / "no-such-weights.pth"
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", missing))
    assert_one_error(code, err, str(missing), "file not found")


def test_encoder_weights_of_another_architecture(capsys, data, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), weights)
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", weights))
    assert_one_error(code, err, str(weights), "no tensor matches encoder")


def test_encoder_weights_of_another_backbone_of_the_same_family(capsys, data, tmp_path, tiny_run):
    """Same tensor names, other shapes (e.g. a ResNet-50 file for a ResNet-18): refuse, do not half-load."""
    state = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)["model"]
    enc = {k[len("net.encoder."):]: v for k, v in state.items() if k.startswith("net.encoder.")}
    enc["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    weights = tmp_path / "resnet-other.pth"
    torch.save(enc, weights)
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", weights))
    assert_one_error(code, err, str(weights), "another backbone", "layer1.0.conv1.weight 64x64x1x1 vs 64x64x3x3")


def test_encoder_weights_from_an_ftuseg_run_are_accepted(tiny_run):
    """A whole ftuseg checkpoint is a fine encoder initialisation: its decoder is simply ignored."""
    from ftuseg.models.factory import build_model
    from tests.conftest import tiny_config

    model = build_model(tiny_config(encoder_weights=str(tiny_run / "best.pt")))
    state = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)["model"]
    torch.testing.assert_close(model.encoder.conv1.weight, state["net.encoder.conv1.weight"])
