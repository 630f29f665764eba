"""``horkd predict``, ``horkd search`` and ``horkd verify``: a trained model on users' files.

Unreadable files never stop the others: each is listed in the output with what is wrong, and the
command's exit status is 1 when any failed (0 when all were used).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from horkd.checkpoint import atomic_write, partial_file, write_text
from horkd.inference.preprocess import InputKind
from horkd.inference.recogniser import Recogniser
from horkd.inference.stream import Failures, image_paths


@dataclass
class Outcome:
    """What a command wrote and how many files it could not use."""

    out: Path | None
    used: int
    failed: list[str]
    index_reused: bool | None = None  # search: whether the gallery index was read, not built

    @property
    def status(self) -> int:
        return 1 if self.failed else 0


@contextmanager
def _writer(out: Path | None, what: str) -> Iterator[IO[str]]:
    """Standard output, or ``out`` written as ``<out>.partial`` and renamed at the end: an
    interrupted or failed command leaves the previous ``out`` whole."""
    if out is None:
        yield sys.stdout
        return
    with partial_file(out, what) as handle:
        yield handle


def _embeddings(
    model: Recogniser, paths: list[Path], kind: InputKind, batch_size: int, workers: int,
    failures: Failures, label: str,
) -> tuple[Tensor, list[int]]:
    """Embeddings of the files that could be read, with their indices into ``paths``."""
    parts, kept = [], []
    with tqdm(total=len(paths), desc=label, unit="img", file=sys.stderr, leave=False,
              disable=None) as bar:  # a bar on a terminal only, not in a log file
        for out, indices in model.stream(paths, kind, batch_size, workers, failures):
            parts.append(out.embedding.float().cpu())
            kept += indices
            bar.update(len(indices))
    if not parts:
        return torch.zeros(0, 0), []
    return torch.cat(parts), kept


def predict(
    model_path: str | Path,
    paths: list[str],
    kind: InputKind = "hr",
    top_k: int = 1,
    out: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Outcome:
    """Labels (classification) or embeddings (retrieval, face) of image files and folders."""
    model = Recogniser.load(model_path)
    files = image_paths(paths)
    failures = Failures()
    target = Path(out) if out else None
    if model.task != "classification":
        return _save_embeddings(model, files, kind, target, batch_size, workers, failures)
    if target is not None and target.suffix.lower() in (".npy", ".safetensors"):
        raise ValueError(f"--out {target}: a classifier writes its labels as CSV (e.g. "
                         f"{target.with_suffix('.csv')}); {target.suffix} holds the embeddings of "
                         "a retrieval or face model")
    k = min(top_k, len(model.classes))
    header = ["path", "label", "score"] + [f"{n}_{i}" for i in range(2, k + 1)
                                           for n in ("label", "score")] + ["error", "note"]
    used = 0
    with _writer(target, "the predictions") as handle, tqdm(
            total=len(files), desc="predict", unit="img", file=sys.stderr, leave=False,
            disable=None) as bar:
        writer = csv.writer(handle, lineterminator="\n")  # what cut, awk and diff expect
        writer.writerow(header)
        rows = _InOrder(writer, failures, 2 * k)
        for outputs, indices in model.stream(files, kind, batch_size, workers, failures):
            probs = outputs.logits.float().softmax(1)
            for index, ranked in zip(indices, model.top(probs, k), strict=True):
                cells = [c for label, score in ranked for c in (label, f"{score:.6f}")]
                rows.add(index, [str(files[index]), *cells, "", failures.notes.get(index, "")])
            rows.flush(files)
            used += len(indices)
            bar.update(len(indices))
        rows.flush(files, final=True)
    return Outcome(target, used, failures.items)


class _InOrder:
    """CSV rows in the order the files were given (an unreadable file in its place, not at
    the end; a batch of images of one size ahead of an earlier one of another size): each row
    is held until every earlier file has its row."""

    def __init__(self, writer: Any, failures: Failures, cells: int) -> None:
        self.writer, self.failures, self.cells = writer, failures, cells
        self.pending: dict[int, list[str]] = {}
        self.next = 0

    def add(self, index: int, row: list[str]) -> None:
        self.pending[index] = row

    def flush(self, files: list[Path], final: bool = False) -> None:
        """Write the rows due in order; ``final``: every file has been through, so write all
        that remain (a file neither predicted nor failed gets a row that says so, never none)."""
        while self.next < len(files):
            if self.next in self.pending:
                self.writer.writerow(self.pending.pop(self.next))
            elif self.next in self.failures.at:
                message = self.failures.at[self.next]
                self.writer.writerow([str(files[self.next])] + [""] * self.cells + [message, ""])
            elif final:
                self.writer.writerow([str(files[self.next])] + [""] * self.cells
                                     + ["not predicted (an internal error: please report it)", ""])
            else:
                return
            self.next += 1


def _save_embeddings(
    model: Recogniser, files: list[Path], kind: InputKind, out: Path | None, batch_size: int,
    workers: int, failures: Failures,
) -> Outcome:
    """``.npy`` with ``<stem>.paths.txt`` beside it, or ``.safetensors`` holding the paths."""
    out = out or Path("embeddings.npy")
    embeddings, kept = _embeddings(model, files, kind, batch_size, workers, failures, "embed")
    kept_paths = [str(files[i]) for i in kept]
    if out.suffix == ".safetensors":
        meta = {"paths": json.dumps(kept_paths), "model": str(model.file.path)}
        atomic_write(out, lambda tmp: save_file({"embeddings": embeddings.contiguous()}, tmp,
                                                metadata=meta), "the embeddings")
    else:
        out = out.with_suffix(".npy")

        def save(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a file name would get .npy appended
                np.save(handle, embeddings.numpy())

        # the paths first: a .npy beside an older paths list would pair rows with other files
        write_text(out.with_suffix(".paths.txt"), "".join(p + "\n" for p in kept_paths),
                   "the paths of the embeddings")
        atomic_write(out, save, "the embeddings")
    if failures.items:
        write_text(out.with_suffix(".errors.txt"), "".join(m + "\n" for m in failures.items),
                   "the files that could not be read")
    return Outcome(out, len(kept), failures.items)


# ----------------------------------------------------------------------------- search
def _listing_key(files: list[Path]) -> str:
    """What the gallery index depends on: every file's path, size and modification time."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{stat.st_size if stat else -1}|"
                      f"{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


