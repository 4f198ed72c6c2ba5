"""Networks and the :class:`ScoreModel` wrapper.

``NETWORKS`` maps names (``mlp``, ``unet``) to network classes; every module of this
package is imported here so a new network registers itself.
"""

from __future__ import annotations

from scoregen.models import classifier, mlp, unet  # noqa: F401  (registration)
from scoregen.models.classifier import NoisyClassifier, build_classifier
from scoregen.models.embeddings import (
    EMBEDDINGS,
    FourierEmbedding,
    NoiseEmbedding,
    SinusoidalEmbedding,
)
from scoregen.models.prediction import PARAMETERIZATIONS
from scoregen.models.registry import NETWORKS, build_network, network_options, register
from scoregen.models.score_model import ScoreModel, build_model

__all__ = [
    "EMBEDDINGS",
    "NETWORKS",
    "PARAMETERIZATIONS",
    "FourierEmbedding",
    "NoiseEmbedding",
    "NoisyClassifier",
    "ScoreModel",
    "SinusoidalEmbedding",
    "build_classifier",
    "build_model",
    "build_network",
    "network_options",
    "register",
]
