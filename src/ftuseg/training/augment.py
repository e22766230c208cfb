"""Batched tensor augmentation (no per-sample Python loops over pixels).

Images are float tensors in [0, 255], shape (B, 3, H, W); masks (B, 1, H, W). Geometry is applied to
both, colour only to the image.
"""

from __future__ import annotations

import torch

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), as in scikit-image's rgb2hed.
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
_RGB_FROM_HED[2] = torch.linalg.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
# ITU-R BT.601 luma weights (sum to 1)
_GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)


def random_flips(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent horizontal and vertical flips per sample (the seed's only augmentation)."""
    b = x.shape[0]
    h = torch.rand(b, generator=gen) < 0.5
    v = torch.rand(b, generator=gen) < 0.5
    x, y = x.clone(), y.clone()
    x[h], y[h] = x[h].flip(-1), y[h].flip(-1)
    x[v], y[v] = x[v].flip(-2), y[v].flip(-2)
    return x, y


def random_d4(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips plus a random multiple of 90° rotation: all 8 symmetries of the square (tiles are square)."""
    b = x.shape[0]
    h = (torch.rand(b, generator=gen) < 0.5).tolist()
    v = (torch.rand(b, generator=gen) < 0.5).tolist()
    square = x.shape[-1] == x.shape[-2]
    k = torch.randint(0, 4, (b,), generator=gen).tolist() if square else [0] * b
    xo, yo = torch.empty_like(x), torch.empty_like(y)
    for i in range(b):
        # flips then rot90(k) as one flip and an optional transpose (rot90 is flip(-1)+T, flip(-2,-1), flip(-2)+T):
        # one copy per sample instead of a masked copy per flip and per rotation
        flip = {-1} if h[i] else set()
        flip ^= {-2} if v[i] else set()
        flip ^= ({-1}, {-1, -2}, {-2}, set())[k[i] - 1] if k[i] else set()
        for src, dst in ((x[i], xo[i]), (y[i], yo[i])):
            view = src.flip(sorted(flip)) if flip else src
            dst.copy_(view.transpose(-2, -1) if k[i] % 2 else view)
    return xo, yo


def hed_jitter(x: torch.Tensor, gen: torch.Generator, sigma: float = 0.05, bias: float = 0.05) -> torch.Tensor:
    """Perturb stain concentrations in HED space (Tellez et al. 2018): ``c' = c * a + b`` per stain.

    Optical density to HED, the per-stain scale and shift and back to RGB are linear, so they are one 3x3
    matrix and offset per sample: a single batched matmul over the pixels.
    """
    b = x.shape[0]
    alpha = 1.0 + (torch.rand(b, 3, generator=gen) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, generator=gen) * 2 - 1) * bias
    hed_from_rgb, rgb_from_hed = _HED_FROM_RGB.to(x), _RGB_FROM_HED.to(x)
    # row-vector form od2 = od @ (H diag(alpha) R) + beta @ R, applied to (B, 3, pixels) columns
    mix = (hed_from_rgb.unsqueeze(0) * alpha.to(x).unsqueeze(1)) @ rgb_from_hed
    shift = (beta.to(x) @ rgb_from_hed).unsqueeze(-1)
    od = x.reshape(b, 3, -1).div(255.0).clamp_min_(1e-6).log_().neg_()
    od2 = torch.baddbmm(shift, mix.transpose(1, 2), od)
    # exp(-od) of a non-negative density lies in (0, 1]: no clamp needed after scaling to 0-255
    return od2.clamp_min_(0).neg_().exp_().mul_(255.0).reshape(x.shape)


def colour_jitter(
    x: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.15,
    contrast: float = 0.2,
    saturation: float = 0.2,
    gamma: float = 0.2,
) -> torch.Tensor:
    """Brightness, contrast, saturation and gamma, each drawn per sample.

    Brightness, contrast about the image mean and saturation about the grey level are affine in RGB: one 3x3
    matrix and offset per sample, then the clamp and the gamma.
    """
    b = x.shape[0]

    def draw(spread: float) -> torch.Tensor:
        return 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * spread

    bri, con, sat, gam = (draw(s).to(x) for s in (brightness, contrast, saturation, gamma))
    flat = x.reshape(b, 3, -1)
    mean = flat.mean(dim=(1, 2)) / 255.0
    # saturation: out = sat * z + (1 - sat) * grey(z), grey weights summing to 1, so a constant stays constant
    eye, grey = torch.eye(3, dtype=x.dtype, device=x.device), _GREY.to(x).expand(3, 3)
    sat_mix = sat.view(b, 1, 1) * eye + (1 - sat).view(b, 1, 1) * grey
    mix = sat_mix * (con * bri / 255.0).view(b, 1, 1)
    shift = ((1 - con) * bri * mean).view(b, 1, 1)
    out = torch.baddbmm(shift, mix, flat).clamp_(0, 1)
    return out.pow_(gam.view(b, 1, 1)).mul_(255.0).reshape(x.shape)


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, kind: str, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the configured augmentation (``none``, ``flips`` or ``full``) to a batch."""
    if kind == "none":
        return x, y
    if kind == "flips":
        return random_flips(x, y, gen)
    x, y = random_d4(x, y, gen)
    x = hed_jitter(x, gen)
    x = colour_jitter(x, gen)
    return x, y
