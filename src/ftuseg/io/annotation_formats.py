"""Reading one annotation file: QuPath GeoJSON (FTU polygons, regions of interest) or a mask image.

See :mod:`ftuseg.io.annotations` for the folder layout and the classes each GeoJSON feature may carry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from ftuseg.errors import FtusegError
from ftuseg.io.annotation_names import is_geojson_file
from ftuseg.io.dataset import Problem
from ftuseg.outputs import DEFAULT_CLASS, FTU_CLASSES

# FTU class name (lower case) -> organ it implies (None: says nothing about the organ)
FTU_CLASS_ORGANS: dict[str, str | None] = {
    **{name.lower(): organ for organ, (name, _) in FTU_CLASSES.items()}, DEFAULT_CLASS[0].lower(): None,
}
ROI_CLASS_HINT = "Region* or ROI"
# Annotations may hang this far (share of the image side) over the image border and are clipped; beyond
# it the GeoJSON is taken to be in another coordinate space (a downsampled or upsampled export).
OUTSIDE_TOLERANCE = 0.05


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
