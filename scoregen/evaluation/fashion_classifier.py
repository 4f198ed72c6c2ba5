"""A small CNN classifier of Fashion-MNIST: the feature space of a Frechet distance, as the
digits classifier is for 8x8 digits (:mod:`scoregen.evaluation.digits_classifier`, whose
training loop and cache it shares).

Penultimate activations (``FEATURES = 128`` after a ReLU) are the features of
``fd_fashion``; trained on the first ``N_TRAIN = 20000`` images of the train split for 2
epochs with random translations by up to 2 pixels (a few CPU minutes), cached as safetensors in
``$SCOREGEN_CACHE`` (default ``~/.cache/scoregen``). It needs the Fashion-MNIST files
(:mod:`scoregen.data.fashion_mnist`); ``experiments/fashion_mnist.py`` reports its test
accuracy and the metric's noise floor.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from scoregen.evaluation.digits_classifier import (
    cached_classifier,
    fit_classifier,
    resolve_cache_dir,
)
from scoregen.evaluation.metrics import METRICS, frechet_distance

FEATURES = 128
CLASSES = 10
N_TRAIN = 20_000
FILENAME = "fashion_classifier.safetensors"
VERSION = "1"


class FashionClassifier(nn.Module):
    """conv3x3(32) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU -> maxpool2 -> linear(128) ->
    ReLU -> linear(10); input ``(N, 1, 28, 28)`` in ``[-1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _split(split: str, root: str | None) -> tuple[Tensor, Tensor]:
    from scoregen.data import load_dataset

    options = {} if root is None else {"root": root}
    return load_dataset("fashion_mnist", split, labels=True, **options)


def train_classifier(root: str | None = None, epochs: int = 2, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, progress: bool = False
                     ) -> FashionClassifier:
    """Train :class:`FashionClassifier` on the first ``N_TRAIN`` train images."""
    x, y = _split("train", root)
    return fit_classifier(FashionClassifier, x[:N_TRAIN], y[:N_TRAIN], epochs, batch_size, lr,
                          seed, shift=2, progress=progress)


def accuracy(net: nn.Module, split: str = "test", root: str | None = None) -> float:
    """Fraction of correctly classified images of ``split``."""
    x, y = _split(split, root)
    with torch.no_grad():
        return float(torch.cat([net(b).argmax(1) for b in x.split(2000)]).eq(y).double().mean())


def get_classifier(cache_dir: str | os.PathLike[str] | None = None, root: str | None = None,
                   retrain: bool = False, progress: bool = False) -> FashionClassifier:
    """The trained classifier: from memory, the cache, or trained now and cached."""
    return cached_classifier(resolve_cache_dir(cache_dir) / FILENAME, VERSION, FashionClassifier,
                             lambda: train_classifier(root, progress=progress),
                             lambda net: accuracy(net, "test", root), retrain)


def _check_images(images: Tensor) -> Tensor:
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.shape[1:] != (1, 28, 28):
        raise ValueError(f"Fashion-MNIST images must have shape (N, 1, 28, 28) in [-1, 1], "
                         f"got {tuple(images.shape)}")
    return images


def features(images: Tensor, classifier: nn.Module | None = None) -> Tensor:
    """Penultimate activations ``(N, 128)`` of ``images: (N, 1, 28, 28)`` in ``[-1, 1]``."""
    net = get_classifier() if classifier is None else classifier
    with torch.no_grad():
        return torch.cat([net.features(b) for b in _check_images(images).split(2000)])


@METRICS.register("fd_fashion", lower_is_better=True, target="reference",
                  units="squared feature units", named_only=True)
def frechet_fashion(x: Tensor, y: Tensor) -> float:
    """:func:`frechet_distance` on the penultimate features of the Fashion-MNIST classifier;
    ``x``, ``y``: ``(N, 1, 28, 28)`` in ``[-1, 1]``."""
    return frechet_distance(features(x), features(y))


__all__ = ["FashionClassifier", "accuracy", "features", "frechet_fashion", "get_classifier",
           "train_classifier"]
