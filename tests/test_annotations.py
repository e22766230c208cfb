"""Annotation folders (issue 15): images with QuPath GeoJSON or mask images beside them train like the Kaggle
layout; ROI annotations limit tile centres, loss and validation Dice; predict -> GeoJSON -> train round trip;
every bad annotation gets one clear line through ``ftuseg check`` and ``ftuseg train``."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from conftest import tiny_config
from ftuseg.cli import main
from ftuseg.errors import FtusegError, FtusegWarning
from ftuseg.io.annotations import (
    export_kaggle_annotations,
    find_annotations,
    image_stem,
    parse_geojson,
    scan_annotation_folder,
)
from ftuseg.io.dataset import load_table, read_row_mask, read_row_truth

TRAIN_FLAGS = ["--encoder", "resnet18", "--image-size", "64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "1",
               "--max-steps", "1", "--val-fraction", "0", "-q"]


# ------------------------------------------------------------------------------------------------ helpers
def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """A closed ring; with integer corners it covers pixels x0..x1-1, y0..y1-1 (pixel-centre rule)."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def qupath_feature(rings_or_polys, name: str | None = "Glomerulus", kind: str = "Polygon",
                   object_type: str = "annotation") -> dict:
    """A feature shaped like QuPath 0.4's GeoJSON export."""
    props: dict = {"objectType": object_type, "isLocked": False}
    if name is not None:
        props["classification"] = {"name": name, "color": [230, 60, 60]}
    return {"type": "Feature", "id": str(uuid.uuid4()),
            "geometry": {"type": kind, "coordinates": rings_or_polys}, "properties": props}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def collection(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def make_image(path: Path, h: int = 120, w: int = 160, seed: int = 0, mpp: float | None = None) -> np.ndarray:
    """A tissue-coloured RGB image (every pixel counts as tissue); TIFFs carry ``mpp`` as resolution tags."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
    if path.suffix.lower() in (".tif", ".tiff"):
        kw = {} if mpp is None else dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
        tifffile.imwrite(path, img, photometric="rgb", **kw)
    else:
        Image.fromarray(img).save(path)
    return img


def boxes_mask(shape, *boxes) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = 1
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def check_lines(out: str, severity: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{severity}: ")]


def assert_train_error(capsys, folder: Path, *needles: str, extra=()) -> str:
    """``ftuseg train`` exits 2 with exactly one ``ftuseg: error:`` line containing every needle."""
    code, _, err = run_cli(capsys, "train", folder, "--out", folder.parent / "run", *TRAIN_FLAGS, *extra)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ftuseg: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_check_error(capsys, folder: Path, *needles: str, extra=()) -> str:
    """``ftuseg check`` exits 1 and lists exactly one error line containing every needle."""
    code, out, err = run_cli(capsys, "check", folder, *extra)
    assert code == 1, out + err
    errors = check_lines(out, "error")
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def folder(tmp_path) -> Path:
    out = tmp_path / "ann"
    out.mkdir()
    return out


# ------------------------------------------------------------------------------------------------ formats
def test_naming_rule_finds_geojson_and_masks_and_skips_mask_files(folder):
    make_image(folder / "a.png")
    make_image(folder / "b.ome.tif", mpp=0.5)
    make_image(folder / "c.jpg")
    (folder / "a.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(folder / "b_mask.png")
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(folder / "c.mask.png")
    assert image_stem("b.ome.tif") == "b" and image_stem("b_mask.png") is None and image_stem("c.mask.png") is None
    assert [p.name for p in find_annotations(folder / "a.png")] == ["a.geojson"]
    assert [p.name for p in find_annotations(folder / "b.ome.tif")] == ["b_mask.png"]
    assert [p.name for p in find_annotations(folder / "c.jpg")] == ["c.mask.png"]
    table, problems = scan_annotation_folder(folder, pixel_size=None)
    assert sorted(table["id"]) == ["b"]  # a and c have no pixel size (PNG/JPEG without dpi): errors
    assert [p.severity for p in problems].count("error") == 2
    table, problems = scan_annotation_folder(folder, pixel_size=0.8)
    assert sorted(table["id"]) == ["a", "b", "c"] and set(table["pixel_size"]) == {0.8}
    assert not [p for p in problems if p.severity == "error"]


def test_geojson_forms_holes_and_qupath_shape_load_exactly(folder):
    make_image(folder / "a.png", 100, 120)
    hole = qupath_feature([rect(10, 10, 50, 40), rect(20, 20, 30, 30)])  # a square with a square hole
    multi = qupath_feature([[rect(60, 10, 70, 20)], [rect(80, 50, 100, 90), rect(85, 60, 95, 70)]], kind="MultiPolygon")
    derived = qupath_feature([rect(0, 80, 5, 100)], name="Glomerulus: Positive")
    unclassified = qupath_feature([rect(110, 0, 120, 5)], name=None)
    expected = boxes_mask((100, 120), (10, 10, 50, 40), (60, 10, 70, 20), (80, 50, 100, 90), (0, 80, 5, 100),
                          (110, 0, 120, 5))
    expected[20:30, 20:30] = 0
    expected[60:70, 85:95] = 0
    feats = [hole, multi, derived, unclassified]
    for form in (collection(*feats), feats):  # a FeatureCollection, or QuPath's bare list of features
        write_json(folder / "a.geojson", form)
        row = load_table(folder, pixel_size=0.5).iloc[0]
        mask, roi = read_row_truth(row)
        assert roi is None
        np.testing.assert_array_equal(mask, expected)
        assert int(mask.sum()) == 40 * 30 - 100 + 100 + 20 * 40 - 100 + 5 * 20 + 10 * 5
    assert row["organ"] == "kidney"  # Glomerulus names the organ


def test_mask_images_binary_labels_16bit_and_colour(folder):
    truth = boxes_mask((64, 80), (5, 5, 20, 30), (40, 10, 70, 50))
    labels16 = np.zeros((64, 80), np.uint16)
    labels16[5:30, 5:20] = 300  # instance labels above 255 (an 8-bit conversion would lose them)
    labels16[10:50, 40:70] = 65535
    colour = np.zeros((64, 80, 3), np.uint8)
    colour[truth == 1] = (0, 0, 200)
    labels = truth.copy()
    labels[10:50, 40:70] = 2
    masks = {"bin_mask.png": truth * 255, "lab.mask.png": labels, "big_mask.tif": labels16, "rgb_mask.png": colour}
    for name, arr in masks.items():
        stem = name.split("_mask")[0].split(".mask")[0]
        make_image(folder / f"{stem}.png", 64, 80)
        if name.endswith(".tif"):
            tifffile.imwrite(folder / name, arr)
        else:
            Image.fromarray(arr.astype(np.uint8)).save(folder / name)
    with pytest.warns(FtusegWarning, match="no known organ for big, bin, lab, rgb"):  # masks have no class
        table = load_table(folder, pixel_size=1.0)
    assert sorted(table["id"]) == ["big", "bin", "lab", "rgb"]
    for _, row in table.iterrows():
        np.testing.assert_array_equal(read_row_mask(row), truth, err_msg=row["id"])


def test_annotations_csv_names_files_and_gives_organ_pixel_size_group(folder):
    (folder / "imgs").mkdir()
    make_image(folder / "imgs" / "s1.png", 50, 60)
    make_image(folder / "imgs" / "s2.png", 50, 60, seed=1)
    write_json(folder / "one.json", collection(qupath_feature([rect(0, 0, 10, 10)], name="Crypt")))
    Image.fromarray(boxes_mask((50, 60), (5, 5, 9, 9)) * 255).save(folder / "two.png")
    pd.DataFrame({"image": ["imgs/s1.png", "imgs/s2.png"], "annotation": ["one.json", "two.png"],
                  "organ": ["largeintestine", "prostate"], "pixel_size": [0.25, 0.5], "group": ["p1", "p1"]}
                 ).to_csv(folder / "annotations.csv", index=False)
    table = load_table(folder, "train", need_rle=True)
    assert list(table["id"]) == ["s1", "s2"] and list(table["organ"]) == ["largeintestine", "prostate"]
    assert list(table["pixel_size"]) == [0.25, 0.5] and list(table["group"]) == ["p1", "p1"]
    assert int(read_row_mask(table.iloc[0]).sum()) == 100 and int(read_row_mask(table.iloc[1]).sum()) == 16
    # --pixel-size / --organ override the CSV for every image
    table = load_table(folder, pixel_size=2.0, organ="kidney")
    assert set(table["pixel_size"]) == {2.0} and set(table["organ"]) == {"kidney"}


def test_pixel_size_from_tiff_metadata(folder):
    make_image(folder / "a.tif", mpp=0.25)
    write_json(folder / "a.geojson", collection(qupath_feature([rect(0, 0, 4, 4)])))
    assert load_table(folder).iloc[0]["pixel_size"] == pytest.approx(0.25)


def test_flags_for_annotation_folders_are_an_error_on_the_kaggle_layout(synth_data):
    with pytest.raises(FtusegError, match="--pixel-size apply to annotation folders"):
        load_table(synth_data, "train", pixel_size=0.5)


def test_other_classes_are_ignored_with_a_warning_and_regions_are_rois(folder):
    make_image(folder / "a.png", 100, 100)
    write_json(folder / "a.geojson", collection(
        qupath_feature([rect(0, 0, 10, 10)], name="Tumor"),
        qupath_feature([rect(20, 20, 30, 30)], name="Gland"),
        qupath_feature([rect(10, 10, 60, 60)], name="Region*"),
        qupath_feature([rect(70, 70, 90, 90)], name="ROI"),
        qupath_feature([[50, 50]], kind="Point"),
        qupath_feature([rect(0, 90, 5, 95)], object_type="cell"),
    ))
    ann, problems = parse_geojson(folder / "a.geojson", (100, 100))
    lines = [str(p) for p in problems]
    assert all(p.severity == "warning" for p in problems)
    assert any("class 'Tumor' (1 feature)" in line and "ignored" in line for line in lines), lines
    assert any("Point, not a polygon" in line for line in lines) and any("1 cell object" in line for line in lines)
    assert len(ann.ftus) == 1 and len(ann.rois) == 2 and ann.organ_hint == "prostate"
    mask, roi = ann.masks((100, 100))
    np.testing.assert_array_equal(mask, boxes_mask((100, 100), (20, 20, 30, 30)))
    np.testing.assert_array_equal(roi, boxes_mask((100, 100), (10, 10, 60, 60), (70, 70, 90, 90)).astype(bool))


# ------------------------------------------------------------------------------------------------ ROI
@pytest.fixture
def roi_folder(folder) -> Path:
    """One 200x300 image: an FTU half inside a 60x60 ROI, and an unannotated FTU-like area outside it."""
    make_image(folder / "slide.png", 200, 300)
    write_json(folder / "slide.geojson", collection(
        qupath_feature([rect(200, 20, 260, 80)], name="Region*"),
        qupath_feature([rect(230, 40, 280, 60)], name="Glomerulus"),
    ))
    return folder


def test_tiles_are_centred_inside_rois_and_carry_the_roi_as_weight(roi_folder):
    from ftuseg.training.datasets import TileDataset

    table = load_table(roi_folder, pixel_size=1.0)
    _, roi = read_row_truth(table.iloc[0])
    cfg = tiny_config(preset="tiled", tile_size=32, target_mpp=1.0, organ_mpp={}, scale_jitter=0.0,
                      fg_fraction=0.5, tiles_per_epoch=64)
    ds = TileDataset(table, cfg, length=64, seed=3)
    img, mask, fg, tissue, cached_roi = ds._load(0)
    rng = np.random.default_rng(0)
    centres = [ds._centre(rng, mask, fg, tissue, cached_roi) for _ in range(2000)]
    assert all(roi[cy, cx] for cy, cx in centres)  # the ROI is 6% of the image: chance would miss often
    assert any(mask[cy, cx] for cy, cx in centres) and any(not mask[cy, cx] for cy, cx in centres)
    mixed = 0
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and y.shape == (2, 32, 32)
        assert y[1, 16, 16] == 1  # the tile centre (scale 1: source pixel (cy, cx)) lies in the ROI
        assert set(torch.unique(y[1]).tolist()) <= {0.0, 1.0}
        mixed += int(bool((y[1] == 0).any() and (y[1] == 1).any()))
    assert mixed > 0  # tiles near the ROI edge see unannotated pixels, with zero weight


def test_fully_annotated_tables_keep_one_channel_targets(synth_data):
    from ftuseg.training.datasets import TileDataset, WholeImageDataset

    table = load_table(synth_data, "train", need_rle=True).iloc[:3]
    assert WholeImageDataset(table, 64)[0][1].shape == (1, 64, 64)
    cfg = tiny_config(preset="tiled", tile_size=32)
    assert TileDataset(table, cfg, length=2)[0][1].shape == (1, 32, 32)


def test_whole_image_dataset_resizes_the_roi_weight(roi_folder):
    from ftuseg.training.datasets import WholeImageDataset

    y = WholeImageDataset(load_table(roi_folder, pixel_size=1.0), 100)[0][1]
    assert y.shape == (2, 100, 100)
    assert int(y[1].sum()) == 20 * 30  # the 60x60 ROI of a 300x200 (WxH) image, scaled by 1/3 x 1/2


def test_loss_outside_the_roi_is_exactly_zero():
    from ftuseg.training.losses import BCEDiceLoss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=gen, requires_grad=True)
    mask = (torch.rand(2, 1, 16, 16, generator=gen) > 0.5).float()
    weight = torch.zeros(2, 1, 16, 16)
    weight[..., 4:12, 8:] = 1
    loss_fn = BCEDiceLoss()
    loss = loss_fn(logits, torch.cat([mask, weight], 1))
    loss.backward()
    outside = weight == 0
    assert torch.count_nonzero(logits.grad[outside]) == 0
    assert torch.count_nonzero(logits.grad[~outside]) == int((~outside).sum())
    # anything outside the ROI (logits, labels) leaves the loss exactly unchanged
    other = logits.detach().clone()
    other[outside] = torch.randn(int(outside.sum()), generator=gen) * 10
    flipped = mask.clone()
    flipped[outside] = 1 - flipped[outside]
    assert loss_fn(other, torch.cat([flipped, weight], 1)).item() == loss.item()
    # weight 1 everywhere is the plain loss
    torch.testing.assert_close(loss_fn(logits, torch.cat([mask, torch.ones_like(mask)], 1)), loss_fn(logits, mask))


class RedIsFTU:
    """A stand-in network: probability = red channel / 255, pixel by pixel (so predictions are exact)."""

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return tiles[..., 0].astype(np.float32) / 255.0


def test_validation_dice_counts_only_inside_rois(folder):
    from ftuseg.inference.predictor import Member  # noqa: F401 (evaluate_images builds one)
    from ftuseg.training.trainer import evaluate_images

    img = np.full((96, 128, 3), 120, np.uint8)
    img[..., 0] = 0
    img[20:40, 20:40, 0] = 255  # the FTU inside the ROI: predicted exactly
    img[60:90, 90:120, 0] = 255  # an FTU outside the ROI that nobody annotated
    Image.fromarray(img).save(folder / "a.png")
    ftu = qupath_feature([rect(20, 20, 40, 40)])
    write_json(folder / "a.geojson", collection(ftu, qupath_feature([rect(0, 0, 64, 64)], name="Region*")))
    cfg = tiny_config(preset="tiled", tile_size=64, target_mpp=1.0, organ_mpp={})
    scores, _ = evaluate_images(RedIsFTU(), cfg, load_table(folder, pixel_size=1.0))
    assert scores["dice"].iloc[0] == 1.0
    write_json(folder / "a.geojson", collection(ftu))  # the same labels read as a full annotation
    scores, _ = evaluate_images(RedIsFTU(), cfg, load_table(folder, pixel_size=1.0))
    assert scores["dice"].iloc[0] == pytest.approx(2 * 400 / (400 + 400 + 900))


def test_threshold_tuning_scores_only_inside_rois(folder, tmp_path):
    from ftuseg.inference.threshold_tuning import tune_thresholds

    make_image(folder / "a.png", 96, 128)
    ftu = qupath_feature([rect(20, 20, 40, 40)])
    write_json(folder / "a.geojson", collection(ftu, qupath_feature([rect(0, 0, 64, 64)], name="Region*")))
    pd.DataFrame({"image": ["a.png"], "organ": ["kidney"], "pixel_size": [1.0]}).to_csv(
        folder / "annotations.csv", index=False)
    prob = np.zeros((96, 128), np.uint8)
    prob[20:40, 20:40] = 100  # inside the ROI: the FTU exactly, at probability 0.39
    prob[60:96, 70:128] = 255  # outside it: a confident 36x58 blob that no min area or threshold removes
    run = tmp_path / "run"
    (run / "oof").mkdir(parents=True)
    np.savez_compressed(run / "oof" / "a.npz", prob=prob)
    result, report = tune_thresholds([run], folder, save=False)
    assert report.loc[0, "dice_tuned"] == 1.0
    assert report.loc[0, "dice_at_0.5"] == 0.0  # 0.5 misses the FTU; the blob outside does not count
    assert result.threshold < 100 / 255 and result.min_area_um2 == 0.0


# ------------------------------------------------------------------------------------------------ round trip
def test_round_trip_predict_geojson_edit_train_gives_the_same_masks(tiny_tiled_run, synth_data, tmp_path, capsys):
    from ftuseg.outputs.geojson import geojson_to_mask

    row = load_table(synth_data, "train", need_rle=True).iloc[0]
    image = Path(row["image_path"])
    out = tmp_path / "pred"
    code, _, err = run_cli(capsys, "predict", tiny_tiled_run, image, "--pixel-size", row["pixel_size"],
                           "--organ", "kidney", "--out-dir", out, "--formats", "geojson,png", "--threshold", "0.5",
                           "-q")
    assert code == 0, err
    predicted_geojson = next(out.rglob("*.geojson"))
    predicted = (np.asarray(Image.open(next(out.rglob("mask.png")))) != 0).astype(np.uint8)
    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / image.name).write_bytes(image.read_bytes())
    stem = image_stem(image.name)
    # unedited: training reads exactly the predicted mask
    (folder / f"{stem}.geojson").write_text(predicted_geojson.read_text())
    table = load_table(folder, "train", need_rle=True, pixel_size=float(row["pixel_size"]))
    np.testing.assert_array_equal(read_row_mask(table.iloc[0]), predicted)
    # edited in QuPath: one object deleted, one drawn (QuPath's feature shape)
    data = json.loads(predicted_geojson.read_text())
    expected = predicted.copy()
    if data["features"]:
        removed = data["features"].pop(0)
        expected[geojson_to_mask(collection(removed), predicted.shape) == 1] = 0
    data["features"].append(qupath_feature([rect(3, 4, 30, 25)], name="Glomerulus"))
    expected[4:25, 3:30] = 1
    write_json(folder / f"{stem}.geojson", data)
    table = load_table(folder, "train", need_rle=True, pixel_size=float(row["pixel_size"]))
    np.testing.assert_array_equal(read_row_mask(table.iloc[0]), expected)
    assert table.iloc[0]["organ"] == "kidney"
    code, _, err = run_cli(capsys, "train", folder, "--out", tmp_path / "run", "--pixel-size", row["pixel_size"],
                           *TRAIN_FLAGS)
    assert code == 0, err
    assert (tmp_path / "run" / "best.pt").exists()


def test_predict_writer_geojson_loads_back_exactly(folder):
    """The writer ``predict --out-dir`` uses, on a mask with holes, objects touching at a corner, an object
    inside another's hole and objects on the border: training reads back the very same mask."""
    from ftuseg.outputs.geojson import mask_to_polygons, sort_polygons, write_geojson

    rng = np.random.default_rng(5)
    mask = (rng.random((90, 110)) > 0.55).astype(np.uint8)  # ragged shapes, many corner contacts
    mask[10:40, 10:40] = 1
    mask[15:35, 15:35] = 0  # a hole ...
    mask[22:28, 22:28] = 1  # ... with an island in it
    mask[0:5, :] = 1  # along the border
    make_image(folder / "a.png", 90, 110)
    write_geojson(folder / "a.geojson", sort_polygons(mask_to_polygons(mask)), "kidney", 0.5, image_name="a")
    row = load_table(folder, pixel_size=0.5).iloc[0]
    np.testing.assert_array_equal(read_row_mask(row), mask)
    assert row["organ"] == "kidney"


def test_exported_kaggle_rows_load_back_to_the_same_masks(synth_data, tmp_path):
    kaggle = load_table(synth_data, "train", need_rle=True).iloc[:4]
    out = export_kaggle_annotations(synth_data, tmp_path / "ann", ids=list(kaggle["id"]))
    table = load_table(out, "train", need_rle=True)
    assert list(table["id"]) == list(kaggle["id"]) and list(table["organ"]) == list(kaggle["organ"])
    assert list(table["pixel_size"]) == list(kaggle["pixel_size"]) and list(table["group"]) == list(kaggle["group"])
    for (_, a), (_, b) in zip(kaggle.iterrows(), table.iterrows(), strict=True):
        np.testing.assert_array_equal(read_row_mask(b), read_row_mask(a))
    with pytest.raises(FtusegError, match="'nope' is not in train.csv"):
        export_kaggle_annotations(synth_data, tmp_path / "x", ids=["nope"])


def test_export_command_line(synth_data, tmp_path, capsys):
    from ftuseg.io.annotations import main as annotations_main

    first = load_table(synth_data, "train", need_rle=True)["id"].iloc[0]
    assert annotations_main(["export", str(synth_data), "--ids", first, "--out", str(tmp_path / "a")]) == 0
    assert {p.name for p in (tmp_path / "a").iterdir() if p.suffix != ".png"} == {
        "annotations.csv", f"{first}.geojson"}
    assert annotations_main(["export", str(synth_data), "--ids", "nope", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"ftuseg: error: {synth_data}: id 'nope' is not in train.csv"]


def test_real_ftu_bench_image_round_trips_through_geojson(ftu_bench, tmp_path):
    kaggle = load_table(ftu_bench, "train", need_rle=True)
    ids = [kaggle[kaggle["organ"] == o]["id"].iloc[0] for o in ("kidney", "largeintestine")]
    table = load_table(export_kaggle_annotations(ftu_bench, tmp_path / "ann", ids=ids), "train", need_rle=True)
    for image_id, (_, row) in zip(ids, table.iterrows(), strict=True):
        truth = read_row_mask(kaggle.set_index("id", drop=False).loc[image_id])
        assert truth.any()
        np.testing.assert_array_equal(read_row_mask(row), truth)


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_training_from_an_annotation_folder_with_rois_writes_a_run(synth_data, tmp_path, capsys):
    kaggle = load_table(synth_data, "train", need_rle=True)
    folder = export_kaggle_annotations(synth_data, tmp_path / "ann", ids=list(kaggle["id"].iloc[:6]))
    # one image becomes partially annotated, another gets a self-intersecting (bow-tie) polygon
    first, second = (folder / f"{i}.geojson" for i in kaggle["id"].iloc[:2])
    data = json.loads(first.read_text())
    data["features"].append(qupath_feature([rect(0, 0, 60, 60)], name="Region*"))
    write_json(first, data)
    data = json.loads(second.read_text())
    data["features"].append(qupath_feature([[[0, 0], [20, 20], [20, 0], [0, 20], [0, 0]]], name="Crypt"))
    write_json(second, data)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", folder, "--out", run, "--preset", "tiled", "--encoder", "resnet18",
                           "--tile-size", "64", "--batch-size", "4", "--tiles-per-epoch", "8", "--epochs", "2",
                           "--lr", "1e-3", "--val-fraction", "0.3", "--max-steps", "3", "-q")
    assert code == 0, err
    assert [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if line.startswith("ftuseg: warning: ")]
    bowtie = [line for line in err.splitlines() if "invalid polygon" in line]
    assert len(bowtie) == 1 and str(second) in bowtie[0] and "make_valid" in bowtie[0]
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "split.json"):
        assert (run / name).exists(), name
    log = pd.read_csv(run / "metrics.csv")
    assert log["val_dice"].notna().all() and np.isfinite(log["train_loss"]).all()
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(kaggle["id"].iloc[:6])


