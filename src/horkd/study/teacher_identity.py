"""Which teacher's weights a study run learnt from, so that a regime never pairs runs that
learnt from different teachers.

A teacher's config fingerprint says how it was trained, not what it became: the same settings
trained again elsewhere (its checkpoint is not kept in git; another CPU rounds differently) give
another teacher with the same fingerprint, and every student that learns from it moves. So each
run record stores a digest of the teacher checkpoint's tensors (``teacher.weights``; and
``teacher.assistant`` for a pre-trained assistant), and:

* the page pairs two methods' runs of a seed only when both learnt from the same weights (a
  method that learns from no teacher pairs with any);
* the runner calls a recorded run *pending, learnt from another teacher* when its weights differ
  from its regime's teacher - the weights most of the regime's runs of that teacher learnt
  from - and that teacher is the one on disk, so retraining it rejoins the regime. Where the
  regime's teacher's weights are gone, nothing is retrained: the runs stay recorded, are paired
  within their own teacher only, and the page names those left unpaired; new runs learn from
  the teacher on disk and the log says so.

Records made before the digest existed carry a stand-in set by their study's maintainers
(``unhashed@<best validation>``, the teacher record's score of a teacher whose weights were not
kept) or nothing, read as :data:`UNKNOWN`: never retrained for it, paired only with other
unknowns, and counted on the page.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
UNHASHED = "unhashed@"  # a teacher whose weights were never hashed: named by its best val


def weights_digest(checkpoint: str | Path) -> str | None:
    """A short hex digest of a checkpoint's tensors (names, dtypes, shapes and bytes, in name
    order): equal for the same weights however they were saved; None where there is none."""
    from horkd.checkpoint import WEIGHTS_SUFFIX, stem_of

    stem = stem_of(checkpoint)
    path = stem.with_name(stem.name + WEIGHTS_SUFFIX)
    if not path.is_file():
        return None
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    import torch

    from horkd.checkpoint import load_state

    state = load_state(path)
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_weights(teacher: dict[str, Any] | None) -> str:
    """The teacher weights a record learnt from (:data:`UNKNOWN` where it does not say)."""
    return (teacher or {}).get("weights") or UNKNOWN


def identity(teacher: dict[str, Any] | None) -> str:
    """The teacher (and pre-trained assistant) a record learnt from, as one string."""
    assistant = (teacher or {}).get("assistant")
    weights = teacher_weights(teacher)
    return f"{weights}+{assistant}" if assistant else weights


def learns_from_teacher(method: str) -> bool:
    """Whether a method's numbers depend on the teacher (scratch and the LR oracle do not)."""
    from horkd.methods import METHODS

    return method in METHODS and bool(METHODS.get(method).needs)


def same_teacher(a: str | None, b: str | None) -> bool:
    """Whether two runs' identities pair: ``None`` is a method that learns from no teacher."""
    return a is None or b is None or a == b


def paired_seeds(seeds: Iterable[int], a: dict[int, str | None],
                 b: dict[int, str | None]) -> tuple[list[int], list[int]]:
    """The seeds whose runs of two methods learnt from the same teacher, and the others."""
    paired, apart = [], []
    for seed in seeds:
        (paired if same_teacher(a.get(seed), b.get(seed)) else apart).append(seed)
    return paired, apart


def regime_teacher(found: Iterable[str], on_disk: str | None) -> str | None:
    """The weights most of a regime's runs of one teacher learnt from (known identities only;
    a tie goes to the teacher on disk, else to the first name); None with none known."""
    counts = Counter(w for w in found if w != UNKNOWN)
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(w for w, n in counts.items() if n == top)
    return on_disk if on_disk in tied else tied[0]


def describe(weights: str, teachers: dict[str, dict[str, Any]] | None = None) -> str:
    """``93.95, weights not kept`` / ``94.23, 1a2b3c4d`` / ``unknown``: an identity as the page
    and the log show it, with the teacher's best validation where its record names it."""
    if weights == UNKNOWN:
        return "unknown teacher (recorded before its weights were hashed)"
    if weights.startswith(UNHASHED):
        return f"the teacher of best val {weights[len(UNHASHED):]} (weights not kept)"
    for info in (teachers or {}).values():
        for entry in [info, *info.get("retrained", [])]:
            if entry.get("weights") == weights:
                return f"the teacher of best val {entry['val']:.2f} (weights {weights[:8]})"
    return f"weights {weights[:8]}"


