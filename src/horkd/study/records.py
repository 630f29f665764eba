"""Run records: what each finished run of a study measured, as a small JSON file kept in git.

Run directories hold gigabytes and stay on the machine that trained them; a record holds the
settings key, the validation and test scores, the resolution curve and the wall time, so a fresh
clone reuses every recorded run and trains only what is missing. The key is a digest of exactly
what the run's numbers depend on: its config without paths and seeds, the fingerprint of the
teacher it learnt from, its seed and what it was scored for.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from horkd.checkpoint import git_sha, write_json
from horkd.config import DataConfig
from horkd.data.digest import data_digest
from horkd.data.partition import with_partition_digest
from horkd.run_dir import settings_digest

VOLATILE = ("name", "output_dir", "seeds")  # where and how a run is filed, not what it learns


def environment() -> dict[str, str]:
    """Where a run was trained: on a CPU the same settings give the same bits only with the same
    kind of CPU (its vector instructions) and the same PyTorch, so a record says which; on a GPU
    (``device: auto`` takes one when present) not even run to run."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": _cpu_name(), "gpu": gpu}  # the architecture: RunRecord.machine


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_differences(recorded: dict[str, str], here: dict[str, str]) -> dict[str, tuple]:
    """The environment entries that differ, as (recorded, here)."""
    return {k: (recorded.get(k), here.get(k)) for k in sorted({*recorded, *here})
            if recorded.get(k) != here.get(k)}


def record_key(config: dict[str, Any], teacher: str, seed: int, kind: str, scored: bool) -> str:
    """The settings key of one seed of one job: equal key, equal numbers (on one machine)."""
    settings = {k: v for k, v in config.items() if k not in VOLATILE}
    settings["teacher"] = {k: v for k, v in settings.get("teacher", {}).items()
                           if k != "checkpoint"}
    data = settings.get("data", {})
    if data.get("split_file"):  # a partition counts by its parts, not where its file lies
        settings["data"] = data = with_partition_digest(data)
    dataset = data.get("dataset", DataConfig.model_fields["dataset"].default)
    settings["data_files"] = data_digest(dataset, data.get("root"))
    return settings_digest([settings, teacher, seed, kind, scored])


@dataclass
class RunRecord:
    key: str
    kind: str  # search | final
    regime: str
    method: str
    tag: str
    seed: int
    config: dict[str, Any]  # the job's experiment config (what `--reproduce` trains again)
    teacher: dict[str, str]  # name and fingerprint of the teacher it learnt from
    val: float  # best validation score (the task's score key); NaN for a diverged search run
    rows: list[dict[str, Any]] = field(default_factory=list)  # test rows (finals only)
    curve: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch validation
    seconds: float = 0.0  # wall time of the invocation that finished it
    threads: int = 1
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. the assistant guard's verdict
    machine: str = field(default_factory=platform.machine)
    git_sha: str | None = field(default_factory=git_sha)
    environment: dict[str, str] = field(default_factory=dict)  # empty in records made before it
    numerics_version: int = 0  # the code's NUMERICS_VERSION when it was measured (0: unknown)
    # CPU-seconds of the run, every thread: the process's over the invocation that finished
    # it, or its stages' own where they trained in earlier invocations too (a resume). Unlike
    # the wall time it leaves out a pause (SIGSTOP) and the other jobs sharing the cores. None
    # in records made before it was kept.
    cpu_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cost(self) -> float:
        """The run's CPU-seconds: measured where the record holds it, else wall x threads."""
        from horkd.report.compute import cpu_of

        return cpu_of(vars(self))


class DamagedRecord(ValueError):
    """A record file that is not a run record: cut short, hand-edited, of another shape."""


DAMAGED = ".damaged"  # a damaged record is moved aside under its own name with this added


def _check(data: Any) -> RunRecord:
    """``data`` as a record when it is one: every field of its type (older records lack the
    fields added since, which take their defaults), no other key, a final's test rows."""
    if not isinstance(data, dict):
        raise DamagedRecord(f"it holds a JSON {type(data).__name__}, not a record's object")
    try:  # strict: a score written as a string is damage, not a number to guess
        _schema().model_validate(data)
    except ValidationError as err:
        raise DamagedRecord("; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'record'}: "
            + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()[:3]
        )) from None
    record = RunRecord(**data)
    if record.kind not in ("search", "final"):
        raise DamagedRecord(f"kind: {record.kind!r} is neither 'search' nor 'final'")
    if record.kind == "final" and not record.rows and record.error is None:
        raise DamagedRecord("rows: a final run's record holds no test rows")
    for i, row in enumerate(record.rows):  # what the page reads of each row
        if not isinstance(row.get("method"), str) or not isinstance(row.get("role"), str):
            raise DamagedRecord(f"rows[{i}]: no 'method' or 'role'")
        bad = [k for k, v in row.items() if k not in ("method", "role", "fallback")
               and not (isinstance(v, int | float) and not isinstance(v, bool))]
        if bad:
            raise DamagedRecord(f"rows[{i}].{bad[0]}: {row[bad[0]]!r} is not a number")
    return record


