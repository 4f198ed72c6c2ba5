"""Rebuild the 8x8-digits feature classifier and print reference values of its metrics.

    python experiments/train_digits_classifier.py [--cache DIR] [--threads 1]

Retrains :mod:`scoregen.evaluation.digits_classifier` (overwriting the cached weights), prints its
test accuracy, then :func:`scoregen.evaluation.digits_classifier.digits_quality` against the train
split (1500 images) for sets of 297 images: the real test split (the metric's noise floor)
and three clearly bad sets — Gaussian noise, blurred test digits, one test digit repeated.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from scoregen.evaluation.digits_classifier import (
    accuracy,
    digits_quality,
    get_classifier,
    load_digits_split,
)


def blur(x: Tensor, std: float = 1.0) -> Tensor:
    """Gaussian blur with a 5x5 kernel of standard deviation ``std`` pixels (edge padding)."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k1 = torch.exp(-(r**2) / (2 * std**2))
    k = torch.outer(k1, k1) / k1.sum() ** 2
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    return torch.nn.functional.conv2d(padded, k[None, None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="cache dir (default $SCOREGEN_CACHE "
                        "or ~/.cache/scoregen)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    net = get_classifier(args.cache, retrain=True)
    print(f"trained in {time.perf_counter() - start:.1f} s; "
          f"test accuracy {accuracy(net, 'test'):.4f}, train accuracy {accuracy(net, 'train'):.4f}")

    train, _ = load_digits_split("train")
    test, _ = load_digits_split("test")
    g = torch.Generator().manual_seed(0)
    sets = {
        "test split (floor)": test,
        "gaussian noise": torch.randn(test.shape, generator=g).clamp(-1, 1),
        "blurred test digits": blur(test),
        "one repeated digit": test[:1].expand_as(test).clone(),
    }
    print(f"{'set (297 images) vs train (1500)':36s} {'FD':>9s} {'confidence':>11s} "
          f"{'class entropy':>14s}")
    for name, images in sets.items():
        q = digits_quality(images, train, net)
        print(f"{name:36s} {q['fd']:9.3f} {q['confidence']:11.3f} {q['class_entropy']:14.3f}")


if __name__ == "__main__":
    main()
