import pytest

from ftuseg.config import PRESETS, load_config, make_config
from ftuseg.errors import FtusegError


def test_presets_and_yaml_round_trip(tmp_path):
    cfg = make_config("seed-512")
    assert (cfg.mode, cfg.image_size, cfg.encoder, cfg.augment) == ("whole", 512, "resnet34", "flips")
    cfg2 = cfg.replace(epochs=3, organ_mpp={"kidney": 0.5})
    cfg2.save(tmp_path / "config.yaml")
    loaded = load_config(tmp_path / "config.yaml")
    assert loaded == cfg2


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 7\nencoder: efficientnet-b0\n")
    cfg = make_config("tiled", tmp_path / "c.yaml", epochs=9)
    assert cfg.mode == "tiled" and cfg.encoder == "efficientnet-b0" and cfg.epochs == 9


@pytest.mark.parametrize("bad", [dict(image_size=500), dict(mode="x"), dict(overlap=1.0), dict(lr="fast"),
                                 dict(target_mpp=0), dict(fold=9), dict(tta="rot90"), dict(ema_decay=1.0),
                                 dict(tta_scales="0"), dict(tta_scales="1,1"), dict(tta_scales="big"),
                                 dict(tta_scales=[]), dict(encoder_lr_scale=0), dict(encoder_lr_scale=11),
                                 dict(infer_tile_size=100), dict(infer_tile_size=16)])
def test_invalid_values_are_rejected(bad):
    with pytest.raises(FtusegError):
        make_config("seed-512", **bad)


def test_tta_takes_flip_d4_or_none_from_yaml_and_flags(tmp_path):
    from ftuseg.cli import build_parser

    assert make_config("tiled", tta="d4").tta == "d4"
    assert make_config("tiled", tta="flip").tta is True and make_config("tiled", tta="none").tta is False
    (tmp_path / "c.yaml").write_text("tta: d4\n")
    cfg = make_config("tiled", tmp_path / "c.yaml")
    cfg.save(tmp_path / "saved.yaml")
    assert cfg.tta == "d4" and load_config(tmp_path / "saved.yaml").tta == "d4"
    parse = build_parser().parse_args
    assert parse(["train", "data", "--out", "r", "--tta", "d4"]).cfg_tta == "d4"
    assert parse(["train", "data", "--out", "r", "--tta"]).cfg_tta is True
    assert parse(["train", "data", "--out", "r", "--no-tta"]).cfg_tta is False
    assert parse(["predict", "r", "data", "--out", "s.csv", "--tta", "d4"]).tta == "d4"
    with pytest.raises(SystemExit):
        parse(["predict", "r", "data", "--out", "s.csv", "--tta", "rot90"])


def test_tta_scales_from_yaml_flags_and_the_predict_option(tmp_path):
    from ftuseg.cli import build_parser

    assert make_config("tiled").tta_scales == [1.0]
    assert make_config("tiled", tta_scales="0.8, 1,1.25").tta_scales == [0.8, 1.0, 1.25]
    (tmp_path / "c.yaml").write_text("tta_scales: [0.8, 1]\n")
    cfg = make_config("tiled", tmp_path / "c.yaml")
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").tta_scales == [0.8, 1.0]
    assert cfg.scaled_mpps("kidney") == [cfg.mpp_for("kidney") * 0.8, cfg.mpp_for("kidney")]
    parse = build_parser().parse_args
    assert parse(["train", "data", "--out", "r", "--tta-scales", "0.8,1"]).cfg_tta_scales == "0.8,1"
    assert parse(["predict", "r", "data", "--out", "s.csv", "--tta-scales", "0.8,1,1.25"]).tta_scales == "0.8,1,1.25"


def test_unknown_field_and_preset(tmp_path):
    (tmp_path / "c.yaml").write_text("epochz: 7\n")
    with pytest.raises(FtusegError, match="epochz"):
        make_config("seed-512", tmp_path / "c.yaml")
    with pytest.raises(FtusegError, match="preset"):
        make_config("nope")
    assert "seed-512" in PRESETS


def test_every_config_field_has_a_cli_flag():
    from ftuseg.cli import build_parser
    from ftuseg.config import config_field_names

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for name in config_field_names():
        assert "--" + name.replace("_", "-") in flags, name


def test_small_image_zoom_fills_the_tile_within_its_bounds():
    from ftuseg.config import make_config

    cfg = make_config("tiled", tile_size=320, target_mpp=3.0, organ_mpp={}, small_image_zoom=2.0)
    assert cfg.image_mpp("kidney", 1024, 1024, 0.5) == 1.6  # a 0.5 mm crop: its 512 µm fill 320 px
    assert cfg.image_mpp("kidney", 1200, 1600, 1.0) == 3.0  # 400 px at 3 µm/px: more than a tile, unchanged
    assert cfg.image_mpp("kidney", 512, 2048, 0.5) == 1.5  # the shorter side decides; at most 2x finer
    assert cfg.image_mpp("kidney", 100, 100, 2.0) == 2.0  # never finer than the image's own pixels
    assert cfg.image_mpp("kidney", 100, 100, 6.0) == 3.0  # an image coarser than the target is not touched
    assert make_config("tiled", tile_size=320, target_mpp=3.0, organ_mpp={}).image_mpp("kidney", 1024, 1024, 0.5) == 3.0
    one = cfg.for_image("kidney", 1024, 1024, 0.5)
    assert (one.mpp_for("kidney"), one.small_image_zoom) == (1.6, 1.0) and cfg.mpp_for("kidney") == 3.0
    assert cfg.for_image("kidney", 1200, 1600, 1.0) is cfg
    with pytest.raises(FtusegError, match="small_image_zoom"):
        make_config("tiled", small_image_zoom=0.5)


def test_inference_window_defaults_to_the_training_tile():
    cfg = make_config("tiled", tile_size=256)
    assert cfg.infer_tile() == 256 and cfg.infer_margin_px() == round(256 * cfg.infer_margin)
    wide = make_config("tiled", tile_size=256, infer_tile_size=512, infer_margin=0.25)
    assert wide.infer_tile() == 512 and wide.infer_margin_px() == 128
