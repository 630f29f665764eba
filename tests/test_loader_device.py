"""The data path that feeds a device: in-memory images gathered where training runs, file
datasets through one persistent loader whose workers serve every epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from horkd.data.folder import CheckedImageFolder, _transform
from horkd.data.loader import BatchLoader, auto_workers
from horkd.data.memory import TensorImageDataset


def image_folder(root: Path, per_class: int = 6, side: int = 10) -> CheckedImageFolder:
    """Two classes of random PNGs."""
    g = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (side, side, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / label / f"{i}.png")
    return CheckedImageFolder(root, 3, _transform(side, 3), skip_bad=False)


def _epochs(loader: BatchLoader, count: int = 2) -> list[list[int]]:
    out = []
    for epoch in range(count):
        loader.set_epoch(epoch)
        out.append([int(i) for _, _, index in loader for i in index])
    return out


def test_file_loader_keeps_its_workers_and_the_order(tmp_path):
    data = image_folder(tmp_path / "images")
    inline = BatchLoader(data, 4, shuffle=True, seed=1, num_workers=0)
    workers = BatchLoader(data, 4, shuffle=True, seed=1, num_workers=2)
    first = _epochs(inline)
    assert first[0] != first[1]  # each epoch its own order
    assert _epochs(workers) == first  # workers change nothing of what is read, or its order
    loader = workers._loader
    assert loader is not None and loader.persistent_workers and not loader.pin_memory
    iterator = loader._iterator
    assert _epochs(workers) == first and workers._loader is loader
    assert loader._iterator is iterator  # the same worker processes served the next epochs
    # a resumed epoch reads from its step on, through the same loader
    workers.set_epoch(1)
    assert [int(i) for _, _, index in workers.iter_from(1) for i in index] == first[1][4:]


def test_workers_default_from_the_cpus_and_only_for_files_feeding_a_gpu(tmp_path):
    data = image_folder(tmp_path / "images", per_class=2)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only named: nothing is placed
    assert BatchLoader(data, 4, shuffle=False, num_workers=None,
                       device=cuda).num_workers == auto_workers()
    # a CPU run keeps its cores for the step, and no worker processes outlive it
    assert BatchLoader(data, 4, shuffle=False, num_workers=None, device=cpu).num_workers == 0
    assert BatchLoader(data, 4, shuffle=False, num_workers=None).num_workers == 0
    assert BatchLoader(data, 4, shuffle=False, num_workers=2, device=cpu).num_workers == 2
    assert 0 <= auto_workers() <= 4 and auto_workers(processes_here=1000) == 0
    memory = TensorImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.arange(8))
    assert BatchLoader(memory, 4, shuffle=False, num_workers=None).num_workers == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_in_memory_batches_are_made_on_the_gpu():
    images = torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8)
    data = TensorImageDataset(images, torch.arange(20) % 3)
    cpu = list(BatchLoader(data, 8, shuffle=True, seed=2))
    gpu = list(BatchLoader(data, 8, shuffle=True, seed=2, device=torch.device("cuda")))
    for (x, y, i), (gx, gy, gi) in zip(cpu, gpu, strict=True):
        assert gx.is_cuda and gy.is_cuda and torch.equal(gi, i)
        assert torch.equal(gx.cpu(), x) and torch.equal(gy.cpu(), y)
    assert data._held[1].dtype == torch.uint8  # held once, as bytes
