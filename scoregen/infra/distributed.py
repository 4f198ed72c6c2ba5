"""Several processes through ``torch.distributed``, launched by ``torchrun``.

One process group per process, created from the variables ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); the backend follows the
device: ``nccl`` with one GPU per local rank (``cuda:LOCAL_RANK``), ``gloo`` on the CPU.
Without ``torchrun`` (or with ``WORLD_SIZE=1``) nothing is initialised and every helper
here is the identity, so single-process code paths are untouched.

Randomness is never keyed to the rank: work is split by *global index* (sample ``k`` of a
run goes to rank ``k mod world``, :func:`shard`) and each item carries its own seed, so
the results do not depend on how many processes made them. :func:`gather_ordered` puts the
pieces back in index order on rank 0.

Every collective runs under the process group's timeout (``SCOREGEN_DIST_TIMEOUT``
seconds, default 600): a rank that hangs makes the others fail with an error instead of
waiting forever; a rank that dies closes its connections and the others fail at their
next collective (and ``torchrun`` stops the job).
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import signal
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

TIMEOUT_ENV = "SCOREGEN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


class DistributedError(RuntimeError):
    """The processes of a job disagree, or a collective failed; the message says which."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world`` processes, its ``device``.

    ``backend`` is ``None`` for a single process (no process group).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, logs and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


_CONTEXT = Context()


def launched() -> bool:
    """True when started by ``torchrun`` (or an equivalent launcher) with more than one
    process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    """The collective timeout: ``SCOREGEN_DIST_TIMEOUT`` (seconds) or 600."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: must be a positive number of seconds")
    return value


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` (no
    index) -> ``cuda:LOCAL_RANK`` under ``torchrun``; anything else as given, checked to
    exist (a ``ValueError`` naming the device and the fix otherwise)."""
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device; use auto, cpu, cuda, cuda:N "
                         "or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: CUDA is not available here (torch "
                             f"{torch.__version__}, no usable GPU); use cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: only {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1})")
        if dev.index is None and launched():
            dev = torch.device("cuda", local_rank)
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda[:N] or mps")
    return dev


def setup(device: str | torch.device = "auto") -> Context:
    """Join the job's process group (created once per process) and resolve ``device``.

    Single process: no group, ``Context(device=resolve_device(device))``. Under ``torchrun``
    with several processes: ``nccl`` for CUDA devices (``torch.cuda.set_device`` to the local
    rank's GPU), ``gloo`` otherwise, with the timeout of :func:`timeout_seconds`.
    """
    if not launched():
        return Context(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if not dist.is_initialized():
        _die_with_launcher()
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
        atexit.register(teardown)
    global _CONTEXT
    _CONTEXT = Context(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                       dist.get_backend())
    return _CONTEXT


def _die_with_launcher() -> None:
    """Linux: ask for SIGTERM when the launcher dies (``prctl(PR_SET_PDEATHSIG)``).

    torchrun starts each worker in a session of its own, so a ``kill -9`` of ``torchrun``
    would otherwise leave the workers training, and writing checkpoints, on their own.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def teardown() -> None:
    """Leave the process group (registered with ``atexit`` by :func:`setup`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def context() -> Context:
    """The current :class:`Context` without creating a group (rank 0 of 1 if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    if _CONTEXT.world != dist.get_world_size():  # a group made outside :func:`setup`
        return Context(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")), _CONTEXT.device,
                       dist.get_backend())
    return _CONTEXT


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device(x: Tensor) -> Tensor:
    """NCCL moves CUDA tensors only."""
    if dist.get_backend() == "nccl" and x.device.type != "cuda":
        return x.to(torch.device("cuda", torch.cuda.current_device()))
    return x


_COMM_WORDS = ("gloo", "nccl", "timed out", "timeout", "connection closed", "connection reset",
               "broken pipe", "socket", "watchdog")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` comes from a failed or timed-out collective (a peer died or hangs)."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(w in text for w in _COMM_WORDS)


