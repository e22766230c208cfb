"""--engine auto on CPU: the faster engine on this machine wins, the answer is cached per CPU and network."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from ftuseg.config import make_config
from ftuseg.inference.engine_choice import choose_engine, engine_key


class FakeEngine:
    def __init__(self, delay: float, value: float):
        self.delay, self.value, self.calls = delay, value, 0

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay)
        return np.full(tiles.shape[:3], self.value, np.float32)


@pytest.fixture
def cfg():
    return make_config("tiled", tile_size=32, infer_batch_size=2)


def test_faster_engine_wins_and_is_remembered(cfg, tmp_path):
    cache = tmp_path / "choice.json"
    slow, fast = FakeEngine(0.03, 0.0), FakeEngine(0.0, 1.0)
    name, fn, record = choose_engine(cfg, False, {"torch": lambda: slow, "onnxruntime": lambda: fast}, cache)
    assert (name, fn, record["cached"]) == ("onnxruntime", fast, False)
    assert record["seconds_per_batch"]["torch"] > record["seconds_per_batch"]["onnxruntime"]
    assert json.loads(cache.read_text())[engine_key(cfg, False)]["engine"] == "onnxruntime"
    # the second time nothing is timed: only the winner is built, and it is not called
    built = []
    name2, fn2, record2 = choose_engine(cfg, False, {"torch": lambda: built.append("torch") or slow,
                                                     "onnxruntime": lambda: built.append("ort") or FakeEngine(0, 1)},
                                        cache)
    assert (name2, record2["cached"], built, fn2.calls) == ("onnxruntime", True, ["ort"], 0)


def test_the_winner_depends_on_the_network_shape(cfg, tmp_path):
    cache = tmp_path / "choice.json"
    choose_engine(cfg, False, {"torch": lambda: FakeEngine(0.03, 0), "onnxruntime": lambda: FakeEngine(0, 1)}, cache)
    bigger = cfg.replace(tile_size=64)
    name, _, record = choose_engine(bigger, False, {"torch": lambda: FakeEngine(0, 0),
                                                    "onnxruntime": lambda: FakeEngine(0.03, 1)}, cache)
    assert (name, record["cached"]) == ("torch", False)
    assert len(json.loads(cache.read_text())) == 2
    assert engine_key(cfg, False) != engine_key(cfg, True)  # TTA changes the work per tile


def test_an_engine_that_cannot_build_drops_out(cfg, tmp_path):
    def broken():
        raise RuntimeError("cannot export")

    name, fn, record = choose_engine(cfg, False, {"torch": lambda: FakeEngine(0, 0), "onnxruntime": broken},
                                     tmp_path / "c.json")
    assert name == "torch" and not record["cached"]
    assert not (tmp_path / "c.json").exists()  # nothing was compared, so nothing is remembered


def test_auto_engine_on_a_real_run_gives_the_torch_masks(tiny_tiled_run, tmp_path, monkeypatch):
    """Whichever engine auto picks, the probabilities are torch's to fp32 rounding."""
    pytest.importorskip("onnxruntime")
    from ftuseg.inference.predictor import Predictor

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tiny_run = shutil.copytree(tiny_tiled_run, tmp_path / "run")  # the ONNX export lands beside best.pt
    img = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    auto = Predictor.from_runs([tiny_run], device="cpu", engine="auto")
    ref = Predictor.from_runs([tiny_run], device="cpu", engine="torch")
    organ = auto.members[0].cfg.organs[0] if auto.members[0].cfg.organs else None
    np.testing.assert_allclose(auto.predict_proba(img, 0.5, organ), ref.predict_proba(img, 0.5, organ), atol=1e-4)
    assert (tmp_path / "ftuseg" / "engine_choice.json").exists()


def test_a_later_run_on_onnxruntime_never_imports_torch(tiny_tiled_run, tmp_path):
    """Once onnxruntime was chosen and the export exists, predicting needs neither torch nor smp."""
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys

    from ftuseg.config import load_config
    from ftuseg.export import export_run
    from ftuseg.inference.engine_choice import _write_cache

    run = shutil.copytree(tiny_tiled_run, tmp_path / "run")
    export_run(run, check=False)
    cfg = load_config(run / "config.yaml")
    cache = tmp_path / "cache"
    _write_cache(cache / "ftuseg" / "engine_choice.json", engine_key(cfg, cfg.tta), {"engine": "onnxruntime"})
    code = (
        "import sys, numpy as np\n"
        "from ftuseg.inference.predictor import Predictor\n"
        f"p = Predictor.from_runs([{str(run)!r}], device='auto', engine='auto')\n"
        "m = p.predict_mask(np.full((70, 90, 3), 200, np.uint8), 0.5)\n"
        "print(type(p.members[0].tile_fn).__name__, m.shape, 'torch' in sys.modules,"
        " 'segmentation_models_pytorch' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["OnnxTileFn", "(70,", "90)", "False", "False"]


def test_onnxruntime_runs_big_batches_in_chunks_with_the_same_result(tiny_tiled_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from ftuseg.export import export_run
    from ftuseg.inference.onnx_engine import OnnxTileFn

    run = shutil.copytree(tiny_tiled_run, tmp_path / "run")
    path = export_run(run, check=False).onnx_path
    tiles = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    whole = OnnxTileFn(path, max_run_pixels=None)(tiles)
    chunked = OnnxTileFn(path, max_run_pixels=2 * 64 * 64)  # 2 tiles per call: 3 calls
    calls = []
    real = chunked.session.run
    chunked.session = type("Spy", (), {"run": lambda self, *a: calls.append(len(a[1][chunked.input_name]))
                                       or real(*a)})()
    np.testing.assert_allclose(chunked(tiles), whole, atol=1e-6)
    assert calls == [2, 2, 1]
