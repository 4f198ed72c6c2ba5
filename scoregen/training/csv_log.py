"""The run's ``log.csv``: one row of :data:`LOG_FIELDS` per logging interval."""

from __future__ import annotations

import csv
from pathlib import Path

LOG_FIELDS = ("step", "loss", "lr", "examples_per_s", "seconds")


class CsvLog:
    """Appends rows of :data:`LOG_FIELDS` to ``log.csv`` (header written once)."""

    def __init__(self, path: Path | None) -> None:
        self.fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            self.fh = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
            self.writer = csv.writer(self.fh)
            if new:
                self.writer.writerow(LOG_FIELDS)

    def write(self, step: int, loss: float, lr: float, rate: float, seconds: float) -> None:
        if self.fh is not None:
            self.writer.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{rate:.1f}",
                                  f"{seconds:.3f}"])
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


__all__ = ["LOG_FIELDS", "CsvLog"]
