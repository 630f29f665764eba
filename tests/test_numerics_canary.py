"""The canary of training's numbers: a tiny run on one thread, compared with pinned numbers.

When a change moves them, the committed study records (docs/results/runs) no longer say what the
code would measure: move ``horkd.numerics_version.NUMERICS_VERSION`` with the pinned numbers
(``python tests/test_numerics_canary.py --pin``), so the page marks the records of the older
version until they are recorded again. See horkd/numerics_version.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

PINNED = Path(__file__).parent / "fixtures" / "numerics_canary.json"
METHODS = ["scratch", "hinton_kd", "fitnet", "rkd", "horkd"]
# Relative tolerance: a float's last bits may differ between CPU kinds (AVX2, AVX-512); any change
# to what training computes (a loss, a default, the data order, an initialisation) moves these
# numbers by far more.
RELATIVE = 1e-4


def measure(output_dir: Path) -> dict[str, float]:
    """Every stage's last-epoch training terms, on one thread, with PyTorch's own ops."""
    from horkd.config import ExperimentConfig
    from horkd.experiment.run import run_experiment
    from horkd.logger import read_jsonl
    from horkd.losses.cpu_kernels import use_kernels
    from tests.conftest import tiny_config_dict  # noqa: I001

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        raw = tiny_config_dict(output_dir, methods=METHODS)
        # PyTorch's own ops: the fused numba kernels give other last bits in a process that
        # compiled them than in one that loaded them from numba's cache (a fresh clone, CI)
        with use_kernels(False):
            run_experiment(ExperimentConfig.model_validate(raw), progress=False)
    finally:
        torch.set_num_threads(threads)
    numbers: dict[str, float] = {}
    seed = output_dir / "seed0"
    stages = [seed / "teacher", seed / "assistant",
              *(seed / "students" / m for m in METHODS)]
    for stage in stages:
        last = read_jsonl(stage / "metrics.jsonl")[-1]
        for key, value in last.items():
            # the training terms: continuous, so one flipped prediction on another CPU's last
            # bits does not read as moved numbers (a validation top-1 on 60 images would)
            if key.startswith("train/") and key not in ("train/images_per_s", "train/seconds",
                                                                 "train/cpu_seconds"):
                numbers[f"{stage.name}:{key}"] = float(value)
    return numbers


def test_training_numbers_move_only_with_the_numerics_version(tmp_path):
    from horkd.numerics_version import NUMERICS_VERSION

    pinned = json.loads(PINNED.read_text())
    measured = measure(tmp_path / "run")
    if pinned["numerics_version"] != NUMERICS_VERSION:
        pytest.fail(f"NUMERICS_VERSION is {NUMERICS_VERSION} but the canary is pinned for "
                    f"{pinned['numerics_version']}: re-pin it (python {Path(__file__).name} "
                    "--pin)")
    moved = {k: (v, measured.get(k)) for k, v in pinned["numbers"].items()
             if measured.get(k) != pytest.approx(v, rel=RELATIVE, abs=1e-6)}
    assert set(measured) == set(pinned["numbers"]), "the canary measures other numbers now"
    assert not moved, (
        f"training's numbers moved ({len(moved)} of {len(pinned['numbers'])}, e.g. "
        f"{next(iter(moved.items()))}) while NUMERICS_VERSION stayed {NUMERICS_VERSION}: add one "
        "to it in src/horkd/numerics_version.py and re-pin the canary "
        f"(python tests/{Path(__file__).name} --pin)")


if __name__ == "__main__" and sys.argv[1:] == ["--pin"]:
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from horkd.numerics_version import NUMERICS_VERSION

    with tempfile.TemporaryDirectory() as folder:
        numbers = measure(Path(folder) / "run")
    pinned = json.loads(PINNED.read_text()) if PINNED.is_file() else None
    if pinned and pinned["numerics_version"] == NUMERICS_VERSION and any(
            numbers.get(k) != pytest.approx(v, rel=RELATIVE, abs=1e-6)
            for k, v in pinned["numbers"].items()):
        sys.exit(f"the numbers moved but NUMERICS_VERSION is still {NUMERICS_VERSION}: add one to "
                 "it in src/horkd/numerics_version.py first, then pin")
    PINNED.write_text(json.dumps({"numerics_version": NUMERICS_VERSION, "numbers": numbers},
                                 indent=1, sort_keys=True) + "\n")
    print(f"pinned {len(numbers)} numbers for NUMERICS_VERSION {NUMERICS_VERSION} in {PINNED}")
