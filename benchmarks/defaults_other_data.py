"""Are horkd's defaults safe on data the study never saw? A check on another dataset.

scikit-learn's handwritten digits (1,797 real 8x8 images), written out as a class-folder image
tree (PNG), HR 16 px, LR 4 px, with the library's default distillation settings and two
schedules: short (an assistant stage of two epochs, the case where a weak assistant's warm
start and imitation used to cost about 20 points against the scratch student) and normal. Every
method gets the same student budget; the table is test top-1 at 4 px (mean over the seeds).

    python benchmarks/defaults_other_data.py               # both schedules, seeds 0 and 1
    python benchmarks/defaults_other_data.py distill.warm_start=true distill.assistant_guard=null
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from horkd.config import config_from_dict
from horkd.experiment import run_experiment

METHODS = ["scratch", "hinton_kd", "rkd", "horkd_no_assistant", "horkd"]
SCHEDULES = {  # epochs of teacher, assistant, student
    "short": (6, 2, 6),
    "normal": (20, 10, 15),
}


def write_digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    for rank, i in enumerate(order):
        split = "test" if rank % 4 == 0 else "train"
        folder = root / split / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] / 16.0 * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def run(
    root: Path, out: Path, schedule: str, seeds: list[int], overrides: list[str]
) -> dict[str, float]:
    teacher, assistant, student = SCHEDULES[schedule]
    stage = {"batch_size": 64, "optimizer": {"lr": 0.05}}
    raw = {
        "name": f"digits_{schedule}", "output_dir": str(out / schedule), "seeds": seeds,
        "device": "cpu",
        "data": {"dataset": "image_folder", "root": str(root), "channels": 1, "hr_size": 16,
                 "val_fraction": 0.15, "augment": {"crop_padding": 1}},
        "degrade": {"lr_size": 4},
        "teacher": {"arch": "resnet20", "width": 16},
        "assistant": {"arch": "resnet8", "width": 8, "embed_dim": 64},
        "student": {"arch": "resnet8", "width": 8, "embed_dim": 64},
        "train": {"teacher": {**stage, "epochs": teacher}, "assistant": {**stage,
                  "epochs": assistant}, "student": {**stage, "epochs": student}},
        "methods": METHODS,
    }
    table = run_experiment(config_from_dict(raw, overrides), progress=False).table
    return {row["method"]: row.get("lr_top1", row.get("hr_top1")) for row in table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--schedules", default="short,normal")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="settings to try instead of the defaults, e.g. distill.warm_start=true "
        "distill.assistant_guard=null (the defaults of the previous version)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        write_digits(root)
        results = {s: run(root, Path(tmp) / "runs", s, seeds, args.overrides)
                   for s in args.schedules.split(",")}
    names = ["teacher"] + METHODS
    print("| schedule (epochs T/A/S) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for schedule, row in results.items():
        epochs = "/".join(map(str, SCHEDULES[schedule]))
        cells = [f"{row[n]:.2f}" if n in row else "-" for n in names]
        print(f"| {schedule} ({epochs}) | " + " | ".join(cells) + " |")
    best = {s: max(r[m] for m in METHODS[:3]) for s, r in results.items()}
    for schedule, row in results.items():
        print(f"{schedule}: horkd {row['horkd'] - row['scratch']:+.2f} points vs scratch, "
              f"{row['horkd'] - best[schedule]:+.2f} vs the best baseline (mean over "
              f"{len(seeds)} seeds)")


if __name__ == "__main__":
    main()
