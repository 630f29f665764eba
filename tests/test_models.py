"""Every registered model returns (embedding, logits); weights load from users' files."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from horkd.models import BACKBONES, ModelOutput, build_model
from horkd.models.torchvision_models import TorchvisionBackbone
from horkd.registry import UnknownNameError

SMALL = [n for n in BACKBONES.names() if not n.startswith("tv_")]
TORCHVISION = [n for n in BACKBONES.names() if n.startswith("tv_")]


@pytest.mark.parametrize("arch", SMALL)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 7])
def test_small_models_any_size(arch, channels, size):
    width = 4 if arch.startswith("resnet") else None
    model = build_model(arch, num_classes=5, in_channels=channels, embed_dim=12, width=width)
    out = model.eval()(torch.rand(2, channels, size, size))
    assert isinstance(out, ModelOutput)
    assert out.embedding.shape == (2, 12) and out.logits.shape == (2, 5)


def test_embed_dim_none_uses_features():
    model = build_model("cnn_tiny", 3, 1, embed_dim=None, width=4).eval()
    out = model(torch.rand(2, 1, 8, 8))
    assert out.embedding.shape == (2, model.backbone.out_features) == (2, model.embed_dim)


@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_models(arch):
    for channels in (1, 3):
        model = build_model(arch, num_classes=4, in_channels=channels, embed_dim=8).eval()
        with torch.no_grad():
            out = model(torch.rand(2, channels, 32, 32))
        assert out.embedding.shape == (2, 8) and out.logits.shape == (2, 4)


def test_normalisation_is_first_layer():
    torch.manual_seed(0)
    model = build_model("cnn_tiny", 3, 3, embed_dim=6, width=4, mean=[0.5, 0.4, 0.3],
                        std=[0.2, 0.3, 0.4]).eval()
    x = torch.rand(2, 3, 9, 9)
    manual = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    expected = model.classifier(model.embed(model.backbone(manual)))
    assert torch.allclose(model(x).logits, expected, atol=1e-6)


def test_local_weights_pth_and_safetensors(tmp_path):
    source = build_model("tv_resnet18", 10, 3)
    state = dict(source.backbone.net.state_dict())
    state["fc.weight"] = torch.randn(1000, 512)  # as a torchvision checkpoint has them
    state["fc.bias"] = torch.randn(1000)
    torch.save(state, tmp_path / "r18.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        loaded = build_model("tv_resnet18", 10, 3, weights_path=tmp_path / name)
        for key, value in loaded.backbone.net.state_dict().items():
            assert torch.equal(value, source.backbone.net.state_dict()[key]), key
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        build_model("tv_resnet18", 10, 3, weights_path=tmp_path / "partial.pth")


def test_trace_and_unknown_name():
    model = build_model("resnet8", 3, 1, embed_dim=8, width=4).eval()
    x = torch.rand(2, 1, 7, 7)
    traced = torch.jit.trace(model, x)
    assert torch.allclose(traced(x)[1], model(x).logits)
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet"):
        build_model("resnet21", 3)


def test_timm_prefix(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        build_model("timm:resnet18", 3)

    class Fake(nn.Module):
        num_features = 7

        def __init__(self, in_chans):
            super().__init__()
            self.conv = nn.Conv2d(in_chans, 7, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    calls = {}

    def create_model(name, pretrained, num_classes, in_chans):
        calls.update(name=name, pretrained=pretrained, num_classes=num_classes)
        return Fake(in_chans)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model = build_model("timm:convnext_atto", 4, 1, embed_dim=5).eval()
    assert calls == {"name": "convnext_atto", "pretrained": False, "num_classes": 0}
    assert model(torch.rand(2, 1, 8, 8)).logits.shape == (2, 4)
    assert isinstance(model.backbone, nn.Module) and not isinstance(model.backbone,
                                                                     TorchvisionBackbone)
