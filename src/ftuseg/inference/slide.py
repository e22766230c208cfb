"""Whole-slide prediction in bounded memory, region by region, into a zarr store on disk.

A slide is cut into square regions of ``region_size`` level-0 pixels. Each region goes through the one
prediction core (:class:`~ftuseg.inference.region.RegionPredictor`: a halo of one network tile, blended
sliding windows, the organ's thresholds) and only its core is kept, so neighbouring regions meet
without seams. Tiles with no tissue on a low-resolution tissue mask are not run through the network.
Masks (and on request probabilities) go into zarr stores whose chunks never straddle a region, so
separate processes may write separate regions (:mod:`~ftuseg.inference.slide_store`);
:func:`~ftuseg.inference.finalize.finalize_slide` then writes the outputs chunk by chunk. Memory
depends on ``region_size``, never on the slide size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.inference.finalize import finalize_slide
from ftuseg.inference.region import RegionPredictor
from ftuseg.inference.slide_store import (
    SlideResult,
    load_result,
    prepare_slide_dir,
    region_marker,
    regions_for,
    release_memory,
    resolve_pixel_size,
    slide_dir,
    slide_outputs_complete,
    tile_counts,
)
from ftuseg.io.atomic import atomic_write
from ftuseg.io.readers import SlideReader, open_slide

if TYPE_CHECKING:
    from ftuseg.inference.predictor import Predictor

__all__ = ["FORMATS", "SlideOptions", "SlideResult", "finalize_slide", "load_result", "plan_regions",
           "predict_many", "predict_slide", "results_row", "slide_dir", "slide_outputs_complete"]


def _format_names() -> tuple[str, ...]:
    from ftuseg.outputs.formats import output_formats

    return tuple(output_formats())


FORMATS = _format_names()


@dataclass
class SlideOptions:
    formats: tuple[str, ...] = ("geojson", "ome-tiff", "overlay")  # any of FORMATS
    pixel_size: float | None = None  # overrides metadata; None -> metadata or clear error
    region_size: int = 4096  # source pixels per streamed region (plus a halo)
    tissue_detection: bool = True
    quiet: bool = False
    organ: str | None = None  # selects per-organ resolution/thresholds and the FTU class name
    overlay_size: int = 2048  # longest side of the overlay PNG

    def __post_init__(self) -> None:
        if isinstance(self.formats, str):
            self.formats = tuple(f.strip() for f in self.formats.split(",") if f.strip())
        self.formats = tuple(dict.fromkeys(self.formats))
        known = _format_names()  # asked each time: a format registered later is accepted too
        unknown = [f for f in self.formats if f not in known]
        if unknown:
            raise FtusegError(f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        if not 256 <= int(self.region_size) <= 16384:
            raise FtusegError(f"region size must be between 256 and 16384 pixels, got {self.region_size}")
        if self.pixel_size is not None and not (self.pixel_size > 0 and math.isfinite(self.pixel_size)):
            raise FtusegError(f"pixel size must be a positive number of µm per pixel, got {self.pixel_size}")


def plan_regions(image_path: str | os.PathLike, options: SlideOptions | None = None) -> list[tuple[int, int, int, int]]:
    """Level-0 boxes (x, y, w, h) that tile the slide; aligned with the zarr chunks."""
    options = options if options is not None else SlideOptions()
    with open_slide(image_path) as reader:
        return regions_for(reader.width, reader.height, options.region_size)


def predict_slide(
    predictor: Predictor,
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: SlideOptions | None = None,
    regions: list[tuple[int, int, int, int]] | None = None,
) -> SlideResult:
    """Predict one image into ``out_dir/<stem>/``.

    ``regions=None``: every region that is not done yet, then ``finalize_slide`` (complete outputs
    are reused as they are). With ``regions``: only those boxes (from ``plan_regions``), no outputs;
    several processes may do disjoint sets and one then calls ``finalize_slide``.
    """
    options = options if options is not None else SlideOptions()
    t0 = time.perf_counter()
    image_path = Path(image_path)
    if regions is None and slide_outputs_complete(image_path, out_dir, options):
        return load_result(image_path, out_dir, resumed=True)
    with open_slide(image_path) as reader:
        pixel_size = resolve_pixel_size(reader, options.pixel_size)
        sd, plan = prepare_slide_dir(image_path, Path(out_dir), reader, options, pixel_size)
        all_regions = regions_for(reader.width, reader.height, options.region_size)
        todo = all_regions if regions is None else [tuple(int(v) for v in r) for r in regions]
        valid = set(all_regions)
        for r in todo:
            if r not in valid:
                raise FtusegError(f"{image_path}: region {r} is not one of plan_regions() for this slide")
        pending = [r for r in todo if not region_marker(sd, r).exists()]
        if pending:
            _predict_regions(predictor, reader, sd, plan, options, pending, pixel_size, len(all_regions))
    if regions is None:
        return finalize_slide(image_path, out_dir, options, started=t0)
    tiles_total, tiles_skipped = tile_counts(sd, todo)
    return SlideResult(str(image_path), str(sd), plan["height"], plan["width"], pixel_size, 0, tiles_total,
                       tiles_skipped, {}, time.perf_counter() - t0, options.organ)


def _predict_regions(predictor: Predictor, reader: SlideReader, sd: Path, plan: dict[str, Any],
                     options: SlideOptions, pending: list[tuple[int, int, int, int]], pixel_size: float,
                     n_regions: int) -> None:
    import zarr
    from tqdm.auto import tqdm

    tissue = None
    if options.tissue_detection:
        from ftuseg.io.tissue import tissue_map

        tissue = tissue_map(reader, pixel_size=pixel_size)
    core = RegionPredictor(predictor, reader, pixel_size, options.organ, tissue, n_regions)
    mask_z = zarr.open_array(store=str(sd / "mask.zarr"), mode="r+")
    prob_z = zarr.open_array(store=str(sd / "prob.zarr"), mode="r+") if plan["prob"] else None
    bar = tqdm(pending, desc=sd.name, unit="region", disable=options.quiet or len(pending) < 2, leave=False)
    for box in bar:
        x, y, w, h = box
        mask, prob, total, skipped = core.predict(box)
        if mask is not None:
            mask_z[y : y + h, x : x + w] = mask
            if prob_z is not None:
                prob_z[y : y + h, x : x + w] = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        # The marker comes after the data: a region killed half-way is simply predicted again.
        with atomic_write(region_marker(sd, box)) as fh:
            json.dump({"box": list(box), "tiles_total": total, "tiles_skipped": skipped}, fh)
        del mask, prob
        release_memory()


# ------------------------------------------------------------------------------------------------
def results_row(item: Any, image_path: str, result: SlideResult | None) -> dict[str, Any]:
    """One row of ``predictions.csv`` (local and Ray runs alike): objects, areas, tiles skipped, and Dice
    when the input had ground truth and the mask is small enough to compare in memory."""
    row: dict[str, Any] = {"id": getattr(item, "id", Path(image_path).name), "image_path": str(image_path),
                           "organ": getattr(item, "organ", None)}
    if result is None:
        return row
    row.update(pixel_size=result.pixel_size, height=result.height, width=result.width,
               n_objects=result.n_objects, area_um2=result.areas.get("total_um2", 0.0),
               mean_object_um2=result.areas.get("mean_um2", 0.0), tiles_total=result.tiles_total,
               tiles_skipped=result.tiles_skipped, skipped_fraction=round(result.skipped_fraction, 6),
               slide_dir=Path(result.out_dir).name)
    rle = getattr(item, "rle", None)
    if rle is not None:
        dice = _dice(result, rle, getattr(item, "id", image_path))
        if dice is not None:
            row["dice"] = dice
    return row


def _dice(result: SlideResult, rle: str, image_id: object) -> float | None:
    import zarr

    from ftuseg.metrics import dice_score
    from ftuseg.outputs.overlay import PNG_MAX_PIXELS
    from ftuseg.rle import decode_rle

    if result.height * result.width > PNG_MAX_PIXELS:
        return None
    pred = np.asarray(zarr.open_array(store=str(Path(result.out_dir) / "mask.zarr"), mode="r")[:, :])
    try:
        truth = decode_rle(rle, (result.height, result.width))
    except FtusegError as exc:
        raise FtusegError(f"id {image_id}: ground truth {exc}") from None
    return dice_score(pred, truth)


def write_results(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> Any:
    """``out_dir/predictions.csv`` from result rows (atomically); returns the DataFrame."""
    import pandas as pd

    df = pd.DataFrame(rows)
    with atomic_write(Path(out_dir) / "predictions.csv") as fh:
        df.to_csv(fh, index=False)
    return df


def predict_many(
    predictor: Predictor,
    items: list[Any],
    out_dir: str | os.PathLike,
    options: SlideOptions | None = None,
    progress: bool = True,
) -> Any:
    """Predict every input (``ftuseg.inference.inputs.PredictInput``) into ``out_dir``; resumable.

    Images whose outputs are complete are skipped, half-done slides continue from their last region.
    Writes ``out_dir/predictions.csv`` (one row per image: objects, areas, tiles skipped, Dice when
    the input had ground truth) and returns it as a DataFrame.
    """
    from tqdm.auto import tqdm

    options = options if options is not None else SlideOptions()
    rows = []
    for it in tqdm(items, desc="predict", unit="img", disable=not progress):
        res = predict_slide(predictor, it.image_path, out_dir, options_for(options, it))
        rows.append(results_row(it, str(it.image_path), res))
    return write_results(rows, out_dir)


def options_for(options: SlideOptions, item: Any) -> SlideOptions:
    """The options of one input: a PredictInput brings its own pixel size and organ; a path keeps them."""
    if hasattr(item, "image_path"):
        return dataclasses.replace(options, pixel_size=item.pixel_size, organ=item.organ)
    return options