def test_specialists_train_on_the_organs_an_annotation_folder_has(synth_data, tmp_path):
    from ftuseg.training.trainer import split_table

    kaggle = load_table(synth_data, "train", need_rle=True)
    ids = list(kaggle[kaggle["organ"] == "kidney"]["id"].iloc[:3])
    folder = export_kaggle_annotations(synth_data, tmp_path / "ann", ids=ids)
    table, train_idx, val_idx = split_table(tiny_config(organs=["kidney", "lung"]), folder)
    assert set(table.iloc[np.r_[train_idx, val_idx]]["organ"]) == {"kidney"}
    with pytest.raises(FtusegError, match="no image of organ spleen .*give --organ"):
        split_table(tiny_config(organs=["spleen"]), folder)


def test_config_fields_carry_the_flags(tmp_path):
    cfg = tiny_config(data_pixel_size="0.5", data_organ="kidney")
    assert cfg.data_pixel_size == 0.5 and cfg.data_organ == "kidney"
    with pytest.raises(FtusegError, match="data_pixel_size must be positive"):
        tiny_config(data_pixel_size=-1)


# ------------------------------------------------------------------------------------------------ bad annotations
def bowtie_folder(folder: Path) -> None:
    make_image(folder / "a.png", 100, 100)
    write_json(folder / "a.geojson", collection(qupath_feature([[[10, 10], [50, 50], [50, 10], [10, 50], [10, 10]]])))


