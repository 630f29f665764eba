"""Checkpoints as safetensors weights beside a JSON file of metadata.

Weights never go through pickle, so loading a checkpoint cannot run code. The metadata says how to
rebuild the network (architecture, classes, widths, normalisation), so nothing is parsed out of a
file name. Both files are written atomically: a crash mid-save leaves the previous pair intact.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from horkd import __version__

WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit what the config asks for."""


def atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for torn in path.parent.glob(f".{path.name}.*"):  # left by a save that was killed
        torn.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:  # mkstemp makes 0600: others could not read a model
            os.chmod(tmp, 0o666 & ~umask())
        except OSError:  # a filesystem without modes (CIFS, some FUSE mounts): keep its own
            pass
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def umask() -> int:
    """The process's umask, read once: setting and restoring it at every save could race
    other threads' files."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a power cut could otherwise lose the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, default=str)

    atomic_write(Path(path), write)


def git_sha() -> str | None:
    """The code version a run came from, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def stem_of(path: str | Path) -> Path:
    """``run/student`` from ``run/student``, ``run/student.json`` or ``run/student.safetensors``."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, META_SUFFIX):
        return path.with_suffix("")
    return path


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Save ``model``'s state dict and ``meta`` (must hold ``meta['model']``, the build recipe)."""
    stem = stem_of(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    full_meta = {"horkd_version": __version__, "git_sha": git_sha(), **meta}
    weights = stem.with_name(stem.name + WEIGHTS_SUFFIX)
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    write_json(stem.with_name(stem.name + META_SUFFIX), full_meta)
    return weights


def load_meta(path: str | Path) -> dict[str, Any]:
    stem = stem_of(path)
    meta_path = stem.with_name(stem.name + META_SUFFIX)
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {meta_path}")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {exc}") from None


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    stem = stem_of(path)
    weights = stem.with_name(stem.name + WEIGHTS_SUFFIX)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights}")
    try:
        return load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read checkpoint weights {weights}: {exc}") from None


def build_from_checkpoint(path: str | Path, expect: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights.

    ``expect`` (e.g. ``{"arch": "resnet20", "num_classes": 10}``) is checked against the stored
    recipe so a checkpoint of another architecture fails with both names in the message.
    """
    from horkd.models import build_model

    meta = load_meta(path)
    recipe = meta.get("model")
    if not isinstance(recipe, dict) or "arch" not in recipe:
        raise CheckpointError(f"{path}: metadata has no model recipe ('model.arch')")
    for key, wanted in (expect or {}).items():
        if wanted is not None and recipe.get(key) != wanted:
            raise CheckpointError(
                f"{path}: checkpoint has {key}={recipe.get(key)!r} but the config asks for "
                f"{key}={wanted!r}"
            )
    model = build_model(**recipe)
    state = load_state(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored recipe: {exc}") from None
    return model
