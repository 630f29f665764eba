"""A trained model as a user names it: a run directory (the student the run chose to ship, its
``ship.json``), a stage directory, its ``model`` stem, the ``.safetensors`` or ``.json`` file, or
an exported ``.onnx`` file."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from horkd.checkpoint import (
    META_SUFFIX,
    SHIP_FILE,
    WEIGHTS_SUFFIX,
    CheckpointError,
    check_meta,
    load_meta,
    stem_of,
)

ONNX_META_KEY = "horkd"  # the ONNX metadata_props entry holding the checkpoint's metadata
ACCEPTED = (
    "a run directory (the student it chose), a stage directory (e.g. "
    "runs/x/seed0/students/horkd), its 'model' stem, the "
    "model.safetensors or model.json file, or an .onnx file written by horkd export"
)


@dataclass(frozen=True)
class ModelFile:
    """Where a model lives and what it is (its checkpoint metadata)."""

    path: Path  # the checkpoint stem, or the .onnx file
    meta: dict[str, Any]
    onnx: bool = False

    @property
    def task(self) -> str:
        return str(self.meta.get("task", "classification"))


def resolve_model(path: str | Path) -> ModelFile:
    """Whatever the user typed, the model it names; one clear error otherwise."""
    given = Path(path)
    if given.suffix == ".onnx":
        if not given.is_file():
            raise CheckpointError(f"ONNX model not found: {given}")
        return ModelFile(given, onnx_meta(given), onnx=True)
    if given.is_dir() and not (given / f"model{META_SUFFIX}").is_file():
        given = shipped_student(given) or given
    stem = given / "model" if given.is_dir() else stem_of(given)
    if not stem.with_name(stem.name + META_SUFFIX).is_file():
        from horkd.trainer import STATE_FILE

        if given.is_dir() and (given / STATE_FILE).is_file():
            raise CheckpointError(f"{given} is a stage that has not finished training (it holds "
                                  "a resumable state, no model yet); rerun its command to finish it")
        if given.is_file():  # weights alone: from elsewhere, or their .json was not copied
            raise CheckpointError(
                f"{given} has no {stem.name}{META_SUFFIX} beside it (the input size, "
                "degradation and class names a horkd model carries); copy it with the weights, "
                "or train from a weight file of your own with teacher.weights=FILE")
        where = f"{given} holds no model.json" if given.is_dir() else f"model not found: {given}"
        raise CheckpointError(f"{where}; name a model as {ACCEPTED}")
    if not stem.with_name(stem.name + WEIGHTS_SUFFIX).is_file():
        raise CheckpointError(f"checkpoint weights not found: {stem}{WEIGHTS_SUFFIX}")
    return ModelFile(stem, load_meta(stem))


def shipped_student(run_dir: Path) -> Path | None:
    """The stage directory of the student a run chose to deploy (its ``ship.json``), said on
    standard error; None where ``run_dir`` is not a finished run."""
    pointer = run_dir / SHIP_FILE
    if not pointer.is_file():
        if any(run_dir.glob("seed*/students/*/model.json")):
            raise CheckpointError(
                f"{run_dir} is a run directory without a chosen student ({SHIP_FILE} is "
                "written when the run finishes); rerun its command to finish it, or name one "
                f"student, e.g. {next(run_dir.glob('seed*/students/*/model.json')).parent}")
        return None
    try:
        choice = json.loads(pointer.read_text())
        stage = run_dir / choice["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{pointer} is damaged ({exc}); rerun the run's command to "
                              "write it again, or name a student's directory") from None
    print(f"{run_dir}: using the run's chosen student, {choice.get('method')} ({stage}; "
          f"{choice.get('chosen_on', 'chosen on validation')})", file=sys.stderr)
    if choice.get("near_chance"):
        print(f"{run_dir}: its chosen student is near chance on validation (lower bound "
              f"{choice.get('lower_bound')}, chance {choice.get('chance')}): not worth shipping; "
              "more labels/epochs", file=sys.stderr)
    return stage


def onnx_meta(path: Path) -> dict[str, Any]:
    """The horkd metadata an exported ONNX file carries (``horkd export`` writes it)."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX models need onnx and onnxruntime: pip install 'horkd[export]'") \
            from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises its own decode errors
        raise CheckpointError(f"{path} is not a readable ONNX file: {exc}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise CheckpointError(
            f"{path} carries no horkd metadata (input size, degradation, class names): export "
            "the checkpoint with `horkd export`, or use the checkpoint itself"
        )
    try:
        meta = json.loads(props[ONNX_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its horkd metadata is not valid JSON: {exc}") from None
    return check_meta(meta, f"{path} (its horkd metadata)")
