"""Fused CPU kernels for the relational losses: one compiled loop nest instead of dozens of ops.

Why: at training batch sizes the eager relational terms are dozens of ATen operations, each a
full pass over a c x N x N (angle) or N x N (distance) tensor; on a CPU the exact third order
alone cost more than a small student's whole step. The loops in :mod:`horkd.losses.numba_loops`
make loss and closed-form gradient in one pass over the triplets and store nothing of size N^3
(about 7x faster for the exact angle term at N = 128 on two cores).

They run when numba is installed (``pip install 'horkd[cpu]'``), the Gram matrices are float32
or float64 CPU tensors, and they are not switched off (``HORKD_CPU_KERNELS=0`` in the
environment, or :func:`use_kernels`); otherwise the eager operations run, with the same values
and gradients. The first call compiles (tens of seconds); numba caches the result on disk.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from horkd.losses.numerics import EPS, coincidence_eps

SWITCH = "HORKD_CPU_KERNELS"  # the environment variable that turns the kernels off
_lock = threading.Lock()  # numba's thread pools are not safe for calls from several threads


# processes reading files beside this one (see :func:`share_cores`); a context variable, so
# the setting stays with the run (the thread or task) that made the loader
_loader_workers: ContextVar[int] = ContextVar("horkd_loader_workers", default=0)


def share_cores(loader_workers: int) -> None:
    """Leave ``loader_workers`` cores to a DataLoader's processes: the kernels then run on at
    most the CPUs less those (at least one thread), not on every core while the workers decode.
    Their results do not depend on the thread count (see numba_loops), only their speed."""
    _loader_workers.set(max(0, loader_workers))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def enabled() -> bool:
    """Read at every call, so a switch set after import (the benchmark, a test) takes effect."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "off")


def installed() -> bool:
    return importlib.util.find_spec("numba") is not None and _loops() is not None


@contextmanager
def use_kernels(on: bool) -> Iterator[None]:
    """Switch the kernels on or off inside the block (tests and the benchmark compare both)."""
    before = os.environ.get(SWITCH)
    os.environ[SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = before


def usable(gram: Tensor) -> bool:
    return (
        gram.device.type == "cpu"
        and gram.dtype in (torch.float32, torch.float64)
        and enabled()
        and installed()
    )


@functools.cache
def _loops() -> ModuleType | None:
    """Imported on first use (numba's import and compilation cost nothing until then), once. A
    numba that is installed but does not import (say, built for another numpy) switches the
    kernels off with one warning instead of stopping the training."""
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        from horkd.losses import numba_loops
    except Exception as error:  # noqa: BLE001 - any import failure means: use the eager ops
        warnings.warn(
            f"horkd: the fused CPU kernels are off, numba did not import ({error}); "
            "the relational losses run on PyTorch operations",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return numba_loops


def _array(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _consts(gram: Tensor, like: np.ndarray, delta: float) -> np.ndarray:
    """The scalar settings in the Gram matrix's own dtype (``like`` is its array)."""
    return np.array([delta, coincidence_eps(gram.dtype), EPS], dtype=like.dtype)


Result = tuple[Tensor, Tensor | None, Tensor | None]


def _results(
    out: tuple[float, np.ndarray, np.ndarray], like: Tensor, need_s: bool, need_t: bool
) -> Result | None:
    """None for a non-finite loss (non-finite Gram matrices): the eager operations then carry
    the NaN into the loss exactly as they always did, and the trainer skips the step."""
    loss, grad_s, grad_t = out
    if not math.isfinite(loss):
        return None
    return (
        torch.tensor(loss, dtype=like.dtype),
        torch.from_numpy(grad_s) if need_s else None,
        torch.from_numpy(grad_t) if need_t else None,
    )


COMPILE_NOTE_AFTER = 3.0  # seconds a kernel's first call may take before the console hears why
COMPILING = ("compiling the relational losses' CPU kernels (once; numba keeps them on disk for "
             "later runs): this epoch takes longer than the next")


@functools.cache  # once a process: four kernels, one line
def _say_compiling() -> None:
    from horkd.notes import note

    note(COMPILING)


@contextmanager
def _compiling_said(first: bool) -> Iterator[None]:
    """A kernel's first call in a process compiles it (tens of seconds on a fresh clone) or
    loads it from numba's disk cache (well under a second). Only a call still running after
    ``COMPILE_NOTE_AFTER`` seconds is a compile: then one line says why the epoch is slow (a
    first-look run's epoch of 31 s among 1-s ones said nothing)."""
    if not first:
        yield
        return
    timer = threading.Timer(COMPILE_NOTE_AFTER, _say_compiling)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _run(
    name: str, need_t: bool, *arrays: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Call ``{name}_both`` (both sides' gradients) or ``{name}_student`` on torch's thread
    count; None when numba does not import."""
    loops = _loops()
    if loops is None:
        return None
    kernel = getattr(loops, f"{name}_both" if need_t else f"{name}_student")
    with _lock:
        import numba

        torch_threads = torch.get_num_threads()
        threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS,
                             _cpus() - _loader_workers.get()))
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)
        with _compiling_said(first=not kernel.signatures):
            out = kernel(*arrays)
        if torch.get_num_threads() != torch_threads:
            # numba's OpenMP pool, started on the first call, can reset the OpenMP thread count
            # that torch reads: the rest of the step must keep running on the user's setting
            torch.set_num_threads(torch_threads)
    return out


def angle(
    gram_s: Tensor, gram_t: Tensor, anchors: Tensor, delta: float, need_s: bool, need_t: bool
) -> Result | None:
    """(angle loss at ``anchors``, dL/dG_s or None, dL/dG_t or None), see third_order; None
    where the kernels do not apply (:func:`usable`), the Gram matrices are not finite or numba
    does not import: the caller then runs the eager operations."""
    if not usable(gram_s):
        return None
    g_s, g_t = _array(gram_s), _array(gram_t)
    out = _run("angle", need_t, g_s, g_t, _array(anchors), _consts(gram_s, g_s, delta))
    return None if out is None else _results(out, gram_s, need_s, need_t)


def distance(
    gram_s: Tensor,
    gram_t: Tensor,
    delta: float,
    need_s: bool,
    need_t: bool,
    rows: tuple[int, int] | None = None,
) -> Result | None:
    """(normalised-distance loss, dL/dG_s or None, dL/dG_t or None), see second_order; None
    as for :func:`angle`. ``rows``: only those rows' part of the loss (sharded relations)."""
    if not usable(gram_s):
        return None
    g_s, g_t = _array(gram_s), _array(gram_t)
    lo, hi = rows if rows is not None else (0, g_s.shape[0])
    out = _run("distance", need_t, g_s, g_t, _consts(gram_s, g_s, delta), lo, hi)
    return None if out is None else _results(out, gram_s, need_s, need_t)
