"""``prob``: probability x 255 as a pyramidal OME-TIFF (levels averaged, not max-reduced)."""

from __future__ import annotations

from pathlib import Path

from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.outputs.ome_tiff import write_ome_tiff


@register("prob")
def write(out: SlideOutput) -> Path:
    import zarr

    prob = zarr.open_array(store=str(out.slide_dir / "prob.zarr"), mode="r")
    return write_ome_tiff(prob, out.slide_dir / "prob.ome.tif", out.pixel_size,
                          name=f"{out.stem} probability x255", reduce="mean")
