"""The Ray executor: every run a Ray task that asks for its threads as CPUs (and its GPUs).

Every task is submitted at once; a run's teacher is passed to it as an object reference, so Ray
itself holds the run until its teacher is done, and Ray's scheduler places the runs by the
resources they ask for. ``ray.wait`` reports each one as it finishes. A task whose worker process
dies is retried by Ray (``max_retries``) and continues from its run directory; an error raised
by a run is not retried (it would fail again) and stops the study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from horkd.study.executors import EXECUTORS, Engine, OnDone, missing_extra
from horkd.study.schedule import Task


def _call(fn: Any, arg: Any, *_teachers: Any) -> Any:
    """A task's body; the teachers' results are only waited for (Ray resolves them first)."""
    return fn(arg)


@EXECUTORS.register("ray")
class RayEngine(Engine):
    """Runs on the Ray cluster at ``executor.address``, or on a Ray instance started here with
    ``workers x threads`` CPUs (every core when ``workers`` is 1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _import_ray()  # a missing extra is said before anything trains
        self._started = False  # whether this engine started (and so stops) the Ray instance

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        ray = _import_ray()
        if not ray.is_initialized():  # once per study: its workers are kept between phases
            self._connect(ray)
            self._started = True
        self._run(ray, tasks, on_done)

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False

    def _connect(self, ray: Any) -> None:
        address = self.config.address
        if address:
            ray.init(address=address, log_to_driver=True)
        else:  # --workers N: N runs at a time; by default as many as the cores allow
            cpus = self.workers * self.threads if self.workers > 1 else None
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)

    def _run(self, ray: Any, tasks: Sequence[Task], on_done: OnDone) -> None:
        if self._started:  # a request no machine of this instance can meet would wait forever
            _fits(ray.cluster_resources(), tasks)
        body = ray.remote(_call)
        refs: dict[Any, Any] = {}
        waiting: dict[Any, Task] = {}
        for task in tasks:  # seed-major: a teacher comes before the runs that need it
            missing = [k for k in task.after if k not in refs]
            if missing:
                raise ValueError(f"tasks wait on prerequisites no task provides: {missing}")
            ref = body.options(
                num_cpus=task.threads, num_gpus=task.gpus, max_retries=self.config.retries,
                retry_exceptions=False, name=task.label,
            ).remote(task.fn, task.arg, *(refs[k] for k in sorted(task.after, key=str)))
            refs[task.key] = ref
            waiting[ref] = task
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(1, self.threads)))
        done: set[Any] = set()
        try:
            while waiting:
                ready = sum(1 for t in waiting.values() if t.after <= done)
                self.running = min(slots, ready)
                finished, _ = ray.wait(list(waiting), num_returns=1)
                for ref in finished:
                    task = waiting.pop(ref)
                    value = _result(ray, ref)
                    done.add(task.key)
                    on_done(task, value)
        except BaseException:  # an error or Ctrl-C: keep what finished, stop the rest
            finished, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
            for ref in finished:
                task = waiting.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception:  # its own error: the one already raised is reported
                    continue
                on_done(task, value)
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise


def _fits(resources: dict[str, float], tasks: Sequence[Task]) -> None:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    threads = max(t.threads for t in tasks)
    if threads > cpus:
        raise ValueError(f"a run asks for {threads} CPUs (--threads) and this Ray instance has "
                         f"{cpus:g}: lower --threads, or join a larger cluster with --address")
    wanted = max(t.gpus for t in tasks)
    if wanted > gpus:
        raise ValueError(f"a run asks for {wanted:g} GPU(s) (executor.gpus_per_job) and this Ray "
                         f"instance has {gpus:g}")


def _result(ray: Any, ref: Any) -> Any:
    """The task's value; a run's own error is raised as itself, not wrapped by Ray."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else None
        if cause is not None:
            raise cause from None
        raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "Ray") from None
    return ray
