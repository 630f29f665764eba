"""A study's log a person reads: a note true of every run said once, the count and its ETA from
the first task on, the same count as --status, the ablation inside it, threads from the
environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict, tiny_study_base
from PIL import Image

from horkd.study import progress as progress_module
from horkd.study.executors import ExecutorConfig
from horkd.study.threads import default_threads

PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (.+) - (\d+ running, ETA .+|all done)$")
NO_TEST_SPLIT = "has no test split beside it"


def _folder_study(tmp_path: Path) -> Path:
    """Three colour classes in a train/ folder of their own (no test split: one is carved out,
    which every run notes), two final seeds, the orders ablation on one seed."""
    rng = np.random.default_rng(0)
    for c in range(3):
        folder = tmp_path / "photos" / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(15):
            image = np.full((16, 16, 3), 40, np.uint8)
            image[..., c] = 220
            noisy = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"{i}.png")
    base = tiny_study_base(tmp_path)
    base["data"] = {"dataset": "image_folder", "root": str(tmp_path / "photos"),
                    "val_fraction": 0.2, "split_seed": 0,
                    "augment": {"crop_padding": 1, "hflip": False}}
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    teacher["data"] = dict(base["data"])
    teacher["train"]["teacher"] = {**teacher["train"]["teacher"], "epochs": 1}
    study = {
        "name": "log", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": [0, 1], "teachers": {"cls": teacher}, "base": base,
        "methods": ["scratch", "horkd"], "baselines": ["scratch"], "main_regime": "lr4",
        "regimes": {"lr4": {"teacher": "cls"}},
        "search": {"seed": 5, "candidates": {"scratch": [["train.student.optimizer.lr=0.05"]],
                                             "horkd": [["distill.loss.distance_weight=5"]]}},
        "ablation_seeds": [0],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_log_counts_every_task_from_the_first_and_says_each_note_once(tmp_path):
    """Before: the folder's notes came before every run (16 times in 294 lines); the study said
    '32 tasks' where --status said '30 runs'; the first [k/N] line waited for the teacher;
    '2 thread(s) per run' under OMP_NUM_THREADS=1; the orders ablation trained after 'all
    done', with no count."""
    path = _folder_study(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "OMP_NUM_THREADS": "1"}
    status = subprocess.run([sys.executable, "-m", "horkd", "study", str(path), "--status"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    # one task per run (2 searches, 4 finals), the teacher once, the ablation
    assert "to train: 8 tasks (6 runs, 1 teacher, 1 orders ablation)" in status.stdout
    log = tmp_path / "study.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "horkd", "study", str(path), "--workers",
                               "2"], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("study log: 8 tasks to train (6 runs, 1 teacher, 1 orders "
                               "ablation; 0 of 6 runs recorded) on local, 1 thread(s) per run "
                               "(OMP_NUM_THREADS=1), 2 worker(s)"), lines[0]
    # the count comes as the first task starts, before the teacher's first epoch
    assert lines[1] == "[0/8] started: teacher cls seed 0 - ETA after the first student run"
    assert text.count(NO_TEST_SPLIT) == 1, text  # two workers, nine loads of the folder
    assert text.count("data.hr_size not set") == 1, text
    counted = [m for line in lines if (m := PROGRESS.match(line))]
    assert [int(m.group(1)) for m in counted] == list(range(1, 9))
    assert {int(m.group(2)) for m in counted} == {8}
    assert counted[-1].group(3).startswith("ablation lr4/horkd seeds 0: 7 order sets")
    assert counted[-1].group(4) == "all done"
    assert lines.index(counted[-1].group(0)) > max(
        i for i, line in enumerate(lines) if "epoch" in line)  # nothing trains after it
    # the teacher's time does not pace the students': no ETA until a student run finished
    assert counted[0].group(3).startswith("teacher cls seed 0")
    assert counted[0].group(4) == "1 running, ETA after the first student run"


def test_outside_a_study_every_note_is_printed(tmp_path, capsys):
    from horkd.notes import note, once_per_invocation

    note("a note")
    note("a note")
    with once_per_invocation():
        note("a note")
        note("a note")
        note("another")
    note("a note")
    assert capsys.readouterr().out.split("\n") == ["a note"] * 3 + ["another", "a note", ""]


def test_the_eta_of_student_runs_is_never_paced_by_the_teacher(monkeypatch):
    """Seen: '[1/14] teacher ... (2274 s) - 1 running, ETA 8.2 h' with about 15 minutes of
    student runs left."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    teacher, run = ("teacher", "t"), ("r", "horkd")
    progress = progress_module.Progress(14, [].append, bar=False,
                                        kinds=[teacher] + [run] * 13)
    assert progress.starting("teacher t seed 0").endswith("ETA after the first student run")
    assert progress.starting("again") is None  # one start line
    now[0] = 2274.0
    line = progress.finished("teacher t seed 0", 1, kind=teacher, seconds=2274.0)
    assert line.endswith("1 running, ETA after the first student run")
    now[0] = 2344.0
    line = progress.finished("final r/horkd seed 0", 1, kind=run, seconds=70.0)
    # 12 runs of 70 s at the pace so far (2344 s of wall for 2344 s of work)
    assert line.endswith("ETA 14 min"), line
    # a teacher loaded in a second is said, not counted
    assert progress.finished("teacher t seed 0, loaded", 1, trained=False) == (
        "teacher t seed 0, loaded")
    assert progress.count == 2


def test_the_first_eta_comes_from_recorded_times_and_an_ablation_is_like_its_runs(monkeypatch):
    """With the records of an earlier invocation (same threads), the first line has an ETA,
    the teacher's time in it; an ablation counts as its seven order subsets' runs."""
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: 0.0)
    teacher, run, ablation = ("teacher", "t"), ("r", "horkd"), ("ablation", "horkd")
    progress = progress_module.Progress(
        4, [].append, bar=False, kinds=[teacher, run, run, ablation],
        prior={teacher: [600.0], run: [60.0]}, like={ablation: (run, 7)})
    # 600 s + 2 x 60 s + 7 x 60 s = 1140 s of work on one worker
    assert progress.starting("teacher t seed 0").endswith("ETA 19 min")


@pytest.mark.parametrize(("omp", "cpus", "workers", "expected"), [
    ("1", 8, 1, (1, "OMP_NUM_THREADS=1")),
    ("3", 8, 2, (3, "OMP_NUM_THREADS=3")),
    (None, 6, 2, (3, "6 CPU(s) this process may run on, shared by 2 workers")),
    (None, 2, 4, (1, "2 CPU(s) this process may run on, shared by 4 workers")),
    ("", 4, 1, (4, "4 CPU(s) this process may run on")),
])
def test_threads_per_run_follow_the_environment_and_say_why(monkeypatch, omp, cpus, workers,
                                                            expected):
    """Before: '2 thread(s) per run' under OMP_NUM_THREADS=1 (os.cpu_count() alone)."""
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(cpus)), raising=False)
    assert default_threads(ExecutorConfig(kind="local"), workers) == expected
