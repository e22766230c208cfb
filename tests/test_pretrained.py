"""Offline ImageNet encoders: the mapped checkpoint must behave like an ImageNet network, not just load."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from ftuseg.config import make_config
from ftuseg.errors import FtusegError
from ftuseg.models import pretrained as P
from ftuseg.models.factory import build_model

pytest.importorskip(P.PRETRAINED["imagenet-lite0"].package, reason="ftuseg[pretrained] not installed")

LITE0 = P.PRETRAINED["imagenet-lite0"]
# ImageNet classes 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
CAT_CLASSES = set(range(281, 286))


# each checkpoint at the input size it was trained at (the TF release's)
TRAIN_SIZE = {"imagenet-lite0": 224, "imagenet-lite1": 240, "imagenet-lite2": 260}


def _installed(name: str) -> P.PretrainedSpec:
    spec = P.PRETRAINED[name]
    pytest.importorskip(spec.package, reason=f"{spec.pip_name} not installed")
    return spec


def _photo_batch(size: int = 224, spec: P.PretrainedSpec = LITE0) -> torch.Tensor:
    """scikit-image's photograph of Chelsea the cat, resized, with the checkpoint's own preprocessing."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(skimage_data.chelsea()).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 255.0
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def test_every_offline_checkpoint_is_tested():
    assert set(TRAIN_SIZE) == set(P.PRETRAINED)


@pytest.mark.parametrize("name", sorted(TRAIN_SIZE))
def test_mapped_classifier_sees_a_cat(name):
    spec = _installed(name)
    model = P.pretrained_classifier(name)
    with torch.no_grad():
        probs = model(_photo_batch(TRAIN_SIZE[name], spec)).softmax(1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES, f"no cat class in the top 5: {sorted(top5)}"
    assert int(probs.argmax()) in CAT_CLASSES and float(probs.max()) > 0.5


def test_a_randomly_initialised_classifier_does_not():
    """The check above would be empty if an untrained network also passed it."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(LITE0.timm_model, pretrained=False).eval()
    with torch.no_grad():
        probs = model(_photo_batch()).softmax(1)[0]
    assert float(probs.max()) < 0.2


@pytest.mark.parametrize("name", sorted(TRAIN_SIZE))
def test_segmentation_encoder_receives_every_tensor(name):
    spec = _installed(name)
    cfg = make_config("tiled", encoder=spec.encoder, encoder_weights=name)
    model = build_model(cfg)
    source = P.load_source_state(spec)
    classifier = P.pretrained_classifier(name).state_dict()
    enc = model.encoder.state_dict()
    # every encoder tensor equals the classifier's tensor of the same timm name
    for key, value in enc.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, classifier[key.removeprefix("model.")]), key
    # the checkpoint tensors the encoder leaves out are exactly the classification head
    head = {k for k in P.rename_to_timm(source, P.timm_block_ids(model.encoder.model))
            if k.startswith(("conv_head.", "bn2.", "classifier."))}
    body = {k.removeprefix("model.") for k in enc if not k.endswith("num_batches_tracked")}
    assert len(source) == len(body) + len(head)
    # the network normalises its input the way the checkpoint was trained
    assert torch.allclose(model.mean.flatten(), torch.full((3,), 127.0))
    assert torch.allclose(model.std.flatten(), torch.full((3,), 128.0))


def test_saved_run_rebuilds_without_loading_weights():
    cfg = make_config("tiled", encoder=LITE0.encoder, encoder_weights="imagenet-lite0")
    trained = build_model(cfg)
    rebuilt = build_model(cfg, load_weights=False)
    assert torch.equal(rebuilt.mean, trained.mean)  # same pre-processing
    rebuilt.load_state_dict(trained.state_dict())
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), trained.eval()(x))


def test_wrong_encoder_is_one_clear_line():
    with pytest.raises(FtusegError, match="fits encoder tu-tf_efficientnet_lite0"):
        build_model(make_config("tiled", encoder="resnet34", encoder_weights="imagenet-lite0"))


def test_checkpoint_of_another_shape_fails_loudly(monkeypatch):
    real = P.load_source_state

    def widened(spec):
        state = dict(real(spec))
        state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
        return state

    monkeypatch.setattr(P, "load_source_state", widened)
    with pytest.raises(FtusegError, match="another shape"):
        build_model(make_config("tiled", encoder=LITE0.encoder, encoder_weights="imagenet-lite0"))


def test_unused_checkpoint_tensor_fails_loudly(monkeypatch):
    real = P.load_source_state
    monkeypatch.setattr(P, "load_source_state", lambda spec: {**real(spec), "_extra.weight": torch.zeros(3)})
    with pytest.raises(FtusegError, match="no place"):
        P.pretrained_classifier("imagenet-lite0")


def test_missing_extra_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_wheel(name, *args, **kwargs):
        if name.startswith(LITE0.package):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wheel)
    monkeypatch.setattr(P.importlib, "import_module", lambda name: no_wheel(name))
    with pytest.raises(FtusegError, match=r"ftuseg\[pretrained\]"):
        P.checkpoint_path(LITE0)