def test_self_intersection_is_repaired_with_one_warning(folder, capsys):
    bowtie_folder(folder)
    code, out, _ = run_cli(capsys, "check", folder, "--pixel-size", "0.5")
    assert code == 0
    (line,) = check_lines(out, "warning")
    assert str(folder / "a.geojson") in line and "feature 1 (Glomerulus) at x=10, y=10" in line
    assert "Self-intersection" in line and "repaired with shapely make_valid" in line
    with pytest.warns(FtusegWarning, match="invalid polygon"):
        table = load_table(folder, pixel_size=0.5)
    mask = read_row_mask(table.iloc[0])
    assert mask[20, 15] == 1 and mask[15, 30] == 0 and mask[45, 30] == 0  # the two triangles, nothing between


def test_feature_without_geometry_is_one_warning(folder, capsys):
    make_image(folder / "a.png", 100, 100)
    feature = qupath_feature([rect(0, 0, 10, 10)])
    write_json(folder / "a.geojson", collection(feature, {**feature, "geometry": None}))
    code, out, _ = run_cli(capsys, "check", folder, "--pixel-size", "0.5")
    assert code == 0
    assert check_lines(out, "warning") == [f"warning: {folder / 'a.geojson'}: feature 2 has no geometry; ignored"]


def test_polygons_over_the_border_are_clipped_with_one_warning(folder, capsys):
    make_image(folder / "a.png", 100, 100)
    write_json(folder / "a.geojson", collection(qupath_feature([rect(90, 90, 103, 103)]),
                                                qupath_feature([rect(10, 10, 20, 20)])))
    code, out, _ = run_cli(capsys, "check", folder, "--pixel-size", "0.5")
    assert code == 0
    (line,) = check_lines(out, "warning")
    assert "1 polygon reach outside the image (100x100 WxH) and is clipped" in line
    with pytest.warns(FtusegWarning):
        mask = read_row_mask(load_table(folder, pixel_size=0.5).iloc[0])
    assert int(mask.sum()) == 100 + 100


