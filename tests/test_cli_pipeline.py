"""The seed pipeline through the command line: baseline, evaluate, train, lr-find, predict."""

import json

import numpy as np
import pandas as pd
import pytest

from ftuseg.cli import main
from ftuseg.inference.predictor import Predictor
from ftuseg.io.dataset import load_table, read_row_image
from ftuseg.rle import decode_rle, encode_rle


def test_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("synth", "baseline", "evaluate", "lr-find", "train", "predict", "tune-thresholds", "demo"):
        assert verb in out


def test_synth_is_deterministic(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "a"), "--n-train", "3", "--n-test", "1", "-q"]) == 0
    assert main(["synth", "--out", str(tmp_path / "b"), "--n-train", "3", "--n-test", "1", "-q"]) == 0
    for name in ("train.csv", "test.csv", "test_solution.csv", "meta.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    t = pd.read_csv(tmp_path / "a" / "train.csv")
    assert t["rle"].str.len().gt(0).all() and t["pixel_size"].between(0.2, 1.0).all()


def test_baseline_is_seeded_and_about_half_the_pixels(synth_data, tmp_path):
    a, b, c = (tmp_path / f"{n}.csv" for n in "abc")
    assert main(["baseline", str(synth_data), "--out", str(a), "-q"]) == 0
    assert main(["baseline", str(synth_data), "--out", str(b), "-q"]) == 0
    assert main(["baseline", str(synth_data), "--out", str(c), "--seed", "1", "-q"]) == 0
    assert a.read_text() == b.read_text() != c.read_text()
    sub = pd.read_csv(a, dtype={"id": str})
    truth = pd.read_csv(synth_data / "test_solution.csv", dtype={"id": str})
    assert list(sub["id"]) == list(truth["id"])
    row = truth.iloc[0]
    mask = decode_rle(sub["rle"].iloc[0], (row["img_height"], row["img_width"]))
    assert 0.35 < mask.mean() < 0.65


def test_evaluate_truth_against_itself_is_one(synth_data, tmp_path, capsys):
    truth = synth_data / "test_solution.csv"
    sub = tmp_path / "sub.csv"
    pd.read_csv(truth)[["id", "rle"]].to_csv(sub, index=False)
    assert main(["evaluate", str(sub), str(truth), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "organ=kidney" in out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["mean_dice"] == 1.0 and all(v["mean_dice"] == 1.0 for v in s["by_organ"].values())
    assert set(s["by_data_source"]) <= {"HPA", "HuBMAP"}
    o = s["objects"]
    assert o["truth_objects"] > 0 and o["matched"] == o["truth_objects"] == o["pred_objects"]
    assert o["missed"] == o["spurious"] == 0 and o["recall"] == o["precision"] == 1.0
    assert "found" in out and "spurious" in out


def test_evaluate_counts_missed_and_spurious_objects(synth_data, tmp_path):
    """One true FTU left out and one false square added: one missed, one spurious, the rest found."""
    import cv2

    truth = pd.read_csv(synth_data / "test_solution.csv")
    row = truth.iloc[0]
    shape = (int(row["img_height"]), int(row["img_width"]))
    mask = decode_rle(row["rle"], shape)
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    assert n >= 3  # at least two FTUs, so that some are still found
    pred = (labels > 1).astype(np.uint8)  # object 1 left out
    far = cv2.dilate(mask, np.ones((25, 25), np.uint8)) == 0
    ys, xs = np.nonzero(far[:-12, :-12] & far[12:, 12:])
    pred[ys[0]:ys[0] + 12, xs[0]:xs[0] + 12] = 1  # a square away from every true FTU
    sub = truth[["id", "rle"]].copy()
    sub.loc[0, "rle"] = encode_rle(pred)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    assert main(["evaluate", str(tmp_path / "sub.csv"), str(synth_data), "--json", str(tmp_path / "s.json"),
                 "--per-image", str(tmp_path / "per.csv"), "-q"]) == 0
    per = pd.read_csv(tmp_path / "per.csv").iloc[0]
    assert (per["truth_objects"], per["matched"], per["missed"], per["spurious"]) == (n - 1, n - 2, 1, 1)
    o = json.loads((tmp_path / "s.json").read_text())["objects"]
    assert (o["missed"], o["spurious"]) == (1, 1)
    organ = o["by_organ"][str(row["organ"])]
    assert organ["missed"] == 1 and organ["recall"] < 1 and organ["precision"] < 1


def test_evaluate_missing_prediction_counts_as_empty(synth_data, tmp_path):
    truth = pd.read_csv(synth_data / "test_solution.csv")
    sub = tmp_path / "sub.csv"
    truth[["id", "rle"]].iloc[1:].to_csv(sub, index=False)
    assert main(["evaluate", str(sub), str(synth_data), "--json", str(tmp_path / "s.json"), "-q"]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["missing_predictions"] == 1
    assert s["mean_dice"] == pytest.approx((len(truth) - 1) / len(truth))


@pytest.mark.slow
def test_train_then_predict_writes_a_valid_submission(synth_data, tmp_path):
    run = tmp_path / "run"
    args = ["--encoder", "resnet18", "--image-size", "64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "1", "-q"]
    assert main(["train", str(synth_data), "--out", str(run), *args]) == 0
    sub = tmp_path / "sub.csv"
    assert main(["predict", str(run), str(synth_data), "--out", str(sub), "-q"]) == 0
    df = pd.read_csv(sub, dtype={"id": str}).fillna("")
    truth = pd.read_csv(synth_data / "test_solution.csv", dtype={"id": str})
    assert list(df.columns) == ["id", "rle"] and list(df["id"]) == list(truth["id"])
    # each row is the library's mask of that image, at its own size (the CLI adds nothing of its own)
    table = load_table(synth_data, "test")
    single = Predictor.from_runs([run], engine="auto")
    expected = {row["id"]: single.predict_mask(read_row_image(row), row["pixel_size"], row["organ"])
                for _, row in table.iterrows()}
    for (_, p), (_, t) in zip(df.iterrows(), truth.iterrows(), strict=True):
        np.testing.assert_array_equal(decode_rle(p["rle"], (t["img_height"], t["img_width"])), expected[p["id"]])
    # an ensemble of the same run twice with TTA is the run with TTA alone
    sub2 = tmp_path / "sub2.csv"
    assert main(["predict", str(run), str(run), str(synth_data), "--out", str(sub2), "--tta", "-q"]) == 0
    with_tta = Predictor.from_runs([run], engine="auto", tta=True)
    df2 = pd.read_csv(sub2, dtype={"id": str}).fillna("")
    assert list(df2["id"]) == list(truth["id"])
    for _, row in table.iterrows():
        mask = with_tta.predict_mask(read_row_image(row), row["pixel_size"], row["organ"])
        assert df2.set_index("id").loc[row["id"], "rle"] == encode_rle(mask)


@pytest.mark.slow
def test_lr_find_cli_writes_plot_and_prints_suggestion(synth_data, tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert main(["lr-find", str(synth_data), "--out", str(png), "--iters", "6", "--encoder", "resnet18",
                 "--image-size", "64", "--batch-size", "4", "-q"]) == 0
    assert "suggested lr" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(png.with_suffix(".json").read_text())
    assert len(data["lrs"]) == 6 and np.isfinite(data["suggestion"])
