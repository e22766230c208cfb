"""The on-disk state of a slide being predicted: its folder, zarr stores and region markers, so that a
killed run resumes where it stopped and a finished one is recognised and skipped.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_write
from ftuseg.io.readers import SlideReader, slide_stem

if TYPE_CHECKING:
    from ftuseg.inference.slide import SlideOptions

PLAN_VERSION = 1


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


def regions_for(width: int, height: int, region_size: int) -> list[tuple[int, int, int, int]]:
    r = int(region_size)
    return [(x, y, min(r, width - x), min(r, height - y)) for y in range(0, height, r) for x in range(0, width, r)]


def image_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"image": str(path.resolve()), "image_bytes": st.st_size, "image_mtime_ns": st.st_mtime_ns}


def desired_plan(image_path: Path, reader: SlideReader, options: SlideOptions, pixel_size: float) -> dict[str, Any]:
    return {
        "version": PLAN_VERSION,
        **image_fingerprint(image_path),
        "width": reader.width,
        "height": reader.height,
        "pixel_size": pixel_size,
        "organ": options.organ,
        "region_size": int(options.region_size),
        "chunk": chunk_for(options.region_size),
        "prob": "prob" in options.formats,
        "tissue_detection": bool(options.tissue_detection),
    }


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def create_store(path: Path, shape: tuple[int, int], chunk: int) -> None:
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


def prepare_slide_dir(image_path: Path, out_dir: Path, reader: SlideReader, options: SlideOptions,
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
    plan = desired_plan(image_path, reader, options, pixel_size)
    existing = read_json(sd / "slide.json")
    if existing is not None and existing != plan:
        # Another image, pixel size or region layout: its regions cannot be reused.
        for name in ("mask.zarr", "prob.zarr", "regions"):
            shutil.rmtree(sd / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (sd / "result.json").unlink()
        existing = None
    shape = (reader.height, reader.width)
    create_store(sd / "mask.zarr", shape, plan["chunk"])
    if plan["prob"]:
        create_store(sd / "prob.zarr", shape, plan["chunk"])
    (sd / "regions").mkdir(exist_ok=True)
    if existing is None:
        with atomic_write(sd / "slide.json") as fh:
            json.dump(plan, fh, indent=2)
    return sd, plan


def region_marker(sd: Path, box: tuple[int, int, int, int]) -> Path:
    return sd / "regions" / f"{box[0]}_{box[1]}.json"


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS stays flat region after region."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def tile_counts(sd: Path, regions: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    total = skipped = 0
    for r in regions:
        data = read_json(region_marker(sd, r)) or {}
        total += int(data.get("tiles_total", 0))
        skipped += int(data.get("tiles_skipped", 0))
    return total, skipped


def load_result(image_path: str | os.PathLike, out_dir: str | os.PathLike, resumed: bool = False) -> SlideResult:
    """The SlideResult saved by ``finalize_slide``."""
    sd = slide_dir(image_path, out_dir)
    data = read_json(sd / "result.json")
    if data is None:
        raise FtusegError(f"{sd}: no result.json (the slide was not finished)")
    fields = {k: data[k] for k in SlideResult.__dataclass_fields__ if k in data}
    fields["resumed"] = resumed
    return SlideResult(**fields)


def slide_outputs_complete(image_path: str | os.PathLike, out_dir: str | os.PathLike,
                           options: SlideOptions) -> bool:
    """Whether ``out_dir`` already holds every requested output of this image, made with these settings."""
    sd = slide_dir(image_path, out_dir)
    data = read_json(sd / "result.json")
    plan = read_json(sd / "slide.json")
    if data is None or plan is None:
        return False
    try:
        fp = image_fingerprint(Path(image_path))
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
