"""Use a trained recogniser on your own images: labels, embeddings, by checkpoint or ONNX.

>>> from horkd import Recogniser
>>> model = Recogniser.load("runs/demo/seed0/students/horkd")
>>> model.predict(["photo.png"], top_k=3)          # [[("Sneaker", 0.91), ...]]
>>> model.embed(["photo.png"]).shape               # torch.Size([1, 64])
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from horkd.inference.model_file import ModelFile, resolve_model
from horkd.inference.preprocess import ImageLike, InputKind, ModelInput
from horkd.inference.stream import Failures, as_batches, stream
from horkd.models import ModelOutput


class _Onnx:
    """An exported model behind the same call as the PyTorch network."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor) -> ModelOutput:
        embedding, logits = self.session.run(None, {"image": x.cpu().numpy().astype(np.float32)})
        return ModelOutput(torch.from_numpy(embedding), torch.from_numpy(logits))


class SmallImageWarning(UserWarning):
    """An image far below the size the model takes it at: enlarged many times, its answer rests
    on little of what the model learnt from (``horkd predict`` writes the same in its ``note``
    column)."""


class Recogniser:
    """A trained network with its own preprocessing (input size, channels, degradation).

    Images go in as the model's test images did (HR pictures degraded with the run's seed),
    so the same image always gives the same answer. Most callers use :meth:`load`.

    Args:
        model: The model to run, as :func:`~horkd.inference.model_file.resolve_model` finds it.
        device: Where a PyTorch model runs (``"cpu"``, ``"cuda:1"``); an ONNX model runs on
            the CPU whatever this says.

    Attributes:
        meta: The checkpoint's metadata (recipe, input sizes, degradation, class names).
        network: The PyTorch network in eval mode, or the ONNX session behind the same call.

    Raises:
        ValueError: The metadata does not say the input size.
        horkd.checkpoint.CheckpointError: The recipe or the weights do not fit.
        ImportError: The model is ONNX and onnxruntime is not installed.
    """

    def __init__(self, model: ModelFile, device: str | torch.device = "cpu") -> None:
        self.file = model
        self.meta = model.meta
        try:
            self.input = ModelInput.from_meta(model.meta)
        except ValueError as exc:
            from horkd.checkpoint import CheckpointError

            raise CheckpointError(f"{model.path}: {exc}") from None
        self.device = torch.device(device)
        self._steps: dict[str, Any] = {}  # the batch step of each input kind, built once
        if model.onnx:
            self.network: Any = _Onnx(model.path)
        else:
            from horkd.checkpoint import build_from_checkpoint

            self.network = build_from_checkpoint(model.path).to(self.device).eval()

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Recogniser:
        """The model a path names, ready to use.

        Args:
            path: A run directory (the student the run chose to ship, named on standard
                error), a stage directory (``runs/x/seed0/students/horkd``), its ``model`` stem,
                the ``model.safetensors`` or ``model.json`` file, or an ``.onnx`` from
                ``horkd export``.
            device: Where a PyTorch model runs; see :class:`Recogniser`.

        Raises:
            horkd.checkpoint.CheckpointError: No finished model is at ``path``; the message
                says what was looked for.
            ImportError: ``path`` is ONNX and onnx or onnxruntime is not installed.
        """
        return cls(resolve_model(path), device)

    def __repr__(self) -> str:
        """What a user checks before trusting the answers: which network, what it takes, what
        it names, from where."""
        meta, given = self.meta, self.input
        model = meta.get("model", {})
        who = f"{meta.get('role', 'model')} {meta.get('method', '?')!r}"
        if given.lr_size is None:
            sides = f"HR {given.hr_size} px"
        elif given.lr_range is not None:
            sides = f"HR {given.hr_size} px -> LR {given.lr_range[0]}-{given.lr_range[1]} px"
        else:
            sides = f"HR {given.hr_size} px -> LR {given.lr_size} px" + (
                f" re-upsampled to {given.hr_size}" if given.upsampled else "")
        if self.task == "classification":
            names = self.classes
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            what = f"{len(names)} classes ({shown})"
        else:
            what = f"{self.task}, {model.get('embed_dim', '?')}-d embeddings"
        source = f"{self.file.path} (ONNX)" if self.file.onnx else str(self.file.path)
        return (f"Recogniser({who}, seed {meta.get('seed', '?')}: {model.get('arch', '?')} "
                f"width {model.get('width', '?')}, {given.channels}-channel {sides}; {what}; "
                f"from {source}; on {'cpu' if self.file.onnx else self.device})")

    @property
    def task(self) -> str:
        """``"classification"``, ``"retrieval"`` or ``"face"``; only the first names classes."""
        return self.file.task

    @property
    def classes(self) -> list[str]:
        """The class names by label index; ``"0"``, ``"1"``, ... when the data named none."""
        given = self.meta.get("classes")
        count = int(self.meta["model"]["num_classes"])
        return list(given) if given else [str(i) for i in range(count)]

    @torch.no_grad()
    def outputs(self, batch: Tensor, kind: InputKind = "hr") -> ModelOutput:
        """The network on a batch from the per-image steps (the batch step applied here).

        Args:
            batch: Images ``[B, C, S, S]``, pixels in [0, 1], resized already: ``S`` is the HR
                size for ``"hr"`` and ``"hr_raw"``, the network's own size for ``"lr"``.
            kind: What the images are; see :data:`~horkd.inference.preprocess.InputKind`.

        Returns:
            Embeddings ``[B, D]`` and logits ``[B, K]`` on ``device`` (an ONNX model's: CPU).
        """
        if kind not in self._steps:
            self._steps[kind] = self.input.batch_step(kind, self.device)
        return self.network(self._steps[kind](batch.to(self.device)))

    def predict(
        self, images: list[ImageLike], top_k: int = 1, kind: InputKind = "hr"
    ) -> list[list[tuple[str, float]]]:
        """The ``top_k`` labels of each image with their softmax probabilities.

        Args:
            images: The images, in a list even when there is one; see
                :data:`~horkd.inference.preprocess.ImageLike`.
            top_k: How many labels per image, most probable first (at most the class count).
            kind: ``"hr"`` pictures, ``"lr"`` real low-resolution captures, or ``"hr_raw"``;
                see :data:`~horkd.inference.preprocess.InputKind`.

        Returns:
            One list per image, in the given order, of ``(class name, probability)`` pairs.

        Raises:
            ValueError: The model is not a classifier (its task is retrieval or face).
            TypeError: ``images`` is one image rather than a list, or an item is not an image.
            horkd.data.images.BadImageError: A path does not decode as an image.
        """
        if self.task != "classification":
            raise ValueError(
                f"this is a {self.task} model: it embeds images (Recogniser.embed, horkd search "
                "or horkd verify) rather than naming classes"
            )
        return self.top(self._all(images, kind).logits.float().softmax(1), top_k)

    def _all(self, images: list[ImageLike], kind: InputKind) -> ModelOutput:
        """The network on every image, in order (images of several sizes run size by size)."""
        one = isinstance(images, str | Path | Image.Image) or (  # a string is read per letter,
            isinstance(images, np.ndarray | Tensor) and images.ndim <= 3)  # an array per row
        if one:
            raise TypeError(f"images must be a list of images, got one {type(images).__name__}; "
                            "pass [image] for a single one")
        notes: dict[int, str] = {}
        parts = [(self.outputs(batch, kind), idx) for batch, idx in
                 as_batches(images, self.input, kind, notes)]
        if notes:
            first = min(notes)
            more = f" (and {len(notes) - 1} more of the {len(images)})" if len(notes) > 1 else ""
            said = notes[first].replace("with --input lr", 'with kind="lr"')  # this API's word
            warnings.warn(f"images[{first}]: {said}{more}", SmallImageWarning,
                          stacklevel=3)
        order = torch.tensor([i for _, idx in parts for i in idx]).argsort()
        embedding = torch.cat([out.embedding.float().cpu() for out, _ in parts])[order]
        logits = torch.cat([out.logits.float().cpu() for out, _ in parts])[order]
        return ModelOutput(embedding, logits)

    def top(self, probs: Tensor, top_k: int) -> list[list[tuple[str, float]]]:
        """The ``top_k`` class names and probabilities of each row of ``probs``.

        Args:
            probs: Class probabilities ``[N, K]``, one row per image.
            top_k: How many per row; more than ``K`` gives ``K``.

        Returns:
            One list per row of ``(class name, probability)``, most probable first.
        """
        k = min(top_k, probs.shape[1])
        scores, labels = probs.topk(k, dim=1)
        names = self.classes
        return [[(names[c], s) for c, s in zip(row_c, row_s, strict=True)]
                for row_c, row_s in zip(labels.tolist(), scores.tolist(), strict=True)]

    def embed(self, images: list[ImageLike], kind: InputKind = "hr") -> Tensor:
        """Each image's embedding (not normalised; cosine similarity normalises).

        Args:
            images: The images, in a list even when there is one; see
                :data:`~horkd.inference.preprocess.ImageLike`.
            kind: What the images are; see :meth:`predict`.

        Returns:
            The embeddings ``[N, D]`` in float32 on the CPU, row ``i`` for ``images[i]``.

        Raises:
            TypeError: ``images`` is one image rather than a list, or an item is not an image.
            horkd.data.images.BadImageError: A path does not decode as an image.
        """
        return self._all(images, kind).embedding

    def stream(
        self,
        paths: list[Path],
        kind: InputKind = "hr",
        batch_size: int = 64,
        workers: int = 2,
        failures: Failures | None = None,
    ) -> Iterator[tuple[ModelOutput, list[int]]]:
        """The network's outputs for image files, a batch at a time, with their indices.

        For more files than fit in memory; a file that cannot be read goes to ``failures``
        instead of stopping the others.

        Args:
            paths: The image files.
            kind: What the images are; see :meth:`predict`.
            batch_size: Images per batch at most (a batch holds images of one size).
            workers: DataLoader processes that decode the files (0: this process).
            failures: Collects what is wrong with each unreadable file; ``None`` drops it.

        Yields:
            ``(outputs, indices)``: as :meth:`outputs` gives them, and the index into ``paths``
            of each row.
        """
        for batch, indices in stream(paths, self.input, kind, batch_size, workers, failures):
            yield self.outputs(batch, kind), indices
