"""The SLURM executor, through submitit: every run a SLURM job running the same job function.

A run is submitted once its teacher is done (at most ``slurm.max_running`` at a time when set),
with ``cpus_per_task`` its threads and the partition, time and GPUs of the study file. A job that
ends without a result (pre-empted, killed, out of time) is submitted again, at most ``retries``
times, and continues from its run directory; an error raised by the run stops the study.
``slurm.cluster: local`` runs the jobs with submitit's local executor: the same pickling, job
folders and result files, as processes on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

from horkd.study.executors import EXECUTORS, Engine, OnDone, missing_extra
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
        submitit = _import_submitit()
        slurm, executor = self.config.slurm, self._executor
        pending, running = list(tasks), {}
        done: set[Hashable] = set()
        lost: dict[Hashable, int] = {}
        limit = slurm.max_running or len(tasks)
        try:
            while pending or running:
                while len(running) < limit:
                    task = next((t for t in pending if t.after <= done), None)
                    if task is None:
                        break
                    pending.remove(task)
                    running[self._submit(executor, task)] = task
                self.running = len(running)
                if not running:
                    missing = sorted({str(k) for t in pending for k in t.after - done})
                    raise ValueError(f"tasks wait on prerequisites no task provides: {missing}")
                finished = [job for job in running if job.done()]
                if not finished:
                    time.sleep(slurm.poll_seconds)
                    continue
                for job in finished:
                    task = running.pop(job)
                    try:
                        value = job.result()
                    except submitit.core.utils.UncompletedJobError:
                        if lost.get(task.key, 0) >= self.config.retries:
                            raise
                        lost[task.key] = lost.get(task.key, 0) + 1
                        print(f"[{task.label}] SLURM job {job.job_id} ended without a result: "
                              f"submitted again ({lost[task.key]} of {self.config.retries})",
                              flush=True)
                        pending.insert(0, task)
                        continue
                    except submitit.core.utils.FailedJobError as err:
                        raise RuntimeError(f"[{task.label}] failed in SLURM job {job.job_id}: "
                                           f"{_last_line(str(err))}") from None
                    done.add(task.key)
                    on_done(task, value)
        except BaseException:
            for job in running:
                job.cancel(check=False)
            raise

    def _submit(self, executor: Any, task: Task) -> Any:
        slurm = self.config.slurm
        gpus = slurm.gpus_per_task or int(self.config.gpus_per_job)
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
        return executor.submit(task.fn, task.arg)


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
