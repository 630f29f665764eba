"""The study's training order: seed-major, each teacher a task of the worker pool."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config_dict

from horkd.cli import main
from horkd.study.executors.local import run_tasks
from horkd.study.schedule import Task, seed_major


def _plan(seeds: list[list[int]], needs: list[set[str]], fn=lambda arg: arg) -> list[Task]:
    teachers = {k: Task(k, fn, k) for k in set().union(*needs)}
    return seed_major(seeds, needs, teachers, lambda i: Task(f"job{i}", fn, f"job{i}"))


def test_seed_major_puts_every_method_of_a_seed_first_and_each_teacher_before_its_first_run():
    # given method-major (A0, A1, B0, B1), as a study lists its finals
    tasks = _plan([[0], [1], [0], [1]], [{"t0"}, {"t1"}, {"t0"}, {"t1"}])
    assert [t.key for t in tasks] == ["t0", "job0", "job2", "t1", "job1", "job3"]
    assert tasks[1].after == frozenset({"t0"}) and tasks[0].after == frozenset()
    # a prerequisite nobody provides (a recorded teacher) is not waited on
    tasks = seed_major([[3]], [{"gone"}], {}, lambda i: Task("job", str, i))
    assert [t.key for t in tasks] == ["job"] and tasks[0].after == frozenset()


def test_runs_wait_for_their_teacher_while_the_next_seeds_teacher_trains_beside_them():
    events: list[str] = []
    lock = threading.Lock()

    def work(key: str) -> str:
        with lock:
            events.append(f"start {key}")
        time.sleep(0.05 if key.startswith("t") else 0.01)
        with lock:
            events.append(f"end {key}")
        return key

    tasks = _plan([[0], [1], [0], [1]], [{"t0"}, {"t1"}, {"t0"}, {"t1"}], work)
    seen: list[str] = []
    run_tasks(tasks, 2, lambda task, value: seen.append(value), pool=ThreadPoolExecutor(2))
    assert sorted(seen) == sorted(t.key for t in tasks)
    for job, teacher in (("job0", "t0"), ("job2", "t0"), ("job1", "t1"), ("job3", "t1")):
        assert events.index(f"end {teacher}") < events.index(f"start {job}")
    # the second worker does not idle while seed 0's teacher trains: it starts seed 1's
    assert events[:2] == ["start t0", "start t1"]


def test_an_error_stops_new_tasks_and_is_raised_and_a_missing_prerequisite_is_named():
    def work(key: str) -> str:
        if key == "job0":
            raise RuntimeError("diverged")
        time.sleep(0.2 if key == "job1" else 0)  # still running when job0 fails
        return key

    started: list[str] = []
    tasks = _plan([[0], [0], [1]], [{"t0"}, {"t0"}, {"t0"}], work)
    with pytest.raises(RuntimeError, match="diverged"):
        run_tasks(tasks, 2, lambda task, value: started.append(value),
                  pool=ThreadPoolExecutor(2))
    assert "job2" not in started
    orphan = [Task("job", str, 1, frozenset({"never"}))] * 2
    with pytest.raises(ValueError, match="no task provides: \\['never'\\]"):
        run_tasks(orphan, 2, lambda task, value: None, pool=ThreadPoolExecutor(2))


def test_per_seed_teachers_train_in_workers_each_in_a_directory_of_its_own(tmp_path: Path):
    base = tiny_config_dict(tmp_path / "unused")
    for key in ("name", "output_dir", "seeds", "methods"):
        base.pop(key)
    one_epoch = {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2}
    base["train"] = {"assistant": one_epoch, "student": one_epoch}
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["train"]["teacher"] = one_epoch
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    study = {
        "name": "per_seed", "output_dir": str(tmp_path / "study"), "workers": 2,
        "seeds": [0, 1], "teachers": {"split": "teacher.yaml"}, "base": base,
        "methods": ["scratch"], "baselines": ["scratch"], "main_regime": "one",
        "regimes": {"one": {"teacher": "split", "teacher_per_seed": True,
                            "description": "a teacher per seed"}},
        "search": {"seed": 5, "candidates": {"scratch": [["train.student.optimizer.lr=0.05"]]}},
        "ablation_seeds": [],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["study", str(path), "--threads", "1"]) == 0
    teachers = tmp_path / "study" / "teachers"
    for seed in (0, 1, 5):  # the search seed's teacher too
        assert (teachers / f"split-seed{seed}" / f"seed{seed}" / "teacher").is_dir()
    facts = [json.loads(p.read_text())
             for p in sorted((tmp_path / "records" / "teachers").glob("*.json"))]
    assert [f["seed"] for f in facts] == [0, 1, 5]
    assert len({f["fingerprint"] for f in facts}) == 3
    finals = json.loads((tmp_path / "study" / "study.json").read_text())["finals"]
    assert [sorted(r["rows"]) for r in finals] == [["0", "1"]]
