"""Training: from a config and a dataset to a checkpoint.

The stage between the core (SDEs, models, samplers) and evaluation:

- :mod:`~scoregen.training.config`: typed, validated run configs (YAML/TOML/JSON, ``--set``).
- :mod:`~scoregen.training.objectives`: registered objectives, one file each (denoising
  score matching, the discrete DDPM loss, ...).
- :mod:`~scoregen.training.trainer`: the training loop (EMA, clipping, NaN stop).
- :mod:`~scoregen.training.build`: :func:`build_trainer`, a run assembled from a config.
- :mod:`~scoregen.training.device`, :mod:`~scoregen.training.csv_log`: device, threads and
  precision of a run; its ``log.csv``.
- :mod:`~scoregen.training.checkpoint`: atomic safetensors checkpoints, safe loading.
- :mod:`~scoregen.training.run_folder`: the run folder's lock, fresh/resume/overwrite rules
  and resume checks.

The public names are re-exported here (``from scoregen.training import build_trainer``).
"""

from __future__ import annotations

from scoregen.training.build import build_trainer, make_sample_fn
from scoregen.training.csv_log import LOG_FIELDS
from scoregen.training.device import resolve_device, resolve_precision, resolve_threads
from scoregen.training.trainer import Trainer, TrainingDivergedError, TrainOptions, TrainResult

__all__ = [
    "LOG_FIELDS",
    "TrainOptions",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "build_trainer",
    "make_sample_fn",
    "resolve_device",
    "resolve_precision",
    "resolve_threads",
]
