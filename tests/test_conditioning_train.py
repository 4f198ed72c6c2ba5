"""Labels through data, class-conditional networks, label dropout, and the CLI end to end."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scoregen.cli import main
from scoregen.data import DataError, load_dataset
from scoregen.models import ScoreModel, build_network
from scoregen.models.analytic import preset
from scoregen.sde import get as get_sde
from scoregen.training import Trainer, TrainOptions
from scoregen.training.checkpoint import load_model, save_checkpoint
from scoregen.training.config import ConfigError, load_config
from scoregen.training.objectives import build_objective

# -- labels from every dataset kind ------------------------------------------------------------


def test_toy_and_mixture_labels_are_the_natural_classes():
    x, y = load_dataset("8gaussians", n=500, labels=True)
    assert torch.equal(x, load_dataset("8gaussians", n=500))  # same data with or without
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * np.pi)
    nearest = torch.round(angle / (2 * np.pi / 8)).long() % 8
    assert torch.equal(nearest, y)
    x, y = load_dataset("moons", n=500, labels=True)
    assert set(y.tolist()) == {0, 1}
    x, y = load_dataset("rings", n=500, labels=True)
    radius = x.norm(dim=1)
    assert torch.equal(torch.round(radius / 0.3).long() - 1, y)
    x, y = load_dataset("checkerboard", n=500, labels=True)
    assert y.max() == 7 and (torch.floor((x[:, 1] + 1) / 0.5).long() == y // 2).all()
    x, y = load_dataset("mixture", preset="ring8", n=500, labels=True)
    mix = preset("ring8")
    agree = (mix.responsibilities(x.double()).argmax(1) == y).double().mean()
    assert agree > 0.97  # the components overlap a little (std 0.1, radius 1)
    with pytest.raises(DataError, match="no class labels"):
        load_dataset("swissroll", n=10, labels=True)


def test_digits_labels():
    x, y = load_dataset("digits", "test", labels=True)
    assert x.shape == (297, 1, 8, 8) and y.shape == (297,) and set(y.tolist()) == set(range(10))


def _idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_labels(tmp_path: Path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5]))
    x, y = load_dataset("mnist", "test", root=str(tmp_path), labels=True)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [3, 1, 4, 1, 5]


def test_image_folder_and_npz_labels(tmp_path: Path):
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / "imgs" / cls /
                                                                   f"{i}.png")
    x, y = load_dataset("images", path=str(tmp_path / "imgs"), test_fraction=0.0, labels=True)
    assert x.shape == (6, 1, 4, 4)
    assert torch.equal((x.flatten(1).mean(1) > 0).long(), y)  # dog (white) is class 1
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 4, 4), np.uint8), labels=np.array([0, 2, 1, 2]))
    x, y = load_dataset("images", path=str(tmp_path / "a.npz"), test_fraction=0.0, labels=True)
    assert sorted(y.tolist()) == [0, 1, 2, 2]
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no class labels"):
        load_dataset("images", path=str(tmp_path / "b.npz"), labels=True)


# -- networks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape,kw", [("mlp", (2,), {"width": 16, "depth": 1}),
                                           ("unet", (1, 8, 8), {"channels": 8})])
def test_conditional_networks(name, shape, kw):
    torch.manual_seed(0)
    net = build_network(name, shape, num_classes=3, **kw)
    x, c = torch.randn(4, *shape), torch.linspace(-1, 1, 4)
    null = torch.full((4,), 3)
    assert torch.equal(net(x, c), net(x, c, null))  # None means the null label
    for p in net.parameters():  # make the output and the embedding non-trivial
        torch.nn.init.normal_(p, std=0.2)
    out = net(x, c, torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, *shape)
    assert not torch.allclose(net(x, c, torch.zeros(4, dtype=torch.long)),
                              net(x, c, torch.ones(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="outside"):
        net(x, c, torch.tensor([0, 1, 4, 0]))
    plain = build_network(name, shape, **kw)
    assert not any("label" in k for k in plain.state_dict())  # unconditional: unchanged keys
    assert "num_classes" not in plain.spec
    with pytest.raises(ValueError, match="without classes"):
        plain(x, c, torch.zeros(4, dtype=torch.long))


def test_conditional_checkpoint_round_trip(tmp_path: Path):
    net = build_network("mlp", (2,), width=16, depth=1, num_classes=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    model = ScoreModel(net, get_sde("vp"))
    save_checkpoint(tmp_path / "checkpoints", 1, model)
    back = load_model(tmp_path / "checkpoints" / "step_000001", ema=False)
    x, t, y = torch.randn(3, 2), torch.full((3,), 0.5), torch.tensor([0, 3, 1])
    assert back.num_classes == 4
    torch.testing.assert_close(back(x, t, cond=y), model(x, t, cond=y))


# -- training ----------------------------------------------------------------------------------


def test_label_dropout_rate():
    net = build_network("mlp", (2,), width=8, depth=1, num_classes=5)
    data, labels = torch.randn(100, 2), torch.arange(100) % 5
    trainer = Trainer(ScoreModel(net, get_sde("vp")), data, build_objective("dsm", get_sde("vp")),
                      TrainOptions(label_dropout=0.3, progress=False), labels=labels)
    from scoregen.training.batches import example_keys

    keys = example_keys(0, 3, torch.arange(20_000))
    y = trainer.drop_labels(torch.zeros(20_000, dtype=torch.long), keys)
    assert abs(float((y == 5).float().mean()) - 0.3) < 0.02 and set(y.tolist()) == {0, 5}
    # keyed to the example: the same keys drop the same labels, in any batch split
    assert torch.equal(trainer.drop_labels(torch.zeros(500, dtype=torch.long), keys[:500]),
                       y[:500])
    trainer.opt.label_dropout = None  # the default for a conditional model: 0.1
    y = trainer.drop_labels(torch.zeros(20_000, dtype=torch.long), keys)
    assert abs(float((y == 5).float().mean()) - 0.1) < 0.01
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        Trainer(ScoreModel(net, get_sde("vp")), data, build_objective("dsm", get_sde("vp")),
                TrainOptions(progress=False), labels=torch.arange(100) % 7)
    with pytest.raises(ValueError, match="no labels"):
        Trainer(ScoreModel(net, get_sde("vp")), data, build_objective("dsm", get_sde("vp")),
                TrainOptions(progress=False))


def test_config_checks():
    with pytest.raises(ConfigError, match="no class labels"):
        load_config(None, ["data.name=swissroll", "model.num_classes=3"])
    with pytest.raises(ConfigError, match="needs a class-conditional model"):
        load_config(None, ["train.label_dropout=0.2"])
    with pytest.raises(ConfigError, match="label_dropout"):
        load_config(None, ["model.num_classes=8", "train.label_dropout=1.5"])
    cfg = load_config("configs/digits_cond.yaml")
    assert cfg.model.options["num_classes"] == 10 and cfg.train.label_dropout == 0.1


# -- the command line end to end ---------------------------------------------------------------
TINY = {
    "data": {"name": "8gaussians", "n": 400},
    "sde": {"name": "vp"},
    "model": {"network": "mlp", "width": 16, "depth": 1, "num_classes": 8},
    "train": {"steps": 6, "batch_size": 32, "log_every": 3, "ckpt_every": 6,
              "sample_every": 6, "threads": 1},
    "sample": {"sampler": "ddim", "steps": 3, "n": 16},
}


def test_cli_train_sample_compare_with_conditions(tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "g.png"
    assert main(["sample", str(run), "--class", "all", "-n", "16", "--guidance", "2",
                 "--sampler", "dpm_solver++", "--steps", "4", "--out", str(out),
                 "--no-progress"]) == 0
    npz = np.load(out.with_suffix(".npz"))
    assert npz["x"].shape == (16, 2) and npz["labels"].tolist() == sorted(list(range(8)) * 2)
    assert main(["sample", str(run), "--class", "3", "-n", "5", "--guidance", "0", "--steps",
                 "3", "--out", str(tmp_path / "u.png"), "--no-progress"]) == 0
    filled = tmp_path / "f.png"
    assert main(["sample", str(run), "--inpaint", str(out.with_suffix(".npz")), "-n", "4",
                 "--mask", "right-half", "--steps", "3", "--out", str(filled),
                 "--no-progress"]) == 0
    got = np.load(filled.with_suffix(".npz"))["x"]
    np.testing.assert_allclose(got[:, 0], npz["x"][:4, 0], rtol=0, atol=1e-6)
    capsys.readouterr()
    assert main(["sample", str(run), "--class", "8", "--steps", "3", "--no-progress"]) == 1
    assert "label 8 is outside [0, 8)" in capsys.readouterr().err
    assert main(["sample", str(run), "--guidance", "2", "--steps", "3", "--no-progress"]) == 1
    assert "--guidance needs --class" in capsys.readouterr().err
    assert main(["sample", str(run), "--inpaint", str(out.with_suffix(".npz")), "--mask",
                 "diagonal", "--steps", "3", "--no-progress"]) == 1
    assert "mask" in capsys.readouterr().err
    # --class on a model without classes
    plain = dict(TINY, model={"network": "mlp", "width": 16, "depth": 1})
    cfg.write_text(yaml.safe_dump(plain))
    assert main(["train", str(cfg), "--out", str(tmp_path / "plain"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "plain"), "--class", "1", "--no-progress"]) == 1
    assert "has no classes" in capsys.readouterr().err
    # the guided comparison on the exact oracle
    cmp_out = tmp_path / "cmp"
    assert main(["compare", "--preset", "ring8", "--guidance", "0,1,3", "--samplers",
                 "ddim,dpm_solver++", "--budgets", "5", "-n", "32", "--out", str(cmp_out),
                 "--no-progress"]) == 0
    text = (cmp_out / "guidance.md").read_text()
    assert "| ddim |" in text and "w=3" in text
    assert (cmp_out / "guidance_3" / "results.md").is_file()
