"""Every registered model returns (embedding, logits); weights load from users' files."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from horkd.models import ModelOutput, build_model, list_models
from horkd.registry import UnknownNameError

CIFAR_RESNETS = [f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)]
SMALL_CNNS = ["cnn_tiny", "cnn_small"]
TORCHVISION = [
    "tv_resnet18",
    "tv_resnet34",
    "tv_resnet50",
    "tv_mobilenet_v2",
    "tv_mobilenet_v3_small",
    "tv_mobilenet_v3_large",
    "tv_shufflenet_v2_x1_0",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs on a busy 2-core machine: OpenMP threads fighting cost 100x, one thread is fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_everything_asked_for_is_registered():
    assert set(CIFAR_RESNETS + SMALL_CNNS + TORCHVISION) <= set(list_models())


@pytest.mark.parametrize("arch", CIFAR_RESNETS + SMALL_CNNS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 7])
def test_small_models_any_size(arch, channels, size):
    model = build_model(arch, num_classes=5, in_channels=channels, embed_dim=12, width=4).eval()
    out = model(torch.rand(2, channels, size, size))
    assert isinstance(out, ModelOutput)
    assert out.embedding.shape == (2, 12) and out.logits.shape == (2, 5)
    assert model.in_channels == channels and model.embed_dim == 12 and model.num_classes == 5


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_cifar_resnet_depth_and_default_width(depth):
    backbone = build_model(f"resnet{depth}", 10).backbone
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 3x3 convs plus the classifier make the depth
    assert convs[0].stride == (1, 1) and convs[0].out_channels == 16
    assert backbone.out_features == 64


def test_small_cnn_default_widths_and_downsampling():
    tiny, small = build_model("cnn_tiny", 2).backbone, build_model("cnn_small", 2).backbone
    assert tiny.out_features == small.out_features == 64
    for backbone in (tiny, small):
        strides = [m.stride for m in backbone.modules() if isinstance(m, nn.Conv2d)]
        assert strides.count((2, 2)) == 2 and set(strides) == {(1, 1), (2, 2)}


def test_embedding_is_linear_and_embed_dim_none_uses_features():
    model = build_model("cnn_tiny", 3, 1, embed_dim=6, width=4).eval()
    assert (model(torch.rand(4, 1, 8, 8)).embedding < 0).any()  # no ReLU clipping the geometry
    model = build_model("cnn_tiny", 3, 1, embed_dim=None, width=4).eval()
    x = torch.rand(2, 1, 8, 8)
    out = model(x)
    assert model.embed_dim == model.backbone.out_features == 16
    assert torch.equal(out.embedding, model.backbone(x))


@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_models(arch):
    for channels in (1, 3):
        model = build_model(arch, num_classes=4, in_channels=channels, embed_dim=None).eval()
        with torch.no_grad():
            out = model(torch.rand(2, channels, 32, 32))
        assert out.embedding.shape == (2, model.backbone.out_features)
        assert out.logits.shape == (2, 4)
        assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.modules())


def test_unknown_kwargs_and_fixed_widths_raise_type_error():
    with pytest.raises(TypeError):
        build_model("resnet20", 3, depth_multiplier=2)
    with pytest.raises(TypeError):
        build_model("tv_mobilenet_v2", 3, not_an_option=1)
    with pytest.raises(TypeError, match="width"):
        build_model("tv_resnet18", 3, width=8)


def test_normalisation_is_first_layer():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]
    model = build_model("cnn_tiny", 3, 3, embed_dim=6, width=4, mean=mean, std=std).eval()
    x = torch.rand(2, 3, 9, 9)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = model.classifier(model.embed(model.backbone(normalised)))
    assert torch.allclose(model(x).logits, expected, atol=1e-6)
    assert not torch.allclose(model(x).logits, model.classifier(model.embed(model.backbone(x))))
    assert {"mean", "std"} <= set(model.state_dict())  # checkpoints carry the normalisation


def test_bad_normalisation_is_refused():
    with pytest.raises(ValueError, match="2 values but the model takes 3 channels"):
        build_model("cnn_tiny", 3, 3, width=4, mean=[0.5, 0.5], std=[0.2, 0.2])
    with pytest.raises(ValueError, match="positive"):
        build_model("cnn_tiny", 3, 1, width=4, mean=[0.5], std=[0.0])


def _torchvision_checkpoint(model: nn.Module) -> dict[str, torch.Tensor]:
    """A backbone's weights plus a 1000-class head, as users' torchvision files have them."""
    state = dict(model.backbone.net.state_dict())
    state["fc.weight"] = torch.randn(1000, model.backbone.out_features)
    state["fc.bias"] = torch.randn(1000)
    return state


def _assert_same_backbone(a: nn.Module, b: nn.Module) -> None:
    other = b.backbone.state_dict()
    for key, value in a.backbone.state_dict().items():
        assert torch.equal(value, other[key]), key


def test_local_weights_pth_and_safetensors(tmp_path):
    source = build_model("tv_resnet18", 10, 3)
    state = _torchvision_checkpoint(source)
    torch.save(state, tmp_path / "r18.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "dp.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "dp.pt", "r18.safetensors"):
        loaded = build_model("tv_resnet18", 10, 3, weights_path=tmp_path / name)
        _assert_same_backbone(source, loaded)


def test_mismatched_weights_name_the_keys(tmp_path):
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \(\d+\): bn1\.weight"):
        build_model("tv_resnet18", 10, 3, weights_path=tmp_path / "partial.pth")
    rgb = _torchvision_checkpoint(build_model("tv_resnet18", 10, 3))
    torch.save(rgb, tmp_path / "rgb.pth")
    with pytest.raises(ValueError, match=r"wrong shape \(1\): conv1\.weight"):
        build_model("tv_resnet18", 10, 1, weights_path=tmp_path / "rgb.pth")
    torch.save(rgb, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="unexpected"):
        build_model("tv_mobilenet_v3_small", 10, 3, weights_path=tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build_model("tv_resnet18", 10, 3, weights_path=tmp_path / "junk.pth")


def test_mobilenet_v3_keeps_its_pre_logit_layer_when_loading(tmp_path):
    source = build_model("tv_mobilenet_v3_small", 10, 3)
    state = dict(source.backbone.net.state_dict())
    assert "classifier.0.weight" in state  # part of the backbone, not the dropped classifier
    state["classifier.3.weight"] = torch.randn(1000, 1024)
    state["classifier.3.bias"] = torch.randn(1000)
    torch.save(state, tmp_path / "mnv3.pth")
    _assert_same_backbone(
        source, build_model("tv_mobilenet_v3_small", 10, 3, weights_path=tmp_path / "mnv3.pth")
    )


def test_own_backbone_weights_load(tmp_path):
    source = build_model("resnet8", 10, 1, width=4)
    torch.save(source.backbone.state_dict(), tmp_path / "r8.pth")
    _assert_same_backbone(
        source, build_model("resnet8", 10, 1, width=4, weights_path=tmp_path / "r8.pth")
    )


def test_trace_and_unknown_name():
    model = build_model("resnet8", 3, 1, embed_dim=8, width=4).eval()
    x = torch.rand(2, 1, 7, 7)
    traced = torch.jit.trace(model, x)
    y = torch.rand(3, 1, 7, 7)  # another batch size: the trace must not have baked one in
    assert torch.allclose(traced(y)[1], model(y).logits, atol=1e-6)
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet"):
        build_model("resnet21", 3)


def test_timm_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail as if absent
    with pytest.raises(ImportError, match=r"pip install timm .*horkd\[timm\]"):
        build_model("timm:resnet18", 3)


def test_timm_prefix_with_fake_timm(monkeypatch):
    class Fake(nn.Module):
        num_features = 7

        def __init__(self, in_chans: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_chans, 7, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    calls = {}

    def create_model(name, pretrained, num_classes, in_chans, **kwargs):
        calls.update(name=name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        return Fake(in_chans)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model = build_model("timm:convnext_atto", 4, 1, embed_dim=5, drop_rate=0.1).eval()
    assert calls == {
        "name": "convnext_atto",
        "pretrained": False,
        "num_classes": 0,
        "drop_rate": 0.1,
    }
    assert model.backbone.out_features == 7 and model.in_channels == 1
    assert model(torch.rand(2, 1, 8, 8)).logits.shape == (2, 4)
    with pytest.raises(TypeError, match="width"):
        build_model("timm:convnext_atto", 4, width=8)
    assert "timm:convnext_atto" not in list_models()
