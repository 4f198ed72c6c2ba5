"""Config: the shipped configs validate; typos and bad values name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scoregen.training.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
    save_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.train.steps > 0
    assert parse_config(cfg.to_dict()) == cfg


def test_shipped_configs_exist() -> None:
    assert {p.stem for p in CONFIGS} >= {"toy2d", "checkerboard", "digits"}


@pytest.mark.parametrize(("raw", "message"), [
    ({"trian": {}}, "unknown key 'trian' in config (did you mean 'train'?)"),
    ({"train": {"lr": -1}}, "train.lr: must be > 0"),
    ({"train": {"lr": "fast"}}, "train.lr: must be a number"),
    ({"train": {"steps": 1.5}}, "train.steps: must be an integer"),
    ({"train": {"ema_decay": 1.0}}, "train.ema_decay: must lie in [0, 1)"),
    ({"train": {"stesp": 3}}, "unknown key 'stesp' in train (did you mean 'steps'?)"),
    ({"train": {"device": "gpu"}}, "train.device: must be auto, cpu, cuda"),
    ({"model": {"widht": 3}}, "unknown key 'widht' in model (did you mean 'width'?)"),
    ({"model": {"network": "resnet"}}, "model: unknown network 'resnet'"),
    ({"model": {"prediction": "score"}}, "model.prediction: must be one of eps, x0, v, edm"),
    ({"sde": {"name": "vpp"}}, "sde: unknown SDE 'vpp'"),
    ({"sde": {"name": "vp", "beta_max": -1}}, "beta_max must be a positive"),
    ({"sde": {"name": "vp", "sigma_max": 3}}, "unknown key 'sigma_max' in sde"),
    ({"data": {"name": "digits", "n": 5}}, "unknown key 'n' in data"),
    ({"loss": {"weighting": "snr"}}, "objective: weighting must be one of edm, likelihood, sigma2"),
    ({"objective": {"weighting": "snr"}}, "objective: weighting must be one of edm, likelihood"),
    ({"objective": {"name": "x"}},
     "objective: unknown objective 'x'; known objectives: classifier, "),
    ({"objective": {"name": "ddpm"}}, "objective: the discrete DDPM objective needs the 'ddpm'"),
    ({"objective": {"gamma": 1}}, "unknown key 'gamma' in objective"),
    ({"loss": {}, "objective": {}}, "give the objective in one section"),
    ({"sample": {"etaa": 1}}, "unknown key 'etaa' in sample (did you mean 'eta'?)"),
    ({"train": [1, 2]}, "train: must be a mapping"),
])
def test_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert message in str(info.value)


def test_yaml_float_strings_are_numbers() -> None:
    cfg = parse_config(yaml.safe_load("train: {lr: 1e-3}"))  # YAML 1.1 reads 1e-3 as a string
    assert cfg.train.lr == 1e-3


def test_overrides() -> None:
    raw = apply_overrides({"train": {"steps": 5}}, ["train.steps=7", "sde.name=ve",
                                                     "sde.sigma_max=20", "model.mult=[1, 2]"])
    assert raw == {"train": {"steps": 7}, "sde": {"name": "ve", "sigma_max": 20},
                   "model": {"mult": [1, 2]}}
    for bad in ("train.steps", "steps=3", ".x=1"):
        with pytest.raises(ConfigError, match=r"section.key=value"):
            apply_overrides({}, [bad])


def test_formats_round_trip(tmp_path: Path) -> None:
    raw = {"data": {"name": "moons", "n": 100}, "train": {"steps": 3, "lr": 0.01},
           "sample": {"eta": 0.5}}
    (tmp_path / "c.json").write_text(json.dumps(raw))
    (tmp_path / "c.toml").write_text(
        '[data]\nname = "moons"\nn = 100\n[train]\nsteps = 3\nlr = 0.01\n[sample]\neta = 0.5\n')
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfgs = [load_config(tmp_path / f"c.{ext}") for ext in ("json", "toml", "yaml")]
    assert cfgs[0] == cfgs[1] == cfgs[2]
    assert cfgs[0].data.options == {"n": 100} and cfgs[0].sample.options == {"eta": 0.5}
    save_config(cfgs[0], tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfgs[0]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config file .* not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot parse"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match="unknown config format"):
        load_config(tmp_path / "c.ini")
