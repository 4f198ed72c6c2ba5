"""Noise-conditional classifiers: the objective is minimised by the exact noisy classifier of
the oracle, a small one trains, and `scoregen sample --classifier` guides with a trained one.
(Classifier guidance at scale 1 with the exact classifier equals exact conditional sampling
for every sampler: tests/test_conditioning.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import scoregen
from scoregen.cli import main as cli_main
from scoregen.data import load_dataset
from scoregen.models import NoisyClassifier, build_network
from scoregen.models.analytic import preset
from scoregen.training import Trainer, TrainOptions
from scoregen.training.checkpoint import CheckpointError, load_classifier, load_model
from scoregen.training.config import ConfigError, parse_config
from scoregen.training.objectives import build_objective, random_batch

MIX = preset("ring8")


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_exact_noisy_classifier_minimises_the_cross_entropy(sde_name: str) -> None:
    """Gibbs: on the same batch the exact log p_t(y | x_t) beats it tempered either way."""
    sde = scoregen.sde.get(sde_name)
    objective = build_objective("classifier", sde)
    x0 = MIX.sample(8192, torch.Generator().manual_seed(0))
    y = MIX.class_log_probs(x0).argmax(1)  # ring8's components are well separated
    batch = random_batch(x0, 1, cond=y)

    def tempered(k: float):
        return lambda x, t: k * MIX.class_log_probs(x, sde, t)

    best = float(objective(tempered(1.0), batch))
    assert 0.05 < best < 0.95 * float(torch.log(torch.tensor(8.0)))  # chance: log 8
    assert float(objective(tempered(0.7), batch)) > best
    assert float(objective(tempered(1.4), batch)) > best


def test_a_small_classifier_learns_and_is_most_accurate_at_low_noise() -> None:
    torch.manual_seed(0)
    sde = scoregen.sde.get("vp")
    x, y = load_dataset("mixture", n=4000, labels=True)
    net = build_network("classifier", (2,), num_classes=8, channels=32, blocks=2)
    clf = NoisyClassifier(net, sde)
    opts = TrainOptions(steps=300, batch_size=256, lr=3e-3, warmup=10, ckpt_every=0,
                        sample_every=0, progress=False, label_dropout=0.0)
    tr = Trainer(clf, x, build_objective("classifier", sde), opts, labels=y)
    tr.fit()
    xt, yt = load_dataset("mixture", "test", n=2000, labels=True)
    g = torch.Generator().manual_seed(1)
    acc = {}
    for t in (0.05, 0.5, 0.9):
        eps = torch.randn(xt.shape, generator=g)
        noisy = sde.perturb(xt, torch.tensor(t), eps)
        with torch.no_grad():
            mine = (tr.ema(noisy, torch.full((len(xt),), t)).argmax(1) == yt).float().mean()
            exact = (MIX.class_log_probs(noisy.double(), sde, t).argmax(1) == yt).float().mean()
        acc[t] = (float(mine), float(exact))
    assert acc[0.05][0] > 0.9 and acc[0.05][0] > acc[0.9][0], acc
    assert all(exact - mine < 0.1 for mine, exact in acc.values()), acc


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_trains_a_classifier_and_guides_an_unconditional_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = {"channels": 8, "mult": [1, 2], "blocks": 1, "attn_res": [], "groups": 4}
    train = {"steps": 3, "batch_size": 16, "ckpt_every": 0, "sample_every": 0,
             "device": "cpu"}
    clf_cfg = _write(tmp_path / "clf.yaml", {
        "data": {"name": "digits"}, "sde": {"name": "vp"},
        "model": {"network": "classifier", "num_classes": 10, **net},
        "objective": {"name": "classifier"}, "train": train})
    model_cfg = _write(tmp_path / "model.yaml", {
        "data": {"name": "digits"}, "sde": {"name": "vp"}, "model": {"network": "unet", **net},
        "train": train})
    clf, run = tmp_path / "clf", tmp_path / "run"
    assert cli_main(["train", str(clf_cfg), "--out", str(clf), "--no-progress"]) == 0
    assert cli_main(["train", str(model_cfg), "--out", str(run), "--no-progress"]) == 0
    assert isinstance(load_classifier(clf), NoisyClassifier)
    with pytest.raises(CheckpointError, match="not a score model"):
        load_model(clf)
    with pytest.raises(CheckpointError, match="holds a score model"):
        load_classifier(run)
    out = tmp_path / "guided.png"
    assert cli_main(["sample", str(run), "--classifier", str(clf), "--class", "3",
                     "--guidance", "2", "-n", "4", "--steps", "3", "--out", str(out),
                     "--no-progress"]) == 0
    assert out.is_file() and (tmp_path / "guided.npz").is_file()
    capsys.readouterr()
    assert cli_main(["sample", str(run), "--classifier", str(clf), "-n", "4",
                     "--steps", "3", "--out", str(out), "--no-progress"]) != 0
    assert "--classifier needs --class" in capsys.readouterr().err
    assert cli_main(["sample", str(run), "--classifier", str(clf), "--class", "3", "--sde",
                     "ve", "-n", "4", "--steps", "3", "--out", str(out), "--no-progress"]) != 0
    assert "trained under" in capsys.readouterr().err


def test_config_pairs_classifier_network_and_objective() -> None:
    base = {"data": {"name": "digits"}, "model": {"network": "classifier", "num_classes": 10}}
    assert parse_config({**base, "objective": {"name": "classifier"}}).objective.name == \
        "classifier"
    with pytest.raises(ConfigError, match="do not fit"):
        parse_config(base)
    with pytest.raises(ConfigError, match="do not fit"):
        parse_config({"data": {"name": "digits"}, "model": {"network": "unet"},
                      "objective": {"name": "classifier"}})
