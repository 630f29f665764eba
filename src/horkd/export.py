"""``horkd export``: a checkpoint as a deployable file, checked against PyTorch on a batch."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from horkd.checkpoint import atomic_write, build_from_checkpoint, stem_of

FORMATS = ("onnx", "torchscript")


class _TupleOutput(nn.Module):
    """Exporters want plain tuples: (embedding, logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(image)
        return out.embedding, out.logits


def input_shape(meta: dict) -> tuple[int, int, int]:
    """(C, H, W) the network takes: its LR size when it was trained on native LR input."""
    recipe, given = meta["model"], meta.get("input", {})
    side = given.get("hr_size")
    if given.get("view") == "lr" and not given.get("upsampled"):
        side = given.get("lr_size") or side
    if side is None:
        raise ValueError("checkpoint metadata does not say the input size")
    return int(recipe.get("in_channels", 3)), int(side), int(side)


def export_checkpoint(
    path: str | Path, fmt: str, out: str | Path | None = None, batch: int = 8,
    verbose: bool = False,
) -> tuple[Path, float]:
    """Write the model as ONNX or TorchScript; return the file and the max |difference| of its
    outputs from the PyTorch model's on a random batch. The exporter's own messages are shown
    with ``verbose`` only (or, when it fails, beside its error)."""
    from horkd.inference.model_file import resolve_model

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; allowed: {', '.join(FORMATS)}")
    model_file = resolve_model(path)
    if model_file.onnx:
        raise ValueError(f"{path} is already an exported ONNX model; export its checkpoint")
    path, meta = model_file.path, model_file.meta
    model = _TupleOutput(build_from_checkpoint(path)).eval()
    shape = input_shape(meta)
    out = Path(out) if out else stem_of(path).with_suffix(".onnx" if fmt == "onnx" else ".pt")
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
    outputs: list = []

    def write(tmp: str) -> None:  # written and checked aside, then renamed over ``out``
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, x)
            traced.save(tmp)
            exported = torch.jit.load(tmp)
            with torch.no_grad():
                outputs.extend(t.numpy() for t in exported(x))
        else:
            outputs.extend(_onnx_roundtrip(model, x, Path(tmp), meta, verbose))

    atomic_write(out, write, f"the {fmt} export")
    diff = max(
        float((torch.from_numpy(o) - r).abs().max()) for o, r in zip(outputs, reference, strict=True)
    )
    return out, diff


def _onnx_roundtrip(model: nn.Module, x: Tensor, out: Path, meta: dict, verbose: bool) -> list:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'horkd[export]'"
        ) from None
    with _exporter_output(verbose):
        torch.onnx.export(
            model,
            (x,),
            str(out),
            input_names=["image"],
            output_names=["embedding", "logits"],
            dynamic_shapes={"image": _dynamic_axes(meta)},
            verbose=verbose,
        )
    _attach_meta(out, meta)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})


@contextlib.contextmanager
def _exporter_output(verbose: bool) -> Iterator[None]:
    """Quiet: what the exporter prints or warns is held back, and shown on standard error only
    if the export fails (it may say why)."""
    if verbose:
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except BaseException:
        said = held.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
        if said.strip():
            print(f"the ONNX exporter said:\n{said.rstrip()}", file=sys.stderr)
        raise


def _dynamic_axes(meta: dict) -> dict[int, Any]:
    """The batch is free; a native student trained across LR sizes also takes any side."""
    axes: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    given = meta.get("input", {})
    if given.get("lr_sizes") and not given.get("upsampled"):
        axes[2] = torch.export.Dim("height", min=2, max=4096)
        axes[3] = torch.export.Dim("width", min=2, max=4096)
    return axes


def _attach_meta(path: Path, meta: dict) -> None:
    """The checkpoint's metadata (input size, degradation, classes, task) inside the ONNX file,
    so ``horkd predict model.onnx`` preprocesses exactly as the checkpoint would."""
    import json

    import onnx

    from horkd.inference.model_file import ONNX_META_KEY

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, default=str)
    onnx.save(model, str(path))
    # the exporter may have put the weights beside the file (PATH.data, named after the
    # temporary it wrote); loaded above, they are inside the file now: no stray hidden file
    path.with_name(path.name + ".data").unlink(missing_ok=True)
