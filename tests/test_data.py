"""Datasets: ranges, shapes, fixed splits, and clear errors for missing or malformed files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scoregen.data import DATASETS, DataError, load_dataset

TOY = [n for n in DATASETS.list() if DATASETS.meta(n)["kind"] == "toy"]


@pytest.mark.parametrize("name", TOY)
def test_toy_sets_are_seeded_2d_in_unit_box(name: str) -> None:
    x = load_dataset(name, n=3000)
    assert x.shape == (3000, 2) and x.dtype == torch.float32
    assert x.abs().max() <= 1 and x.std(0).min() > 0.1
    assert torch.equal(x, load_dataset(name, n=3000))
    assert not torch.equal(x, load_dataset(name, "test", n=3000))
    assert not torch.equal(x, load_dataset(name, n=3000, seed=1))


def test_checkerboard_only_dark_cells() -> None:
    x = load_dataset("checkerboard", n=5000)
    cells = torch.floor((x + 1) / 0.5).clamp(max=3)
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    counts = torch.bincount((cells[:, 1] * 4 + cells[:, 0]).long(), minlength=16)
    assert (counts[counts > 0] > 5000 / 8 * 0.8).all() and (counts > 0).sum() == 8


def test_eight_gaussians_sit_on_their_centres() -> None:
    x = load_dataset("8gaussians", n=4000).double()
    angles = torch.arange(8, dtype=torch.float64) * (torch.pi / 4)
    centres = 0.8 * torch.stack([angles.cos(), angles.sin()], 1)
    dist = torch.cdist(x, centres).min(1).values
    assert float((dist**2).mean() / 2) == pytest.approx(0.04**2, rel=0.1)


def test_mixture_preset_is_exact_and_unclipped() -> None:
    x = load_dataset("mixture", preset="mix16", n=2000)
    assert x.shape == (2000, 16)
    with pytest.raises(KeyError, match="known mixture presets"):
        load_dataset("mixture", preset="nope")


def test_digits_fixed_split() -> None:
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8)
    levels = torch.unique(torch.cat([train, test]))
    assert len(levels) == 17 and levels.min() == -1 and levels.max() == 1
    assert torch.equal(train, load_dataset("digits"))


def test_unknown_options_and_split() -> None:
    with pytest.raises(ValueError, match=r"unknown option.*'size'.*moons"):
        load_dataset("moons", size=3)
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("moons", "val")
    with pytest.raises(KeyError, match="known datasets"):
        load_dataset("cifar")


def _write_idx(path: Path, images: np.ndarray, gz: bool = False) -> None:
    raw = bytes([0, 0, 8, images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape)
    raw += images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(raw)


def test_mnist_reads_idx_files(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
    _write_idx(tmp_path / "flat" / "train-images-idx3-ubyte", imgs)
    x = load_dataset("mnist", root=str(tmp_path / "flat"))
    assert x.shape == (3, 1, 28, 28) and x[0, 0, 0, 0] == -1 and x[0, 0, 0, 1] == 1
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs).float() / 255 * 2 - 1)
    _write_idx(tmp_path / "tv" / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", imgs[:2], gz=True)
    assert load_dataset("mnist", "test", root=str(tmp_path / "tv")).shape == (2, 1, 28, 28)


def test_mnist_missing_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*data\.root"):
        load_dataset("mnist", root=str(tmp_path))
    path = tmp_path / "train-images-idx3-ubyte"
    _write_idx(path, np.zeros((2, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", root=str(tmp_path))
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("mnist", root=str(tmp_path))


def test_idx_round_trip_and_fashion_mnist(tmp_path: Path) -> None:
    """write_idx/read_idx round trip (plain and gzip); fashion_mnist reads images and labels
    from a folder or torchvision's FashionMNIST/raw layout, exactly; errors name the fix."""
    from scoregen.data.mnist import read_idx, write_idx

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, imgs)), imgs)
    root = tmp_path / "fashion"
    write_idx(root / "train-images-idx3-ubyte.gz", imgs)
    write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    x, y = load_dataset("fashion_mnist", root=str(root), labels=True)
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs).float() / 255 * 2 - 1)
    assert torch.equal(y, torch.from_numpy(labels).long())
    write_idx(tmp_path / "tv" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte", imgs[:2])
    assert load_dataset("fashion_mnist", "test", root=str(tmp_path / "tv")).shape == (
        2, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST file t10k.*data\.root"):
        load_dataset("fashion_mnist", "test", root=str(root))
    write_idx(root / "train-labels-idx1-ubyte.gz", labels[:3])
    with pytest.raises(DataError, match=r"3,.*labels for 5 images"):
        load_dataset("fashion_mnist", root=str(root), labels=True)
    with pytest.raises(ValueError, match="unsigned bytes"):
        write_idx(tmp_path / "c-idx1-ubyte", np.zeros(3, np.float32))


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 256, (6, 4, 3)).astype(np.uint8) for _ in range(10)]
    for i, a in enumerate(arrs):
        _save_png(tmp_path / f"{i:02d}.png", a)
    x = load_dataset("images", path=str(tmp_path), test_fraction=0.2, channels=3, size=[6, 4])
    assert x.shape == (8, 3, 6, 4) and x.min() >= -1 and x.max() <= 1
    test = load_dataset("images", "test", path=str(tmp_path), test_fraction=0.2)
    assert test.shape == (2, 3, 6, 4)
    every = {tuple(a.transpose(2, 0, 1).ravel()) for a in arrs}
    got = ((torch.cat([x, test]) + 1) / 2 * 255).round().to(torch.uint8).flatten(1).numpy()
    assert {tuple(r) for r in got} == every


def test_image_errors_name_the_problem(tmp_path: Path) -> None:
    _save_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _save_png(tmp_path / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"1 channel\(s\), expected 3"):
        load_dataset("images", path=str(tmp_path), channels=3)
    with pytest.raises(DataError, match=r"images are 8x8, expected 28x28"):
        load_dataset("images", path=str(tmp_path), size=[28, 28])
    _save_png(tmp_path / "c.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"c\.png has size 8x9"):
        load_dataset("images", path=str(tmp_path))
    with pytest.raises(DataError, match=r"needs data.path"):
        load_dataset("images")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("images", path=str(tmp_path / "nope"))


def test_image_npz(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (5, 8, 8, 1)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=arr)
    x = load_dataset("images", path=str(tmp_path / "d.npz"), test_fraction=0.0)
    assert x.shape == (5, 1, 8, 8)
    np.savez(tmp_path / "f.npz", images=np.full((4, 1, 8, 8), 3.0, np.float32))
    with pytest.raises(DataError, match=r"float values span \[3, 3\]"):
        load_dataset("images", path=str(tmp_path / "f.npz"))
    np.savez(tmp_path / "s.npz", x=np.zeros((4, 5, 8, 8), np.uint8))
    with pytest.raises(DataError, match="expected \\(N, H, W\\)"):
        load_dataset("images", path=str(tmp_path / "s.npz"))
