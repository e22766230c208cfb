"""Whole-slide prediction in bounded memory, region by region, into a zarr store on disk.

A slide is cut into square regions of ``region_size`` level-0 pixels. Each region is read with a halo
of at least one network tile (at the network's resolution) on every side, predicted with blended
sliding windows, and only its core is kept, so neighbouring regions meet without seams. Tiles with
no tissue on a low-resolution tissue mask are not run through the network. Masks (and on request
probabilities) go into zarr stores whose chunks never straddle a region, so separate processes may
write separate regions; ``finalize_slide`` then builds the outputs (QuPath GeoJSON, pyramidal
OME-TIFF, overlay, ...) chunk by chunk. Memory depends on ``region_size``, never on the slide size.

Per-slide files live in ``out_dir/<image stem>/``::

    slide.json         geometry and options of the stores (written once)
    mask.zarr          uint8 0/1 mask at full resolution
    prob.zarr          uint8 probability x 255 (format "prob" only)
    regions/X_Y.json   one marker per finished region (resuming skips these)
    result.json        written last: the outputs are complete
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.inference.resample import resize_image, resize_prob, scale_factor, scaled_shape
from ftuseg.inference.sliding_window import blended_windows
from ftuseg.inference.tiling import TileGrid
from ftuseg.io.atomic import atomic_write
from ftuseg.io.readers import SlideReader, open_slide, slide_stem

if TYPE_CHECKING:
    from ftuseg.inference.predictor import Member, Predictor
    from ftuseg.io.tissue import TissueMap

FORMATS = ("rle", "png", "ome-tiff", "geojson", "prob", "overlay")
PLAN_VERSION = 1


@dataclass
class SlideOptions:
    formats: tuple[str, ...] = ("geojson", "ome-tiff", "overlay")  # also "png", "prob", "rle"
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
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise FtusegError(f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        if not 256 <= int(self.region_size) <= 16384:
            raise FtusegError(f"region size must be between 256 and 16384 pixels, got {self.region_size}")
        if self.pixel_size is not None and not (self.pixel_size > 0 and math.isfinite(self.pixel_size)):
            raise FtusegError(f"pixel size must be a positive number of µm per pixel, got {self.pixel_size}")


@dataclass
class SlideResult:
    image_path: str
    out_dir: str
    height: int
    width: int
    pixel_size: float
    n_objects: int
    tiles_total: int
    tiles_skipped: int
    outputs: dict[str, str]
    seconds: float
    organ: str | None = None
    resumed: bool = False  # outputs were already complete; nothing was recomputed
    areas: dict[str, float] = field(default_factory=dict)  # object area summary (µm²)

    @property
    def skipped_fraction(self) -> float:
        return self.tiles_skipped / self.tiles_total if self.tiles_total else 0.0


def slide_dir(image_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / slide_stem(image_path)


def chunk_for(region_size: int) -> int:
    """Zarr chunk edge: divides ``region_size`` so that regions own whole chunks."""
    chunk = int(region_size)
    while chunk > 2048 and chunk % 2 == 0:
        chunk //= 2
    return chunk


def resolve_pixel_size(reader: SlideReader, override: float | None) -> float:
    """The override, else the file's metadata; never a guess."""
    if override is not None:
        return float(override)
    if reader.mpp:
        return float(reader.mpp)
    raise FtusegError(
        f"{reader.path}: no pixel size in the image metadata (OME PhysicalSizeX, TIFF resolution, slide mpp); "
        "pass --pixel-size MICRONS_PER_PIXEL or a pixel_size column"
    )


def _regions_for(width: int, height: int, region_size: int) -> list[tuple[int, int, int, int]]:
    r = int(region_size)
    return [(x, y, min(r, width - x), min(r, height - y)) for y in range(0, height, r) for x in range(0, width, r)]


def plan_regions(image_path: str | os.PathLike,
                 options: SlideOptions = SlideOptions()) -> list[tuple[int, int, int, int]]:
    """Level-0 boxes (x, y, w, h) that tile the slide; aligned with the zarr chunks."""
    with open_slide(image_path) as reader:
        return _regions_for(reader.width, reader.height, options.region_size)


# ------------------------------------------------------------------------------------------------
# stores
def _image_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"image": str(path.resolve()), "image_bytes": st.st_size, "image_mtime_ns": st.st_mtime_ns}


