"""Slide readers: pyramid levels, lazy region reads, pixel size from metadata, clear errors."""

from __future__ import annotations

import sys
import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from ftuseg.errors import FtusegError, ImageReadError
from ftuseg.io.readers import (
    ArraySlideReader,
    OpenSlideReader,
    PillowSlideReader,
    TiffSlideReader,
    open_slide,
    slide_stem,
)


def gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), ((x + y) % 256)], -1).astype(np.uint8)


def write_pyramid(path, img: np.ndarray, levels: int = 3, **md) -> None:
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        opts = dict(tile=(64, 64), compression="zlib", photometric="rgb")
        tw.write(img, subifds=levels - 1, metadata={"axes": "YXS", **md}, **opts)
        for k in range(1, levels):
            tw.write(img[:: 2**k, :: 2**k], subfiletype=1, **opts)


def test_pyramidal_ome_tiff_levels_regions_and_pixel_size(tmp_path):
    img = gradient(300, 500)
    p = tmp_path / "a.ome.tif"
    write_pyramid(p, img, PhysicalSizeX=250.0, PhysicalSizeXUnit="nm", PhysicalSizeY=250.0, PhysicalSizeYUnit="nm")
    with open_slide(p) as r:
        assert isinstance(r, TiffSlideReader)
        assert r.dimensions == (500, 300) and r.level_count == 3
        assert r.level_dimensions[1] == (250, 150)
        assert r.level_downsamples[:2] == [1.0, 2.0]
        assert r.mpp == pytest.approx(0.25)  # 250 nm
        np.testing.assert_array_equal(r.read_region(37, 11, 90, 70), img[11:81, 37:127])
        np.testing.assert_array_equal(r.read_region(5, 7, 20, 10, level=1), img[::2, ::2][7:17, 5:25])
        # boxes hanging over the edge are padded with white glass
        edge = r.read_region(480, 290, 40, 20)
        np.testing.assert_array_equal(edge[:10, :20], img[290:300, 480:500])
        assert (edge[10:] == 255).all() and (edge[:, 20:] == 255).all()
        thumb = r.thumbnail(100)
        assert thumb.shape == (60, 100, 3)
        ref = cv2.resize(img, (100, 60), interpolation=cv2.INTER_AREA)
        assert np.abs(thumb.astype(int) - ref).mean() < 12
        assert r.best_level_for_downsample(3.0) == 1
    with pytest.raises(FtusegError, match="level 5 does not exist"):
        TiffSlideReader(p).read_region(0, 0, 4, 4, level=5)


def test_region_reads_are_lazy(tmp_path):
    """A small region of a large tiled TIFF decodes a few tiles, not the image."""
    p = tmp_path / "big.tif"
    big = np.zeros((4096, 4096, 3), np.uint8)
    big[::7] = 200
    tifffile.imwrite(p, big, tile=(256, 256), compression="zlib", photometric="rgb")
    del big
    with open_slide(p) as r:
        tracemalloc.start()
        r.read_region(1000, 1000, 100, 100)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the whole image is 48 MiB


def test_tiff_resolution_tags(tmp_path):
    img = gradient(40, 60)
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, img, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, img, photometric="rgb", resolution=(25400 / 0.25, 25400 / 0.25), resolutionunit="INCH")
    dpi72 = tmp_path / "dpi72.tif"
    tifffile.imwrite(dpi72, img, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    none = tmp_path / "none.tif"
    tifffile.imwrite(none, img, photometric="rgb")
    assert open_slide(cm).mpp == pytest.approx(0.5)
    assert open_slide(inch).mpp == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="implausible pixel size"):
        assert open_slide(dpi72).mpp is None  # a screen default, not a microscope
    assert open_slide(none).mpp is None


