"""``ome-tiff``: tiled pyramidal OME-TIFF label mask with its physical pixel size."""

from __future__ import annotations

from pathlib import Path

from ftuseg.outputs import ftu_class
from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.outputs.ome_tiff import write_ome_tiff


@register("ome-tiff")
def write(out: SlideOutput) -> Path:
    path = out.slide_dir / "mask.ome.tif"
    return write_ome_tiff(out.mask, path, out.pixel_size, name=f"{out.stem} {ftu_class(out.organ)[0]} mask")