@pytest.mark.parametrize("scale", [4.0, 0.25])
def test_geojson_in_another_coordinate_space(folder, capsys, scale):
    """A GeoJSON exported from a 4x larger image is an error; one drawn on a 4x smaller one is a warning."""
    make_image(folder / "a.png", 120, 160)
    boxes = [(8, 8, 40, 40), (100, 60, 140, 100), (60, 80, 90, 110)]
    write_json(folder / "a.geojson", collection(*[qupath_feature([rect(*(v * scale for v in b))]) for b in boxes]))
    if scale > 1:
        line = assert_check_error(capsys, folder, str(folder / "a.geojson"), "another coordinate space",
                                  "reaching 3.67x the image size", "160x120", extra=["--pixel-size", "0.5"])
        assert "x=32..560, y=32..440" in line
        assert_train_error(capsys, folder, str(folder / "a.geojson"), "another coordinate space",
                           extra=["--pixel-size", "0.5"])
    else:
        code, out, _ = run_cli(capsys, "check", folder, "--pixel-size", "0.5")
        assert code == 0
        (line,) = check_lines(out, "warning")
        assert "top-left quarter" in line and "downsampled" in line


def test_empty_annotation_file(folder, capsys):
    make_image(folder / "a.png")
    (folder / "a.geojson").write_text("")
    assert_check_error(capsys, folder, str(folder / "a.geojson"), "annotation file is empty",
                       extra=["--pixel-size", "1"])
    assert_train_error(capsys, folder, str(folder / "a.geojson"), "annotation file is empty",
                       extra=["--pixel-size", "1"])


