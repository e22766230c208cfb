"""Masks <-> QuPath GeoJSON.

Polygons follow pixel edges exactly (pixel (col, row) is the unit square [col, col+1) x [row, row+1)
in full-resolution coordinates, QuPath's convention), so an object's polygon area equals its pixel
count and rasterising the GeoJSON back gives the mask it came from. Objects are 4-connected
components; holes are polygon interiors.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_write
from ftuseg.outputs import ftu_class

_NAMESPACE = uuid.UUID("6f1c8f5e-9a5d-4c1e-8a3e-2f1b7f0d1a11")  # stable feature ids across reruns


def mask_to_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """Exact pixel-edge polygons (with holes) of the non-zero pixels; ``offset`` = (x, y) added."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    fg = (mask != 0).astype(np.uint8)
    if not fg.any():
        return []
    # One object at a time (4-connected, as polygons sharing only a corner are separate), so the
    # memory of the union follows the largest object, not the whole mask.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4, ltype=cv2.CV_32S)
    ox, oy = offset
    out: list[Polygon] = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area == w * h:  # a filled rectangle needs no union
            out.append(shapely.box(x + ox, y + oy, x + w + ox, y + h + oy))
            continue
        out.extend(_runs_polygons(labels[y : y + h, x : x + w] == i, (x + ox, y + oy)))
    return out


