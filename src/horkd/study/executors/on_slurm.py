"""The SLURM executor, through submitit: every run a SLURM job running the same job function.

A run is submitted once its teacher is done (at most ``slurm.max_running`` at a time when set),
with ``cpus_per_task`` its threads and the partition, time and GPUs of the study file. A job that
ends without a result (pre-empted, killed, out of time) is submitted again, at most ``retries``
times, and continues from its run directory; an error raised by the run stops the study.
``slurm.cluster: local`` runs the jobs with submitit's local executor: the same pickling, job
folders and result files, as processes on this machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from horkd.study.executors import EXECUTORS, Engine, OnDone, missing_extra
from horkd.study.executors.queue import TaskQueue
from horkd.study.schedule import Task


@EXECUTORS.register("slurm")
class SlurmEngine(Engine):
    """Jobs' files (submitit's pickles and logs) go to ``OUT/slurm``, on the filesystem the
    nodes share."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        submitit = _import_submitit()  # a missing extra is said before anything trains
        cluster = self.config.slurm.cluster
        try:
            self._executor = submitit.AutoExecutor(folder=str(self.out / "slurm" / "%j"),
                                                   cluster=cluster)
        except RuntimeError:  # submitit found no srun/sbatch
            raise ValueError("--executor slurm: SLURM is not reachable from this machine (no "
                             "srun); submit the study from a node of the cluster, or set "
                             "executor.slurm.cluster: local to try it here") from None

    @property
    def remote(self) -> bool:
        return self.config.slurm.cluster == "slurm"

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        slurm = self.config.slurm
        queue, running = TaskQueue(tasks, on_done, self.config.retries), {}
        limit = slurm.max_running or len(tasks)
        try:
            while queue.pending or running:
                while len(running) < limit and (task := queue.next_ready()):
                    running[self._submit(self._executor, task)] = task
                self.running = len(running)
                if not running:
                    queue.stalled()
                finished = [job for job in running if job.done()]
                if not finished:
                    time.sleep(slurm.poll_seconds)
                for job in finished:  # every finished result is kept before an error is raised
                    _collect(queue, running.pop(job), job)
        except BaseException:
            for job in running:
                job.cancel(check=False)
            raise

    def _submit(self, executor: Any, task: Task) -> Any:
        slurm = self.config.slurm
        gpus = slurm.gpus_per_task or math.ceil(task.gpus)
        executor.update_parameters(
            name=f"horkd-{task.label}"[:60].replace(" ", "-").replace("/", "-"),
            timeout_min=slurm.time_min,
            cpus_per_task=slurm.cpus_per_task or task.threads,
            **({"gpus_per_node": gpus} if gpus else {}),
            **({"mem_gb": slurm.mem_gb} if slurm.mem_gb else {}),
            **({"slurm_partition": slurm.partition} if slurm.partition else {}),
            **({"slurm_additional_parameters": dict(slurm.additional)} if slurm.additional
               else {}),
        )
        try:
            return executor.submit(task.fn, task.arg)
        except _import_submitit().core.utils.FailedSubmissionError as err:
            raise ValueError(f"[{task.label}] SLURM refused the job: {_last_line(str(err))} "
                             "(check executor.slurm: partition, time, GPUs, account)") from None


def _collect(queue: TaskQueue, task: Task, job: Any) -> None:
    errors = _import_submitit().core.utils
    try:
        value = job.result()
    except errors.FailedJobError as err:  # the run's own error (a subclass of the next one)
        queue.error(RuntimeError(f"[{task.label}] failed in SLURM job {job.job_id}: "
                                 f"{_last_line(str(err))}"))
    except errors.UncompletedJobError as err:  # pre-empted, killed, out of time
        queue.lost_task(task, f"SLURM job {job.job_id} ended without a result", err)
    else:
        queue.finished(task, value)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _import_submitit() -> Any:
    try:
        import submitit
        import submitit.core.utils  # noqa: F401  (its error types)
    except ImportError:
        raise missing_extra("slurm", "submitit") from None
    return submitit
