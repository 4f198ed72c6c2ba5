"""A small CNN classifier for scikit-learn's 8x8 digits: features for sample-quality metrics.

The classifier plays the role the Inception network plays for FID (Heusel et al. 2017):
its penultimate activations (``FEATURES = 64`` values after a ReLU) are the feature space
of :func:`scoregen.evaluation.metrics.frechet_distance`, and its softmax gives a confidence and a
predicted-class histogram for the diversity of generated digits.

It is trained by this module on the fixed ``train`` split of :mod:`scoregen.data.digits`
(1500 images, pixels ``v in 0..16`` mapped to ``v/8 - 1``) on first use, in seconds on a
CPU, and cached as safetensors in ``$SCOREGEN_CACHE`` (default ``~/.cache/scoregen``; written
atomically, never over a file scoregen did not write: then it is used without a cache).
Nothing is downloaded. ``experiments/train_digits_classifier.py`` rebuilds it and prints
the test accuracy and the metric's reference values (``docs/metrics.md``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scoregen.evaluation.metrics import METRICS, frechet_distance
from scoregen.infra import outputs
from scoregen.infra.outputs import OutputError

FEATURES = 64
CLASSES = 10
FILENAME = "digits_classifier.safetensors"
VERSION = "1"  # bump when the architecture or training recipe changes: old caches retrain
_LOADED: dict[str, nn.Module] = {}


class DigitsClassifier(nn.Module):
    """conv3x3(16) -> ReLU -> conv3x3(32) -> ReLU -> maxpool2 -> linear(64) -> ReLU -> linear(10).

    Input ``(N, 1, 8, 8)`` in ``[-1, 1]``; :meth:`features` gives the ``(N, 64)``
    penultimate activations, :meth:`forward` the ``(N, 10)`` logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def load_digits_split(split: str = "train") -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 8, 8)`` in ``[-1, 1]`` and labels ``(N,)`` of the fixed digits split
    (:func:`scoregen.data.digits.digits_with_labels`)."""
    from scoregen.data.digits import digits_with_labels

    return digits_with_labels(split)


def train_classifier(epochs: int = 20, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0) -> DigitsClassifier:
    """Train :class:`DigitsClassifier` with Adam and cross-entropy on the train split.

    Fixed seed for the initialisation and the batch order; random shifts by up to one
    pixel (zero-padded with the background value -1) augment the data.
    """
    x, y = load_digits_split("train")
    return fit_classifier(DigitsClassifier, x, y, epochs, batch_size, lr, seed, shift=1)


def fit_classifier(make: Callable[[], nn.Module], x: Tensor, y: Tensor, epochs: int,
                   batch_size: int, lr: float, seed: int, shift: int = 1,
                   progress: bool = False) -> nn.Module:
    """Adam with a cosine learning rate and cross-entropy on ``(x, y)``; the network is built
    by ``make()`` under ``seed``, the batch order and the augmentation (random translations by
    up to ``shift`` pixels with the background fill -1) come from a generator seeded with it."""
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        net = make()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(x) / batch_size))
    g = torch.Generator().manual_seed(seed)
    net.train()
    bar = tqdm(total=epochs * math.ceil(len(x) / batch_size), desc="classifier",
               disable=not progress)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = nn.functional.cross_entropy(net(_shift(x[idx], g, shift)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return net.eval()


def _shift(x: Tensor, g: torch.Generator, r: int = 1) -> Tensor:
    """Translate the whole batch by a random offset in ``{-r..r}^2`` (background fill)."""
    dy, dx = (int(v) for v in torch.randint(-r, r + 1, (2,), generator=g))
    H, W = x.shape[-2:]
    padded = nn.functional.pad(x, (r, r, r, r), value=-1.0)
    return padded[..., r + dy:r + dy + H, r + dx:r + dx + W]


def accuracy(net: DigitsClassifier, split: str = "test") -> float:
    """Fraction of correctly classified images of ``split``."""
    x, y = load_digits_split(split)
    with torch.no_grad():
        return float((net(x).argmax(1) == y).double().mean())


def resolve_cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$SCOREGEN_CACHE``, else ``~/.cache/scoregen``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("SCOREGEN_CACHE", Path.home() / ".cache" / "scoregen"))


def get_classifier(cache_dir: str | os.PathLike[str] | None = None,
                   retrain: bool = False) -> DigitsClassifier:
    """The trained classifier: from memory, else the safetensors cache, else trained now
    (and saved). ``retrain=True`` trains again and overwrites the cache."""
    return cached_classifier(resolve_cache_dir(cache_dir) / FILENAME, VERSION,
                             DigitsClassifier, train_classifier, accuracy, retrain)


def cached_classifier(path: Path, version: str, make: Callable[[], nn.Module],
                      train: Callable[[], nn.Module], score: Callable[[nn.Module], float],
                      retrain: bool = False) -> nn.Module:
    """A classifier from memory, else from the safetensors file ``path`` when its metadata
    has ``version``, else ``train()``ed now and saved (with ``score(net)`` as its test
    accuracy) atomically."""
    from safetensors.torch import load_file, save_file

    key = str(path)
    if not retrain and key in _LOADED:
        return _LOADED[key]
    net = None
    if not retrain and path.exists():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("version") == version:
            net = make()
            net.load_state_dict(load_file(str(path)))
            net.eval()
    if net is None:
        net = train()
        try:  # atomically, and never over a file scoregen did not write (docs/outputs.md)
            with outputs.replacing(path, kind="cache", what="classifier cache") as (tmp,):
                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                          metadata={"version": version, "test_accuracy": f"{score(net):.4f}"})
        except OutputError as err:
            warnings.warn(f"the classifier is used without a cache: {err}", stacklevel=2)
    _LOADED[key] = net
    return net


def _check_images(images: Tensor) -> Tensor:
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[1:] != (1, 8, 8):
        raise ValueError(f"digits images must have shape (N, 1, 8, 8) in [-1, 1], "
                         f"got {tuple(images.shape)}")
    return images


def features(images: Tensor, classifier: DigitsClassifier | None = None) -> Tensor:
    """Penultimate activations ``(N, 64)`` of ``images: (N, 1, 8, 8)`` in ``[-1, 1]``."""
    net = get_classifier() if classifier is None else classifier
    with torch.no_grad():
        return net.features(_check_images(images))


def digits_quality(samples: Tensor, reference: Tensor,
                   classifier: DigitsClassifier | None = None) -> dict[str, object]:
    """Quality of generated digits ``samples`` against real ``reference`` images.

    Returns:
        ``fd``: Fréchet distance between classifier features (squared feature units,
        lower is better; see ``docs/metrics.md`` for its floor at these sample sizes);
        ``confidence``: mean max-softmax probability (higher = more recognisable);
        ``class_entropy``: entropy in nats of the predicted-class histogram (diversity,
        at most ``log 10 = 2.303``); ``class_hist``: that histogram (10 fractions).
    """
    net = get_classifier() if classifier is None else classifier
    samples = _check_images(samples)
    with torch.no_grad():
        probs = net(samples).softmax(1)
    hist = torch.bincount(probs.argmax(1), minlength=CLASSES).double() / len(samples)
    nz = hist[hist > 0]
    return {
        "fd": frechet_distance(features(samples, net), features(reference, net)),
        "confidence": float(probs.max(1).values.mean()),
        "class_entropy": float(-(nz * nz.log()).sum()) + 0.0,  # + 0.0: no "-0.0"
        "class_hist": [float(h) for h in hist],
    }


@METRICS.register("fd_digits", lower_is_better=True, target="reference",
                  units="squared feature units", named_only=True)
def frechet_digits(x: Tensor, y: Tensor) -> float:
    """:func:`frechet_distance` on the penultimate features of the digits classifier
    (this module); ``x``, ``y``: ``(N, 1, 8, 8)`` in ``[-1, 1]``."""
    return frechet_distance(features(x), features(y))


__all__ = [
    "DigitsClassifier",
    "accuracy",
    "cached_classifier",
    "digits_quality",
    "features",
    "fit_classifier",
    "frechet_digits",
    "get_classifier",
    "load_digits_split",
    "resolve_cache_dir",
    "train_classifier",
]
