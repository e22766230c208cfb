"""``png``: the mask as a 0/255 PNG (images small enough for one PNG)."""

from __future__ import annotations

from pathlib import Path

from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.outputs.overlay import write_png_mask


@register("png")
def write(out: SlideOutput) -> Path:
    return write_png_mask(out.slide_dir / "mask.png", out.mask)