def test_empty_mask_file_and_mask_of_another_size(folder, capsys):
    make_image(folder / "a.png", 100, 120)
    (folder / "a_mask.png").write_bytes(b"")
    assert_check_error(capsys, folder, str(folder / "a_mask.png"), "mask file is empty", extra=["--pixel-size", "1"])
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(folder / "a_mask.png")
    needles = (str(folder / "a_mask.png"), "mask is 50x60 (HxW) but its image is 100x120")
    assert_check_error(capsys, folder, *needles, extra=["--pixel-size", "1"])
    assert_train_error(capsys, folder, *needles, extra=["--pixel-size", "1"])


def test_invalid_json_and_not_geojson(folder, capsys):
    make_image(folder / "a.png")
    (folder / "a.geojson").write_text('{"type": "FeatureCollection", "features": [')
    assert_train_error(capsys, folder, str(folder / "a.geojson"), "not valid JSON", extra=["--pixel-size", "1"])
    (folder / "a.geojson").write_text('{"hello": 1}')
    assert_check_error(capsys, folder, "not GeoJSON: expected a FeatureCollection", extra=["--pixel-size", "1"])


def test_missing_pixel_size_is_one_clear_error(folder, capsys):
    make_image(folder / "a.png")
    write_json(folder / "a.geojson", collection())
    assert_train_error(capsys, folder, str(folder / "a.png"), "no pixel size", "--pixel-size")
    assert_check_error(capsys, folder, str(folder / "a.png"), "no pixel size")


