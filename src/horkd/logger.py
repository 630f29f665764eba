"""Per-epoch metrics to CSV, JSONL and TensorBoard: the same numbers in three readers' formats."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from horkd.checkpoint import output_error


class MetricsLogger:
    """Appends one row per epoch; CSV columns grow when a later row brings new keys."""

    def __init__(
        self,
        directory: str | Path,
        tensorboard: bool = True,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.directory / "metrics.jsonl"
        self.csv_path = self.directory / "metrics.csv"
        # A stage that starts over starts a fresh log; a resumed one rewrites the rows it kept,
        # dropping any logged after its last saved state.
        self.rows: list[dict[str, Any]] = list(rows or [])
        with _named(self.jsonl_path):
            with self.jsonl_path.open("w") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in self.rows)
            self._rewrite_csv()
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.directory / "tensorboard"))
            except ImportError:  # tensorboard is optional for library users
                self._writer = None

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with _named(self.jsonl_path):
            with self.jsonl_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            self._rewrite_csv()
        if self._writer is not None:
            step = int(row.get("epoch", len(self.rows)))
            for key, value in row.items():
                if isinstance(value, int | float) and key != "epoch" and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def _rewrite_csv(self) -> None:
        if not self.rows:
            self.csv_path.unlink(missing_ok=True)
            return
        columns: list[str] = []
        for row in self.rows:
            columns.extend(key for key in row if key not in columns)
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """A full disk or an unwritable place while logging is one line naming the log (the
    stage's saved state is untouched: a rerun continues from it and rewrites the log)."""
    try:
        yield
    except OSError as exc:
        error = output_error(exc, path, "the stage's metrics log")
        if error is None:
            raise
        raise error from None
