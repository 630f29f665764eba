"""Under torchrun a file that fails on one rank must not change that rank's number of steps:
every rank takes the same steps (DDP's collectives would wait forever otherwise) with batches
of the same size (the sharded relations' gathers count on it)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_port import free_port
from torch.utils.data import Dataset
from toy_nets import CrossEntropy, LinearNet

from horkd.config import StageConfig
from horkd.data import BatchLoader
from horkd.data.images import BadImageError
from horkd.losses import HybridOrderLoss
from horkd.methods.base import Batch
from horkd.methods.distill import DistillMethod
from horkd.trainer import Trainer

SAMPLES, BATCH, EPOCHS = 16, 2, 2


class _Files(Dataset):
    """Sixteen "files", 2x5 grey images; those in ``unreadable`` fail as a damaged file does."""

    def __init__(self, unreadable: set[int]) -> None:
        self.unreadable = unreadable
        self.skip_bad, self.lost = True, []  # as --skip-bad-images leaves a file dataset

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index in self.unreadable:
            raise BadImageError(f"{index}.png: damaged or truncated")
        return torch.rand(1, 2, 5, generator=torch.Generator().manual_seed(index)), index % 3


def _loader(dataset: Dataset, rank: int) -> BatchLoader:
    return BatchLoader(dataset, batch_size=BATCH, shuffle=True, seed=3, rank=rank, world_size=2,
                       fill_failed_rows=True)


def _worker(rank: int, port: int, unreadable: list[int], out: str) -> None:
    from horkd.experiment.run import skipped_images

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a rank left waiting by the other fails after a minute instead of hanging the test
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        dataset = _Files(set(unreadable))
        method = DistillMethod(LinearNet(10, 4), CrossEntropy(), LinearNet(10, 6).eval(),
                               HybridOrderLoss(4, 6, bank_size=0), student_view="hr")
        rows: list[int] = []

        def make(x, y, index):
            rows.append(int(x.shape[0]))
            return Batch(hr=x, lr=x, target=y, index=index)

        stage = StageConfig(epochs=EPOCHS, batch_size=BATCH, scheduler="none")
        trainer = Trainer(method, stage, train_batches=_loader(dataset, rank), make_batch=make,
                          validate=None, score_key="top1", device=torch.device("cpu"),
                          out_dir=Path(out) / f"rank{rank}", meta={"student": {"model": {}}},
                          progress=False)
        trainer.fit()
        ctx = SimpleNamespace(splits=SimpleNamespace(train=dataset, val=None, test=None),
                              info=SimpleNamespace(skipped_images=[]))
        report = skipped_images(ctx)  # every rank calls it; rank 0's holds every rank's files
        torch.save({"rows": rows, "lost": dataset.lost, "report": report},
                   Path(out) / f"rank{rank}.pt")
        dist.barrier()  # both ranks done: neither tears its gloo pairs down under the other
    finally:
        dist.destroy_process_group()


def test_a_file_failing_on_one_rank_leaves_the_ranks_steps_equal(tmp_path, capfd):
    """Two gloo processes train two epochs of 4 steps; in the first, files of rank 1's share
    fail: one of its first batch's two, and both of its third batch's. Both ranks take 8 steps
    of 2 rows, and each bad file is reported once in the run's count (rank 0's), though it
    fails again when read in the second epoch."""
    order = _loader(_Files(set()), rank=1)._order().tolist()
    unreadable = [order[0], order[4], order[5]]
    port = free_port()
    mp.spawn(_worker, args=(port, unreadable, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["rows"] for r in ranks] == [[BATCH] * (EPOCHS * SAMPLES // (2 * BATCH))] * 2
    expected = {f"{i}.png: damaged or truncated" for i in unreadable}
    assert set(ranks[1]["lost"]) == expected  # its first epoch's share held all three
    for rank in ranks:
        assert len(rank["lost"]) == len(set(rank["lost"]))  # once per rank, every epoch
    assert sorted(ranks[0]["report"]) == sorted(expected)
    printed = capfd.readouterr().out
    for i in unreadable:  # said by the rank that read it, once (twice where both did)
        assert 1 <= printed.count(f"skipped an unusable image file: {i}.png") <= 2, printed


def _rank0(unreadable: set[int], batch_size: int = 2) -> BatchLoader:
    """Rank 0 of two, in order: files 0, 2, 4, ..., 14."""
    return BatchLoader(_Files(unreadable), batch_size=batch_size, shuffle=False, rank=0,
                       world_size=2, fill_failed_rows=True)


def test_a_failed_files_row_is_a_copy_of_a_readable_one_under_torchrun():
    """The batch keeps its size; a batch with no readable file is the previous batch again, or,
    with none before it (the first batch, or the first after a resume), copies of a readable
    file further on in the rank's share, so the rank takes the step with the others."""
    loader = _rank0({2, 4, 6})
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [2] * 4
    assert batches[0][2].tolist() == [0, 0]  # 2 failed: 0 stands in, with its own label
    assert torch.equal(batches[0][0][1], batches[0][0][0]) and batches[0][1].tolist() == [0, 0]
    assert batches[1][2].tolist() == [0, 0]  # 4 and 6 failed: batch 0 again
    assert list(loader)[1][2].tolist() == [0, 0]  # the next epoch alike
    assert [b[2].tolist() for b in _rank0({2, 4}, 4)][0] == [0, 0, 6, 6]  # in place
    assert next(iter(_rank0({0, 2})))[2].tolist() == [4, 4]  # the first batch
    assert next(_rank0({4, 6}).iter_from(1))[2].tolist() == [0, 0]  # after a resume
    assert next(iter(_rank0(set())))[2].tolist() == [0, 2]


def test_one_process_leaves_a_failed_files_row_out_even_when_asked_to_fill():
    """Nothing needs equal batches on one process: a copy would only count twice in the loss
    and add a zero-distance pair to the relations, so the failed rows are left out and a batch
    with no readable file is not yielded, as for evaluation."""
    dataset = _Files({1, 4, 5})
    for fill in (True, False):
        loader = BatchLoader(dataset, batch_size=2, shuffle=False, fill_failed_rows=fill)
        assert [b[2].tolist() for b in loader] == [[0], [2, 3], *[[i, i + 1]
                                                               for i in range(6, 16, 2)]]
    assert sorted(dataset.lost) == [f"{i}.png: damaged or truncated" for i in (1, 4, 5)]


def test_a_reference_cache_keeps_its_rows_in_dataset_order_past_a_failed_file():
    """The cache is looked up by dataset index: a failed file must not shift the rows after it
    (it did: its row was left out, and every later image got its neighbour's targets)."""
    from horkd.data.augment import FlipViews
    from horkd.reference_cache import ReferenceCache

    torch.manual_seed(0)
    reference, dataset = LinearNet(10, 6).eval(), _Files({1})
    cache = ReferenceCache.build(reference, dataset, torch.device("cpu"), views=FlipViews(False),
                                 batch_size=4)
    assert cache.embedding.shape[1] == SAMPLES
    with torch.no_grad():
        for i in (0, 2, 5, SAMPLES - 1):
            assert torch.allclose(cache.embedding[0, i], reference(dataset[i][0][None]).embedding[0])
    # the failed file's row holds no other image's outputs: a step that looks it up is not finite
    assert cache.embedding[0, 1].isnan().all() and cache.logits[0, 1].isnan().all()
    assert not cache.embedding[0, [0, 2]].isnan().any()