@functools.cache
def _schema() -> type[BaseModel]:
    """RunRecord's fields and types as a strict pydantic model (the dataclass stays plain)."""
    hints = get_type_hints(RunRecord)
    spec: dict[str, Any] = {}
    for f in fields(RunRecord):
        required = f.default is MISSING and f.default_factory is MISSING
        spec[f.name] = (hints[f.name], ... if required else None)
    return create_model("RunRecordSchema", __config__=ConfigDict(strict=True, extra="forbid"),
                        **spec)



def check_record_file(path: Path) -> RunRecord:
    """The record in ``path``; :class:`DamagedRecord` saying what is wrong when it is none."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise DamagedRecord(f"not text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DamagedRecord(f"not JSON ({exc}; {len(text)} bytes: cut short?)") from None
    return _check(data)


class RecordBook:
    """The records folder: ``<regime>/<method>/<tag>/<kind>-seed<N>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, kind: str, regime: str, method: str, tag: str, seed: int) -> Path:
        return self.folder / regime / method / tag / f"{kind}-seed{seed}.json"

    def load(self, kind: str, regime: str, method: str, tag: str, seed: int,
             key: str) -> RunRecord | None:
        """The record of that run when it holds the same settings key, else None. A damaged
        record is moved aside (``<name>.damaged``, see :meth:`damaged`), named in one line,
        and None returned: its run is pending and trains again."""
        path = self.path(kind, regime, method, tag, seed)
        if not path.is_file():
            return None
        try:
            record = check_record_file(path)
        except DamagedRecord as exc:
            set_aside(path, str(exc))
            return None
        return record if record.key == key else None

    def save(self, record: RunRecord) -> Path:
        path = self.path(record.kind, record.regime, record.method, record.tag, record.seed)
        write_json(path, _portable(record.as_dict(), Path.cwd()), "a study record")
        return path

    def damaged(self) -> list[Path]:
        """The records moved aside as damaged (their runs train again; delete them once
        looked at)."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.rglob(f"*.json{DAMAGED}"))

    def teacher_path(self, name: str, seed: int) -> Path:
        return self.folder / "teachers" / f"{name}-seed{seed}.json"


def _portable(node: Any, here: Path) -> Any:
    """``node`` with every path inside ``here`` (the study's working folder) written relative
    to it: committed records name no folder of the machine that trained them, and
    ``--reproduce`` from a clone's root finds the same places (keys never hold these paths)."""
    if isinstance(node, dict):
        return {k: _portable(v, here) for k, v in node.items()}
    if isinstance(node, list):
        return [_portable(v, here) for v in node]
    prefix = f"{here}{os.sep}"
    return node[len(prefix):] if isinstance(node, str) and node.startswith(prefix) else node


def set_aside(path: Path, why: str) -> None:
    """Move a damaged record beside its name (``<name>.damaged``) and say so in one line; a
    record another process moved first is left to it."""
    aside = path.with_name(path.name + DAMAGED)
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    except OSError as exc:
        print(f"horkd: damaged study record {path} ({why}) could not be moved aside ({exc}): "
              "its run is treated as not recorded", file=sys.stderr, flush=True)
        return
    print(f"horkd: damaged study record {path} ({why}): moved aside to {aside.name}; its run "
          "trains again", file=sys.stderr, flush=True)


def read_teacher_record(path: Path) -> dict[str, Any] | None:
    """A teacher's record, checked as a run record is: a damaged one is moved aside with one
    line and read as absent, so the study records the teacher again (from its finished stage,
    or by training it) instead of stopping."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        set_aside(path, f"not JSON ({exc})")
        return None
    if not isinstance(data, dict):
        set_aside(path, f"a teacher record is a JSON object, not {type(data).__name__}")
        return None
    wanted = {"name": str, "seed": int, "fingerprint": str, "val": (int, float)}
    for key, kind in wanted.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (
                isinstance(value, float) and value != value):
            set_aside(path, f"'{key}' is {value!r}, not a {getattr(kind, '__name__', 'number')}")
            return None
    return data


def read_record(path: str | Path) -> RunRecord:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run record not found: {path}")
    try:
        return check_record_file(path)
    except DamagedRecord as exc:
        raise ValueError(f"{path} is not a horkd run record: {exc}") from None
