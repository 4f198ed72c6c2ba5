"""The run's ``log.csv``: one row of :data:`LOG_FIELDS` per logging interval.

An append log, written as :func:`scoregen.infra.outputs.open_log` describes: the file appears
whole with its header, and each row is one append of a whole line, so a kill leaves complete
rows and at most a torn last one (dropped by :func:`scoregen.training.run_folder.truncate_log`
when the run resumes). An existing ``log.csv`` must be the one scoregen started.
"""

from __future__ import annotations

import os
from pathlib import Path

from scoregen.infra.outputs import OutputError, open_log

LOG_FIELDS = ("step", "loss", "lr", "examples_per_s", "seconds")


class CsvLog:
    """Appends rows of :data:`LOG_FIELDS` to ``log.csv`` (``None``: writes nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.fd = None if path is None else open_log(path, ",".join(LOG_FIELDS), kind="run")

    def write(self, step: int, loss: float, lr: float, rate: float, seconds: float) -> None:
        if self.fd is not None:
            row = f"{step},{loss:.6g},{lr:.6g},{rate:.1f},{seconds:.3f}\n"
            try:
                os.write(self.fd, row.encode())
            except OSError as err:
                raise OutputError(f"cannot append to {self.path}: {err.strerror}; the rows "
                                  "before are kept (free some space, then --resume)") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


__all__ = ["LOG_FIELDS", "CsvLog"]
