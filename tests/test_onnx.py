"""ONNX export: same logits as torch (< 1e-3), dynamic batch/height/width, predict with onnxruntime."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

# each test exports and runs U-Nets (several seconds on 2 cores); the error test stays fast
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_tiled_run, tmp_path_factory):
    from ftuseg.cli import main

    run = tmp_path_factory.mktemp("onnx") / "run"
    shutil.copytree(tiny_tiled_run, run)
    out = run.parent / "model.onnx"
    assert main(["export", str(run), "--onnx", str(out), "--quiet"]) == 0
    return run, out


@slow
def test_export_matches_torch_with_dynamic_shapes(exported):
    import onnxruntime as ort

    from ftuseg.models.checkpoint import load_run_model

    run, path = exported
    model, _ = load_run_model(run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    gen = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 64, 64), (3, 3, 96, 160), (2, 3, 128, 64)]:  # batch, height, width all vary
        x = torch.rand(*shape, generator=gen) * 255
        with torch.inference_mode():
            ref = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == (shape[0], 1, shape[2], shape[3])
        assert np.abs(got - ref).max() < 1e-3


@slow
def test_onnx_tile_fn_matches_torch_tile_fn_and_exports_on_demand(exported):
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.onnx_engine import OnnxTileFn
    from ftuseg.models.checkpoint import load_run_model

    run, _ = exported
    # other tests may already have predicted with --engine auto (onnxruntime on CPU), exporting it
    (run / "model.onnx").unlink(missing_ok=True)
    onnx_fn = OnnxTileFn.for_run(run, tta=True)
    assert (run / "model.onnx").is_file()  # exported on demand into the run folder
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left behind
    model, _ = load_run_model(run)
    torch_fn = TorchTileFn(model, "cpu", tta=True)
    tiles = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    a, b = onnx_fn(tiles), torch_fn(tiles)
    assert a.shape == b.shape == (3, 64, 64) and a.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    d4 = OnnxTileFn.for_run(run, tta="d4")(tiles)
    assert np.abs(d4 - TorchTileFn(model, "cpu", tta="d4")(tiles)).max() < 1e-4
    assert np.abs(d4 - a).max() > 1e-3  # the transposed passes changed something
    # a newer checkpoint makes the exported file stale: it is exported again
    mtime = (run / "model.onnx").stat().st_mtime_ns
    (run / "best.pt").touch()
    import os
    import time

    future = time.time() + 5
    os.utime(run / "best.pt", (future, future))
    OnnxTileFn.for_run(run)
    assert (run / "model.onnx").stat().st_mtime_ns != mtime


@slow
def test_predict_with_onnxruntime_engine_equals_torch(exported, synth_data):
    from ftuseg.inference.predictor import Predictor
    from ftuseg.io.dataset import load_table, read_row_image

    run, _ = exported
    table = load_table(synth_data, "train").head(2)
    p_torch = Predictor.from_runs([run], device="cpu", engine="torch")
    p_onnx = Predictor.from_runs([run], device="cpu", engine="onnxruntime")
    for _, row in table.iterrows():
        img = read_row_image(row)
        a = p_torch.predict_proba(img, float(row["pixel_size"]), row.get("organ"))
        b = p_onnx.predict_proba(img, float(row["pixel_size"]), row.get("organ"))
        assert a.shape == b.shape == img.shape[:2]
        assert np.abs(a - b).max() < 1e-4


def test_export_errors_are_one_line(tmp_path):
    from ftuseg.errors import FtusegError
    from ftuseg.export import export_run
    from ftuseg.inference.onnx_engine import OnnxTileFn

    with pytest.raises(FtusegError, match="run folder not found"):
        export_run(tmp_path / "nope")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(FtusegError, match="cannot load ONNX model"):
        OnnxTileFn(bad)


@slow
def test_read_only_run_folder_exports_to_the_user_cache(exported, tmp_path, monkeypatch):
    import ftuseg.export as export_mod
    from ftuseg.errors import FtusegError
    from ftuseg.inference.onnx_engine import OnnxTileFn

    run, _ = exported
    ro = tmp_path / "ro_run"
    shutil.copytree(run, ro, ignore=shutil.ignore_patterns("*.onnx"))
    real = export_mod.export_run

    def refuse_run_dir(ckpt, onnx_path=None, **kw):  # root ignores chmod, so simulate the read-only mount
        if onnx_path is not None and ro in onnx_path.parents:
            raise FtusegError(f"{onnx_path}: output folder {ro} is not writable (read-only file system)")
        return real(ckpt, onnx_path, **kw)

    monkeypatch.setattr(export_mod, "export_run", refuse_run_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fn = OnnxTileFn.for_run(ro)
    assert fn.path.parent == tmp_path / "cache" / "ftuseg" / "onnx" and fn.path.is_file()
    assert not (ro / "model.onnx").exists()
    assert OnnxTileFn.for_run(ro).path == fn.path  # found again without exporting