def _model_key(model: Recogniser) -> str:
    path = model.file.path
    source = path if model.file.onnx else path.with_name(path.name + ".safetensors")
    return hashlib.sha256(source.read_bytes()).hexdigest()


def gallery_index(
    model: Recogniser, files: list[Path], index_path: Path, batch_size: int, workers: int,
    failures: Failures,
) -> tuple[Tensor, list[Path], bool]:
    """The gallery's normalised embeddings, read from ``index_path`` while the model and every
    gallery file are unchanged, else computed (HR images as they are) and saved there. Returns
    the embeddings, their files and whether the index was reused."""
    key = f"{_model_key(model)}:{_listing_key(files)}"
    if index_path.is_file():
        from safetensors import safe_open

        with safe_open(str(index_path), "pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("key") == key and "failed_rows" in meta:  # older indexes: made again
            stored = load_file(str(index_path))["embeddings"]
            failures.rows.extend(tuple(r) for r in json.loads(meta["failed_rows"]))
            return stored, [Path(p) for p in json.loads(meta["paths"])], True
    embeddings, kept = _embeddings(model, files, "hr_raw", batch_size, workers, failures,
                                   "gallery")
    embeddings = F.normalize(embeddings, dim=1) if len(kept) else embeddings
    kept_files = [files[i] for i in kept]
    meta = {"key": key, "paths": json.dumps([str(p) for p in kept_files]),
            "failed_rows": json.dumps(failures.rows)}
    atomic_write(index_path, lambda tmp: save_file({"embeddings": embeddings.contiguous()}, tmp,
                                                   metadata=meta), "the gallery index")
    return embeddings, kept_files, False


def query_map(query: Recogniser, gallery: Recogniser) -> Any:
    """How the query model's embeddings reach the gallery model's space: the identity for one
    model, the projector its embedding term trained toward that very model, or a refusal."""
    if gallery is query or gallery.file.path == query.file.path:
        return lambda e: e
    projector = query.meta.get("projector")
    name = gallery.file.path
    if not projector:
        raise ValueError(
            f"{query.file.path} was not trained with an embedding term toward {name}: its "
            "embeddings live in a space of their own (relational terms do not fix it), so they "
            "cannot be searched in a gallery embedded by another model; embed the gallery with "
            "the query model, or use a student trained with an embedding term (embedding_regression, "
            "horkd_no_assistant) toward that model"
        )
    if projector.get("target_weights") != _weights_digest(gallery):
        raise ValueError(
            f"{query.file.path}'s embedding term was trained toward another network "
            f"({projector.get('target')}) than {name}: their spaces do not match"
        )
    if projector.get("identity"):
        return lambda e: e
    weight = load_file(str(query.file.path.parent / projector["file"]))["weight"]
    return lambda e: e @ weight.t()


def _weights_digest(model: Recogniser) -> str | None:
    from horkd.reference_cache import weights_digest

    network = getattr(model, "network", None)
    return weights_digest(network) if isinstance(network, torch.nn.Module) else None


def search(
    model_path: str | Path,
    gallery: str | Path,
    query: str | Path,
    gallery_model: str | Path | None = None,
    kind: InputKind = "hr",
    top_k: int = 5,
    out: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Outcome:
    """The ``top_k`` most similar gallery images of each query (cosine similarity)."""
    model = Recogniser.load(model_path)
    embedder = Recogniser.load(gallery_model) if gallery_model else model
    to_gallery = query_map(model, embedder)
    target = Path(out) if out else Path("search.csv")
    lost_gallery, lost_queries = Failures(), Failures()
    index_path = target.with_suffix(".index.safetensors")
    gallery_emb, gallery_files, reused = gallery_index(
        embedder, image_paths([gallery]), index_path, batch_size, workers, lost_gallery
    )
    queries = image_paths([query])
    query_emb, kept = _embeddings(model, queries, kind, batch_size, workers, lost_queries,
                                  "query")
    with _writer(target, "the search results") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # what cut, awk and diff expect
        writer.writerow(["query", "rank", "gallery", "similarity", "error"])
        if kept and len(gallery_files):
            sims = F.normalize(to_gallery(query_emb), dim=1) @ gallery_emb.t()
            best = sims.topk(min(top_k, len(gallery_files)), dim=1)
            for row, index in enumerate(kept):
                for rank, (score, g) in enumerate(zip(best.values[row], best.indices[row],
                                                      strict=True), start=1):
                    writer.writerow([str(queries[index]), rank, str(gallery_files[int(g)]),
                                     f"{float(score):.6f}", ""])
        # each file in its own side's column, what is wrong in the error's
        for path, reason in lost_queries.rows:
            writer.writerow([path, "", "", "", reason])
        for path, reason in lost_gallery.rows:
            writer.writerow(["", "", path, "", reason])
    return Outcome(target, len(kept), lost_gallery.items + lost_queries.items, reused)


# ----------------------------------------------------------------------------- verify
def verify(
    model_path: str | Path,
    first: str | Path,
    second: str | Path,
    kind: InputKind = "hr",
    threshold: float | None = None,
) -> tuple[float, bool, str]:
    """Cosine similarity of a reference image (HR, as a gallery image) and a probe (``kind``),
    and the same/different decision at the threshold the model's training chose on validation
    pairs (or ``threshold``). Returns (similarity, same, where the threshold came from)."""
    model = Recogniser.load(model_path)
    if model.task == "classification":
        raise ValueError(
            "horkd verify compares two faces with a face model's embedding and threshold; "
            f"{model.file.path} is a classification model (use horkd predict)"
        )
    chosen = model.meta.get("verification")
    if threshold is None and not chosen:
        raise ValueError(
            f"{model.file.path} holds no verification threshold (face models trained by this "
            "version store the one chosen on validation pairs); pass --threshold T"
        )
    source = "given with --threshold" if threshold is not None else chosen["source"]
    threshold = float(threshold if threshold is not None else chosen["threshold"])
    reference = model.embed([first], kind="hr_raw")
    probe = model.embed([second], kind=kind)
    similarity = float(F.cosine_similarity(reference, probe).item())
    return similarity, similarity >= threshold, f"{threshold:.4f}, {source}"
