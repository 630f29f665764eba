"""Resuming under several processes: every rank continues its own randomness.

Two gloo processes train the same tiny student straight through, then crashed in the second
epoch (after a mid-epoch save) and resumed, then stopped by a SIGTERM that reaches rank 1 only
and resumed. Each resumed run must end with the straight run's weights, bit for bit: the world
size, the data and the gloo reduction order are the same as in the straight run, so the sums are
the same sums in the same order and no tolerance is needed. Each rank must continue its own
augmentation stream: before the fix every rank restored rank 0's generator and the ranks drew
the same crops and noise after a resume. Last, the two-process state resumed by one process
starts its stage over and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from horkd.trainer import TrainingStopped
from tests.conftest import tiny_config_dict
from tests.test_distributed import _free_port

CRASH_AT_CALL = 7  # 4 steps per epoch, a save every 2: the crash hits epoch 2 after step 2's save
STAGE = "students/scratch"


def _config(root: Path, name: str):
    from horkd.config import config_from_dict

    raw = tiny_config_dict(root / name, deterministic=True, methods=["scratch"])
    raw["train"]["student"] = {
        "epochs": 2, "batch_size": 16, "max_steps_per_epoch": 4, "checkpoint_every_steps": 2,
        "optimizer": {"lr": 0.05},
        "select_on_val": False,  # the last epoch's weights, trained across the crash
    }
    return config_from_dict(raw)


def _train(root: Path, name: str, draws: list[str], interrupt: str = "") -> dict[str, Tensor]:
    """The student of run ``name``; ``draws`` gets the batch maker's generator state (a digest)
    before each batch it makes, i.e. what that batch's crops and noise are drawn from.
    ``interrupt``: "crash" raises on every rank at call ``CRASH_AT_CALL``, "sigterm" sends
    SIGTERM to rank 1 alone during its third step."""
    from horkd.experiment import open_seed
    from horkd.experiment.batches import PairedBatchMaker

    real_call = PairedBatchMaker.__call__

    def recording_call(self, *args):
        if interrupt == "crash" and len(draws) + 1 == CRASH_AT_CALL:
            raise RuntimeError("simulated crash")
        if interrupt == "sigterm" and len(draws) == 2 and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # pre-emption reaches one process only
        draws.append(hashlib.sha1(self.generator.get_state().numpy().tobytes()).hexdigest())
        return real_call(self, *args)

    PairedBatchMaker.__call__ = recording_call
    try:
        networks = open_seed(_config(root, name), 0, progress=False)[1]
        return {k: v.clone() for k, v in networks.student("scratch").model.state_dict().items()}
    finally:
        PairedBatchMaker.__call__ = real_call


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    # a rank left waiting in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        base = Path(root)
        straight: list[str] = []
        crashed: list[str] = []
        resumed: list[str] = []
        weights = _train(base, "straight", straight)
        try:
            _train(base, "crashed", crashed, "crash")
        except RuntimeError as error:
            assert "simulated crash" in str(error)
        else:
            raise AssertionError("the crash did not happen")
        state = base / "crashed/seed0" / STAGE / "train_state.safetensors"
        dist.barrier()
        if rank == 0:  # for the single-process resume of a two-process state
            shutil.copy(state, base / "saved_by_two.safetensors")
        dist.barrier()
        again = _train(base, "crashed", resumed)
        stopped: list[str] = []
        try:
            _train(base, "stopped", stopped, "sigterm")
        except TrainingStopped as error:
            stop = str(error)
        else:
            raise AssertionError("the SIGTERM did not stop the stage")
        after_stop: list[str] = []
        after_stop_weights = _train(base, "stopped", after_stop)
        torch.save({"straight": straight, "crashed": crashed, "resumed": resumed,
                    "weights": weights, "again": again, "stop": stop, "after_stop": after_stop,
                    "after_stop_weights": after_stop_weights}, base / f"rank{rank}.pt")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def _train_losses(run: Path) -> list[float]:
    rows = (run / "seed0" / STAGE / "metrics.jsonl").read_text().splitlines()
    return [json.loads(row)["train/loss"] for row in rows]


def test_two_processes_killed_mid_stage_resume_to_the_uninterrupted_weights(tmp_path, capsys):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # the bug: every rank restored rank 0's generator and drew rank 0's crops and noise
    assert ranks[0]["resumed"][0] != ranks[1]["resumed"][0], "the ranks draw the same after resume"
    for rank in ranks:
        assert len(rank["straight"]) == 8 and len(rank["crashed"]) == CRASH_AT_CALL - 1
        # the resumed run starts at the saved step (epoch 2, step 2) with its own stream
        assert rank["resumed"] == rank["straight"][6:]
        for key, value in rank["weights"].items():
            assert torch.equal(rank["again"][key], value), key
    # SIGTERM on rank 1 alone: both ranks stop after the same step (3), save and resume from it
    assert "stopped by another process at epoch 1, step 3" in ranks[0]["stop"]
    assert "stopped by SIGTERM at epoch 1, step 3" in ranks[1]["stop"]
    for rank in ranks:
        assert rank["after_stop"] == rank["straight"][3:]
        for key, value in rank["weights"].items():
            assert torch.equal(rank["after_stop_weights"][key], value), key
    for key, value in ranks[0]["again"].items():  # DDP keeps the ranks' weights equal
        assert torch.equal(ranks[1]["again"][key], value), key
    # the epoch's running loss sums are each rank's own too: the logged means match
    assert _train_losses(tmp_path / "crashed") == _train_losses(tmp_path / "straight")

    # A state saved by two processes, resumed by one: the stage starts over, and says so.
    from horkd.experiment import open_seed

    single = tmp_path / "single/seed0" / STAGE
    single.mkdir(parents=True)
    shutil.copy(tmp_path / "saved_by_two.safetensors", single / "train_state.safetensors")
    capsys.readouterr()
    open_seed(_config(tmp_path, "single"), 0, progress=False)[1].student("scratch")
    out = capsys.readouterr().out
    assert "comes from 2 process(es), this run has 1" in out and "starts over" in out
    assert "resuming" not in out
    assert len(_train_losses(tmp_path / "single")) == 2  # both epochs trained here


def test_a_state_saved_before_per_rank_parts_restores_as_before():
    """A single-process state written by an older horkd (RNGs, batch maker and running sums at the
    top level, no ``ranks``) still restores them exactly."""
    from horkd.experiment.batches import PairedBatchMaker
    from horkd.loop_state import LoopState, StageParts, _restore_rank_part, rank_part

    torch.manual_seed(3)
    maker = PairedBatchMaker(None, None, torch.Generator().manual_seed(5))  # type: ignore[arg-type]
    loop = LoopState(partial={"sums": {"loss": 2.5}, "seen": 64, "steps": 2, "elapsed": 1.0})
    parts = StageParts(None, None, None, None, maker)  # type: ignore[arg-type]
    old_layout = rank_part(loop, parts)  # what save_loop used to write at the top level
    expected = (torch.rand(3), torch.rand(3, generator=maker.generator))

    torch.manual_seed(99)
    maker.generator.manual_seed(99)
    fresh = LoopState()
    _restore_rank_part(old_layout, fresh, parts, "scratch")
    assert fresh.partial == loop.partial
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, generator=maker.generator), expected[1])
