"""Where and how a run computes: its device, its CPU threads and its autocast precision."""

from __future__ import annotations

import os

import torch

from scoregen.infra import distributed


def resolve_device(device: str) -> torch.device:
    """The device for ``device`` (``auto``, ``cpu``, ``cuda[:N]``, ``mps``), checked to exist:
    :func:`scoregen.infra.distributed.resolve_device` (the local rank's GPU under ``torchrun``)."""
    return distributed.resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_threads(threads: int = 0) -> tuple[int, str]:
    """CPU threads for torch and where the number came from: ``threads`` when > 0, else
    ``OMP_NUM_THREADS`` when set, else the cores this process may run on."""
    if threads > 0:
        return threads, "train.threads"
    env = os.environ.get("OMP_NUM_THREADS")
    if env is not None and env.strip():
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"OMP_NUM_THREADS={env!r} is not a positive integer; unset it "
                             "or set train.threads")
        return n, "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(int(cores or 1), 1), "cores"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for full fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


__all__ = ["resolve_device", "resolve_precision", "resolve_threads"]
