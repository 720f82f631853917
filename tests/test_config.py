from pathlib import Path

import pytest

from fer_core.config import Config, ConfigError, load_config


def test_params_yaml_holds_every_default(tmp_path):
    # params.yaml in the repo is the one config: it must load and equal the dataclass defaults.
    config = load_config("params.yaml")
    assert config == Config()
    assert config.train.lr == 2e-4 and config.train.lr_fc == 2e-3 and config.model.feature_dim == 64


def test_overrides_are_typed():
    config = load_config("params.yaml", ["train.epochs=3", "model.cbam=false", "weights.max_weight=5"])
    assert config.train.epochs == 3 and config.model.cbam is False and config.weights.max_weight == 5.0
    assert load_config("params.yaml", ["weights.max_weight=none"]).weights.max_weight is None


@pytest.mark.parametrize("bad, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("trian.epochs=3", "unknown config section 'trian'"),
    ("train.epochs=abc", "train.epochs"),
    ("model.cbam=maybe", "model.cbam"),
    ("noequals", "section.key=value"),
])
def test_bad_overrides_name_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config("params.yaml", [bad])


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  epochs: 2\n  lr_backbone: 0.1\n")
    with pytest.raises(ConfigError, match="train.lr_backbone"):
        load_config(path)


def test_flat_keys_match_dvc_style():
    flat = Config().flat()
    assert flat["train.epochs"] == 60 and flat["weights.scheme"] == "inverse"


def test_on_off_yes_no_stay_words_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with a YAML 1.2 dumper, leaving `faces: off` unquoted; YAML
    1.1 (PyYAML's default) would read it as False."""
    text = Path("params.yaml").read_text().replace("faces: 'off'", "faces: off")
    assert "  faces: off" in text
    (tmp_path / "params.yaml").write_text(text)
    config = load_config(tmp_path / "params.yaml", ["serve.faces=off", "model.cbam=yes", "train.hflip=false"])
    assert (config.data.faces, config.serve.faces, config.model.cbam, config.train.hflip) == ("off", "off", True, False)
