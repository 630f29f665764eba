"""Runs that cannot clobber each other, and users' imperfect image folders.

The lock tests start real ``horkd run`` processes. The image-fault table (docs/reliability.md
lists it) builds a small class-folder tree with one fault each and runs ``horkd run`` on it with
and without ``--skip-bad-images``: every case ends with a message and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from horkd.cli import main
from horkd.data.images import load_image
from tests.conftest import tiny_config_dict

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _horkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "horkd", *args, "--no-progress", "--no-report"]


def _slow_config(tmp_path: Path, name: str, run_dir: Path) -> Path:
    """A run of a few seconds: long enough to start a second one beside it."""
    stage = {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 12, "optimizer": {"lr": 0.05}}
    cfg = tiny_config_dict(run_dir, deterministic=True, methods=["scratch", "horkd"])
    cfg["train"] = {"teacher": stage, "assistant": stage, "student": stage}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# `horkd run`, imported and waiting for a line on stdin: it reaches the lock at once when told,
# however slowly this machine imports torch
READY_THEN_RUN = """
import sys
import horkd.experiment  # noqa: F401  (torch and the pipeline imported before the signal)
from horkd.cli import main
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> list[dict]:
    """The results table of the lock tests' run when nothing disturbs it."""
    tmp = tmp_path_factory.mktemp("alone")
    alone = _slow_config(tmp, "alone", tmp / "alone")
    subprocess.run(_horkd("run", str(alone)), env=ENV, check=True, capture_output=True)
    return json.loads((tmp / "alone/results.json").read_text())


def test_a_second_writer_is_refused_while_the_first_finishes_undisturbed(tmp_path, undisturbed):
    config = _slow_config(tmp_path, "shared", tmp_path / "shared")
    command = _horkd("run", str(config))[3:]
    second = subprocess.Popen([sys.executable, "-c", READY_THEN_RUN, *command], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert second.stdout.readline().strip() == "ready"
    first = subprocess.Popen(_horkd("run", str(config)), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "shared" / "run.json").exists() and time.time() < deadline:
        time.sleep(0.005)
    assert first.poll() is None, "the first run ended before the second could start"
    started = time.time()
    second.stdin.write("go\n")
    second.stdin.flush()
    _, refused = second.communicate(timeout=60)
    assert second.returncode == 2 and time.time() - started < 30
    assert first.poll() is None  # refused while the first was still writing
    assert "in use by another horkd process" in refused
    assert f"pid {first.pid}" in refused and str(tmp_path / "shared") in refused
    assert "Traceback" not in refused and len(refused.strip().splitlines()) == 1
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    ours = json.loads((tmp_path / "shared/results.json").read_text())
    assert ours == undisturbed  # the refused writer changed nothing
    # readers need no lock: a report is written from the finished directory
    assert main(["report", str(tmp_path / "shared")]) == 0


def test_a_killed_run_leaves_no_stale_lock_and_continues_bit_exact(tmp_path, undisturbed):
    config = _slow_config(tmp_path, "killed", tmp_path / "killed")
    proc = subprocess.Popen(_horkd("run", str(config)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = tmp_path / "killed/seed0/assistant/train_state.safetensors"  # mid-run, past epoch 1
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "killed" / ".horkd.lock").exists()  # the file stays; the lock died
    assert not (tmp_path / "killed/results.json").exists()
    again = subprocess.run(_horkd("run", str(config)), env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "[assistant] resuming at epoch 2" in again.stdout  # continued, not restarted
    assert json.loads((tmp_path / "killed/results.json").read_text()) == undisturbed


def test_a_run_that_fails_or_is_interrupted_deletes_its_lock_file(tmp_path, tiny_cfg, monkeypatch):
    """Only a killed process leaves the file (its lock dies with it); an error or Ctrl-C in the
    run lets go and deletes it, and a directory refused as another's keeps none of ours."""
    from horkd.config import config_from_dict
    from horkd.experiment import run as run_module
    from horkd.experiment import run_experiment

    cfg = config_from_dict({**tiny_cfg, "data": {**tiny_cfg["data"], "dataset": "image_folder",
                                                 "root": str(tmp_path / "missing")}})
    with pytest.raises(FileNotFoundError, match="missing"):
        run_experiment(cfg, progress=False)
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / ".horkd.lock").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(run_module, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config_from_dict(tiny_cfg), progress=False)
    assert not (tmp_path / "run" / ".horkd.lock").exists()

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("a user's folder")
    assert main(["run", str(_written(tmp_path, tiny_cfg)), "--output-dir", str(theirs)]) == 2
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]


def _written(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_lock_refuses_a_live_holder_and_not_a_dead_one(tmp_path):
    from horkd.run_lock import LOCK_FILE, RunLock, RunLockedError, holder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text("pid 999999999 on elsewhere: horkd run x.yaml (since then)")
    assert holder(run_dir) is None  # a file whose writer died holds nothing
    with RunLock(run_dir):
        assert f"pid {os.getpid()} on " in (holder(run_dir) or "")
        with pytest.raises(RunLockedError, match=f"in use by another horkd process \\(pid "
                                                 f"{os.getpid()} on "):
            RunLock(run_dir).acquire()  # another open file: as another process would hold it
    assert not (run_dir / LOCK_FILE).exists() and holder(run_dir) is None
    with pytest.raises(RuntimeError), RunLock(run_dir):
        raise RuntimeError("a failing run")
    assert not (run_dir / LOCK_FILE).exists()
    RunLock(run_dir).acquire().release()  # and the next writer takes it at once


def test_a_lock_taken_on_a_file_deleted_meanwhile_is_taken_again_on_the_new_one(
        tmp_path, monkeypatch):
    """Two writers race: the first lets go (deleting the file) between the second's open and
    its lock; the second must then hold the file at the path, or a third would lock beside it."""
    import fcntl

    from horkd.run_lock import LOCK_FILE, RunLock

    run_dir = tmp_path / "run"
    first = RunLock(run_dir).acquire()
    real_flock = fcntl.flock

    def flock(fd, op):
        if op & fcntl.LOCK_EX and first._fd is not None:
            first.release()  # just after the second opened the file, just before it locks
        return real_flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", flock)
    second = RunLock(run_dir).acquire()
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert os.fstat(second._fd).st_ino == os.stat(run_dir / LOCK_FILE).st_ino
    with pytest.raises(ValueError, match="in use by another horkd process"):
        RunLock(run_dir).acquire()  # a third is refused: the second holds the file at the path
    second.release()


# ----------------------------------------------------------------------------- image faults
def _tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    for split in ("train", "test"):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = (40 * i, 90 if label == "cat" else 200, 30)
                Image.new("RGB", (12, 12), colour).save(folder / f"{i}.png")
    return root


def _noise(size: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size, 3), np.uint8))


