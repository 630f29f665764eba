"""Resumable training state in one safetensors file, without pickle.

A mid-stage checkpoint holds nested dicts and lists (optimiser and scheduler state, RNG states,
counters, the history so far) around many tensors. ``torch.save`` would pickle that, and loading a
pickle can run code; here the tensors go into the safetensors body and everything else into a JSON
skeleton stored in the file's metadata, where each tensor is referenced by key. Loading therefore
never executes anything from the file. Writes are atomic: a kill mid-save leaves the previous file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from horkd.checkpoint import CheckpointError, atomic_write

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_SKELETON_KEY = "horkd_state"


def _flatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = node.detach().contiguous().cpu()
        return {_TENSOR: key}
    if isinstance(node, dict):
        if not all(isinstance(k, str | int) for k in node):
            raise TypeError("training state dicts must have str or int keys")
        # JSON keys are strings: remember which were ints (optimiser state is keyed by index).
        return {
            "__dict__": [[k, isinstance(k, int), _flatten(v, tensors)] for k, v in node.items()]
        }
    if isinstance(node, tuple):
        return {_TUPLE: [_flatten(v, tensors) for v in node]}
    if isinstance(node, list):
        return [_flatten(v, tensors) for v in node]
    if isinstance(node, np.ndarray):
        return _flatten(torch.from_numpy(node.copy()), tensors) | {"numpy": True}
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"cannot store a {type(node).__name__} in a training state")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if _TENSOR in node:
        tensor = tensors[node[_TENSOR]]
        return tensor.numpy() if node.get("numpy") else tensor
    if _TUPLE in node:
        return tuple(_unflatten(v, tensors) for v in node[_TUPLE])
    return {int(k) if is_int else k: _unflatten(v, tensors) for k, is_int, v in node["__dict__"]}


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    metadata = {_SKELETON_KEY: json.dumps(skeleton)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        skeleton = json.loads(metadata[_SKELETON_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"training state not found: {path}") from None
    except Exception as exc:  # safetensors and JSON errors: not a horkd training state
        raise CheckpointError(f"cannot read training state {path}: {exc}") from None
    return _unflatten(skeleton, tensors)


def capture_rng() -> dict[str, Any]:
    """Every global RNG a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
