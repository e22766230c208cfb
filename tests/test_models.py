import pytest
import torch

from conftest import tiny_config
from ftuseg.errors import FtusegError
from ftuseg.models.factory import build_model


@pytest.mark.parametrize("encoder", ["resnet34", "efficientnet-b0", "tu-convnext_tiny", "mit_b0"])
def test_encoders_build_and_segment(encoder):
    model = build_model(tiny_config(encoder=encoder)).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()


def test_local_torchvision_checkpoint_loads_into_the_encoder(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(tiny_config(encoder="resnet18", encoder_weights=str(path)))
    assert torch.equal(model.encoder.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_checkpoint_of_another_backbone_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}}, path)
    with pytest.raises(FtusegError, match="no tensor matches"):
        build_model(tiny_config(encoder="resnet18", encoder_weights=str(path)))


def test_missing_weights_file_and_offline_imagenet_fail_clearly(monkeypatch):
    with pytest.raises(FtusegError, match="not found"):
        build_model(tiny_config(encoder_weights="/nonexistent/w.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FtusegError, match="offline"):
        build_model(tiny_config(encoder="resnet18", encoder_weights="imagenet"))


def test_unknown_encoder_is_clear():
    with pytest.raises(FtusegError, match="unknown encoder"):
        build_model(tiny_config(encoder="resnet9000"))
