"""Runs that survive crashes: resumable state, atomic saves, bit-exact continuation."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from horkd.checkpoint import CheckpointError
from horkd.config import config_from_dict
from horkd.experiment import Networks, open_seed
from horkd.experiment.batches import PairedBatchMaker
from horkd.train_state import load_training_state, save_training_state
from horkd.trainer import STATE_FILE
from tests.conftest import tiny_config_dict

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_training_state_round_trips_without_pickle(tmp_path):
    state = {
        "epoch": 3,
        "best_score": -math.inf,
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(4)}}, "param_groups": []},
        "rng": {"python": (3, tuple(range(5)), None), "numpy": np.random.get_state()},
        "history": [{"epoch": 1, "val/top1": 12.5}],
        "nothing": None,
    }
    path = tmp_path / "state.safetensors"
    save_training_state(path, state)
    back = load_training_state(path)
    assert back["epoch"] == 3 and back["best_score"] == -math.inf and back["nothing"] is None
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"],
                       state["optimizer"]["state"][0]["momentum_buffer"])
    assert back["rng"]["python"] == state["rng"]["python"]
    assert np.array_equal(back["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert back["history"] == state["history"]
    assert open(path, "rb").read(8) != b"\x80\x04\x95"[:8]  # not a pickle
    with pytest.raises(CheckpointError, match="cannot read training state"):
        (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
        load_training_state(tmp_path / "junk.safetensors")


KILL_DURING_SAVE = """
import os, signal, sys, torch
import horkd.train_state as ts
path = sys.argv[1]
ts.save_training_state(path, {"epoch": 1, "w": torch.ones(1000)})

def half_then_die(tensors, tmp, metadata=None):
    with open(tmp, "wb") as handle:
        handle.write(b"\\x10" * 1234)  # half a file...
        handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the machine goes away

ts.save_file = half_then_die
ts.save_training_state(path, {"epoch": 2, "w": torch.zeros(1000)})
"""


def test_kill_during_save_leaves_the_previous_state_loadable(tmp_path):
    path = tmp_path / STATE_FILE
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(path)], env=ENV)
    assert proc.returncode == -signal.SIGKILL
    state = load_training_state(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(1000))
    assert any(p.name.startswith(f".{STATE_FILE}.") for p in tmp_path.iterdir())  # the torn temp
    save_training_state(path, {"epoch": 3})  # the next save clears torn temp files
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def _cli_config(tmp_path: Path, name: str) -> Path:
    stage = {
        "epochs": 3,
        "batch_size": 16,
        "max_steps_per_epoch": 8,
        "checkpoint_every_steps": 1,
        "optimizer": {"lr": 0.05},
        "select_on_val": False,  # keep the last epoch, so every step after the kill counts
    }
    cfg = tiny_config_dict(tmp_path / name, deterministic=True, methods=["horkd"])
    cfg["train"] = {"teacher": {**stage, "epochs": 1}, "assistant": {**stage, "epochs": 1},
                    "student": stage}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _horkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "horkd", *args, "--no-progress", "--no-report"]


def _weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        str(p.relative_to(run)): load_file(p)
        for p in sorted(run.rglob("model.safetensors"))
    }


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path):
    reference = _cli_config(tmp_path, "uninterrupted")
    subprocess.run(_horkd("run", str(reference)), env=ENV, check=True, capture_output=True)

    config = _cli_config(tmp_path, "killed")
    run_dir = tmp_path / "killed"
    state_path = run_dir / "seed0/students/horkd" / STATE_FILE
    proc = subprocess.Popen(_horkd("run", str(config)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if state_path.exists():
            try:
                state = load_training_state(state_path)
            except CheckpointError:
                continue
            if state["epoch"] >= 1 and state["step"] >= 3:  # in the middle of the second epoch
                proc.send_signal(signal.SIGKILL)
                killed_at = (state["epoch"], state["step"])
                break
        time.sleep(0.002)
    proc.wait()
    assert killed_at is not None, "the student stage finished before it could be killed"
    assert not (state_path.parent / "done.json").exists()
    # Whatever moment the kill hit, every file on disk is whole.
    for path in run_dir.rglob("*.safetensors"):
        if path.name == STATE_FILE:
            load_training_state(path)
        else:
            load_file(path)

    # Rerunning the same command continues; no flag needed.
    out = subprocess.run(_horkd("run", str(config)), env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[horkd] resuming at epoch" in out.stdout
    assert "[teacher] epoch" not in out.stdout  # finished stages are not retrained
    assert not state_path.exists()  # the final checkpoint superseded the resumable state

    ours, theirs = _weights(run_dir), _weights(tmp_path / "uninterrupted")
    assert ours.keys() == theirs.keys() and len(ours) == 3  # teacher, assistant, student
    for name in ours:
        for key, tensor in ours[name].items():
            assert torch.equal(tensor, theirs[name][key]), f"{name}: {key} differs"
    rows = (state_path.parent / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # one row per epoch, none lost or doubled by the kill


def test_trainer_resumes_in_process_to_identical_weights(tmp_path, monkeypatch):
    """The library path: a stage interrupted by an exception resumes to the same weights."""

    def new_run(name: str) -> Networks:
        raw = tiny_config_dict(tmp_path / name, deterministic=True, methods=["scratch"])
        raw["train"]["student"] = {
            **raw["train"]["student"],
            "checkpoint_every_steps": 2,
            "select_on_val": False,  # the last epoch's weights, trained across the crash
        }
        cfg = config_from_dict(raw)
        return open_seed(cfg, 0, progress=False)[1]

    straight = new_run("straight").student("scratch").model.state_dict()

    calls = {"n": 0}
    real_call = PairedBatchMaker.__call__

    def crash_on_sixth_batch(self, *args):
        calls["n"] += 1
        if calls["n"] > 5:  # 3 steps per epoch: the crash hits the second epoch after a save
            raise RuntimeError("simulated crash")
        return real_call(self, *args)

    monkeypatch.setattr(PairedBatchMaker, "__call__", crash_on_sixth_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        new_run("crashed").student("scratch")
    monkeypatch.undo()
    saved = load_training_state(tmp_path / "crashed/seed0/students/scratch" / STATE_FILE)
    assert (saved["epoch"], saved["step"]) == (1, 2)
    before = saved["ranks"][0]["partial"]["cpu"]  # the crashed process's CPU in its last epoch
    assert before > 0
    resumed = new_run("crashed").student("scratch").model.state_dict()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    # the stage's CPU counts the steps before the crash too: its epochs carry it across
    stage = tmp_path / "crashed/seed0/students/scratch"
    rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    second = next(r for r in rows if r.get("epoch") == 2 and "train/cpu_seconds" in r)
    assert second["train/cpu_seconds"] >= before
    done = json.loads((stage / "done.json").read_text())
    assert done["cpu_seconds"] >= sum(r.get("train/cpu_seconds", 0.0) for r in rows) - 1e-9


def test_sigterm_saves_state_and_the_rerun_finishes(tmp_path):
    config = _cli_config(tmp_path, "preempted")
    state_path = tmp_path / "preempted/seed0/students/horkd" / STATE_FILE
    proc = subprocess.Popen(_horkd("run", str(config)), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not state_path.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    assert load_training_state(state_path)["step"] >= 1
    done = subprocess.run(_horkd("run", str(config)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
