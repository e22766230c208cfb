"""From finished region stores to the outputs people open: objects traced region by region, every
requested format written by its registered writer (``ftuseg.outputs.formats``), ``result.json`` last."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.inference.slide_store import (
    SlideResult,
    image_fingerprint,
    read_json,
    region_marker,
    regions_for,
    release_memory,
    slide_dir,
    tile_counts,
)
from ftuseg.io.atomic import atomic_write
from ftuseg.io.readers import slide_stem

if TYPE_CHECKING:
    from ftuseg.inference.slide import SlideOptions


def area_summary(areas_px: np.ndarray, pixel_size: float) -> dict[str, float]:
    if not len(areas_px):
        return {"total_um2": 0.0}
    um2 = areas_px * pixel_size * pixel_size
    return {"total_um2": float(um2.sum()), "mean_um2": float(um2.mean()), "median_um2": float(np.median(um2)),
            "min_um2": float(um2.min()), "max_um2": float(um2.max()), "total_px": float(areas_px.sum())}


def _traced_polygons(mask: Any, plan: dict[str, Any], regions: list[tuple[int, int, int, int]]) -> Iterator[Any]:
    """Objects region by region; only pieces cut by a region border wait to be joined at the end, so
    memory follows the border, not the number of objects on the slide."""
    from ftuseg.outputs.geojson import mask_to_polygons, merge_across_borders, sort_polygons

    r = plan["region_size"]
    cuts_x, cuts_y = set(range(r, plan["width"], r)), set(range(r, plan["height"], r))
    border = []
    for x, y, w, h in regions:
        pieces = mask_to_polygons(np.asarray(mask[y : y + h, x : x + w]), offset=(x, y))
        inner = []
        for p in pieces:
            x0, y0, x1, y1 = p.bounds
            cut = (x0 in cuts_x) or (x1 in cuts_x) or (y0 in cuts_y) or (y1 in cuts_y)
            (border if cut else inner).append(p)
        yield from sort_polygons(inner)
    yield from merge_across_borders(border, sorted(cuts_x), sorted(cuts_y))


def finalize_slide(image_path: str | os.PathLike, out_dir: str | os.PathLike,
                   options: SlideOptions | None = None, started: float | None = None) -> SlideResult:
    """Build the requested outputs from the stores once every region is written; writes result.json last."""
    import zarr

    from ftuseg.inference.slide import SlideOptions
    from ftuseg.outputs.formats import SlideOutput, output_formats

    options = options if options is not None else SlideOptions()
    t0 = started if started is not None else time.perf_counter()
    image_path = Path(image_path)
    sd = slide_dir(image_path, out_dir)
    plan = read_json(sd / "slide.json")
    if plan is None:
        raise FtusegError(f"{image_path}: nothing predicted yet in {sd} (run predict_slide first)")
    if "prob" in options.formats and not plan["prob"]:
        raise FtusegError(f"{image_path}: the prob format was not requested when the regions were predicted")
    regions = regions_for(plan["width"], plan["height"], plan["region_size"])
    missing = [r for r in regions if not region_marker(sd, r).exists()]
    if missing:
        raise FtusegError(f"{image_path}: {len(missing)} of {len(regions)} regions are not predicted yet "
                          f"(first at x={missing[0][0]}, y={missing[0][1]})")
    tiles_total, tiles_skipped = tile_counts(sd, regions)
    pixel_size = float(plan["pixel_size"])
    organ = plan.get("organ")
    mask = zarr.open_array(store=str(sd / "mask.zarr"), mode="r")
    areas_px: list[float] = []

    def counted() -> Iterator[Any]:
        for p in _traced_polygons(mask, plan, regions):
            areas_px.append(float(p.area))
            yield p

    polygons = counted()
    out = SlideOutput(image_path, sd, slide_stem(image_path), mask, pixel_size, organ, options.overlay_size, polygons)
    writers = output_formats()
    requested = [w for name, w in writers.items() if name in options.formats]
    outputs: dict[str, str] = {}
    for w in (w for w in requested if w.traces_polygons):
        outputs[w.name] = str(w.write(out))
    for _ in polygons:  # objects are counted even when no requested format traces them
        pass
    release_memory()
    for w in (w for w in requested if not w.traces_polygons):
        outputs[w.name] = str(w.write(out))

    result = SlideResult(str(image_path), str(sd), int(plan["height"]), int(plan["width"]), pixel_size,
                         len(areas_px), tiles_total, tiles_skipped, outputs, time.perf_counter() - t0, organ,
                         False, area_summary(np.array(areas_px, dtype=np.float64), pixel_size))
    record = asdict(result)
    record.update(formats=list(options.formats), **image_fingerprint(image_path))
    with atomic_write(sd / "result.json") as fh:
        json.dump(record, fh, indent=2)
    return result
