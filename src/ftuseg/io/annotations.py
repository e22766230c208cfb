"""Annotation folders: images with QuPath GeoJSON or mask images beside them, loaded into the training table.

A folder without ``train.csv`` / ``test.csv`` that holds images is an *annotation folder*. Each image
``NAME.EXT`` (``.tif .tiff .ome.tif .png .jpg .jpeg .bmp``) is annotated by the one file beside it named

* ``NAME.geojson`` or ``NAME.json``: QuPath GeoJSON (a FeatureCollection, a Feature, or a bare list of
  features); Polygon / MultiPolygon with holes, in full-resolution pixel coordinates, or
* ``NAME_mask.png`` / ``NAME.mask.png`` (or ``.tif`` / ``.tiff``): a mask image of the image's size,
  binary or labels (any non-zero pixel is FTU, so instance labels work as they are).

Files named ``*_mask.*`` / ``*.mask.*`` are never images. An optional ``annotations.csv`` (columns
``image``, and optionally ``annotation``, ``organ``, ``pixel_size``, ``group``; paths relative to the
folder) lists the images explicitly instead; an empty ``annotation`` cell falls back to the rule above.

GeoJSON classes: features classified as an FTU class (Glomerulus, Crypt, Alveolus, Gland, White pulp,
FTU; case-insensitive, a derived class ``Glomerulus: x`` counts as its base) or not classified at all
are FTUs. Features classified ``Region*`` / ``Region...`` or ``ROI`` are regions of interest: when an
image has any, only pixels inside them are annotated (tiles are centred inside them, loss and validation
Dice count only there). Other classes are ignored with a warning.

The folder loads into the same table as the Kaggle layout (``id``, ``organ``, ``pixel_size``,
``img_height``, ``img_width``, ``image_path``, ``group``) plus ``annotation_path``; masks come from
:func:`read_annotation_masks` instead of an RLE column, so folds, tiling, augmentation, thresholds and
evaluation are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Polygon

from ftuseg.errors import FtusegError, FtusegWarning
from ftuseg.io.dataset import KNOWN_ORGANS, Problem, read_csv_checked
from ftuseg.io.images import IMAGE_EXTENSIONS
from ftuseg.outputs import DEFAULT_CLASS, FTU_CLASSES

ANNOTATIONS_CSV = "annotations.csv"
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", *IMAGE_EXTENSIONS)
GEOJSON_SUFFIXES = (".geojson", ".json")
MASK_MARKERS = ("_mask", ".mask")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
# FTU class name (lower case) -> organ it implies (None: says nothing about the organ)
FTU_CLASS_ORGANS: dict[str, str | None] = {
    **{name.lower(): organ for organ, (name, _) in FTU_CLASSES.items()}, DEFAULT_CLASS[0].lower(): None,
}
ROI_CLASS_HINT = "Region* or ROI"
# Annotations may hang this far (share of the image side) over the image border and are clipped; beyond
# it the GeoJSON is taken to be in another coordinate space (a downsampled or upsampled export).
OUTSIDE_TOLERANCE = 0.05


# ------------------------------------------------------------------------------------------------
# File naming
def image_stem(path: str | os.PathLike) -> str | None:
    """``NAME`` of an image file ``NAME.EXT``; None for non-images and for mask files (``*_mask.png``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            stem = name[: -len(suffix)]
            return None if not stem or stem.lower().endswith(MASK_MARKERS) else stem
    return None


def is_mask_file(path: str | os.PathLike) -> bool:
    """An image-format file named as a mask (``*_mask.*`` / ``*.mask.*``): an annotation, never an image."""
    lower = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)].endswith(MASK_MARKERS)
    return False


def annotation_candidates(image_path: str | os.PathLike) -> list[Path]:
    """The files that may annotate ``image_path`` by the naming rule, whether they exist or not."""
    image_path = Path(image_path)
    stem = image_stem(image_path) or image_path.stem
    folder = image_path.parent
    out = [folder / f"{stem}{s}" for s in GEOJSON_SUFFIXES]
    out += [folder / f"{stem}{m}{s}" for m in MASK_MARKERS for s in MASK_SUFFIXES]
    return out