class RegimeTeachers:
    """For a :class:`~horkd.study.runner.Study`: each regime's teacher per teacher fingerprint
    (from its records) and whether a recorded run learnt from another one it can rejoin."""

    def __init__(self, book: Any, checkpoint_of: Any) -> None:
        self.book = book
        self.checkpoint_of = checkpoint_of  # fingerprint -> the checkpoint a run loads now
        self._found: dict[str, dict[str, list[str]]] = {}

    def found(self, regime: str) -> dict[str, list[str]]:
        """Teacher fingerprint -> the identities of the regime's recorded runs that learn from
        it (read once per regime)."""
        if regime not in self._found:
            from horkd.study.records import DamagedRecord, check_record_file

            by_teacher: dict[str, list[str]] = {}
            folder = self.book.folder / regime
            for path in sorted(folder.glob("*/*/*-seed*.json")) if folder.is_dir() else []:
                try:
                    record = check_record_file(path)
                except (DamagedRecord, OSError):
                    continue  # named and moved aside where the run's own job reads it
                if learns_from_teacher(record.method):
                    fingerprint = record.teacher.get("fingerprint", "")
                    by_teacher.setdefault(fingerprint, []).append(teacher_weights(record.teacher))
            self._found[regime] = by_teacher
        return self._found[regime]

    def on_disk(self, fingerprint: str) -> str | None:
        path = self.checkpoint_of(fingerprint)
        return weights_digest(path) if path else None

    def anchor(self, regime: str, fingerprint: str) -> str | None:
        return regime_teacher(self.found(regime).get(fingerprint, []), self.on_disk(fingerprint))

    def stale(self, regime: str, record: Any) -> bool:
        """Whether a recorded run learnt from another teacher than its regime's, and the
        regime's is the one on disk (so training it again pairs it with the rest)."""
        if not learns_from_teacher(record.method):
            return False
        fingerprint = record.teacher.get("fingerprint", "")
        mine = teacher_weights(record.teacher)
        anchor = self.anchor(regime, fingerprint)
        return (mine != UNKNOWN and anchor is not None and mine != anchor
                and anchor == self.on_disk(fingerprint))

    def orphaned(self, regime: str, fingerprint: str) -> str | None:
        """The regime's teacher when its weights are gone and another teacher is on disk (new
        runs learn from that one: paired only among themselves); None otherwise."""
        anchor, disk = self.anchor(regime, fingerprint), self.on_disk(fingerprint)
        return anchor if anchor is not None and disk is not None and anchor != disk else None

    def stale_seeds(self, job: Any) -> tuple[int, ...]:
        """The seeds of a job whose records learnt from another teacher than the regime's,
        when the regime's is on disk (checked only then: reading records costs time)."""
        if not learns_from_teacher(job.method):
            return ()
        stale = []
        for seed in job.seeds:
            fingerprint = job.teacher[str(seed)]["fingerprint"]
            disk = self.on_disk(fingerprint)
            if disk is None or self.anchor(job.regime, fingerprint) != disk:
                continue
            record = job.recorded(seed)
            if record is not None and self.stale(job.regime, record):
                stale.append(seed)
        return tuple(stale)

    def new_teacher_note(self, job: Any) -> str | None:
        """One line when a job about to train learns from the teacher on disk while its regime's
        recorded runs learnt from one whose weights are gone: it will not pair with them."""
        if not learns_from_teacher(job.method):
            return None
        for seed in job.seeds:
            fingerprint = job.teacher[str(seed)]["fingerprint"]
            gone = self.orphaned(job.regime, fingerprint)
            if gone is not None and job.recorded(seed) is None:
                return (f"[{job.regime}] its recorded runs learnt from {describe(gone)}; runs "
                        f"trained now learn from the teacher on disk (weights "
                        f"{self.on_disk(fingerprint)}) and are paired only with runs of that "
                        "teacher (the page names the others)")
        return None


def paired_values(seeds: Iterable[int], a: dict[int, float], b: dict[int, float],
                  a_ids: dict[int, str | None], b_ids: dict[int, str | None],
                  ) -> tuple[list[float], list[float], list[int]]:
    """Two methods' values over the seeds whose runs learnt from the same teacher, and the
    seeds left out."""
    paired, apart = paired_seeds(seeds, a_ids, b_ids)
    return [a[s] for s in paired], [b[s] for s in paired], apart


def teacher_note(ids: dict[str, dict[int, str | None]], seeds: list[int],
                 teachers: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """What a regime's page says about the teachers its runs learnt from: nothing where every
    run that learns from a teacher learnt from one and the same known one; else each teacher
    with the runs that learnt from it, and the pairs left out."""
    by_teacher: dict[str, list[str]] = {}
    for method, per_seed in ids.items():
        for seed in seeds:
            if per_seed.get(seed) is not None:
                by_teacher.setdefault(per_seed[seed], []).append(f"{method} {seed}")
    if len(by_teacher) <= 1 and UNKNOWN not in by_teacher:
        return []
    lines = [f"- {describe(w, teachers)}: " + _runs(runs) for w, runs in by_teacher.items()]
    methods = [m for m, v in ids.items() if any(v.get(s) is not None for s in seeds)]
    apart = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            _, left = paired_seeds(seeds, ids[a], ids[b])
            if left:
                apart.append(f"{a} / {b} (seed{'s' if len(left) > 1 else ''} "
                             f"{', '.join(map(str, left))})")
    if not apart:  # every seed's runs share a teacher: name each teacher's seeds
        seeds_of = {w: sorted({int(run.rsplit(" ", 1)[1]) for run in runs}, key=int)
                    for w, runs in by_teacher.items()}
        return ["", f"Teachers: the seeds are spread over {len(by_teacher)} teachers, every "
                "pair within one, so the intervals include the teachers' variation as sampled "
                f"(the seeds are treated as independent pairs: with {len(by_teacher)} teachers "
                "the teacher effect is sampled, not estimated): "
                + "; ".join(f"{describe(w, teachers)}: seed{'s' if len(s) > 1 else ''} "
                            f"{', '.join(map(str, s))}" for w, s in seeds_of.items()) + "."]
    head = ("Teachers: this regime's runs learnt from more than one teacher (or from one not "
            "identified); two runs are paired only when they learnt from the same one (a "
            "method that learns from no teacher pairs with any), so the intervals above leave "
            "out the pairs below.")
    return ["", head, "", *lines, f"- not paired: {'; '.join(apart)}"]


def _runs(runs: list[str]) -> str:
    """``fitnet 0, 1, 2; hinton_kd 4``: runs grouped by method."""
    by_method: dict[str, list[str]] = {}
    for run in runs:
        method, seed = run.rsplit(" ", 1)
        by_method.setdefault(method, []).append(seed)
    return "; ".join(f"{m} {', '.join(s)}" for m, s in by_method.items())
