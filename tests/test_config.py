"""Config validation fails before training, naming the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from horkd.config import ConfigError, config_from_dict, load_config


def test_defaults_and_overrides(tiny_cfg):
    cfg = config_from_dict(tiny_cfg, ["train.student.epochs=7", "degrade.lr_size=5"])
    assert cfg.train.student.epochs == 7
    assert cfg.degrade.lr_size == 5
    assert cfg.train.teacher.epochs == 2  # untouched


def test_unknown_key_lists_allowed(tiny_cfg):
    tiny_cfg["degrade"]["lr_szie"] = 7
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_cfg)
    text = str(err.value)
    assert "degrade.lr_szie" in text and "unknown key" in text and "lr_size" in text


def test_bad_literal_names_allowed_values(tiny_cfg):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_cfg, ["degrade.interpolation=nearest"])
    text = str(err.value)
    assert "degrade.interpolation" in text and "bicubic" in text


def test_lr_not_smaller_than_hr(tiny_cfg):
    with pytest.raises(ConfigError, match=r"lr_size \(16\) must be smaller than data.hr_size"):
        config_from_dict(tiny_cfg, ["degrade.lr_size=16"])


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("distill.loss.angle_weight=-1", "distill.loss.angle_weight"),
        ("train.student.batch_size=2", "third order needs at least 3"),
        ("methods=[scratch, hinton]", "unknown method 'hinton'"),
        ("teacher.arch=resnet21", "Did you mean"),
        ("data.dataset=fashionmnist", "fashion_mnist"),
        ("seeds=[]", "seeds"),
        ("schedule=parallel", "horkd_joint"),
    ],
)
def test_bad_values(tiny_cfg, override, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_cfg, [override])
    assert needle in str(err.value)


def test_bad_override_syntax(tiny_cfg):
    with pytest.raises(ConfigError, match="not of the form"):
        config_from_dict(tiny_cfg, ["train.student.epochs"])


def test_yaml_file_errors(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_shipped_configs_validate():
    for path in sorted(Path(__file__).parents[1].glob("configs/*.yaml")):
        load_config(path)


def test_an_lr_size_on_the_command_line_replaces_the_configs_factor():
    """The README's 'degrade.lr_size=N for another' works on every shipped config, whichever of
    the two the file sets; both in one file are still refused, with the rule in the message."""
    from pathlib import Path

    import pytest

    from horkd.config import config_from_dict, load_config

    for path in sorted(Path("configs").glob("*.yaml")):
        if "lr_sizes" in path.read_text():  # a student across sizes takes degrade.lr_sizes
            continue
        cfg = load_config(path, ["degrade.lr_size=6", "data.root=anywhere"])
        assert (cfg.degrade.lr_size, cfg.degrade.factor) == (6, None), path
        cfg = load_config(path, ["degrade.factor=2", "data.root=anywhere"])
        assert (cfg.degrade.lr_size, cfg.degrade.factor) == (None, 2), path
    with pytest.raises(Exception, match="override of one on the command line replaces"):
        config_from_dict({"degrade": {"lr_size": 8, "factor": 4}})
    # both on the command line: no override to let win, so neither is dropped silently
    with pytest.raises(Exception, match="degrade.factor=2 and degrade.lr_size=8 both set the LR"):
        config_from_dict({"degrade": {"factor": 4}}, ["degrade.factor=2", "degrade.lr_size=8"])
    cfg = config_from_dict({"degrade": {"factor": 4}}, ["degrade.factor=null", "degrade.lr_size=8"])
    assert (cfg.degrade.lr_size, cfg.degrade.factor) == (8, None)
