"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from local IDX files; nothing is downloaded.

Zalando's 28x28 grey-scale images of 10 kinds of clothing (0 T-shirt/top, 1 trouser, 2
pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot), 60000 train
and 10000 test, in the four files and the format of MNIST (:mod:`scoregen.data.mnist`), plain
or ``.gz``, in ``root`` or ``root/FashionMNIST/raw`` (torchvision's layout). The default
``root`` is where Debian's package puts them (``apt-get install dataset-fashion-mnist``);
elsewhere download the four ``*-ubyte.gz`` files of the dataset's distribution into a folder
and set ``data.root``. Pixels ``0..255`` map to ``2 v / 255 - 1``; samples ``(1, 28, 28)``.
"""

from __future__ import annotations

from torch import Tensor

from scoregen.data.mnist import idx_image_set
from scoregen.data.registry import register

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle boot")


@register("fashion_mnist", kind="image", labeled=True)
def fashion_mnist(split: str = "train", root: str = DEFAULT_ROOT, labels: bool = False
                  ) -> Tensor | tuple[Tensor, Tensor]:
    """Fashion-MNIST from local IDX files in ``root`` as (1, 28, 28) images in [-1, 1]."""
    return idx_image_set(root, split, labels, "Fashion-MNIST", "FashionMNIST")


__all__ = ["CLASSES", "DEFAULT_ROOT", "fashion_mnist"]
