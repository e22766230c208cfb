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
    x, y = random_flips(x, y, gen)
    if x.shape[-1] != x.shape[-2]:
        return x, y
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    for r in (1, 2, 3):
        sel = k == r
        if sel.any():
            x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
            y[sel] = torch.rot90(y[sel], r, dims=(-2, -1))
    return x, y


def hed_jitter(x: torch.Tensor, gen: torch.Generator, sigma: float = 0.05, bias: float = 0.05) -> torch.Tensor:
    """Perturb stain concentrations in HED space (Tellez et al. 2018): ``c' = c * a + b`` per stain."""
    b = x.shape[0]
    rgb = (x / 255.0).clamp_min(1e-6)
    od = -torch.log(rgb).permute(0, 2, 3, 1)  # optical density (B, H, W, 3)
    hed = od @ _HED_FROM_RGB.to(x)
    alpha = 1.0 + (torch.rand(b, 1, 1, 3, generator=gen) * 2 - 1).to(x) * sigma
    beta = ((torch.rand(b, 1, 1, 3, generator=gen) * 2 - 1) * bias).to(x)
    od2 = (hed * alpha + beta) @ _RGB_FROM_HED.to(x)
    out = torch.exp(-od2.clamp_min(0)).permute(0, 3, 1, 2) * 255.0
    return out.clamp(0, 255)


def colour_jitter(
    x: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.15,
    contrast: float = 0.2,
    saturation: float = 0.2,
    gamma: float = 0.2,
) -> torch.Tensor:
    """Brightness, contrast, saturation and gamma, each drawn per sample."""
    b = x.shape[0]

    def draw(spread: float) -> torch.Tensor:
        return (1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * spread).to(x)

    x = x / 255.0
    x = x * draw(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * draw(contrast) + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * draw(saturation) + gray
    x = x.clamp(0, 1) ** draw(gamma)
    return (x * 255.0).clamp(0, 255)


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