def truncated_png(root: Path) -> None:
    _noise(32).save(root / "whole.png")
    data = (root / "whole.png").read_bytes()
    (root / "train/cat/truncated.png").write_bytes(data[: len(data) // 2])
    (root / "whole.png").unlink()


def truncated_jpeg(root: Path) -> None:
    _noise(40).save(root / "whole.jpg", quality=90)
    data = (root / "whole.jpg").read_bytes()
    (root / "train/dog/cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "whole.jpg").unlink()


def text_named_jpg(root: Path) -> None:
    (root / "train/cat/notes.jpg").write_text("this is not a picture\n")


def empty_file(root: Path) -> None:
    (root / "test/dog/empty.png").write_bytes(b"")


def decompression_bomb(root: Path) -> None:
    Image.new("L", (200, 200)).save(root / "train/cat/bomb.png")  # over the test's pixel limit


def broken_symlink(root: Path) -> None:
    (root / "train/dog/link.png").symlink_to(root / "nowhere.png")


def class_missing_in_test(root: Path) -> None:
    _tree(root, classes=("bird",))
    for image in (root / "test/bird").iterdir():
        image.unlink()
    (root / "test/bird").rmdir()


def empty_tree(root: Path) -> None:
    for split in ("train", "test"):
        for folder in sorted((root / split).iterdir()):
            for image in folder.iterdir():
                image.unlink()
            folder.rmdir()


def class_without_images(root: Path) -> None:
    for split in ("train", "test"):
        (root / split / "fox").mkdir()


def mixed_modes(root: Path) -> None:
    base = np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(base[..., 0]).save(root / "train/cat/grey.png")
    Image.fromarray(np.dstack([base, base[..., :1]])).save(root / "train/cat/rgba.png")
    palette = Image.fromarray(base).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "train/dog/palette.png", transparency=0)
    Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(root / "train/dog/deep.png")
    Image.fromarray(base).convert("CMYK").save(root / "test/cat/cmyk.jpg")
    frames = [Image.fromarray(base), Image.fromarray(255 - base)]
    frames[0].save(root / "test/dog/animated.gif", save_all=True, append_images=frames[1:])


def not_images_beside_images(root: Path) -> None:
    (root / "train/cat/.DS_Store").write_bytes(b"\x00\x01")
    (root / "train/dog/readme.txt").write_text("labels by hand")
    (root / "test/cat/Thumbs.db").write_bytes(b"\x00")


def exif_rotated(root: Path) -> None:
    image = Image.new("RGB", (12, 6), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(root / "train/cat/rotated.jpg", exif=exif)


@dataclass
class Fault:
    name: str
    make: Callable[[Path], None]
    plain: tuple[int, tuple[str, ...]]  # exit status and what the message names, without skip
    skipping: tuple[int, tuple[str, ...]]  # the same with --skip-bad-images
    vanish: bool = False  # delete a good file after the up-front check (mid-run)


NOT_FOUND = ("a file ",)
FAULTS = [
    Fault("truncated PNG", truncated_png, (2, ("truncated.png", "damaged or truncated")),
          (0, ("left out 1 unusable",))),
    Fault("truncated JPEG", truncated_jpeg, (2, ("cut.jpg", "damaged or truncated")),
          (0, ("left out 1 unusable",))),
    Fault("text file named .jpg", text_named_jpg, (2, ("notes.jpg", "not an image")),
          (0, ("left out 1 unusable",))),
    Fault("empty file", empty_file, (2, ("empty.png", "empty file (0 bytes)")),
          (0, ("left out 1 unusable",))),
    Fault("decompression bomb", decompression_bomb,
          (2, ("bomb.png", "decompression-bomb limit")), (0, ("left out 1 unusable",))),
    Fault("broken symlink", broken_symlink, (2, ("link.png", "not found: a link to")),
          (0, ("left out 1 unusable",))),
    Fault("class folder only in train", class_missing_in_test,
          (2, ("different class folders", "only in train/: bird")),
          (2, ("different class folders", "only in train/: bird"))),
    Fault("empty tree", empty_tree, (2, ("Couldn't find any class folder",)),
          (2, ("Couldn't find any class folder",))),
    Fault("class folder without images", class_without_images,
          (2, ("fox", "hold no image file")), (2, ("fox", "hold no image file"))),
    Fault("file gone mid-run", lambda root: None,
          (2, ("not found (it was there when the run started", "--skip-bad-images")),
          (0, ("left out 1 unusable",)),
          vanish=True),
    Fault("grey, RGBA, palette, 16-bit, CMYK, animated", mixed_modes, (0, ()), (0, ())),
    Fault("EXIF-rotated photo", exif_rotated, (0, ()), (0, ())),
    Fault("non-image files beside images", not_images_beside_images, (0, ()), (0, ())),
]


def _run_on(tmp_path: Path, skip: bool, vanish: bool, monkeypatch) -> list[str]:
    raw = tiny_config_dict(tmp_path / "run", methods=["scratch"])
    raw["data"] = {"dataset": "image_folder", "root": str(tmp_path / "images"), "hr_size": 12,
                   "val_fraction": 0.25, "channels": 3}
    raw["degrade"] = {"lr_size": 4}
    stage = {"epochs": 1, "batch_size": 4, "optimizer": {"lr": 0.05}}
    raw["train"] = {"teacher": {**stage, "epochs": 0}, "assistant": stage, "student": stage}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    if vanish:
        import horkd.data.folder as folder

        checked = folder.readable_splits

        def check_then_delete(*args, **kwargs):
            kept = checked(*args, **kwargs)
            (tmp_path / "images/test/dog/1.png").unlink()  # gone after the up-front check
            return kept

        monkeypatch.setattr(folder, "readable_splits", check_then_delete)
    return ["run", str(path), "--no-progress", "--no-report"] + (
        ["--skip-bad-images"] if skip else [])


@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip"])
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_image_fault_ends_with_a_message_and_no_traceback(fault, skip, tmp_path, capfd,
                                                          monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 200x200 is a "bomb" here
    fault.make(_tree(tmp_path / "images"))
    code = main(_run_on(tmp_path, skip, fault.vanish, monkeypatch))
    out, err = capfd.readouterr()
    expected, needles = fault.skipping if skip else fault.plain
    assert code == expected, err
    assert "Traceback" not in err + out
    for needle in needles:
        assert needle in out + err, f"{needle!r} not in {out + err!r}"
    if code == 2:
        assert err.startswith("horkd: error:")
    if code == 0 and skip and needles:  # counted in run.json
        record = json.loads((tmp_path / "run/run.json").read_text())
        assert record["skipped_images"]["count"] == 1


def test_there_are_at_least_twelve_image_faults():
    assert len(FAULTS) >= 12


def test_images_are_oriented_and_converted(tmp_path):
    exif_rotated(_tree(tmp_path))
    rotated = load_image(tmp_path / "train/cat/rotated.jpg", 3)
    assert rotated.size == (6, 12)  # EXIF orientation applied: 12x6 shown as 6x12
    mixed_modes(tmp_path)
    deep = load_image(tmp_path / "train/dog/deep.png", 1)
    assert deep.mode == "L" and 0 < np.asarray(deep).mean() < 255  # scaled, not clipped white
    for name, channels in (("train/cat/rgba.png", 3), ("train/dog/palette.png", 1),
                           ("test/cat/cmyk.jpg", 3), ("test/dog/animated.gif", 1)):
        assert load_image(tmp_path / name, channels).mode == ("RGB" if channels == 3 else "L")


def test_the_advice_to_skip_bad_images_works_in_the_same_run_directory(tmp_path, capfd,
                                                                        monkeypatch):
    """The data check stops a run before any stage trains; rerunning as its message advises
    (the same command with --skip-bad-images) must not be refused as a different run."""
    truncated_png(_tree(tmp_path / "images"))
    assert main(_run_on(tmp_path, False, False, monkeypatch)) == 2
    assert "--skip-bad-images" in capfd.readouterr().err
    assert main(_run_on(tmp_path, True, False, monkeypatch)) == 0
    out, err = capfd.readouterr()
    # nothing trained under the refused config: the rerun starts as in an empty folder, with
    # no word of an old run or an old config kept
    assert "Traceback" not in err and "config.previous" not in out and "old one" not in out
    assert "continuing" not in out and "no trained stage" not in out
    assert not (tmp_path / "run/config.previous.yaml").exists()
