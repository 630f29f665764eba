"""``horkd predict`` on a folder of PNG files beside a plain torchvision loop, in one run.

The plain loop is what a user would write: ``torchvision.datasets.ImageFolder`` (greyscale,
``ToTensor``) and a ``DataLoader`` with the same workers and batch size, the same network and
the same degradation to its LR size, keeping the arg-max. ``horkd predict`` does more per image
(the bad-file checks, EXIF orientation, top-k softmax, the CSV rows). Both are timed in rounds,
alternating, after a warm-up; the ratio is the median of the per-round ratios (images/s of
predict over images/s of the plain loop). Peak memory is measured in fresh processes (the
largest resident set of the process and its DataLoader workers) for 2,000 and 10,000 files.

    python benchmarks/predict.py                 # 10,000 files, 3 rounds, 2 workers
    python benchmarks/predict.py --files 2000 --rounds 1 --workers 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from horkd.checkpoint import save_checkpoint
from horkd.config import ExperimentConfig
from horkd.inference import Recogniser
from horkd.inference.commands import predict
from horkd.models import build_model


def write_images(folder: Path, count: int) -> None:
    """Fashion-MNIST's test images when installed (10,000 of them), else noise, as PNG files in
    ten class folders."""
    from horkd.data.vision import DEBIAN_FASHION_MNIST

    if DEBIAN_FASHION_MNIST.is_dir():
        from horkd.data import build_splits

        test = build_splits("fashion_mnist", val_fraction=0.0).test  # in-memory uint8 images
        pixels, labels = test.images[:, 0].numpy(), test.labels.numpy()
    else:
        rng = np.random.default_rng(0)
        pixels, labels = rng.integers(0, 256, (count, 28, 28), np.uint8), np.arange(count) % 10
    for i in range(count):
        folder_i = folder / f"class_{int(labels[i % len(labels)])}"
        folder_i.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i % len(pixels)]).save(folder_i / f"{i:05d}.png")


def make_model(path: Path) -> Path:
    """A native-7px resnet8 student of Fashion-MNIST (untrained weights: speed, not accuracy)."""
    torch.manual_seed(0)
    recipe = {"arch": "resnet8", "num_classes": 10, "in_channels": 1, "embed_dim": 64,
              "width": 8, "mean": [0.286], "std": [0.353]}
    model = build_model(**recipe)
    config = ExperimentConfig.model_validate({"degrade": {"lr_size": 7}})
    meta = {"model": recipe, "role": "student", "seed": 0, "task": "classification",
            "input": {"view": "lr", "hr_size": 28, "lr_size": 7, "upsampled": False},
            "classes": [f"class_{i}" for i in range(10)],
            "config": config.model_dump(mode="json")}
    save_checkpoint(path / "model", model, meta)
    return path


@torch.no_grad()
def plain_loop(folder: Path, model_dir: Path, workers: int, batch: int) -> tuple[int, float]:
    recogniser = Recogniser.load(model_dir)
    network = recogniser.network
    degrade = recogniser.input.batch_step("hr", torch.device("cpu"))
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Grayscale(1), torchvision.transforms.ToTensor()])
    data = torchvision.datasets.ImageFolder(str(folder), transform=transform)
    loader = DataLoader(data, batch_size=batch, num_workers=workers)
    started, seen = time.perf_counter(), 0
    for images, _ in loader:
        network(degrade(images)).logits.argmax(1)
        seen += images.shape[0]
    return seen, time.perf_counter() - started


def horkd_predict(folder: Path, model_dir: Path, workers: int, batch: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        outcome = predict(model_dir, [str(folder)], out=Path(scratch) / "p.csv",
                          batch_size=batch, workers=workers)
        return outcome.used, time.perf_counter() - started


def peak_memory(folder: Path, model_dir: Path, workers: int) -> float:
    """Peak resident set (MB) of a fresh ``horkd predict`` and its worker processes."""
    code = (
        "import resource, sys, tempfile\n"
        "from pathlib import Path\n"
        "from horkd.inference.commands import predict\n"
        "with tempfile.TemporaryDirectory() as s:\n"
        f"    predict({str(model_dir)!r}, [{str(folder)!r}], out=Path(s) / 'p.csv', "
        f"workers={workers})\n"
        "print(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the decoding workers get the other cores
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "big", args.files)
        small = min(2000, args.files)
        write_images(root / "small", small)
        model_dir = make_model(root / "model")
        horkd_predict(root / "small", model_dir, args.workers, args.batch)  # warm-up
        plain_loop(root / "small", model_dir, args.workers, args.batch)
        ratios, rates = [], {"predict": [], "plain": []}
        for _ in range(args.rounds):
            seen_p, t_p = horkd_predict(root / "big", model_dir, args.workers, args.batch)
            seen_l, t_l = plain_loop(root / "big", model_dir, args.workers, args.batch)
            rates["predict"].append(seen_p / t_p)
            rates["plain"].append(seen_l / t_l)
            ratios.append((seen_p / t_p) / (seen_l / t_l))
        memory = {n: peak_memory(root / name, model_dir, args.workers)
                  for n, name in ((small, "small"), (args.files, "big"))}
    result = {
        "files": args.files,
        "workers": args.workers,
        "predict_images_per_s": statistics.median(rates["predict"]),
        "plain_images_per_s": statistics.median(rates["plain"]),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
        "peak_rss_mb": memory,
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"horkd predict {result['predict_images_per_s']:.0f} img/s, plain ImageFolder + "
          f"DataLoader {result['plain_images_per_s']:.0f} img/s: ratio "
          f"{result['ratio_median']:.2f} (median of {args.rounds}; target >= 0.90)")
    print("peak memory of a fresh horkd predict: " + ", ".join(
        f"{n:,} files {mb:.0f} MB" for n, mb in memory.items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