def _desired_plan(image_path: Path, reader: SlideReader, options: SlideOptions, pixel_size: float) -> dict[str, Any]:
    return {
        "version": PLAN_VERSION,
        **_image_fingerprint(image_path),
        "width": reader.width,
        "height": reader.height,
        "pixel_size": pixel_size,
        "organ": options.organ,
        "region_size": int(options.region_size),
        "chunk": chunk_for(options.region_size),
        "prob": "prob" in options.formats,
        "tissue_detection": bool(options.tissue_detection),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _create_store(path: Path, shape: tuple[int, int], chunk: int) -> None:
    """Create an empty uint8 zarr array; built aside and renamed so concurrent creators cannot clash."""
    import zarr

    if path.exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        zarr.open_array(store=str(tmp), mode="w", shape=shape, chunks=(chunk, chunk), dtype="uint8", fill_value=0)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare(image_path: Path, out_dir: Path, reader: SlideReader, options: SlideOptions,
             pixel_size: float) -> tuple[Path, dict[str, Any]]:
    """Make (or reuse) the slide's folder and stores; stale ones from other settings are removed."""
    from ftuseg.outputs.overlay import PNG_MAX_PIXELS

    big = reader.width * reader.height > PNG_MAX_PIXELS
    for fmt in ("png", "rle"):
        if fmt in options.formats and big:
            raise FtusegError(f"{image_path}: {reader.width}x{reader.height} is too large for the {fmt} format; "
                              "use ome-tiff / geojson for whole slides")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FtusegError(f"{out_dir}: output folder does not exist")
    sd = slide_dir(image_path, out_dir)
    sd.mkdir(exist_ok=True)
    plan = _desired_plan(image_path, reader, options, pixel_size)
    existing = _read_json(sd / "slide.json")
    if existing is not None and existing != plan:
        # Another image, pixel size or region layout: its regions cannot be reused.
        for name in ("mask.zarr", "prob.zarr", "regions"):
            shutil.rmtree(sd / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (sd / "result.json").unlink()
        existing = None
    shape = (reader.height, reader.width)
    _create_store(sd / "mask.zarr", shape, plan["chunk"])
    if plan["prob"]:
        _create_store(sd / "prob.zarr", shape, plan["chunk"])
    (sd / "regions").mkdir(exist_ok=True)
    if existing is None:
        with atomic_write(sd / "slide.json") as fh:
            json.dump(plan, fh, indent=2)
    return sd, plan


def _marker(sd: Path, box: tuple[int, int, int, int]) -> Path:
    return sd / "regions" / f"{box[0]}_{box[1]}.json"


# ------------------------------------------------------------------------------------------------
# prediction of one region
def _halo(members: list[Member], pixel_size: float, organ: str | None) -> int:
    """Source pixels of context around a region: one network tile at each model's resolution."""
    halo = 0
    for m in members:
        if m.cfg.mode == "tiled":
            f = scale_factor(pixel_size, m.cfg.mpp_for(organ))
            halo = max(halo, math.ceil(m.cfg.tile_size / f))
    return halo


def _grid_size(h: int, w: int, tile: int, overlap: float) -> int:
    margin = tile // 4
    ph = h + 2 * margin + max(0, tile - (h + 2 * margin))
    pw = w + 2 * margin + max(0, tile - (w + 2 * margin))
    return len(TileGrid.from_overlap(ph, pw, tile, overlap))


def _windowed(member: Member, image: np.ndarray, keep_fn: Any) -> tuple[np.ndarray, int, int]:
    """Blended sliding windows that skip tiles ``keep_fn`` rejects; returns (prob, total, skipped)."""
    cfg = member.cfg
    return blended_windows(member.tile_fn, image, cfg.tile_size, cfg.overlap, cfg.infer_batch_size, cfg.blend,
                           keep_fn=keep_fn)


def _to_grid(prob_s: np.ndarray, box_hw: tuple[int, int], out_box: tuple[int, int, int, int]) -> np.ndarray:
    """Resample a prediction of a whole read box (at network scale) onto a sub-box of it at full resolution.

    Uses the same half-pixel mapping as ``cv2.resize`` so that the full box matches ``resize_prob``.
    """
    bh, bw = box_hw
    ox, oy, ow, oh = out_box
    if (ox, oy, ow, oh) == (0, 0, bw, bh) or prob_s.shape[0] > bh or prob_s.shape[1] > bw:
        full = resize_prob(prob_s, (bh, bw))
        return np.ascontiguousarray(full[oy : oy + oh, ox : ox + ow])
    fx, fy = prob_s.shape[1] / bw, prob_s.shape[0] / bh
    m = np.array([[fx, 0, (ox + 0.5) * fx - 0.5], [0, fy, (oy + 0.5) * fy - 0.5]], dtype=np.float64)
    return cv2.warpAffine(prob_s, m, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class _RegionWorker:
    """Predicts regions of one slide with one predictor."""

    def __init__(self, predictor: Predictor, reader: SlideReader, pixel_size: float, organ: str | None,
                 tissue: TissueMap | None, n_regions: int):
        self.predictor = predictor
        self.reader = reader
        self.p = pixel_size
        self.organ = organ
        self.tissue = tissue
        self.members = predictor.members_for(organ)  # organ specialists are routed here, once per slide
        self.halo = _halo(self.members, pixel_size, organ)
        from ftuseg.inference.postprocess import hole_area_pixels, min_area_pixels

        self.threshold, min_um2 = predictor.thresholds.for_organ(organ)
        self.min_area = min_area_pixels(min_um2, pixel_size)
        self.max_hole = hole_area_pixels(predictor.thresholds.holes_for(organ), pixel_size)
        if n_regions > 1:
            whole = [m for m in self.members if m.cfg.mode != "tiled"]
            if whole:
                raise FtusegError(
                    f"{reader.path}: a {reader.width}x{reader.height} image needs {n_regions} regions but the model "
                    f"predicts whole images (mode={whole[0].cfg.mode}); use a tiled run or a larger region size"
                )

    def read_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x, y, w, h = box
        x0, y0 = max(0, x - self.halo), max(0, y - self.halo)
        x1 = min(self.reader.width, x + w + self.halo)
        y1 = min(self.reader.height, y + h + self.halo)
        return x0, y0, x1 - x0, y1 - y0

    def _count_only(self, rb: tuple[int, int, int, int]) -> int:
        total = 0
        for m in self.members:
            if m.cfg.mode == "tiled":
                sh, sw = scaled_shape(rb[3], rb[2], scale_factor(self.p, m.cfg.mpp_for(self.organ)))
                total += _grid_size(sh, sw, m.cfg.tile_size, m.cfg.overlap)
            else:
                total += 1
        return total

    def predict(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray | None, np.ndarray | None, int, int]:
        """(mask, prob) of the region's core (None when it holds no tissue), tiles total, tiles skipped."""
        from ftuseg.inference.postprocess import binarize
        from ftuseg.inference.predictor import member_proba

        rb = self.read_box(box)
        rx, ry, rw, rh = rb
        if self.tissue is not None and not self.tissue.has_tissue(np.array([rb]))[0]:
            n = self._count_only(rb)
            return None, None, n, n
        img = self.reader.read_region(rx, ry, rw, rh)
        core = (box[0] - rx, box[1] - ry, box[2], box[3])
        out_box = (0, 0, rw, rh) if self.min_area > 0 else core
        acc = None
        total = skipped = 0
        for m in self.members:
            if m.cfg.mode == "tiled":
                f = scale_factor(self.p, m.cfg.mpp_for(self.organ))
                scaled = resize_image(img, scaled_shape(rh, rw, f))
                prob_s, t, s = _windowed(m, scaled, self._keep_fn(rb, scaled.shape[:2]))
                total, skipped = total + t, skipped + s
                prob = _to_grid(prob_s, (rh, rw), out_box)
            else:
                total += 1
                prob_full = member_proba(m, img, self.p, self.organ)
                ox, oy, ow, oh = out_box
                prob = np.ascontiguousarray(prob_full[oy : oy + oh, ox : ox + ow])
            acc = prob if acc is None else acc + prob
        prob = acc
        if len(self.members) > 1:
            prob /= len(self.members)
        if self.min_area > 0:
            # Small objects are judged with the halo, so an object cut by the region border keeps its size.
            mask = binarize(prob, self.threshold, self.min_area, self.max_hole)
            cx, cy, cw, ch = core
            mask, prob = mask[cy : cy + ch, cx : cx + cw], prob[cy : cy + ch, cx : cx + cw]
        else:
            mask = (prob > self.threshold).astype(np.uint8)
        return mask, prob, total, skipped

    def _keep_fn(self, rb: tuple[int, int, int, int], scaled_hw: tuple[int, int]) -> Any:
        if self.tissue is None:
            return None
        rx, ry, rw, rh = rb
        fy, fx = scaled_hw[0] / rh, scaled_hw[1] / rw
        tissue = self.tissue

        def keep(positions: list[tuple[int, int]], top: int, left: int, tile: int) -> np.ndarray:
            pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
            boxes = np.stack([rx + (pos[:, 1] - left) / fx, ry + (pos[:, 0] - top) / fy,
                              np.full(len(pos), tile / fx), np.full(len(pos), tile / fy)], axis=1)
            return tissue.has_tissue(boxes)

        return keep


# ------------------------------------------------------------------------------------------------
def predict_slide(
    predictor: Predictor,
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: SlideOptions = SlideOptions(),
    regions: list[tuple[int, int, int, int]] | None = None,
) -> SlideResult:
    """Predict one image into ``out_dir/<stem>/``.

    ``regions=None``: every region that is not done yet, then ``finalize_slide`` (complete outputs
    are reused as they are). With ``regions``: only those boxes (from ``plan_regions``), no outputs;
    several processes may do disjoint sets and one then calls ``finalize_slide``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    image_path = Path(image_path)
    if regions is None and slide_outputs_complete(image_path, out_dir, options):
        return load_result(image_path, out_dir, resumed=True)
    with open_slide(image_path) as reader:
        pixel_size = resolve_pixel_size(reader, options.pixel_size)
        sd, plan = _prepare(image_path, Path(out_dir), reader, options, pixel_size)
        all_regions = _regions_for(reader.width, reader.height, options.region_size)
        todo = all_regions if regions is None else [tuple(int(v) for v in r) for r in regions]
        valid = set(all_regions)
        for r in todo:
            if r not in valid:
                raise FtusegError(f"{image_path}: region {r} is not one of plan_regions() for this slide")
        pending = [r for r in todo if not _marker(sd, r).exists()]
        if pending:
            _predict_regions(predictor, reader, sd, plan, options, pending, pixel_size, len(all_regions), tqdm)
    if regions is None:
        return finalize_slide(image_path, out_dir, options, started=t0)
    tiles_total, tiles_skipped = _tile_counts(sd, todo)
    return SlideResult(str(image_path), str(sd), plan["height"], plan["width"], pixel_size, 0, tiles_total,
                       tiles_skipped, {}, time.perf_counter() - t0, options.organ)


def _predict_regions(predictor: Predictor, reader: SlideReader, sd: Path, plan: dict[str, Any],
                     options: SlideOptions, pending: list[tuple[int, int, int, int]], pixel_size: float,
                     n_regions: int, tqdm: Any) -> None:
    import zarr

    tissue = None
    if options.tissue_detection:
        from ftuseg.io.tissue import tissue_map

        tissue = tissue_map(reader, pixel_size=pixel_size)
    worker = _RegionWorker(predictor, reader, pixel_size, options.organ, tissue, n_regions)
    mask_z = zarr.open_array(store=str(sd / "mask.zarr"), mode="r+")
    prob_z = zarr.open_array(store=str(sd / "prob.zarr"), mode="r+") if plan["prob"] else None
    bar = tqdm(pending, desc=sd.name, unit="region", disable=options.quiet or len(pending) < 2, leave=False)
    for box in bar:
        x, y, w, h = box
        mask, prob, total, skipped = worker.predict(box)
        if mask is not None:
            mask_z[y : y + h, x : x + w] = mask
            if prob_z is not None:
                prob_z[y : y + h, x : x + w] = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
        # The marker comes after the data: a region killed half-way is simply predicted again.
        with atomic_write(_marker(sd, box)) as fh:
            json.dump({"box": list(box), "tiles_total": total, "tiles_skipped": skipped}, fh)
        del mask, prob
        _release_memory()


def _release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS stays flat region after region."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _tile_counts(sd: Path, regions: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    total = skipped = 0
    for r in regions:
        data = _read_json(_marker(sd, r)) or {}
        total += int(data.get("tiles_total", 0))
        skipped += int(data.get("tiles_skipped", 0))
    return total, skipped


def _area_summary(areas_px: np.ndarray, pixel_size: float) -> dict[str, float]:
    if not len(areas_px):
        return {"total_um2": 0.0}
    um2 = areas_px * pixel_size * pixel_size
    return {"total_um2": float(um2.sum()), "mean_um2": float(um2.mean()), "median_um2": float(np.median(um2)),
            "min_um2": float(um2.min()), "max_um2": float(um2.max()), "total_px": float(areas_px.sum())}


def finalize_slide(image_path: str | os.PathLike, out_dir: str | os.PathLike,
                   options: SlideOptions = SlideOptions(), started: float | None = None) -> SlideResult:
    """Build the requested outputs from the stores once every region is written; writes result.json last."""
    import zarr

    from ftuseg.outputs import ftu_class
    from ftuseg.outputs.geojson import mask_to_polygons, merge_across_borders, sort_polygons, write_geojson
    from ftuseg.outputs.ome_tiff import write_ome_tiff
    from ftuseg.outputs.overlay import write_overlay, write_png_mask

    t0 = started if started is not None else time.perf_counter()
    image_path = Path(image_path)
    sd = slide_dir(image_path, out_dir)
    plan = _read_json(sd / "slide.json")
    if plan is None:
        raise FtusegError(f"{image_path}: nothing predicted yet in {sd} (run predict_slide first)")
    if "prob" in options.formats and not plan["prob"]:
        raise FtusegError(f"{image_path}: the prob format was not requested when the regions were predicted")
    regions = _regions_for(plan["width"], plan["height"], plan["region_size"])
    missing = [r for r in regions if not _marker(sd, r).exists()]
    if missing:
        raise FtusegError(f"{image_path}: {len(missing)} of {len(regions)} regions are not predicted yet "
                          f"(first at x={missing[0][0]}, y={missing[0][1]})")
    tiles_total, tiles_skipped = _tile_counts(sd, regions)
    pixel_size = float(plan["pixel_size"])
    organ = plan.get("organ")
    stem = slide_stem(image_path)
    mask = zarr.open_array(store=str(sd / "mask.zarr"), mode="r")

    r = plan["region_size"]
    cuts_x, cuts_y = set(range(r, plan["width"], r)), set(range(r, plan["height"], r))
    areas_px: list[float] = []

    def polygons() -> Any:
        """Objects region by region; only pieces cut by a region border wait to be joined at the end, so
        memory follows the border, not the number of objects on the slide."""
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

    def counted(polys: Any) -> Any:
        for p in polys:
            areas_px.append(float(p.area))
            yield p

    outputs: dict[str, str] = {}
    fmts = options.formats
    if "geojson" in fmts:
        outputs["geojson"] = str(sd / f"{stem}.geojson")
        write_geojson(outputs["geojson"], counted(polygons()), organ, pixel_size, image_name=stem)
    else:
        for _ in counted(polygons()):
            pass
    _release_memory()
    areas = np.array(areas_px, dtype=np.float64)
    if "ome-tiff" in fmts:
        outputs["ome-tiff"] = str(sd / "mask.ome.tif")
        write_ome_tiff(mask, outputs["ome-tiff"], pixel_size, name=f"{stem} {ftu_class(organ)[0]} mask")
    if "prob" in fmts:
        prob = zarr.open_array(store=str(sd / "prob.zarr"), mode="r")
        outputs["prob"] = str(sd / "prob.ome.tif")
        write_ome_tiff(prob, outputs["prob"], pixel_size, name=f"{stem} probability x255", reduce="mean")
    if "png" in fmts:
        outputs["png"] = str(sd / "mask.png")
        write_png_mask(outputs["png"], mask)
    if "rle" in fmts:
        from ftuseg.rle import encode_rle

        outputs["rle"] = str(sd / "rle.csv")
        with atomic_write(outputs["rle"]) as fh:
            fh.write(f"id,rle\n{stem},{encode_rle(np.asarray(mask[:, :]))}\n")
    if "overlay" in fmts:
        outputs["overlay"] = str(sd / "overlay.png")
        with open_slide(image_path) as reader:
            thumb = reader.thumbnail(options.overlay_size)
        write_overlay(outputs["overlay"], thumb, mask)

    result = SlideResult(str(image_path), str(sd), int(plan["height"]), int(plan["width"]), pixel_size,
                         len(areas_px), tiles_total, tiles_skipped, outputs, time.perf_counter() - t0, organ,
                         False, _area_summary(areas, pixel_size))
    record = asdict(result)
    record.update(formats=list(fmts), **_image_fingerprint(image_path))
    with atomic_write(sd / "result.json") as fh:
        json.dump(record, fh, indent=2)
    return result


def load_result(image_path: str | os.PathLike, out_dir: str | os.PathLike, resumed: bool = False) -> SlideResult:
    """The SlideResult saved by ``finalize_slide``."""
    sd = slide_dir(image_path, out_dir)
    data = _read_json(sd / "result.json")
    if data is None:
        raise FtusegError(f"{sd}: no result.json (the slide was not finished)")
    fields = {k: data[k] for k in SlideResult.__dataclass_fields__ if k in data}
    fields["resumed"] = resumed
    return SlideResult(**fields)


def slide_outputs_complete(image_path: str | os.PathLike, out_dir: str | os.PathLike,
                           options: SlideOptions = SlideOptions()) -> bool:
    """Whether ``out_dir`` already holds every requested output of this image, made with these settings."""
    sd = slide_dir(image_path, out_dir)
    data = _read_json(sd / "result.json")
    plan = _read_json(sd / "slide.json")
    if data is None or plan is None:
        return False
    try:
        fp = _image_fingerprint(Path(image_path))
    except OSError:
        return False
    if any(plan.get(k) != v for k, v in fp.items()):
        return False
    if set(options.formats) - set(data.get("formats", [])):
        return False
    if options.pixel_size is not None and not math.isclose(plan["pixel_size"], options.pixel_size, rel_tol=1e-9):
        return False
    if plan.get("organ") != options.organ or plan.get("region_size") != int(options.region_size):
        return False
    if plan.get("tissue_detection") != bool(options.tissue_detection):
        return False
    return all(Path(data["outputs"].get(f, "")).is_file() for f in options.formats)


# ------------------------------------------------------------------------------------------------
def predict_many(
    predictor: Predictor,
    items: list[Any],
    out_dir: str | os.PathLike,
    options: SlideOptions = SlideOptions(),
    progress: bool = True,
) -> Any:
    """Predict every input (``ftuseg.inference.inputs.PredictInput``) into ``out_dir``; resumable.

    Images whose outputs are complete are skipped, half-done slides continue from their last region.
    Writes ``out_dir/predictions.csv`` (one row per image: objects, areas, tiles skipped, Dice when
    the input had ground truth) and returns it as a DataFrame.
    """
    import dataclasses

    import pandas as pd
    from tqdm.auto import tqdm

    from ftuseg.metrics import dice_score
    from ftuseg.outputs.overlay import PNG_MAX_PIXELS
    from ftuseg.rle import decode_rle

    rows = []
    for it in tqdm(items, desc="predict", unit="img", disable=not progress):
        opts = dataclasses.replace(options, pixel_size=it.pixel_size, organ=it.organ)
        res = predict_slide(predictor, it.image_path, out_dir, opts)
        row = {"id": it.id, "image_path": str(it.image_path), "organ": it.organ, "pixel_size": res.pixel_size,
               "height": res.height, "width": res.width, "n_objects": res.n_objects,
               "area_um2": res.areas.get("total_um2", 0.0), "mean_object_um2": res.areas.get("mean_um2", 0.0),
               "tiles_total": res.tiles_total, "tiles_skipped": res.tiles_skipped,
               "skipped_fraction": round(res.skipped_fraction, 6), "slide_dir": Path(res.out_dir).name}
        if it.rle is not None and res.height * res.width <= PNG_MAX_PIXELS:
            import zarr

            pred = np.asarray(zarr.open_array(store=str(Path(res.out_dir) / "mask.zarr"), mode="r")[:, :])
            try:
                truth = decode_rle(it.rle, (res.height, res.width))
            except FtusegError as exc:
                raise FtusegError(f"id {it.id}: ground truth {exc}") from None
            row["dice"] = dice_score(pred, truth)
        rows.append(row)
    df = pd.DataFrame(rows)
    with atomic_write(Path(out_dir) / "predictions.csv") as fh:
        df.to_csv(fh, index=False)
    return df
