"""A pretrained teacher by name: torchvision's weights API and torch hub's cache (offline: one
line naming the file and where to put it), timm's ``pretrained``; checked with no network."""

from __future__ import annotations

import re
import sys
import types
import urllib.error

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from horkd.config import ConfigError, config_from_dict
from horkd.models import build_model

# the file torchvision's MobileNet_V3_Small_Weights.IMAGENET1K_V1 downloads, as torch hub names it
FILE = "mobilenet_v3_small-047dcff4.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache, and no network: a download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def _cached_weights(torch_home) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's shapes with values of our own, where torch hub keeps it."""
    assert tvm.get_model_weights("mobilenet_v3_small").DEFAULT.url.endswith(FILE)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in tvm.mobilenet_v3_small().state_dict().items()}
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, torch_home / "hub" / "checkpoints" / FILE)
    return state


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1",
                                  "MobileNet_V3_Small_Weights.IMAGENET1K_V1"])
def test_named_weights_load_from_torch_hubs_cache(torch_home, name):
    state = _cached_weights(torch_home)
    model = build_model("tv_mobilenet_v3_small", num_classes=4, weights_path=name)
    loaded = model.backbone.net.state_dict()
    for key in ("features.0.0.weight", "features.12.0.weight"):
        assert torch.equal(loaded[key], state[key]), key
    # a grey model takes the RGB stem summed over its colours
    grey = build_model("tv_mobilenet_v3_small", num_classes=4, in_channels=1, weights_path=name)
    stem = grey.backbone.net.features[0][0].weight
    assert torch.allclose(stem, state["features.0.0.weight"].sum(1, keepdim=True))


def test_offline_without_the_file_one_line_names_it_and_where_it_goes(torch_home):
    with pytest.raises(ValueError) as err:
        build_model("tv_mobilenet_v3_small", num_classes=4, weights_path="DEFAULT")
    message = str(err.value)
    assert "\n" not in message and "no network" in message
    assert f"put it at {torch_home / 'hub' / 'checkpoints' / FILE}" in message
    assert f"https://download.pytorch.org/models/{FILE}" in message


@pytest.mark.parametrize(("arch", "weights", "says"), [
    ("tv_resnet18", "IMAGENET1K_V9", "torchvision has IMAGENET1K_V1, DEFAULT"),
    ("tv_resnet18", "ResNet50_Weights.DEFAULT", "are not resnet18's"),
    ("resnet20", "DEFAULT", "torchvision (tv_*) and timm (timm:*) architectures have"),
    ("timm:resnet18", "IMAGENET1K_V1", "a timm model takes weights DEFAULT"),
])
def test_a_weights_name_the_arch_lacks_is_refused_when_the_config_loads(arch, weights, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        config_from_dict({"teacher": {"arch": arch, "weights": weights}})


def test_a_path_is_still_a_weights_file():
    with pytest.raises(FileNotFoundError, match="model weights file not found"):
        build_model("tv_mobilenet_v3_small", num_classes=4, weights_path="weights/DEFAULT.pth")


def test_timm_default_is_timms_pretrained(monkeypatch):
    asked = {}

    class Net(nn.Module):
        num_features = 8

        def forward(self, x):
            return x.mean((2, 3)).repeat(1, 8)[:, :8]

    def create_model(name, pretrained=False, **kwargs):
        asked.update(name=name, pretrained=pretrained)
        if name == "offline":
            raise RuntimeError("cannot reach huggingface.co")
        return Net()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    build_model("timm:tiny", num_classes=3, weights_path="DEFAULT")
    assert asked == {"name": "tiny", "pretrained": True}
    build_model("timm:tiny", num_classes=3)
    assert asked["pretrained"] is False  # nothing fetched unasked
    with pytest.raises(ValueError, match="timm could not load the pretrained weights of offline"):
        build_model("timm:offline", num_classes=3, weights_path="DEFAULT")