def find_annotations(image_path: str | os.PathLike) -> list[Path]:
    """The annotation files beside ``image_path`` (existing ones, in rule order)."""
    return [p for p in annotation_candidates(image_path) if p.is_file()]


def is_geojson_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(GEOJSON_SUFFIXES)


def is_annotation_folder(root: str | os.PathLike) -> bool:
    """A folder without ``train.csv`` / ``test.csv`` that holds ``annotations.csv`` or images."""
    root = Path(root)
    if not root.is_dir() or (root / "train.csv").exists() or (root / "test.csv").exists():
        return False
    if (root / ANNOTATIONS_CSV).is_file():
        return True
    with os.scandir(root) as entries:
        return any(image_stem(e.name) for e in entries if e.is_file() and not e.name.startswith("."))


def _rule_text(stem: str) -> str:
    return f"{stem}.geojson, {stem}.json, {stem}_mask.png or {stem}.mask.png (or .tif)"


# ------------------------------------------------------------------------------------------------
# Parsed annotations
@dataclass
class Annotation:
    """One image's annotation: FTU polygons and regions of interest (GeoJSON), or a mask (mask image)."""

    path: Path
    ftus: list[Polygon] = field(default_factory=list)
    rois: list[Polygon] = field(default_factory=list)
    mask: np.ndarray | None = None  # mask images: the foreground itself
    organ_hint: str | None = None  # organ implied by the FTU class names, when they name exactly one

    def masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """(FTU mask uint8 0/1, ROI mask bool or None when the whole image is annotated) at ``shape``."""
        if self.mask is not None:
            return self.mask, None
        mask = rasterize_polygons(self.ftus, shape)
        roi = rasterize_polygons(self.rois, shape).astype(bool) if self.rois else None
        return mask, roi


