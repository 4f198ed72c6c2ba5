"""scikit-learn's 8x8 handwritten digits (UCI optdigits test set, 1797 images, bundled).

Pixels take 17 grey levels ``0..16`` and map to ``x = 2 v / 16 - 1`` in ``[-1, 1]``; each
sample has shape ``(1, 8, 8)``. The split is fixed: a permutation drawn with seed 0 puts
297 images in ``test`` and 1500 in ``train``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.data.registry import register

N_TEST = 297


def digits_with_labels(split: str = "train") -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 8, 8)`` in ``[-1, 1]`` and labels ``(N,)`` of the fixed split."""
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32)  # (1797, 8, 8), 0..16
    x = (images / 16.0 * 2 - 1)[:, None]
    labels = torch.as_tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    idx = perm[:N_TEST] if split == "test" else perm[N_TEST:]
    return x[idx], labels[idx]


@register("digits", kind="image", labeled=True)
def digits(split: str = "train", labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """scikit-learn 8x8 digits as (1, 8, 8) images in [-1, 1] (1500 train / 297 test)."""
    x, y = digits_with_labels(split)
    return (x, y) if labels else x
