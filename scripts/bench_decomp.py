"""CP-ALS and EPC per-sweep time at the ResNet-18 kernel shapes, against TensorLy and the roofline.

Run:  OPENBLAS_NUM_THREADS=1 python scripts/bench_decomp.py [--quick] [--out scripts/results/bench_decomp.md]

OPENBLAS_NUM_THREADS=1 keeps the small R x R LAPACK calls (Cholesky, eigh) from
fighting XLA's threads (docs/performance.md); TensorLy is timed in a
child process with the default OpenBLAS threading, so it keeps its threaded GEMMs.

Everything is measured in the same process, so the ratios hold even on a noisy
machine:
  * matmul rate: a jitted full-float32 GEMM (GFLOP/s), measured again right before each
    row so that the roofline ratio compares times taken under the same load;
  * roofline of one ALS sweep: 4 * I*J*K * R flops / that rate (the two MTTKRP
    GEMMs, the issue's yardstick);
  * all-flop roofline: the flops a sweep cannot avoid / that rate -- the GEMMs plus
    three Gram matrices (2 R^2 sum I_n), three Cholesky factorisations (R^3 in all)
    and six triangular solves (2 R^2 sum I_n). It is 1.2x the GEMM count at
    (9,512,512) and 4.6x at (9,64,64), R=500;
  * LAPACK floor: the dense linear algebra every Cholesky-based ALS sweep does, timed
    alone the same way as the sweeps (below): three R x R Cholesky factorisations of
    the sweep's Hadamard Grams and their six triangular solves (``I_n`` right-hand
    sides), with jaxcpd's own ``cholesky`` and ``cholesky_solve_rows``. Floor = that
    time + the GEMM roofline: no ALS sweep that solves its normal equations by
    Cholesky on this machine can be faster, so TensorLy / floor bounds the speed-up
    any such sweep could show, and floor / roofline the best roofline ratio;
  * ours: per-sweep time of ``jaxcpd.cp_als``, from the difference of two runs with
    different fixed sweep counts (tol=0), so set-up and the final error are excluded
    (median over REPEATS pairs);
  * TensorLy: ``parafac`` (numpy backend, float32, same tensor and rank), the same
    way;
  * EPC: per-sweep time of ``jaxcpd.epc`` (sensitivity objective) the same way, each
    sample taken right after an ALS sample; EPC / ALS is the median of the paired
    ratios, so load that drifts between samples cancels. On every shape it is measured
    over sweeps 6-25 (``EPC_SWEEPS``), over sweeps 2-5 (``EPC_EARLY``) and over sweeps
    2-200 (``EPC_RUN``, a default run's length; 3 pairs): in the first five sweeps
    from the ALS start the Newton multipliers move by 3-70 % per sweep and an update
    takes 2-4 Newton evaluations, 1-2 after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_description
from jax import lax

import jaxcpd
from jaxcpd.decomp.cp_als import cholesky, cholesky_solve_rows, hadamard_grams

SHAPES = [(9, 64, 64), (9, 128, 128), (9, 256, 256), (9, 512, 512)]
RANKS = [10, 100, 500]
# Per-sweep times are medians over this many (lo, hi) pairs: single EPC sweeps
# varied 11-29 ms at (9,512,512) R=100 within one process, and a median of paired
# differences is steadier than a difference of minima.
REPEATS = 5
# (lo, hi) sweep counts and pair counts of the EPC / ALS windows (module docstring).
EPC_SWEEPS = (5, 25, REPEATS)
EPC_EARLY = (1, 5, REPEATS)
EPC_RUN = (1, 200, 3)


def best_time(fn, repeats=3):
    """Minimum wall time of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@cache
def _gemm_operand():
    """The matrix the GEMM rate squares: larger on an accelerator, where 2048 would take a
    fraction of a millisecond. Drawn once per run, not before every row."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    return jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)


_square = jax.jit(lambda m: jnp.matmul(m, m, precision=lax.Precision.HIGHEST))


def matmul_gflops():
    """Full-float32 GEMM rate, the precision the sweeps use (``jaxcpd/decomp/_precision.py``)."""
    a = _gemm_operand()
    return 2 * a.shape[0] ** 3 / best_time(lambda: _square(a).block_until_ready(), repeats=5) / 1e9


def _wall(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sweep_sample(run, lo, hi):
    """One per-sweep sample: the time difference of back-to-back runs with ``hi`` and
    ``lo`` sweeps, divided by ``hi - lo``."""
    return max((_wall(lambda: run(hi)) - _wall(lambda: run(lo))) / (hi - lo), 1e-9)


def sweep_samples(runs, lo, hi, repeats):
    """``(repeats, len(runs))`` per-sweep samples; each round samples every run back to
    back, so load that drifts between rounds affects them alike. Each sweep count of
    each run is run twice first (compilation, then a warm run)."""
    for _ in range(2):
        for run in runs:
            run(lo)
            run(hi)
    return np.array([[sweep_sample(run, lo, hi) for run in runs] for _ in range(repeats)])


def tensor_and_start(shape, rank):
    """The benchmark tensor (Gaussian) and a common starting CPD (5 ALS sweeps)."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    start = jaxcpd.cp_als(jnp.asarray(x), rank, max_iter=5).factors
    return x, tuple(np.asarray(f) for f in start)


