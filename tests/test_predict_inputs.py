"""``ftuseg predict`` inputs beyond the Kaggle layout, pixel-size precedence, and the CLI end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from ftuseg.cli import main
from ftuseg.errors import FtusegError
from ftuseg.inference.inputs import require_pixel_sizes, resolve_inputs
from ftuseg.synth import synth_image


def tissue_image(h: int = 240, w: int = 320, seed: int = 0, organ: str = "kidney", p: float = 0.5) -> np.ndarray:
    img, _ = synth_image(np.random.default_rng(seed), organ, h, w, p)
    return img


def write_ome(path: Path, img: np.ndarray, p: float = 0.5, levels: int = 2) -> Path:
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        opts = dict(tile=(128, 128), compression="zlib", photometric="rgb")
        md = {"axes": "YXS", "PhysicalSizeX": p, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": p,
              "PhysicalSizeYUnit": "µm"}
        tw.write(img, subifds=levels - 1, metadata=md, **opts)
        for k in range(1, levels):
            tw.write(img[:: 2**k, :: 2**k], subfiletype=1, **opts)
    return path


# ------------------------------------------------------------------------------------------------
def test_kaggle_layout(synth_data):
    items = resolve_inputs(synth_data)  # test split by default
    table = pd.read_csv(synth_data / "test.csv", dtype={"id": str})
    assert [it.id for it in items] == table["id"].tolist()
    assert all(it.pixel_size == pytest.approx(p) for it, p in zip(items, table["pixel_size"], strict=True))
    assert all(it.rle is None for it in items)
    train = resolve_inputs(synth_data, split="train")
    assert all(it.rle is not None for it in train) and all(it.organ for it in train)
    assert all(it.pixel_size == 0.9 for it in resolve_inputs(synth_data, pixel_size=0.9))  # flag beats CSV


def test_single_image_folder_and_csv(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(tissue_image()).save(imgs / "a.jpg")
    write_ome(imgs / "b.ome.tif", tissue_image(seed=1), p=0.25)
    (imgs / "notes.txt").write_text("not an image")
    one = resolve_inputs(imgs / "a.jpg")
    assert [(i.id, i.image_path.name, i.pixel_size) for i in one] == [("a", "a.jpg", None)]
    folder = resolve_inputs(imgs)
    assert [i.id for i in folder] == ["a", "b"]
    # pixel size: CSV column > metadata
    csv = tmp_path / "list.csv"
    pd.DataFrame({"path": ["imgs/a.jpg", "imgs/b.ome.tif"], "pixel_size": [0.5, None],
                  "organ": ["kidney", "spleen"]}).to_csv(csv, index=False)
    rows = resolve_inputs(csv)
    assert [(r.pixel_size, r.organ) for r in rows] == [(0.5, "kidney"), (None, "spleen")]
    require_pixel_sizes(rows)
    assert rows[1].pixel_size == pytest.approx(0.25)  # from OME PhysicalSizeX
    # id column + image folder
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"id": ["b", "a"], "pixel_size": [0.3, 0.4]}).to_csv(ids, index=False)
    rows = resolve_inputs(ids, images_dir=imgs)
    assert [(r.id, r.image_path.name, r.pixel_size) for r in rows] == [("b", "b.ome.tif", 0.3), ("a", "a.jpg", 0.4)]
    # flag > CSV > metadata
    assert {r.pixel_size for r in resolve_inputs(ids, pixel_size=1.5, images_dir=imgs)} == {1.5}


def test_folder_input_skips_annotation_masks(tmp_path):
    # an annotation folder: masks and GeoJSON beside the images are annotations, not images to predict
    img = tissue_image(60, 80)
    for name in ("a.png", "a_mask.png", "b.png"):
        Image.fromarray(img if "mask" not in name else img[..., 0]).save(tmp_path / name)
    tifffile.imwrite(tmp_path / "b.mask.tif", np.zeros((60, 80), np.uint8))
    (tmp_path / "a.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    items = resolve_inputs(tmp_path)
    assert [(i.id, i.image_path.name) for i in items] == [("a", "a.png"), ("b", "b.png")]


def test_input_errors_name_the_row_or_file(tmp_path):
    Image.fromarray(tissue_image()).save(tmp_path / "a.jpg")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "pixel_size": [0.5, -1]}).to_csv(bad, index=False)
    with pytest.raises(FtusegError, match=r"bad\.csv: row 3: pixel_size -1"):
        resolve_inputs(bad)
    missing = tmp_path / "missing.csv"
    pd.DataFrame({"path": ["nope.png"]}).to_csv(missing, index=False)
    with pytest.raises(FtusegError, match=r"row 2: image .*nope\.png not found"):
        resolve_inputs(missing)
    nocol = tmp_path / "nocol.csv"
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(nocol, index=False)
    with pytest.raises(FtusegError, match="'path' column"):
        resolve_inputs(nocol)
    noid = tmp_path / "noid.csv"
    pd.DataFrame({"id": ["zz"]}).to_csv(noid, index=False)
    with pytest.raises(FtusegError, match="no image for id 'zz'"):
        resolve_inputs(noid)
    Image.fromarray(tissue_image()).save(tmp_path / "a.png")
    with pytest.raises(FtusegError, match="same name 'a'"):
        resolve_inputs(tmp_path)
    with pytest.raises(FtusegError, match="no pixel size in the image metadata; pass --pixel-size"):
        require_pixel_sizes(resolve_inputs(tmp_path / "a.jpg"))
    with pytest.raises(FtusegError, match="input not found"):
        resolve_inputs(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FtusegError, match="no images found"):
        resolve_inputs(empty)


# ------------------------------------------------------------------------------------------------
def test_cli_predicts_a_pyramidal_ome_tiff(tiny_tiled_run, tmp_path, capsys):
    img = np.full((320, 480, 3), 243, np.uint8)
    img[60:260, 40:300] = tissue_image(200, 260, seed=3)
    slide = write_ome(tmp_path / "case.ome.tif", img, p=0.5, levels=3)
    out = tmp_path / "out"
    rc = main(["predict", str(tiny_tiled_run), str(slide), "--out-dir", str(out), "--organ", "kidney",
               "--formats", "geojson,ome-tiff,overlay,prob", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    sd = out / "case"
    res = json.loads((sd / "result.json").read_text())
    assert res["pixel_size"] == 0.5 and (res["width"], res["height"]) == (480, 320)  # from OME PhysicalSizeX
    assert res["tiles_total"] > 0 and len(list((sd / "regions").glob("*.json"))) == 1
    gj = json.loads((sd / "case.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == res["n_objects"]
    with tifffile.TiffFile(sd / "mask.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].shape == (320, 480) and tif.pages[0].is_tiled
    assert (sd / "overlay.png").stat().st_size > 0 and (sd / "prob.ome.tif").exists()
    table = pd.read_csv(out / "predictions.csv")
    assert table["id"].tolist() == ["case"] and table["n_objects"].iloc[0] == res["n_objects"]


def test_cli_multiscale_tta_runs_every_scale_on_a_slide(tiny_tiled_run, tmp_path, capsys):
    img = np.full((320, 480, 3), 243, np.uint8)
    img[60:260, 40:300] = tissue_image(200, 260, seed=3)
    slide = write_ome(tmp_path / "case.ome.tif", img, p=0.5, levels=3)
    results = {}
    for name, extra in (("one", []), ("two", ["--tta-scales", "0.5,1"])):
        out = tmp_path / name
        rc = main(["predict", str(tiny_tiled_run), str(slide), "--out-dir", str(out), "--organ", "kidney",
                   "--no-tissue-detection", "--formats", "rle", "--quiet", *extra])
        assert rc == 0, capsys.readouterr().err
        results[name] = json.loads((out / "case" / "result.json").read_text())
    assert json.loads((tmp_path / "two" / "predict.json").read_text())["tta_scales"] == [0.5, 1.0]
    # the 0.5 pass sees the slide at twice the pixels per side: about 4x the tiles of the single pass, added to them
    assert results["two"]["tiles_total"] > 3 * results["one"]["tiles_total"]
    rc = main(["predict", str(tiny_tiled_run), str(slide), "--out-dir", str(tmp_path / "bad"), "--organ", "kidney",
               "--tta-scales", "0,1", "--quiet"])
    assert rc != 0 and "tta_scales must be distinct factors in [0.25, 4]" in capsys.readouterr().err


def test_cli_predicts_a_plain_jpeg(tiny_tiled_run, tmp_path, capsys):
    jpg = tmp_path / "photo.jpg"
    Image.fromarray(tissue_image(200, 260, seed=4)).save(jpg, quality=92)
    out = tmp_path / "out"
    rc = main(["predict", str(tiny_tiled_run), str(jpg), "--out-dir", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "photo.jpg: no pixel size" in err and "--pixel-size" in err and "Traceback" not in err
    assert not (out / "photo").exists()  # stopped before predicting anything
    rc = main(["predict", str(tiny_tiled_run), str(jpg), "--out-dir", str(out), "--pixel-size", "0.5",
               "--formats", "png,geojson,overlay,rle", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    sd = out / "photo"
    mask = np.asarray(Image.open(sd / "mask.png"))
    assert mask.shape == (200, 260) and set(np.unique(mask)) <= {0, 255}
    assert json.loads((sd / "result.json").read_text())["pixel_size"] == 0.5


@pytest.mark.slow
def test_cli_kaggle_submission_unchanged_and_out_dir_agrees(tiny_run, synth_data, tmp_path):
    """The original ``--out`` path still works, and ``--out-dir`` (streamed) writes the same submission."""
    from ftuseg.inference.predictor import Predictor, predict_table
    from ftuseg.io.dataset import load_table

    sub_a = tmp_path / "a.csv"
    assert main(["predict", str(tiny_run), str(synth_data), "--out", str(sub_a), "--quiet"]) == 0
    ref, _ = predict_table(Predictor.from_runs([tiny_run]), load_table(synth_data), progress=False)
    a = pd.read_csv(sub_a, dtype=str, keep_default_na=False)
    assert a["id"].tolist() == ref["id"].tolist() and a["rle"].tolist() == ref["rle"].tolist()
    sub_b = tmp_path / "b.csv"
    assert main(["predict", str(tiny_run), str(synth_data), "--out", str(sub_b), "--out-dir",
                 str(tmp_path / "per_image"), "--formats", "geojson", "--no-tissue-detection", "--quiet"]) == 0
    b = pd.read_csv(sub_b, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_cli_train_split_records_dice(tiny_run, synth_data, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(tiny_run), str(synth_data), "--split", "train", "--out-dir", str(out),
                 "--formats", "overlay", "--quiet"]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert table["dice"].between(0, 1).all() and len(table) == 12


def test_cli_refuses_an_out_dir_of_other_runs(tiny_run, tiny_tiled_run, tmp_path):
    jpg = tmp_path / "x.jpg"
    Image.fromarray(tissue_image(96, 96)).save(jpg)
    out = tmp_path / "out"
    base = [str(jpg), "--out-dir", str(out), "--pixel-size", "0.5", "--formats", "geojson", "--quiet"]
    assert main(["predict", str(tiny_run), *base]) == 0
    assert main(["predict", str(tiny_tiled_run), *base]) == 2


@pytest.mark.slow
def test_killed_predict_resumes_and_matches_an_uninterrupted_run(tiny_tiled_run, tmp_path):
    """SIGKILL a real ``ftuseg predict`` after its first image; the rerun skips that image (its files are
    untouched) and every output equals the uninterrupted run's, byte for byte."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        write_ome(imgs / f"s{i}.ome.tif", tissue_image(360, 480, seed=10 + i), p=0.5)
    fmts = "geojson,ome-tiff,overlay,png,rle"

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "ftuseg", "predict", str(tiny_tiled_run), str(imgs), "--out-dir", str(out),
                "--formats", fmts, "--region-size", "256", "--organ", "kidney", "--quiet"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), check=True, env=env, timeout=600)
    run = tmp_path / "run"
    proc = subprocess.Popen(cmd(run), env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run.glob("*/result.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.parent.name for p in run.glob("*/result.json"))
    assert finished and len(finished) < 4, "the kill should land after the first image and before the last"
    stamps = {p: p.stat().st_mtime_ns for name in finished for p in (run / name).iterdir() if p.is_file()}
    subprocess.run(cmd(run), check=True, env=env, timeout=600)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished images were skipped
    for i in range(4):
        for name in ("s{}.geojson", "mask.ome.tif", "overlay.png", "mask.png", "rle.csv"):
            f = name.format(i)
            assert (run / f"s{i}" / f).read_bytes() == (ref / f"s{i}" / f).read_bytes(), (i, f)
    assert (run / "predictions.csv").read_bytes() == (ref / "predictions.csv").read_bytes()


def test_cli_submission_for_a_folder_of_images(tiny_run, tmp_path):
    """``--out`` alone works for any input, ids are the file names."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(tissue_image(90, 120, seed=30 + i)).save(imgs / f"p{i}.png")
    sub = tmp_path / "sub.csv"
    assert main(["predict", str(tiny_run), str(imgs), "--out", str(sub), "--pixel-size", "0.5", "--quiet"]) == 0
    df = pd.read_csv(sub, dtype=str, keep_default_na=False)
    assert df["id"].tolist() == ["p0", "p1"] and list(df.columns) == ["id", "rle"]