def test_two_annotations_for_one_image_and_orphans(folder, capsys):
    make_image(folder / "a.png")
    write_json(folder / "a.geojson", collection())
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(folder / "a_mask.png")
    write_json(folder / "zz.geojson", collection())
    make_image(folder / "b.png")
    line = assert_check_error(capsys, folder, str(folder / "a.png"), "several annotations (a.geojson, a_mask.png)",
                              extra=["--pixel-size", "1"])
    assert line.startswith("error:")
    code, out, _ = run_cli(capsys, "check", folder, "--pixel-size", "1")
    warns = check_lines(out, "warning")
    assert any("zz.geojson" in w and "no image zz" in w for w in warns)
    assert any(str(folder / "b.png") in w and "no annotation beside it" in w for w in warns)


def test_annotations_csv_problems_name_the_row(folder, capsys):
    make_image(folder / "a.png")
    write_json(folder / "a.geojson", collection())
    pd.DataFrame({"image": ["a.png", "missing.png"], "pixel_size": [0.5, 0.5]}).to_csv(
        folder / "annotations.csv", index=False)
    needles = (str(folder / "annotations.csv"), "row 3", "column image", "image 'missing.png' not found")
    assert_check_error(capsys, folder, *needles)
    assert_train_error(capsys, folder, *needles)
    pd.DataFrame({"image": ["a.png"], "pixel_size": ["-2"]}).to_csv(folder / "annotations.csv", index=False)
    assert_check_error(capsys, folder, "row 2", "column pixel_size", "must be a positive number")


def test_folder_without_annotated_images(folder, capsys):
    make_image(folder / "a.png")
    assert_train_error(capsys, folder, str(folder), "no annotated image found", extra=["--pixel-size", "1"])


def test_rois_outside_the_image_are_an_error(folder, capsys):
    make_image(folder / "a.png", 100, 100)
    write_json(folder / "a.geojson", collection(qupath_feature([rect(101, 0, 104, 4)], name="Region*"),
                                                qupath_feature([rect(10, 10, 20, 20)])))
    assert_check_error(capsys, folder, "Region* or ROI annotations cover no pixel", extra=["--pixel-size", "1"])


def test_annotation_warnings_print_as_one_line_each(folder, capsys):
    from ftuseg.errors import one_line_warnings

    bowtie_folder(folder)
    make_image(folder / "b.png")
    with one_line_warnings():
        warnings.simplefilter("always")
        load_table(folder, pixel_size=1.0)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("ftuseg: warning: ") for line in lines), err
    assert any("invalid polygon" in line for line in lines) and any("no annotation beside it" in line for line in lines)

