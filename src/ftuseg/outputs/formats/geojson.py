"""``geojson``: QuPath FeatureCollection of the objects, in full-resolution pixel coordinates."""

from __future__ import annotations

from pathlib import Path

from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.outputs.geojson import write_geojson


@register("geojson", traces_polygons=True)
def write(out: SlideOutput) -> Path:
    path = out.slide_dir / f"{out.stem}.geojson"
    write_geojson(path, out.polygons, out.organ, out.pixel_size, image_name=out.stem)
    return path
