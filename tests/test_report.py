"""``ftuseg report``: one self-contained HTML page, checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ftuseg.cli import main
from ftuseg.inference.inputs import PredictInput
from ftuseg.inference.predictor import Member, Predictor
from ftuseg.inference.slide import SlideOptions, predict_many
from ftuseg.report import build_report
from ftuseg.rle import encode_rle
from ftuseg.synth import synth_image

CHROMIUM = next((c for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if c and Path(c).exists()), None)


def dark_tiles(tiles: np.ndarray) -> np.ndarray:
    dark = 1.0 - tiles.astype(np.float32).mean(axis=-1) / 255.0
    return (1.0 / (1.0 + np.exp(-(dark - 0.33) * 40.0))).astype(np.float32)


@pytest.fixture(scope="module")
def prediction_dir(tmp_path_factory) -> Path:
    """Three small images (two organs) predicted with a stand-in model, with ground truth."""
    from ftuseg.config import make_config

    root = tmp_path_factory.mktemp("pred")
    imgs = root / "imgs"
    imgs.mkdir()
    items = []
    for i, organ in enumerate(("kidney", "spleen", "kidney")):
        img, truth = synth_image(np.random.default_rng(20 + i), organ, 160, 200, 0.5)
        Image.fromarray(img).save(imgs / f"im{i}.png")
        items.append(PredictInput(id=f"im{i}", image_path=imgs / f"im{i}.png", pixel_size=0.5, organ=organ,
                                  rle=encode_rle(truth)))
    cfg = make_config("tiled", tile_size=64, target_mpp=1.0, encoder="resnet18", infer_batch_size=16)
    out = root / "out"
    out.mkdir()
    predict_many(Predictor([Member(dark_tiles, cfg)]), items, out,
                 SlideOptions(formats=("overlay", "geojson")), progress=False)
    return out


def test_report_is_self_contained_with_dice_worst_first(prediction_dir):
    page = build_report(prediction_dir)
    assert page == prediction_dir / "report.html"
    html = page.read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 3 and all(s.startswith("data:image/") for s in srcs)  # one overlay per image
    assert "http://" not in html and "https://" not in html.replace("http://www.w3.org", "")
    table = pd.read_csv(prediction_dir / "predictions.csv")
    worst_first = table.sort_values("dice")["id"].tolist()
    per_image = html[html.index("Per image (worst first)"):]
    positions = [per_image.index(f">{i}<") for i in worst_first]
    assert positions == sorted(positions)
    assert "Per organ (worst first)" in html and "spleen" in html and "kidney" in html
    for n in table["n_objects"]:
        assert f">{n}<" in html


def test_report_cli_and_run_folder(tiny_run, tmp_path, capsys):
    out = tmp_path / "run_report.html"
    assert main(["report", str(tiny_run), "--out", str(out)]) == 0
    html = out.read_text()
    assert "Configuration" in html and "resnet18" in html
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(prediction_dir, tmp_path):
    page = build_report(prediction_dir, tmp_path / "r.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page's own script counts images that decoded (naturalWidth > 0) once loaded
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert total and loaded, dom.stdout[:500]
    assert int(total.group(1)) == 3 and int(loaded.group(1)) == 3
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1280)
    # overlays are pink tissue: plenty of saturated pixels, which a text-only page would not have
    sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1]
    assert (sat > 40).mean() > 0.02
