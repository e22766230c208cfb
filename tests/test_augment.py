"""The batched augmentations compute what their plain per-step formulas say, keep masks aligned with images, and
leave their inputs alone. The references below are the straightforward forms (one tensor op per formula term) the
fused ones replaced."""

from __future__ import annotations

import pytest
import torch

from ftuseg.training.augment import (
    _HED_FROM_RGB,
    _RGB_FROM_HED,
    augment_batch,
    colour_jitter,
    hed_jitter,
    random_d4,
    random_flips,
)


def reference_d4(x, y, gen):
    x, y = random_flips(x, y, gen)  # masked flips per sample, then masked rotations
    if x.shape[-1] != x.shape[-2]:
        return x, y
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    for r in (1, 2, 3):
        sel = k == r
        x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        y[sel] = torch.rot90(y[sel], r, dims=(-2, -1))
    return x, y


def reference_hed(x, gen, sigma=0.05, bias=0.05):
    b = x.shape[0]
    od = -torch.log((x / 255.0).clamp_min(1e-6)).permute(0, 2, 3, 1)
    hed = od @ _HED_FROM_RGB
    alpha = 1.0 + (torch.rand(b, 1, 1, 3, generator=gen) * 2 - 1) * sigma
    beta = (torch.rand(b, 1, 1, 3, generator=gen) * 2 - 1) * bias
    od2 = (hed * alpha + beta) @ _RGB_FROM_HED
    return (torch.exp(-od2.clamp_min(0)).permute(0, 3, 1, 2) * 255.0).clamp(0, 255)


def reference_colour(x, gen, brightness=0.15, contrast=0.2, saturation=0.2, gamma=0.2):
    b = x.shape[0]

    def draw(spread):
        return 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * spread

    x = x / 255.0 * draw(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * draw(contrast) + mean
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - gray) * draw(saturation) + gray
    return ((x.clamp(0, 1) ** draw(gamma)) * 255.0).clamp(0, 255)


def batch(shape=(8, 3, 32, 32), mask_channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 255
    y = (torch.rand((shape[0], mask_channels, *shape[2:]), generator=g) < 0.3).float()
    return x, y


@pytest.mark.parametrize("shape", [(16, 3, 24, 24), (8, 3, 20, 28)])
@pytest.mark.parametrize("mask_channels", [1, 2])
def test_d4_is_the_flips_then_rotation_it_draws(shape, mask_channels):
    x, y = batch(shape, mask_channels)
    got = random_d4(x, y, torch.Generator().manual_seed(3))
    want = reference_d4(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # all 8 symmetries occur over enough draws, and each output is one of them
    x1 = torch.arange(16.0).reshape(1, 1, 4, 4).expand(64, 3, 4, 4).contiguous()
    out, _ = random_d4(x1, x1[:, :1].clone(), torch.Generator().manual_seed(0))
    seen = {tuple(o[0].flatten().tolist()) for o in out}
    base = x1[0, 0]
    d4 = {tuple(torch.rot90(f, r).flatten().tolist()) for f in (base, base.flip(-1)) for r in range(4)}
    assert seen == d4


def test_geometry_keeps_mask_on_image():
    x, _ = batch((8, 3, 40, 40))
    y = (x[:, :1] > 128).float()
    out = augment_batch(x, y, "full", torch.Generator().manual_seed(1))
    xg, yg = random_d4(x, y, torch.Generator().manual_seed(1))
    assert torch.equal(out[1], yg) and torch.equal(yg, (xg[:, :1] > 128).float())


def test_hed_jitter_matches_the_stain_formula():
    x, _ = batch()
    got = hed_jitter(x, torch.Generator().manual_seed(5))
    want = reference_hed(x, torch.Generator().manual_seed(5))
    assert got.shape == x.shape
    assert torch.allclose(got, want, atol=2e-3, rtol=1e-4)
    # no jitter: optical density there and back is the identity (pixels above the 1e-6 floor)
    x = x.clamp_min(1.0)
    assert torch.allclose(hed_jitter(x, torch.Generator(), sigma=0, bias=0), x, atol=2e-3)


def test_colour_jitter_matches_its_formula():
    x, _ = batch()
    got = colour_jitter(x, torch.Generator().manual_seed(7))
    want = reference_colour(x, torch.Generator().manual_seed(7))
    assert torch.allclose(got, want, atol=2e-3, rtol=1e-4)
    assert torch.allclose(colour_jitter(x, torch.Generator(), 0, 0, 0, 0), x, atol=1e-3)
    # grey stays grey under any saturation
    grey = torch.full((4, 3, 8, 8), 100.0)
    out = colour_jitter(grey, torch.Generator().manual_seed(2), saturation=0.9)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-3) and torch.allclose(out[:, 1], out[:, 2], atol=1e-3)


def test_full_augmentation_leaves_its_inputs_alone():
    x, y = batch()
    x0, y0 = x.clone(), y.clone()
    out = augment_batch(x, y, "full", torch.Generator().manual_seed(0))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert out[0].shape == x.shape and out[0].min() >= 0 and out[0].max() <= 255 and not torch.equal(out[0], x)
