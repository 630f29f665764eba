"""Checkpoints as safetensors weights beside a JSON file of metadata.

Weights never go through pickle, so loading a checkpoint cannot run code. The metadata says how to
rebuild the network (architecture, classes, widths, normalisation), so nothing is parsed out of a
file name. Both files are written atomically: a crash mid-save leaves the previous pair intact.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import IO, Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from horkd import __version__

WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"
SHIP_FILE = "ship.json"  # in a run directory: the student it chose to deploy


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit what the config asks for."""


class OutputError(OSError):
    """A file horkd could not write (no space left, a read-only or unwritable place, a file where
    a folder should be): the message names the path and what was being written, in one line.
    Whatever the file held before is left as it was; nothing half-written is kept."""


# errors of the place a file goes, not of horkd: reported as one line naming the path
_PLACE_ERRORS = MappingProxyType({
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is where a folder should be",
    errno.EEXIST: "a file is where a folder should be",
    errno.EISDIR: "a folder is in the way",
    errno.EFBIG: "the file is too large for the filesystem",
})


def output_error(exc: BaseException, path: Path, what: str | None = None) -> OutputError | None:
    """``exc`` as an :class:`OutputError` when it says the place cannot take the file (an
    ``OSError`` of those kinds, or safetensors' error wrapping one), else None."""
    if isinstance(exc, OutputError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and type(exc).__name__ == "SafetensorError":  # "... (os error 28)"
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code not in _PLACE_ERRORS:
        return None
    why = _PLACE_ERRORS[code]
    if code in (errno.ENOTDIR, errno.EEXIST) and isinstance(exc, OSError) and exc.filename:
        why = f"{exc.filename} is a file where a folder should be"
    named = f"{path} ({what})" if what else str(path)
    error = OutputError(
        f"cannot write {named}: {why}; fix that and run the same command again (nothing "
        "half-written was kept; an earlier file there is unchanged)"
    )
    error.errno = code
    return error


def atomic_write(path: Path, write: Any, what: str | None = None) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``.

    ``what`` names the file for a person (``"a study record"``); a full disk, a read-only or
    unwritable place is raised as one :class:`OutputError` naming ``path`` and ``what``, with the
    temporary file removed and ``path`` as it was.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for torn in path.parent.glob(f".{path.name}.*"):  # left by a save that was killed
            torn.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path, what) or exc from None
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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        mapped = output_error(exc, path, what)
        if mapped is None:
            raise
        raise mapped from None


def write_text(path: Path, text: str, what: str | None = None) -> None:
    """``text`` into ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text), what)


@contextmanager
def partial_file(path: Path, what: str | None = None) -> Iterator[IO[str]]:
    """A text file written a piece at a time (rows streamed as they come) into
    ``<path>.partial``, renamed over ``path`` when the block ends. A failure or an interruption
    (Ctrl-C, SIGTERM) removes the partial file and leaves ``path`` as it was; a kill leaves only
    the ``.partial`` file, which nothing reads."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = partial.open("w", newline="")
    except OSError as exc:
        raise output_error(exc, path, what) or exc from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        mapped = output_error(exc, path, what)
        if mapped is None:
            raise
        raise mapped from None


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


def write_json(path: Path, data: Any, what: str | None = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, default=str)

    atomic_write(Path(path), write, what)


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
    atomic_write(weights, lambda tmp: save_file(state, tmp), "the model's weights")
    write_json(stem.with_name(stem.name + META_SUFFIX), full_meta, "the model's description")
    return weights


class _Recipe(BaseModel):
    """How to rebuild the network (``build_model``'s arguments); other keys go to the model."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())
    arch: str = Field(min_length=1)
    num_classes: int = Field(ge=1)
    in_channels: int = Field(3, ge=1)
    embed_dim: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    norm_sizes: list[Annotated[int, Field(ge=1)]] | None = None
    work_size: int | None = Field(None, ge=1)


class _Input(BaseModel):
    """What the network takes: HR pictures, or LR at ``lr_size`` (re-upsampled or not)."""

    model_config = ConfigDict(extra="allow", strict=True)
    view: Literal["hr", "lr"] = "hr"
    hr_size: int = Field(ge=1)
    lr_size: int | None = Field(None, ge=1)
    lr_sizes: list[Annotated[int, Field(ge=1)]] | None = None
    upsampled: bool | None = False

    @model_validator(mode="after")
    def _sizes(self) -> _Input:
        if self.view == "lr" and self.lr_size is None:
            raise ValueError("input.lr_size: a model that takes LR images needs its LR size")
        if self.lr_size is not None and self.lr_size > self.hr_size:
            raise ValueError(f"input.lr_size: {self.lr_size} is larger than input.hr_size "
                             f"{self.hr_size}")
        return self


class ModelMeta(BaseModel):
    """The checkpoint metadata (``model.json``, or an ONNX file's ``horkd`` entry) as far as
    loading and using the model reads it; anything else it holds is kept as written."""

    model_config = ConfigDict(extra="allow", strict=True, protected_namespaces=())
    model: _Recipe
    input: _Input | None = None
    classes: list[str] | None = None
    task: str = "classification"
    seed: int = 0
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _classes_fit_the_head(self) -> ModelMeta:
        count = self.model.num_classes
        if self.classes and len(self.classes) != count:
            raise ValueError(
                f"classes: {len(self.classes)} class names for a head of {count} outputs "
                "(model.num_classes): every prediction would carry another class's name; make "
                "the list match the classes the model was trained on, in its order")
        return self


def check_meta(meta: Any, where: str | Path) -> dict[str, Any]:
    """``meta`` when it describes a model horkd can rebuild and feed; else one
    :class:`CheckpointError` listing every problem, one line each, under ``where``."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} must hold a JSON object (the model's description), "
                              f"not a {type(meta).__name__}")
    try:
        ModelMeta.model_validate(meta)
    except ValidationError as err:
        lines = []
        for problem in err.errors():
            message = problem["msg"].removeprefix("Value error, ")
            loc = ".".join(str(part) for part in problem["loc"])
            lines.append(f"  {loc}: {message}" if loc else f"  {message}")
        raise CheckpointError(f"{where} does not describe a usable model:\n" + "\n".join(lines)) \
            from None
    return meta


def load_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata, checked (:func:`check_meta`)."""
    stem = stem_of(path)
    meta_path = stem.with_name(stem.name + META_SUFFIX)
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {exc}") from None
    return check_meta(meta, meta_path)


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
