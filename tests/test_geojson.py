"""Masks <-> QuPath GeoJSON: exact round trip (holes, touching objects) and QuPath's expected shape."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import shapely

from ftuseg.metrics import dice_score
from ftuseg.outputs import FTU_CLASSES
from ftuseg.outputs.geojson import (
    geojson_to_mask,
    mask_to_geojson,
    mask_to_polygons,
    merge_across_borders,
    sort_polygons,
    write_geojson,
)


def tricky_mask() -> np.ndarray:
    """Objects with holes (one with two holes, one hole holding an island), objects touching along an
    edge and at a corner, one-pixel lines and single pixels, objects on the image border."""
    m = np.zeros((220, 300), np.uint8)
    cv2.circle(m, (60, 60), 40, 1, -1)
    cv2.circle(m, (60, 60), 15, 0, -1)  # ring
    cv2.circle(m, (60, 60), 5, 1, -1)  # island inside the hole
    cv2.rectangle(m, (120, 20), (200, 90), 1, -1)
    cv2.circle(m, (140, 50), 8, 0, -1)
    cv2.circle(m, (180, 50), 8, 0, -1)  # two holes
    cv2.rectangle(m, (201, 20), (240, 60), 1, -1)  # touches the previous rectangle along an edge
    m[100:110, 100:110] = 1
    m[110:120, 110:120] = 1  # touches the block above only at a corner
    m[150, 20:200] = 1  # one-pixel line
    m[170, 30] = 1
    m[172, 32] = 1  # single pixels
    cv2.ellipse(m, (270, 200), (40, 25), 30, 0, 360, 1, -1)  # cut by the right and bottom borders
    m[0:5, :] = 1
    return m


def test_round_trip_is_exact_with_holes_and_touching_objects():
    m = tricky_mask()
    gj = mask_to_geojson(m, organ="kidney", pixel_size=0.5, image_name="t")
    back = geojson_to_mask(json.loads(json.dumps(gj)), m.shape)
    assert dice_score(back, m) > 0.99
    np.testing.assert_array_equal(back, m)  # pixel-edge polygons: exact, not just close
    holes = sum(len(f["geometry"]["coordinates"]) - 1 for f in gj["features"])
    assert holes == 3  # the ring, and the rectangle with two holes


def test_polygon_area_is_the_pixel_count():
    m = tricky_mask()
    polys = mask_to_polygons(m)
    assert sum(p.area for p in polys) == m.sum()
    assert all(p.is_valid for p in polys)
    n8, _ = cv2.connectedComponents(m, connectivity=8)
    n4, _ = cv2.connectedComponents(m, connectivity=4)
    assert n8 - 1 <= len(polys) <= n4 - 1 + 1  # the island in a ring is its own polygon


def test_qupath_feature_shape():
    m = tricky_mask()
    gj = mask_to_geojson(m, organ="prostate", pixel_size=0.4, image_name="img")
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) > 5
    ids = set()
    for f in gj["features"]:
        assert f["type"] == "Feature"
        ids.add(f["id"])
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon")
        rings = geom["coordinates"] if geom["type"] == "Polygon" else [r for p in geom["coordinates"] for r in p]
        for ring in rings:
            assert len(ring) >= 4 and ring[0] == ring[-1]  # closed linear rings
            assert all(len(pt) == 2 and all(isinstance(v, int | float) for v in pt) for pt in ring)
        ext = shapely.LinearRing(rings[0])
        assert ext.is_ccw  # RFC 7946 winding (QuPath accepts either; tools that check expect this)
        props = f["properties"]
        assert props["objectType"] == "annotation"
        cls = props["classification"]
        assert cls["name"] == "Gland" and cls["name"] == FTU_CLASSES["prostate"][0]
        assert isinstance(cls["color"], list) and len(cls["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        meas = props["measurements"]
        poly = shapely.geometry.shape(geom)
        assert meas["Area px"] == pytest.approx(poly.area)
        assert meas["Area µm^2"] == pytest.approx(poly.area * 0.16)
        assert all(isinstance(v, float) for v in meas.values())
    assert len(ids) == len(gj["features"])  # unique feature ids
    # coordinates are full-resolution pixels: the bounding box of everything is the mask's
    allpts = np.array([pt for f in gj["features"] for pt in f["geometry"]["coordinates"][0]])
    ys, xs = np.nonzero(m)
    assert allpts[:, 0].min() == xs.min() and allpts[:, 0].max() == xs.max() + 1
    assert allpts[:, 1].min() == ys.min() and allpts[:, 1].max() == ys.max() + 1


def test_unknown_organ_gets_a_generic_class_and_no_pixel_size_no_um2():
    gj = mask_to_geojson(tricky_mask(), organ=None, pixel_size=None)
    props = gj["features"][0]["properties"]
    assert props["classification"]["name"] == "FTU"
    assert "Area µm^2" not in props["measurements"] and "Area px" in props["measurements"]


def test_pieces_cut_at_region_borders_are_merged():
    m = tricky_mask()
    whole = sort_polygons(mask_to_polygons(m))
    pieces = []
    step = 64
    for y in range(0, m.shape[0], step):
        for x in range(0, m.shape[1], step):
            pieces.extend(mask_to_polygons(m[y : y + step, x : x + step], offset=(x, y)))
    assert len(pieces) > len(whole)
    merged = merge_across_borders(pieces, range(step, m.shape[1], step), range(step, m.shape[0], step))
    assert len(merged) == len(whole)
    for a, b in zip(merged, whole, strict=True):
        assert a.symmetric_difference(b).area == 0


def test_write_geojson_streams_a_valid_file(tmp_path):
    m = tricky_mask()
    polys = sort_polygons(mask_to_polygons(m))
    n = write_geojson(tmp_path / "x.geojson", polys, "spleen", 0.5, image_name="x")
    data = json.loads((tmp_path / "x.geojson").read_text(encoding="utf-8"))
    assert n == len(polys) == len(data["features"])
    assert data["features"][0]["properties"]["classification"]["name"] == "White pulp"
    np.testing.assert_array_equal(geojson_to_mask(tmp_path / "x.geojson", m.shape), m)
    assert write_geojson(tmp_path / "empty.geojson", [], "lung", 0.5) == 0
    assert json.loads((tmp_path / "empty.geojson").read_text()) == {"type": "FeatureCollection", "features": []}


def test_rasterise_free_form_polygons_by_pixel_centres():
    """Pathologists' polygons (float vertices, MultiPolygons) rasterise by pixel centre, like QuPath."""
    rng = np.random.default_rng(3)
    pts = rng.uniform(5, 95, size=(12, 2))
    hull = shapely.convex_hull(shapely.MultiPoint(pts))
    hole = shapely.Point(50, 50).buffer(8)
    poly = hull.difference(hole)
    other = shapely.box(0.2, 0.7, 3.6, 4.4)
    gj = {"type": "Feature", "geometry": shapely.geometry.mapping(shapely.MultiPolygon([poly, other])),
          "properties": {}}
    got = geojson_to_mask(json.loads(json.dumps(gj)), (100, 100))
    yy, xx = np.mgrid[0:100, 0:100]
    want = shapely.contains_xy(shapely.MultiPolygon([poly, other]), xx + 0.5, yy + 0.5)
    assert (got.astype(bool) != want).sum() <= 2  # only centres lying exactly on an edge may differ
    assert got.sum() > 1000
