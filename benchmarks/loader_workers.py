"""The training step on an image folder with 0 and 2 loader workers.

A folder of 512 random 32x32 PNGs (two classes), read by horkd's BatchLoader (one persistent
DataLoader; ``data.num_workers``) and trained on by a resnet8 (width 8) with SGD, batch 64,
this process on one thread. With 0 workers the training process decodes every file itself;
with workers the files are decoded beside the step. The first epoch (workers start) is left
out; the figure is the median over epochs of the time per step.

    python benchmarks/loader_workers.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from horkd.data.folder import CheckedImageFolder, _transform
from horkd.data.loader import BatchLoader
from horkd.models import build_model

IMAGES, SIDE, BATCH, EPOCHS = 512, 32, 64, 4


def _folder(root: Path) -> CheckedImageFolder:
    g = torch.Generator().manual_seed(0)
    for i in range(IMAGES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (SIDE, SIDE, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return CheckedImageFolder(root, 3, _transform(SIDE, 3), skip_bad=False)


def per_step(data: CheckedImageFolder, workers: int) -> float:
    torch.manual_seed(0)
    model = build_model("resnet8", 2, 3, embed_dim=64, width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = BatchLoader(data, BATCH, shuffle=True, drop_last=True, num_workers=workers)
    times = []
    for epoch in range(EPOCHS + 1):
        loader.set_epoch(epoch)
        start, steps = time.perf_counter(), 0
        for x, y, _ in loader:
            loss = torch.nn.functional.cross_entropy(model(x).logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        if epoch:  # the first epoch starts the workers
            times.append((time.perf_counter() - start) / steps * 1000)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = _folder(Path(tmp))
        print(f"image folder, {IMAGES} PNGs {SIDE}x{SIDE}, batch {BATCH}, resnet8 on 1 thread")
        for workers in (0, 2, 0, 2):  # twice each, alternating: the machine is shared
            print(f"num_workers={workers}: {per_step(data, workers):.1f} ms/step", flush=True)


if __name__ == "__main__":
    main()
