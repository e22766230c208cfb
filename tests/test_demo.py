"""The main job's second part: the shipped glomeruli model on a real kidney image it never saw."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
@pytest.mark.realdata
def test_shipped_model_outlines_the_glomeruli_of_an_unseen_real_image(ftu_bench, tmp_path):
    from ftuseg.demo import SHIPPED_DEMO_IMAGE, SHIPPED_DEMO_MODEL, run_shipped_demo
    from ftuseg.zoo.registry import list_models

    if SHIPPED_DEMO_MODEL not in {m.name for m in list_models()}:
        pytest.skip(f"{SHIPPED_DEMO_MODEL} is not shipped")
    result = run_shipped_demo(ftu_bench, tmp_path, progress=False)
    assert result["image"] == SHIPPED_DEMO_IMAGE
    # the card reports ~0.87-0.89 on the locked fold's HuBMAP images; an untrained network scores ~0.1
    assert result["dice"] > 0.75
    assert abs(result["objects_predicted"] - result["objects_true"]) <= 3
    geojson = json.loads((tmp_path / SHIPPED_DEMO_IMAGE / f"{SHIPPED_DEMO_IMAGE}.geojson").read_text())
    feats = geojson["features"]
    assert all(f["properties"]["classification"]["name"].lower() == "glomerulus" for f in feats)
    assert json.loads((tmp_path / "shipped_demo.json").read_text())["dice"] == pytest.approx(result["dice"])
