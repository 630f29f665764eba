"""Stop signals are never lost (issue 39, items 1 and 7).

A SIGINT or SIGTERM at any moment of ``horkd run`` stops it at the next safe point with its state
saved, exit status 130 / 143, and no later stage starts; the rerun ends as an uninterrupted run
does, bit for bit. The signal is sent to the run's own process group from inside the run at a
named point (the way tests/test_resume.py injects its crash), so the moment is exact, not a race.
A study's workers end with their driver, even when it is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import tiny_config_dict, tiny_study_base

# nothing here imports torch at import time: a study's workers import this module for the
# task of the last test
STATE_FILE = "train_state.safetensors"  # horkd.trainer.STATE_FILE

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

# ``python -c SIGNALLED POINT SIGNAL horkd-args...``: horkd's own entry point, with the signal
# sent to the process group at POINT:
#   last-validation  while the teacher's last epoch is validated
#   after:STAGE      once STAGE (teacher, students/scratch, ...) has finished, before the next
SIGNALLED = """
import os, signal, sys
from horkd.cli import main
from horkd.experiment.stages import StageRunner
from horkd.trainer import Trainer

point, name, *argv = sys.argv[1:]

def send():
    os.killpg(0, getattr(signal, name))  # the whole group, as a terminal or a scheduler does

if point == "last-validation":
    end_epoch = Trainer._end_epoch

    def signalled_end_epoch(self, loop, logger):
        if self.out_dir.name == "teacher" and loop.epoch == self.cfg.epochs - 1:
            validate = self.validate

            def validating(model):
                send()
                return validate(model)

            self.validate = validating
        return end_epoch(self, loop, logger)

    Trainer._end_epoch = signalled_end_epoch
else:
    stage = point.removeprefix("after:")
    train = StageRunner.train

    def signalled_train(self, name, *args, **kwargs):
        outcome = train(self, name, *args, **kwargs)
        if name == stage:
            send()
        return outcome

    StageRunner.train = signalled_train