# -- collectives (identities for one process) ---------------------------------------------------
def barrier() -> None:
    """Wait until every rank is here."""
    if _active():
        dist.barrier()


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """``x`` reduced over ranks (``sum``, ``mean``, ``max``, ``min``); a new tensor."""
    if not _active():
        return x.clone()
    ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
           "min": dist.ReduceOp.MIN}
    y = _comm_device(x.detach().clone())
    dist.all_reduce(y, ops[op])
    if op == "mean":
        y = y / dist.get_world_size()
    return y.to(x.device)


def broadcast(x: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``x`` on every rank (a new tensor)."""
    if not _active():
        return x.clone()
    y = _comm_device(x.detach().clone().contiguous())
    dist.broadcast(y, src)
    return y.to(x.device)


def shard(n: int, rank: int | None = None, world: int | None = None) -> Tensor:
    """Global indices ``k`` in ``[0, n)`` with ``k mod world == rank``: this rank's share."""
    ctx = context()
    rank = ctx.rank if rank is None else rank
    world = ctx.world if world is None else world
    return torch.arange(rank, n, world, dtype=torch.int64)


def gather_ordered(x: Tensor, n: int) -> Tensor | None:
    """Rank 0: the ``(n, *D)`` tensor whose row ``k`` is row ``k // world`` of rank
    ``k mod world``'s ``x`` (the inverse of :func:`shard`); other ranks: ``None``.

    ``x`` holds this rank's rows in the order of :func:`shard`. One process: ``x`` itself.
    """
    if not _active():
        return x
    world, rank = dist.get_world_size(), dist.get_rank()
    rows = math.ceil(n / world)
    local = shard(n, rank, world).numel()
    if x.shape[0] != local:
        raise DistributedError(f"rank {rank} holds {x.shape[0]} rows, its shard of {n} has "
                               f"{local}")
    buf = _comm_device(torch.zeros((rows, *x.shape[1:]), dtype=x.dtype, device=x.device))
    buf[:local] = x.to(buf.device)
    parts = [torch.empty_like(buf) for _ in range(world)] if rank == 0 else None
    dist.gather(buf, parts, dst=0)
    if rank != 0:
        return None
    out = torch.stack(parts, dim=1).flatten(0, 1)[:n]  # row k = parts[k % world][k // world]
    return out.to(x.device)


def check_consistency(module: nn.Module, what: str = "model") -> None:
    """Fail on every rank unless all parameters and buffers of ``module`` equal rank 0's.

    The check of EDM's ``check_ddp_consistency`` (Karras et al. 2022, ``torch_utils/misc.py``):
    compare each tensor with rank 0's copy bit for bit; the mismatch flags are reduced so all
    ranks raise together, naming the tensors that differ.
    """
    if not _active():
        return
    named = [*module.named_parameters(), *module.named_buffers()]
    flags = torch.zeros(len(named), dtype=torch.int32)
    for i, (_, tensor) in enumerate(named):
        ref = broadcast(tensor.detach())
        flags[i] = int(not torch.equal(ref, tensor.detach()))
    flags = all_reduce(flags, "max")
    bad = [name for (name, _), f in zip(named, flags.tolist(), strict=True) if f]
    if bad:
        raise DistributedError(
            f"{what} differs between ranks in {len(bad)} tensor(s) ({', '.join(bad[:5])}); "
            "the processes no longer train the same model (non-deterministic kernels, or a "
            "rank that changed its weights outside the optimizer step). No checkpoint was "
            "written; resume from the last one.")


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "Context",
    "DistributedError",
    "all_reduce",
    "barrier",
    "broadcast",
    "check_consistency",
    "context",
    "gather_ordered",
    "is_collective_failure",
    "launched",
    "resolve_device",
    "setup",
    "shard",
    "teardown",
    "timeout_seconds",
]
