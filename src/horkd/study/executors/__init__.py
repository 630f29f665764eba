"""Where a study's runs train: a local process pool, a Ray cluster or SLURM (through submitit).

An executor is one class registered by name with a small contract: ``run(tasks, on_done)`` runs
every task's ``fn(arg)`` once the tasks keyed in its ``after`` are done (a run after the teacher
it learns from) and calls ``on_done(task, value)`` in this, the driver's, process as each one
finishes - the driver alone writes records, so two workers never write the same one. Each
engine keeps the number of tasks in flight in ``running`` for the progress line. A worker lost
mid-task is retried by the engine (``retries``); the task continues from its run directory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from horkd.registry import Registry
from horkd.study.schedule import Task

OnDone = Callable[[Task, Any], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmConfig(_Strict):
    """What each SLURM job asks for (``executor.slurm`` in the study file)."""

    partition: str | None = Field(None, description="sbatch --partition; null: the default")
    time_min: int = Field(240, ge=1, description="wall-clock limit of one job, minutes")
    cpus_per_task: int | None = Field(None, ge=1, description="null: the job's threads")
    gpus_per_task: int = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0, description="null: the partition's default")
    max_running: int | None = Field(
        None, ge=1, description="jobs in the queue at once; null: every job that is ready"
    )
    poll_seconds: float = Field(10.0, gt=0, description="how often job states are read")
    additional: dict[str, Any] = Field(
        default_factory=dict, description="more sbatch parameters, e.g. {account: lab}"
    )
    cluster: Literal["slurm", "local"] = Field(
        "slurm",
        description="local: submitit's local executor - the same pickling and job files, "
        "processes on this machine (to try a set-up without a cluster)",
    )


class ExecutorConfig(_Strict):
    """``executor`` in the study file; ``--executor`` and ``--address`` override it."""

    kind: str = Field("local", description="local (a process pool), ray or slurm")
    address: str | None = Field(
        None, description="ray: auto, HOST:PORT or ray://HOST:PORT; null starts Ray here"
    )
    gpus_per_job: float = Field(0, ge=0, description="GPUs each run asks for (ray, slurm)")
    retries: int = Field(2, ge=0, description="times a task whose worker was lost is run again")
    slurm: SlurmConfig = SlurmConfig()

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        EXECUTORS.get(kind)
        return kind


class Engine(ABC):
    """One way of running a study's tasks; ``workers`` and ``threads`` as ``horkd study`` was
    given them (the local pool's size; what a local Ray instance is started with); ``out`` the
    study's output folder (where an engine keeps files of its own)."""

    def __init__(
        self, config: ExecutorConfig, workers: int, threads: int, out: Path = Path(".")
    ) -> None:
        self.config = config
        self.workers = workers
        self.threads = threads
        self.out = out
        self.running = 0

    @abstractmethod
    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        """Every task once its prerequisites are done; on an error nothing new starts and the
        error is raised; on Ctrl-C the workers are stopped (a rerun continues)."""

    @property
    def remote(self) -> bool:
        """Whether tasks may run on other machines (run directories must be shared then)."""
        return True

    def close(self) -> None:  # noqa: B027  (an engine that keeps nothing has nothing to do)
        """Release what the engine kept between calls (a pool, a Ray instance it started)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


EXECUTORS: Registry[type[Engine]] = Registry("executor")


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing_extra(extra: str, package: str) -> MissingExtraError:
    return MissingExtraError(f"the {extra} executor needs {package}: pip install 'horkd[{extra}]'")


def make_engine(config: ExecutorConfig, workers: int, threads: int, out: Path) -> Engine:
    return EXECUTORS.get(config.kind)(config, workers, threads, out)


from horkd.study.executors import local, on_ray, on_slurm  # noqa: E402,F401  (register them)

__all__ = ["EXECUTORS", "Engine", "ExecutorConfig", "MissingExtraError", "SlurmConfig", "make_engine",
           "missing_extra"]
