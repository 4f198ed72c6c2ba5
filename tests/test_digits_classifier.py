"""The 8x8-digits feature classifier: split, training, cache and quality metrics."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from scoregen.data.digits import digits
from scoregen.evaluation import digits_classifier as dc
from scoregen.evaluation.metrics import frechet_distance


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dc.DigitsClassifier, object]:
    cache = tmp_path_factory.mktemp("cache")
    return dc.get_classifier(cache_dir=cache), cache


def test_split_matches_the_digits_dataset() -> None:
    for split, n in (("train", 1500), ("test", 297)):
        x, y = dc.load_digits_split(split)
        assert x.shape == (n, 1, 8, 8) and y.shape == (n,)
        torch.testing.assert_close(x, digits(split))
        assert set(y.tolist()) == set(range(10))


def test_classifier_is_accurate_and_cached(trained) -> None:
    net, cache = trained
    assert dc.accuracy(net, "test") > 0.9
    saved = load_file(str(cache / dc.FILENAME))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(saved[k], v)
    assert dc.get_classifier(cache_dir=cache) is net  # no retraining on second use


def test_frechet_floor_is_below_bad_sets(trained) -> None:
    net, _ = trained
    train, _ = dc.load_digits_split("train")
    test, _ = dc.load_digits_split("test")
    f_train = dc.features(train, net)
    assert f_train.shape == (1500, dc.FEATURES)
    assert frechet_distance(f_train, f_train) < 1e-6
    floor = frechet_distance(dc.features(test, net), f_train)
    noise = torch.randn(test.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    repeated = test[:1].expand_as(test)
    for bad in (noise, repeated):
        assert frechet_distance(dc.features(bad, net), f_train) > 10 * floor


def test_digits_quality_summaries(trained) -> None:
    net, _ = trained
    train, _ = dc.load_digits_split("train")
    test, labels = dc.load_digits_split("test")
    real = dc.digits_quality(test, train, net)
    assert real["confidence"] > 0.9
    assert math.log(10) - 0.1 < real["class_entropy"] <= math.log(10)
    true_hist = torch.bincount(labels, minlength=10).double() / len(labels)
    assert (torch.tensor(real["class_hist"], dtype=torch.float64) - true_hist).abs().sum() < 0.1
    one = dc.digits_quality(test[:1].expand(50, 1, 8, 8), train, net)
    assert one["class_entropy"] == 0.0 and max(one["class_hist"]) == 1.0
    with pytest.raises(ValueError, match="8, 8"):
        dc.features(torch.zeros(3, 64), net)


def test_fashion_classifier_shares_the_training_loop() -> None:
    """The Fashion-MNIST feature classifier trains with the digits classifier's loop: on two
    classes of 28x28 images (a bright square left or right) it becomes exact, and its
    features have 128 values."""
    from scoregen.evaluation.digits_classifier import fit_classifier
    from scoregen.evaluation.fashion_classifier import FEATURES, FashionClassifier

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = -torch.ones(256, 1, 28, 28) + 0.1 * torch.randn(256, 1, 28, 28, generator=g)
    for k in range(256):
        left = 4 if y[k] == 0 else 16
        x[k, 0, 10:18, left:left + 8] = 1.0
    net = fit_classifier(FashionClassifier, x, y, epochs=2, batch_size=32, lr=2e-3, seed=0,
                         shift=2)
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.95
        assert net.features(x[:3]).shape == (3, FEATURES)