def _runs_polygons(fg: np.ndarray, offset: tuple[int, int]) -> list[Polygon]:
    """Horizontal runs of foreground per row become 1-pixel-high boxes; their union is the exact shape."""
    padded = np.zeros((fg.shape[0], fg.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = fg
    edges = np.diff(padded, axis=1)
    rows, x0 = np.nonzero(edges == 1)
    _, x1 = np.nonzero(edges == -1)
    ox, oy = offset
    boxes = shapely.box(x0 + ox, rows + oy, x1 + ox, rows + oy + 1)
    # simplify(0) drops the collinear vertices the row boxes leave along straight edges.
    return _explode(shapely.simplify(shapely.union_all(boxes), 0.0))


def _explode(geom: Any) -> list[Polygon]:
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def merge_across_borders(polygons: Sequence[Polygon], cuts_x: Sequence[int], cuts_y: Sequence[int]) -> list[Polygon]:
    """Join pieces of objects that were cut at region borders (vertical lines ``cuts_x``, horizontal ``cuts_y``).

    Only polygons touching a cut are unioned, so the cost follows the border length, not the slide.
    """
    if not polygons:
        return []
    bounds = shapely.bounds(np.asarray(polygons, dtype=object))
    touches = np.zeros(len(polygons), dtype=bool)
    for c in cuts_x:
        touches |= (bounds[:, 0] == c) | (bounds[:, 2] == c)
    for c in cuts_y:
        touches |= (bounds[:, 1] == c) | (bounds[:, 3] == c)
    keep = [p for p, t in zip(polygons, touches, strict=True) if not t]
    border = [p for p, t in zip(polygons, touches, strict=True) if t]
    for group in _touching_groups(border):
        if len(group) == 1:
            keep.append(border[group[0]])
        else:  # one object cut into pieces: a small union per object, never one over the whole slide
            keep.extend(_explode(shapely.simplify(shapely.union_all([border[i] for i in group]), 0.0)))
    return sort_polygons(keep)


def _touching_groups(polygons: Sequence[Polygon]) -> list[list[int]]:
    """Indices of polygons grouped by touching (connected components of the touch graph)."""
    n = len(polygons)
    if n == 0:
        return []
    a, b = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        if i < j:
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def sort_polygons(polygons: Iterable[Polygon]) -> list[Polygon]:
    """Deterministic order: top to bottom, then left to right (so reruns write identical files)."""
    return sorted(polygons, key=lambda p: (p.bounds[1], p.bounds[0], p.bounds[3], p.bounds[2], p.area))


def _ring(coords: Any) -> list[list[float]]:
    arr = np.asarray(coords, dtype=np.float64)
    if np.all(arr == np.round(arr)):
        return arr.astype(np.int64).tolist()
    return np.round(arr, 3).tolist()


def _geometry(geom: Polygon | MultiPolygon) -> dict[str, Any]:
    def poly(p: Polygon) -> list[list[list[float]]]:
        p = orient(p, 1.0)
        return [_ring(p.exterior.coords)] + [_ring(r.coords) for r in p.interiors]

    if isinstance(geom, MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": [poly(p) for p in geom.geoms]}
    return {"type": "Polygon", "coordinates": poly(geom)}


def polygon_feature(geom: Polygon | MultiPolygon, organ: str | None, pixel_size: float | None,
                    feature_id: str | None = None) -> dict[str, Any]:
    """One QuPath annotation: geometry in full-resolution pixels, class, and measurements."""
    name, color = ftu_class(organ)
    area_px = float(geom.area)
    measurements: dict[str, float] = {"Area px": round(area_px, 3), "Perimeter px": round(float(geom.length), 3)}
    if pixel_size:
        measurements["Area µm^2"] = round(area_px * pixel_size * pixel_size, 3)
        measurements["Perimeter µm"] = round(float(geom.length) * pixel_size, 3)
    feature: dict[str, Any] = {"type": "Feature"}
    if feature_id:
        feature["id"] = feature_id
    feature["geometry"] = _geometry(geom)
    feature["properties"] = {
        "objectType": "annotation",
        "classification": {"name": name, "color": list(color)},
        "isLocked": False,
        "measurements": measurements,
    }
    return feature


def write_geojson(path: str | os.PathLike, polygons: Iterable[Polygon | MultiPolygon], organ: str | None,
                  pixel_size: float | None, image_name: str = "") -> int:
    """Stream polygons to a GeoJSON FeatureCollection (atomically); returns the number of features."""
    n = 0
    with atomic_write(path) as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for n, geom in enumerate(polygons, start=1):
            fid = str(uuid.uuid5(_NAMESPACE, f"{image_name}/{n}"))
            if n > 1:
                fh.write(",\n")
            fh.write(json.dumps(polygon_feature(geom, organ, pixel_size, fid), ensure_ascii=False))
        fh.write("\n]}\n")
    return n


def mask_to_geojson(mask: np.ndarray, organ: str | None = None, pixel_size: float | None = None,
                    image_name: str = "") -> dict[str, Any]:
    """A GeoJSON FeatureCollection (as a dict) of a mask held in memory."""
    feats = [polygon_feature(p, organ, pixel_size, str(uuid.uuid5(_NAMESPACE, f"{image_name}/{i}")))
             for i, p in enumerate(sort_polygons(mask_to_polygons(mask)), start=1)]
    return {"type": "FeatureCollection", "features": feats}


# ------------------------------------------------------------------------------------------------
def _load(geojson: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(geojson, dict):
        return geojson
    path = Path(geojson)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FtusegError(f"{path}: GeoJSON file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FtusegError(f"{path}: not valid JSON ({exc})") from None


def _iter_polygons(obj: dict[str, Any]) -> Iterable[list[np.ndarray]]:
    """Rings (exterior first) of every polygon in a FeatureCollection / Feature / geometry."""
    kind = obj.get("type")
    if kind == "FeatureCollection":
        for f in obj.get("features", []):
            yield from _iter_polygons(f)
    elif kind == "Feature":
        if obj.get("geometry"):
            yield from _iter_polygons(obj["geometry"])
    elif kind == "GeometryCollection":
        for g in obj.get("geometries", []):
            yield from _iter_polygons(g)
    elif kind == "Polygon":
        yield [np.asarray(r, dtype=np.float64)[:, :2] for r in obj["coordinates"] if len(r)]
    elif kind == "MultiPolygon":
        for poly in obj["coordinates"]:
            yield [np.asarray(r, dtype=np.float64)[:, :2] for r in poly if len(r)]


def rasterize_rings(rings: Sequence[np.ndarray], shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Fill one polygon (exterior + holes, even-odd rule) into ``out``: a pixel is inside when its centre is.

    Exact scanline fill: for each pixel row the polygon edges are crossed at y = row + 0.5, and spans
    between pairs of crossings are filled.
    """
    h, w = shape
    out = np.zeros((h, w), dtype=np.uint8) if out is None else out
    xs_all, ys_all = [], []
    for ring in rings:
        if len(ring) < 3:
            continue
        a, b = ring, np.roll(ring, -1, axis=0)
        x1, y1, x2, y2 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        sel = y1 != y2
        x1, y1, x2, y2 = x1[sel], y1[sel], x2[sel], y2[sel]
        ylo, yhi = np.minimum(y1, y2), np.maximum(y1, y2)
        # rows r with ylo <= r + 0.5 < yhi (half-open, so shared vertices count once)
        r0 = np.clip(np.ceil(ylo - 0.5), 0, h).astype(np.int64)
        r1 = np.clip(np.ceil(yhi - 0.5), 0, h).astype(np.int64)
        counts = np.maximum(r1 - r0, 0)
        if counts.sum() == 0:
            continue
        idx = np.repeat(np.arange(len(counts)), counts)
        starts = np.cumsum(counts) - counts
        rows = r0[idx] + (np.arange(counts.sum()) - starts[idx])
        yc = rows + 0.5
        xs = x1[idx] + (yc - y1[idx]) * (x2[idx] - x1[idx]) / (y2[idx] - y1[idx])
        xs_all.append(xs)
        ys_all.append(rows)
    if not xs_all:
        return out
    xs = np.concatenate(xs_all)
    rows = np.concatenate(ys_all)
    order = np.lexsort((xs, rows))
    xs, rows = xs[order], rows[order]
    if len(xs) % 2:  # an open ring; nothing sensible to fill
        return out
    xa, xb, r = xs[0::2], xs[1::2], rows[0::2]
    c0 = np.clip(np.ceil(xa - 0.5), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(xb - 0.5), 0, w).astype(np.int64)
    ok = c1 > c0
    if not ok.any():
        return out
    r, c0, c1 = r[ok], c0[ok], c1[ok]
    rlo, rhi = int(r.min()), int(r.max()) + 1
    diff = np.zeros((rhi - rlo, w + 1), dtype=np.int32)
    np.add.at(diff, (r - rlo, c0), 1)
    np.add.at(diff, (r - rlo, c1), -1)
    out[rlo:rhi] |= (np.cumsum(diff[:, :w], axis=1) > 0).astype(out.dtype)
    return out


def geojson_to_mask(geojson: dict[str, Any] | str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise every polygon of a GeoJSON (ours or QuPath's) into a (height, width) uint8 0/1 mask."""
    out = np.zeros(shape, dtype=np.uint8)
    for rings in _iter_polygons(_load(geojson)):
        rasterize_rings(rings, shape, out)
    return out
