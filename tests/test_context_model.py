"""The two-resolution (detail + context) U-Net: the network, its training samples, its sliding window,
its pretrained encoders, ONNX, and a run trained and predicted end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from ftuseg.errors import FtusegError


def context_config(**overrides):
    return tiny_config(**{"preset": "tiled", "target_mpp": 1.0, "context_factor": 2, **overrides})


def test_context_factor_is_validated():
    with pytest.raises(FtusegError, match="context_factor must be 1"):
        context_config(context_factor=3)
    with pytest.raises(FtusegError, match="needs mode tiled and arch unet"):
        tiny_config(context_factor=2)  # the seed preset predicts whole images
    with pytest.raises(FtusegError, match="needs mode tiled and arch unet"):
        context_config(arch="fpn")
    assert context_config().in_channels == 6 and tiny_config().in_channels == 3


def test_network_starts_as_the_detail_unet_and_learns_to_read_the_surroundings():
    from ftuseg.models.factory import build_model

    torch.manual_seed(0)
    model = build_model(context_config(), load_weights=False).eval()
    assert model.in_channels == 6 and len(model.encoders) == 2
    x = torch.rand(2, 6, 64, 64) * 255
    other = x.clone()
    other[:, 3:] = torch.rand(2, 3, 64, 64) * 255  # the same tiles, other surroundings
    with torch.inference_mode():
        detail_only = model.net.net((x[:, :3] - model.mean[:, :3]) / model.std[:, :3])
        assert torch.allclose(model(x), detail_only, atol=1e-5)  # zero-initialised fusion: context unused
        assert torch.allclose(model(x), model(other), atol=1e-5)
        for conv in model.net.fuse:  # as training would move them
            torch.nn.init.normal_(conv.weight, std=0.1)
        assert (model(x) - model(other)).abs().max() > 1e-3  # now the surroundings change the prediction


def test_centre_crop_lies_over_the_tile():
    from ftuseg.models.context import centre_crop

    feat = torch.arange(64.0).view(1, 1, 8, 8)
    assert centre_crop(feat, 4).flatten().tolist() == [27.0, 28.0, 35.0, 36.0]  # rows/cols 3-4 of 8
    assert centre_crop(feat, 2).shape[-2:] == (4, 4)
    assert centre_crop(feat[..., :2, :2], 4).shape[-2:] == (1, 1)  # at least one cell


def test_training_sample_carries_the_concentric_wider_window(synth_data):
    from ftuseg.io.dataset import load_table
    from ftuseg.training.datasets import TileDataset

    cfg = context_config(scale_jitter=0.0, tile_size=64)
    table = load_table(synth_data, split="train", need_rle=True, need_images=True)
    ds = TileDataset(table, cfg, length=4, seed=3)
    x, y = ds[0]
    assert x.shape == (6, 64, 64) and y.shape == (1, 64, 64)
    tile, ctx = x[:3].numpy(), x[3:].numpy()
    # the context window is twice as wide at half the resolution: its centre half, enlarged, is the tile
    centre = ctx[:, 16:48, 16:48]
    enlarged = torch.nn.functional.interpolate(torch.from_numpy(centre)[None], size=(64, 64), mode="bilinear")[0]
    agree = np.abs(enlarged.numpy() - tile).mean()
    shifted = np.abs(torch.nn.functional.interpolate(torch.from_numpy(ctx[:, 0:32, 0:32])[None], size=(64, 64),
                                                     mode="bilinear")[0].numpy() - tile).mean()
    assert agree < 12 and agree < shifted / 2


def test_augmentation_changes_tile_and_context_alike():
    from ftuseg.training.augment import augment_batch

    gen = torch.Generator().manual_seed(0)
    img = torch.rand(4, 3, 32, 32) * 255
    x = torch.cat([img, img], dim=1)  # context identical to the tile: must stay identical
    y = (torch.rand(4, 1, 32, 32) > 0.5).float()
    xa, ya = augment_batch(x, y, "full", gen)
    assert xa.shape == x.shape and not torch.allclose(xa, x)
    assert torch.allclose(xa[:, :3], xa[:, 3:], atol=1e-4)


def test_sliding_window_cuts_the_context_window_centred_on_each_tile():
    from ftuseg.inference.resample import resize_image
    from ftuseg.inference.sliding_window import blended_windows

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:150, 0:190]
    image = np.stack([yy, xx, rng.integers(0, 50, yy.shape)], -1).astype(np.uint8)  # rows, cols, noise
    context = resize_image(image, (75, 95))
    seen = []

    def tile_fn(tiles: np.ndarray) -> np.ndarray:
        assert tiles.shape[1:] == (64, 64, 6)
        seen.append(tiles)
        return np.zeros(tiles.shape[:3], np.float32)

    blended_windows(tile_fn, image, 64, overlap=0.5, batch_size=3, margin=0, context=context)
    tiles = np.concatenate(seen)
    for t in tiles:
        # the context window's centre (row, col values) is the tile's centre seen at half the resolution
        tile_centre = t[31:33, 31:33, :2].astype(float).mean(axis=(0, 1))
        ctx_centre = t[31:33, 31:33, 3:5].astype(float).mean(axis=(0, 1))
        assert np.abs(tile_centre - ctx_centre).max() <= 2.5
        # and it spans twice the distance: 32 context px cover 64 tile px (where the window stays inside)
        span = float(t[40, 31, 3]) - float(t[24, 31, 3])
        if 20 < t[31, 31, 0] < 130:
            assert abs(span - 32) <= 3


@pytest.mark.slow
def test_pretrained_weights_fill_both_encoders():
    from ftuseg.models import pretrained as P

    pytest.importorskip(P.PRETRAINED["imagenet-lite0"].package, reason="ftuseg[pretrained] not installed")
    from ftuseg.models.factory import build_model

    cfg = context_config(encoder="tu-tf_efficientnet_lite0", encoder_weights="imagenet-lite0")
    model = build_model(cfg)
    detail, ctx = (e.state_dict() for e in model.encoders)
    assert detail.keys() == ctx.keys()
    assert all(torch.equal(detail[k], ctx[k]) for k in detail)
    plain = build_model(cfg, load_weights=False)
    some = next(k for k in detail if k.endswith("weight") and detail[k].ndim == 4)
    assert not torch.equal(plain.encoders[1].state_dict()[some], ctx[some])  # loaded, not initialised


@pytest.mark.slow
def test_context_run_trains_exports_and_predicts(synth_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from ftuseg.export import export_run
    from ftuseg.inference.predictor import Predictor
    from ftuseg.io.dataset import load_table, read_row_image
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import train

    run = tmp_path / "ctx"
    train(context_config(), synth_data, run, progress=False, max_steps=2)
    model, cfg = load_run_model(run)
    assert cfg.context_factor == 2 and model.in_channels == 6
    result = export_run(run)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3  # 6 channels, two sizes
    row = load_table(synth_data, split="train", need_rle=True, need_images=True).iloc[0]
    img = read_row_image(row)
    probs = {}
    for engine in ("torch", "onnxruntime"):
        pred = Predictor.from_runs([run], device="cpu", engine=engine)
        probs[engine] = pred.predict_proba(img, float(row["pixel_size"]), row["organ"])
        assert probs[engine].shape == img.shape[:2]
    assert np.abs(probs["torch"] - probs["onnxruntime"]).max() < 1e-3
