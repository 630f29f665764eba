"""Third-order (angle) loss: horkd's Gram-form chunked version against the direct RKD formulation.

horkd runs its fused CPU kernel when numba is installed (``horkd[cpu]``); the "eager ms" column
times the same loss on ATen operations (what runs without numba, and on a GPU).

The direct formulation builds the N x N x d tensor of differences, normalises it and takes a
batched matmul (N^3 angles, mean over all of them), as the RKD reference code does. Both are
timed forward + backward side by side in this one process (median of repeats after a warm-up);
peak memory is measured per case in a fresh subprocess, as the growth of the process's peak
resident set size (Linux VmHWM, reset after the inputs exist) over the RSS at that point.

    python benchmarks/losses.py            # full table, N in {64,128,256}, d in {128,512,2048}
    python benchmarks/losses.py --quick    # a smaller table for a smoke check
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from horkd.losses import angle_loss, cpu_kernels


def rkd_reference_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The direct formulation: materialises N x N x d differences, mean over all N^3 entries."""

    def angles(e: torch.Tensor) -> torch.Tensor:
        td = e.unsqueeze(0) - e.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        return torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)

    with torch.no_grad():
        t_angle = angles(teacher)
    return F.smooth_l1_loss(angles(student), t_angle)


def rkd_reference_distinct(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The same dense angles, averaged over distinct triplets only (what horkd defines)."""

    def angles(e: torch.Tensor) -> torch.Tensor:
        td = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(td, td.transpose(1, 2))

    n = student.shape[0]
    idx = torch.arange(n)
    i, j, k = idx.view(-1, 1, 1), idx.view(1, -1, 1), idx.view(1, 1, -1)
    distinct = (i != j) & (i != k) & (j != k)
    return F.smooth_l1_loss(angles(student)[distinct], angles(teacher)[distinct])


def eager_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with cpu_kernels.use_kernels(False):
        return angle_loss(student, teacher)


IMPLS = {
    "horkd": lambda s, t: angle_loss(s, t),
    "eager": eager_angle,
    "reference": rkd_reference_angle,
}


def _inputs(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n * 10_000 + d)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def _fwd_bwd(impl: str, s: torch.Tensor, t: torch.Tensor) -> None:
    leaf = s.detach().requires_grad_(True)
    IMPLS[impl](leaf, t).backward()


def time_case(impl: str, n: int, d: int, repeats: int) -> float:
    s, t = _inputs(n, d)
    _fwd_bwd(impl, s, t)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _fwd_bwd(impl, s, t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_memory_child(impl: str, n: int, d: int) -> None:
    """Runs in a fresh process: prints the peak-RSS growth (MiB) of one forward + backward.

    The baseline is taken after the inputs exist and the loss has run once on a tiny batch
    (the autograd engine started, numba's compiled kernel loaded), with the kernel's peak-RSS
    mark reset there, so only what the loss itself allocates at this size counts.
    """
    s, t = _inputs(n, d)
    _fwd_bwd(impl, *_inputs(8, d))
    if _reset_peak_rss():
        base = _rss_kib()
    else:  # no clear_refs: fall back to the lifetime peak, which can hide small cases
        base = _peak_rss_kib()
    _fwd_bwd(impl, s, t)
    print(json.dumps({"mib": max(0, _peak_rss_kib() - base) / 1024.0}))


def peak_memory(impl: str, n: int, d: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", impl, str(n), str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def distinct_difference(n: int, d: int, dtype: torch.dtype) -> float:
    """|horkd - dense reference| with both averaged over distinct triplets."""
    s, t = (x.to(dtype) for x in _inputs(n, d))
    return abs(float(angle_loss(s, t)) - float(rkd_reference_distinct(s, t)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in {64,128}, d in {128,512}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", nargs=3, metavar=("IMPL", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        impl, n, d = args.memory_child
        peak_memory_child(impl, int(n), int(d))
        return
    ns = (64, 128) if args.quick else (64, 128, 256)
    ds = (128, 512) if args.quick else (128, 512, 2048)
    kernel = "fused CPU kernel (numba)" if cpu_kernels.installed() else "eager ops (no numba)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; "
          f"horkd: {kernel}")
    print("time: median forward+backward; memory: peak RSS growth in a fresh process (MiB)")
    header = (
        f"{'N':>4} {'d':>5} | {'horkd ms':>9} {'eager ms':>9} {'ref ms':>9} {'speed x':>8} | "
        f"{'horkd MiB':>9} {'ref MiB':>9} {'mem ratio':>9} | {'|diff| f32':>10} {'|diff| f64':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in ns:
        for d in ds:
            ours = time_case("horkd", n, d, args.repeats)
            eager = time_case("eager", n, d, args.repeats)
            ref = time_case("reference", n, d, args.repeats)
            ours_mem = peak_memory("horkd", n, d)
            ref_mem = peak_memory("reference", n, d)
            ratio = ours_mem / ref_mem if ref_mem > 0 else float("nan")
            diff32 = distinct_difference(n, d, torch.float32)
            diff64 = distinct_difference(n, d, torch.float64)
            print(
                f"{n:>4} {d:>5} | {ours * 1e3:>9.2f} {eager * 1e3:>9.2f} {ref * 1e3:>9.2f} "
                f"{ref / ours:>8.1f} | "
                f"{ours_mem:>9.1f} {ref_mem:>9.1f} {ratio:>9.3f} | {diff32:>10.1e} {diff64:>10.1e}",
                flush=True,
            )
    print("speed x = reference time / horkd time; mem ratio = horkd peak / reference peak")
    print("targets: >=10x at N=256,d=512; >=40x at N=256,d=2048; mem <=1/4 (d=512), <=1/10 (d=2048)")


if __name__ == "__main__":
    main()
