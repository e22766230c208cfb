"""Build networks from a :class:`RunConfig`; weights never come from a hub unless asked for."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ftuseg.config import RunConfig
from ftuseg.errors import FtusegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus",
                 "segformer": "Segformer", "manet": "MAnet"}


class FTUNet(nn.Module):
    """A segmentation network that takes RGB in [0, 255] (B, 3, H, W) and returns logits (B, 1, H, W).

    Normalisation lives inside the module so exported models (ONNX) need no pre-processing contract.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(cfg: RunConfig, load_weights: bool = True) -> FTUNet:
    """The network named by ``cfg`` (architecture + smp or ``tu-`` timm encoder), randomly initialised
    unless ``cfg.encoder_weights`` names an offline checkpoint (``imagenet-lite0``), a local file or
    ``imagenet`` (online only).

    The input normalisation follows the weights: an offline checkpoint brings its own (it is part of the
    run's config, so a saved run rebuilds the same network without loading the checkpoint again)."""
    import segmentation_models_pytorch as smp

    from ftuseg.models.pretrained import load_pretrained_encoder, pretrained_spec

    arch = ARCHITECTURES.get(cfg.arch.lower().replace("_", "").replace("-", ""))
    if arch is None:
        raise FtusegError(f"unknown architecture {cfg.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cls = getattr(smp, arch)
    spec = pretrained_spec(cfg.encoder_weights)
    if spec is not None and cfg.encoder != spec.encoder:
        raise FtusegError(f"--encoder-weights {spec.name} fits encoder {spec.encoder}, not {cfg.encoder!r}: "
                          f"add --encoder {spec.encoder}")
    weights = cfg.encoder_weights if load_weights else None
    hub = weights == "imagenet"
    if weights and not hub and spec is None and not Path(weights).exists():
        raise FtusegError(f"--encoder-weights {weights}: file not found")
    try:
        extra = {}
        if cfg.decoder_width != 1.0:
            if arch not in ("Unet", "UnetPlusPlus"):
                raise FtusegError(f"config: decoder_width applies to unet and unetplusplus, not {cfg.arch}")
            extra["decoder_channels"] = [max(4, int(round(c * cfg.decoder_width))) for c in (256, 128, 64, 32, 16)]
        net = cls(encoder_name=cfg.encoder, encoder_weights="imagenet" if hub else None, in_channels=3, classes=1,
                  **extra)
    except KeyError as exc:
        raise FtusegError(f"unknown encoder {cfg.encoder!r} ({exc})") from None
    except Exception as exc:
        if hub:
            raise FtusegError(
                f"cannot download imagenet weights for {cfg.encoder} ({type(exc).__name__}); you are probably "
                "offline: pass --encoder-weights PATH to a local checkpoint instead"
            ) from None
        if "encoder" in str(exc).lower() or "timm" in str(exc).lower() or "not found" in str(exc).lower():
            raise FtusegError(f"unknown encoder {cfg.encoder!r} ({str(exc).splitlines()[0]})") from None
        raise
    model = FTUNet(net, spec.mean, spec.std) if spec is not None else FTUNet(net)
    if weights and spec is not None:
        load_pretrained_encoder(model.encoder, spec.name)
    elif weights and not hub:
        load_encoder_weights(model, weights)
    return model


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap_state_dict(obj[key])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return tensors  # tolerate a few non-tensor entries (e.g. a saved epoch counter)
    raise FtusegError("checkpoint does not contain a state_dict")


# Classification heads and BN step counters are never part of the encoder we load into.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "head_drop.", "global_pool.")


def _is_ignorable(key: str) -> bool:
    return key.endswith("num_batches_tracked") or key.startswith(_HEAD_PREFIXES)


def load_encoder_weights(model: FTUNet, path: str | os.PathLike) -> tuple[int, int]:
    """Load a local torchvision/timm classification checkpoint (or an smp encoder state_dict) into the
    encoder. Classifier heads are dropped; returns (matched, total encoder tensors).

    Fails clearly on a checkpoint of another backbone: tensors with the right name but another shape,
    most encoder tensors left unmatched, or many checkpoint tensors with no place in the encoder (a
    deeper model of the same family) all mean the weights would load only partly, silently.
    """
    if not Path(path).is_file():
        raise FtusegError(f"--encoder-weights {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise FtusegError(f"--encoder-weights {path}: cannot read checkpoint ({reason})") from None
    try:
        state = _unwrap_state_dict(obj)
    except FtusegError as exc:
        raise FtusegError(f"--encoder-weights {path}: {exc}") from None
    # A whole segmentation checkpoint (e.g. an ftuseg run): keep its encoder, drop decoder and head.
    encoder_only = {k: v for k, v in state.items() if re.match(r"^(module\.)?(net\.)?encoder\.", k)}
    if encoder_only:
        state = encoder_only
    enc = model.encoder
    target = enc.state_dict()
    matched: dict[str, torch.Tensor] = {}
    wrong_shape: list[str] = []
    unused = 0
    for key, value in state.items():
        k = key
        for prefix in ("module.", "encoder.", "net.encoder.", "model.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        # timm-universal encoders ("tu-") nest the timm model under "model."
        for cand in (k, f"model.{k}"):
            if cand in target:
                if target[cand].shape == value.shape:
                    matched[cand] = value
                else:
                    wrong_shape.append(
                        f"{cand} {'x'.join(map(str, value.shape))} vs {'x'.join(map(str, target[cand].shape))}"
                    )
                break
        else:
            unused += not _is_ignorable(k)
    n_target = sum(not _is_ignorable(k) for k in target)
    n_matched = sum(not _is_ignorable(k) for k in matched)
    name = type(enc).__name__
    if not matched:
        raise FtusegError(
            f"--encoder-weights {path}: no tensor matches encoder {name}; is it a checkpoint of the same backbone?"
        )
    if wrong_shape or n_matched < 0.9 * n_target or unused > 0.1 * max(1, len(state)):
        detail = f"{len(wrong_shape)} with another shape (e.g. {wrong_shape[0]}), " if wrong_shape else ""
        raise FtusegError(
            f"--encoder-weights {path}: a checkpoint of another backbone? {n_matched} of {n_target} tensors of "
            f"encoder {name} fit, {detail}{unused} checkpoint tensors have no place in it"
        )
    enc.load_state_dict(matched, strict=False)
    return len(matched), len(target)