def sweep_counts(shape, rank):
    """(lo, hi) sweep counts, the same for ours and TensorLy: fewer on the big cases."""
    big = shape[1] * shape[2] * rank > 256 * 256 * 100
    return (2, 6) if big else (5, 25)


def bench_ours(shape, rank):
    """ALS per-sweep time (TensorLy's sweep counts); EPC per-sweep time and EPC / ALS over
    ``EPC_SWEEPS``; EPC / ALS over ``EPC_EARLY`` and ``EPC_RUN``."""
    x, start = tensor_and_start(shape, rank)
    xj = jnp.asarray(x)

    def als(n):
        jaxcpd.cp_als(xj, rank, init=start, max_iter=n, tol=0.0).rel_error.block_until_ready()

    def epc(n):
        jaxcpd.epc(xj, start, max_iter=n, tol=0.0).rel_error.block_until_ready()

    t_als = float(np.median(sweep_samples((als,), *sweep_counts(shape, rank), REPEATS)))
    steady, early, run = (sweep_samples((als, epc), *window) for window in (EPC_SWEEPS, EPC_EARLY, EPC_RUN))
    ratios = (float(np.median(s[:, 1] / s[:, 0])) for s in (steady, early, run))
    return t_als, float(np.median(steady[:, 1])), *ratios


def bench_lapack_floor(shape, rank):
    """Per-sweep time of the Cholesky factorisations and triangular solves alone.

    The loop carries a runtime zero into every Gram and right-hand side, so XLA can
    neither hoist the factorisations out of the loop nor skip a solve.
    """
    _, start = tensor_and_start(shape, rank)
    grams = [f.T @ f for f in start]
    hadamard = tuple(jnp.asarray(hadamard_grams(grams, n)) for n in range(len(start)))
    rhs = tuple(jnp.asarray(f) for f in start)
    zero = jnp.zeros((), jnp.float32)

    @partial(jax.jit, static_argnums=0)
    def solves(n, zero):
        def body(_, rhs):
            return tuple(
                r + zero * cholesky_solve_rows(cholesky(g + zero * r[0, 0]), r)
                for g, r in zip(hadamard, rhs, strict=True)
            )

        return lax.fori_loop(0, n, body, rhs)

    def run(n):
        jax.block_until_ready(solves(n, zero))

    return float(np.median(sweep_samples((run,), *sweep_counts(shape, rank), REPEATS)))


def bench_tensorly(shape, rank):
    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    x, start = tensor_and_start(shape, rank)
    lo, hi = sweep_counts(shape, rank)
    init = tl.cp_tensor.CPTensor((np.ones(rank, np.float32), list(start)))

    def theirs(n):
        parafac(x, rank, init=init, n_iter_max=n, tol=0.0, normalize_factors=False)

    return float(np.median(sweep_samples((theirs,), lo, hi, REPEATS)))


def tensorly_in_child(shape, rank):
    """TensorLy's per-sweep time, measured in a child with default OpenBLAS threading."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    cmd = [sys.executable, __file__, "--tensorly", json.dumps([list(shape), rank])]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--quick", action="store_true", help="two smallest shapes only")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument(
        "--no-tensorly", action="store_true", help="skip TensorLy (e.g. on an accelerator host without it)"
    )
    parser.add_argument("--tensorly", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tensorly:
        shape, rank = json.loads(args.tensorly)
        print(bench_tensorly(tuple(shape), rank))
        return
    shapes = SHAPES[:2] if args.quick else SHAPES
    lines = [
        f"matmul rate measured before each row (float32, jax {jax.__version__}, "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}; {cpu_description()}), "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f} at the start); "
        "roofline = 4*I*J*K*R / rate; all-flop roofline = (4*I*J*K*R + 4*R^2*(I+J+K) + R^3) / rate",
        "",
        "| shape | R | GFLOP/s | ours ms/sweep | x roofline | x all-flop roofline | LAPACK ms/sweep "
        "| floor x roofline | TensorLy ms/sweep | TensorLy / ours | TensorLy / floor | EPC ms/sweep "
        "| EPC / ALS | EPC / ALS, sweeps 2-5 | EPC / ALS, sweeps 2-200 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for shape in shapes:
        for rank in RANKS:
            rate = matmul_gflops()
            t_ours, t_epc, epc_ratio, early_ratio, run_ratio = bench_ours(shape, rank)
            t_lapack = bench_lapack_floor(shape, rank)
            t_tl = float("nan") if args.no_tensorly else tensorly_in_child(shape, rank)
            roof = 4 * np.prod(shape) * rank / (rate * 1e9)
            all_flops = 4 * np.prod(shape) * rank + 4 * rank**2 * sum(shape) + rank**3
            roof_all = all_flops / (rate * 1e9)
            floor = t_lapack + roof
            row = (
                f"| {shape} | {rank} | {rate:.0f} | {t_ours * 1e3:.2f} | {t_ours / roof:.2f} "
                f"| {t_ours / roof_all:.2f} | {t_lapack * 1e3:.2f} | {floor / roof:.2f} "
                f"| {t_tl * 1e3:.1f} | {t_tl / t_ours:.1f} | {t_tl / floor:.1f} "
                f"| {t_epc * 1e3:.2f} | {epc_ratio:.2f} | {early_ratio:.2f} | {run_ratio:.2f} |"
            )
            lines.append(row)
            print(row, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
