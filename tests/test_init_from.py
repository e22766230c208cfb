"""Fine-tuning from a shipped model or a run folder: ``ftuseg train DATA --init-from NAME_OR_RUN_DIR``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftuseg.cli import main
from ftuseg.errors import FtusegError


@pytest.fixture(scope="session")
def source_zoo(tiny_tiled_run, tmp_path_factory) -> Path:
    from ftuseg.zoo import package_run

    root = tmp_path_factory.mktemp("zoo-init")
    package_run(tiny_tiled_run, "src-kidney", organs=["kidney"], out=root)
    return root


@pytest.fixture
def zoo(source_zoo, monkeypatch) -> Path:
    monkeypatch.setenv("FTUSEG_ZOO", str(source_zoo))
    return source_zoo


def test_config_keeps_the_sources_network_and_pixel_sizes_unless_overridden(zoo):
    from ftuseg.zoo.finetune import finetune_config

    cfg = finetune_config("src-kidney", lr=1e-4)
    assert cfg.init_from == "src-kidney" and cfg.preset == "tiled"
    assert (cfg.encoder, cfg.mode, cfg.tile_size, cfg.target_mpp, cfg.organs) == ("resnet18", "tiled", 64, 3.0,
                                                                                  ["kidney"])
    assert cfg.lr == 1e-4
    assert finetune_config("src-kidney", target_mpp=2.0, organs="kidney,lung").target_mpp == 2.0
    assert finetune_config("src-kidney", organs="kidney,lung").organs == ["kidney", "lung"]
    # a YAML file overrides what is inherited too, and flags override the YAML
    yaml_path = zoo / "ft.yaml"
    yaml_path.write_text("tile_size: 96\n")
    assert finetune_config("src-kidney", yaml_path=yaml_path).tile_size == 96
    assert finetune_config("src-kidney", yaml_path=yaml_path, tile_size=128).tile_size == 128


def test_another_architecture_is_one_clear_error(zoo, tiny_tiled_run):
    from ftuseg.config import load_config
    from ftuseg.zoo.finetune import finetune_config, init_model_from

    with pytest.raises(FtusegError) as err:
        finetune_config("src-kidney", encoder="resnet34")
    msg = str(err.value)
    assert "\n" not in msg and "unet/resnet18" in msg and "unet/resnet34" in msg and "must match" in msg
    from ftuseg.models.factory import build_model

    other = load_config(tiny_tiled_run / "config.yaml").replace(encoder="resnet34", init_from="src-kidney")
    with pytest.raises(FtusegError, match="architecture must match"):
        init_model_from(build_model(other, load_weights=False), other)
    with pytest.raises(FtusegError, match="neither a run folder nor a shipped model"):
        finetune_config("no-such-model")


@pytest.mark.parametrize("source", ["zoo", "run"])
def test_initial_weights_are_the_sources(zoo, tiny_tiled_run, source):
    """Step 0 of a fine-tuning run predicts exactly what the source predicts (encoder and decoder copied)."""
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.models.factory import build_model
    from ftuseg.zoo.finetune import finetune_config, init_model_from

    init = "src-kidney" if source == "zoo" else str(tiny_tiled_run)
    src_model, _ = load_run_model(zoo / "src-kidney" if source == "zoo" else tiny_tiled_run)
    cfg = finetune_config(init)
    model = build_model(cfg, load_weights=False).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        fresh = model(x)
        assert init_model_from(model, cfg) == len(src_model.state_dict())
        assert torch.equal(model(x), src_model(x))
        assert not torch.allclose(fresh, src_model(x))  # a random network would not have matched


def test_train_init_from_starts_at_the_source(zoo, synth_data, tmp_path, capsys):
    """The trainer copies the source before the first step: after one step at a negligible LR the weights are
    still the source's, while a run without --init-from is far from them."""
    from ftuseg.config import load_config
    from ftuseg.models.checkpoint import load_checkpoint, load_run_model

    src_model, _ = load_run_model(zoo / "src-kidney")
    src = {k: v.detach() for k, v in src_model.named_parameters()}
    # seed 1: the source was trained from seed 0's random network, which a seed-0 run would start from anyway
    common = ["--max-steps", "1", "--lr", "1e-12", "--epochs", "1", "--batch-size", "2", "--tiles-per-epoch", "2",
              "--infer-batch-size", "4", "--seed", "1", "-q"]
    assert main(["train", str(synth_data), "--init-from", "src-kidney", "--out", str(tmp_path / "ft"), *common]) == 0
    cfg = load_config(tmp_path / "ft" / "config.yaml")
    assert cfg.init_from == "src-kidney" and cfg.encoder == "resnet18" and cfg.organs == ["kidney"]
    tuned = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    worst = max(float((tuned[k] - v).abs().max()) for k, v in src.items())
    assert worst < 1e-6
    assert main(["train", str(synth_data), "--preset", "tiled", "--encoder", "resnet18", "--tile-size", "64",
                 "--organs", "kidney", "--out", str(tmp_path / "scratch"), *common]) == 0
    scratch = load_checkpoint(tmp_path / "scratch" / "last.pt")["model"]
    assert max(float((scratch[k] - v).abs().max()) for k, v in src.items()) > 1e-2
    # and a mismatching architecture stops before training, in one line
    assert main(["train", str(synth_data), "--init-from", "src-kidney", "--encoder", "resnet34", "--out",
                 str(tmp_path / "bad"), *common]) == 2
    err = capsys.readouterr().err
    assert "architecture must match" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "last.pt").exists()
