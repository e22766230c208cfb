"""A two-resolution U-Net (HookNet-style): detail at the tile's µm/px, context from a window around it.

The input is 6 channels: the tile's RGB at the detail resolution, then the RGB of a window ``factor`` times
wider, centred on the tile and resampled to the same pixel size (so at ``factor`` times the µm/px). A second
encoder reads the context window; at its two deepest levels (strides 16 and 32, receptive fields that reach
well beyond the tile) the centre ``1/factor`` of its feature map, which lies over the tile, is resized onto
the detail encoder's map of the same level and added through a 1x1 convolution. The decoder and skips are
the detail U-Net's own. The fusing convolutions start at zero, so the network starts as the plain detail
U-Net and learns how much of the surroundings to use.

Why: a glomerulus is ~200 µm. At 4 µm/px it is ~50 px and a one-pixel boundary error costs Dice; at 2 µm/px
a 256 px tile spans 0.5 mm, too little to tell a glomerulus from look-alikes near the capsule. The context
branch gives the 2 µm/px tile the view of a 2 mm window at 8 µm/px for one more encoder pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FUSED_LEVELS = (-2, -1)  # the encoder's two deepest feature maps (strides 16 and 32)


def centre_crop(feat: torch.Tensor, factor: int) -> torch.Tensor:
    """The central ``1/factor`` of a feature map (at least one cell): the part lying over the detail tile."""
    h, w = feat.shape[-2], feat.shape[-1]
    ch, cw = max(1, h // factor), max(1, w // factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    return feat[..., top : top + ch, left : left + cw]


class ContextUnet(nn.Module):
    """An smp U-Net whose deepest encoder levels also receive a context encoder's centre features."""

    def __init__(self, net: nn.Module, context_encoder: nn.Module, factor: int):
        super().__init__()
        self.net = net
        self.context_encoder = context_encoder
        self.factor = int(factor)
        det = net.encoder.out_channels
        ctx = context_encoder.out_channels
        self.fuse = nn.ModuleList(nn.Conv2d(ctx[i], det[i], kernel_size=1) for i in FUSED_LEVELS)
        for conv in self.fuse:  # start as the plain detail U-Net
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = list(self.net.encoder(x[:, :3]))
        context = self.context_encoder(x[:, 3:])
        for conv, level in zip(self.fuse, FUSED_LEVELS, strict=True):
            centre = centre_crop(context[level], self.factor)
            centre = F.interpolate(centre, size=features[level].shape[-2:], mode="bilinear", align_corners=False)
            features[level] = features[level] + conv(centre)
        return self.net.segmentation_head(self.net.decoder(features))
