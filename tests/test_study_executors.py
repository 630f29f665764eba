"""Studies on every executor: the same records from the local pool, Ray and submitit; a worker
killed mid-run retried; progress a person can follow in a file; the status table; a study of a
user's image folder written by `horkd study init` and run as written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict
from PIL import Image

from horkd.cli import main
from horkd.study.executors import ExecutorConfig, SlurmConfig
from horkd.study.runner import run_study

PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (.+) - (\d+ running, ETA .+|all done)$")


def tiny_study(tmp_path: Path, steps: int = 2, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Digits at 16 px, one search candidate per method, two final seeds: about ten tasks."""
    base = tiny_config_dict(tmp_path / "unused")
    for key in ("name", "output_dir", "seeds", "methods"):
        base.pop(key)
    base["data"] = {**base["data"], "split_seed": 0}
    stage = {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": steps}
    base["train"] = {"assistant": stage, "student": stage}
    teacher = tiny_config_dict(tmp_path / "unused", methods=["scratch"])
    study = {
        "name": "executors", "output_dir": str(tmp_path / "study"), "records": "records",
        "seeds": list(seeds), "teachers": {"cls": teacher}, "base": base,
        "methods": ["teacher_lr", "scratch", "horkd"], "baselines": ["scratch"],
        "main_regime": "lr4", "regimes": {"lr4": {"teacher": "cls"}},
        "search": {"seed": 5, "candidates": {
            "scratch": [["train.student.optimizer.lr=0.05"]],
            "horkd": [["distill.loss.distance_weight=5", "distill.loss.angle_weight=10"]]}},
        "ablation_seeds": [],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def records(folder: Path) -> dict[str, tuple[float, list]]:
    """Every run record's validation score and test rows, by its place in the records folder."""
    out = {}
    for path in sorted(folder.rglob("*-seed*.json")):
        if path.parent.name != "teachers":
            data = json.loads(path.read_text())
            out[str(path.relative_to(folder))] = (data["val"], data["rows"])
    return out


def _fresh(tmp_path: Path) -> None:
    import shutil

    for name in ("study", "records"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_here():
    """One local Ray instance (2 CPUs) for this module's tests."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_local_ray_and_submitit_write_identical_records(tmp_path, ray_here, capsys):
    path = tiny_study(tmp_path)
    run_study(path, workers=1, threads=1)
    local = records(tmp_path / "records")
    assert len(local) == 2 + 2 * 2  # a search run per method, two seeds of each final
    _fresh(tmp_path)
    run_study(path, workers=2, threads=1, executor=ExecutorConfig(kind="ray"))
    assert records(tmp_path / "records") == local
    _fresh(tmp_path)
    slurm = SlurmConfig(cluster="local", max_running=2, poll_seconds=0.2)
    run_study(path, workers=2, threads=1, executor=ExecutorConfig(kind="slurm", slurm=slurm))
    assert records(tmp_path / "records") == local
    assert list((tmp_path / "study" / "slurm").iterdir())  # submitit's job folders


def _kill_first_worker_run(study_dir: Path, driver: int, killed: list[int]) -> None:
    """Kill (SIGKILL) the first process other than the driver seen holding a final run's lock."""
    from horkd.run_lock import holder

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        for lock in study_dir.glob("runs/*/*/*-seed*/.horkd.lock"):
            who = holder(lock.parent) or ""
            match = re.match(r"pid (\d+)", who)
            if match and int(match.group(1)) != driver:
                os.kill(int(match.group(1)), signal.SIGKILL)
                killed.append(int(match.group(1)))
                return
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_worker_killed_mid_run_is_retried_and_every_record_is_written_once(
    tmp_path, kind, request
):
    if kind == "ray":
        request.getfixturevalue("ray_here")
    path = tiny_study(tmp_path, steps=12)
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_first_worker_run,
                               args=(tmp_path / "study", os.getpid(), killed), daemon=True)
    watcher.start()
    lines: list[str] = []
    run_study(path, workers=2, threads=1, executor=ExecutorConfig(kind=kind), log=lines.append)
    watcher.join(timeout=1)
    assert killed, "no worker was seen training a final run"
    done = [PROGRESS.match(line) for line in lines if PROGRESS.match(line)]
    labels = [m.group(3).split(":")[0] for m in done if not m.group(3).startswith("teacher")]
    assert len(labels) == len(set(labels)) == 6, labels  # each run reported (and recorded) once
    assert len(records(tmp_path / "records")) == 6
    assert int(done[-1].group(1)) == int(done[-1].group(2)) and done[-1].group(4) == "all done"


def test_progress_lines_go_to_a_file_and_status_says_what_is_left(tmp_path):
    path = tiny_study(tmp_path)
    log = tmp_path / "study.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "horkd", "study", str(path), "--workers",
                               "2", "--threads", "1"], stdout=out, stderr=subprocess.STDOUT,
                              cwd=tmp_path, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    lines = text.splitlines()
    # the teacher is one task: the finals' batch loads it (said, not counted)
    assert re.match(r"study executors: 7 tasks to train \(6 runs, 1 teacher; 0 of 6 runs "
                    r"recorded\) on local, 1 thread\(s\) per run \(--threads\)", lines[0])
    progress = [PROGRESS.match(line) for line in lines if PROGRESS.match(line)]
    assert [int(m.group(1)) for m in progress] == list(range(1, 8))
    assert {int(m.group(2)) for m in progress} == {7}
    assert any(re.match(r"final lr4/horkd/c0 seed 1: val \d+\.\d\d, test \d+\.\d\d \(\d+ s\)",
                        m.group(3)) for m in progress)
    assert "teacher cls seed 0: cnn_small, best val" in text
    # two workers print epochs into one log: each line names its run, seed and stage
    assert re.search(r"^\[final lr4/horkd/c0 seed 1: horkd\] epoch 1/1 loss", text, re.M)
    assert re.search(r"^\[teacher cls seed 0: teacher\] epoch 1/2", text, re.M)
    # the status table, nothing trained: everything recorded now
    status = subprocess.run([sys.executable, "-m", "horkd", "study", str(path), "--status"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "6 runs - 6 recorded, 0 running, 0 pending" in status.stdout
    assert re.search(r"lr4\s+final\s+4/4\s+0\s+0", status.stdout)
    assert re.search(r"cls seed 0: recorded, best val \d", status.stdout)


def test_the_eta_is_paced_by_trained_tasks_not_by_teachers_loaded_in_a_second(monkeypatch):
    """Seen in the fourth round: a loaded teacher finished first and the line said 'ETA 42 s'
    with 41 runs of hours left."""
    from horkd.study import progress as progress_module

    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    progress = progress_module.Progress(41, lines.append, bar=False)
    now[0] = 1.0
    assert progress.finished("teacher t seed 0, loaded", 1, trained=False) == (
        "teacher t seed 0, loaded")  # said, not counted: no task of the count
    now[0] = 601.0
    line = progress.finished("final r/m seed 0", 1, seconds=600.0)
    assert line.startswith("[1/41]") and line.endswith("ETA 6.7 h")  # 40 x 600 s at 601/600
    assert [PROGRESS.match(line) is not None for line in lines] == [False, True]


def test_the_eta_weighs_each_remaining_task_by_what_its_kind_took(monkeypatch):
    """Seen in the fourth round: cheap finals finished first at about 25 s each and the line
    said 'ETA 9 min' with three HORKD finals of about 550 s left on two workers."""
    from horkd.study import progress as progress_module

    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    cheap, slow = ("r", "hinton_kd"), ("r", "horkd")
    progress = progress_module.Progress(6, [].append, bar=False,
                                        kinds=[cheap, cheap, cheap, slow, slow, slow])
    now[0] = 25.0  # two workers: two cheap runs of 25 s each done in 25 s of wall time
    progress.finished("final r/hinton_kd seed 0", 2, kind=cheap, seconds=25.0)
    line = progress.finished("final r/hinton_kd seed 1", 2, kind=cheap, seconds=25.0)
    # no slow run finished yet: they count at the mean so far (1 cheap + 3 x 25 s) x 25/50
    assert line.endswith("ETA 50 s")
    now[0] = 550.0
    line = progress.finished("final r/horkd seed 0", 2, kind=slow, seconds=525.0)
    # left: 1 cheap (25 s) + 2 slow (525 s) = 1075 s of work at 550 s wall per 575 s of work
    assert line.endswith("ETA 17 min")
    for seed in (1, 2):
        line = progress.finished(f"final r/horkd seed {seed}", 1, kind=slow, seconds=525.0)
    assert progress.finished("final r/hinton_kd seed 2", 0, kind=cheap, seconds=25.0).endswith(
        "all done")


def test_status_shows_pending_runs_and_finals_waiting_for_their_search(tmp_path, capsys):
    path = tiny_study(tmp_path)
    assert main(["study", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "6 runs - 0 recorded, 0 running, 6 pending (4 wait for their regime's search)" in out
    assert re.search(r"lr4\s+search\s+0/2\s+0\s+2", out)
    assert re.search(r"lr4\s+final\s+0/4\s+0\s+4  \(after the search\)", out)
    assert not (tmp_path / "study").exists()  # nothing trained, nothing written


def test_status_counts_the_waiting_finals_of_a_regime_that_also_trains_an_unsearched_method(
        tmp_path, capsys):
    """Seen planning the glyph study: a regime with the LR oracle (not searched: its finals
    are ready at once) listed those finals alone, not the searched methods' that wait."""
    path = tiny_study(tmp_path)
    study = yaml.safe_load(path.read_text())
    study["methods"] = ["lr_oracle", "scratch", "horkd"]
    path.write_text(yaml.safe_dump(study))
    assert main(["study", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "8 runs - 0 recorded, 0 running, 8 pending (4 wait for their regime's search)" in out
    # 2 finals of the LR oracle, ready, and 4 of scratch and horkd, waiting
    assert re.search(r"lr4\s+final\s+0/6\s+0\s+6  \(after the search\)", out)


def _folder(root: Path, classes: int = 3, train: int = 16, test: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(count):
                image = np.full((20, 20, 3), 40, np.uint8)
                image[..., c] = 220
                noisy = np.clip(image + rng.integers(0, 30, image.shape), 0, 255)
                Image.fromarray(noisy.astype(np.uint8)).save(root / split / f"class{c}" / f"{i}.png")
    return root


def test_study_init_writes_a_study_that_runs_as_written(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    assert main(["study", "init", "--data", str(folder), "--labels", "0.25", "--seeds", "0",
                 "--methods", "scratch,hinton_kd,horkd"]) == 0
    text = capsys.readouterr().out
    raw = yaml.safe_load(text)  # stdout holds the study file alone
    assert raw["base"]["data"]["hr_size"] == 20 and raw["base"]["degrade"]["lr_size"] == 5
    assert list(raw["regimes"]) == ["full", "labels25"]
    assert {len(c) for c in raw["search"]["candidates"].values()} == {3}  # equal budgets
    # what the page will claim, declared before any run
    # (HORKD against Hinton KD; the teacher's worth against scratch and, with few labels, the
    # semi-supervised student on the same unlabelled images, which init adds to those regimes)
    assert raw["comparisons"] == {"horkd": ["hinton_kd"],
                                  "hinton_kd": ["scratch", "semi_supervised"]}
    assert raw["margin"] == 0.5
    assert raw["regimes"]["labels25"]["methods"] == ["scratch", "hinton_kd", "horkd",
                                                     "semi_supervised"]
    assert "methods" not in raw["regimes"]["full"] or "semi_supervised" not in raw["regimes"][
        "full"]["methods"]
    # held out by construction: the teacher carves the students' validation split
    teacher = raw["teachers"]["teacher"]["data"]
    assert {k: teacher[k] for k in ("val_fraction", "split_seed")} == {"val_fraction": 0.1,
                                                                         "split_seed": 0}
    # as written, but seconds instead of hours: every stage one epoch of two steps
    quick = {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 16}
    raw["teachers"]["teacher"]["train"]["teacher"].update(quick)
    for stage in ("assistant", "student"):
        raw["base"]["train"][stage].update(quick)
    raw["search"]["candidates"] = {m: c[:1] for m, c in raw["search"]["candidates"].items()}
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(raw))
    assert main(["study", str(study), "--doc", str(tmp_path / "RESULTS.md")]) == 0
    # two regimes: their searches go out in one batch and their finals in another, each batch
    # with one teacher task - the count announced first is the count that finishes
    done = [m for line in capsys.readouterr().out.splitlines() if (m := PROGRESS.match(line))]
    assert [int(m.group(1)) for m in done] == list(range(1, int(done[0].group(2)) + 1))
    assert done[-1].group(4) == "all done", done[-1].group(0)
    teacher = json.loads(next((tmp_path / raw["records"]).rglob("teachers/*.json")).read_text())
    assert teacher["classes"] == 3 and "trained_here" not in teacher  # chance, for the page
    made = records(tmp_path / raw["records"])
    # per regime: a search run and a final seed per method (3 in full, 4 with the semi-supervised
    # student in labels25)
    assert len(made) == 2 * 3 + 2 * 4
    assert any(k.startswith("labels25/semi_supervised/") for k in made)
    page = (tmp_path / "RESULTS.md").read_text()
    assert "## Regime `labels25`" in page and "horkd" in page
    assert "validation images: one image moves a validation score" in page  # a tiny folder


def test_study_init_gives_every_regime_its_role_and_says_how_to_register(tmp_path, capsys):
    """Exploratory unless the user registers it: each regime says so, and the comment above the
    regimes says what confirmatory means and how; made confirmatory, the file still loads."""
    from horkd.study.config import load_study

    folder = _folder(tmp_path / "photos")
    assert main(["study", "init", "--data", str(folder), "--labels", "0.25"]) == 0
    text = capsys.readouterr().out
    raw = yaml.safe_load(text)
    assert {r["role"] for r in raw["regimes"].values()} == {"exploratory"}
    comment = text[:text.index("\nregimes:\n")].rsplit("\nmargin:", 1)[1]
    assert "role: confirmatory" in comment and "--register REGIME" in comment
    assert "registered at its first run" in comment and "refused" in comment
    raw["regimes"]["labels25"]["role"] = "confirmatory"  # comparisons and margin are declared
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    study, _ = load_study(path)
    assert study.regimes["labels25"].role == "confirmatory"
    assert study.regimes["full"].role == "exploratory"
    # without Hinton KD nothing is declared: the comment says where the declarations go
    assert main(["study", "init", "--data", str(folder), "--methods", "scratch,rkd"]) == 0
    text = capsys.readouterr().out
    assert "`comparisons` and `margin`, in the regime or here" in text
    assert {r["role"] for r in yaml.safe_load(text)["regimes"].values()} == {"exploratory"}


def test_study_init_refuses_what_cannot_run(tmp_path, capsys):
    folder = _folder(tmp_path / "photos")  # 3 classes, 48 training images
    assert main(["study", "init", "--data", str(folder), "--labels", "0.01"]) == 2
    assert "leaves 0 labelled images for 3 classes" in capsys.readouterr().err
    assert main(["study", "init", "--data", str(folder), "--lr-size", "40"]) == 2
    assert "--lr-size must be below the HR side (20 px)" in capsys.readouterr().err
    assert main(["study", "init", "--data", str(folder), "--methods", "scratch,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["study", "init", "--data", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    tiny = _folder(tmp_path / "tiny", classes=2, train=4, test=2)  # 8 images: 1 to validate
    assert main(["study", "init", "--data", str(tiny)]) == 2
    assert "leave 1 validation image(s) for 2 classes" in capsys.readouterr().err


def test_study_init_leaves_unreadable_files_out_only_when_asked(tmp_path, capsys):
    folder = _folder(tmp_path / "photos")
    (folder / "train" / "class0" / "broken.png").write_text("not a png")
    assert main(["study", "init", "--data", str(folder)]) == 2
    assert "--skip-bad-images" in capsys.readouterr().err
    assert main(["study", "init", "--data", str(folder), "--skip-bad-images"]) == 0
    raw = yaml.safe_load(capsys.readouterr().out)
    # every run of the study leaves them out too, not only the folder check of init
    assert raw["teachers"]["teacher"]["data"]["skip_bad_images"] is True
    assert raw["base"]["data"]["skip_bad_images"] is True


def test_a_missing_engine_names_its_extra(tmp_path, monkeypatch, capsys):
    path = tiny_study(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["study", str(path), "--executor", "ray"]) == 2
    assert "pip install 'horkd[ray]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(["study", str(path), "--executor", "slurm"]) == 2
    assert "pip install 'horkd[slurm]'" in capsys.readouterr().err


def test_slurm_without_a_cluster_and_a_stray_address_are_one_line_each(tmp_path, capsys):
    pytest.importorskip("submitit")
    path = tiny_study(tmp_path)
    assert main(["study", str(path), "--executor", "slurm"]) == 2
    assert "SLURM is not reachable from this machine" in capsys.readouterr().err
    assert main(["study", str(path), "--address", "auto"]) == 2
    assert "--address names a Ray cluster" in capsys.readouterr().err


def test_a_worker_that_does_not_share_the_output_folder_fails_with_one_line(tmp_path):
    from horkd.study.jobs import SharedFolder, SharedFolderError

    shared = SharedFolder.mark(tmp_path / "out")
    shared.check()  # the driver's machine sees it
    elsewhere = SharedFolder(shared.path, "another-study")
    with pytest.raises(SharedFolderError, match="need a filesystem every worker sees"):
        elsewhere.check()
    with pytest.raises(SharedFolderError, match=str(tmp_path / "gone")):
        SharedFolder(str(tmp_path / "gone" / ".horkd-study"), shared.token).check()
