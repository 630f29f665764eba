"""The fused CPU kernels against the eager operations, and their side effects on the process.

tests/test_losses.py runs every loss test on both implementations; these are what only the
kernels need: agreement at training sizes in float32, when they switch on, and that starting
numba's thread pool leaves torch's threads alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from horkd.losses import angle_loss, cpu_kernels, distance_loss

pytestmark = pytest.mark.skipif(not cpu_kernels.installed(), reason="numba is not installed")


@pytest.mark.parametrize("anchors", [None, 16])
@pytest.mark.parametrize("teacher_grad", [False, True])
def test_cpu_kernels_equal_the_eager_operations_at_training_size(anchors, teacher_grad):
    """float32, N = 96: the fused loops give the eager chunks' loss and gradients (both sides
    when the teacher trains too, as the joint schedule's assistant does)."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(96, 16, generator=g)
    t = torch.randn(96, 32, generator=g)
    s[5] = s[9]  # two coincident points: the zero-length directions on both paths
    results = {}
    for use in (False, True):
        a, b = s.clone().requires_grad_(), t.clone().requires_grad_(teacher_grad)
        torch.manual_seed(0)
        with cpu_kernels.use_kernels(use):
            loss = distance_loss(a, b) + 2.0 * angle_loss(a, b, anchors=anchors)
        loss.backward()
        results[use] = (loss.detach(), a.grad, b.grad)
    (loss_e, ga_e, gb_e), (loss_k, ga_k, gb_k) = results[False], results[True]
    assert torch.allclose(loss_k, loss_e, rtol=1e-5)
    assert torch.allclose(ga_k, ga_e, rtol=1e-4, atol=1e-5 * float(ga_e.abs().max()))
    if teacher_grad:
        assert torch.allclose(gb_k, gb_e, rtol=1e-4, atol=1e-5 * float(gb_e.abs().max()))
    else:
        assert gb_k is None and gb_e is None


def test_cpu_kernels_stay_off_where_they_do_not_apply():
    s = torch.randn(7, 5, dtype=torch.float64)
    with cpu_kernels.use_kernels(True):
        assert cpu_kernels.usable(s) == cpu_kernels.installed()
        assert not cpu_kernels.usable(s.half())
    with cpu_kernels.use_kernels(False):
        assert not cpu_kernels.usable(s)


def test_cpu_kernels_leave_torchs_thread_count_alone():
    """numba's OpenMP pool starting on the first call must not change how many threads torch
    uses for the rest of the step (it did: 1 became 2, and resumed runs stopped matching)."""
    code = (
        "import torch\n"
        "from horkd.losses import angle_loss\n"
        "s = torch.randn(16, 4, requires_grad=True)\n"
        "angle_loss(s, torch.randn(16, 4)).backward()\n"
        "print(torch.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HORKD_CPU_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_the_environment_switches_them_off():
    code = "import torch\nfrom horkd.losses import cpu_kernels\nprint(cpu_kernels.usable(torch.eye(3)))\n"
    env = {**os.environ, "HORKD_CPU_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_result_does_not_depend_on_the_thread_count():
    """The anchors are split into a fixed number of ranges, so the order of the float sums, and
    the bits of loss and gradient, are the same on 1 or 2 threads (one process against several,
    a resumed run against its original)."""
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a = s.clone().requires_grad_()
            with cpu_kernels.use_kernels(True):
                loss = angle_loss(a, t)
            loss.backward()
            results.append((loss.detach(), a.grad))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_a_numba_that_does_not_import_falls_back_to_the_eager_ops(monkeypatch):
    if not cpu_kernels.installed():
        pytest.skip("numba is not installed")
    s, t = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    with cpu_kernels.use_kernels(False):
        expected = distance_loss(s, t) + angle_loss(s, t)
    import horkd.losses

    monkeypatch.setitem(sys.modules, "horkd.losses.numba_loops", None)  # import now fails
    monkeypatch.delattr(horkd.losses, "numba_loops", raising=False)
    cpu_kernels._loops.cache_clear()
    try:
        with cpu_kernels.use_kernels(True), pytest.warns(RuntimeWarning, match="numba did not"):
            got = distance_loss(s, t) + angle_loss(s, t)
        assert torch.allclose(got, expected, rtol=1e-12)
        assert not cpu_kernels.usable(s)  # off for the rest of the process
    finally:
        monkeypatch.undo()
        cpu_kernels._loops.cache_clear()  # the real numba again for the other tests
    assert cpu_kernels.usable(s)


def test_a_first_call_that_compiles_is_said_once(monkeypatch, capsys):
    """A fresh clone's first epoch with a relational loss spends tens of seconds compiling: one
    line says so while it waits; a call loaded from numba's disk cache (quick) says nothing."""
    import time
    import types

    class Kernel:
        def __init__(self, seconds: float) -> None:
            self.seconds, self.signatures = seconds, []

        def __call__(self, *arrays):
            time.sleep(self.seconds)
            self.signatures.append("compiled")
            return 0.0, arrays[0], arrays[1]

    def run(kernels: dict) -> str:
        monkeypatch.setattr(cpu_kernels, "_loops", lambda: types.SimpleNamespace(**kernels))
        array = torch.zeros(2, 2).numpy()
        for name in ("distance", "angle"):
            for both in (True, False, True):
                cpu_kernels._run(name, both, array, array)
        return capsys.readouterr().out

    monkeypatch.setattr(cpu_kernels, "COMPILE_NOTE_AFTER", 0.05)
    cpu_kernels._say_compiling.cache_clear()
    quick = {f"{n}_{s}": Kernel(0.0) for n in ("distance", "angle") for s in ("both", "student")}
    assert cpu_kernels.COMPILING not in run(quick)
    slow = {f"{n}_{s}": Kernel(0.3) for n in ("distance", "angle") for s in ("both", "student")}
    assert run(slow).count(cpu_kernels.COMPILING) == 1
