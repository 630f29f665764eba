"""Start-up cost of the commands that train nothing: ``horkd predict`` on one image, a config's
validation, ``study --status``. torchvision (whose model zoo pulls in torch's compiler),
scikit-learn and scipy take seconds to import; these paths must not import them at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from horkd.config import config_from_dict
from horkd.experiment import run_experiment
from horkd.inference.preprocess import ModelInput, image_tensor
from tests.conftest import tiny_config_dict

SLOW = ("torchvision", "sklearn", "scipy", "torch._dynamo")


def _imported_by(code: str, tmp_path: Path) -> list[str]:
    """The slow packages a fresh interpreter has imported after ``code``."""
    probe = code + "\nimport sys\nprint(sorted({m.split('.')[0] if not m.startswith('torch.') " \
        "else '.'.join(m.split('.')[:2]) for m in sys.modules}))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])  # a printed list of names
    return [name for name in SLOW if name in loaded]


def test_predict_and_config_validation_import_no_slow_package(tmp_path):
    raw = tiny_config_dict(tmp_path / "run", methods=["scratch"])
    raw["train"]["teacher"]["epochs"] = 0
    raw["train"]["student"]["epochs"] = 1
    run_experiment(config_from_dict(raw), progress=False, report=False)
    image = tmp_path / "one.png"
    Image.fromarray((np.arange(256).reshape(16, 16) % 251).astype(np.uint8)).save(image)
    model = tmp_path / "run/seed0/students/scratch"
    predict = f"from horkd.cli import main\nassert main(['predict', {str(model)!r}, {str(image)!r}]) == 0"
    assert _imported_by(predict, tmp_path) == []
    # a config naming a torchvision network and a folder dataset is checked without either
    validate = ("from horkd.config import config_from_dict\n"
                "config_from_dict({'data': {'dataset': 'image_folder', 'root': 'x'}, "
                "'teacher': {'arch': 'tv_resnet18'}})\n"
                "import horkd.study  # what study --status loads")
    assert _imported_by(validate, tmp_path) == []


def test_the_resize_without_torchvision_is_torchvisions():
    import torchvision.transforms.functional as TF

    pil = Image.fromarray((np.random.default_rng(0).random((23, 17, 3)) * 255).astype(np.uint8))
    model = ModelInput(channels=3, hr_size=11, lr_size=None, upsampled=False, degrade={}, seed=0)
    expected = TF.to_tensor(TF.resize(pil, [11, 11], antialias=True))
    assert torch.equal(image_tensor(pil, model, "hr"), expected)


def test_a_lazy_name_whose_module_fails_to_import_stays_known_and_says_why():
    """A missing optional dependency must not turn 'mnist' into an unknown dataset on the next
    lookup (the names were once dropped before the import was tried)."""
    import pytest

    from horkd.registry import Registry

    things: Registry[object] = Registry("thing", lazy={"odd": "horkd.no_such_module_here"})
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
            things.get("odd")
    assert "odd" in things and "odd" in things.names()


def test_an_lr_capture_is_shrunk_as_training_made_its_lr_images():
    """``--input lr``: a capture larger than the LR side is area-averaged down (PIL's BOX), as
    training's LR images were made (degrade.interpolation: area), not bilinear (off by ~15 grey
    levels on average at 2x)."""
    pil = Image.fromarray((np.random.default_rng(1).random((16, 16)) * 255).astype(np.uint8))
    model = ModelInput(channels=1, hr_size=32, lr_size=8, upsampled=False, degrade={}, seed=0)
    area = torch.nn.functional.avg_pool2d(
        torch.from_numpy(np.array(pil)).float()[None, None], 2)[0] / 255
    got = image_tensor(pil, model, "lr")
    assert got.shape == (1, 8, 8) and (got - area).abs().max() <= 1 / 255 + 1e-6