def rasterize_polygons(polygons: Iterable[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Fill polygons (with holes) into a uint8 0/1 mask: a pixel is inside when its centre is."""
    from ftuseg.outputs.geojson import rasterize_rings

    out = np.zeros(shape, dtype=np.uint8)
    for poly in polygons:
        rings = [np.asarray(poly.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in poly.interiors]
        rasterize_rings(rings, shape, out)
    return out


def _polygonal_parts(geom: Any) -> list[Polygon]:
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    return [p for g in getattr(geom, "geoms", []) for p in _polygonal_parts(g)]


def _class_name(props: dict[str, Any]) -> str | None:
    """QuPath's classification: ``{"name": ...}`` (0.3+), ``{"names": [...]}`` (derived), or a plain string."""
    c = props.get("classification")
    if isinstance(c, str):
        return c.strip() or None
    if isinstance(c, dict):
        if isinstance(c.get("name"), str):
            return c["name"].strip() or None
        if isinstance(c.get("names"), list):
            return ": ".join(str(n) for n in c["names"]) or None
    return None


def class_kind(name: str | None) -> str:
    """``ftu``, ``roi`` or ``other`` for a QuPath class name (None: unclassified, counted as FTU)."""
    if name is None:
        return "ftu"
    lower = name.strip().lower()
    if lower.startswith("region") or lower == "roi":
        return "roi"
    base = lower.split(":")[0].strip()
    return "ftu" if base in FTU_CLASS_ORGANS else "other"


def _where(poly: Any) -> str:
    x0, y0, _, _ = poly.bounds
    return f"at x={x0:.0f}, y={y0:.0f}"


def _feature_polygons(geometry: dict[str, Any]) -> list[tuple[list[list[float]], ...]] | None:
    """Polygon rings of a GeoJSON geometry; None for non-polygon geometries (points, lines)."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        return [tuple(coords)]
    if kind == "MultiPolygon":
        return [tuple(p) for p in coords]
    if kind == "GeometryCollection":
        parts = [_feature_polygons(g) for g in geometry.get("geometries", []) if isinstance(g, dict)]
        return [p for part in parts if part for p in part] or None
    return None


def _build_polygon(rings: Sequence[Any]) -> Polygon:
    arrays = [np.asarray(r, dtype=np.float64) for r in rings if len(r)]
    if not arrays or any(a.ndim != 2 or a.shape[1] < 2 for a in arrays):
        raise ValueError("rings must be lists of [x, y] positions")
    if any(not np.isfinite(a[:, :2]).all() for a in arrays):
        raise ValueError("coordinates must be finite numbers")
    return Polygon(arrays[0][:, :2], [a[:, :2] for a in arrays[1:] if len(a) >= 3])


def _features(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        kind = data.get("type")
        if kind == "FeatureCollection" and isinstance(data.get("features"), list):
            return data["features"]
        if kind == "Feature":
            return [data]
        if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
            return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise ValueError("not GeoJSON: expected a FeatureCollection, a Feature or a list of features")


def parse_geojson(path: str | os.PathLike, shape: tuple[int, int]) -> tuple[Annotation | None, list[Problem]]:
    """Parse and validate one QuPath GeoJSON against an image of ``shape`` (height, width).

    Returns the annotation (None if an error makes it unusable) and every problem found, one line each:
    errors for empty or unreadable files and for a GeoJSON in another coordinate space; warnings for
    repaired self-intersections, features without geometry or with points/lines, ignored classes and
    annotations that hang over the image border (clipped).
    """
    path = Path(path)
    file = str(path)
    h, w = shape
    problems: list[Problem] = []

    def warn(msg: str) -> None:
        problems.append(Problem("warning", file, msg))

    def fail(msg: str) -> tuple[None, list[Problem]]:
        problems.append(Problem("error", file, msg))
        return None, problems

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return fail("annotation file not found")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read annotation file ({getattr(exc, 'strerror', None) or exc})")
    if not text.strip():
        return fail("annotation file is empty; for an image without FTUs write "
                    '{"type": "FeatureCollection", "features": []}')
    try:
        data = json.loads(text)
    except ValueError as exc:
        return fail(f"not valid JSON ({exc})")
    try:
        features = _features(data)
    except ValueError as exc:
        return fail(str(exc))

    ann = Annotation(path)
    ignored_classes: dict[str, int] = {}
    skipped_types: dict[str, int] = {}
    organs: set[str] = set()
    every: list[Polygon] = []
    n_ftu_features = 0
    for n, feat in enumerate(features, start=1):
        if not isinstance(feat, dict):
            return fail(f"feature {n} is not a JSON object")
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        object_type = str(props.get("objectType", "annotation")).lower()
        if object_type not in ("annotation", "detection"):  # cells, tiles, TMA cores
            skipped_types[object_type] = skipped_types.get(object_type, 0) + 1
            continue
        geometry = feat.get("geometry")
        if not isinstance(geometry, dict) or not geometry.get("type"):
            warn(f"feature {n} has no geometry; ignored")
            continue
        try:
            ring_sets = _feature_polygons(geometry)
        except (TypeError, AttributeError):
            return fail(f"feature {n}: {geometry.get('type')} coordinates are malformed")
        if ring_sets is None:
            warn(f"feature {n} is a {geometry.get('type')}, not a polygon; ignored")
            continue
        name = _class_name(props)
        kind = class_kind(name)
        if kind == "other":
            ignored_classes[str(name)] = ignored_classes.get(str(name), 0) + 1
            continue
        n_ftu_features += kind == "ftu"
        if kind == "ftu" and name is not None:
            organ = FTU_CLASS_ORGANS.get(name.lower().split(":")[0].strip())
            if organ:
                organs.add(organ)
        for rings in ring_sets:
            try:
                poly = _build_polygon(rings)
            except (ValueError, TypeError) as exc:
                return fail(f"feature {n}: {geometry.get('type')} coordinates are malformed ({exc})")
            if not poly.is_valid:
                reason = shapely.is_valid_reason(poly)
                parts = _polygonal_parts(shapely.make_valid(poly))
                if parts:
                    warn(f"feature {n} ({name or 'unclassified'}) {_where(poly)}: invalid polygon ({reason}); "
                         "repaired with shapely make_valid, check it in QuPath")
                else:
                    warn(f"feature {n} ({name or 'unclassified'}) {_where(poly)}: polygon has no area "
                         f"({reason}); ignored")
            else:
                parts = [poly] if poly.area > 0 else []
                if not parts:
                    warn(f"feature {n} ({name or 'unclassified'}) {_where(poly)}: polygon has no area; ignored")
            (ann.rois if kind == "roi" else ann.ftus).extend(parts)
            every.extend(parts)
    for cls, count in sorted(ignored_classes.items()):
        warn(f"class {cls!r} ({count} feature{'s' if count != 1 else ''}) is neither an FTU class "
             f"({', '.join(sorted({n for n, _ in FTU_CLASSES.values()} | {DEFAULT_CLASS[0]}))}, or unclassified) "
             f"nor a region ({ROI_CLASS_HINT}); ignored")
    for kind, count in sorted(skipped_types.items()):
        warn(f"{count} {kind} object{'s' if count != 1 else ''} ignored (only annotations and detections are used)")
    ann.organ_hint = organs.pop() if len(organs) == 1 else None

    if every:
        x0, y0, x1, y1 = shapely.total_bounds(np.asarray(every, dtype=object))
        tol_x, tol_y = OUTSIDE_TOLERANCE * w, OUTSIDE_TOLERANCE * h
        if x1 > w + tol_x or y1 > h + tol_y or x0 < -tol_x or y0 < -tol_y:
            scale = max(x1 / w, y1 / h)
            hint = (f"reaching {scale:.3g}x the image size: exported from a larger image or another resolution?"
                    if scale > 1 else "negative coordinates: exported with an offset?")
            return fail(f"annotations span x={x0:.0f}..{x1:.0f}, y={y0:.0f}..{y1:.0f} but the image is {w}x{h} "
                        f"(WxH): the GeoJSON is in another coordinate space ({hint}); export it from this "
                        "image at full resolution")
        box = shapely.box(0, 0, w, h)
        outside = [i for i, p in enumerate(every, start=1) if not box.contains(p)]
        if outside:
            gone = sum(1 for i in outside if not box.intersects(every[i - 1]))
            warn(f"{len(outside)} polygon{'s' if len(outside) != 1 else ''} reach outside the image ({w}x{h} WxH) "
                 f"and {'are' if len(outside) != 1 else 'is'} clipped to it"
                 + (f" ({gone} entirely outside, ignored)" if gone else ""))
        # a few objects all near the origin of an image annotated in full: coordinates from a downsampled
        # export look like this (a real partial annotation should say so with a ROI)
        if not ann.rois and n_ftu_features >= 3 and x1 <= w / 2 and y1 <= h / 2:
            warn(f"all annotations lie in the top-left quarter of the image (x <= {x1:.0f}, y <= {y1:.0f} of "
                 f"{w}x{h}): if they were drawn on a downsampled image, export them at full resolution; if only "
                 f"this part is annotated, draw a {ROI_CLASS_HINT} annotation around it")
    if ann.rois and not rasterize_polygons(ann.rois, shape).any():
        return fail(f"the {ROI_CLASS_HINT} annotations cover no pixel of the image")
    if not ann.ftus:
        warn("no FTU annotation: the image " + ("regions train" if ann.rois else "trains") + " as background only")
    return ann, problems


# ------------------------------------------------------------------------------------------------
# Mask images
def mask_image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a mask image from its header."""
    path = Path(path)
    if path.name.lower().endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("TIFF holds no image")
            series = tif.series[0]
            axes = series.axes.upper()
            return int(series.shape[axes.index("Y")]), int(series.shape[axes.index("X")])
    from PIL import Image

    with Image.open(path) as im:
        return int(im.size[1]), int(im.size[0])


def read_mask_image(path: str | os.PathLike) -> np.ndarray:
    """A mask image as uint8 0/1: every non-zero pixel (any label, any channel of a colour mask) is FTU.

    Read without the 16-bit -> 8-bit conversion images get, so instance labels 1..65535 all stay FTU.
    """
    path = Path(path)
    if path.name.lower().endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            arr = tif.series[0].levels[0].asarray()
    else:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)  # palette images give their indices, 0 = background
    arr = np.squeeze(np.asarray(arr))
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = arr[..., : 3 if arr.shape[-1] >= 3 else 1].max(axis=-1)  # colour mask: drop alpha, any channel
    elif arr.ndim == 3 and arr.shape[0] in (3, 4):
        arr = arr[:3].max(axis=0)  # planar RGB TIFF
    if arr.ndim != 2:
        raise ValueError(f"a mask must be one 2-D plane (or RGB), got shape {arr.shape}")
    return (arr != 0).astype(np.uint8)


def check_mask_file(path: str | os.PathLike, shape: tuple[int, int], decode: bool) -> list[Problem]:
    """Problems of a mask image against an image of ``shape``: unreadable, empty, another size, no FTU."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        return [Problem("error", file, "annotation file not found")]
    if path.stat().st_size == 0:
        return [Problem("error", file, "mask file is empty (0 bytes)")]
    try:
        mh, mw = mask_image_shape(path)
    except Exception as exc:  # decoders raise many types; the user needs the file and the reason
        return [Problem("error", file, f"cannot read mask image ({str(exc).strip() or type(exc).__name__})")]
    if (mh, mw) != tuple(shape):
        return [Problem("error", file, f"mask is {mh}x{mw} (HxW) but its image is {shape[0]}x{shape[1]}; a mask "
                        "must have the image's full-resolution size")]
    if decode:
        try:
            mask = read_mask_image(path)
        except Exception as exc:
            return [Problem("error", file, f"cannot decode mask image ({str(exc).strip() or type(exc).__name__})")]
        if not mask.any():
            return [Problem("warning", file, "mask has no FTU pixel: the image trains as background only")]
    return []


# ------------------------------------------------------------------------------------------------
# Reading an annotation for training / validation
def load_annotation(path: str | os.PathLike, shape: tuple[int, int]) -> Annotation:
    """The annotation file of an image of ``shape``; raises :class:`FtusegError` on its first error."""
    path = Path(path)
    if is_geojson_file(path):
        ann, problems = parse_geojson(path, shape)
        errors = [p for p in problems if p.severity == "error"]
        if ann is None or errors:
            raise FtusegError(str(errors[0]))
        return ann
    errors = [p for p in check_mask_file(path, shape, decode=False) if p.severity == "error"]
    if errors:
        raise FtusegError(str(errors[0]))
    try:
        return Annotation(path, mask=read_mask_image(path))
    except Exception as exc:
        raise FtusegError(f"{path}: cannot decode mask image ({str(exc).strip() or type(exc).__name__})") from None


def read_annotation_masks(path: str | os.PathLike, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(FTU mask uint8 0/1, ROI bool mask or None) of an image of ``shape`` from its annotation file."""
    return load_annotation(path, shape).masks(shape)


# ------------------------------------------------------------------------------------------------
# The folder -> the training table
def image_header(path: Path) -> tuple[int, int, float | None]:
    """(height, width, µm/px or None) of an image from its header (TIFF: tags/OME; others: dpi)."""
    from ftuseg.io.images import check_image_file, is_tiff

    check_image_file(path)
    if is_tiff(path):
        from ftuseg.io.readers import open_slide

        with open_slide(path) as slide:
            return slide.height, slide.width, slide.mpp
    from PIL import Image

    from ftuseg.io.readers import plausible_mpp

    try:
        with Image.open(path) as im:
            width, height = im.size
            dpi = im.info.get("dpi")
    except Exception as exc:
        from ftuseg.errors import ImageReadError

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(f"{path}: cannot decode image ({reason}); the file is truncated, corrupt or "
                             "not an image") from None
    try:
        mpp = plausible_mpp(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None
    except (TypeError, ValueError, IndexError):
        mpp = None
    return int(height), int(width), mpp


@dataclass
class _Entry:
    image: Path
    annotation: Path | None
    row: int | None = None  # annotations.csv line (header = 1)
    organ: str | None = None
    pixel_size: float | None = None
    group: str | None = None


def _cell_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _entries_from_csv(root: Path) -> tuple[list[_Entry], list[Problem]]:
    csv_path = root / ANNOTATIONS_CSV
    file = str(csv_path)
    try:
        df = read_csv_checked(csv_path, required=("image",))
    except FtusegError as exc:
        msg = str(exc)
        return [], [Problem("error", file, msg[len(file) + 2:] if msg.startswith(file + ": ") else msg)]
    entries, problems = [], []
    for pos in range(len(df)):
        row = pos + 2
        image_cell = _cell_text(df["image"].iat[pos])
        if not image_cell:
            problems.append(Problem("error", file, "empty image path", row=row, column="image"))
            continue
        image = root / image_cell
        if not image.is_file():
            problems.append(Problem("error", file, f"image {image_cell!r} not found in {root}", row=row,
                                    column="image"))
            continue
        annotation = None
        ann_cell = _cell_text(df["annotation"].iat[pos]) if "annotation" in df.columns else ""
        if ann_cell:
            annotation = root / ann_cell
            if not annotation.is_file():
                problems.append(Problem("error", file, f"annotation {ann_cell!r} not found in {root}", row=row,
                                        column="annotation"))
                continue
            if not (is_geojson_file(annotation) or annotation.name.lower().endswith(MASK_SUFFIXES)):
                problems.append(Problem("error", file, f"annotation {ann_cell!r} is neither GeoJSON "
                                        f"({', '.join(GEOJSON_SUFFIXES)}) nor a mask image "
                                        f"({', '.join(MASK_SUFFIXES)})", row=row, column="annotation"))
                continue
        entry = _Entry(image, annotation, row=row)
        if "organ" in df.columns:
            entry.organ = _cell_text(df["organ"].iat[pos]) or None
        if "group" in df.columns:
            entry.group = _cell_text(df["group"].iat[pos]) or None
        if "pixel_size" in df.columns:
            cell = df["pixel_size"].iat[pos]
            if _cell_text(cell):
                value = pd.to_numeric(pd.Series([cell]), errors="coerce").iat[0]
                if pd.isna(value) or not np.isfinite(value) or value <= 0:
                    problems.append(Problem("error", file, f"{_cell_text(cell)!r} must be a positive number "
                                            "(micrometres per pixel)", row=row, column="pixel_size"))
                    continue
                entry.pixel_size = float(value)
        entries.append(entry)
    listed = {e.image.resolve() for e in entries} | {e.annotation.resolve() for e in entries if e.annotation}
    with os.scandir(root) as scan:
        files = sorted(scan, key=lambda e: e.name)
    for e in files:
        if e.is_file() and not e.name.startswith(".") and image_stem(e.name) and Path(e.path).resolve() not in listed:
            problems.append(Problem("warning", e.path, f"image has no row in {ANNOTATIONS_CSV}; it is ignored"))
    return entries, problems


def _entries_from_names(root: Path) -> tuple[list[_Entry], list[Problem]]:
    entries, problems = [], []
    with os.scandir(root) as scan:
        names = sorted(e.name for e in scan if e.is_file() and not e.name.startswith("."))
    used: set[str] = set()
    for name in names:
        stem = image_stem(name)
        if stem is None:
            continue
        image = root / name
        found = find_annotations(image)
        if not found:
            problems.append(Problem("warning", str(image), f"no annotation beside it ({_rule_text(stem)}); "
                                    "image ignored"))
            continue
        if len(found) > 1:
            problems.append(Problem("error", str(image), f"several annotations ({', '.join(p.name for p in found)}); "
                                    f"keep one or name it in {ANNOTATIONS_CSV}"))
            continue
        used.add(found[0].name)
        entries.append(_Entry(image, found[0]))
    stems = {image_stem(n) for n in names} - {None}
    for name in names:
        lower = name.lower()
        if name in used or name == ANNOTATIONS_CSV or image_stem(name):
            continue
        if lower.endswith(GEOJSON_SUFFIXES) or any(lower.endswith(m + s) for m in MASK_MARKERS for s in MASK_SUFFIXES):
            base = name
            for suffix in (*GEOJSON_SUFFIXES, *(m + s for m in MASK_MARKERS for s in MASK_SUFFIXES)):
                if lower.endswith(suffix):
                    base = name[: -len(suffix)]
                    break
            if base not in stems:
                problems.append(Problem("warning", str(root / name), f"no image {base}.tif/.png/.jpg beside it; "
                                        "ignored"))
    return entries, problems


def scan_annotation_folder(
    root: str | os.PathLike,
    pixel_size: float | None = None,
    organ: str | None = None,
    decode: bool = False,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Every image of an annotation folder as a table row, and every problem found, one line each.

    ``pixel_size`` / ``organ`` (the ``--pixel-size`` / ``--organ`` flags) apply to every image and override
    ``annotations.csv`` and the image metadata. Pixel size otherwise comes from ``annotations.csv``, then
    the image's metadata (OME PhysicalSizeX, TIFF resolution, dpi). Organ otherwise comes from
    ``annotations.csv``, then the FTU class the GeoJSON names. With ``decode`` every image and mask is
    fully decoded (``ftuseg check``: finds truncated files); otherwise headers are read.
    """
    from ftuseg.io.images import read_image

    root = Path(root)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        return pd.DataFrame(), [Problem("error", str(root), f"--pixel-size must be a positive number (µm per "
                                        f"pixel), got {pixel_size}")]
    if (root / ANNOTATIONS_CSV).exists():
        entries, problems = _entries_from_csv(root)
    else:
        entries, problems = _entries_from_names(root)
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for entry in entries:
        file = str(entry.image)
        stem = image_stem(entry.image.name) or entry.image.stem
        if stem in seen:
            problems.append(Problem("error", file, f"another image is also named {stem!r} ({seen[stem].name}); "
                                    "image names (without extension) must be unique", row=entry.row))
            continue
        seen[stem] = entry.image
        if entry.annotation is None:
            found = find_annotations(entry.image)
            if len(found) != 1:
                what = "no annotation" if not found else f"several annotations ({', '.join(p.name for p in found)})"
                problems.append(Problem("error", str(root / ANNOTATIONS_CSV), f"{what} for {entry.image.name} "
                                        f"({_rule_text(stem)}); name it in the annotation column",
                                        row=entry.row, column="annotation"))
                continue
            entry.annotation = found[0]
        try:
            h, w, meta_mpp = image_header(entry.image)
            if decode:
                img = read_image(entry.image)
                if img.shape[:2] != (h, w):
                    h, w = img.shape[:2]
                del img
        except FtusegError as exc:
            msg = str(exc)
            problems.append(Problem("error", file, msg[len(file) + 2:] if msg.startswith(file + ": ") else msg,
                                    row=entry.row))
            continue
        mpp = pixel_size if pixel_size is not None else entry.pixel_size if entry.pixel_size is not None else meta_mpp
        if mpp is None:
            where = f"{ANNOTATIONS_CSV} has no pixel_size for it, " if entry.row is not None else ""
            problems.append(Problem("error", file, f"no pixel size: {where}the image's metadata has none and no "
                                    f"--pixel-size was given; give one (µm per pixel) with --pixel-size or a "
                                    f"pixel_size column in {ANNOTATIONS_CSV}", row=entry.row))
            continue
        organ_hint = None
        if is_geojson_file(entry.annotation):
            ann, found_problems = parse_geojson(entry.annotation, (h, w))
            problems += found_problems
            if ann is None:
                continue
            organ_hint = ann.organ_hint
        else:
            found_problems = check_mask_file(entry.annotation, (h, w), decode)
            problems += found_problems
            if any(p.severity == "error" for p in found_problems):
                continue
        row_organ = organ or entry.organ or organ_hint or ""
        rows.append({
            "id": stem, "organ": row_organ, "data_source": "annotations", "img_height": h, "img_width": w,
            "pixel_size": float(mpp), "image_path": str(entry.image), "annotation_path": str(entry.annotation),
            "group": entry.group,
        })
    if not rows and not any(p.severity == "error" for p in problems):
        problems.append(Problem("error", str(root), "no annotated image found: put each image's annotation beside "
                                "it (IMAGE.geojson, IMAGE_mask.png or IMAGE.mask.png) or list them in "
                                f"{ANNOTATIONS_CSV} (columns image, annotation, organ, pixel_size)"))
    table = pd.DataFrame(rows, columns=["id", "organ", "data_source", "img_height", "img_width", "pixel_size",
                                        "image_path", "annotation_path", "group"])
    unknown = sorted(set(table["id"][~table["organ"].isin(KNOWN_ORGANS)]))
    if unknown:
        names = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        problems.append(Problem("warning", str(root), f"no known organ for {names} (known: {', '.join(KNOWN_ORGANS)}; "
                                f"give --organ or an organ column in {ANNOTATIONS_CSV}); organ-specific "
                                "settings fall back to the defaults"))
    return table, problems


def load_annotation_table(
    root: str | os.PathLike, pixel_size: float | None = None, organ: str | None = None,
) -> pd.DataFrame:
    """The training table of an annotation folder; the first error raises, warnings go to ``warnings``."""
    table, problems = scan_annotation_folder(root, pixel_size=pixel_size, organ=organ)
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        raise FtusegError(errors[0] + (f" (and {len(errors) - 1} more problems; run `ftuseg check`)"
                                       if len(errors) > 1 else ""))
    for p in problems:
        warnings.warn(str(p), FtusegWarning, stacklevel=2)
    return table.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# Kaggle layout -> annotation folder (the README's walkthrough, tests)
def export_kaggle_annotations(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    ids: Sequence[str] | None = None,
    copy_images: bool = True,
) -> Path:
    """Write chosen rows of a Kaggle-layout data set as an annotation folder: ``<id>.geojson`` per image
    (ftuseg's QuPath GeoJSON of the RLE mask, exact pixel edges), the images, and ``annotations.csv``
    (image, annotation, organ, pixel_size, group). Returns ``out_dir``."""
    from ftuseg.io.atomic import atomic_path, atomic_write
    from ftuseg.io.dataset import load_table, read_row_mask
    from ftuseg.outputs.geojson import mask_to_polygons, sort_polygons, write_geojson

    table = load_table(data_dir, split="train", need_rle=True)
    if ids is not None:
        wanted = [str(i) for i in ids]
        missing = [i for i in wanted if i not in set(table["id"])]
        if missing:
            raise FtusegError(f"{data_dir}: id {missing[0]!r} is not in train.csv")
        table = table.set_index("id", drop=False).loc[wanted].reset_index(drop=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, row in table.iterrows():
        image = Path(row["image_path"])
        image_name = f"{row['id']}{image.name[len(image_stem(image.name) or image.stem):]}"
        if copy_images:
            with atomic_path(out / image_name) as tmp:
                shutil.copyfile(image, tmp)
        shape = (int(row["img_height"]), int(row["img_width"])) if pd.notna(row.get("img_height")) else None
        if shape is None:
            from ftuseg.io.images import read_image

            shape = read_image(image).shape[:2]
        mask = read_row_mask(row, shape)
        write_geojson(out / f"{row['id']}.geojson", sort_polygons(mask_to_polygons(mask)), row["organ"],
                      float(row["pixel_size"]), image_name=str(row["id"]))
        rows.append({"image": image_name if copy_images else str(image.resolve()),
                     "annotation": f"{row['id']}.geojson", "organ": row["organ"],
                     "pixel_size": float(row["pixel_size"]), "group": row.get("group", None)})
    with atomic_write(out / ANNOTATIONS_CSV) as fh:
        pd.DataFrame(rows).to_csv(fh, index=False)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ftuseg.io.annotations export DATA --out DIR [--ids ID,ID] [--no-images]``: Kaggle rows ->
    an annotation folder (GeoJSON per image + annotations.csv). Errors are one line and exit status 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ftuseg.io.annotations",
                                     description="Convert Kaggle-layout RLE rows to an annotation folder of QuPath "
                                                 "GeoJSON files (one per image) with the images and annotations.csv.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="Kaggle train.csv rows -> IMAGE + IMAGE.geojson + annotations.csv")
    export.add_argument("data", help="data folder in the Kaggle layout (train.csv + train_images/)")
    export.add_argument("--out", required=True, help="annotation folder to write")
    export.add_argument("--ids", help="comma list of image ids (default: every row)")
    export.add_argument("--no-images", dest="copy_images", action="store_false",
                        help="do not copy the images; annotations.csv names them by absolute path")
    args = parser.parse_args(argv)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    try:
        out = export_kaggle_annotations(args.data, args.out, ids=ids, copy_images=args.copy_images)
    except FtusegError as exc:
        print(f"ftuseg: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{out}: annotation folder written ({ANNOTATIONS_CSV}, one .geojson per image)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