def test_sixteen_bit_gray_and_planar(tmp_path):
    g16 = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) % 4096)
    p = tmp_path / "g16.tif"
    tifffile.imwrite(p, g16, tile=(16, 16))
    with open_slide(p) as r:
        a = r.read_region(0, 0, 80, 64)
        b = r.read_region(40, 32, 8, 8)
    assert a.dtype == np.uint8 and a.shape == (64, 80, 3)
    np.testing.assert_array_equal(a[..., 0], (g16 >> 4).astype(np.uint8))  # 12-bit data keeps its contrast
    np.testing.assert_array_equal(b, a[32:40, 40:48])  # the same scaling in every region
    planar = np.stack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30)])
    pp = tmp_path / "planar.tif"
    tifffile.imwrite(pp, planar, photometric="rgb", planarconfig="separate")
    with open_slide(pp) as r:
        np.testing.assert_array_equal(r.read_region(0, 0, 30, 20)[5, 5], [10, 20, 30])


def test_pillow_formats_and_dpi(tmp_path):
    img = gradient(50, 70)
    png = tmp_path / "x.png"
    Image.fromarray(img).save(png, dpi=(25400 / 0.5, 25400 / 0.5))
    with open_slide(png) as r:
        assert isinstance(r, PillowSlideReader)
        assert r.mpp == pytest.approx(0.5, rel=1e-3)
        np.testing.assert_array_equal(r.read_region(3, 4, 10, 5), img[4:9, 3:13])
    jpg = tmp_path / "x.jpg"
    Image.fromarray(img).save(jpg, quality=95)
    with open_slide(jpg) as r:
        assert r.mpp is None and r.dimensions == (70, 50)
        assert np.abs(r.read_region(0, 0, 70, 50).astype(int) - img).mean() < 6
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([img, np.full((50, 70), 128, np.uint8)])).save(rgba)
    assert open_slide(rgba).read_region(0, 0, 70, 50).shape == (50, 70, 3)


def test_openslide_missing_names_the_extra(tmp_path, monkeypatch):
    svs = tmp_path / "case.svs"
    svs.write_bytes(b"II*\x00not really a slide")
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    with pytest.raises(FtusegError, match=r"pip install 'ftuseg\[wsi\]'"):
        open_slide(svs)
    with pytest.raises(FtusegError, match=r"case\.svs"):
        OpenSlideReader(svs)


def test_open_slide_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        open_slide(tmp_path / "nope.tif")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        open_slide(empty)
    odd = tmp_path / "x.gif"
    odd.write_bytes(b"GIF89a")
    with pytest.raises(ImageReadError, match="unsupported image type"):
        open_slide(odd)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not a tiff at all")
    with pytest.raises(ImageReadError, match="broken.tif"):
        open_slide(broken)


def test_slide_stem():
    assert slide_stem("/a/b/case.ome.tiff") == "case"
    assert slide_stem("x.svs") == "x"
    assert slide_stem("img.v2.png") == "img.v2"


def test_array_reader_is_a_slide_like_any_other():
    img = gradient(50, 70)
    reader = ArraySlideReader(img, mpp=0.5)
    assert (reader.width, reader.height, reader.mpp, reader.level_count) == (70, 50, 0.5, 1)
    np.testing.assert_array_equal(reader.read_region(10, 5, 20, 30), img[5:35, 10:30])
    edge = reader.read_region(60, 40, 20, 20)  # hangs over the corner: the outside is white glass
    np.testing.assert_array_equal(edge[:10, :10], img[40:, 60:])
    assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
    assert reader.thumbnail(35).shape == (25, 35, 3)
    gray = ArraySlideReader(img[..., 0])  # converted like a decoded file
    assert gray.read_region(0, 0, 70, 50).shape == (50, 70, 3) and gray.mpp is None


def test_pillow_header_pixel_size_matches_the_reader(tmp_path):
    from ftuseg.io.pixel_size import dpi_mpp, pillow_file_mpp

    img = gradient(20, 30)
    good, screen, none = tmp_path / "good.png", tmp_path / "screen.png", tmp_path / "none.png"
    Image.fromarray(img).save(good, dpi=(25400 / 0.25, 25400 / 0.25))
    Image.fromarray(img).save(screen, dpi=(96, 96))
    Image.fromarray(img).save(none)
    assert pillow_file_mpp(good) == pytest.approx(0.25) == open_slide(good).mpp
    assert pillow_file_mpp(screen) is None and open_slide(screen).mpp is None  # 96 dpi is a screen default
    assert pillow_file_mpp(none) is None and open_slide(none).mpp is None
    assert dpi_mpp((0, 0)) is None and dpi_mpp("x") is None