sys.exit(main(argv))
"""

STAGES = ("teacher", "students/scratch")  # the order they train


def _config(tmp_path: Path, name: str) -> Path:
    cfg = tiny_config_dict(tmp_path / name, deterministic=True, methods=["scratch"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _args(config: Path) -> list[str]:
    return ["run", str(config), "--no-progress", "--no-report"]


def _weights(run: Path) -> dict[str, dict[str, Any]]:
    from safetensors.torch import load_file

    return {str(p.parent.relative_to(run)): load_file(p)
            for p in sorted(run.rglob("model.safetensors"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("uninterrupted")
    config = _config(root, "run")
    done = subprocess.run([sys.executable, "-m", "horkd", *_args(config)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    weights = _weights(root / "run")
    assert sorted(weights) == sorted(f"seed0/{s}" for s in STAGES)
    return weights


def _signalled(config: Path, point: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SIGNALLED, point, name, *_args(config)],
                          env=ENV, capture_output=True, text=True, timeout=300,
                          start_new_session=True)  # its own group: the signal stays in it


def _started(run: Path) -> list[str]:
    """The stages that trained at all: a log row, a saved state or weights."""
    seed = run / "seed0"
    return [s for s in STAGES if any((seed / s / f).exists() for f in (
        "metrics.jsonl", STATE_FILE, "model.safetensors", "done.json"))]


def _rerun_matches(config: Path, run: Path, uninterrupted: dict) -> str:
    import torch

    again = subprocess.run([sys.executable, "-m", "horkd", *_args(config)], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not list(run.rglob(STATE_FILE))  # every stage finished
    ours = _weights(run)
    assert ours.keys() == uninterrupted.keys()
    for stage, tensors in ours.items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, uninterrupted[stage][key]), f"{stage}: {key} differs"
    return again.stdout


def test_sigint_at_the_teachers_last_validation_stops_before_any_later_stage(
        tmp_path, uninterrupted):
    config, run = _config(tmp_path, "run"), tmp_path / "run"
    out = _signalled(config, "last-validation", "SIGINT")
    assert out.returncode == 130, out.stdout + out.stderr
    assert "[teacher] epoch 2/2" in out.stdout  # the validation the signal came in finished
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("horkd:")]
    assert len(lines) == 1 and lines[0].startswith("horkd: stopped by SIGINT at the end of epoch 2")
    assert "run the same command again" in lines[0]
    assert _started(run) == ["teacher"]  # no later stage started
    assert not (run / "seed0/teacher/done.json").exists()  # resumable, not recorded as done
    stdout = _rerun_matches(config, run, uninterrupted)
    assert "[teacher] epoch" not in stdout  # its epochs were all trained before the stop


def test_sigterm_between_two_stages_stops_before_the_next(tmp_path, uninterrupted):
    config, run = _config(tmp_path, "run"), tmp_path / "run"
    out = _signalled(config, "after:teacher", "SIGTERM")
    assert out.returncode == 143, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "horkd: stopped by SIGTERM before students/scratch" in out.stderr
    assert "run the same command again" in out.stderr
    assert _started(run) == ["teacher"]  # the student never started
    assert (run / "seed0/teacher/done.json").exists()  # the teacher finished and is recorded
    stdout = _rerun_matches(config, run, uninterrupted)
    assert "[teacher] epoch" not in stdout and "[scratch] epoch 1/2" in stdout


# --------------------------------------------------------------------- study workers (item 7)

def _study(tmp_path: Path) -> Path:
    """A tiny study whose two teachers train long enough (many short epochs) to be killed
    mid-way."""
    base = tiny_study_base(tmp_path)
    teachers = {}
    for name, lr in (("a", 0.05), ("b", 0.04)):  # two teachers: both workers train at once
        teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
        teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 200,
                                       "optimizer": {"lr": lr}}
        teachers[name] = teacher
    study = {
        "name": "orphans", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0], "teachers": teachers, "base": base,
        "methods": ["teacher_lr", "scratch"], "baselines": ["scratch"],
        "main_regime": "a", "regimes": {"a": {"teacher": "a"}, "b": {"teacher": "b"}},
        "search": {"seed": 5, "candidates": {"scratch": [["train.student.optimizer.lr=0.05"]]}},
        "ablation_seeds": [],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_study_workers_end_within_seconds_of_their_driver_killed_with_sigkill(tmp_path):
    path, log = _study(tmp_path), tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "horkd", "study", str(path), "--workers", "2", "--threads",
             "1"], env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("] epoch 1/200") < 2:  # each worker trains a teacher
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        workers = [p for p in _children(driver.pid) if _is_worker(p)]
        assert len(workers) == 2, (workers, log.read_text())
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed = time.monotonic()
        while any(_alive(p) for p in workers) and time.monotonic() - killed < 10:
            time.sleep(0.05)
        lived = time.monotonic() - killed
        assert not any(_alive(p) for p in workers), "workers outlived their driver by 10 s"
        assert lived < 2.5, f"the workers outlived their driver by {lived:.1f} s"
    finally:
        driver.kill()
        for pid in workers:  # a failed check leaves no orphan training on
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _train_until_asked(folder: str) -> None:
    """A run as a worker trains it: it stops (with its state saved) once asked to."""
    from horkd import stop

    Path(folder, f"{os.getpid()}.started").write_text("")
    deadline = time.monotonic() + 60
    while (name := stop.requested()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    Path(folder, f"{os.getpid()}.stopped").write_text(str(name))
    raise stop.TrainingStopped(f"stopped by {name} in a worker", name)


def test_a_study_driver_asked_to_stop_passes_it_to_its_workers_and_starts_nothing(tmp_path):
    """SIGTERM to the driver alone (a scheduler's pre-emption): its running runs are asked to
    stop, none of the queued ones starts, the driver ends with 143."""
    from horkd import stop
    from horkd.study.executors.local import run_tasks
    from horkd.study.schedule import Task

    def terminate_when_both_train(request: stop.StopRequest) -> None:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.started"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        if getattr(signal.getsignal(signal.SIGTERM), "__self__", None) is request:
            os.kill(os.getpid(), signal.SIGTERM)  # (never to a pytest that would die of it)

    tasks = [Task(i, _train_until_asked, str(tmp_path)) for i in range(4)]
    finished: list[Any] = []
    with stop.handling() as request, pytest.raises(stop.TrainingStopped) as stopped:
        threading.Thread(target=terminate_when_both_train, args=(request,), daemon=True).start()
        run_tasks(tasks, 2, lambda task, value: finished.append(task), retries=0)
    assert stopped.value.exit_status == 143 and "stopped by SIGTERM" in str(stopped.value)
    assert finished == []
    assert len(list(tmp_path.glob("*.started"))) == 2  # the queued runs never started
    assert sorted(p.read_text() for p in tmp_path.glob("*.stopped")) == ["SIGTERM", "SIGTERM"]
    assert stop.requested() is None  # the request ended with the command that had it
